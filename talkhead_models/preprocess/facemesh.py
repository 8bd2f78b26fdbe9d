"""mediapipe FaceMesh (478 points with irises), wrapped for whole videos."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from talkhead_models.media import iter_frames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectionCount:
    frames: int  # frames examined
    detected: int  # frames in which a face was found

    @property
    def rate(self) -> float:
        return self.detected / self.frames if self.frames else float("nan")


class FaceMesh:
    """FaceMesh on RGB uint8 frames; ``None`` for a frame without a face.

    ``static=True`` detects every frame from scratch (no tracking from the
    previous frame): slower, and the strict test of whether a frame shows a face.
    """

    def __init__(self, static: bool = True, min_confidence: float = 0.5) -> None:
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence,
        )

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        """[478, 3] pixel x, y and depth z (pixels, negative = nearer), or None."""
        result = self._mesh.process(np.ascontiguousarray(frame))
        if not result.multi_face_landmarks:
            return None
        height, width = frame.shape[:2]
        points = np.array([[p.x, p.y, p.z] for p in result.multi_face_landmarks[0].landmark], np.float32)
        return points * np.array([width, height, width], np.float32)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "FaceMesh":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect_frames(find: Callable[[np.ndarray], np.ndarray | None], frames: np.ndarray,
                  shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``find`` on every frame: [n, *shape] points and [n] detected flags. A frame without a face takes its
    nearest detected neighbour's points (all NaN when no frame shows one), so a rare miss does not drop a frame
    from a per-frame metric; the flags say which frames were found."""
    points = np.full((len(frames), *shape), np.nan, np.float32)
    detected = np.zeros(len(frames), bool)
    for index, frame in enumerate(frames):
        found = find(frame)
        if found is not None:
            points[index], detected[index] = found, True
    if detected.any() and not detected.all():
        known = np.flatnonzero(detected)
        for index in np.flatnonzero(~detected):
            points[index] = points[known[np.argmin(np.abs(known - index))]]
    return points, detected


def count_detections(video: Path, mesh: FaceMesh, stride: int = 1) -> DetectionCount:
    """How many of a video's frames (every ``stride``-th) FaceMesh finds a face in."""
    frames = detected = 0
    for index, frame in enumerate(iter_frames(video)):
        if index % stride:
            continue
        frames += 1
        detected += mesh(frame) is not None
    return DetectionCount(frames, detected)
