"""Ground truth and static: renderers that read the processed identity instead of learning it."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.methods.base import Driving, MetricLogger, UnsupportedDriving, model_dir_file

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"


@dataclass(frozen=True)
class GroundTruthConfig:
    """The ground-truth row has nothing to configure; the class exists so every method has a params section."""


@dataclass(frozen=True)
class StaticConfig:
    """Which training frame the static row repeats."""

    frame: int = -1
    """Processed frame index to repeat; -1 = the identity's first training frame."""


class GroundTruth:
    """The identity's real frames at the driving frame indices; only its own (self-driven) audio matches them."""

    def __init__(self, reader: IdentityReader) -> None:
        self.reader = reader
        self.image_size = int(reader.frame(0).shape[0])

    def render(self, driving: Driving) -> Iterator[np.ndarray]:
        if driving.role != "self":
            raise UnsupportedDriving("the ground truth has no frames of this identity speaking another person's "
                                     "audio")
        for index in driving.frame_indices:
            yield self.reader.frame(int(index))


class Static:
    """One frame, whatever drives it."""

    def __init__(self, frame: np.ndarray) -> None:
        self.frame = frame
        self.image_size = int(frame.shape[0])

    def render(self, driving: Driving) -> Iterator[np.ndarray]:
        for _ in range(driving.num_frames):
            yield self.frame


def _write_model(model_dir: Path, record: dict[str, Any]) -> None:
    (Path(model_dir) / MODEL_FILE).write_text(json.dumps(record, indent=2) + "\n")


def train_ground_truth(cfg: GroundTruthConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path,
                       log_metric: MetricLogger | None = None) -> dict[str, Any]:
    """Nothing to learn: records which identity folder the frames come from."""
    reader = IdentityReader(identity_root)
    _write_model(model_dir, {"method": "ground_truth", "identity": reader.root.name, "frames": reader.num_frames})
    return {"seconds": 0.0, "iterations": 0}


def train_static(cfg: StaticConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path,
                 log_metric: MetricLogger | None = None) -> dict[str, Any]:
    """"Training" picks the frame: the configured one, which must not be a validation frame."""
    started = time.perf_counter()
    reader = IdentityReader(identity_root)
    training = reader.training_frames()
    frame = int(training[0]) if cfg.frame < 0 else cfg.frame
    if frame not in set(training.tolist()):
        raise ValueError(f"static.frame={frame} is not a training frame of {reader.root} (it is out of range or "
                         f"held out for validation); pick one of {training[0]}..{training[-1]} outside the "
                         "validation ranges, or -1")
    _write_model(model_dir, {"method": "static", "identity": reader.root.name, "frame": frame})
    log.info("static@%s repeats frame %d", reader.root.name, frame)
    return {"seconds": time.perf_counter() - started, "iterations": 0, "frame": float(frame)}


def load_ground_truth(cfg: GroundTruthConfig, identity_root: Path, pretrained: Mapping[str, Path],
                      model_dir: Path) -> GroundTruth:
    return GroundTruth(IdentityReader(identity_root))


def load_static(cfg: StaticConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path) -> Static:
    record = json.loads(model_dir_file(model_dir, MODEL_FILE).read_text())
    return Static(IdentityReader(identity_root).frame(int(record["frame"])))
