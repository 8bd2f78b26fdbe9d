"""Training against what goes wrong in practice: a checkpoint cut short (disk full, a copy interrupted), no
readable checkpoint at all, and a second run started on the same output while the first still trains.

Each case ends with a clear message naming the file or folder and either the documented recovery (the bad
checkpoint moved aside, training resumed from the previous one or from the start, nothing of it left in the
finished model) or a refusal that touches nothing.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest

from stages import train
from talkhead_models.atomic import OutputBusyError
from talkhead_models.checkpoints import CHECKPOINT_FILE, PREVIOUS_FILE
from talkhead_models.methods import get_method
from tests.conftest import TRACKED_IDENTITY as IDENTITY
from tests.methods import gstalker_fixtures, r2talker_fixtures
from tests.methods.resume_fixtures import Killed, kill_at
from tests.test_atomic import hold_output


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def curve_steps(folder: Path) -> list[int]:
    with (folder / "curve.csv").open(newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def assert_only_the_final_checkpoint(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("checkpoint")) == [CHECKPOINT_FILE]


@pytest.mark.parametrize("family, changes, kill, saved, previous", [
    # R2-Talker: rows every 5 iterations, checkpoints every 4; killed at the row of 10, after the checkpoint of 8.
    ("r2talker", dict(r2talker_fixtures.TINY, iterations=12, torso_iterations=4, checkpoint_every=4), 10, 8, 4),
    # GSTalker: rows and checkpoints every 2 iterations; killed at the row of 8, before its checkpoint.
    ("gstalker", gstalker_fixtures.TINY, 8, 6, 4),
])
def test_a_truncated_checkpoint_is_named_moved_aside_and_training_resumes_from_the_previous_one(
        tracked_root, tmp_path, caplog, family, changes, kill, saved, previous):
    spec = get_method(family)
    cfg = spec.resolve_config(changes)
    folder = tmp_path / "model"
    with pytest.raises(Killed):
        spec.train(cfg, tracked_root / IDENTITY, {}, folder, log_metric=kill_at(kill))
    assert {p.name for p in folder.glob("checkpoint*")} == {CHECKPOINT_FILE, PREVIOUS_FILE}
    truncate(folder / CHECKPOINT_FILE)

    with caplog.at_level(logging.INFO):
        summary = spec.train(cfg, tracked_root / IDENTITY, {}, folder)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    named = [w for w in warnings if str(folder / CHECKPOINT_FILE) in w]
    assert len(named) == 1, warnings
    assert f"{CHECKPOINT_FILE}.bad-" in named[0] and f"resuming from {folder / PREVIOUS_FILE}" in named[0]
    resumed_at = [r.getMessage() for r in caplog.records if str(folder / PREVIOUS_FILE) in r.getMessage()
                  and r.levelno == logging.INFO]
    assert resumed_at and f"iteration {previous}" in resumed_at[0], resumed_at
    assert summary["iterations"] == cfg.total_iterations
    steps = curve_steps(folder)
    assert steps == sorted(set(steps)) and steps[-1] == cfg.total_iterations
    assert_only_the_final_checkpoint(folder)  # the moved-aside file and the previous one are gone


def test_with_no_readable_checkpoint_training_starts_over_and_says_so(tracked_root, tmp_path, caplog):
    spec = get_method("gstalker")
    cfg = spec.resolve_config(gstalker_fixtures.TINY)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / CHECKPOINT_FILE).write_bytes(b"")  # the disk filled up before anything was written
    (folder / PREVIOUS_FILE).write_text("copied from somewhere else")
    with caplog.at_level(logging.WARNING):
        summary = spec.train(cfg, tracked_root / IDENTITY, {}, folder)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(folder / CHECKPOINT_FILE) in w and f"resuming from {folder / PREVIOUS_FILE}" in w
               for w in warnings), warnings
    assert any(str(folder / PREVIOUS_FILE) in w and "training from the start" in w for w in warnings), warnings
    assert summary["iterations"] == cfg.total_iterations
    assert curve_steps(folder)[0] == 2
    assert_only_the_final_checkpoint(folder)


def test_a_second_training_of_the_same_output_fails_at_once_naming_the_folder_and_the_process(tmp_path):
    target = tmp_path / "models" / "static" / "S001"
    holder = hold_output(target)
    try:
        spec = get_method("static")
        with pytest.raises(OutputBusyError) as refused:
            train.run(train.TrainConfig(), {"processed": tmp_path / "processed" / "S001"}, {"model": target},
                      identity="S001", method=spec, method_config=spec.resolve_config({}))
        message = str(refused.value)
        assert str(target) in message and f"pid {holder.pid}" in message and "wait for it to finish" in message
        # The first run's work is untouched and nothing was written for the second.
        assert (target.parent / ".S001.partial" / "checkpoint.pt").read_text() == "step 10"
        assert not target.exists()
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0 and target.is_dir()
