"""The flows a researcher launches from the Prefect UI (or the API, or a terminal).

* ``preprocess-identity``: an identity's processed data (crop, landmarks,
  parsing, audio features, tracking, split, ...) and what it needs upstream.
* ``train-identity``: one method on one identity with one seed, after what
  it needs. Without ``overrides`` and with a seed params.yaml lists, it is the
  DAG's own stage ``train@<method>-<identity>-s<seed>``, recorded in
  dvc.lock; with overrides (or another seed) it is an experiment: its params
  file and model go under ``experiments/`` and DVC's outputs are untouched.
* ``evaluate-identity``: the DAG's ``evaluate@<method>-<identity>-s<seed>``
  (training first when it is not up to date).
* ``reproduce``: the whole DAG, or the stages of the chosen methods and
  identities; independent stages run at once, trainings up to the device
  slots.

Every flow checks params.yaml as ``python -m stages.check`` does and refuses a
bad method or identity before any work, opens one MLflow run that the stages'
runs nest under, and leaves ``dvc status`` clean for the stages it ran.
Stages run in child processes with dvc.yaml's commands (flows.orchestration).
The flows run in the repository they are started in (a worker: the
deployment's working directory); ``root`` points elsewhere.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

import flows  # noqa: F401  (environment before Prefect does anything)
from flows.dvc_state import dag
from flows.orchestration import experiment_call, flow_mlflow_run, run_dag, run_stage, with_overrides
from stages.check import problems, processed_identities
from talkhead_models.config import ConfigError, load_params
from talkhead_models.methods import method_names
from talkhead_models.runs import expand_runs, stage_key

log = logging.getLogger(__name__)

MethodName = Literal[tuple(method_names())]  # type: ignore[valid-type]  (the UI's drop-down: every registered method)
IdentityName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Seed = Annotated[int, Field(ge=0)]
Overrides = dict[str, dict[str, Any]]
# Each flow's docstring (Args) gives the UI form its field descriptions.

PREPROCESS_KINDS = frozenset({"crop", "landmarks", "parse", "audio", "track", "pair", "split"})
"""Per-identity stages of the DAG that make an identity's processed data."""
CORPUS_MODELS = ("pretrain_sync", "pretrain_audio2motion")
"""Corpus-level models the trainers read (their stages come with their own upstream)."""


def _workers() -> int:
    """Tasks at once: the cores (stages that hold a device slot wait for one besides)."""
    return max(2, os.cpu_count() or 2)


def checked_params(root: Path) -> dict:
    """params.yaml of ``root``, refused with every problem (one line each) before any work, as
    ``python -m stages.check`` would."""
    params = load_params(root / "params.yaml")
    found = problems(params, root)
    if found:
        raise ConfigError(*(f"params.yaml: {p}" for p in found), f"params.yaml: {len(found)} problem(s); nothing was run")
    return params


def _check_identity(params: dict, root: Path, identity: str) -> None:
    known = processed_identities(params, root)
    if identity not in known:
        raise ConfigError(f"identity {identity!r} is not one the pipeline processes ({', '.join(known)}); add it "
                          f"to data.identities (its recordings in the source: README, your own video)")


def _check_method(method: str) -> None:
    if method not in method_names():
        raise ConfigError(f"unknown method {method!r}; registered: {', '.join(method_names())}")


def _preprocess_targets(stages: dict, identity: str) -> list[str]:
    return sorted(n for n, s in stages.items() if s.item == identity and s.kind in PREPROCESS_KINDS)


@flow(name="preprocess-identity", task_runner=ThreadPoolTaskRunner(max_workers=_workers()))
def preprocess_identity(identity: IdentityName = "S001", root: str = ".") -> dict[str, str]:
    """Bring an identity's processed data up to date (and the stages it needs upstream).

    Args:
        identity: the identity, as params.yaml data.identities or the source names it (e.g. S001)
        root: the repository on the worker (default: its working directory)
    """
    root_path = Path(root).resolve()
    params = checked_params(root_path)
    _check_identity(params, root_path, identity)
    stages = dag(root_path)
    with flow_mlflow_run(root_path, "preprocess-identity", {"identity": identity}) as parent:
        return run_dag(root_path, _preprocess_targets(stages, identity), parent)


