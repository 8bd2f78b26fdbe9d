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

The reader is the one place that says which frames a model trains on and
which it is scored on: the held-out (test) frames come from
``split.parquet``, the usable ones from the landmarks stage's
``usable.npy``; a frame that is not usable (no face) is in neither set.
Every array it returns is checked for NaN/inf, naming the file, the frames
and the stage to re-run.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from talkhead_models.data.arrays import (
    ArrayFileError, NonFiniteError, describe_frames, nonfinite_frames, require_finite, require_finite_audio,
)
from talkhead_models.data.landmark_arrays import StoredLandmarks, read_landmarks
from talkhead_models.data.processed import CLIP_COLUMNS, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, ProcessedIdentity
from talkhead_models.media import read_audio
from talkhead_models.preprocess.frames import FrameError, FrameSource, read_clips
from talkhead_models.preprocess.splits import usable_self_rows

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
        if not self.layout.flat and not (self.layout.root / "crop").is_dir():
            raise IdentityError(f"{frames}: no frames; {self.layout.root} is not a processed identity "
                                "(run the crop stage, import an ER-NeRF data folder with `python -m "
                                "stages.import_ernerf`, or point at one with ori_imgs/)")
        try:
            self._frames = self.layout.frames("frames")
            self.num_frames = self._frames.contiguous_count()
        except FrameError as error:
            raise IdentityError(str(error)) from None
        self._archives: dict[str, FrameSource] = {"frames": self._frames}

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
        height, width = self.frame(0).shape[:2]
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
        NaN: the tracker skips frames without a face; a NaN/inf inside either file is refused)."""
        c2w = np.full((self.num_frames, 4, 4), np.nan)
        intrinsics = None
        for split in ("train", "val"):
            transforms = self.transforms(split)
            if transforms is None:
                continue
            path = self.layout.path(f"transforms_{split}")
            producer = self.layout.producer(f"transforms_{split}")
            intrinsics = intrinsics or (float(transforms["focal_len"]), float(transforms["cx"]),
                                        float(transforms["cy"]))
            if not np.isfinite(intrinsics).all():
                raise NonFiniteError(f"{path}: focal_len, cx, cy = {intrinsics} are not finite; re-run {producer}")
            frames = transforms.get("frames", [])
            ids = np.array([int(frame["img_id"]) for frame in frames], np.int64)
            matrices = np.asarray([frame["transform_matrix"] for frame in frames], np.float64).reshape(-1, 4, 4)
            bad = np.sort(ids[nonfinite_frames(matrices)])
            if len(bad):
                raise NonFiniteError(f"{path}: NaN or inf in the transform_matrix of {describe_frames(bad)}; the file "
                                     f"is damaged or was edited: re-run {producer}")
            inside = (ids >= 0) & (ids < self.num_frames)
            c2w[ids[inside]] = matrices[inside]
        if intrinsics is None:
            raise IdentityError(f"{self.layout.path('transforms_train')} not found: no tracked cameras; run "
                                f"`python -m stages.track --identity {self.root.name}` (after "
                                "`python -m stages.face_model`)")
        return TrackedCameras(c2w, *intrinsics)

    def frame(self, index: int) -> np.ndarray:
        """Processed frame ``index`` as RGB uint8."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} out of range 0..{self.num_frames - 1} in {self.layout.path('frames')}")
        return self._frames.read(index)

    def frames(self, kind: str = "frames") -> FrameSource:
        """The per-frame images of ``kind`` (``frames``, ``gt``, ``torso``, ``semantic``, ``parsing``) for
        streaming with ``read_frames``; the parse stage's kinds hold the usable frames only."""
        if kind not in self._archives:
            if not self.layout.has(kind):
                raise IdentityError(f"{self.layout.path(kind)} not found; run {self.layout.producer(kind)}")
            try:
                self._archives[kind] = self.layout.frames(kind)
            except FrameError as error:
                raise IdentityError(str(error)) from None
        return self._archives[kind]

    def _parsed(self, kind: str, index: int, flags: int, rgb: bool) -> np.ndarray:
        source = self.frames(kind)
        if index not in source:
            if not self._usable[index]:
                raise IdentityError(f"{self.layout.path(kind)}: no frame {index}: it has no face (usable.npy), and the "
                                    "parse stage writes only the frames with one; nothing may train on it")
            raise IdentityError(f"{self.layout.path(kind)}: frame {index} has a face (usable.npy) but is missing; "
                                f"the file is older than the landmarks it follows: re-run {self.layout.producer(kind)}")
        return source.read(index, flags, rgb)

    def gt_image(self, index: int) -> np.ndarray:
        """[H, W, 3] RGB frame over the static background (ER-NeRF's gt_imgs)."""
        return self._parsed("gt", index, cv2.IMREAD_COLOR, True)

    def torso_rgba(self, index: int) -> np.ndarray:
        """[H, W, 4] RGBA torso with the neck in-painted (ER-NeRF's torso_imgs)."""
        image = self._parsed("torso", index, cv2.IMREAD_UNCHANGED, True)
        if image.ndim != 3 or image.shape[2] != 4:
            raise IdentityError(f"{self.layout.path('torso')}: frame {index} is not an RGBA image; re-run "
                                f"{self.layout.producer('torso')}")
        return image

    def semantic(self, index: int) -> np.ndarray:
        """[H, W] uint8 labels (0 bg, 1 head, 2 neck, 3 torso, 4 lips, 5 mouth interior); from ER-NeRF's colour
        ``parsing/`` where a folder has no ``semantic/``."""
        if self.layout.has("semantic") or not self.layout.has("parsing"):
            return self._parsed("semantic", index, cv2.IMREAD_UNCHANGED, False)
        from talkhead_models.preprocess.parsing import labels_from_colours

        return labels_from_colours(self._parsed("parsing", index, cv2.IMREAD_COLOR, False))

    def parsing_colours(self, index: int) -> np.ndarray:
        """[H, W, 3] ER-NeRF's parsing colours as cv2 reads them (BGR)."""
        return self._parsed("parsing", index, cv2.IMREAD_COLOR, False)

    def audio(self) -> np.ndarray:
        """``aud.wav`` as 16 kHz mono float32 (resampled if the file is at another rate)."""
        path = self.layout.path("audio")
        if not path.is_file():
            raise IdentityError(f"{path} not found; re-run the crop stage (or ER-NeRF's audio extraction)")
        audio = require_finite_audio(read_audio(path, SAMPLE_RATE), path, self.layout.producer("audio"),
                                     SAMPLES_PER_FRAME)
        expected = self.num_frames * SAMPLE_RATE / FPS
        if abs(len(audio) - expected) > SAMPLE_RATE / FPS:
            log.warning("%s: %.2f s of audio for %d frames (%.2f s)", path, len(audio) / SAMPLE_RATE,
                        self.num_frames, self.num_frames / FPS)
        return audio

    def feature_kinds(self) -> list[str]:
        """Kinds with an ``aud_<kind>.npy`` here (ours: mel, whisper, hubert, wav2vec2; ER-NeRF's: ds, hu, eo)."""
        folder = self.layout.path("features_dir")
        return sorted(p.stem[len("aud_"):] for p in folder.glob("aud_*.npy"))

    def audio_features(self, kind: str) -> np.ndarray:
        """``aud_<kind>.npy``, memory-mapped, as stored (see the module docstring for the shapes)."""
        path = self.layout.audio_features(kind)
        if not path.is_file():
            available = self.feature_kinds()
            raise IdentityError(f"{path} not found (present: {available or 'none'}); run the audio stage with "
                                f"{kind} in audio.extra_kinds (or audio.kind={kind}); its log says why a kind in "
                                "extra_kinds was left out")
        features = require_finite(np.load(path, mmap_mode="r"), path, self.layout.producer("features_dir"))
        if len(features) != self.num_frames:
            log.warning("%s: %d feature rows for %d frames; index with min(i, len - 1) as ER-NeRF does",
                        path, len(features), self.num_frames)
        return features

    def eye(self) -> np.ndarray:
        """[N] eye openness (``eye.npy``)."""
        path = self.layout.path("eye")
        if not path.is_file():
            raise IdentityError(f"{path} not found; run the audio stage")
        return require_finite(np.load(path), path, self.layout.producer("eye"))

    def split(self) -> pd.DataFrame | None:
        """``split.parquet`` (self-driven validation ranges, cross-driven audio) or None when absent."""
        path = self.layout.path("split")
        return pd.read_parquet(path) if path.is_file() else None

    def held_out_mask(self) -> np.ndarray:
        """[N] True for the test frames, which nothing may train on, by the first rule whose file exists.

        ``split.parquet``'s self-driven ranges (ours); else the frames of
        ``transforms_val.json`` (an ER-NeRF folder); else the last 1/11 of the
        frames, the convention both use. Frames without a face are test frames
        all the same (so no model trains on them): ``validation_mask`` leaves
        them out of what is scored.
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

    def usable_mask(self) -> np.ndarray:
        """[N] True for frames with a face to learn from or be scored on: the landmarks stage's ``usable.npy``
        (False for recordings without any face and gaps longer than ``landmarks.long_gap_frames``); every frame
        of a folder without one (ER-NeRF's tools write no such flags)."""
        return self._usable.copy()

    @functools.cached_property
    def _usable(self) -> np.ndarray:
        path = self.layout.path("usable")
        if not path.is_file():
            return np.ones(self.num_frames, bool)
        usable = np.load(path)
        if usable.shape != (self.num_frames,):
            raise ArrayFileError(f"{path}: {list(usable.shape)} flags for {self.num_frames} frames; re-run "
                                 f"{self.layout.producer('usable')}")
        usable = usable.astype(bool)
        if not usable.all():
            log.info("%s: %s have no face (the landmarks stage's usable.npy; its report.json says why): left out "
                     "of training and evaluation", self.root.name, describe_frames(np.flatnonzero(~usable)))
        return usable

    def validation_mask(self) -> np.ndarray:
        """[N] True for the held-out frames that are scored: ``held_out_mask`` and ``usable_mask`` both."""
        return self.held_out_mask() & self._usable

    def training_frames(self) -> np.ndarray:
        """Indices of the frames a model may train on: neither held out nor without a face."""
        held_out = self.held_out_mask()
        frames = np.flatnonzero(~held_out & self._usable)
        if len(frames) == 0:
            if held_out.all():
                raise IdentityError(f"{self.root}: every frame is held out for validation; check the split stage's "
                                    "params (val_fraction, val_sentence_fraction)")
            raise IdentityError(f"{self.root}: no frame outside the held-out ones has a face "
                                f"({self.layout.path('usable')}); see the landmarks stage's report.json, or raise "
                                "landmarks.long_gap_frames")
        return frames

    def self_driven_rows(self) -> pd.DataFrame:
        """``split.parquet``'s self-driven rows (SPLIT_COLUMNS) cut to the frames with a face: a row crossing
        frames without one becomes one row per run of usable frames, so evaluation scores exactly the frames of
        ``validation_mask``, each run with its own audio."""
        table = self.split()
        if table is None:
            raise IdentityError(f"{self.layout.path('split')} not found; run `dvc repro split@{self.root.name}`")
        rows = table.loc[table["role"] == "self"].reset_index(drop=True)
        usable_rows = usable_self_rows(rows, self._usable)
        dropped = int((rows["last_frame"] - rows["first_frame"] + 1).sum()
                      - (usable_rows["last_frame"] - usable_rows["first_frame"] + 1).sum())
        if dropped:
            log.info("%s: %d self-driven test frames have no face and are not scored (%d ranges became %d)",
                     self.root.name, dropped, len(rows), len(usable_rows))
        return usable_rows

    def landmarks(self) -> StoredLandmarks:
        """The landmarks stage's arrays (``lms478.npy``, ``lms68.npy``, ``detected.npy``, ``usable.npy``),
        refused when NaN/inf is in a usable frame."""
        return self._landmarks

    @functools.cached_property
    def _landmarks(self) -> StoredLandmarks:
        return read_landmarks(self.layout.path("landmarks478").parent, self.num_frames,
                              self.layout.producer("landmarks478"))

    def landmarks68(self, index: int) -> np.ndarray:
        """[68, 2] landmarks of one frame: ``lms68.npy`` (ours), ``<i>.lms`` (ER-NeRF's text format)."""
        if not self.layout.flat:
            return np.asarray(self.landmarks().points68[index], np.float32)
        path = self.layout.lms(index)
        if not path.is_file():
            raise IdentityError(f"{path} not found; run the landmarks stage")
        points = np.loadtxt(path, dtype=np.float32).reshape(68, 2)
        if not np.isfinite(points).all():
            raise NonFiniteError(f"{path}: NaN or inf in the landmarks of frame {index}; the file is damaged or "
                                 f"was edited: re-run {self.layout.producer('lms_dir')}")
        return points


def open_identity(root: str | Path) -> IdentityReader:
    """Open ``data/processed/<ID>`` (ours) or an ER-NeRF/RAD-NeRF data folder."""
    return IdentityReader(root)
