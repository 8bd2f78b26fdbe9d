"""One frame, whatever drives it."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Mapping

import annotated_types
import numpy as np

from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.methods.base import Driving, MetricLogger, model_dir_file

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"


@dataclass(frozen=True)
class StaticConfig:
    """Which training frame the static row repeats."""

    frame: Annotated[int, annotated_types.Ge(-1)] = -1
    """Processed frame index to repeat; -1 = the identity's first training frame."""


class Static:
    """One frame for every driving frame."""

    def __init__(self, frame: np.ndarray) -> None:
        self.frame = frame
        self.image_size = int(frame.shape[0])

    def render(self, driving: Driving) -> Iterator[np.ndarray]:
        for _ in range(driving.num_frames):
            yield self.frame


def train(cfg: StaticConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path,
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
    record = {"method": "static", "identity": reader.root.name, "frame": frame}
    (Path(model_dir) / MODEL_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log.info("static@%s repeats frame %d", reader.root.name, frame)
    return {"seconds": time.perf_counter() - started, "iterations": 0, "frame": float(frame)}


def load(cfg: StaticConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path) -> Static:
    record = json.loads(model_dir_file(model_dir, MODEL_FILE).read_text())
    return Static(IdentityReader(identity_root).frame(int(record["frame"])))
