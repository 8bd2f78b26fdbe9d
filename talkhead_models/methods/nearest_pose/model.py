"""For each driving frame, the training frame whose tracked head pose is nearest.

The pose distance between two tracked cameras (``transforms_*.json``,
camera-to-world in the head frame, metres) is

    d = angle(R_a, R_b) + |t_a - t_b| / translation_scale

with ``angle`` the geodesic angle of the relative head rotation (radians)
and ``t`` the head's position in the camera frame (the translation of the
world-to-camera pose, what places the head in the image; the camera's
position in the head frame would count a turn of the head a second time,
as a swing of the camera around it). Both terms are how far the face moves,
in units of ``translation_scale``: a point ``p`` of the head frame moves by
``|(R_a - R_b) p + t_a - t_b| <= angle |p| + |t_a - t_b|``, so ``d x
translation_scale`` bounds the motion of every point within
``translation_scale`` of the origin (the face oval's centroid). The face
mesh's points lie 4-9 cm from it (median 5.7 cm in the demo corpus' face
model), so at the default 10 cm ``d x 0.1 m`` bounds how far any point of
the face moves between the two poses. Ties go to the earliest training
frame.

Only training frames are candidates (``IdentityReader.training_frames``,
the frames every method trains on), so a held-out frame is never shown as
its own prediction; training frames the tracker skipped have no pose and
are left out.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from talkhead_models.config import PositiveFloat
from talkhead_models.data.identity_reader import IdentityError, IdentityReader, TrackedCameras
from talkhead_models.methods.base import Driving, MetricLogger, model_dir_file
from talkhead_models.preprocess.cameras import head_translation, pose_distance  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
POSES_FILE = "poses.npz"
"""The candidates: ``frames`` [M] training frame indices and their ``c2w`` [M, 4, 4] tracked cameras."""


@dataclass(frozen=True)
class NearestPoseConfig:
    """How head poses are compared (a reference row: no paper; the default is the one the module documents)."""

    translation_scale: PositiveFloat = 0.1
    """Metres of head translation that weigh as much as one radian of head rotation in the pose distance: the
    radius around the head frame's origin (the face oval's centroid) that holds the face's points (4-9 cm), so
    the distance times this scale bounds how far any face point moves."""

    def __post_init__(self) -> None:
        if not self.translation_scale > 0:
            raise ValueError(f"nearest_pose.translation_scale must be > 0 (metres), got {self.translation_scale}")


class NearestPose:
    """Shows, for each driving frame, the candidate frame nearest its camera's head pose."""

    def __init__(self, reader: IdentityReader, frames: np.ndarray, c2w: np.ndarray, cameras: TrackedCameras,
                 cfg: NearestPoseConfig) -> None:
        self.reader, self.cameras, self.cfg = reader, cameras, cfg
        self.frames = np.asarray(frames, np.int64)
        self.c2w = np.asarray(c2w, np.float64)
        self.image_size = int(reader.frame(int(self.frames[0])).shape[0])
        self._last: tuple[int, np.ndarray] | None = None  # consecutive driving frames often share a pick

    def nearest(self, index: int) -> int:
        """The candidate frame shown for the identity's frame ``index`` (its camera's nearest head pose)."""
        if not self.cameras.has(index):
            raise ValueError(f"frame {index} of {self.reader.root.name} has no tracked camera; re-run the track "
                             "stage")
        distances = pose_distance(self.cameras.c2w[index], self.c2w, self.cfg.translation_scale)
        return int(self.frames[int(np.argmin(distances))])

    def _frame(self, index: int) -> np.ndarray:
        if self._last is None or self._last[0] != index:
            self._last = (index, self.reader.frame(index))
        return self._last[1]

    def render(self, driving: Driving) -> Iterator[np.ndarray]:
        for index in driving.frame_indices:
            yield self._frame(self.nearest(int(index)))


def train(cfg: NearestPoseConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path,
          log_metric: MetricLogger | None = None) -> dict[str, Any]:
    """"Training" stores the candidates: the tracked training frames and their cameras."""
    started = time.perf_counter()
    reader = IdentityReader(identity_root)
    cameras = reader.cameras()
    training = reader.training_frames()
    tracked = np.array([cameras.has(int(i)) for i in training], bool)
    frames = training[tracked]
    if len(frames) == 0:
        raise IdentityError(f"{reader.root}: no training frame has a tracked camera; re-run the track stage")
    if not tracked.all():
        log.warning("nearest_pose@%s: %d of %d training frames have no tracked camera and are never shown",
                    reader.root.name, int((~tracked).sum()), len(training))
    np.savez(Path(model_dir) / POSES_FILE, frames=frames.astype(np.int64), c2w=cameras.c2w[frames])
    record = {"method": "nearest_pose", "identity": reader.root.name, "candidates": int(len(frames)),
              "untracked_training_frames": int((~tracked).sum())}
    (Path(model_dir) / MODEL_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log.info("nearest_pose@%s: %d candidate frames", reader.root.name, len(frames))
    return {"seconds": time.perf_counter() - started, "iterations": 0, "candidates": float(len(frames))}


def load(cfg: NearestPoseConfig, identity_root: Path, pretrained: Mapping[str, Path],
         model_dir: Path) -> NearestPose:
    with np.load(model_dir_file(model_dir, POSES_FILE)) as poses:
        frames, c2w = poses["frames"], poses["c2w"]
    reader = IdentityReader(identity_root)
    return NearestPose(reader, frames, c2w, reader.cameras(), cfg)
