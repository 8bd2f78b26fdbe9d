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


# ---------------------------------------------------------------------------------------------------------------
# Permissions: what the umask gives any new file, not mkdtemp's/mkstemp's private modes


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    import os

    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, umask, mask):
    import stat

    from talkhead_models.atomic import process_umask, resumable_dir

    umask(mask)
    assert process_umask() == mask

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    with atomic_dir(tmp_path / "out") as tmp:
        assert mode(tmp) == 0o777 & ~mask  # also while being written: a reader may wait on it
        (tmp / "a.txt").write_text("x")
    assert mode(tmp_path / "out") == 0o777 & ~mask
    with atomic_file(tmp_path / "report.md") as tmp:
        tmp.write_text("x")
    assert mode(tmp_path / "report.md") == 0o666 & ~mask
    with resumable_dir(tmp_path / "model") as work:
        assert mode(work) == 0o777 & ~mask
    assert mode(tmp_path / "model") == 0o777 & ~mask


# ---------------------------------------------------------------------------------------------------------------
# One writer per resumable output


HOLDER = """
import sys
from talkhead_models.atomic import resumable_dir
with resumable_dir(sys.argv[1]) as work:
    (work / "checkpoint.pt").write_text("step 10")
    print("holding", flush=True)
    sys.stdin.readline()
"""


def hold_output(target):
    """A process inside ``resumable_dir(target)`` until its stdin closes."""
    import subprocess
    import sys
    from pathlib import Path

    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    assert process.stdout.readline().strip() == "holding"
    return process


def test_a_second_run_on_the_same_output_fails_at_once_naming_the_folder_and_the_holder(tmp_path):
    import time

    from talkhead_models.atomic import OutputBusyError, resumable_dir

    target = tmp_path / "model"
    holder = hold_output(target)
    try:
        started = time.monotonic()
        with pytest.raises(OutputBusyError) as refused:
            with resumable_dir(target):
                pytest.fail("entered an output another process is writing")
        assert time.monotonic() - started < 1.0
        message = str(refused.value)
        assert str(target) in message and str(tmp_path / ".model.partial") in message
        assert f"pid {holder.pid}" in message
        # The refused run touched nothing of the holder's work.
        assert (tmp_path / ".model.partial" / "checkpoint.pt").read_text() == "step 10"
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no lock file left behind


def test_the_lock_of_a_killed_run_is_taken_over_and_its_work_resumed(tmp_path):
    from talkhead_models.atomic import lock_path, resumable_dir

    target = tmp_path / "model"
    holder = hold_output(target)
    holder.kill()
    holder.wait(timeout=60)
    assert lock_path(target).exists()  # killed: it could not remove its lock file
    with resumable_dir(target) as work:
        assert (work / "checkpoint.pt").read_text() == "step 10"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_waiting_for_a_lock_serialises_its_holders(tmp_path):
    import threading
    import time

    from talkhead_models.atomic import exclusive_lock

    lock = tmp_path / ".db.lock"
    inside, overlaps = [], []

    def hold(name):
        with exclusive_lock(lock):
            if inside:
                overlaps.append((inside[0], name))
            inside.append(name)
            time.sleep(0.05)
            inside.remove(name)

    threads = [threading.Thread(target=hold, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert overlaps == [] and not lock.exists()
