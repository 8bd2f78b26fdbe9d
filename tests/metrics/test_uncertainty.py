"""Paired bootstrap intervals against an exact enumeration, known distributions and hand-computed values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from talkhead_models.metrics.uncertainty import MIN_PAIRS, Interval, expanded_tail, paired_bootstrap


def test_percentile_interval_matches_the_exact_bootstrap_distribution():
    # Five differences: every one of the 5^5 equally likely resamples enumerated gives the exact bootstrap
    # distribution of the mean; its 2.5% / 97.5% quantiles are what the Monte Carlo interval estimates.
    differences = np.array([0.1, 0.7, 1.9, 3.2, 5.0])
    exact = np.array([differences[list(picks)].mean() for picks in itertools.product(range(5), repeat=5)])
    low, high = np.quantile(exact, [0.025, 0.975])
    interval = paired_bootstrap(differences + 10.0, np.full(5, 10.0), resamples=200_000, expand=False)
    assert interval.estimate == pytest.approx(differences.mean())
    # Monte Carlo error of a tail quantile over 200k draws, against a spread of the means of about 0.8.
    assert interval.low == pytest.approx(low, abs=0.02) and interval.high == pytest.approx(high, abs=0.02)
    assert interval.samples == 5 and interval.dropped == 0


def test_expanded_tail_by_hand():
    # n = 5: t(0.975, 4) = 2.776445, sqrt(5/4) = 1.118034, z = 3.104160, P(Z > z) = 0.000954
    assert expanded_tail(0.95, 5) == pytest.approx(0.000954, abs=2e-6)
    # n = 100: t(0.975, 99) = 1.984217, x 1.005038 = 1.994214, P(Z > z) = 0.023065
    assert expanded_tail(0.95, 100) == pytest.approx(0.023065, abs=2e-6)
    assert expanded_tail(0.95, 100_000) == pytest.approx(0.025, abs=1e-4)


def _coverage(n: int, expand: bool, trials: int = 400) -> float:
    rng = np.random.default_rng(11)
    covered = 0
    for trial in range(trials):
        a = rng.normal(1.0, 1.0, n)
        b = rng.normal(0.0, 1.0, n)
        interval = paired_bootstrap(a, b, resamples=1000, seed=trial, expand=expand)
        covered += interval.low <= 1.0 <= interval.high
    return covered / trials


def test_expanded_interval_keeps_its_coverage_with_few_pairs_where_the_percentile_interval_does_not():
    # Normal differences with true mean 1: a 95% interval should contain 1 in about 95% of samples. With 6
    # pairs the plain percentile interval is known to under-cover (about 85%); the expanded one should not.
    # 400 trials: binomial standard error about 1.1%.
    expanded, plain = _coverage(6, True), _coverage(6, False)
    assert 0.92 <= expanded <= 0.99
    assert plain < 0.91 and plain < expanded - 0.04
    assert 0.92 <= _coverage(40, True) <= 0.98


def test_pairing_cancels_the_difficulty_both_runs_share():
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0.0, 5.0, 300)            # frame difficulty, much larger than the effect
    a = difficulty + 0.2 + rng.normal(0.0, 0.1, 300)
    b = difficulty + rng.normal(0.0, 0.1, 300)
    interval = paired_bootstrap(a, b)
    assert interval.sign == 1 and interval.low > 0.15 and interval.high < 0.25
    # The same effect between unpaired samples (shuffled b) is lost in the difficulty: the interval spans zero.
    assert paired_bootstrap(a, rng.permutation(b)).sign == 0


def test_groups_resample_within_each_identity_and_weigh_identities_equally():
    # Constant differences inside each group: resampling within groups cannot move the mean (a zero-width
    # interval), while resampling across them would mix the 1s and 3s.
    a = np.array([1.0] * 10 + [3.0] * 30)
    b = np.zeros(40)
    groups = np.array([0] * 10 + [1] * 30)
    stratified = paired_bootstrap(a, b, groups)
    assert stratified.estimate == pytest.approx(2.0)               # (1 + 3) / 2, not the pooled 2.5
    assert stratified.low == pytest.approx(2.0) and stratified.high == pytest.approx(2.0)
    pooled = paired_bootstrap(a, b)
    assert pooled.estimate == pytest.approx(2.5) and pooled.high - pooled.low > 0.3


def test_non_finite_pairs_are_dropped_and_counted_and_too_few_pairs_are_flagged():
    a = np.array([1.0, np.inf, 2.0, np.nan, 3.0])
    b = np.array([0.0, 0.0, 1.0, 1.0, 2.0])
    interval = paired_bootstrap(a, b)
    assert interval.samples == 3 and interval.dropped == 2 and interval.estimate == pytest.approx(1.0)
    assert not interval.enough and MIN_PAIRS > 3
    with pytest.raises(ValueError, match="at least 2 finite pairs"):
        paired_bootstrap(np.array([1.0, np.inf]), np.array([0.0, 0.0]))
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap(np.zeros(3), np.zeros(4))


def test_sign_side_and_text():
    interval = Interval(0.5, 0.2, 0.8, samples=10)
    assert interval.sign == 1 and interval.side_of(0.3) == 0 and interval.side_of(1.0) == -1 and interval.enough
    assert Interval(-0.5, -0.8, -0.2).sign == -1 and Interval(0.1, -0.1, 0.3).sign == 0
    assert interval.text(2) == "+0.50 [+0.20, +0.80]"


def test_a_fixed_seed_makes_the_interval_reproducible():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
