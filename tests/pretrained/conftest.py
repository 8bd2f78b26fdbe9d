"""Processed identity folders built straight from the synthetic ground truth, for the corpus-level models.

The preprocessing stages (crop, landmarks, audio features) are developed in
parallel, so these folders are made the way those stages will make them, but
from the corpus's truth:

* ``crop/``: every source frame whole (crop box = the full frame; the corpus
  is at 25 fps, so processed frame i is source frame i), ``aud.wav`` the
  recordings' audio cut or padded to 640 samples per frame, ``clips.parquet``;
* ``landmarks/lms478.npy``: truth ``landmarks_2d`` for x, y and, for z, the
  truth camera-space depth minus the face's mean depth, times focal length
  over that mean depth (pixels at the face's distance; negative = nearer, as
  FaceMesh's z), with ``lms68.npy`` its iBUG-68 subset and every frame
  ``detected`` and ``usable``;
* ``features/aud_mel.npy``: the audio stage's own features
  (``talkhead_models.preprocess.audio_features``, kind ``mel``);
* ``split/split.parquet``: the split stage itself, run on those folders (the
  test frames every corpus-level model leaves out).

``python -m tests.pretrained.conftest <corpus> <out>`` builds every identity
of a corpus (used to develop against the demo corpus under /tmp).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from talkhead_models.data.processed import CLIP_COLUMNS, FPS, SAMPLE_RATE, ProcessedIdentity
from talkhead_models.data.sources import identities, recordings
from talkhead_models.face_topology import to_68
from talkhead_models.media import iter_frames, read_audio, write_audio
from talkhead_models.preprocess.audio_features import AudioConfig, compute_features, feature_dim

SAMPLES_PER_FRAME = int(SAMPLE_RATE / FPS)
AUDIO = AudioConfig()


def pixel_depth(landmarks_3d: np.ndarray, focal: float) -> np.ndarray:
    """[T, 478] depth in pixels at the face's distance, relative to the face's mean depth."""
    mean_depth = landmarks_3d[..., 2].mean(axis=1, keepdims=True)
    return (landmarks_3d[..., 2] - mean_depth) * focal / mean_depth


def build_processed_identity(corpus: Path, identity: str, out: Path) -> ProcessedIdentity:
    """Write ``out/{crop,landmarks,features}`` for one identity of a synthetic corpus."""
    processed = ProcessedIdentity(out)
    processed.path("frames").parent.mkdir(parents=True)
    frames = zipfile.ZipFile(processed.path("frames"), "w", zipfile.ZIP_STORED)  # a frame archive, by zipfile
    processed.path("landmarks478").parent.mkdir(parents=True)
    processed.path("features_dir").mkdir(parents=True)
    rows, landmarks, audio_parts, index = [], [], [], 0
    for recording in recordings("synthetic", corpus, identity):
        truth = np.load(recording.truth)
        first = index
        for frame in iter_frames(recording.video):
            frames.writestr(f"{index}.jpg", cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                                         [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
            index += 1
        count = index - first
        depth = pixel_depth(truth["landmarks_3d"][:count], float(truth["intrinsics"][0, 0]))
        landmarks.append(np.concatenate([truth["landmarks_2d"][:count], depth[..., None]], axis=-1))
        audio = read_audio(recording.audio or recording.video, SAMPLE_RATE)[: count * SAMPLES_PER_FRAME]
        audio_parts.append(np.pad(audio, (0, count * SAMPLES_PER_FRAME - len(audio))))
        rows.append({
            "clip": recording.clip, "kind": recording.kind, "emotion": recording.emotion,
            "level": recording.level, "sentence": recording.sentence, "first_frame": first,
            "last_frame": index - 1, "source": recording.video.relative_to(corpus).as_posix(),
            "truth": recording.truth.relative_to(corpus).as_posix(), "source_fps": FPS,
            "crop_x0": 0, "crop_y0": 0, "crop_size": frame.shape[0], "image_size": frame.shape[0],
        })
    frames.close()
    pd.DataFrame(rows, columns=list(CLIP_COLUMNS)).to_parquet(processed.path("clips"), index=False)
    audio = np.concatenate(audio_parts)
    write_audio(processed.path("audio"), audio, SAMPLE_RATE)
    points = np.concatenate(landmarks).astype(np.float32)
    np.save(processed.path("landmarks478"), points)
    np.save(processed.path("landmarks68"), to_68(points)[..., :2])
    np.save(processed.path("detected"), np.ones(index, bool))
    np.save(processed.path("usable"), np.ones(index, bool))
    features = np.zeros((index, AUDIO.window, feature_dim(AUDIO)), np.float32)
    compute_features(lambda start, stop: audio[start:stop], [(r["first_frame"], r["last_frame"]) for r in rows],
                     AUDIO, features)
    np.save(processed.audio_features(AUDIO.kind), features)
    return processed


def build_processed_root(corpus: Path, out: Path) -> Path:
    """``out/<ID>/...`` for every identity of the corpus, with the split stage's table."""
    from stages import split
    from talkhead_models.data import DataConfig

    names = identities("synthetic", corpus)
    for identity in names:
        build_processed_identity(corpus, identity, out / identity)
    cfg = split.SplitStageConfig(data=DataConfig(source="synthetic", identities=tuple(names)))
    for identity in names:
        split.run(cfg, {"crop": out / identity / "crop", "corpus": corpus}, {"split": out / identity / "split"},
                  identity=identity)
    return out


@pytest.fixture(scope="session")
def processed_truth(tmp_path_factory, tiny_corpus) -> Path:
    """A ``data/processed``-like root for the tiny corpus's two identities, from ground truth."""
    return build_processed_root(tiny_corpus, tmp_path_factory.mktemp("processed_truth"))


if __name__ == "__main__":
    build_processed_root(Path(sys.argv[1]), Path(sys.argv[2]))
