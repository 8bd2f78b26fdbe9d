"""Running stages of the DAG from flows: one Prefect task per stage, in a child process, recorded in DVC.

A task runs a stage exactly as ``dvc repro`` would (its ``cmd`` from
dvc.yaml: ``python -m stages.<name> ...``, which goes through
``Stage.execute``), so whoever starts a stage, it behaves the same. Around
that command the task

* holds the stage's lock, so two flows never write the same outputs at once
  (the second waits, then finds the stage up to date);
* skips the stage when DVC says it is up to date;
* holds a device slot for the stages that train or render (:mod:`flows.slots`),
  and gives the child the slot's ``CUDA_VISIBLE_DEVICES``;
* names the flow's MLflow run to the child, so the stage's run nests under it;
* records the stage in dvc.lock (``dvc commit`` of that one stage,
  :mod:`flows.dvc_state`), so ``dvc status`` is clean afterwards.

A failed child (a crash, an out-of-memory kill, a lost machine) is retried;
training resumes from its last checkpoint (talkhead_models.checkpoints), so
a retry repeats at most ``checkpoint_every`` iterations or 60 s of work.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import yaml
from prefect import task
from prefect.futures import PrefectFuture

from flows.dvc_state import DagStage, changed, child_environment, dag, record, topological, upstream_closure
from stages._stage import EXPERIMENT, PARENT_RUN_ENV, experiment_id, git_commit, tracking_uri
from talkhead_models.atomic import exclusive_lock, write_text

log = logging.getLogger(__name__)

DEVICE_STAGES = frozenset({"pretrain_sync", "pretrain_audio2motion", "train", "evaluate", "speed"})
"""Stages that train or render with torch: each holds a device slot (a GPU, or the CPU where there is none)."""

EXPERIMENTS_DIR = "experiments"
"""Where training runs outside the DAG (with overrides, or a seed params.yaml does not list) write their model."""

RAN, UP_TO_DATE = "ran", "up to date"


@dataclass(frozen=True)
class StageCall:
    """One stage a flow runs: a stage of dvc.yaml (recorded in DVC afterwards) or an experiment outside it."""

    name: str
    cmd: str
    device: bool
    in_dag: bool = True


def slot_settings() -> dict[str, Any]:
    """Slot counts for :func:`flows.slots.device_slot`: ``TALKHEAD_GPU_SLOTS`` / ``TALKHEAD_CPU_SLOTS`` when set.

    They size the global limits when a flow first creates them (default: the GPUs this machine sees, or one CPU
    job); a limit that exists keeps its size (change it with ``prefect gcl update``).
    """
    from flows.slots import slot_kind

    kind = slot_kind()
    count = os.environ.get(f"TALKHEAD_{kind.upper()}_SLOTS")
    return {"kind": kind, "slots": int(count) if count else None}


def _log_child_output(stream, logger: logging.Logger) -> list[str]:
    """Forward the child's output to the task's log line by line (a progress bar's redraws: its last state)."""
    tail: list[str] = []
    for raw in iter(stream.readline, b""):
        line = raw.rstrip(b"\n").split(b"\r")[-1].decode(errors="replace").rstrip()
        if line:
            logger.info("%s", line)
            tail = (tail + [line])[-40:]
    return tail


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when the thread that started it dies (the worker killed
    mid-task): a stage left running would keep a GPU whose slot and device lock its dead worker no longer holds.
    Built before the fork, so the child only calls into libc. None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    set_parent_death_signal = 1  # PR_SET_PDEATHSIG, <linux/prctl.h>

    def arm() -> None:
        prctl(set_parent_death_signal, signal.SIGKILL)

    return arm


def run_child(cmd: str, root: Path, env: Mapping[str, str], logger: logging.Logger) -> None:
    """Run a stage's command in ``root``; a non-zero exit raises with the command and the end of its output."""
    logger.info("$ %s", cmd)
    child = subprocess.Popen(cmd, shell=True, cwd=root, env=dict(env), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent())
    try:
        tail = _log_child_output(child.stdout, logger)
        code = child.wait()
    except BaseException:
        # The task was cancelled or the worker is going down: the child goes with it rather than keep a device.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        raise
    if code != 0:
        raise RuntimeError(f"`{cmd}` exited with {code}; its last lines:\n" + "\n".join(tail[-15:]))


def _task_logger() -> logging.Logger:
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()  # type: ignore[return-value]
    except Exception:  # outside a Prefect run (a direct call in a test)
        return log


@task(retries=2, retry_delay_seconds=5, task_run_name="{call.name}")
def run_stage(call: StageCall, root: str, parent_run: str | None, upstream: list[str] | None = None,
              known_stale: bool = True) -> str:
    """Run ``call`` unless it is up to date; returns :data:`RAN` or :data:`UP_TO_DATE`.

    ``upstream``: what this flow's tasks for the stages it depends on returned. A stage DVC found up to date
    when the flow started (``known_stale`` false) is looked at again only if one of them ran.
    """
    from flows.slots import device_slot

    logger = _task_logger()
    root_path = Path(root)
    lock = root_path / ".dvc" / "tmp" / "stages" / f"{call.name}.lock"
    with exclusive_lock(lock, what=f"stage {call.name}"):
        if call.in_dag and not known_stale and RAN not in (upstream or []):
            logger.info("%s: up to date", call.name)
            return UP_TO_DATE
        # Checked again under the lock: another flow may have run it while this one waited.
        if call.in_dag and not changed(root_path, [call.name]):
            logger.info("%s: up to date (dvc status)", call.name)
            return UP_TO_DATE
        env = child_environment(root_path)
        if parent_run:
            env[PARENT_RUN_ENV] = parent_run
        with device_slot(**slot_settings()) if call.device else contextlib.nullcontext() as slot:
            if slot is not None:
                env.update(slot.env)
                logger.info("%s: on %s slot %d", call.name, slot.kind, slot.index)
            run_child(call.cmd, root_path, env, logger)
        if call.in_dag:
            record(root_path, call.name)
    return RAN


def run_dag(root: Path, targets: list[str], parent_run: str | None) -> dict[str, str]:
    """Run ``targets`` and the stages they depend on, each once, as soon as its upstream stages are done;
    independent stages run at once (up to the flow's task runner's workers and the device slots).

    Returns each stage's outcome (:data:`RAN`, :data:`UP_TO_DATE`); a failed stage fails the flow after the
    stages that do not depend on it have run.
    """
    stages = dag(root)
    names = upstream_closure(stages, targets)
    order = topological(stages, names)
    stale = changed(root, names)
    log.info("%d stage(s) to bring up to date, %d found stale by dvc status: %s", len(order), len(stale),
             ", ".join(n for n in order if n in stale) or "none")
    futures: dict[str, PrefectFuture] = {}
    for name in order:
        stage: DagStage = stages[name]
        call = StageCall(name=name, cmd=stage.cmd, device=stage.kind in DEVICE_STAGES)
        futures[name] = run_stage.submit(
            call, str(root), parent_run, upstream=[futures[u] for u in sorted(stage.upstream) if u in futures],
            known_stale=name in stale)
    outcomes = {}
    failed = []
    for name, future in futures.items():
        try:
            outcomes[name] = future.result()
        except Exception as error:  # noqa: BLE001  (each failure is listed; the flow fails below)
            failed.append(f"{name}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
    if failed:
        raise RuntimeError(f"{len(failed)} stage(s) failed:\n" + "\n".join(failed))
    return outcomes


@contextlib.contextmanager
def flow_mlflow_run(root: Path, flow_name: str, tags: Mapping[str, str]) -> Iterator[str]:
    """The flow's own MLflow run, parent of the stage runs its children start; yields its id.

    Created through the client (not ``mlflow.start_run``): the flow's tasks run in threads and in child
    processes, which the fluent API's per-thread active run would not reach.
    """
    import mlflow
    from mlflow import MlflowClient

    from prefect.runtime import flow_run

    mlflow.set_tracking_uri(tracking_uri(root))
    # The experiment first: it creates a fresh SQLite database under its lock, which a client made before it
    # would do unlocked (two flows starting at once then crash in MLflow's migrations).
    experiment = experiment_id(mlflow, root)
    client = MlflowClient(tracking_uri(root))
    all_tags = {"flow": flow_name, "flow_run_id": str(flow_run.id or ""), "git_commit": git_commit(root),
                "mlflow.runName": f"{flow_name}:{flow_run.name or 'local'}", **{k: str(v) for k, v in tags.items()}}
    run = client.create_run(experiment, run_name=all_tags["mlflow.runName"], tags=all_tags)
    log.info("MLflow run %s (experiment %s, %s)", run.info.run_id, EXPERIMENT, tracking_uri(root))
    status = "FAILED"
    try:
        yield run.info.run_id
        status = "FINISHED"
    finally:
        client.set_terminated(run.info.run_id, status=status)


def with_overrides(params: dict, overrides: Mapping[str, Mapping[str, Any]]) -> dict:
    """``params`` with ``overrides`` ({section: {key: value}}) on top of the active profile's sections."""
    merged = json.loads(json.dumps(params))  # a deep copy of plain YAML data
    profile = merged.get("profile", "paper")
    if profile == "paper":
        target = merged
    else:
        target = merged.setdefault("profiles", {}).setdefault(profile, {})
    for section, values in overrides.items():
        if not isinstance(values, Mapping):
            raise ValueError(f"overrides.{section}: expected a mapping of {section}'s keys to values, got {values!r}")
        target[section] = {**(target.get(section) or {}), **values}
    return merged


def experiment_call(root: Path, params: dict, method: str, identity: str, seed: int,
                    overrides: Mapping[str, Mapping[str, Any]]) -> StageCall:
    """A training outside the DAG: its own params file and model folder under ``experiments/``, never recorded
    in dvc.lock (the DAG's outputs stay what params.yaml makes)."""
    label = hashlib.sha256(json.dumps({"seed": seed, "overrides": overrides}, sort_keys=True).encode()).hexdigest()
    folder = root / EXPERIMENTS_DIR / method / identity / f"s{seed}-{label[:10]}"
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "params.yaml", yaml.safe_dump(with_overrides(params, overrides), sort_keys=False))
    rel = folder.relative_to(root)
    cmd = " ".join(shlex.quote(part) for part in (
        "python", "-m", "stages.train", "--params", str(rel / "params.yaml"), "--method", method,
        "--identity", identity, "--seed", str(seed), "--model", str(rel / "model")))
    return StageCall(name=f"train@{method}-{identity}-s{seed}:{label[:10]}", cmd=cmd, device=True, in_dag=False)
