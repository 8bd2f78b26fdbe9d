"""Schedules shared by the trainers: a learning rate over iterations, windows of frames around a frame."""

from __future__ import annotations

import math

import numpy as np


def exponential_lr(initial: float, final: float, progress: float) -> float:
    """Log-linear from ``initial`` to ``final`` as ``progress`` goes 0 -> 1 (clamped): 3D-GS's position schedule and
    AD-NeRF's exponential decay (JEAN: 5e-4 -> 5e-5)."""
    progress = min(max(progress, 0.0), 1.0)
    return math.exp(math.log(initial) * (1.0 - progress) + math.log(final) * progress)


def window_indices(frames: np.ndarray, window: int, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """[n, window] frame indices centred on ``frames`` (offsets -window/2 .. window/2 - 1), clamped to each frame's
    recording [first, last]."""
    offsets = np.arange(window) - window // 2
    return np.clip(frames[:, None] + offsets[None], first[:, None], last[:, None])
