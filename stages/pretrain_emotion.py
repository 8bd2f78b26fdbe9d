"""DVC stage ``pretrain_emotion``: per-frame emotion features for JEAN, from EMOCA or a corpus-trained CNN.

Reads every processed identity (frames, landmarks, clip table with its
emotion labels, split). When the weights folder (``$TALKHEAD_WEIGHTS``,
default ``./weights``) holds EMOCA's emotion network
(``emoca_resnet50_emotion.pt``, TorchScript; see
talkhead_models/pretrained/emotion.py) its 2048-d features are used;
otherwise a small emotion-recognition CNN is trained on the training split's
emotion labels and validated on the held-out one (never the test frames of
split.parquet), and its penultimate activations are the features. Features are
then extracted for every frame of every identity (test frames included:
inference on a driving input). Writes ``data/models/emotion/``:
``features/<ID>.npy`` ([N, D] float32, NaN rows where a frame has no face),
``features.json`` (source label, size, frames per identity), ``model.pt``
(state dict + input config, ``torch.load(weights_only=True)``; EMOCA: its file
name), ``config.json``, ``metrics.json`` (held-out accuracy, ``source``),
``curves.csv`` and ``validation.csv``, ``confusion.csv`` (per held-out split
and emotion, the predicted emotions), ``clips.csv`` (per held-out recording,
its majority vote), ``segments.csv`` and ``data_audit.csv`` (per identity, the
test frames among the frames training and validation read: 0, or the stage
fails before training).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.pretrained.curves import write_model_folder
from talkhead_models.pretrained.datasets import audit_totals, checked_audit, load_corpus, segment_table
from talkhead_models.pretrained.emotion import (
    FEATURES_INFO, MODEL_FILE, EmotionConfig, MetricLogger, emotion_features, loader_frames,
    save_model, summary, write_features,
)
from talkhead_models.pretrained.sync_expert import torch_threads
from talkhead_models.weights import weights_dir

log = logging.getLogger(__name__)


def run(cfg: EmotionConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
        log_metric: MetricLogger | None = None) -> StageResult:
    with torch_threads(cfg.threads):
        return _train_and_write(cfg, inputs, outputs, log_metric)


def _train_and_write(cfg: EmotionConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
                     log_metric: MetricLogger | None) -> StageResult:
    identities = load_corpus(inputs["processed"], cfg.data.identities)
    segments = segment_table(identities, cfg.pretrain)
    audit = checked_audit(identities, segments, loader_frames(segments))  # before any training
    result = emotion_features(identities, segments, cfg, weights_dir(), log_metric)
    metrics = {**result.metrics, **audit_totals(audit)}
    log.info("%s", summary(metrics))
    names = [d.identity for d in identities]
    with atomic_dir(outputs["model"]) as tmp:
        write_features(tmp, result)
        save_model(result, tmp / MODEL_FILE)
        result.confusion.to_csv(tmp / "confusion.csv", index=False)
        result.clips.to_csv(tmp / "clips.csv", index=False)
        write_model_folder(tmp, cfg, "pretrain_emotion", names, metrics, result.history, result.validation,
                           segments, audit, extra_config={"emotions": list(result.emotions), "source": result.source})
    folder = outputs["model"]
    return StageResult(metrics=metrics, artifacts=[folder / name for name in (
        MODEL_FILE, FEATURES_INFO, "config.json", "metrics.json", "curves.csv", "validation.csv", "confusion.csv",
        "clips.csv", "segments.csv", "data_audit.csv")])


STAGE = Stage(
    name="pretrain_emotion",
    config=EmotionConfig,
    section="pretrain_emotion",
    run=run,
    inputs={"processed": "data/processed"},
    outputs={"model": "data/models/emotion"},
    description=__doc__,
    shared_sections=("data", "pretrain"),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
