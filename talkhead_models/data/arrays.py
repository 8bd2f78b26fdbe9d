"""Per-frame arrays as the stages read them: NaN/inf refused naming the file and the frames, and frame runs.

A NaN in a stored array is never a value a later stage can use: passed on,
it becomes a parsing map without a face, a tracking residual of "nan px" or a
LinAlgError far from the file that caused it. So every reader checks the
arrays it loads (``require_finite``) and names the file, the frames and the
stage to re-run. The one place NaN is stored on purpose, the landmarks of a
recording without any face (``usable.npy`` False), is passed as ``allowed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

CHECK_CHUNK_BYTES = 64 << 20
"""Bytes checked at a time, so a memory-mapped file is never copied into memory whole."""
LISTED_RUNS = 6
"""Frame runs spelt out in an error message before the rest are counted."""


class ArrayFileError(ValueError):
    """A stored array that cannot be used as it is; the message names the file and the stage to re-run."""


class NonFiniteError(ArrayFileError):
    """An array file holding NaN or inf where values are required; the message names the file, frames and fix."""


def frame_runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive values in sorted ``indices``, as inclusive (first, last) pairs: [3, 4, 5, 9] ->
    [(3, 5), (9, 9)]."""
    indices = np.asarray(indices, np.int64)
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1)
    firsts = np.concatenate([[indices[0]], indices[breaks + 1]])
    lasts = np.concatenate([indices[breaks], [indices[-1]]])
    return [(int(a), int(b)) for a, b in zip(firsts, lasts)]


def describe_frames(indices: np.ndarray) -> str:
    """``"frames 3-5, 9 (4 frames)"``, ``"frame 7 (1 frame)"``: the first runs spelt out, the count of all."""
    runs = frame_runs(indices)
    spelt = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:LISTED_RUNS]]
    more = f", ... ({len(runs) - LISTED_RUNS} more runs)" if len(runs) > LISTED_RUNS else ""
    count = f"{len(indices)} frame{'' if len(indices) == 1 else 's'}"
    return f"frame{'' if len(indices) == 1 else 's'} {', '.join(spelt)}{more} ({count})"


def nonfinite_frames(array: np.ndarray) -> np.ndarray:
    """Indices along the first axis whose values are not all finite (integer and bool arrays have none)."""
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.inexact):
        return np.zeros(0, np.int64)
    if array.ndim == 0:
        return np.zeros(0 if np.isfinite(array) else 1, np.int64)
    row_bytes = max(1, array[:1].nbytes)
    step = max(1, CHECK_CHUNK_BYTES // row_bytes)
    bad = []
    for start in range(0, len(array), step):
        chunk = np.asarray(array[start:start + step])
        finite = np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
        bad.append(start + np.flatnonzero(~finite))
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)


def require_finite(array: np.ndarray, path: str | Path, producer: str,
                   allowed: np.ndarray | None = None) -> np.ndarray:
    """``array`` unchanged, or NonFiniteError naming ``path``, the frames (first axis) holding NaN/inf and the fix:
    re-run ``producer`` (what wrote the file, e.g. "the audio stage (`dvc repro audio@S001`)").

    ``allowed`` ([N] bool) marks frames where the writing stage stores NaN on
    purpose (a recording without a face); NaN there is accepted.
    """
    bad = nonfinite_frames(array)
    if allowed is not None and len(bad):
        bad = bad[~np.asarray(allowed, bool)[bad]]
    if len(bad):
        raise NonFiniteError(f"{path}: NaN or inf in {describe_frames(bad)} of {len(array)}; the file is damaged "
                             f"or was edited: re-run {producer}")
    return array


def require_finite_audio(samples: np.ndarray, path: str | Path, producer: str, samples_per_frame: int,
                         first_sample: int = 0) -> np.ndarray:
    """``samples`` unchanged, or NonFiniteError naming ``path`` and the video frames whose audio holds NaN/inf
    (``samples`` start at ``first_sample`` of the file; frame i covers samples [i, i + 1) * ``samples_per_frame``)."""
    bad = nonfinite_frames(samples)
    if len(bad):
        frames = np.unique((first_sample + bad) // samples_per_frame)
        raise NonFiniteError(f"{path}: NaN or inf samples in the audio of {describe_frames(frames)}; the file is "
                             f"damaged or was edited: re-run {producer}")
    return samples


def require_finite_entries(entries: Mapping[str, Any], path: str | Path, producer: str,
                           keys: Iterable[str] | None = None) -> Mapping[str, Any]:
    """``entries`` (arrays or CPU tensors by name, e.g. a loaded ``track_params.pt``) unchanged, or
    NonFiniteError naming ``path[key]``, the frames (first axis) holding NaN/inf and the fix; only ``keys`` when
    given."""
    for key in entries if keys is None else keys:
        require_finite(np.asarray(entries[key]), f"{path}[{key}]", producer)
    return entries
