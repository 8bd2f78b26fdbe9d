"""The stage skeleton every DVC stage uses.

A stage is a function ``run(cfg, inputs, outputs) -> StageResult`` plus a
declaration of its config section and default paths. A stage whose paths
contain ``{identity}`` runs once per identity and its function also gets
``identity=`` (dvc.yaml's ``foreach``); one whose paths contain ``{method}``
runs once per registered method (or ablation variant) and gets
``method=`` (its :class:`~talkhead_models.methods.MethodSpec`) and
``method_config=`` (the method family's params section, resolved into its
config dataclass, with the variant's overrides on top, and the run's training
seed: ``--seed``, whose outputs carry ``{seed_suffix}``, "" for seed 0 and
``.seed<k>`` otherwise, talkhead_models.runs); a function with a ``log_metric``
parameter gets a ``log_metric(name, value, step)`` callback into its MLflow run. ``Stage.execute`` wraps
one call in one MLflow run (tags: stage, identity, method, family, seed,
profile, demo aids, git commit; the params it used; the metrics and small
artifacts it returned; for train and evaluate, system metrics while it runs).
A flow that starts stages in child processes names its own MLflow run in
``TALKHEAD_MLFLOW_PARENT_RUN``: the stage's run is nested under it. The CLI
(``python -m stages.<name>``) and the Prefect tasks both go through
``execute``, so a stage behaves the same whoever starts it.

Several stages may start at once (two terminals, a flow's parallel tasks):
the first to reach a fresh ``mlflow.db`` creates its tables and the
experiment while holding a lock beside it, the others wait for that. Each
run records the process that owns it (tags ``process_id``, ``process_host``,
``process_start``); a run of the same name still RUNNING whose process is
gone (killed, machine restarted) is marked KILLED when the stage starts
again.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import inspect
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from talkhead_models.atomic import exclusive_lock, lock_path
from talkhead_models.config import (
    ConfigError, demo_aids, flatten, load_params, resolve, to_dict, validate_name,
)
from talkhead_models.runs import seed_suffix, stage_key, takes_seed

log = logging.getLogger(__name__)

EXPERIMENT = "talkhead"
PARENT_RUN_ENV = "TALKHEAD_MLFLOW_PARENT_RUN"
"""Environment variable holding the MLflow run id a stage's run nests under (set by flows for their children)."""

# Offline machines: no telemetry from the tools, and quiet native loggers.
QUIET_ENVIRONMENT = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GLOG_minloglevel": "2",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
for _key, _value in QUIET_ENVIRONMENT.items():
    os.environ.setdefault(_key, _value)


@dataclass
class StageResult:
    """What a stage reports back: numbers for MLflow/DVC and small files worth attaching to the run."""

    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)


RunFunction = Callable[[Any, Mapping[str, Path], Mapping[str, Path]], StageResult]


