"""Device slots (flows/slots.py) against a real Prefect server.

The checks are independent of the code under test: wall-clock intervals written by separate
processes (overlap or not), a SIGKILL (is the slot given back, and when), and the server's own
view of the limits.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from flows import slots as slots_module
from flows.slots import SlotError, device_env, device_slot, ensure_limit, slot_kind

from .conftest import REPOSSESSOR_LOOP_SECONDS, SLOT_WAIT_SECONDS

REPO = Path(__file__).resolve().parents[2]
LEASE = 60.0  # the shortest lease the Prefect server accepts
HOLD = 2.5  # seconds a fake GPU task holds its slot

# A fake GPU task: signals it is ready (imports done), waits for "go" so that both contenders ask
# at the same moment, holds a device slot for `hold` seconds and writes when it held it.
FAKE_TASK = r"""
import json, os, sys, time
from pathlib import Path
import prefect.concurrency.sync, prefect.client.orchestration  # imports before "ready"
from flows.slots import device_slot

spec = json.loads(sys.argv[1])
out = Path(spec["out"])
Path(spec["out"] + ".ready").touch()
while not Path(spec["go"]).exists():
    time.sleep(0.02)
with device_slot(spec["kind"], slots=spec["slots"], devices=spec["devices"], limit=spec["limit"],
                 lease_duration=spec["lease"], lock_dir=Path(spec["lock_dir"]),
                 timeout_seconds=spec["timeout"]) as slot:
    start = time.time()
    Path(spec["out"] + ".held").write_text(json.dumps({"start": start, "pid": os.getpid()}))
    time.sleep(spec["hold"])
    end = time.time()
out.write_text(json.dumps({"start": start, "end": end, "index": slot.index, "env": slot.env,
                           "lease": str(slot.lease_id)}))
"""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _spawn(server, spec: dict) -> subprocess.Popen:
    env = {**os.environ, **server.env,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", FAKE_TASK, json.dumps(spec)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, procs: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"fake task exited with {proc.returncode}:\n{proc.stdout.read()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} not written within {timeout:.0f} s")
        time.sleep(0.05)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _read_limit(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name)


def _overlap(a: dict, b: dict) -> bool:
    return max(a["start"], b["start"]) < min(a["end"], b["end"])


# ---------------------------------------------------------------- no server needed


def test_cpu_env_hides_gpus_and_gpu_env_names_one_device(monkeypatch):
    assert device_env("cpu", 0) == {"CUDA_VISIBLE_DEVICES": ""}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert device_env("gpu", 1) == {"CUDA_VISIBLE_DEVICES": "1"}
    # Indices count the devices this process sees: under 2,3 local device 1 is physical 3.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert device_env("gpu", 1) == {"CUDA_VISIBLE_DEVICES": "3"}


def test_bad_arguments_are_refused_before_the_server_is_asked():
    with pytest.raises(ValueError, match="lease_duration"):
        with device_slot("cpu", lease_duration=5):
            pass
    with pytest.raises(ValueError, match="kind"):
        with device_slot("tpu"):  # type: ignore[arg-type]
            pass
    with pytest.raises(SlotError, match="no local gpu"):
        with device_slot("gpu", slots=1, devices=0):
            pass
    for bad in (0, -1):
        with pytest.raises(ValueError, match="at least 1 slot"):
            ensure_limit("never-created", bad)


def test_kind_follows_torch():
    import torch

    assert slot_kind() == ("gpu" if torch.cuda.is_available() and torch.cuda.device_count() else "cpu")


# ---------------------------------------------------------------- real server


@pytest.mark.slow
def test_ensure_limit_creates_then_leaves_size_alone(prefect_server):
    name = _name("ensure")
    assert ensure_limit(name, 3) == 3
    created = _read_limit(name)
    assert (created.limit, created.active) == (3, True)
    assert ensure_limit(name, 5) == 3  # an existing limit keeps its size
    assert _read_limit(name).limit == 3


@pytest.mark.slow
def test_ensure_limit_race_does_not_fail(prefect_server):
    name, results, errors = _name("race"), [], []

    def create() -> None:
        try:
            results.append(ensure_limit(name, 2))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and results == [2, 2, 2, 2]


@pytest.mark.slow
def test_ensure_limit_lost_race_uses_the_winners_limit(prefect_server, monkeypatch):
    """Another process creates the limit between our read (404) and our create (409)."""
    from prefect.client.orchestration import SyncPrefectClient, get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    name = _name("lost-race")
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=4))
    real_read, reads = SyncPrefectClient.read_global_concurrency_limit_by_name, []

    def read_before_the_winner(self, limit_name):
        reads.append(limit_name)
        if len(reads) == 1:  # our first look happened before the other process created it
            raise ObjectNotFound(http_exc=Exception("simulated 404"))
        return real_read(self, limit_name)

    monkeypatch.setattr(SyncPrefectClient, "read_global_concurrency_limit_by_name", read_before_the_winner)
    assert ensure_limit(name, 1) == 4
    assert reads == [name, name]


@pytest.mark.slow
def test_inactive_limit_is_refused(prefect_server):
    """Prefect grants slots on an inactive limit without counting them: a silent no-limit."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = _name("inactive")
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1, active=False))
    with pytest.raises(SlotError, match="inactive"):
        ensure_limit(name, 1)


