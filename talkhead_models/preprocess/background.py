"""The static background (``bc.jpg``) from frames in which the person moves in front of it.

ER-NeRF's rule, made streaming: for every pixel keep the colour it had in
the frame where it was farthest from the person, so only the running best
distance and colour are held, whatever the number of frames. Pixels never
farther than a small margin from the person (always covered, or always at
its edge, where segmentation and JPEG blur mix the two) are holes, filled
from their surroundings with OpenCV's Telea in-painting.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)


class BackgroundEstimator:
    """Feed frames with their person masks; ``result()`` gives the background image."""

    def __init__(self, shape: tuple[int, int], margin_px: float) -> None:
        self.margin = float(margin_px)
        self._distance = np.full(shape, -1.0, np.float32)
        self._colour: np.ndarray | None = None
        self.frames = 0

    def add(self, frame: np.ndarray, person: np.ndarray) -> None:
        """``frame`` [H, W, 3] uint8, ``person`` [H, W] bool (True where the person or anything not background is)."""
        if self._colour is None:
            self._colour = np.zeros_like(frame)
        if person.any():
            distance = cv2.distanceTransform((~person).astype(np.uint8), cv2.DIST_L2, 5)
        else:
            distance = np.full(person.shape, np.float32(np.hypot(*person.shape)), np.float32)
        better = distance > self._distance
        self._distance[better] = distance[better]
        self._colour[better] = frame[better]
        self.frames += 1

    @property
    def holes(self) -> np.ndarray:
        """[H, W] bool: pixels never seen clearly as background."""
        return self._distance <= self.margin

    @property
    def seen_fraction(self) -> float:
        """Share of the pixels seen as background (the rest is in-painted)."""
        return float(1.0 - self.holes.mean())

    def result(self) -> np.ndarray:
        if self._colour is None:
            raise ValueError("no frames were added to the background estimate")
        holes = self.holes
        if holes.all():
            raise ValueError("the person covers every pixel in every frame: no background to estimate")
        radius = max(3, int(round(self.margin)))
        background = cv2.inpaint(self._colour, holes.astype(np.uint8), radius, cv2.INPAINT_TELEA)
        log.info("background from %d frames: %.1f%% of the pixels seen, the rest in-painted",
                 self.frames, 100 * self.seen_fraction)
        return background
