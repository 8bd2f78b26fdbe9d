import pytest

from talkhead_models.atomic import atomic_dir, atomic_file


def test_failed_writer_leaves_previous_output(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_new_output_replaces_old(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "old.txt").write_text("x")
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def test_atomic_file(tmp_path):
    target = tmp_path / "report.md"
    with pytest.raises(ValueError):
        with atomic_file(target) as tmp:
            tmp.write_text("partial")
            raise ValueError
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_file(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"


def test_resumable_dir_keeps_its_work_after_a_failure_and_replaces_the_output_on_success(tmp_path):
    from talkhead_models.atomic import resumable_dir

    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("previous")
    with pytest.raises(RuntimeError):
        with resumable_dir(target) as work:
            (work / "checkpoint.pt").write_text("step 10")
            raise RuntimeError("killed")
    assert (target / "old.txt").read_text() == "previous"
    assert (tmp_path / ".model.partial" / "checkpoint.pt").read_text() == "step 10"
    with resumable_dir(target) as work:
        assert (work / "checkpoint.pt").read_text() == "step 10"  # the next run resumes from it
        (work / "final.txt").write_text("done")
    assert sorted(p.name for p in target.iterdir()) == ["checkpoint.pt", "final.txt"]
    assert not (tmp_path / ".model.partial").exists()
