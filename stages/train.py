"""DVC stage ``train@<method>-<identity>-s<seed>``: one method (or ablation variant) trained on one identity.

The method comes from the registry (talkhead_models.methods); its config is
the params section named after its family (``r2talker``, ``static``, ...),
with the variant's ablation switches on top. The trainer writes into
``data/models/<method>/.<identity>.partial/`` and keeps its checkpoints
there (talkhead_models.checkpoints: every ``checkpoint_every`` iterations
and every ``checkpoint_seconds``), so a killed run resumes where it stopped;
on success the folder is renamed to ``data/models/<method>/<identity>/``
with ``train.json`` (seconds, hardware, iterations) and a manifest. Seed
k > 0 (``--seed``) trains into ``<identity>.seed<k>/``
(talkhead_models.runs).

While a run trains, it holds the lock ``.<identity>.lock`` beside that
folder (talkhead_models.atomic.resumable_dir): a second run of the same
method, identity and seed fails at once, naming the folder and the process
that holds it, instead of sharing the first one's checkpoints.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from stages._stage import Stage, StageResult
from talkhead_models.atomic import resumable_dir
from talkhead_models.checkpoints import CHECKPOINT_FILE
from talkhead_models.config import PositiveInt, to_dict
from talkhead_models.data.manifest import write_manifest
from talkhead_models.methods.base import MethodSpec, MetricLogger, training_artifacts
from talkhead_models.metrics.speed import device_description
from talkhead_models.training_summary import TRAINING_SUMMARY

log = logging.getLogger(__name__)

PRETRAINED = ("audio2motion", "sync_expert", "audio_contrastive", "emotion")
"""Corpus-level model folders every train and evaluate stage receives (a method uses those it declares)."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the train stage itself (each method's own knobs live in its family's section)."""

    threads: PositiveInt = 1
    """torch CPU threads while training (on a shared 2-core machine one thread is fastest)."""
    log_checkpoint: bool = True
    """Attach the final checkpoint to the run's MLflow artifacts (5-60 MB per run at demo size), so a run
    compared in MLflow can be loaded from there."""


def pretrained_inputs(inputs: Mapping[str, Path], spec: MethodSpec) -> dict[str, Path]:
    """The corpus-level models ``spec`` declares, checked to exist."""
    found = {}
    for name in spec.pretrained:
        folder = inputs[name]
        if not folder.is_dir():
            stage = "pretrain_sync" if name == "sync_expert" else f"pretrain_{name}"
            raise FileNotFoundError(f"{folder}: {spec.name} needs the {name} model; run `dvc repro {stage}`")
        found[name] = folder
    return found


def run(cfg: TrainConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path], identity: str,
        method: MethodSpec, method_config: Any, log_metric: MetricLogger | None = None) -> StageResult:
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        with resumable_dir(outputs["model"]) as work:
            started = time.perf_counter()
            summary = method.train(method_config, inputs["processed"], pretrained_inputs(inputs, method), work,
                                   log_metric=log_metric)
            summary = {"seconds": time.perf_counter() - started, **summary, "hardware": device_description(),
                       "method": method.name, "identity": identity}
            (work / TRAINING_SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
            write_manifest(work, {"train": to_dict(cfg), method.family: to_dict(method_config)}, "train")
    finally:
        torch.set_num_threads(previous_threads)
    log.info("train %s@%s: %.1f s", method.name, identity, summary["seconds"])
    metrics = {f"train_{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))}
    # The curve and sample frames go to MLflow with the run, so methods can be compared there by eye too.
    artifacts = [outputs["model"] / TRAINING_SUMMARY, *training_artifacts(outputs["model"])]
    checkpoint = outputs["model"] / CHECKPOINT_FILE
    if cfg.log_checkpoint and checkpoint.is_file():
        artifacts.append(checkpoint)
    return StageResult(metrics=metrics, artifacts=artifacts)


STAGE = Stage(
    name="train",
    config=TrainConfig,
    section="train",
    run=run,
    inputs={"processed": "data/processed/{identity}", "audio2motion": "data/models/audio2motion",
            "sync_expert": "data/models/sync_expert", "audio_contrastive": "data/models/audio_contrastive",
            "emotion": "data/models/emotion"},
    outputs={"model": "data/models/{method}/{identity}{seed_suffix}"},
    description=__doc__,
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
