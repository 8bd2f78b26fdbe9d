"""Resampling by time (talkhead_models/preprocess/video.py, time_schedule) against a brute-force nearest-time search
and against the closed form on constant rates."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from talkhead_models.data.processed import FPS
from talkhead_models.preprocess.video import frame_schedule, time_schedule

RATE = Fraction(FPS)


def brute_force(times: list[Fraction], end: Fraction) -> list[int]:
    """For each k < round(25 (end - t0)): argmin over i of |t_i - t0 - k / 25|, the later frame on a tie."""
    count = round((end - times[0]) * RATE)
    return [min(range(len(times)), key=lambda i: (abs(times[i] - times[0] - k / RATE), -i)) for k in range(count)]


@pytest.mark.parametrize("seed", range(6))
def test_variable_rate_schedule_is_the_nearest_frame_in_time(seed):
    """Irregular millisecond timestamps (ties with the 40 ms grid included), a late first frame, repeated times."""
    rng = np.random.default_rng(seed)
    gaps = rng.choice([0, 10, 20, 30, 40, 60, 90, 130], size=int(rng.integers(5, 60)),
                      p=[.05, .1, .2, .2, .2, .1, .1, .05])
    start = int(rng.integers(0, 700))
    times = [Fraction(start + int(t), 1000) for t in np.concatenate([[0], np.cumsum(gaps[:-1])])]
    end = times[-1] + Fraction(int(rng.integers(1, 80)), 1000)
    assert time_schedule(times, end).tolist() == brute_force(times, end)


@pytest.mark.parametrize("fps", [25.0, 30.0, 12.5, 30000 / 1001, 29.97, 24000 / 1001, 50.0, 60.0])
def test_constant_rate_schedule_is_the_closed_form(fps):
    """Frame i at i / fps: processed frame k is floor(k fps / 25 + 1/2) (exact), round(n / fps * 25) frames."""
    rate = Fraction(fps).limit_denominator(1_000_000)
    for n in (1, 7, 26, 91, 250):
        count = round(n / rate * RATE)
        expected = [min(math.floor(k * rate / RATE + Fraction(1, 2)), n - 1) for k in range(count)]
        assert frame_schedule(n, fps).tolist() == expected, (fps, n)
    assert frame_schedule(250, 25.0).tolist() == list(range(250))


def test_a_single_frame_and_no_frame():
    assert time_schedule([Fraction(3, 10)], Fraction(3, 10) + Fraction(1, 25)).tolist() == [0]
    assert time_schedule([], Fraction(0)).tolist() == []
