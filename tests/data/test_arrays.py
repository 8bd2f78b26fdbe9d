"""Finite-array checks and frame runs against brute-force versions."""

from __future__ import annotations

import numpy as np
import pytest

from talkhead_models.data import arrays
from talkhead_models.data.arrays import NonFiniteError, describe_frames, frame_runs, nonfinite_frames, require_finite


def runs_by_hand(indices: list[int]) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return [(a, b) for a, b in runs]


def test_frame_runs_match_a_walk_over_the_indices():
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices = np.flatnonzero(rng.random(int(rng.integers(0, 40))) < 0.6)
        assert frame_runs(indices) == runs_by_hand(indices.tolist())


def test_nonfinite_frames_across_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(arrays, "CHECK_CHUNK_BYTES", 3 * 5 * 2 * 4)  # three rows of [5, 2] float32 per chunk
    array = np.zeros((20, 5, 2), np.float32)
    bad = [0, 2, 3, 11, 19]
    array[0, 4, 1], array[2, 0, 0], array[3, 1, 1], array[11, 2, 0], array[19, 4, 1] = \
        np.nan, np.inf, -np.inf, np.nan, np.nan
    assert nonfinite_frames(array).tolist() == bad
    assert nonfinite_frames(np.ones((4, 3), np.int64)).size == 0
    assert nonfinite_frames(np.zeros(0, np.float32)).size == 0


def test_require_finite_names_the_file_frames_and_fix_and_accepts_allowed_frames():
    array = np.zeros((12, 3))
    array[[4, 5, 6, 9]] = np.nan
    with pytest.raises(NonFiniteError, match=r"^x/eye.npy: NaN or inf in frames 4-6, 9 \(4 frames\) of 12; .*"
                                             r"re-run the audio stage$"):
        require_finite(array, "x/eye.npy", "the audio stage")
    allowed = np.zeros(12, bool)
    allowed[[4, 5, 6, 9]] = True
    assert require_finite(array, "x/eye.npy", "the audio stage", allowed=allowed) is array


def test_describe_frames_spells_the_first_runs_and_counts_all():
    assert describe_frames(np.array([7])) == "frame 7 (1 frame)"
    many = np.arange(0, 2 * (arrays.LISTED_RUNS + 3), 2)
    assert describe_frames(many) == "frames 0, 2, 4, 6, 8, 10, ... (3 more runs) (9 frames)"
