"""The canonical face frame removes head pose and keeps the face's own motion."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from talkhead_models.pretrained.canonical import (
    MOUTH, RIGID_ANCHORS, canonical_landmarks, fit_similarity, neutral_shape,
)


def _face(rng: np.random.Generator) -> np.ndarray:
    """A 68x3 point cloud in pixels, about the size of a face in a 256 px frame."""
    return rng.normal(scale=40.0, size=(68, 3)) + np.array([128.0, 128.0, 0.0])


def _posed(shapes: np.ndarray, rotations: Rotation, scales: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shapes ([68, 3] or [N, 68, 3]) rotated about their first frame's centroid, scaled and shifted per frame."""
    shapes = np.broadcast_to(shapes, (len(scales), 68, 3))
    centred = shapes - shapes[0].mean(axis=0)
    return scales[:, None, None] * np.einsum("nij,nkj->nki", rotations.as_matrix(), centred) + shifts[:, None]


def test_canonicalisation_removes_a_known_pose_and_keeps_the_mouth_motion():
    rng = np.random.default_rng(0)
    rest = _face(rng)
    reference = neutral_shape(rest[None]).shape
    frames = 12
    mouth_motion = np.zeros((frames, 68, 3))
    mouth_motion[:, MOUTH, 1] = np.linspace(0, 8, frames)[:, None]  # the jaw opens 8 px (before scaling)
    rotations = Rotation.from_euler("yxz", rng.uniform(-20, 20, size=(frames, 3)), degrees=True)
    scales = rng.uniform(0.7, 1.4, frames)
    posed = _posed(rest + mouth_motion, rotations, scales, rng.uniform(-30, 30, size=(frames, 3)))

    canonical = canonical_landmarks(posed, reference)

    # The rigid points land on the reference whatever the pose; the mouth keeps its opening, in reference units.
    np.testing.assert_allclose(canonical[:, RIGID_ANCHORS], np.broadcast_to(reference[RIGID_ANCHORS],
                                                                             (frames, len(RIGID_ANCHORS), 3)),
                               atol=1e-4)
    unit = np.sqrt(((rest - rest.mean(0)) ** 2).sum(1).mean())  # the reference's radius in rest pixels
    opening = canonical[:, MOUTH, 1].mean(1) - canonical[0, MOUTH, 1].mean()
    np.testing.assert_allclose(opening, np.linspace(0, 8, frames) / unit, atol=1e-4)


def test_similarity_inverts_and_recovers_scale_and_rotation():
    rng = np.random.default_rng(1)
    rest = _face(rng)
    reference = neutral_shape(rest[None]).shape
    rotation = Rotation.from_euler("y", [[30.0]], degrees=True)
    posed = _posed(rest, rotation, np.array([2.0]), np.array([[5.0, -3.0, 1.0]]))
    transform = fit_similarity(posed, reference)
    unit = np.sqrt(((rest - rest.mean(0)) ** 2).sum(1).mean())
    np.testing.assert_allclose(transform.scale, 1 / (2.0 * unit), rtol=1e-6)
    np.testing.assert_allclose(transform.rotation[0], rotation.as_matrix()[0].T, atol=1e-6)
    np.testing.assert_allclose(transform.invert(transform.apply(posed)), posed, atol=1e-9)


def test_neutral_shape_is_the_pose_free_mean_at_unit_radius():
    rng = np.random.default_rng(2)
    rest = _face(rng)
    frames = 30
    rotations = Rotation.from_euler("yxz", rng.uniform(-15, 15, size=(frames, 3)), degrees=True)
    scales = rng.uniform(0.8, 1.2, frames)
    posed = _posed(rest, rotations, scales, rng.uniform(-20, 20, size=(frames, 3)))
    neutral = neutral_shape(posed)
    np.testing.assert_allclose(neutral.shape.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.sqrt((neutral.shape ** 2).sum(1).mean()), 1.0, rtol=1e-5)
    # Same shape as the rest face up to a similarity: aligning one onto the other leaves no residual.
    aligned = canonical_landmarks(rest[None], neutral.shape)[0]
    np.testing.assert_allclose(aligned, neutral.shape, atol=1e-4)
    unit = np.sqrt(((rest - rest.mean(0)) ** 2).sum(1).mean())
    assert abs(neutral.pixels_per_unit - unit * np.mean(scales)) < 0.05 * unit
