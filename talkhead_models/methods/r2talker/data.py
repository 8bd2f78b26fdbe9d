"""What R2-Talker reads from a processed identity: cameras, frames, masks, landmarks and audio windows.

Cameras are the tracker's ``transforms_*.json`` (OpenGL camera-to-world,
world = the head frame in metres). The head lives in a box found from the
training frames' head masks; positions are mapped into the scene frame, that
box centred and scaled into [-1, 1]^3 (RAD-NeRF scales its poses by 4 so the
head fills its unit cube; this does the same from the data).

Conditions:

* landmarks (R2-Talker): the tracked 68 landmarks in the canonical face frame
  of the audio-to-landmark generator (``pretrained.datasets.load_identity``,
  the same canonicalisation its training used), so training inputs and the
  generator's test-time predictions share one frame of reference; a window
  of frames around each frame, clamped inside its recording;
* audio (the RAD-NeRF baseline): the 16-step feature windows of a window of
  frames around each frame, also clamped inside the recording.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from talkhead_models.components.schedule import window_indices
from talkhead_models.components.head_prior import identity_face_points
from talkhead_models.components.scene import SceneFrame, head_scene_frame
from talkhead_models.data.identity_reader import IdentityError, IdentityReader
from talkhead_models.data.processed import ProcessedIdentity
from talkhead_models.preprocess.frames import read_image

log = logging.getLogger(__name__)

HEAD_LABELS = (1, 2, 4, 5)
"""Semantic labels the head NeRF renders: head (with hair), neck, lips, mouth interior."""
TORSO_LABELS = (2, 3)
"""Labels the torso net may cover: neck and torso."""
LIP_LABELS = (4, 5)
BOX_FRAMES = 48
"""Training frames whose masks bound the head box."""
FRAME_CACHE = 512
"""Decoded training frames kept in memory (about 0.6 MB each at 256 px)."""


def scene_frame(identity: "IdentityData", margin: float) -> SceneFrame:
    """The head box from the training frames' head masks, unprojected onto the face plane
    (``components.scene.head_scene_frame``)."""
    frames = identity.training_frames
    picked = frames[np.linspace(0, len(frames) - 1, min(BOX_FRAMES, len(frames))).astype(int)]
    masks = ((identity.cameras.c2w[index], np.isin(identity.semantic(int(index)), HEAD_LABELS)) for index in picked)
    scene = head_scene_frame(masks, identity.cameras.focal, identity.cameras.cx, identity.cameras.cy, margin,
                             identity.root.name)
    if scene is None:
        raise IdentityError(f"{identity.layout.path('semantic')}: no head pixels in the training frames; "
                            "re-run the parse stage")
    return scene


class IdentityData:
    """One processed identity as R2-Talker trains on it (frames are decoded lazily and cached)."""

    def __init__(self, root: Path, with_landmarks: bool, audio_kind: str | None = None) -> None:
        self.reader = IdentityReader(root)
        self.layout: ProcessedIdentity = self.reader.layout
        self.root = self.reader.root
        self.cameras = self.reader.cameras()
        clips = self.reader.clips()
        self.clip_first = np.zeros(self.reader.num_frames, np.int64)
        self.clip_last = np.zeros(self.reader.num_frames, np.int64)
        for row in clips.itertuples(index=False):
            self.clip_first[row.first_frame:row.last_frame + 1] = row.first_frame
            self.clip_last[row.first_frame:row.last_frame + 1] = row.last_frame
        tracked = np.array([self.cameras.has(i) for i in range(self.reader.num_frames)])
        training = self.reader.training_frames()
        self.training_frames = training[tracked[training]]
        if len(self.training_frames) == 0:
            raise IdentityError(f"{self.layout.path('transforms_train')}: no tracked training frame; re-run the "
                                "track stage")
        validation = np.flatnonzero(self.reader.validation_mask() & tracked)
        self.validation_frames = validation
        self.eye = np.asarray(self.reader.eye(), np.float32)
        self.image_size = int(self.frame(int(self.training_frames[0])).shape[0])
        self.background = read_image(self._require("background")).astype(np.float32) / 255.0
        self.canonical = self.neutral = None
        if with_landmarks:
            from talkhead_models.pretrained.datasets import load_identity

            landmarks = load_identity(self.layout)
            self.canonical = landmarks.canonical.astype(np.float32)  # [N, 68, 3]
            self.neutral = landmarks.neutral.shape.astype(np.float32)
        self.audio = None
        if audio_kind is not None:
            self.audio = np.asarray(self.reader.audio_features(audio_kind), np.float32)  # [N, 16, D]
        self._frame_cache = functools.lru_cache(maxsize=FRAME_CACHE)(self._load_training_images)

    def _require(self, name: str) -> Path:
        path = self.layout.path(name)
        if not path.exists():
            raise IdentityError(f"{path} not found; R2-Talker needs the parse stage's outputs (`python -m "
                                f"stages.parse --identity {self.root.name}`)")
        return path

    def frame(self, index: int) -> np.ndarray:
        return self.reader.frame(index)

    def semantic(self, index: int) -> np.ndarray:
        return self.reader.semantic(index)

    def _load_training_images(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ground truth over bc.jpg, bc.jpg with the frame's torso, semantic labels) as uint8 / labels."""
        truth = self.reader.gt_image(index)
        torso = self.reader.torso_rgba(index)
        alpha = torso[..., 3:].astype(np.float32) / 255.0
        head_background = torso[..., :3].astype(np.float32) / 255.0 * alpha + self.background * (1.0 - alpha)
        return truth, (head_background * 255.0 + 0.5).astype(np.uint8), self.semantic(index)

    def training_images(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._frame_cache(int(index))

    def landmark_windows(self, frames: np.ndarray, window: int) -> np.ndarray:
        """[n, window, 68, 3] canonical landmarks around ``frames``."""
        index = window_indices(np.asarray(frames), window, self.clip_first[frames], self.clip_last[frames])
        return self.canonical[index]

    def audio_windows(self, frames: np.ndarray, window: int) -> np.ndarray:
        """[n, window, 16, D] audio feature windows around ``frames``."""
        index = window_indices(np.asarray(frames), window, self.clip_first[frames], self.clip_last[frames])
        return self.audio[np.minimum(index, len(self.audio) - 1)]

    def face_points(self) -> np.ndarray | None:
        """[P, 3] the face's landmarks in the head frame (metres), triangulated from the training frames'
        tracked cameras (``components.head_prior.identity_face_points``); None without landmarks."""
        return identity_face_points(self.reader, self.training_frames)

    def lips_box(self, labels: np.ndarray) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) of the lips and mouth interior, or None when the frame shows none."""
        rows, cols = np.nonzero(np.isin(labels, LIP_LABELS))
        if len(rows) == 0:
            return None
        return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1

    def region_mask(self, labels: tuple[int, ...], frames: np.ndarray, dilate: int) -> np.ndarray:
        """[H, W] union of ``labels`` over ``frames``, dilated by ``dilate`` pixels."""
        mask = np.zeros((self.image_size, self.image_size), np.uint8)
        for index in frames:
            mask |= np.isin(self.semantic(int(index)), labels).astype(np.uint8)
        if dilate > 0:
            mask = cv2.dilate(mask, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8))
        return mask.astype(bool)


def features_audio_config(layout: ProcessedIdentity):
    """The audio stage's settings recorded in features/manifest.json (defaults when absent)."""
    from talkhead_models.config import from_dict
    from talkhead_models.preprocess.audio_features import AudioConfig

    manifest = layout.path("features_dir") / "manifest.json"
    try:
        params = json.loads(manifest.read_text()).get("params", {})
        return from_dict(AudioConfig, {k: v for k, v in params.items() if k in AudioConfig.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return AudioConfig()


def as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, np.float32), device=device)
