"""DVC stage ``speed``: rendering speed of method pairs, alternated in one process on the same frames.

The evaluate stages' FPS come from separate processes, so machine drift
between them can flip a speed claim; this stage loads both trained models of
each pair of ``speed.pairs`` (``data/models/<method>/<identity>``), warms
them up, and times them A, B, A, B, ... on one self-driven driving of the
identity at the same resolution and thread count
(:mod:`talkhead_models.evaluation.speed`). Writes
``reports/metrics/speed.json`` (a DVC metrics file; the tables stage reads
it for the speed claims). A pair whose model is missing is skipped and
listed under ``skipped`` with the reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Mapping

from stages._stage import Stage, StageResult
from talkhead_models.atomic import write_text
from talkhead_models.config import to_dict
from talkhead_models.data import DataConfig
from talkhead_models.evaluation.speed import SpeedConfig, measure_speed, speed_driving
from talkhead_models.methods import get_method
from talkhead_models.methods.base import TalkingHead
from talkhead_models.methods.ground_truth.model import GroundTruthConfig
from talkhead_models.methods.gstalker import GSTalkerConfig
from talkhead_models.methods.jean import JeanConfig
from talkhead_models.methods.r2talker import R2TalkerConfig
from talkhead_models.methods.static.model import StaticConfig
from talkhead_models.preprocess.audio_features import AudioConfig

log = logging.getLogger(__name__)

PRETRAINED = ("audio2motion", "sync_expert", "emotion")
"""Corpus-level model folders under data/models a method may read at render time (as the evaluate stage passes)."""


@dataclass(frozen=True)
class SpeedStageConfig(SpeedConfig):
    """The speed protocol, plus the shared sections it renders with: audio features, identities, method families."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    """Shared params section ``audio`` (the driving's features use the audio stage's settings)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Shared params section ``data`` (``identities``: where a pair's models are looked for)."""
    ground_truth: GroundTruthConfig = field(default_factory=GroundTruthConfig)
    """Shared params section ``ground_truth``."""
    static: StaticConfig = field(default_factory=StaticConfig)
    """Shared params section ``static``."""
    r2talker: R2TalkerConfig = field(default_factory=R2TalkerConfig)
    """Shared params section ``r2talker`` (every R2-Talker ladder variant renders with it)."""
    gstalker: GSTalkerConfig = field(default_factory=GSTalkerConfig)
    """Shared params section ``gstalker``."""
    jean: JeanConfig = field(default_factory=JeanConfig)
    """Shared params section ``jean`` (rendering reads its backdrop; the rest comes with the trained model)."""


FAMILIES = ("ground_truth", "static", "r2talker", "gstalker", "jean")
"""Method families whose params sections the config embeds (a pair may name any of their methods)."""


def run(cfg: SpeedStageConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> StageResult:
    models, processed = Path(inputs["models"]), Path(inputs["processed"])
    specs = {name: get_method(name) for pair in cfg.pairs for name in pair}
    unknown = sorted(f"{name} ({spec.family})" for name, spec in specs.items() if spec.family not in FAMILIES)
    if unknown:
        raise ValueError(f"speed.pairs name methods of families the speed stage has no params section for: "
                         f"{unknown}; add the family to stages/speed.py FAMILIES and SpeedStageConfig")

    def model_dir(method: str, identity: str) -> Path:
        return models / method / identity

    def load(method: str, identity: str) -> TalkingHead:
        spec = specs[method]
        method_cfg = spec.resolve_config(to_dict(getattr(cfg, spec.family)))
        return spec.load(method_cfg, processed / identity, {name: models / name for name in PRETRAINED},
                         model_dir(method, identity))

    record = measure_speed(cfg, list(cfg.data.identities), model_dir, load,
                           lambda identity, frames: speed_driving(processed / identity, frames, cfg.audio))
    write_text(outputs["speed"], json.dumps(record, indent=1) + "\n")
    metrics = {"pairs_timed": float(len(record["pairs"])), "pairs_skipped": float(len(record["skipped"]))}
    for pair in record["pairs"]:
        key = f"{pair['a']}_vs_{pair['b']}"
        metrics[f"{key}_fps_a"] = median(pair["fps_a"])
        metrics[f"{key}_fps_b"] = median(pair["fps_b"])
        # Per round, so drift within the run cancels in each ratio.
        metrics[f"{key}_ratio"] = median([a / b for a, b in zip(pair["fps_a"], pair["fps_b"])])
    log.info("speed on %s: %s", record["hardware"],
             ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()) or "nothing timed")
    return StageResult(metrics=metrics, artifacts=[Path(outputs["speed"])])


STAGE = Stage(
    name="speed",
    config=SpeedStageConfig,
    section="speed",
    run=run,
    inputs={"processed": "data/processed", "models": "data/models"},
    outputs={"speed": "reports/metrics/speed.json"},
    description=__doc__,
    shared_sections=("audio", "data", *FAMILIES),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
