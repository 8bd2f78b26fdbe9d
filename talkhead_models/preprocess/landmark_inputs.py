"""One identity's clip table and FaceMesh output, read together: what the track and pair stages start from."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from talkhead_models import face_topology as topo
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
    dlib68: np.ndarray | None = None
    """[N, 68, 2] dlib's points on FaceMesh's face box (``lms68_dlib.npy``), or None where the landmarks stage
    ran without dlib."""


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
    dlib68 = None if stored.dlib68 is None else np.array(stored.dlib68)
    return LandmarkInputs(clips, np.array(stored.points478), stored.detected, stored.usable, int(sizes[0]), dlib68)


def blend_dlib(points478: np.ndarray, dlib68: np.ndarray) -> np.ndarray:
    """FaceMesh's [N, 478, 3] points with x, y of the vertices at the 51 inner iBUG points (no jaw line) replaced
    by the mean of FaceMesh's and dlib's [N, 68, 2], in the frames where dlib has points; depth and the other
    vertices stay FaceMesh's.

    Why: FaceMesh's points follow the head's turns only in part, dlib's err more but less with the pose; on the
    synthetic corpus the mean lowered the tracker's rotation error on every identity and its focal error from
    8-10% to 1-4% (benchmarks/tracking_with_dlib.py). dlib's jaw line follows the visible outline rather than
    fixed points of the face, and made rigid fits flip (benchmarks/tracking_landmark_sources.py).
    """
    blended = np.array(points478, dtype=np.float32, copy=True)
    inner = topo.MP68[topo.IBUG_INNER_51]
    frames = np.flatnonzero(np.isfinite(dlib68).all(axis=(1, 2)))
    rows, columns = np.ix_(frames, inner)
    blended[rows, columns, :2] = (blended[rows, columns, :2] + dlib68[frames][:, topo.IBUG_INNER_51]) / 2
    return blended
