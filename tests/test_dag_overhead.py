"""benchmarks/dag_overhead.py reads each stage's fixed cost from a `make demo` log (hand-computed)."""

import pytest

from benchmarks.dag_overhead import spread, stage_costs

LOG = """\
Running stage 'synth':
2026-12-05 15:29:29,400 INFO stages._stage: stage synth done in 94.9 s
Updating lock file 'dvc.lock'
2026-12-05 15:31:08,870 INFO stages._stage: stage describe done in 92.3 s
noise: stage crop done in 1 s
2026-12-05 15:31:23,696 INFO stages._stage: stage crop done in 8.6 s
"""


def test_fixed_cost_is_the_gap_since_the_previous_stage_minus_its_own_seconds():
    assert stage_costs(LOG) == [
        {"stage": "describe", "own_s": 92.3, "fixed_s": pytest.approx(99.47 - 92.3, abs=1e-3)},
        {"stage": "crop", "own_s": 8.6, "fixed_s": pytest.approx(14.826 - 8.6, abs=1e-3)},
    ]
    assert spread([3.0, 1.0, 2.0])["median"] == 2.0


def test_a_log_without_two_stages_is_refused():
    with pytest.raises(ValueError, match="make demo"):
        stage_costs(LOG.splitlines()[1])
