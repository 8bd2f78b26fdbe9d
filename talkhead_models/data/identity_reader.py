"""Open a processed identity: ours (staged subfolders) or one prepared by the ER-NeRF/RAD-NeRF tools (flat).

``ProcessedIdentity`` names the files of either layout; this reader loads
them. A flat ER-NeRF folder (``ori_imgs/``, ``aud.wav``,
``transforms_*.json``, ``aud_ds.npy`` ...) has no ``clips.parquet``: it is one
person-specific video, so the reader makes a one-row clip table covering all
its frames (source: the ``<name>.mp4`` ER-NeRF keeps beside the frames, when
there). Audio features are returned as stored: ours ``aud_<kind>.npy`` are
[N, 16, D]; the peers' files keep their own shapes (``aud_ds.npy`` DeepSpeech
[N, 16, 29], ``aud_eo.npy`` wav2vec2-Esperanto [N, 16, 44], ``aud_hu.npy``
HuBERT [N, 2, 1024]).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from talkhead_models.data.processed import CLIP_COLUMNS, FPS, SAMPLE_RATE, ProcessedIdentity
from talkhead_models.media import read_audio
from talkhead_models.preprocess.frames import count_frames, read_clips, read_image

log = logging.getLogger(__name__)


class IdentityError(FileNotFoundError):
    """A processed identity folder that lacks what is asked of it; the message names the file and the fix."""


@dataclass(frozen=True)
class TrackedCameras:
    """Every frame's camera from the track stage (NaN rows where it wrote none) and the shared intrinsics."""

    c2w: np.ndarray
    """[N, 4, 4] camera-to-world in the head's frame (OpenGL axes, metres), as in ``transforms_*.json``."""
    focal: float
    cx: float
    cy: float

    def has(self, index: int) -> bool:
        return bool(np.isfinite(self.c2w[index]).all())


