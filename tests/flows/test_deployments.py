"""The flows deployed to a process work pool and run by workers, as on several machines (docs/DISTRIBUTED.md).

A real Prefect server (the session's ``prefect_server``), a ``process`` work pool with a unique name,
``flows.deploy.deploy`` of ``train-identity`` from a repository-shaped workspace, and
``prefect worker start`` subprocesses in that workspace, each with its own PREFECT_HOME and local slot
locks as a separate host would have. Runs are started through the API endpoint the UI's "Run" button
posts to (``POST /deployments/{id}/create_flow_run``); the checks look at what the runs left behind: the
model, ``dvc status``, the MLflow runs, and when the trainings ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from flows.ui import stop_groups
from tests.flows.test_flows import _dvc_status, _params, _workspace

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
RUN_TIMEOUT = 300.0  # a train-identity run of `static` takes ~30 s here; two at once, serialised, ~1 min
WORKER_START_TIMEOUT = 120.0
STATIC = {"method": "static", "family": "static", "identity": "S001"}
NEAREST_POSE = {"method": "nearest_pose", "family": "nearest_pose", "identity": "S001"}


@dataclass
class Worker:
    """A ``prefect worker start`` subprocess standing in for one host."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def log(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"<no log: {exc}>"

    def stop(self) -> None:
        """Stop the worker's process group (the worker and any flow run it started)."""
        stop_groups([self.process], [f"worker {self.name}"], timeout=30)


def _start_worker(server, pool: str, name: str, cwd: Path, host_dir: Path, extra_env: dict | None = None) -> Worker:
    """``prefect worker start`` for ``pool`` as host ``name``: its own PREFECT_HOME and slot lock folder
    (separate machines share neither), this venv first on PATH, the workspace as its working directory."""
    host_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **server.env,
           "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
           "PREFECT_HOME": str(host_dir / "prefect-home"),
           "TALKHEAD_SLOT_LOCKS": str(host_dir / "slot-locks"),
           "PREFECT_WORKER_QUERY_SECONDS": "1",  # pick runs up within a second (default 10 s)
           "PREFECT_WORKER_PREFETCH_SECONDS": "0",
           **(extra_env or {})}
    env.pop("PYTHONPATH", None)
    env.pop("TALKHEAD_MLFLOW_URI", None)
    log_path = host_dir / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", name,
             "--limit", "1"],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # own process group: stopped with its flow runs
    return Worker(name=name, process=process, log_path=log_path)


def _wait_for_workers(pool: str, workers: list[Worker]) -> None:
    """Until the server lists every worker of ``pool`` (each has sent its first heartbeat)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + WORKER_START_TIMEOUT
    with get_client(sync_client=True) as client:
        while True:
            for worker in workers:
                if worker.process.poll() is not None:
                    pytest.fail(f"worker {worker.name} exited with {worker.process.returncode}:\n{worker.log()}")
            online = {w.name for w in client.read_workers_for_work_pool(pool)}
            if {w.name for w in workers} <= online:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"workers {sorted({w.name for w in workers} - online)} not seen by the server within "
                            f"{WORKER_START_TIMEOUT:.0f} s:\n" + "\n".join(w.log() for w in workers))
            time.sleep(0.5)


def _wait_for_runs(run_ids: list, workers: list[Worker]) -> dict:
    """Poll the flow runs until every one is in a final state; fail with the workers' log tails otherwise."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + RUN_TIMEOUT
    with get_client(sync_client=True) as client:
        while True:
            runs = {run_id: client.read_flow_run(run_id) for run_id in run_ids}
            if all(run.state is not None and run.state.is_final() for run in runs.values()):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"flow runs not final within {RUN_TIMEOUT:.0f} s: "
                            f"{ {str(i): r.state.type.value if r.state else None for i, r in runs.items()} }\n"
                            + _logs(workers))
            time.sleep(1)
    failed = {str(i): f"{r.state.type.value}: {r.state.message}" for i, r in runs.items() if not r.state.is_completed()}
    if failed:
        pytest.fail(f"flow run(s) did not complete: {failed}\n" + _logs(workers))
    return runs


