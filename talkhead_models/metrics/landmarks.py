"""Landmark distances: M-LMD on the mouth (iBUG points 48-67) and F-LMD on the whole face (all 68).

As the talking-head papers compute them: in each frame, each landmark set
(generated and ground truth, restricted to the points in question) is
centred on its own mean, so a global shift of the face does not count; the
distance is the mean Euclidean distance per point in pixels, averaged over
frames. Landmarks come from the same detector on both videos (the
evaluation's: dlib's 68-point shape predictor, or FaceMesh's points mapped
to the 68 where dlib is not installed).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from talkhead_models.face_topology import IBUG_MOUTH
from talkhead_models.metrics.base import MetricValue, as_points

LANDMARK_COUNT = 68
MOUTH = IBUG_MOUTH
FACE = np.arange(LANDMARK_COUNT)


def landmark_distance_per_frame(generated: Tensor | np.ndarray, target: Tensor | np.ndarray,
                                indices: np.ndarray) -> np.ndarray:
    """[B] mean L2 distance per point (pixels) between the mean-centred point subsets ``indices``."""
    generated = as_points(generated, LANDMARK_COUNT, "generated landmarks")[:, indices]
    target = as_points(target, LANDMARK_COUNT, "ground-truth landmarks")[:, indices]
    if generated.shape != target.shape:
        raise ValueError(f"generated landmarks {generated.shape} and ground truth {target.shape} differ in frames")
    generated = generated - generated.mean(axis=1, keepdims=True)
    target = target - target.mean(axis=1, keepdims=True)
    return np.linalg.norm(generated - target, axis=-1).mean(axis=1)


def mouth_lmd(generated: Tensor | np.ndarray, target: Tensor | np.ndarray) -> MetricValue:
    """M-LMD: mouth landmark distance (pixels, lower is better) on points 48-67."""
    per_frame = landmark_distance_per_frame(generated, target, MOUTH)
    return MetricValue("M-LMD", float(per_frame.mean()), unit="px", higher_is_better=False, per_frame=per_frame)


def face_lmd(generated: Tensor | np.ndarray, target: Tensor | np.ndarray) -> MetricValue:
    """F-LMD: face landmark distance (pixels, lower is better) on all 68 points."""
    per_frame = landmark_distance_per_frame(generated, target, FACE)
    return MetricValue("F-LMD", float(per_frame.mean()), unit="px", higher_is_better=False, per_frame=per_frame)
