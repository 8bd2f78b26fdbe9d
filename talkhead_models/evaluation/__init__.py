"""Evaluation of one method on one identity: self-, cross- (and cross-expression-) driven renders, every metric.

:func:`evaluate_method` is what the ``evaluate@<method>-<identity>-s<seed>`` stage
calls. It returns the record the tables read (``reports/metrics/<method>/
<identity>.json``)::

    {"method", "family", "variant", "identity", "seed", "profile", "hardware",
     "demo_aids": [labels of the demo aids the run's config uses],
     "settings": {"self": {"frames", "clips", "metrics": {name: MetricValue.to_dict()}},
                  "cross": {...},
                  "cross_expression": {...}},
     "training": the trainer's train.json}

``cross_expression`` (audio from one held-out clip, the expression from
another clip of the same sentence in another emotion) is rendered for
methods that take an expression source (``MethodSpec.expression_source``,
JEAN's family) and for the reference rows, whose cheap renders give those
methods' claims a baseline; other methods' records have self and cross only.

Each metric keeps the values its mean is taken over (``per_frame``, one
per frame or, for the lip-sync scores, per clip: ``sample_unit``), so the
report can put an interval on a difference between two runs.
:func:`record_json` writes the record with those lists on one line each.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from talkhead_models.config import demo_aids
from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.evaluation.driving import (CROSS_EXPRESSION, SETTINGS, FrameBudget, SplitError, driving_kinds,
                                                drivings)
from talkhead_models.evaluation.evaluate import (EXP_DIFF_AUDIO, FACE_MODEL_FILE, ClipScorer, EvaluationConfig,
                                                 ExpressionFitter, LandmarkFinder, RoleResult, evaluate_role,
                                                 training_metric)
from talkhead_models.evaluation.videos import SideBySide
from talkhead_models.methods.base import REFERENCE_FAMILIES, Driving, MethodSpec, TalkingHead
from talkhead_models.metrics import MetricValue
from talkhead_models.metrics.speed import device_description
from talkhead_models.preprocess.audio_features import AudioConfig
from talkhead_models.training_summary import TRAINING_SUMMARY

log = logging.getLogger(__name__)



def metric_key(setting: str, name: str) -> str:
    """The MLflow metric the evaluate stage logs a record's metric ``name`` of ``setting`` as: ``self_F_LMD``."""
    return f"{setting}_{name.replace('-', '_')}"



@dataclass(frozen=True)
class EvaluationInputs:
    """Where an evaluation reads from."""

    identity_root: Path
    """data/processed/<ID>."""
    model_dir: Path
    """data/models/<method>/<ID> (the train stage's output)."""
    raw_root: Path
    """The raw corpus: cross-driven audio is read from the recordings split.parquet names."""
    sync_expert: Path | None
    """The corpus-trained sync expert's folder (its model.pt); SyncNet's weights take precedence when present."""
    face_model: Path | None
    """The face model folder the tracker used (for Exp-Diff); None: Exp-Diff is n/a."""
    pretrained: Mapping[str, Path]
    """Corpus-level models a method may need at render time (name -> folder)."""
    weights: Path | None = None
    """The local weights folder (None: $TALKHEAD_WEIGHTS or ./weights)."""


def evaluated_settings(spec: MethodSpec, cfg: EvaluationConfig, identity: str) -> list[tuple[str, int]]:
    """(setting, frame budget) of every setting ``spec`` is rendered in on ``identity``, in record order."""
    settings = [("self", cfg.self_frames(identity)), ("cross", cfg.max_cross_frames)]
    if spec.expression_source or spec.family in REFERENCE_FAMILIES:
        settings.append((CROSS_EXPRESSION, cfg.max_cross_expression_frames))
    return settings


