"""DVC stage ``evaluate@<method>-<identity>-s<seed>``: self- and cross-driven renders of a trained model, every metric.

Self-driven: the identity's held-out frames (split.parquet) rendered from
their own audio and cameras and compared with the real frames. Cross-driven:
other identities' held-out audio on the identity's cameras. Writes the
metrics record ``reports/metrics/<method>/<identity>.json`` (a DVC metrics
file; the tables stage reads it) and ``reports/videos/<method>/<identity>/``
(``self.mp4`` rendered | ground truth, ``cross.mp4``, a sample frame of each,
audio muxed). Metrics whose weights are missing are "n/a" with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir, write_text
from talkhead_models.config import to_dict
from talkhead_models.data import DataConfig
from talkhead_models.evaluation import EvaluationConfig, EvaluationInputs, evaluate_method, metric_key, record_json
from talkhead_models.methods.base import MethodSpec
from talkhead_models.preprocess.audio_features import AudioConfig
from talkhead_models.provenance import inputs_digest

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class EvaluateStageConfig(EvaluationConfig):
    """The evaluation budget, plus the shared ``audio`` section (cross-driven features use the same settings)."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    """Shared params section ``audio``."""
    data: DataConfig = field(default_factory=DataConfig)
    """Shared params section ``data``."""


REPOSITORY = Path(__file__).resolve().parents[1]
CODE = ("talkhead_models", "stages/_stage.py", "stages/train.py", "stages/evaluate.py")
"""The code a record depends on, whole: a seed's record is averaged with seed 0's only when both were made from the
same code, config and data (talkhead_models.reporting.records), and a digest too wide only drops a stale seed."""


def run_digest(cfg: EvaluateStageConfig, inputs: Mapping[str, Path], method_config: Any, profile: str,
               identity: str) -> str:
    """The record's ``inputs_digest``: code, the method's config without its seed, the evaluation settings as
    ``identity`` gets them (its own self-driven budget, not the other identities') and every input but the model
    itself (which differs by seed)."""
    method_settings = to_dict(method_config) if dataclasses.is_dataclass(method_config) else {}
    method_settings.pop("seed", None)
    evaluation = to_dict(cfg)
    evaluation.pop("self_frames_per_identity")
    evaluation["max_self_frames"] = cfg.self_frames(identity)
    data = {name: path for name, path in inputs.items() if name != "model"}
    return inputs_digest(code=[REPOSITORY / path for path in CODE], data=data, root=REPOSITORY,
                         settings={"method": method_settings, "evaluate": evaluation, "profile": profile})


def run(cfg: EvaluateStageConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path], identity: str,
        method: MethodSpec, method_config: Any, profile: str = "") -> StageResult:
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    sources = EvaluationInputs(
        identity_root=inputs["processed"], model_dir=inputs["model"], raw_root=inputs["corpus"],
        sync_expert=inputs["sync_expert"], face_model=inputs["face_model"],
        pretrained={name: inputs[name] for name in ("audio2motion", "sync_expert", "emotion")},
    )
    try:
        with atomic_dir(outputs["videos"]) as videos:
            record = evaluate_method(method, method_config, cfg, cfg.audio, sources, videos, profile=profile)
    finally:
        torch.set_num_threads(previous_threads)
    record["inputs_digest"] = run_digest(cfg, inputs, method_config, profile, identity)
    write_text(outputs["metrics"], record_json(record))
    metrics = {}
    for role, setting in record["settings"].items():
        metrics[f"{role}_frames"] = float(setting["frames"])
        # Every finite metric goes to MLflow too, so its compare view can show the tables' columns; n/a (and the
        # ground truth's infinite PSNR) stay in the record, with their reasons (flows.compare reads both).
        for name, entry in setting["metrics"].items():
            value = entry.get("value")
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[metric_key(role, name)] = float(value)
        for name, value in setting.get("module_timings_ms", {}).items():
            metrics[f"{role}_{name}"] = float(value)
    summary = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if k.startswith("self_"))
    log.info("evaluate %s@%s: %s", method.name, identity, summary)
    # The side-by-side videos (and their first frames) go with the run, for comparing methods by eye in MLflow.
    artifacts = [outputs["metrics"], *sorted(outputs["videos"].glob("*.jpg")), *sorted(outputs["videos"].glob("*.mp4"))]
    return StageResult(metrics=metrics, artifacts=artifacts)


STAGE = Stage(
    name="evaluate",
    config=EvaluateStageConfig,
    section="evaluate",
    run=run,
    inputs={"processed": "data/processed/{identity}", "model": "data/models/{method}/{identity}{seed_suffix}",
            "corpus": "data/raw/{source}", "sync_expert": "data/models/sync_expert",
            "audio2motion": "data/models/audio2motion", "face_model": "data/models/face_model",
            "emotion": "data/models/emotion"},
    outputs={"metrics": "reports/metrics/{method}/{identity}{seed_suffix}.json",
             "videos": "reports/videos/{method}/{identity}{seed_suffix}"},
    description=__doc__,
    shared_sections=("audio", "data"),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