@dataclass(frozen=True)
class Stage:
    """A stage's name, config, default paths (relative to the repository root) and run function."""

    name: str
    config: type
    section: str
    run: RunFunction
    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    shared_sections: tuple[str, ...] = ()
    """Other params sections the config embeds as fields of the same name (e.g. ``data``)."""

    @property
    def per_identity(self) -> bool:
        """A stage whose paths name ``{identity}`` runs once per identity (``foreach`` in dvc.yaml)."""
        return any("{identity}" in p for p in (*self.inputs.values(), *self.outputs.values()))

    @property
    def per_method(self) -> bool:
        """A stage whose paths name ``{method}`` runs once per method (train, evaluate)."""
        return any("{method}" in p for p in (*self.inputs.values(), *self.outputs.values()))

    def resolve_config(self, params: Mapping[str, Any]) -> Any:
        """The stage's config: its section, plus the shared sections it embeds, from params.yaml.

        A refused value is named as params.yaml spells it (``profiles.demo.crop.image_size``), as
        ``python -m stages.check`` names it.
        """
        return resolve(self.config, params, self.section, shared_sections=self.shared_sections)

    def paths(self, root: Path, overrides: Mapping[str, str | Path] | None = None,
              identity: str | None = None, source: str = "synthetic",
              method: str | None = None, seed: int = 0) -> tuple[dict, dict]:
        """Absolute input and output paths: the defaults, or the overrides, with ``{identity}``,
        ``{method}``, ``{seed_suffix}`` and ``{source}`` (params ``data.source``) filled in."""
        overrides = overrides or {}

        def resolve_path(name: str, default: str) -> Path:
            path = str(overrides.get(name, default))
            if "{identity}" in path:
                if identity is None:
                    raise ValueError(f"stage {self.name} runs per identity: pass --identity")
                path = path.replace("{identity}", identity)
            if "{method}" in path:
                if method is None:
                    raise ValueError(f"stage {self.name} runs per method: pass --method")
                path = path.replace("{method}", method)
            path = path.replace("{seed_suffix}", seed_suffix(seed))
            return root / path.replace("{source}", source)

        inputs = {k: resolve_path(k, v) for k, v in self.inputs.items()}
        outputs = {k: resolve_path(k, v) for k, v in self.outputs.items()}
        return inputs, outputs

    def execute(
        self,
        params: Mapping[str, Any],
        root: Path | str = ".",
        paths: Mapping[str, str | Path] | None = None,
        identity: str | None = None,
        method: str | None = None,
        seed: int = 0,
    ) -> StageResult:
        """Resolve the config, check inputs, run the stage inside one MLflow run (``seed``: the method's
        training seed, replacing its config's; only methods whose config has one take a seed other than 0)."""
        root = Path(root).resolve()
        if identity is not None:
            validate_name(identity, "identity")
        if method is not None:
            validate_name(method, "method")
        cfg = self.resolve_config(params)
        logged = to_dict(cfg)
        extra: dict[str, Any] = {"identity": identity} if self.per_identity else {}
        method_tags: dict[str, str] = {}
        if self.per_method:
            if method is None:
                raise ValueError(f"stage {self.name} runs per method: pass method= (--method)")
            from talkhead_models.methods import get_method

            spec = get_method(method)
            method_cfg = spec.resolve_params(params)
            if takes_seed(spec.config):
                method_cfg = dataclasses.replace(method_cfg, seed=seed)
            elif seed != 0:
                raise ConfigError(f"{method} has no training seed (its config {spec.config.__name__} has no "
                                  f"`seed`): it runs as seed 0 only, got --seed {seed}")
            extra.update(method=spec, method_config=method_cfg)
            logged = {**logged, spec.family: to_dict(method_cfg)}
            aids = demo_aids(method_cfg) if dataclasses.is_dataclass(method_cfg) else []
            method_tags = {"family": spec.family, "demo_aids": "; ".join(aids) or "none"}
        source = str((params.get("data") or {}).get("source", "synthetic"))
        inputs, outputs = self.paths(root, paths, identity, source, method, seed)
        missing = [f"{name}: {path}" for name, path in inputs.items() if not path.exists()]
        if missing:
            raise FileNotFoundError(
                f"stage {self.name}: missing input(s) {missing}; run the stages before it (`dvc repro {self.name}`)"
            )
        started = time.perf_counter()
        accepted = inspect.signature(self.run).parameters
        with tracked_run(self.name, root, logged, identity=identity, method=method,
                         seed=seed if self.per_method else None,
                         profile=str(params.get("profile", "paper")), extra_tags=method_tags,
                         system_metrics=self.per_method) as tracker:
            if "profile" in accepted:
                extra["profile"] = str(params.get("profile", "paper"))
            if "params" in accepted:
                # A stage that checks the whole params file against the DAG (tables: runs x seeds).
                extra.update(params=params, root=root)
            if "log_metric" in accepted:
                # Training stages log curves while they run, not only at the end.
                extra["log_metric"] = lambda name, value, step: tracker.log_metrics({name: value}, step=step)
            result = self.run(cfg, inputs, outputs, **extra)
            result.metrics.setdefault("stage_seconds", time.perf_counter() - started)
            tracker.log_metrics(result.metrics)
            for artifact in result.artifacts:
                tracker.log_artifact(str(artifact))
        log.info("stage %s done in %.1f s", self.name, result.metrics["stage_seconds"])
        return result

    def main(self, argv: list[str] | None = None) -> int:
        """``python -m stages.<name> [--params params.yaml] [--<input or output> PATH ...]``."""
        parser = argparse.ArgumentParser(prog=f"python -m stages.{self.name}", description=self.description)
        parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        if self.per_identity:
            parser.add_argument("--identity", required=True, help="identity to process ([A-Za-z0-9_-]+)")
        if self.per_method:
            parser.add_argument("--method", required=True, help="registered method or ablation variant")
            parser.add_argument("--seed", type=int, default=0,
                                help="training seed (default 0; seed k > 0 writes <identity>.seed<k> outputs)")
        for name, default in {**self.inputs, **self.outputs}.items():
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default,
                                help=f"path (default: {default})")
        args = parser.parse_args(argv)
        configure_logging()
        params = load_params(args.params)
        paths = {name: getattr(args, name) for name in {**self.inputs, **self.outputs}}
        self.execute(params, root=Path.cwd(), paths=paths, identity=getattr(args, "identity", None),
                     method=getattr(args, "method", None), seed=getattr(args, "seed", 0))
        if getattr(sys.modules.get("__main__"), "STAGE", None) is self:
            # The process ends when this returns (``python -m stages.<name>``). Python's exit still runs every atexit
            # handler and frees what it frees, but its last garbage collections no longer walk the hundreds of
            # thousands of objects MLflow, SQLAlchemy and torch made at import: 0.5-1 s less per stage.
            gc.freeze()
        return 0


