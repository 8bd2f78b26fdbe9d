"""How far the demo's numbers and claims move with the training seed.

The pipeline trains every run once, with the config's seed, so a claim that
"holds" or "does not hold" in ``reports/claims.md`` may only say which way one
seed fell. This script trains and evaluates the same runs with several seeds,
exactly as ``dvc repro`` does (``stages.train.run`` and ``stages.evaluate.run``
with params.yaml's configs; only the family's ``seed`` field changes), then
checks each seed's claims with the tables stage's own checks::

    python -m benchmarks.seed_spread --seeds 0 1 2 --output reports/bench/r2talker_seed_spread.json

Seed 0 is the pipeline's own run, so its records should match
``reports/metrics`` apart from the timings (a check of the pipeline's
determinism). Runs whose family config has no ``seed`` field (the reference
rows) are trained once and shared by every seed. Models and records go under
``--workdir``; a record already there is reused, so an interrupted study
resumes where it stopped. No videos are written and nothing is logged to MLflow.

Writes the machine, the date, every seed's value of every metric with mean
and standard deviation, and each measurable claim's verdict per seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as ``python -m`` does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_components import machine_info
from stages import evaluate as evaluate_stage
from stages import train as train_stage
from talkhead_models.atomic import write_text
from talkhead_models.config import load_params, section_overrides
from talkhead_models.methods import get_method
from talkhead_models.reporting import NOT_MEASURABLE, Evidence, evaluate_claims, load_curves, load_records
from talkhead_models.training_summary import TRAINING_SUMMARY

logger = logging.getLogger("benchmarks.seed_spread")

LADDER = ("static", "r2talker_audio_baseline", "r2talker_landmark_encoding", "r2talker_maglo", "r2talker")
"""R2-Talker's Table 4 ladder and the static row its claims and the 3 dB margin are measured against."""

UNSEEDED = "unseeded"
"""Work folder of the runs whose config has no seed (trained once for every seed)."""


def seeded_config(method: str, params: Mapping[str, Any], seed: int) -> tuple[Any, bool]:
    """The run's config as the train stage builds it, with ``seed``; and whether the family has a seed at all."""
    spec = get_method(method)
    cfg = spec.resolve_config(section_overrides(params, spec.family))
    if "seed" not in {f.name for f in dataclasses.fields(cfg)}:
        return cfg, False
    return dataclasses.replace(cfg, seed=seed), True


def train_and_evaluate(method: str, identity: str, seed: int, params: Mapping[str, Any], root: Path,
                       workdir: Path) -> tuple[Path, Path]:
    """Train and evaluate one run with one seed (or reuse its record); the (record, models folder) it wrote."""
    spec = get_method(method)
    cfg, has_seed = seeded_config(method, params, seed)
    folder = workdir / (f"seed_{seed}" if has_seed else UNSEEDED)
    record = folder / "metrics" / method / f"{identity}.json"
    models = folder / "models"
    if record.is_file():
        logger.info("%s seed %s: reusing %s", method, seed if has_seed else "-", record)
        return record, models
    source = str((params.get("data") or {}).get("source", "synthetic"))
    train_inputs, train_outputs = train_stage.STAGE.paths(root, {"model": models / method / identity},
                                                          identity, source, method)
    if not (train_outputs["model"] / TRAINING_SUMMARY).is_file():
        logger.info("%s seed %s: training", method, seed if has_seed else "-")
        train_stage.run(train_stage.STAGE.resolve_config(params), train_inputs, train_outputs, identity=identity,
                        method=spec, method_config=cfg)
    eval_params = {**params, "evaluate": {**(params.get("evaluate") or {}), "videos": False}}
    eval_cfg = evaluate_stage.STAGE.resolve_config(eval_params)
    with tempfile.TemporaryDirectory(prefix="seed_spread_videos_") as videos:
        eval_inputs, eval_outputs = evaluate_stage.STAGE.paths(
            root, {"model": train_outputs["model"], "metrics": record, "videos": videos}, identity, source, method)
        logger.info("%s seed %s: evaluating", method, seed if has_seed else "-")
        evaluate_stage.run(eval_cfg, eval_inputs, eval_outputs, identity=identity, method=spec,
                           method_config=cfg, profile=str(params.get("profile", "paper")))
    return record, models


def spread(values: list[float]) -> dict[str, Any]:
    """Every seed's value with their mean, sample standard deviation (0 for one seed), min and max."""
    return {"values": values, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}