def _logs(workers: list[Worker]) -> str:
    return "\n".join(f"--- worker {w.name} (log tail) ---\n{w.log()}" for w in workers)


def _trigger(deployment_id: str, parameters: dict):
    """A flow run of the deployment as the UI's "Run" button makes it: ``POST /deployments/{id}/create_flow_run``."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.create_flow_run_from_deployment(deployment_id, parameters=parameters)


def _refused(server, deployment_id: str, parameters: dict) -> tuple[int, str]:
    """POST a run with ``parameters`` to the endpoint the UI uses; returns the HTTP status and the reason."""
    import httpx

    response = httpx.post(f"{server.api_url}/deployments/{deployment_id}/create_flow_run",
                          json={"parameters": parameters, "state": {"type": "SCHEDULED"}}, timeout=30)
    return response.status_code, response.text


def _mlflow_runs(tracking: str) -> list:
    mlflow.set_tracking_uri(tracking)
    return mlflow.search_runs(experiment_names=["talkhead"], output_format="list")


def _set_limit(name: str, slots: int) -> None:
    """The global concurrency limit ``name`` with exactly ``slots`` slots, active (created or resized): another
    test of the session may have created the default limit with another size."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
        else:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
        limit = client.read_global_concurrency_limit_by_name(name)
    assert (limit.limit, limit.active) == (slots, True)