class _AudioSourceFrames:
    """The ground-truth row in the cross-expression setting: the audio source's real frames.

    Those frames exist (the audio is the identity's own held-out clip), but the ground truth's head refuses any
    driving that is not self-driven; it is handed the clip as the self-driven driving it is.
    """

    def __init__(self, head: TalkingHead) -> None:
        self.head, self.image_size = head, head.image_size

    def render(self, driving: Driving):
        return self.head.render(dataclasses.replace(driving, role="self", expression_frames=driving.frame_indices,
                                                    expression_clip=""))


def evaluate_method(spec: MethodSpec, method_cfg: Any, cfg: EvaluationConfig, audio_cfg: AudioConfig,
                    inputs: EvaluationInputs, videos_dir: Path | None, profile: str = "") -> dict:
    """Render ``spec``'s model of the identity in each of its settings (:func:`evaluated_settings`) and measure
    it; the metrics record."""
    reader = IdentityReader(inputs.identity_root)
    head = spec.load(method_cfg, inputs.identity_root, inputs.pretrained, inputs.model_dir)
    scorer = ClipScorer(sync_scorer=_sync_scorer(inputs), landmarks=LandmarkFinder(cfg.landmark_detector),
                        weights=inputs.weights, reference_frame=reader.frame(int(reader.training_frames()[0])),
                        identity_stride=cfg.identity_stride)
    expression = _expression_fitter(inputs, reader, head.image_size)
    if isinstance(expression, str):
        scorer.expression_missing = expression
    else:
        scorer.expression = expression
    if spec.expression_source or spec.family in REFERENCE_FAMILIES:
        scorer.emotion, scorer.emotion_missing = _emotion_scorer(inputs)
        clips = reader.clips()
        scorer.clip_emotions = dict(zip(clips["clip"].astype(str), clips["emotion"].astype(str)))
    audio_kinds = driving_kinds(reader, audio_cfg)
    summary = _training_summary(inputs.model_dir)
    settings = {}
    try:
        for role, limit in evaluated_settings(spec, cfg, inputs.identity_root.name):
            budget = FrameBudget(max_frames=limit, min_clip_frames=cfg.min_clip_frames)
            role_drivings = drivings(reader, role, budget, inputs.raw_root, audio_cfg, audio_kinds,
                                     weights=inputs.weights)
            # Real frames exist for the identity's own clips: the self-driven ground truth, and in the
            # cross-expression setting both sources (audio clip A, expression clip B).
            truth = (lambda indices: np.stack([reader.frame(int(i)) for i in indices])) \
                if role in ("self", CROSS_EXPRESSION) else None
            video = None
            if cfg.videos and videos_dir is not None and role_drivings:
                video = SideBySide(videos_dir / f"{role}.mp4", role_drivings, head.image_size, spec.name,
                                   with_truth=role == "self",
                                   expression_source=truth if role == CROSS_EXPRESSION else None)
            role_head = _AudioSourceFrames(head) if role == CROSS_EXPRESSION and spec.family == "ground_truth" \
                else head
            try:
                # Self and cross keep inferring their role from the drivings, as their records always have.
                result = evaluate_role(role_head, role_drivings, scorer, truth, cfg,
                                       real_frames=_real_frames(reader), sink=video,
                                       role=role if role == CROSS_EXPRESSION else None)
            finally:
                if video is not None:
                    video.close(videos_dir / f"{role}.jpg")
            result.metrics["Training time"] = training_metric(summary)
            if spec.family in REFERENCE_FAMILIES and "FPS" in result.metrics:
                result.metrics["FPS"] = MetricValue.not_available(
                    "FPS", "reference row: its frames are read from disk, not rendered")
            settings[role] = _setting_record(result)
    finally:
        scorer.landmarks.close()
    record = {"method": spec.name, "family": spec.family, "variant": spec.variant, "identity": reader.root.name}
    if dataclasses.is_dataclass(method_cfg) and hasattr(method_cfg, "seed"):
        record["seed"] = int(method_cfg.seed)
    record.update({
        "profile": profile, "hardware": device_description(),
        "demo_aids": demo_aids(method_cfg) if dataclasses.is_dataclass(method_cfg) else [],
        "settings": settings, "training": summary,
    })
    return record