class IdentityReader:
    """Frames, clip table, audio and features of one processed identity folder (staged or flat)."""

    def __init__(self, root: str | Path) -> None:
        self.layout = ProcessedIdentity(Path(root))
        frames = self.layout.path("frames")
        if not frames.is_dir():
            raise IdentityError(f"{frames}: no frames; {self.layout.root} is not a processed identity "
                                "(run the crop stage, or point at an ER-NeRF data folder with ori_imgs/)")
        self.num_frames = count_frames(frames)
        if self.num_frames == 0:
            raise IdentityError(f"{frames}: empty; re-run the crop stage (or ER-NeRF's frame extraction)")

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def flat(self) -> bool:
        """True for a folder laid out by the ER-NeRF/RAD-NeRF tools."""
        return self.layout.flat

    def clips(self) -> pd.DataFrame:
        """One row per recording (CLIP_COLUMNS); made up for a flat folder without ``clips.parquet``."""
        path = self.layout.path("clips")
        if path.is_file():
            return read_clips(path, self.num_frames)
        if not self.flat:
            raise IdentityError(f"{path} not found; re-run the crop stage")
        return self._single_video_clips()

    def _single_video_clips(self) -> pd.DataFrame:
        for split in ("train", "val"):
            transforms = self.transforms(split)
            if transforms is not None:
                ids = [int(frame["img_id"]) for frame in transforms.get("frames", [])]
                if ids and max(ids) >= self.num_frames:
                    raise IdentityError(f"{self.layout.path('transforms_' + split)} names frame {max(ids)} but "
                                        f"ori_imgs/ has {self.num_frames} frames; re-extract the frames")
        height, width = read_image(self.layout.frame(0)).shape[:2]
        if height != width:
            log.warning("%s: frames are %dx%d, not square", self.layout.path("frames"), width, height)
        video = self.root / f"{self.root.name}.mp4"
        row = {
            "clip": "video", "kind": "video", "emotion": "neutral", "level": 1, "sentence": 0,
            "first_frame": 0, "last_frame": self.num_frames - 1,
            "source": video.name if video.is_file() else "", "truth": None, "source_fps": FPS,
            "crop_x0": 0, "crop_y0": 0, "crop_size": int(min(height, width)), "image_size": int(width),
        }
        return pd.DataFrame([row], columns=list(CLIP_COLUMNS))

    def transforms(self, split: str) -> dict[str, Any] | None:
        """``transforms_<split>.json`` (focal_len, cx, cy, frames[...]) or None when absent."""
        path = self.layout.path(f"transforms_{split}")
        return json.loads(path.read_text()) if path.is_file() else None

    def cameras(self) -> TrackedCameras:
        """Poses of all frames from ``transforms_train.json`` and ``transforms_val.json`` (frames in neither are
        NaN: the tracker skips frames without a face)."""
        c2w = np.full((self.num_frames, 4, 4), np.nan)
        intrinsics = None
        for split in ("train", "val"):
            transforms = self.transforms(split)
            if transforms is None:
                continue
            intrinsics = intrinsics or (float(transforms["focal_len"]), float(transforms["cx"]),
                                        float(transforms["cy"]))
            for frame in transforms.get("frames", []):
                index = int(frame["img_id"])
                if 0 <= index < self.num_frames:
                    c2w[index] = np.asarray(frame["transform_matrix"], np.float64)
        if intrinsics is None:
            raise IdentityError(f"{self.layout.path('transforms_train')} not found: no tracked cameras; run "
                                f"`python -m stages.track --identity {self.root.name}` (after "
                                "`python -m stages.face_model`)")
        return TrackedCameras(c2w, *intrinsics)

    def frame(self, index: int) -> np.ndarray:
        """Processed frame ``index`` as RGB uint8."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} out of range 0..{self.num_frames - 1} in {self.layout.path('frames')}")
        return read_image(self.layout.frame(index))

    def audio(self) -> np.ndarray:
        """``aud.wav`` as 16 kHz mono float32 (resampled if the file is at another rate)."""
        path = self.layout.path("audio")
        if not path.is_file():
            raise IdentityError(f"{path} not found; re-run the crop stage (or ER-NeRF's audio extraction)")
        audio = read_audio(path, SAMPLE_RATE)
        expected = self.num_frames * SAMPLE_RATE / FPS
        if abs(len(audio) - expected) > SAMPLE_RATE / FPS:
            log.warning("%s: %.2f s of audio for %d frames (%.2f s)", path, len(audio) / SAMPLE_RATE,
                        self.num_frames, self.num_frames / FPS)
        return audio

    def feature_kinds(self) -> list[str]:
        """Kinds with an ``aud_<kind>.npy`` here (ours: mel, hubert, wav2vec2; ER-NeRF's: ds, hu, eo)."""
        folder = self.layout.path("features_dir")
        return sorted(p.stem[len("aud_"):] for p in folder.glob("aud_*.npy"))

    def audio_features(self, kind: str) -> np.ndarray:
        """``aud_<kind>.npy``, memory-mapped, as stored (see the module docstring for the shapes)."""
        path = self.layout.audio_features(kind)
        if not path.is_file():
            available = self.feature_kinds()
            raise IdentityError(f"{path} not found (present: {available or 'none'}); run the audio stage with "
                                f"audio.kind={kind}")
        features = np.load(path, mmap_mode="r")
        if len(features) != self.num_frames:
            log.warning("%s: %d feature rows for %d frames; index with min(i, len - 1) as ER-NeRF does",
                        path, len(features), self.num_frames)
        return features

    def eye(self) -> np.ndarray:
        """[N] eye openness (``eye.npy``)."""
        path = self.layout.path("eye")
        if not path.is_file():
            raise IdentityError(f"{path} not found; run the audio stage")
        return np.load(path)

    def split(self) -> pd.DataFrame | None:
        """``split.parquet`` (self-driven validation ranges, cross-driven audio) or None when absent."""
        path = self.layout.path("split")
        return pd.read_parquet(path) if path.is_file() else None

    def validation_mask(self) -> np.ndarray:
        """[N] True for frames held out for validation, by the first rule whose file exists.

        ``split.parquet``'s self-driven ranges (ours); else the frames of
        ``transforms_val.json`` (an ER-NeRF folder); else the last 1/11 of the
        frames, the convention both use.
        """
        mask = np.zeros(self.num_frames, bool)
        table = self.split()
        if table is not None:
            for row in table.loc[table["role"] == "self"].itertuples(index=False):
                mask[int(row.first_frame): int(row.last_frame) + 1] = True
            return mask
        transforms = self.transforms("val")
        if transforms is not None:
            mask[[int(f["img_id"]) for f in transforms.get("frames", []) if int(f["img_id"]) < self.num_frames]] = True
            return mask
        mask[int(self.num_frames * 10 / 11):] = True
        return mask

    def training_frames(self) -> np.ndarray:
        """Indices of the frames a model may train on (everything not held out)."""
        frames = np.flatnonzero(~self.validation_mask())
        if len(frames) == 0:
            raise IdentityError(f"{self.root}: every frame is held out for validation; check the split stage's "
                                "params (val_fraction, val_sentence_fraction)")
        return frames

    def landmarks68(self, index: int) -> np.ndarray:
        """[68, 2] landmarks of one frame from ``<i>.lms`` (ER-NeRF's text format)."""
        path = self.layout.lms(index)
        if not path.is_file():
            raise IdentityError(f"{path} not found; run the landmarks stage")
        return np.loadtxt(path, dtype=np.float32).reshape(68, 2)


def open_identity(root: str | Path) -> IdentityReader:
    """Open ``data/processed/<ID>`` (ours) or an ER-NeRF/RAD-NeRF data folder."""
    return IdentityReader(root)