@pytest.mark.slow
def test_missing_limit_with_strict_is_an_error(prefect_server, tmp_path):
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import concurrency

    missing = _name("missing")
    with pytest.raises(ConcurrencySlotAcquisitionError, match="must be created"):
        with concurrency(missing, occupy=1, strict=True, lease_duration=LEASE):
            pytest.fail("entered a limit that does not exist")
    # device_slot never meets that error for its own limit: it creates the limit first.
    with device_slot("cpu", slots=1, limit=missing, lease_duration=LEASE, lock_dir=tmp_path,
                     timeout_seconds=30) as slot:
        held = _read_limit(missing)
        assert (held.limit, held.active_slots) == (1, 1)
        assert slot.lease_id is not None
    assert _read_limit(missing).active_slots == 0


@pytest.mark.slow
def test_cpu_slot(prefect_server, tmp_path):
    with device_slot("cpu", lease_duration=LEASE, lock_dir=tmp_path, timeout_seconds=30) as slot:
        assert (slot.kind, slot.index) == ("cpu", 0)
        assert slot.env == {"CUDA_VISIBLE_DEVICES": ""}
        assert _read_limit("cpu").active_slots >= 1  # the default limit is named after the kind
        assert (tmp_path / "cpu-0.lock").read_text().strip() == str(os.getpid())


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, slots, devices, same_host",
    [
        # Acceptance: 1 GPU slot fleet-wide; the two tasks are on different "hosts" (lock dirs), so
        # only the global limit keeps them apart.
        ("global limit of 1", 1, 1, False),
        # Control: two slots and two devices on one host: they do overlap, on different devices,
        # so the timestamps can tell.
        ("two devices", 2, 2, True),
    ])
