"""DVC stage ``audio@<ID>``: per-frame audio features and the per-frame eye openness.

Writes ``data/processed/<ID>/features/``: ``aud_<kind>.npy`` [N, 16, D] for ``audio.kind`` and each of
``audio.extra_kinds`` (``talkhead_models/preprocess/audio_features.py`` documents each kind and D),
``eye.npy`` [N] (open-eye area ratio from the landmarks stage's 478 points,
frames outside its ``usable.npy`` interpolated; ``talkhead_models/preprocess/eye.py``)
and ``manifest.json``. NaN/inf in the landmarks' usable frames or in
``aud.wav`` is refused, naming the file and the frames.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import soundfile

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.config import to_dict, validate_name
from talkhead_models.data.arrays import require_finite_audio
from talkhead_models.data.landmark_arrays import read_landmarks
from talkhead_models.data.manifest import write_manifest
from talkhead_models.data.processed import SAMPLE_RATE, SAMPLES_PER_FRAME
from talkhead_models.preprocess.audio_features import (AudioConfig, AudioFeatureError, check_kind, compute_features,
                                                       feature_dim, for_kind, kinds)
from talkhead_models.preprocess.eye import eye_openness
from talkhead_models.preprocess.frames import read_clips

log = logging.getLogger(__name__)


def run(cfg: AudioConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
        identity: str | None = None) -> StageResult:
    validate_name(identity, "identity")
    check_kind(cfg)
    crop, landmarks_dir = inputs["crop"], inputs["landmarks"]
    audio_path = crop / "aud.wav"
    if not audio_path.is_file():
        raise FileNotFoundError(f"{audio_path} not found; run the crop stage (`dvc repro crop@{identity}`)")
    landmarks = read_landmarks(landmarks_dir, producer=f"the landmarks stage (`dvc repro landmarks@{identity}`)")
    n_frames = len(landmarks.usable)
    clips = read_clips(crop / "clips.parquet", n_frames)
    ranges = list(zip(clips.first_frame.astype(int), clips.last_frame.astype(int)))
    with soundfile.SoundFile(audio_path) as wav, atomic_dir(outputs["features"]) as tmp:
        if wav.samplerate != SAMPLE_RATE or wav.channels != 1:
            raise ValueError(f"{audio_path}: {wav.samplerate} Hz, {wav.channels} channel(s); the crop stage writes "
                             "16 kHz mono: re-run it")

        def read_samples(start: int, stop: int) -> np.ndarray:
            wav.seek(min(start, wav.frames))
            samples = wav.read(stop - start, dtype="float32")
            return require_finite_audio(samples, audio_path, f"the crop stage (`dvc repro crop@{identity}`)",
                                        SAMPLES_PER_FRAME, first_sample=start)

        written = []
        for kind in kinds(cfg):
            kind_cfg = for_kind(cfg, kind)
            path = tmp / f"aud_{kind}.npy"
            features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                                 shape=(n_frames, cfg.window, feature_dim(kind_cfg)))
            try:
                compute_features(read_samples, ranges, kind_cfg, features)
            except AudioFeatureError as error:
                if kind == cfg.kind:
                    raise
                # An extra kind serves one comparison row; its run says what is missing when it is trained.
                log.warning("audio %s: no aud_%s.npy (%s)", identity, kind, error)
                del features
                path.unlink()
                continue
            features.flush()
            del features
            written.append(kind)
        eye = eye_openness(landmarks.points478, landmarks.usable)
        np.save(tmp / "eye.npy", eye)
        write_manifest(tmp, {"identity": identity, **to_dict(cfg)}, stage="audio")
    blink_frames = float(np.mean(eye < 0.5))
    log.info("audio %s: %s [%d frames, window %d], eyes closed (ratio < 0.5) in %.1f%% of frames", identity,
             ", ".join(f"aud_{kind}.npy (D={feature_dim(for_kind(cfg, kind))})" for kind in written), n_frames,
             cfg.window, 100 * blink_frames)
    return StageResult(metrics={"frames": float(n_frames), "feature_dim": float(feature_dim(cfg)),
                                "eye_closed_fraction": blink_frames})


STAGE = Stage(
    name="audio",
    config=AudioConfig,
    section="audio",
    run=run,
    inputs={"crop": "data/processed/{identity}/crop", "landmarks": "data/processed/{identity}/landmarks"},
    outputs={"features": "data/processed/{identity}/features"},
    description=__doc__,
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
