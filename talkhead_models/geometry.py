"""Closed-form point-set alignment shared by the face model, the tracker, the canonical face frame and the
identity metric.

:func:`fit_similarity` is Umeyama's least-squares similarity (S. Umeyama, "Least-squares estimation of
transformation parameters between two point patterns", IEEE PAMI 13(4), 1991), batched over any leading
axes, with optional per-point weights. Reflections are never returned: a mirrored face is not a head pose.
:func:`mean_rotation` is the chordal L2 mean of rotation matrices (scipy's ``Rotation.mean``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class Similarity:
    """Similarity transforms ``x -> scale * R x + t`` (column vectors), batched over the leading axes ``...``."""

    scale: np.ndarray
    """[...]"""
    rotation: np.ndarray
    """[..., D, D] proper rotations (determinant +1)."""
    translation: np.ndarray
    """[..., D]"""

    def apply(self, points: np.ndarray) -> np.ndarray:
        """[..., P, D] points -> the target frame."""
        return (self.scale[..., None, None] * points @ np.swapaxes(self.rotation, -1, -2)
                + self.translation[..., None, :])

    def invert(self, points: np.ndarray) -> np.ndarray:
        """[..., P, D] target-frame points -> the source frame."""
        return (points - self.translation[..., None, :]) @ self.rotation / self.scale[..., None, None]

    def matrix(self) -> np.ndarray:
        """[..., D, D + 1] the affine matrix ``[scale * R | t]`` (what cv2.warpAffine and friends take)."""
        return np.concatenate([self.scale[..., None, None] * self.rotation, self.translation[..., None]], axis=-1)


def fit_similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> Similarity:
    """The similarity minimising ``sum_p w_p ||target_p - (scale * R source_p + t)||^2``, per batch item.

    ``source`` and ``target`` are [..., P, D] point sets whose leading axes broadcast against each other (one
    reference shape against a batch of frames is [P, D] with [N, P, D]); ``weights`` is [P] or [..., P],
    non-negative, any scale (None: all points alike). Computed in the inputs' floating precision (float32 stays
    float32). A source whose points all coincide has no scale: the result is then inf or NaN.
    """
    source = np.asarray(source)
    target = np.asarray(target)
    dtype = np.result_type(source.dtype, target.dtype, np.float32)
    source = source.astype(dtype, copy=False)
    target = target.astype(dtype, copy=False)
    if source.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"source points {source.shape} and target points {target.shape} differ in [P, D]")
    n_points = source.shape[-2]
    if weights is None:
        weights = np.full(n_points, 1.0 / n_points, dtype)
    else:
        weights = np.asarray(weights, dtype)
        if weights.shape[-1] != n_points:
            raise ValueError(f"weights {weights.shape} for {n_points} points")
        weights = weights / weights.sum(axis=-1, keepdims=True)
    source_mean = np.einsum("...p,...pi->...i", weights, source)
    target_mean = np.einsum("...p,...pi->...i", weights, target)
    source_centred = source - source_mean[..., None, :]
    target_centred = target - target_mean[..., None, :]
    covariance = np.einsum("...p,...pi,...pj->...ij", weights, target_centred, source_centred)
    u, singular, vt = np.linalg.svd(covariance)
    # The last singular direction flips when the best orthogonal map is a reflection (Umeyama's S matrix).
    correction = np.ones_like(singular)
    correction[..., -1] = np.where(np.linalg.det(u) * np.linalg.det(vt) < 0, -1.0, 1.0)
    rotation = u @ (correction[..., :, None] * vt)
    source_variance = np.einsum("...p,...pi->...", weights, source_centred ** 2)
    scale = (singular * correction).sum(axis=-1) / source_variance
    translation = target_mean - scale[..., None] * np.einsum("...ij,...j->...i", rotation, source_mean)
    return Similarity(scale, rotation, translation)


def mean_rotation(rotations: np.ndarray) -> np.ndarray:
    """[3, 3] chordal L2 mean of [N, 3, 3] rotation matrices: the rotation nearest their arithmetic mean."""
    return Rotation.from_matrix(np.asarray(rotations, np.float64)).mean().as_matrix()
