"""One identity's clip table and FaceMesh output, read together: what the track and pair stages start from."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from talkhead_models.data.arrays import ArrayFileError, NonFiniteError
from talkhead_models.data.landmark_arrays import read_landmarks
from talkhead_models.preprocess.tracking import TrackingError


class LandmarkInputs(NamedTuple):
    """The landmarks stage's output of one identity with its clip table."""

    clips: pd.DataFrame
    """clips.parquet, sorted by first frame."""
    points: np.ndarray
    """[N, 478, 3] FaceMesh points in pixels, in memory; NaN only in frames that are not ``usable``."""
    detected: np.ndarray
    """[N] bool, False where a frame's points were interpolated."""
    usable: np.ndarray
    """[N] bool, False for frames without a face to track or score (usable.npy)."""
    image_size: int
    """Side of the processed frames."""


def read_landmark_inputs(crop: Path, landmarks: Path, identity: str) -> LandmarkInputs:
    """clips.parquet and the landmarks stage's arrays of one identity, checked against each other.

    A missing file is a FileNotFoundError, arrays of the wrong length a
    TrackingError and NaN/inf in a usable frame a NonFiniteError, each
    naming the file and the stage to re-run.
    """
    clips_path = crop / "clips.parquet"
    producer = f"the landmarks stage (`dvc repro landmarks@{identity}`)"
    if not clips_path.is_file():
        raise FileNotFoundError(f"{identity}: {clips_path} not found; run `dvc repro landmarks@{identity}`")
    clips = pd.read_parquet(clips_path).sort_values("first_frame").reset_index(drop=True)
    n_frames = int(clips["last_frame"].max()) + 1 if len(clips) else 0
    try:
        stored = read_landmarks(landmarks, n_frames, producer)
    except NonFiniteError:
        raise
    except ArrayFileError as error:
        raise TrackingError(f"{identity}: {error} ({clips_path} covers {n_frames} frames)") from error
    sizes = clips["image_size"].unique()
    if len(sizes) != 1:
        raise TrackingError(f"{clips_path}: frames of several sizes {sorted(sizes)}; expected one image_size")
    return LandmarkInputs(clips, np.array(stored.points478), stored.detected, stored.usable, int(sizes[0]))
