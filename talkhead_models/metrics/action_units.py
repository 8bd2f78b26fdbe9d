"""AUE: action-unit error, with action units estimated from 68-point landmark geometry.

The papers run OpenFace's AU intensity regressors, which are not available
here. This module measures, for a documented set of action units, the
facial displacement each one is defined by (FACS), from the 68 landmarks
after removing position, in-plane rotation and scale: the points are
expressed in a frame whose origin is the midpoint between the eye centres,
whose x axis runs from the subject's right eye centre to the left one, and
whose unit is the distance between the eye centres (the interocular
distance, IOD). Every estimate is a signed distance in percent of the IOD,
oriented so that it grows with the action:

========  ===========================  ==============================================================
AU        name                         estimate (percent of IOD)
========  ===========================  ==============================================================
AU01      inner brow raiser            height of the inner brow ends (21, 22) above the inner eye corners
AU02      outer brow raiser            height of the outer brow points (18, 25) above the outer eye corners
AU04      brow lowerer                 minus the gap between the inner brow ends (21-22)
AU06      cheek raiser                 minus the drop of the lower eyelids (40, 41, 46, 47) below the eye corners
AU12      lip corner puller            mouth width between the corners (48-54)
AU15      lip corner depressor         drop of the mouth corners below the midline of the lip centres (51, 57)
AU25      lips part                    gap between the inner lip centres (62-66)
AU26      jaw drop                     distance from the nose base (33) to the chin (8)
AU45      blink                        minus the eyelid opening (37/38 to 41/40, 43/44 to 47/46)
========  ===========================  ==============================================================

AUE is the mean absolute difference between the estimates of generated and
ground-truth frames, over AUs and frames. Geometric estimates are not
OpenFace's 0-5 intensities, so the value is labelled as a substitute and
is comparable only with other values of this implementation. Out-of-plane
head rotation shortens some distances; generated and ground-truth frames of
the same pose share that bias.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from talkhead_models.metrics.base import MetricValue, as_points, substitute

ACTION_UNITS = ("AU01", "AU02", "AU04", "AU06", "AU12", "AU15", "AU25", "AU26", "AU45")
AU_SUBSTITUTE = substitute("landmark-based AU estimate (OpenFace not available)")

RIGHT_EYE = np.arange(36, 42)
LEFT_EYE = np.arange(42, 48)


def normalise_landmarks(landmarks: Tensor | np.ndarray) -> np.ndarray:
    """[B, 68, 2] pixels -> the eye-aligned frame: origin between the eye centres, x towards the left eye, unit IOD.

    Image y points down, so after the rotation y still grows downwards.
    """
    points = as_points(landmarks, 68)
    right_eye, left_eye = points[:, RIGHT_EYE].mean(axis=1), points[:, LEFT_EYE].mean(axis=1)
    axis = left_eye - right_eye
    iod = np.linalg.norm(axis, axis=-1)
    if np.any(iod <= 0):
        raise ValueError("landmarks with coincident eye centres cannot be normalised (degenerate detection)")
    cos, sin = (axis / iod[:, None]).T
    # Rotate by minus the eye-line angle: [x', y'] = [[c, s], [-s, c]] [x, y].
    rotation = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], axis=1)  # [B, 2, 2]
    centred = points - ((right_eye + left_eye) / 2.0)[:, None]
    return np.einsum("bij,bpj->bpi", rotation, centred) / iod[:, None, None]


def action_unit_estimates(landmarks: Tensor | np.ndarray) -> np.ndarray:
    """[B, 9] estimates in ACTION_UNITS order, in percent of the interocular distance."""
    p = normalise_landmarks(landmarks)
    x, y = p[..., 0], p[..., 1]

    def mean(values: np.ndarray, *indices: int) -> np.ndarray:
        return values[:, list(indices)].mean(axis=1)

    inner_brow_raise = mean(y, 39, 42) - mean(y, 21, 22)
    outer_brow_raise = mean(y, 36, 45) - mean(y, 18, 25)
    brow_gap = x[:, 22] - x[:, 21]
    lower_lid_drop = mean(y, 40, 41, 46, 47) - mean(y, 36, 39, 42, 45)
    mouth_width = np.hypot(x[:, 54] - x[:, 48], y[:, 54] - y[:, 48])
    corner_drop = mean(y, 48, 54) - mean(y, 51, 57)
    lips_gap = y[:, 66] - y[:, 62]
    jaw = np.hypot(x[:, 8] - x[:, 33], y[:, 8] - y[:, 33])
    eye_opening = mean(y, 41, 40, 47, 46) - mean(y, 37, 38, 43, 44)
    estimates = np.stack([inner_brow_raise, outer_brow_raise, -brow_gap, -lower_lid_drop, mouth_width,
                          corner_drop, lips_gap, jaw, -eye_opening], axis=1)
    return 100.0 * estimates


def aue(generated: Tensor | np.ndarray, target: Tensor | np.ndarray) -> MetricValue:
    """Mean absolute difference of the AU estimates (percent of IOD, lower is better); per-AU errors in the note."""
    generated_aus, target_aus = action_unit_estimates(generated), action_unit_estimates(target)
    if generated_aus.shape != target_aus.shape:
        raise ValueError(f"generated landmarks ({len(generated_aus)} frames) and ground truth ({len(target_aus)} "
                         "frames) differ in length")
    errors = np.abs(generated_aus - target_aus)
    per_au = ", ".join(f"{name} {error:.2f}" for name, error in zip(ACTION_UNITS, errors.mean(axis=0)))
    return MetricValue("AUE", float(errors.mean()), unit="% IOD", reference=AU_SUBSTITUTE, higher_is_better=False,
                       note=f"per AU: {per_au}", per_frame=errors.mean(axis=1))
