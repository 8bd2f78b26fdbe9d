"""The real frames at the driving frame indices."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.methods.base import Driving, MetricLogger, UnsupportedDriving

MODEL_FILE = "model.json"


@dataclass(frozen=True)
class GroundTruthConfig:
    """The ground-truth row has nothing to configure; the class exists so every method has a params section."""


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


def train(cfg: GroundTruthConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path,
          log_metric: MetricLogger | None = None) -> dict[str, Any]:
    """Nothing to learn: records which identity folder the frames come from."""
    reader = IdentityReader(identity_root)
    record = {"method": "ground_truth", "identity": reader.root.name, "frames": reader.num_frames}
    (Path(model_dir) / MODEL_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return {"seconds": 0.0, "iterations": 0}


def load(cfg: GroundTruthConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path) -> GroundTruth:
    return GroundTruth(IdentityReader(identity_root))
