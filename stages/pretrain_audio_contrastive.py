"""DVC stage ``pretrain_audio_contrastive``: JEAN's audio encoder, aligned by InfoNCE with the frozen landmark
autoencoder's mouth embeddings.

Reads every processed identity (clips, landmarks, audio features, split) and
``data/models/landmark_ae`` (trained on the same split: its segments.csv must
match), trains on the training frames and validates on the held-out ones (the
corpus models' validation split; never the test frames of split.parquet):
InfoNCE loss, accuracy against the negative, retrieval among a batch.
Writes ``data/models/audio_contrastive/``: ``model.pt`` (state dict + info,
``torch.load(weights_only=True)``), ``config.json``, ``metrics.json``,
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

import pandas as pd

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.pretrained.audio_contrastive import (
    AudioContrastiveConfig, contrastive_data, loader_frames, save_audio_encoder, train_audio_encoder,
)
from talkhead_models.pretrained.curves import write_model_folder
from talkhead_models.pretrained.datasets import (PretrainDataError, audit_totals, checked_audit, load_corpus,
                                                 segment_table)
from talkhead_models.pretrained.landmark_ae import load_landmark_ae
from talkhead_models.pretrained.sync_expert import MetricLogger, torch_threads

log = logging.getLogger(__name__)

SPLIT_KEY = ["identity", "clip", "split", "start", "stop"]


def run(cfg: AudioContrastiveConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
        log_metric: MetricLogger | None = None) -> StageResult:
    with torch_threads(cfg.threads):
        return _train_and_write(cfg, inputs, outputs, log_metric)


def check_same_split(segments: pd.DataFrame, folder: Path) -> None:
    """Refuse a landmark autoencoder trained on another split: its training frames could be validation frames
    here, whose mouth embeddings would then be ones it was fitted to."""
    path = Path(folder) / "segments.csv"
    if not path.is_file():
        raise PretrainDataError(f"{path} not found; re-run `dvc repro pretrain_landmark_ae`")
    theirs = pd.read_csv(path, dtype=str)[SPLIT_KEY].reset_index(drop=True)
    ours = segments[SPLIT_KEY].reset_index(drop=True)
    if not theirs.astype(str).equals(ours.astype(str)):
        raise PretrainDataError(f"{path}: the landmark autoencoder was trained on another split of the corpus than "
                                "this stage's (params data / pretrain, or the processed data changed); re-run "
                                "`dvc repro pretrain_landmark_ae`")


def _train_and_write(cfg: AudioContrastiveConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
                     log_metric: MetricLogger | None) -> StageResult:
    started = time.perf_counter()
    identities = load_corpus(inputs["processed"], cfg.data.identities)
    segments = segment_table(identities, cfg.pretrain)
    check_same_split(segments, inputs["landmark_ae"])
    audit = checked_audit(identities, segments, loader_frames(segments))  # before any training
    data = contrastive_data(identities, segments, load_landmark_ae(inputs["landmark_ae"]), cfg.audio_feature)
    data_seconds = time.perf_counter() - started
    trained = train_audio_encoder(cfg, data, log_metric)
    metrics = {"train_seconds": trained.seconds, "train_cpu_seconds": trained.cpu_seconds,
               "data_seconds": data_seconds, "steps": float(len(trained.history)),
               "final_train_loss": trained.history[-1]["loss"], **audit_totals(audit),
               **{k: v for k, v in trained.validation[-1].items() if k != "step"}}
    log.info("contrastive audio encoder: held-out accuracy %.3f against another recording's audio (chance %.3f), "
             "retrieval %.3f among a batch (chance %.4f); trained in %.0f s",
             metrics.get("val_accuracy", float("nan")), 1 / (1 + cfg.negatives),
             metrics.get("val_retrieval", float("nan")), metrics.get("retrieval_chance", float("nan")),
             trained.seconds)
    names = [d.identity for d in identities]
    with atomic_dir(outputs["model"]) as tmp:
        save_audio_encoder(trained.encoder, cfg, tmp / "model.pt")
        write_model_folder(tmp, cfg, "pretrain_audio_contrastive", names, metrics, trained.history,
                           trained.validation, segments, audit)
    folder = outputs["model"]
    return StageResult(metrics=metrics, artifacts=[folder / name for name in (
        "model.pt", "config.json", "metrics.json", "curves.csv", "validation.csv", "segments.csv",
        "data_audit.csv")])


STAGE = Stage(
    name="pretrain_audio_contrastive",
    config=AudioContrastiveConfig,
    section="pretrain_audio_contrastive",
    run=run,
    inputs={"processed": "data/processed", "landmark_ae": "data/models/landmark_ae"},
    outputs={"model": "data/models/audio_contrastive"},
    description=__doc__,
    shared_sections=("data", "pretrain"),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