def configure_logging(level: int = logging.INFO) -> None:
    """One line per record on stderr; tqdm bars share the stream."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (and on again after, unless it was off before).

    Importing MLflow and opening its SQLAlchemy store makes some 300,000 long-lived objects; the collections
    they trigger on the way free nothing and cost about 0.3 s per stage.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def tracking_uri(root: Path) -> str:
    """``sqlite:///<root>/mlflow.db`` with an absolute path (MLflow 3 refuses the file store).

    ``TALKHEAD_MLFLOW_URI`` points the runs elsewhere (a shared tracking
    server); MLflow's own ``MLFLOW_TRACKING_URI`` is not read because
    ``mlflow.set_tracking_uri`` writes it, so it would leak between roots.
    """
    override = os.environ.get("TALKHEAD_MLFLOW_URI")
    return override or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def database_lock(uri: str) -> Path | None:
    """The lock file serialising the creation of a local SQLite tracking database (None for a server URI)."""
    prefix = "sqlite:///"
    return lock_path(uri[len(prefix):]) if uri.startswith(prefix) else None


def experiment_id(mlflow: Any, root: Path) -> str:
    """The talkhead experiment's id, created (with the database, on first use) under :func:`database_lock`.

    MLflow creates a fresh SQLite database's tables on its first connection; two processes doing that at once
    crash ("table alembic_version already exists"), so the first connection happens under the lock.
    """
    from mlflow.exceptions import MlflowException

    lock = database_lock(mlflow.get_tracking_uri())
    with exclusive_lock(lock) if lock is not None else contextlib.nullcontext():
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return mlflow.create_experiment(EXPERIMENT, artifact_location=(root / "mlruns").as_uri())
        except MlflowException:
            # A tracking server (no lock here) may have created it in between.
            experiment = mlflow.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                raise
            return experiment.experiment_id


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first); None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # the command name before ")" may hold spaces


def process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat); "" where it cannot be read.

    With the pid it identifies a process: pids are reused, start times on one boot are not.
    """
    fields = _proc_stat(pid)
    return fields[19] if fields else ""  # field 22


def process_alive(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` (started at ``start``, :func:`process_start`, when known) still runs here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc: the pid is taken, assume by the same process
    return fields[0] != "Z" and (not start or fields[19] == start)


def git_commit(root: Path) -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class tracked_run:
    """One MLflow run for one stage execution, nested under a flow's run when there is one (the active run in
    this thread, else the run named by ``TALKHEAD_MLFLOW_PARENT_RUN``)."""

    def __init__(self, stage: str, root: Path, params: Mapping[str, Any], identity: str | None = None,
                 method: str | None = None, profile: str = "paper", seed: int | None = None,
                 extra_tags: Mapping[str, str] | None = None, system_metrics: bool = False) -> None:
        self.stage, self.root, self.params = stage, root, params
        self.system_metrics = system_metrics
        self.tags = {"stage": stage, "identity": identity or "", "method": method or "",
                     "git_commit": git_commit(root), "profile": profile, **(extra_tags or {})}
        if seed is not None:
            self.tags["seed"] = str(seed)
        self.tags.update(process_id=str(os.getpid()), process_host=socket.gethostname(),
                         process_start=process_start(os.getpid()))
        run = stage_key(method, identity, seed) if method and identity and seed is not None else (
            "-".join(part for part in (method, identity) if part))
        self.name = "@".join(part for part in (stage, run) if part)

    def __enter__(self) -> "tracked_run":
        with gc_paused():  # mostly imports: mlflow, its SQLAlchemy store, its git context
            import mlflow

            self._mlflow = mlflow
            mlflow.set_tracking_uri(tracking_uri(self.root))
            experiment = experiment_id(mlflow, self.root)
            self.end_dead_runs(experiment)
            active = mlflow.active_run()
            parent = active.info.run_id if active is not None else os.environ.get(PARENT_RUN_ENV) or None
            # Tagged as it is created: a run killed before its tags were set could never be told dead.
            self._run = mlflow.start_run(experiment_id=experiment, run_name=self.name, parent_run_id=parent,
                                         tags=self.tags, log_system_metrics=self.system_metrics or None)
            flat = {k: (str(v)[:6000]) for k, v in flatten(dict(self.params)).items()}
            mlflow.log_params(flat)
        return self

    def end_dead_runs(self, experiment: str) -> None:
        """Mark KILLED the RUNNING runs of this name whose process on this host is gone."""
        client = self._mlflow.MlflowClient()
        host = socket.gethostname()
        running = client.search_runs([experiment], filter_string=f"attributes.run_name = '{self.name}' and "
                                                                 "attributes.status = 'RUNNING'")
        for run in running:
            tags = run.data.tags
            if tags.get("process_host") != host or not tags.get("process_id", "").isdigit():
                continue  # another machine's run, or one from before processes were recorded: cannot tell
            pid = int(tags["process_id"])
            if process_alive(pid, tags.get("process_start", "")):
                continue
            client.set_terminated(run.info.run_id, status="KILLED")
            log.warning("MLflow run %s (%s) was left RUNNING by process %d, which is gone; marked KILLED",
                        run.info.run_id, self.name, pid)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        if numeric:
            self._mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str) -> None:
        self._mlflow.log_artifact(path)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._mlflow.end_run(status="FINISHED" if exc_type is None else "FAILED")
