"""Per-frame eye openness: the open-eye area ratio, the stand-in for OpenFace's AU45 blink intensity.

ER-NeRF and RAD-NeRF condition the eye region on one number per frame:
OpenFace's AU45 (blink) when available, else the area of the two eye
polygons as a percentage of the image. OpenFace is not available here, so
``eye.npy`` holds the *open-eye area ratio*:

    area(right eye polygon) + area(left eye polygon)   (FaceMesh lid contours, 16 points each)
    ------------------------------------------------
          outer-corner distance squared                  (scale-free: face size and crop do not matter)

divided by the identity's open-eye level (the ``open_percentile``-th
percentile over its frames), so 1 is the eyes open as usual and 0 closed.
Unlike AU45 it grows with openness (AU45 grows with closure); a network
conditioned on it learns either direction.
"""

from __future__ import annotations

import numpy as np

from talkhead_models import face_topology as topo

# Closed polygons: lower lid from the outer to the inner corner, then the upper lid back.
RIGHT_EYE_POLYGON = np.array(topo.RIGHT_EYE_LOWER + topo.RIGHT_EYE_UPPER[::-1])
LEFT_EYE_POLYGON = np.array(topo.LEFT_EYE_LOWER + topo.LEFT_EYE_UPPER[::-1])
OUTER_CORNERS = (topo.RIGHT_EYE_LOWER[0], topo.LEFT_EYE_LOWER[0])  # 33, 263


def polygon_area(points: np.ndarray) -> np.ndarray:
    """Shoelace area of [..., K, 2] closed polygons."""
    x, y = points[..., 0], points[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=-1) - y * np.roll(x, -1, axis=-1), axis=-1))


def eye_area(landmarks: np.ndarray) -> np.ndarray:
    """[N] summed eye-polygon area over the squared outer-corner distance, from [N, 478, 2+] landmarks
    (NaN where the landmarks are missing).

    Only the eye points are read, so ``landmarks`` may be a memory-mapped file of any length.
    """
    needed = np.concatenate([RIGHT_EYE_POLYGON, LEFT_EYE_POLYGON, OUTER_CORNERS])
    points = np.asarray(landmarks[:, needed, :2], dtype=np.float64)
    right = points[:, : len(RIGHT_EYE_POLYGON)]
    left = points[:, len(RIGHT_EYE_POLYGON) : len(RIGHT_EYE_POLYGON) + len(LEFT_EYE_POLYGON)]
    corners = points[:, -2] - points[:, -1]
    area = polygon_area(right) + polygon_area(left)
    scale = np.sum(corners ** 2, axis=-1)
    # Zero-filled landmarks (a frame without a face) have no eye width: NaN, not a closed eye.
    return np.where(scale > 1e-6, area / np.maximum(scale, 1e-6), np.nan)


def eye_openness(landmarks: np.ndarray, valid: np.ndarray | None = None,
                 open_percentile: float = 95.0) -> np.ndarray:
    """[N] float32 open-eye area ratio (see the module docstring).

    Frames marked invalid in ``valid`` (e.g. the landmarks stage's
    ``usable.npy``: recordings without a face) or whose landmarks are not
    finite take the value interpolated linearly from the nearest valid frames.
    """
    if landmarks.ndim != 3 or landmarks.shape[1] != 478 or landmarks.shape[2] < 2:
        raise ValueError(f"eye_openness needs [N, 478, 2+] FaceMesh landmarks, got {landmarks.shape}")
    area = eye_area(landmarks)
    usable = np.isfinite(area)
    if valid is not None:
        usable &= np.asarray(valid, dtype=bool)
    if not usable.any():
        raise ValueError("eye_openness: no frame has usable landmarks; re-run the landmarks stage")
    frames = np.arange(len(area))
    area = np.interp(frames, frames[usable], area[usable])
    reference = np.percentile(area[usable], open_percentile)
    return (area / max(reference, 1e-9)).astype(np.float32)