def test_fake_gpu_tasks_in_two_processes(prefect_server, tmp_path, case, slots, devices, same_host):
    limit, go = _name("gpu"), tmp_path / "go"
    specs = [dict(kind="gpu", slots=slots, devices=devices, limit=limit, lease=LEASE, hold=HOLD,
                  timeout=90, go=str(go), out=str(tmp_path / f"task{i}.json"),
                  lock_dir=str(tmp_path / ("host" if same_host else f"host{i}")))
             for i in range(2)]
    procs = [_spawn(prefect_server, spec) for spec in specs]
    try:
        for spec in specs:
            _wait_for(Path(spec["out"] + ".ready"), procs, timeout=90)
        go.touch()
        for proc in procs:
            output, _ = proc.communicate(timeout=90)
            assert proc.returncode == 0, output[-4000:]
    finally:
        _stop(procs)
    a, b = (json.loads(Path(spec["out"]).read_text()) for spec in specs)
    for run in (a, b):  # both ran, for their whole hold
        assert run["end"] - run["start"] >= HOLD
    if slots == 1:
        assert not _overlap(a, b), f"{case}: intervals {a} and {b} overlap"
        assert a["end"] <= b["start"] or b["end"] <= a["start"]
    else:
        assert _overlap(a, b), f"{case}: intervals {a} and {b} should overlap"
        assert {a["index"], b["index"]} == {0, 1}
        assert {a["env"]["CUDA_VISIBLE_DEVICES"], b["env"]["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
    assert _read_limit(limit).active_slots == 0  # both released


@pytest.mark.slow
def test_local_lock_keeps_one_device_exclusive(prefect_server, tmp_path):
    """Two global slots but one device on this host: the local lock serialises the tasks."""
    limit, intervals, errors = _name("gpu-local"), [], []

    def task() -> None:
        try:
            with device_slot("gpu", slots=2, devices=1, limit=limit, lease_duration=LEASE, lock_dir=tmp_path,
                             timeout_seconds=60, poll_seconds=0.1) as slot:
                start = time.time()
                time.sleep(1.5)
                intervals.append({"start": start, "end": time.time(), "index": slot.index})
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=task) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert errors == [] and len(intervals) == 2
    a, b = intervals
    assert not _overlap(a, b) and a["index"] == b["index"] == 0


@pytest.mark.slow
def test_slot_of_a_killed_process_is_released(prefect_server, tmp_path):
    limit = _name("gpu-kill")
    spec = dict(kind="gpu", slots=1, devices=1, limit=limit, lease=LEASE, hold=600, timeout=90,
                go=str(tmp_path / "go"), out=str(tmp_path / "holder.json"), lock_dir=str(tmp_path / "host"))
    (tmp_path / "go").touch()
    holder = _spawn(prefect_server, spec)
    try:
        _wait_for(Path(spec["out"] + ".held"), [holder], timeout=90)
        acquired = json.loads(Path(spec["out"] + ".held").read_text())["start"]
        holder.kill()  # SIGKILL: no finally, no release, no lease renewal any more
        holder.wait(timeout=30)
    finally:
        _stop([holder])

    # The OS dropped the local lock with the process ...
    fd = os.open(tmp_path / "host" / "gpu-0.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    # ... but the global slot stays taken until its lease expires: an immediate try times out.
    assert _read_limit(limit).active_slots == 1
    with pytest.raises(TimeoutError):
        with device_slot("gpu", slots=1, devices=1, limit=limit, lease_duration=LEASE,
                         lock_dir=tmp_path / "host", timeout_seconds=3):
            pytest.fail("got the slot of a process that was killed a moment ago")

    with device_slot("gpu", slots=1, devices=1, limit=limit, lease_duration=LEASE, lock_dir=tmp_path / "host",
                     timeout_seconds=LEASE + 60) as slot:
        waited = time.time() - acquired
        assert slot.index == 0
    # Freed by lease expiry (not before), within a few repossessor loops and retry waits after it.
    bound = LEASE + 3 * REPOSSESSOR_LOOP_SECONDS + 3 * SLOT_WAIT_SECONDS + 5
    assert LEASE - 2 <= waited <= bound, f"slot came back {waited:.1f} s after acquisition (bound {bound} s)"
    print(f"orphaned slot came back {waited:.1f} s after its acquisition (lease {LEASE:g} s)")


@pytest.mark.slow
def test_lost_lease_warns_and_the_task_goes_on(prefect_server, tmp_path, monkeypatch, caplog):
    """The server forgets the lease (as after a restart); renewal fails; the run is not killed."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency import _leases

    # Renew every 1.2 s instead of every 45 s, and retry quickly, so the loss shows within seconds.
    monkeypatch.setattr(_leases, "_RENEWAL_FRACTION", 0.02)
    monkeypatch.setattr(_leases, "_RENEWAL_RETRY_BASE_DELAY", 0.05)
    monkeypatch.setattr(_leases, "_RENEWAL_RETRY_MAX_DELAY", 0.1)
    limit, finished = _name("gpu-lost"), False
    caplog.set_level(logging.WARNING, logger=slots_module.__name__)
    with device_slot("gpu", slots=1, devices=1, limit=limit, lease_duration=LEASE, lock_dir=tmp_path,
                     timeout_seconds=30) as slot:
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease_id=slot.lease_id)
        deadline = time.monotonic() + 20
        while not any("lost the Prefect lease" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no warning about the lost lease"
            time.sleep(0.1)
        # Still running, still holding the device on this host.
        fd = os.open(tmp_path / "gpu-0.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        finished = True
    assert finished
    warning = next(r for r in caplog.records if "lost the Prefect lease" in r.getMessage())
    assert warning.levelno == logging.WARNING and str(slot.lease_id) in warning.getMessage()
    assert "local lock" in warning.getMessage()
