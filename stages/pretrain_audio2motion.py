"""DVC stage ``pretrain_audio2motion``: audio to 68x3 canonical landmark motion, trained on the corpus.

Reads every processed identity (clips, landmarks, audio features, split),
trains on the training split and measures the validation clips' (the corpus
models' held-out ones; never the test frames of split.parquet) mouth landmark distance
against the neutral-mouth baseline. Where the source corpus beside
``data/processed`` (``data/raw/<data.source>``) has ground truth for the clips
(the synthetic corpus), the distance to the true landmarks is measured too.
Writes ``data/models/audio2motion/``:
``model.pt`` (state dict + config, ``torch.load(weights_only=True)``),
``config.json``, ``metrics.json``, ``curves.csv`` (per-step losses),
``validation.csv``, ``scores.csv`` (per clip), ``neutral_shapes.json`` (each
identity's neutral 68x3 shape in the canonical frame, the model's conditioning),
``segments.csv`` (every segment and its split: train, validation or test) and
``data_audit.csv`` (per identity, the test frames of the split tables among the
frames training, validation, the adaptations and the speaker means read: 0, or
the stage fails before training).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Mapping

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.pretrained.audio2motion import (
    Audio2MotionConfig, MetricLogger, evaluate_recordings, loader_frames, motion_data, save_model, summary_scores,
    train_audio2motion, video_adaptations,
)
from talkhead_models.pretrained.curves import write_model_folder
from talkhead_models.pretrained.datasets import audit_totals, checked_audit, load_corpus, segment_table
from talkhead_models.pretrained.sync_expert import torch_threads

log = logging.getLogger(__name__)


def run(cfg: Audio2MotionConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
        log_metric: MetricLogger | None = None) -> StageResult:
    with torch_threads(cfg.threads):
        return _train_and_write(cfg, inputs, outputs, log_metric)


def ground_truth_root(processed: Path, source: str) -> Path | None:
    """``data/raw/<source>`` beside ``data/processed``, where clips.parquet's ``truth`` paths point; None if absent.

    Read only for the evaluation against the true landmarks; the processed data already depend on it.
    """
    root = Path(processed).resolve().parent / "raw" / source
    if root.is_dir():
        return root
    log.info("no source corpus at %s: the held-out clips are measured against their landmarks only", root)
    return None


def _train_and_write(cfg: Audio2MotionConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
                     log_metric: MetricLogger | None) -> StageResult:
    started = time.perf_counter()
    raw = ground_truth_root(inputs["processed"], cfg.data.source)
    identities = load_corpus(inputs["processed"], cfg.data.identities, raw)
    segments = segment_table(identities, cfg.pretrain)
    audit = checked_audit(identities, segments, loader_frames(segments, cfg))  # before any training
    data = motion_data(identities, segments, cfg.feature_kind)
    data_seconds = time.perf_counter() - started
    trained = train_audio2motion(cfg, data, log_metric)
    # Each identity's linear post-net, fitted on its long video up to the test frames, which no scored clip
    # overlaps: the adaptation a method gets from the video it trains on (R2-Talker's motion_adaptation).
    scores = evaluate_recordings(trained.model, data, adaptations=video_adaptations(trained.model, data))
    weights = scores.frames / scores.frames.sum()
    metrics = {**summary_scores(scores), "train_seconds": trained.seconds,
               "train_cpu_seconds": trained.cpu_seconds, "data_seconds": data_seconds,
               "final_train_loss": trained.history[-1]["loss"], **audit_totals(audit),
               "jitter": float((scores.jitter * weights).sum()),
               "reference_jitter": float((scores.reference_jitter * weights).sum())}
    if "truth_jitter" in scores:
        metrics["truth_jitter"] = float((scores.truth_jitter * weights).sum())
    log.info("audio2motion: held-out mouth distance %.1f%% below the neutral baseline (worst emotion %.1f%%); "
             "trained in %.0f s", 100 * (1 - metrics["mouth_error_ratio"]),
             100 * (1 - metrics["mouth_error_ratio_worst_emotion"]), trained.seconds)
    names = [d.identity for d in identities]
    with atomic_dir(outputs["model"]) as tmp:
        save_model(trained.model, cfg, tmp / "model.pt")
        (tmp / "neutral_shapes.json").write_text(json.dumps(
            {d.identity: {"shape": d.neutral.shape.tolist(), "pixels_per_unit": d.neutral.pixels_per_unit}
             for d in identities}))
        scores.to_csv(tmp / "scores.csv", index=False)
        write_model_folder(tmp, cfg, "pretrain_audio2motion", names, metrics, trained.history, trained.validation,
                           segments, audit)
    folder = outputs["model"]
    return StageResult(metrics=metrics, artifacts=[folder / name for name in (
        "model.pt", "config.json", "metrics.json", "curves.csv", "validation.csv", "scores.csv", "segments.csv",
        "data_audit.csv")])


STAGE = Stage(
    name="pretrain_audio2motion",
    config=Audio2MotionConfig,
    section="pretrain_audio2motion",
    run=run,
    inputs={"processed": "data/processed"},
    outputs={"model": "data/models/audio2motion"},
    description=__doc__,
    shared_sections=("data", "pretrain"),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
