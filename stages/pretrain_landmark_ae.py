"""DVC stage ``pretrain_landmark_ae``: JEAN's landmark autoencoder (eye-nose and mouth embeddings), trained on the
corpus.

Reads every processed identity (clips, landmarks, split), trains on pairs of
frames of the training recordings and validates on pairs of the held-out ones
(the corpus models' validation split; never the test frames of split.parquet):
plain reconstruction error and the error after swapping the mouth embeddings.
Writes ``data/models/landmark_ae/``: ``model.pt`` (state dict + network
config, ``torch.load(weights_only=True)``), ``config.json``, ``metrics.json``,
``curves.csv`` (per-step loss), ``validation.csv``, ``segments.csv`` (every
segment and its split) and ``data_audit.csv`` (per identity, the test frames
of the split tables among the frames training, the normaliser and validation
read: 0, or the stage fails before training).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.pretrained.curves import write_model_folder
from talkhead_models.pretrained.datasets import audit_totals, checked_audit, load_corpus, segment_table
from talkhead_models.pretrained.landmark_ae import LandmarkAEConfig, loader_frames, save_landmark_ae, train_landmark_ae
from talkhead_models.pretrained.sync_expert import MetricLogger, torch_threads

log = logging.getLogger(__name__)


def run(cfg: LandmarkAEConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
        log_metric: MetricLogger | None = None) -> StageResult:
    with torch_threads(cfg.threads):
        return _train_and_write(cfg, inputs, outputs, log_metric)


def _train_and_write(cfg: LandmarkAEConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
                     log_metric: MetricLogger | None) -> StageResult:
    started = time.perf_counter()
    identities = load_corpus(inputs["processed"], cfg.data.identities)
    segments = segment_table(identities, cfg.pretrain)
    audit = checked_audit(identities, segments, loader_frames(segments))  # before any training
    data_seconds = time.perf_counter() - started
    trained = train_landmark_ae(cfg, identities, segments, log_metric)
    metrics = {"train_seconds": trained.seconds, "train_cpu_seconds": trained.cpu_seconds,
               "data_seconds": data_seconds, "steps": float(len(trained.history)),
               "final_train_loss": trained.history[-1]["loss"], **audit_totals(audit),
               **{k: v for k, v in trained.validation[-1].items() if k != "step"}}
    log.info("landmark autoencoder: held-out L1 %.4f plain, %.4f with swapped mouths (lips %.4f vs %.4f plain, "
             "%.4f between the pair's lips; canonical units); trained in %.0f s",
             metrics.get("val_l1", float("nan")), metrics.get("val_swap_l1", float("nan")),
             metrics.get("val_swap_mouth_l1", float("nan")), metrics.get("val_mouth_l1", float("nan")),
             metrics.get("val_mouth_change", float("nan")), trained.seconds)
    names = [d.identity for d in identities]
    with atomic_dir(outputs["model"]) as tmp:
        save_landmark_ae(trained.model, cfg, tmp / "model.pt")
        write_model_folder(tmp, cfg, "pretrain_landmark_ae", names, metrics, trained.history, trained.validation,
                           segments, audit)
    folder = outputs["model"]
    return StageResult(metrics=metrics, artifacts=[folder / name for name in (
        "model.pt", "config.json", "metrics.json", "curves.csv", "validation.csv", "segments.csv",
        "data_audit.csv")])


STAGE = Stage(
    name="pretrain_landmark_ae",
    config=LandmarkAEConfig,
    section="pretrain_landmark_ae",
    run=run,
    inputs={"processed": "data/processed"},
    outputs={"model": "data/models/landmark_ae"},
    description=__doc__,
    shared_sections=("data", "pretrain"),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
