"""What GSTalker reads from a processed identity: cameras, head poses, frames, parsing masks, lip boxes, audio.

Cameras come from the track stage's ``transforms_train.json`` and
``transforms_val.json`` (ER-NeRF's conventions: camera-to-world in OpenGL
axes, world = the tracked head frame in metres). GSTalker simulates the head's
motion by the camera ("camera = inverse head pose"), so the head's Gaussians
live in the head frame, scaled by ``scene_scale`` into world units. The torso
is rendered from one fixed camera; its deformation is conditioned on the head
pose (Euler angles and translation, relative to the training frames' mean).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from talkhead_models.data.identity_reader import IdentityError, IdentityReader
from talkhead_models.metrics.landmarks import MOUTH
from talkhead_models.preprocess.cameras import pose_from_transform
from talkhead_models.preprocess.frames import read_image

log = logging.getLogger(__name__)

HEAD_LABELS = (1, 4, 5)
"""Semantic labels rendered by the head's Gaussians: head, lips, mouth interior."""
TORSO_LABELS = (2, 3)
"""Semantic labels rendered by the torso's Gaussians: neck and torso (ER-NeRF's torso images include the neck)."""
SKULL_LANDMARKS = np.array([27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45])
"""Points that move with the skull only (nose, eye corners): their centroid takes the head's translation out of
the mouth's motion."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera of the processed frames (pixels)."""

    focal: float
    cx: float
    cy: float
    size: int
    """Side of the square processed frames."""

    def matrix(self, size: int, x0: int = 0, y0: int = 0) -> Tensor:
        """3x3 intrinsics for frames rendered at ``size`` pixels (pixel centres at +0.5, so coordinates scale),
        or for the window of them whose top-left pixel is (x0, y0)."""
        s = size / self.size
        return torch.tensor([[self.focal * s, 0.0, self.cx * s - x0], [0.0, self.focal * s, self.cy * s - y0],
                             [0.0, 0.0, 1.0]])


@dataclass
class FrameTargets:
    """One training frame at the training resolution, as float tensors on the device."""

    index: int
    image: Tensor
    """[H, W, 3] RGB in [0, 1]."""
    head_mask: Tensor
    """[H, W, 1] fraction of each pixel that is head (area-averaged labels)."""
    torso_mask: Tensor
    """[H, W, 1] fraction that is neck or torso."""
    lips_box: tuple[int, int, int, int] | None
    """(x0, y0, x1, y1) of the lip patch in training pixels, end-exclusive (None: outside a crop)."""

    def crop(self, x0: int, y0: int, side: int) -> "FrameTargets":
        """The square window [x0, x0 + side) x [y0, y0 + side), lip patch clipped to it."""
        box = None
        if self.lips_box is not None:
            bx0, by0, bx1, by1 = self.lips_box
            bx0, by0 = max(bx0 - x0, 0), max(by0 - y0, 0)
            bx1, by1 = min(bx1 - x0, side), min(by1 - y0, side)
            box = (bx0, by0, bx1, by1) if bx1 > bx0 and by1 > by0 else None
        window = (slice(y0, y0 + side), slice(x0, x0 + side))
        return FrameTargets(self.index, self.image[window], self.head_mask[window], self.torso_mask[window], box)


def _read_cameras(reader: IdentityReader) -> tuple[np.ndarray, Intrinsics]:
    """Camera-to-world [N, 4, 4] (OpenGL, metres; NaN for frames in neither file) and the intrinsics."""
    cameras = reader.cameras()
    size = int(reader.frame(0).shape[0])
    return cameras.c2w.copy(), Intrinsics(cameras.focal, cameras.cx, cameras.cy, size=size)


def _fill_missing(c2w: np.ndarray) -> np.ndarray:
    """Frames without a camera take the nearest frame's (transforms files may skip frames without a face)."""
    known = np.flatnonzero(np.isfinite(c2w[:, 0, 0]))
    if len(known) == 0:
        raise IdentityError("no frame has a tracked camera; re-run the track stage")
    missing = np.flatnonzero(~np.isfinite(c2w[:, 0, 0]))
    if len(missing):
        nearest = known[np.clip(np.searchsorted(known, missing), 0, len(known) - 1)]
        c2w[missing] = c2w[nearest]
        log.warning("%d frames have no tracked camera; using the nearest tracked frame's", len(missing))
    return c2w


