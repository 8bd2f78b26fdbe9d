"""The method contract's helpers in talkhead_models/methods/base.py."""

from __future__ import annotations

import pytest

from talkhead_models.checkpoints import CURVE_FILE
from talkhead_models.methods.base import SAMPLES_DIR, model_dir_file, training_artifacts


def test_training_artifacts_are_the_curve_then_the_sample_renders_in_order(tmp_path):
    assert training_artifacts(tmp_path) == []  # a trainer need not write any
    (tmp_path / SAMPLES_DIR).mkdir()
    for name in ("step_0000200.png", "step_0000100.png", "notes.txt"):
        (tmp_path / SAMPLES_DIR / name).write_bytes(b"x")
    (tmp_path / CURVE_FILE).write_text("step,seconds,loss,val_psnr\n")
    assert [p.relative_to(tmp_path).as_posix() for p in training_artifacts(tmp_path)] == [
        CURVE_FILE, f"{SAMPLES_DIR}/step_0000100.png", f"{SAMPLES_DIR}/step_0000200.png"]


def test_a_missing_model_file_names_the_stage_to_rerun(tmp_path):
    with pytest.raises(FileNotFoundError, match="re-run the train stage"):
        model_dir_file(tmp_path, "model.pt")
    (tmp_path / "model.pt").write_bytes(b"")
    assert model_dir_file(tmp_path, "model.pt") == tmp_path / "model.pt"