def summarise(records_by_seed: Mapping[int, Path], models_by_seed: Mapping[int, Iterable[Path]]) -> dict[str, Any]:
    """Per-run metric spreads and per-claim verdicts over the seeds.

    ``records_by_seed``: a metrics folder per seed (``<method>/<identity>.json``, as ``reports/metrics``);
    ``models_by_seed``: the model folders whose training curves that seed's claims may read.
    """
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    claims: dict[str, dict[str, Any]] = {}
    seeds = sorted(records_by_seed)
    for seed in seeds:
        records = load_records(records_by_seed[seed])
        for record in records.records:
            label = f"{record.method}@{record.identity}"
            for role, setting in record.settings.items():
                for name, value in setting.metrics.items():
                    if value.available and value.value is not None and abs(value.value) != float("inf"):
                        values.setdefault(label, {}).setdefault(role, {}).setdefault(name, []).append(value.value)
        curves = [curve for folder in models_by_seed.get(seed, ()) for curve in load_curves(folder)]
        for outcome in evaluate_claims(Evidence(records, curves)):
            entry = claims.setdefault(outcome.claim.id, {"claim": outcome.claim.text, "paper": outcome.claim.paper,
                                                         "measured": outcome.claim.measured, "per_seed": {}})
            entry["per_seed"][str(seed)] = {"status": outcome.verdict.status, "numbers": outcome.verdict.numbers}
    metrics = {label: {role: {name: spread(v) for name, v in sorted(names.items()) if len(v) == len(seeds)}
                       for role, names in roles.items()} for label, roles in values.items()}
    measured = []
    for claim_id, entry in claims.items():
        statuses = [result["status"] for result in entry["per_seed"].values()]
        if all(status == NOT_MEASURABLE for status in statuses):
            continue
        counts = {status: statuses.count(status) for status in dict.fromkeys(statuses)}
        measured.append({"id": claim_id, **entry, "counts": counts})
    return {"seeds": seeds, "metrics": metrics, "claims": measured}


def run(methods: list[str], identity: str, seeds: list[int], params_path: Path, root: Path,
        workdir: Path) -> dict[str, Any]:
    params = load_params(params_path)
    for method in methods:
        get_method(method)  # an unknown name fails before hours of training, not after
    records_by_seed, models_by_seed = {}, {}
    for seed in seeds:
        folder = workdir / f"seed_{seed}" / "claims_records"
        # Rebuilt each time: a run left there by an earlier study with other --methods must not enter the claims.
        shutil.rmtree(folder, ignore_errors=True)
        for method in methods:
            record, models = train_and_evaluate(method, identity, seed, params, root, workdir)
            # One folder per seed holding its own records and the shared unseeded ones, as the tables stage reads.
            target = folder / method / f"{identity}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(record.read_bytes())
            models_by_seed.setdefault(seed, set()).add(models)
        records_by_seed[seed] = folder
    summary = summarise(records_by_seed, {seed: sorted(folders) for seed, folders in models_by_seed.items()})
    return {"what": "seed spread of the demo's runs and claims", "date": datetime.now(timezone.utc).isoformat(),
            "machine": machine_info(), "params": str(params_path), "profile": params.get("profile", "paper"),
            "identity": identity, "methods": methods, **summary}


def report_lines(result: Mapping[str, Any]) -> list[str]:
    """A readable digest: self-driven headline metrics as mean +- std, and each claim's verdict counts."""
    lines = []
    for label, roles in result["metrics"].items():
        parts = [f"{name} {s['mean']:.3f} +- {s['std']:.3f}" for name, s in roles.get("self", {}).items()
                 if name in ("PSNR", "SSIM", "M-LMD", "LSE-C", "FPS")]
        lines.append(f"{label}: " + ", ".join(parts))
    for claim in result["claims"]:
        counts = ", ".join(f"{status} {n}" for status, n in claim["counts"].items())
        lines.append(f"claim {claim['claim']!r}: {counts} (of {len(result['seeds'])} seeds)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(LADDER), help="runs (registered methods or variants)")
    parser.add_argument("--identity", default="S001", help="a processed identity under data/processed")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workdir", type=Path, default=None,
                        help="models and records of every seed (default: a temporary folder, removed after); "
                             "a record already there is reused")
    parser.add_argument("--output", type=Path, default=Path("reports/bench/seed_spread.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = Path.cwd()
    processed = root / "data" / "processed" / args.identity
    if not (processed / "track").is_dir():
        parser.error(f"{processed} is not a processed identity (no track/): run `dvc repro` first")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct")
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="seed_spread_") as workdir:
            result = run(args.methods, args.identity, args.seeds, args.params, root, Path(workdir))
    else:
        result = run(args.methods, args.identity, args.seeds, args.params, root, args.workdir)
    result["command"] = "python -m benchmarks.seed_spread " + " ".join(sys.argv[1:] if argv is None else argv)
    write_text(args.output, json.dumps(result, indent=2) + "\n")
    for line in report_lines(result):
        logger.info("%s", line)
    logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
