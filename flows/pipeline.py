"""The DVC DAG as a Prefect flow: each stage is a task calling the same ``Stage.execute``.

Per-identity stages run once per identity of ``data.identities`` (all
identities found in the source when the list is empty), per-method stages
(train, evaluate) once per entry of ``runs`` and seed of ``seeds`` (talkhead_models.runs), in the order of
dvc.yaml. Before any stage runs, the params pass ``python -m stages.check``'s
checks (:func:`stages.check.problems`); a mistake stops the flow with every
problem listed, one line each. Run locally (Prefect in ephemeral mode, no
server needed)::

    python -m flows.pipeline [--params params.yaml]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import flows  # noqa: F401  (environment before Prefect is imported)
from prefect import flow, task

from stages import (
    audio, crop, describe, evaluate, face_model, landmarks, pair, parse, preprocess_report, pretrain_audio2motion,
    pretrain_report, pretrain_sync, speed, split, synth, tables, track, train,
)
from stages._stage import Stage, configure_logging
from stages.check import problems
from talkhead_models.config import ConfigError, load_params, validate_name
from talkhead_models.data.sources import identities as source_identities
from talkhead_models.runs import Run, expand_runs

log = logging.getLogger(__name__)

# In dependency order, as dvc.yaml chains them.
PIPELINE: tuple[Stage, ...] = (
    synth.STAGE, describe.STAGE, crop.STAGE, landmarks.STAGE, parse.STAGE, audio.STAGE,
    face_model.STAGE, track.STAGE, pair.STAGE, split.STAGE, preprocess_report.STAGE,
    pretrain_sync.STAGE, pretrain_audio2motion.STAGE, pretrain_report.STAGE,
    train.STAGE, evaluate.STAGE, speed.STAGE, tables.STAGE,
)


@task
def run_stage(stage_name: str, params: dict, root: str, identity: str | None = None,
              method: str | None = None, seed: int = 0) -> dict[str, float]:
    stage = next(s for s in PIPELINE if s.name == stage_name)
    return stage.execute(params, root=root, identity=identity, method=method, seed=seed).metrics


def pipeline_identities(params: dict, root: Path) -> list[str]:
    """``data.identities`` from params, or every identity the raw source holds."""
    data = params.get("data") or {}
    listed = data.get("identities") or []
    if listed:
        return [validate_name(name, "identity") for name in listed]
    source = data.get("source", "synthetic")
    return source_identities(source, root / "data" / "raw" / source)


def pipeline_runs(params: dict) -> dict[str, Run]:
    """``runs`` x ``seeds`` of params.yaml: stage key (``<method>-<identity>-s<seed>``) -> run."""
    return {run.key: run for run in expand_runs(params)}


@flow(name="talkhead-pipeline", log_prints=False)
def pipeline(params_path: str = "params.yaml", root: str = ".",
             stages: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Every stage of the DAG once (per identity where the stage is per identity), in order;
    ``stages`` restricts the run to the named stages (their inputs must exist)."""
    root_path = Path(root).resolve()
    params = load_params(root_path / params_path)
    unknown = sorted(set(stages or ()) - {s.name for s in PIPELINE})
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; the pipeline has {[s.name for s in PIPELINE]}")
    found = problems(params, (root_path / params_path).parent)
    if found:
        raise ConfigError(*(f"{params_path}: {problem}" for problem in found),
                          f"{params_path}: {len(found)} problem(s); nothing was run")
    results = {}
    for stage in PIPELINE:
        if stages is not None and stage.name not in stages:
            continue
        if stage.per_method:
            for key, run in pipeline_runs(params).items():
                results[f"{stage.name}@{key}"] = run_stage.with_options(name=f"{stage.name}@{key}")(
                    stage.name, params, str(root_path), run.identity, run.method, run.seed)
        elif stage.per_identity:
            for identity in pipeline_identities(params, root_path):
                results[f"{stage.name}@{identity}"] = run_stage.with_options(name=f"{stage.name}@{identity}")(
                    stage.name, params, str(root_path), identity)
        else:
            results[stage.name] = run_stage.with_options(name=stage.name)(stage.name, params, str(root_path))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    parser.add_argument("--stages", nargs="+", help="run only these stages (default: all)")
    args = parser.parse_args(argv)
    configure_logging()
    pipeline(params_path=args.params, root=args.root, stages=args.stages)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
