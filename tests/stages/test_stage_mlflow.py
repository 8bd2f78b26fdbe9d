"""stages._stage's MLflow runs: several stages starting at once on a fresh root, runs of processes that died."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from stages._stage import EXPERIMENT, process_alive, process_start, tracked_run, tracking_uri

REPOSITORY = Path(__file__).resolve().parents[2]


def runs_by_name(root: Path) -> dict[str, list[str]]:
    mlflow.set_tracking_uri(tracking_uri(root))
    found: dict[str, list[str]] = {}
    for run in mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list"):
        found.setdefault(run.info.run_name, []).append(run.info.status)
    return {name: sorted(statuses) for name, statuses in found.items()}


@pytest.mark.slow
def test_stages_started_at_once_on_a_fresh_root_all_finish(tmp_path):
    """Three stage processes released together on a root without mlflow.db. Without the lock two were enough to
    crash every try ("table alembic_version already exists", or alembic's "Online migration expected to match
    one row"); benchmarks/concurrent_starts.py runs ten such tries."""
    from benchmarks.concurrent_starts import one_try

    result = one_try(tmp_path, processes=3)
    assert result["errors"] == [] and result["run_statuses"] == ["FINISHED"] * 3, result
    assert not list(tmp_path.glob(".*.lock"))


def test_a_dead_process_is_told_from_a_live_one():
    assert process_alive(os.getpid(), process_start(os.getpid()))
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    assert not process_alive(int(finished.stdout))
    if process_start(os.getpid()):  # /proc: a reused pid is told apart by its start time
        assert not process_alive(os.getpid(), str(int(process_start(os.getpid())) + 1))


KILLED_STAGE = """
import sys, time
from pathlib import Path
from stages._stage import tracked_run
with tracked_run("train", Path(sys.argv[1]), {}, identity="S001", method="r2talker", seed=0):
    print("running", flush=True)
    time.sleep(600)
"""


def test_a_run_left_running_by_a_killed_process_is_marked_killed_when_its_stage_starts_again(tmp_path, caplog):
    with tracked_run("crop", tmp_path, {}, identity="S001"):
        pass  # the database exists before the stage that will be killed starts
    killed = subprocess.Popen([sys.executable, "-c", KILLED_STAGE, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=REPOSITORY)
    assert killed.stdout.readline().strip() == "running"
    killed.kill()
    killed.wait(timeout=60)

    client = mlflow.MlflowClient(tracking_uri(tmp_path))
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    name = "train@r2talker-S001-s0"
    assert runs_by_name(tmp_path)[name] == ["RUNNING"]  # killed: nothing ended its run
    # Runs this start must leave alone: one of a live process, one of another machine, another stage's dead one.
    live = {"process_id": str(os.getpid()), "process_host": socket.gethostname(),
            "process_start": process_start(os.getpid())}
    client.create_run(experiment, run_name=name, tags=live)
    client.create_run(experiment, run_name=name, tags={**live, "process_id": str(killed.pid),
                                                       "process_host": "another-machine"})
    client.create_run(experiment, run_name="evaluate@r2talker-S001-s0", tags={**live, "process_id": str(killed.pid)})
    assert runs_by_name(tmp_path)[name] == ["RUNNING"] * 3

    with caplog.at_level("WARNING", logger="stages._stage"):
        with tracked_run("train", tmp_path, {}, identity="S001", method="r2talker", seed=0):
            pass
    assert runs_by_name(tmp_path) == {"crop@S001": ["FINISHED"], name: ["FINISHED", "KILLED", "RUNNING", "RUNNING"],
                                      "evaluate@r2talker-S001-s0": ["RUNNING"]}
    assert f"left RUNNING by process {killed.pid}" in caplog.text


def test_a_stage_run_nests_under_the_run_its_flow_names_and_carries_its_methods_tags(tmp_path, monkeypatch):
    from stages._stage import PARENT_RUN_ENV

    client = mlflow.MlflowClient(tracking_uri(tmp_path))
    with tracked_run("crop", tmp_path, {}, identity="S001"):
        pass  # creates the database and the experiment
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    parent = client.create_run(experiment, run_name="train-identity:flow").info.run_id
    monkeypatch.setenv(PARENT_RUN_ENV, parent)
    with tracked_run("train", tmp_path, {}, identity="S001", method="r2talker", seed=2,
                     extra_tags={"family": "r2talker", "demo_aids": "4 landmark levels"}) as run:
        child = run._run.info.run_id
    tags = client.get_run(child).data.tags
    assert tags["mlflow.parentRunId"] == parent
    assert {k: tags[k] for k in ("stage", "method", "family", "identity", "seed", "demo_aids")} == {
        "stage": "train", "method": "r2talker", "family": "r2talker", "identity": "S001", "seed": "2",
        "demo_aids": "4 landmark levels"}
    monkeypatch.delenv(PARENT_RUN_ENV)
    with tracked_run("crop", tmp_path, {}, identity="S002") as run:
        alone = run._run.info.run_id
    assert "mlflow.parentRunId" not in client.get_run(alone).data.tags