class TrainingWatch:
    """Samples the process table (every 50 ms, in a thread) for ``python -m stages.train`` children working in
    ``root``: which methods were training at each moment, seen from outside the flows."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.seen: dict[str, list[float]] = {}  # method: [first seen, last seen] (time.time())
        self.most_at_once = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="training-watch")

    def __enter__(self) -> "TrainingWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _training(self) -> set[str]:
        methods = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                if "stages.train" not in " ".join(argv) or Path(os.readlink(entry / "cwd")) != self.root:
                    continue
            except OSError:  # gone meanwhile, or not ours to read
                continue
            words = " ".join(argv).split()
            if "--method" in words[:-1]:
                methods.add(words[words.index("--method") + 1])
        return methods

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            now, methods = time.time(), self._training()
            self.most_at_once = max(self.most_at_once, len(methods))
            for method in methods:
                self.seen.setdefault(method, [now, now])[1] = now


def _ran_by(run, workers: list[Worker]) -> list[str]:
    """The workers whose process ran flow run ``run``: its engine's output streams into that worker's log only
    (a worker that lost the race to submit it logs the submission and then "Aborted submission")."""
    ran = []
    for worker in workers:
        text = worker.log_path.read_text(errors="replace")
        if f"Flow run '{run.name}' - " in text and f"Aborted submission of flow run '{run.id}'" not in text:
            ran.append(worker.name)
    return ran


def test_a_deployed_train_identity_run_started_like_the_ui_runs_on_a_worker_and_records_its_stage(
        prefect_server, tracked_root, tiny_corpus, untrained_audio2motion, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows.deploy import deploy

    root = _workspace(tmp_path, _params({"static-S001": STATIC}, {}), tracked_root, tiny_corpus,
                      untrained_audio2motion)
    pool = f"talkhead-test-{uuid.uuid4().hex[:8]}"
    (deployment_id,) = deploy(source=root, pool=pool, names=["train-identity"])
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
        assert client.read_work_pool(pool).type == "process"
    assert (deployment.name, deployment.work_pool_name, deployment.entrypoint) == (
        "train-identity", pool, "flows/identity.py:train_identity")
    assert deployment.enforce_parameter_schema and deployment.job_variables == {"env": {}}
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(root)}}]
    schema = deployment.parameter_openapi_schema["properties"]
    assert "static" in schema["method"]["enum"] and schema["identity"]["pattern"]

    # Refused by the server against the deployment's parameter schema, before any flow run exists.
    for bad, field in (({"method": "static", "identity": "bad name!"}, "identity"),
                       ({"method": "nerf_from_the_future"}, "method")):
        status, reason = _refused(prefect_server, deployment_id, bad)
        assert status == 409 and "Validation failed" in reason and field in reason, (bad, status, reason)
    with pytest.raises(Exception, match="(?i)validation|409|422"):
        _trigger(deployment_id, {"method": "static", "identity": "bad name!"})
    with get_client(sync_client=True) as client:
        assert client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[uuid.UUID(deployment_id)]))) == []

    worker = _start_worker(prefect_server, pool, "host-a", root, tmp_path / "host-a")
    try:
        _wait_for_workers(pool, [worker])
        started = time.monotonic()
        flow_run = _trigger(deployment_id, {"method": "static", "identity": "S001"})
        (run,) = _wait_for_runs([flow_run.id], [worker]).values()
        print(f"\ntrain-identity static-S001 on worker host-a: {time.monotonic() - started:.1f} s from trigger to "
              f"Completed ({run.total_run_time.total_seconds():.1f} s running)")
    finally:
        worker.stop()
    assert _ran_by(run, [worker]) == ["host-a"], worker.log()

    assert (root / "data" / "models" / "static" / "S001" / "train.json").is_file()
    assert _dvc_status(root, "train@static-S001-s0") == {}
    runs = _mlflow_runs(f"sqlite:///{root / 'mlflow.db'}")
    (parent,) = [r for r in runs if r.data.tags.get("flow") == "train-identity"]
    assert parent.data.tags["flow_run_id"] == str(run.id) and parent.info.status == "FINISHED"
    assert parent.data.tags["method"] == "static" and parent.data.tags["identity"] == "S001"
    (train,) = [r for r in runs if r.data.tags.get("stage") == "train"]
    assert train.data.tags["mlflow.parentRunId"] == parent.info.run_id and train.info.status == "FINISHED"


def test_two_workers_as_two_hosts_share_the_global_cpu_slot_and_record_both_stages(
        prefect_server, tracked_root, tiny_corpus, untrained_audio2motion, tmp_path):
    from flows.deploy import deploy

    root = _workspace(tmp_path, _params({"static-S001": STATIC, "nearest_pose-S001": NEAREST_POSE}, {}),
                      tracked_root, tiny_corpus, untrained_audio2motion)
    pool = f"talkhead-test-{uuid.uuid4().hex[:8]}"
    # The deployment's environment reaches the runs: MLflow goes where it says, as a tracking server would.
    tracking = f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}"
    (tmp_path / "tracking").mkdir()
    # No tracking database yet: the two flows start at once and the first creates it (under its lock).
    (deployment_id,) = deploy(source=root, pool=pool, env={"TALKHEAD_MLFLOW_URI": tracking},
                              names=["train-identity"])
    # One CPU job at a time in the whole fleet, although each host has its own free local CPU slot.
    _set_limit("cpu", 1)
    hosts = {"TALKHEAD_CPU_SLOTS": "1"}
    workers = [_start_worker(prefect_server, pool, name, root, tmp_path / name, hosts) for name in ("host-a", "host-b")]
    try:
        _wait_for_workers(pool, workers)
        with TrainingWatch(root) as watch:
            flow_runs = [_trigger(deployment_id, {"method": method, "identity": "S001"})
                         for method in ("static", "nearest_pose")]
            runs = _wait_for_runs([r.id for r in flow_runs], workers)
    finally:
        for worker in workers:
            worker.stop()

    for method in ("static", "nearest_pose"):
        assert (root / "data" / "models" / method / "S001" / "train.json").is_file()
    assert _dvc_status(root, "train@static-S001-s0", "train@nearest_pose-S001-s0") == {}
    assert not (root / "mlflow.db").exists()  # the deployment's TALKHEAD_MLFLOW_URI was used

    mlflow_runs = _mlflow_runs(tracking)
    parents = {r.data.tags["flow_run_id"]: r for r in mlflow_runs if r.data.tags.get("flow") == "train-identity"}
    assert set(parents) == {str(i) for i in runs}
    trainings = {}
    for run_id, parent in parents.items():
        (train,) = [r for r in mlflow_runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert train.data.tags["stage"] == "train" and train.data.tags["family"] == parent.data.tags["method"]
        assert parent.info.status == train.info.status == "FINISHED"
        trainings[parent.data.tags["method"]] = (train.info.start_time, train.info.end_time)
    (a_start, a_end), (b_start, b_end) = trainings.values()
    overlap_ms = min(a_end, b_end) - max(a_start, b_start)

    # Which host ran which, and whether the two flow runs were running at once (then only the slot kept the
    # trainings apart).
    ran_by = {runs[r.id].parameters["method"]: _ran_by(runs[r.id], workers) for r in flow_runs}
    flow_spans = [(runs[r.id].start_time, runs[r.id].end_time) for r in flow_runs]
    flows_overlap = max(s for s, _ in flow_spans) < min(e for _, e in flow_spans)
    report = {"ran_by": ran_by, "flow_runs_overlapped": flows_overlap,
              "mlflow_train_runs_ms": {m: [s, e, e - s] for m, (s, e) in trainings.items()},
              "gap_between_mlflow_train_runs_ms": -overlap_ms,
              "training_processes_seen_s": {m: [round(s - min(v[0] for v in watch.seen.values()), 2),
                                                round(e - min(v[0] for v in watch.seen.values()), 2)]
                                            for m, (s, e) in watch.seen.items()},
              "most_training_processes_at_once": watch.most_at_once}
    print("\n" + json.dumps(report, indent=1))
    # Both flows were running at once (each on its host), so only the global slot can have kept the trainings
    # apart: their child processes, watched from outside, and their MLflow runs never overlapped.
    assert flows_overlap, report
    assert set(watch.seen) == {"static", "nearest_pose"} and watch.most_at_once == 1, report
    assert overlap_ms <= 0, f"the trainings overlapped by {overlap_ms} ms although the cpu limit has 1 slot: {report}"
    assert all(len(names) == 1 for names in ran_by.values()), (report, _logs(workers))
    # Each worker takes one run at a time (--limit 1) and both were online before the runs were made, so each
    # host ran one: the second run went to the other host rather than waiting for the first.
    assert sorted(names[0] for names in ran_by.values()) == ["host-a", "host-b"], (report, _logs(workers))


def test_deploy_takes_the_workers_path_as_given_and_refuses_what_a_worker_could_not_run_in(
        prefect_server, tmp_path):
    """No worker: what the deployments say. A source that is not on this machine (deploying from a laptop) and a
    symlinked shared mount keep their path as the workers will see it; a URL or a relative path that is not here
    is refused."""
    from prefect.client.orchestration import get_client

    from flows.deploy import deploy

    pool = f"talkhead-test-{uuid.uuid4().hex[:8]}"
    elsewhere = f"/srv/talkhead-{uuid.uuid4().hex[:8]}"  # not on this machine
    link = tmp_path / "mount"
    link.symlink_to(Path(__file__).resolve().parents[2])  # this repository, through a link
    ids = dict(zip(("elsewhere", "link"), [
        deploy(source=elsewhere, pool=pool, env={"TALKHEAD_MLFLOW_URI": "http://mlflow-host:5000"},
               names=["train-identity", "reproduce"]),
        deploy(source=link, pool=f"{pool}-b", names=["evaluate-identity"])]))
    with get_client(sync_client=True) as client:
        deployments = {key: [client.read_deployment(i) for i in value] for key, value in ids.items()}
    for deployment in deployments["elsewhere"]:
        assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": elsewhere}}]
        assert deployment.job_variables == {"env": {"TALKHEAD_MLFLOW_URI": "http://mlflow-host:5000"}}
        assert deployment.entrypoint.startswith("flows/identity.py:") and deployment.enforce_parameter_schema
        assert deployment.parameter_openapi_schema["properties"]
    assert [d.entrypoint for d in deployments["elsewhere"]] == ["flows/identity.py:train_identity",
                                                                "flows/identity.py:reproduce"]
    (linked,) = deployments["link"]
    assert linked.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(link)}}]
    assert "method" in linked.parameter_openapi_schema["properties"]

    for bad in ("https://github.com/example/talkhead.git", "git@github.com:example/talkhead.git",
                "not/here/talkhead"):
        with pytest.raises(ValueError, match="--source"):
            deploy(source=bad, pool=pool)
    with pytest.raises(ValueError, match="unknown flow"):
        deploy(source=elsewhere, pool=pool, names=["train-identiy"])
