"""talkhead_models.checkpoints: when checkpoints are written, how, and what a resume does with a bad one."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from talkhead_models.checkpoints import (CHECKPOINT_FILE, PREVIOUS_FILE, Checkpoints, CurveRow, read_checkpoint,
                                         read_curve, write_curve, UnreadableCheckpoint)


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(step: int) -> dict:
    return {"step": step, "weights": torch.full((4,), float(step))}


def test_saves_replace_the_checkpoint_atomically_and_keep_the_previous_one(tmp_path):
    checkpoints = Checkpoints(tmp_path, every=10, seconds=60)
    checkpoints.save(record(10))
    checkpoints.save(record(20))
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["step"] == 20
    assert torch.load(tmp_path / PREVIOUS_FILE, weights_only=True)["step"] == 10
    assert {p.name for p in tmp_path.iterdir()} == {CHECKPOINT_FILE, PREVIOUS_FILE}

    class DiskFull(OSError):
        pass

    def fails_half_way(obj, path):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip")
        raise DiskFull("no space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "save", fails_half_way)
        with pytest.raises(DiskFull):
            checkpoints.save(record(30))
    # Nothing half-written is left, and neither good checkpoint was touched.
    assert {p.name for p in tmp_path.iterdir()} == {CHECKPOINT_FILE, PREVIOUS_FILE}
    assert checkpoints.load().record["step"] == 20


def test_an_unreadable_checkpoint_is_named_moved_aside_and_the_previous_one_resumes(tmp_path, caplog):
    checkpoints = Checkpoints(tmp_path, every=10, seconds=60)
    checkpoints.save(record(10))
    checkpoints.save(record(20))
    path = tmp_path / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:100])  # a copy cut short
    with pytest.raises(UnreadableCheckpoint, match=str(path)):
        read_checkpoint(path)
    with caplog.at_level(logging.WARNING, logger="talkhead_models.checkpoints"):
        loaded = checkpoints.load()
    assert loaded.path == tmp_path / PREVIOUS_FILE and loaded.record["step"] == 10
    assert torch.equal(loaded.record["weights"], torch.full((4,), 10.0))
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{CHECKPOINT_FILE}.bad-")]
    assert len(aside) == 1 and not path.exists()
    message = caplog.text
    assert str(path) in message and aside[0].name in message and "resuming from" in message

    # The run goes on: its next save becomes the checkpoint; finishing drops the previous and the bad file.
    checkpoints.save(record(30))
    checkpoints.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]
    assert checkpoints.load().record["step"] == 30


def test_with_no_readable_checkpoint_training_starts_over(tmp_path, caplog):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"")
    (tmp_path / PREVIOUS_FILE).write_text("not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="talkhead_models.checkpoints"):
        assert Checkpoints(tmp_path, every=10, seconds=60).load() is None
    assert "training from the start" in caplog.text
    assert sorted(p.name.split(".bad-")[0] for p in tmp_path.iterdir()) == sorted([CHECKPOINT_FILE, PREVIOUS_FILE])
    assert Checkpoints(tmp_path / "empty", every=10, seconds=60).load() is None


def test_a_foreign_record_is_moved_aside_and_an_incompatible_one_is_ignored_in_place(tmp_path, caplog):
    checkpoints = Checkpoints(tmp_path, every=10, seconds=60)
    checkpoints.save({"something": "else"})

    def needs_step(saved):
        saved["step"]

    with caplog.at_level(logging.WARNING, logger="talkhead_models.checkpoints"):
        assert checkpoints.load(validate=needs_step) is None
    assert "not a checkpoint of this trainer" in caplog.text and not (tmp_path / CHECKPOINT_FILE).exists()

    checkpoints.save(record(10))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="talkhead_models.checkpoints"):
        assert checkpoints.load(incompatible=lambda saved: "was made with another architecture") is None
    assert f"{tmp_path / CHECKPOINT_FILE} was made with another architecture" in caplog.text
    assert (tmp_path / CHECKPOINT_FILE).is_file()


def test_a_checkpoint_is_due_every_n_iterations_and_after_the_wall_clock_interval():
    clock = FakeClock()
    checkpoints = Checkpoints("unused", every=100, seconds=60, clock=clock)
    clock.now += 59.9
    assert [checkpoints.due(i) for i in (1, 99, 100, 200)] == [False, False, True, True]
    clock.now += 0.1
    assert checkpoints.due(101)
    checkpoints._last_save = clock()  # as a save at this moment would
    clock.now += 30
    assert not checkpoints.due(102)
    clock.now += 30
    assert checkpoints.due(103)


def test_the_wall_clock_restarts_at_each_save(tmp_path):
    clock = FakeClock()
    checkpoints = Checkpoints(tmp_path, every=10**9, seconds=60, clock=clock)
    saved_at = []
    for iteration in range(1, 400):
        clock.now += 1.0  # one iteration a second
        if checkpoints.due(iteration):
            checkpoints.save(record(iteration))
            saved_at.append(iteration)
    assert saved_at == [60, 120, 180, 240, 300, 360]
    assert checkpoints.load().record["step"] == 360


def test_curve_rows_round_trip_and_a_resume_drops_the_rows_after_its_checkpoint(tmp_path):
    rows = [CurveRow(5, 1.23456, 0.5, None), CurveRow(10, 2.5, 0.25, 21.123456), CurveRow(15, 3.75, 0.125)]
    path = tmp_path / "curve.csv"
    write_curve(path, rows)
    assert path.read_text().splitlines() == ["step,seconds,loss,val_psnr", "5,1.235,0.5,", "10,2.500,0.25,21.1235",
                                             "15,3.750,0.125,"]
    back = read_curve(path, until_step=10)
    assert [row.step for row in back] == [5, 10]
    assert back[0].val_psnr is None and back[1].val_psnr == pytest.approx(21.1235, abs=1e-9)
    assert back[1].seconds == pytest.approx(2.5) and back[1].loss == pytest.approx(0.25)
    assert read_curve(tmp_path / "missing.csv", 10) == []
    # Checkpoints hold plain numbers: a row without validation is NaN there.
    assert math.isnan(rows[0].as_list()[3]) and CurveRow.from_list(rows[0].as_list()) == rows[0]
    assert CurveRow.from_list(rows[1].as_list()) == rows[1]


def test_a_malformed_curve_is_refused_naming_the_file_and_line(tmp_path):
    path = tmp_path / "curve.csv"
    path.write_text("step,seconds,loss,val_psnr\n5,1.0,0.5,\n10,oops,0.25,\n")
    with pytest.raises(ValueError, match=rf"{path}:3: .*delete the file"):
        read_curve(path, until_step=100)
