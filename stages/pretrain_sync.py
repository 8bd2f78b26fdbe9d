"""DVC stage ``pretrain_sync``: the lip-sync expert trained on the corpus, scored on held-out clips.

Reads every processed identity (crop, landmarks, audio, split), trains the
expert on the training split and scores the validation clips (the corpus
models' held-out ones; never the test frames of split.parquet) as Wav2Lip's evaluation does
(best offset, LSE-D, LSE-C with their own audio and with another clip's).
Writes ``data/models/sync_expert/``: ``model.pt`` (state dict + input config,
``torch.load(weights_only=True)``), ``config.json``, ``metrics.json``,
``curves.csv`` (per-step loss), ``validation.csv`` and ``scores.csv`` (per clip),
``segments.csv`` (every segment and its split: train, validation or test) and
``data_audit.csv`` (per identity, the test frames of the split tables among the
frames training and validation read: 0, or the stage fails before training).
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
from talkhead_models.pretrained.report import sync_summary
from talkhead_models.pretrained.sync_expert import (
    MetricLogger, SyncExpertConfig, loader_frames, save_expert, score_recordings, sync_data, torch_threads,
    train_sync_expert,
)

log = logging.getLogger(__name__)


def run(cfg: SyncExpertConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
        log_metric: MetricLogger | None = None) -> StageResult:
    with torch_threads(cfg.threads):
        return _train_and_write(cfg, inputs, outputs, log_metric)


def _train_and_write(cfg: SyncExpertConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
                     log_metric: MetricLogger | None) -> StageResult:
    started = time.perf_counter()
    identities = load_corpus(inputs["processed"], cfg.data.identities)
    segments = segment_table(identities, cfg.pretrain)
    audit = checked_audit(identities, segments, loader_frames(segments, cfg))  # before any training
    data = sync_data(identities, segments, cfg)
    data_seconds = time.perf_counter() - started
    trained = train_sync_expert(cfg, data, log_metric)
    scores = score_recordings(trained.expert, data, cfg)
    metrics = {**sync_summary(scores), "train_seconds": trained.seconds,
               "train_cpu_seconds": trained.cpu_seconds, "data_seconds": data_seconds,
               "final_train_loss": trained.history[-1]["loss"], **audit_totals(audit),
               **{k: v for k, v in trained.validation[-1].items() if k != "step"}}
    log.info("sync expert: best offset within +-1 frame for %.1f%% of held-out clips; LSE-C %.3f own audio, "
             "%.3f another clip's; trained in %.0f s", 100 * metrics["offset_within_1"], metrics["lse_c"],
             metrics.get("other_lse_c", float("nan")), trained.seconds)
    names = [d.identity for d in identities]
    with atomic_dir(outputs["model"]) as tmp:
        save_expert(trained.expert, cfg, tmp / "model.pt")
        scores.to_csv(tmp / "scores.csv", index=False)
        write_model_folder(tmp, cfg, "pretrain_sync", names, metrics, trained.history, trained.validation,
                           segments, audit)
    folder = outputs["model"]
    return StageResult(metrics=metrics, artifacts=[folder / name for name in (
        "model.pt", "config.json", "metrics.json", "curves.csv", "validation.csv", "scores.csv", "segments.csv",
        "data_audit.csv")])



STAGE = Stage(
    name="pretrain_sync",
    config=SyncExpertConfig,
    section="pretrain_sync",
    run=run,
    inputs={"processed": "data/processed"},
    outputs={"model": "data/models/sync_expert"},
    description=__doc__,
    shared_sections=("data", "pretrain"),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