class IdentityScene:
    """Cameras, poses, frames and masks of one processed identity for GSTalker."""

    def __init__(self, root: str | Path, scene_scale: float, audio_feature: str,
                 features: np.ndarray | None = None) -> None:
        """``features`` [N, window, D] replaces ``aud_<audio_feature>.npy`` (features computed at run time, such
        as the audio-to-motion ones)."""
        self.reader = IdentityReader(root)
        self._given_features = features
        self.scene_scale = scene_scale
        c2w, self.intrinsics = _read_cameras(self.reader)
        c2w = _fill_missing(c2w)
        self.image_size = self.intrinsics.size
        scaled = c2w.copy()
        scaled[:, :3, 3] *= scene_scale
        self.c2w = scaled.astype(np.float32)
        """[N, 4, 4] camera-to-world of every processed frame, world units."""
        euler, trans_dm = pose_from_transform(c2w)
        # Translation in world units (dm -> m -> world), so both halves of the pose are O(0.1).
        self.raw_poses = np.concatenate([euler, trans_dm / 10.0 * scene_scale], axis=1).astype(np.float32)
        """[N, 6] head pose (Euler angles, translation) per frame."""
        self.training_frames = self.reader.training_frames()
        self.validation_frames = np.flatnonzero(self.reader.validation_mask())
        self.audio_feature = audio_feature

    @cached_property
    def _features(self) -> np.ndarray:
        if self._given_features is not None:
            return self._given_features
        features = self.reader.audio_features(self.audio_feature)
        if features.ndim != 3:
            raise IdentityError(f"aud_{self.audio_feature}.npy of {self.reader.root} has shape {features.shape}; "
                                "expected [N, window, D] (re-run the audio stage)")
        return features

    @cached_property
    def eye(self) -> np.ndarray:
        """[N] open-eye ratio per frame."""
        return self.reader.eye().astype(np.float32)

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(window, D) of one frame's audio features."""
        return int(self._features.shape[1]), int(self._features.shape[2])

    def audio(self, index: int) -> np.ndarray:
        """[window, D] audio features of frame ``index`` (ER-NeRF's min(i, len - 1) when the file is short)."""
        return np.array(self._features[min(index, len(self._features) - 1)], dtype=np.float32)

    def mean_training_pose(self) -> np.ndarray:
        return self.raw_poses[self.training_frames].mean(0)

    def mean_camera_distance(self) -> float:
        """Mean distance of the training cameras from the head origin (world units)."""
        return float(np.linalg.norm(self.c2w[self.training_frames, :3, 3], axis=1).mean())

    @cached_property
    def _landmarks(self) -> np.ndarray | None:
        path = self.reader.layout.path("landmarks68")
        if path.is_file():
            return self.reader.landmarks().points68  # NaN/inf in a frame with a face is refused, naming the file
        if self.reader.flat and self.reader.layout.lms(0).is_file():
            return None  # flat folder: read <i>.lms per frame
        raise IdentityError(f"{path} not found: the lip patch needs the 68 landmarks; run the landmarks stage")

    def landmarks(self, index: int) -> np.ndarray:
        """[68, 2] landmarks of frame ``index`` in processed pixels."""
        if self._landmarks is not None:
            return np.asarray(self._landmarks[index, :, :2], dtype=np.float32)
        return np.asarray(self.reader.landmarks68(index), dtype=np.float32)

    def mouth_points(self, index: int) -> np.ndarray:
        """[20, 2] mouth landmarks of frame ``index`` in processed pixels."""
        return self.landmarks(index)[MOUTH]

    def _mouth_relative(self, index: int) -> np.ndarray:
        points = self.landmarks(index)
        return points[MOUTH] - points[SKULL_LANDMARKS].mean(0)

    @cached_property
    def _mean_mouth(self) -> np.ndarray:
        """[20, 2] the training frames' mean mouth relative to the skull points (what a static fit renders)."""
        frames = self.training_frames[:: max(1, len(self.training_frames) // 500)]
        return np.mean([self._mouth_relative(int(i)) for i in frames], axis=0)

    def mouth_motion(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index``'s mouth against the mean mouth, in processed pixels: the mean mouth placed on this
        frame's skull points [20, 2], and each point's displacement from there to the tracked one [20, 2]."""
        displacement = self._mouth_relative(index) - self._mean_mouth
        return self.mouth_points(index) - displacement, displacement

    def labels(self, index: int) -> np.ndarray:
        """[H, W] semantic labels (0 bg, 1 head, 2 neck, 3 torso, 4 lips, 5 mouth) of frame ``index``."""
        return self.reader.semantic(index)

    def background(self, size: int) -> Tensor:
        """[size, size, 3] ``bc.jpg`` in [0, 1] (the static background the parts are composed over)."""
        path = self.reader.layout.path("background")
        if not path.is_file():
            raise IdentityError(f"{path} not found: GSTalker composes over the background; run the parse stage")
        return _to_tensor(_resize(read_image(path), size))

    def targets(self, index: int, size: int, lips_padding: float = 0.3) -> FrameTargets:
        """Frame ``index`` with its head/torso masks and lip patch at ``size`` pixels."""
        image = _resize(self.reader.frame(index), size)
        labels = self.labels(index)
        head = np.isin(labels, HEAD_LABELS).astype(np.float32)
        torso = np.isin(labels, TORSO_LABELS).astype(np.float32)
        return FrameTargets(
            index=index, image=_to_tensor(image), head_mask=torch.from_numpy(_resize(head, size))[..., None],
            torso_mask=torch.from_numpy(_resize(torso, size))[..., None],
            lips_box=lips_box(self.mouth_points(index) * size / self.image_size, size, lips_padding),
        )


def lips_box(points: np.ndarray, size: int, padding: float = 0.3, minimum: int = 8) -> tuple[int, int, int, int]:
    """The mouth points' bounding box grown by ``padding`` of its size per side, at least ``minimum`` px, clipped."""
    low, high = points.min(0), points.max(0)
    extent = np.maximum(high - low, 1.0)
    low, high = low - padding * extent, high + padding * extent
    centre = (low + high) / 2
    half = np.maximum((high - low) / 2, minimum / 2)
    x0, y0 = np.clip(np.floor(centre - half), 0, size - 1).astype(int)
    x1, y1 = np.clip(np.ceil(centre + half), 1, size).astype(int)
    return int(x0), int(y0), int(max(x1, x0 + 1)), int(max(y1, y0 + 1))


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def _to_tensor(image: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).float() / 255.0
