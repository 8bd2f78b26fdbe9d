"""The landmarks stage's arrays as every later stage reads them: shapes agreeing, NaN only where it is meant.

The stage (``talkhead_models.preprocess.landmarks``) writes, per identity,
``lms478.npy`` [N, 478, 3], ``lms68.npy`` [N, 68, 2], ``detected.npy`` [N]
and ``usable.npy`` [N]. It stores NaN on purpose in one place only: the
points of a recording without any face, whose frames are flagged unusable.
NaN or inf anywhere else is damage, refused here naming the file and frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkhead_models.data.arrays import ArrayFileError, require_finite

POINTS478_FILE, POINTS68_FILE, DETECTED_FILE, USABLE_FILE = "lms478.npy", "lms68.npy", "detected.npy", "usable.npy"
DLIB68_FILE = "lms68_dlib.npy"
"""[N, 68, 2] dlib's 68-point shape predictor on FaceMesh's face box (``landmarks.dlib_points``); optional."""


@dataclass(frozen=True)
class StoredLandmarks:
    """The landmarks stage's arrays of one identity, checked: one length, and NaN only in unusable frames."""

    points478: np.ndarray
    """[N, 478, 3] FaceMesh points in pixels (memory-mapped); NaN in recordings without any face."""
    points68: np.ndarray
    """[N, 68, 2] the iBUG-68 points (memory-mapped); NaN where ``points478`` is."""
    detected: np.ndarray
    """[N] bool, False where a frame's points were interpolated."""
    usable: np.ndarray
    """[N] bool, False for frames no model may train on or be scored on (recordings without any face, gaps
    longer than ``landmarks.long_gap_frames``)."""
    dlib68: np.ndarray | None = None
    """[N, 68, 2] dlib's points on FaceMesh's face box (memory-mapped; NaN where ``points478`` is), or None where
    the stage ran without dlib."""


def read_landmarks(folder: str | Path, n_frames: int | None = None, producer: str | None = None) -> StoredLandmarks:
    """The landmarks stage's arrays in ``folder``, refused naming the file and the fix when missing, of the
    wrong shape or holding NaN/inf in a usable frame.

    ``n_frames`` is the frame count the caller expects (default: that of
    ``lms478.npy``); ``producer`` what to re-run (default: the landmarks stage
    of the folder's identity).
    """
    folder = Path(folder)
    producer = producer or f"the landmarks stage (`dvc repro landmarks@{folder.parent.name}`)"
    names = (POINTS478_FILE, POINTS68_FILE, DETECTED_FILE, USABLE_FILE)
    for name in names:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found; run {producer}")
    points478 = np.load(folder / POINTS478_FILE, mmap_mode="r")
    points68 = np.load(folder / POINTS68_FILE, mmap_mode="r")
    detected = np.load(folder / DETECTED_FILE)
    usable = np.load(folder / USABLE_FILE)
    count = len(points478) if n_frames is None else n_frames
    expected = {POINTS478_FILE: (count, 478, 3), POINTS68_FILE: (count, 68, 2), DETECTED_FILE: (count,),
                USABLE_FILE: (count,)}
    for name, array in zip(names, (points478, points68, detected, usable)):
        if array.shape != expected[name]:
            raise ArrayFileError(f"{folder / name}: shape {list(array.shape)}, expected {list(expected[name])} "
                                 f"(one entry per frame of the crop stage's {count} frames); re-run {producer}")
    usable = usable.astype(bool)
    for name, points in ((POINTS478_FILE, points478), (POINTS68_FILE, points68)):
        require_finite(points, folder / name, producer, allowed=~usable)
    dlib68 = None
    if (folder / DLIB68_FILE).is_file():
        dlib68 = np.load(folder / DLIB68_FILE, mmap_mode="r")
        if dlib68.shape != (count, 68, 2):
            raise ArrayFileError(f"{folder / DLIB68_FILE}: shape {list(dlib68.shape)}, expected {[count, 68, 2]}; "
                                 f"re-run {producer}")
        require_finite(dlib68, folder / DLIB68_FILE, producer, allowed=~usable)
    return StoredLandmarks(points478, points68, detected.astype(bool), usable, dlib68)