@flow(name="train-identity", task_runner=ThreadPoolTaskRunner(max_workers=_workers()))
def train_identity(method: MethodName = "r2talker", identity: IdentityName = "S001",  # type: ignore[valid-type]
                   overrides: Overrides | None = None, seed: Seed = 0, root: str = ".") -> dict[str, str]:
    """Train one method on one identity (its data and corpus models first, where they are not up to date).

    Args:
        method: a registered method or ablation variant
        identity: the identity, as params.yaml data.identities or the source names it (e.g. S001)
        overrides: params on top of the active profile, {section: {key: value}}, e.g. {"r2talker": {"iterations":
            2000}}; a run with overrides is an experiment under experiments/, outside dvc.lock
        seed: training seed; a seed params.yaml `seeds` lists is the DAG's own run, another one an experiment
        root: the repository on the worker (default: its working directory)
    """
    root_path = Path(root).resolve()
    overrides = overrides or {}
    params = checked_params(root_path)
    _check_method(method)
    _check_identity(params, root_path, identity)
    stages = dag(root_path)
    name = f"train@{stage_key(method, identity, seed)}"
    tags = {"method": method, "identity": identity, "seed": str(seed), "profile": str(params.get("profile", "paper")),
            "overrides": str(overrides) if overrides else ""}
    if overrides:
        found = problems(with_overrides(params, overrides), root_path)
        if found:
            raise ConfigError(*(f"overrides: {p}" for p in found), f"overrides: {len(found)} problem(s); nothing was run")
    with flow_mlflow_run(root_path, "train-identity", tags) as parent:
        if name in stages and not overrides:
            return run_dag(root_path, [name], parent)
        log.info("%s is not a stage of dvc.yaml as params.yaml stands (%s): an experiment under experiments/, "
                 "not recorded in dvc.lock", name, "overrides given" if overrides else "seed or run not listed")
        inputs = _preprocess_targets(stages, identity) + [n for n in CORPUS_MODELS if n in stages]
        outcomes = run_dag(root_path, inputs, parent)
        call = experiment_call(root_path, params, method, identity, seed, overrides)
        outcomes[call.name] = run_stage(call, str(root_path), parent)
        return outcomes


@flow(name="evaluate-identity", task_runner=ThreadPoolTaskRunner(max_workers=_workers()))
def evaluate_identity(method: MethodName = "r2talker", identity: IdentityName = "S001",  # type: ignore[valid-type]
                      seed: Seed = 0, root: str = ".") -> dict[str, str]:
    """Evaluate one method on one identity (training it first where it is not up to date).

    Args:
        method: a registered method or ablation variant listed in params.yaml runs
        identity: the identity of that run
        seed: a training seed params.yaml `seeds` lists
        root: the repository on the worker (default: its working directory)
    """
    root_path = Path(root).resolve()
    params = checked_params(root_path)
    _check_method(method)
    _check_identity(params, root_path, identity)
    name = f"evaluate@{stage_key(method, identity, seed)}"
    if name not in dag(root_path):
        raise ConfigError(f"{name} is not a stage of dvc.yaml: add {method}-{identity} to params.yaml runs (and seed "
                          f"{seed} to seeds), then `python -m stages.check --write-runs`")
    with flow_mlflow_run(root_path, "evaluate-identity", {"method": method, "identity": identity,
                                                          "seed": str(seed)}) as parent:
        return run_dag(root_path, [name], parent)


@flow(name="reproduce", task_runner=ThreadPoolTaskRunner(max_workers=_workers()))
def reproduce(methods: list[MethodName] | None = None,  # type: ignore[valid-type]
              identities: list[IdentityName] | None = None, root: str = ".") -> dict[str, str]:
    """The whole DAG (no methods and no identities chosen: the papers' tables too), or the stages of the chosen
    methods and identities and what they need.

    Args:
        methods: only these methods' runs (params.yaml runs); empty: every run
        identities: only these identities' preprocessing and runs; empty: every identity
        root: the repository on the worker (default: its working directory)
    """
    root_path = Path(root).resolve()
    params = checked_params(root_path)
    for method in methods or ():
        _check_method(method)
    for identity in identities or ():
        _check_identity(params, root_path, identity)
    stages = dag(root_path)
    if not methods and not identities:
        targets = sorted(stages)
    else:
        runs = {f"{kind}@{run.key}" for run in expand_runs(params) for kind in ("train", "evaluate")
                if (not methods or run.method in methods) and (not identities or run.identity in identities)}
        chosen = set(identities or ())
        targets = sorted(n for n in stages
                         if n in runs or (stages[n].item in chosen and stages[n].kind in PREPROCESS_KINDS))
        if not targets:
            raise ConfigError(f"no stage of dvc.yaml matches methods {methods or 'any'} and identities "
                              f"{identities or 'any'}: check params.yaml runs")
    with flow_mlflow_run(root_path, "reproduce", {"methods": ",".join(methods or ()) or "all",
                                                  "identities": ",".join(identities or ()) or "all"}) as parent:
        return run_dag(root_path, targets, parent)


FLOWS = {"train-identity": train_identity, "preprocess-identity": preprocess_identity,
         "evaluate-identity": evaluate_identity, "reproduce": reproduce}
"""The served flows by deployment name (flows.serve)."""
