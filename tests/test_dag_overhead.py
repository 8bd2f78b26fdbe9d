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


def test_files_are_counted_per_identity_and_measurements_are_compared(tmp_path):
    from benchmarks.dag_overhead import comparison, files_per_identity

    for name, count in (("S001", 3), ("S002", 1)):
        (tmp_path / name / "crop").mkdir(parents=True)
        for i in range(count):
            (tmp_path / name / "crop" / f"{i}.npy").write_bytes(b"")
    assert files_per_identity(tmp_path) == {"S001": 3, "S002": 1}
    before = {"fixed_cost_per_stage_s": {"median": 10.0}, "dvc_status_s": {"median": 24.0},
              "files_per_identity": {"S001": 22000}}
    after = {"fixed_cost_per_stage_s": {"median": 2.5}, "dvc_status_s": {"median": 2.0},
             "files_per_identity": {"S001": 33}}
    assert comparison(before, after) == {"fixed_cost_per_stage_s.median": 0.25, "dvc_status_s.median": 0.083,
                                         "files_per_identity.max": 0.0015}