_NUMBER_LIST = re.compile(r"\[\s*(-?(?:[0-9.eE+-]+|Infinity|NaN)(?:,\s*-?(?:[0-9.eE+-]+|Infinity|NaN))*)\s*\]")


def record_json(record: dict) -> str:
    """The record as indented JSON with every list of numbers (the per-frame values) on one line."""
    text = json.dumps(record, indent=1, allow_nan=True)
    return _NUMBER_LIST.sub(lambda match: "[" + ", ".join(part.strip() for part in match.group(1).split(",")) + "]",
                            text) + "\n"


def _setting_record(result: RoleResult) -> dict:
    record = {"frames": result.frames, "clips": result.clips,
              "metrics": {name: value.to_dict() for name, value in sorted(result.metrics.items())}}
    if result.module_timings_ms:
        record["module_timings_ms"] = dict(sorted(result.module_timings_ms.items()))
    return record


def _sync_scorer(inputs: EvaluationInputs):
    """SyncNet when its weights are present, else the corpus-trained sync expert, else None (Sync is n/a)."""
    from talkhead_models.pretrained.sync_expert import ExpertScorer, load_expert
    from talkhead_models.pretrained.syncnet_reference import ReferenceScorer, load_reference_syncnet

    model = load_reference_syncnet(inputs.weights)
    if model is not None:
        return ReferenceScorer(model)
    checkpoint = Path(inputs.sync_expert) / "model.pt" if inputs.sync_expert is not None else None
    if checkpoint is None or not checkpoint.is_file():
        log.warning("no sync scorer: neither syncnet_v2.model nor a trained sync expert (%s); Sync, LSE-C and "
                    "LSE-D are n/a", checkpoint)
        return None
    return ExpertScorer(*load_expert(checkpoint))


def _emotion_scorer(inputs: EvaluationInputs) -> tuple[Any, str]:
    """The corpus emotion CNN for the cross-expression setting, or None and the reason it is unavailable."""
    from talkhead_models.evaluation.emotion import EmotionScorer
    from talkhead_models.pretrained.emotion import MODEL_FILE

    folder = inputs.pretrained.get("emotion")
    if folder is None:
        return None, "no emotion network given (the pretrain_emotion stage's folder)"
    try:
        return EmotionScorer(Path(folder) / MODEL_FILE), ""
    except (FileNotFoundError, ValueError) as error:  # missing, or EMOCA's features (no classifier to ask)
        return None, str(error)


def _expression_fitter(inputs: EvaluationInputs, reader: IdentityReader, image_size: int) -> ExpressionFitter | str:
    """The tracker for Exp-Diff, or the reason it is unavailable."""
    track_params = reader.layout.path("track_params")
    if inputs.face_model is None or not (Path(inputs.face_model) / FACE_MODEL_FILE).is_file():
        return f"no face model ({inputs.face_model}/{FACE_MODEL_FILE}); run the face_model stage"
    if not track_params.is_file():
        return f"{track_params} not found; run the track stage"
    return ExpressionFitter(Path(inputs.face_model), track_params, image_size,
                            reader.layout.producer("track_params"))


def _real_frames(reader: IdentityReader):
    """FID's reference set: real frames spread over the identity's training frames."""
    def sample(count: int) -> np.ndarray:
        frames = reader.training_frames()
        chosen = frames[np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int)]
        return np.stack([reader.frame(int(i)) for i in chosen])
    return sample


def _training_summary(model_dir: Path) -> dict | None:
    path = Path(model_dir) / TRAINING_SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None


def set_threads(count: int) -> None:
    torch.set_num_threads(max(1, count))


__all__ = ["CROSS_EXPRESSION", "EXP_DIFF_AUDIO", "EvaluationConfig", "EvaluationInputs", "SETTINGS", "SplitError",
           "TRAINING_SUMMARY", "evaluate_method", "evaluated_settings", "record_json", "set_threads"]
