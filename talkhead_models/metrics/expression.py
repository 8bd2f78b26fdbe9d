"""Exp-Diff: how far the expression of generated frames is from the driving frames' expression.

Both videos go through the same expression tracker (our tracking stage's
expression coefficients); Exp-Diff is the mean squared difference of the
coefficient arrays over frames and coefficients, lower is better.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from talkhead_models.metrics.base import MetricValue


def exp_diff(generated: Tensor | np.ndarray, driving: Tensor | np.ndarray) -> MetricValue:
    """MSE between [B, K] expression coefficients of generated and driving frames."""
    generated = _coefficients(generated, "generated")
    driving = _coefficients(driving, "driving")
    if generated.shape != driving.shape:
        raise ValueError(f"generated expression coefficients {generated.shape} and driving ones {driving.shape} "
                         "differ in shape (same tracker, same frames expected)")
    per_frame = ((generated - driving) ** 2).mean(axis=1)
    return MetricValue("Exp-Diff", float(per_frame.mean()), higher_is_better=False, per_frame=per_frame)


def _coefficients(values: Tensor | np.ndarray, what: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{what} expression coefficients must be [frames, coefficients], got {array.shape}")
    return array.astype(np.float64)
