"""talkhead_models.geometry against independent implementations: skimage's Umeyama, a numerical optimiser."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation
from skimage.transform import SimilarityTransform

from talkhead_models.geometry import Similarity, fit_similarity, mean_rotation


def _posed(rng: np.random.Generator, n_points: int, dim: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """A point set and a noisy similarity image of it (scale 1.7, a random rotation, a shift)."""
    source = rng.normal(size=(n_points, dim)) * 30.0
    if dim == 2:
        angle = rng.uniform(-np.pi, np.pi)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    else:
        rotation = Rotation.random(random_state=rng.integers(1 << 30)).as_matrix()
    target = 1.7 * source @ rotation.T + rng.normal(size=dim) * 50.0 + rng.normal(size=(n_points, dim)) * noise
    return source, target


def _skimage_matrix(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    dim = source.shape[1]
    return SimilarityTransform.from_estimate(source, target).params[:dim]


@pytest.mark.parametrize("dim", [2, 3])
def test_fit_matches_skimage_on_noisy_points(dim):
    rng = np.random.default_rng(dim)
    source, target = _posed(rng, 40, dim, noise=5.0)
    fit = fit_similarity(source, target)
    np.testing.assert_allclose(fit.matrix(), _skimage_matrix(source, target), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(fit.rotation), 1.0, atol=1e-12)


def test_integer_weights_equal_repeated_points():
    """A weight of k counts a point k times; a weight of 0 leaves it out (checked with skimage on the
    repeated / reduced point set)."""
    rng = np.random.default_rng(0)
    source, target = _posed(rng, 25, 3, noise=8.0)
    weights = rng.integers(0, 4, size=25)
    weights[:3] = (0, 1, 3)
    fit = fit_similarity(source, target, weights)
    repeated = np.repeat(np.arange(25), weights)
    np.testing.assert_allclose(fit.matrix(), _skimage_matrix(source[repeated], target[repeated]),
                               rtol=1e-9, atol=1e-9)
    # Only relative weights matter.
    np.testing.assert_allclose(fit_similarity(source, target, 0.1 * weights).matrix(), fit.matrix(), rtol=1e-12)


def test_weighted_fit_is_the_least_squares_optimum():
    """A generic optimiser over (log scale, rotation vector, translation) finds the same transform."""
    rng = np.random.default_rng(1)
    source, target = _posed(rng, 30, 3, noise=10.0)
    weights = rng.uniform(0.0, 2.0, size=30)

    def residuals(params: np.ndarray) -> np.ndarray:
        moved = np.exp(params[0]) * Rotation.from_rotvec(params[1:4]).apply(source) + params[4:]
        return (np.sqrt(weights)[:, None] * (moved - target)).ravel()

    fit = fit_similarity(source, target, weights)
    start = np.concatenate([[np.log(fit.scale) + 0.2], Rotation.from_matrix(fit.rotation).as_rotvec() + 0.1,
                            fit.translation + 5.0])
    best = least_squares(residuals, start, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    np.testing.assert_allclose(np.exp(best.x[0]), fit.scale, rtol=1e-7)
    np.testing.assert_allclose(Rotation.from_rotvec(best.x[1:4]).as_matrix(), fit.rotation, atol=1e-7)
    np.testing.assert_allclose(best.x[4:], fit.translation, rtol=1e-7, atol=1e-6)
    assert (residuals(best.x) ** 2).sum() >= (residuals(np.concatenate(
        [[np.log(fit.scale)], Rotation.from_matrix(fit.rotation).as_rotvec(), fit.translation])) ** 2).sum() - 1e-6


def test_a_mirrored_target_gets_a_rotation_not_a_reflection():
    rng = np.random.default_rng(2)
    source, target = _posed(rng, 30, 3, noise=1.0)
    mirrored = target * np.array([-1.0, 1.0, 1.0])
    fit = fit_similarity(source, mirrored)
    np.testing.assert_allclose(np.linalg.det(fit.rotation), 1.0, atol=1e-12)
    np.testing.assert_allclose(fit.matrix(), _skimage_matrix(source, mirrored), rtol=1e-9, atol=1e-9)
    assert fit.scale > 0


def test_batches_broadcast_like_one_fit_per_item():
    """One reference [P, D] against a batch [N, P, D] (and the reverse) fits each item on its own."""
    rng = np.random.default_rng(3)
    pairs = [_posed(rng, 20, 3, noise=3.0) for _ in range(4)]
    reference = pairs[0][0]
    frames = np.stack([target for _, target in pairs])
    forward = fit_similarity(reference, frames)
    backward = fit_similarity(frames, reference)
    for i, frame in enumerate(frames):
        np.testing.assert_allclose(forward.matrix()[i], _skimage_matrix(reference, frame), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(backward.matrix()[i], _skimage_matrix(frame, reference), rtol=1e-9, atol=1e-9)
    assert forward.rotation.shape == (4, 3, 3) and forward.scale.shape == (4,) and forward.translation.shape == (4, 3)


def test_apply_invert_and_precision():
    rng = np.random.default_rng(4)
    source, target = _posed(rng, 15, 3, noise=0.0)
    fit = fit_similarity(source, target)
    np.testing.assert_allclose(fit.apply(source), target, atol=1e-9)
    np.testing.assert_allclose(fit.invert(target), source, atol=1e-9)
    single = fit_similarity(source.astype(np.float32), target.astype(np.float32))
    assert single.rotation.dtype == np.float32 and single.scale.dtype == np.float32
    np.testing.assert_allclose(single.matrix(), fit.matrix(), rtol=1e-4, atol=1e-3)
    assert isinstance(fit, Similarity)


def test_mismatched_point_sets_are_refused():
    with pytest.raises(ValueError, match="differ"):
        fit_similarity(np.zeros((5, 3)), np.zeros((6, 3)))
    with pytest.raises(ValueError, match="weights"):
        fit_similarity(np.ones((5, 3)), np.ones((5, 3)), np.ones(4))


def test_mean_rotation_of_symmetric_turns_is_their_centre():
    """Turns of +-a about one axis around a base rotation average to the base rotation (hand-computed)."""
    base = Rotation.from_euler("xyz", [0.3, -0.2, 0.5])
    turns = [Rotation.from_rotvec([0.0, 0.0, angle]) for angle in (-0.4, 0.4, -0.1, 0.1)]
    rotations = np.stack([(base * turn).as_matrix() for turn in turns])
    np.testing.assert_allclose(mean_rotation(rotations), base.as_matrix(), atol=1e-12)


def test_mean_rotation_is_the_rotation_nearest_the_arithmetic_mean():
    """The chordal L2 mean: the projection of the element-wise mean onto SO(3) (SVD with det correction)."""
    rotations = Rotation.random(50, random_state=5).as_matrix() @ Rotation.from_rotvec([0.0, 0.0, 2.0]).as_matrix()
    rotations = Rotation.from_rotvec(Rotation.from_matrix(rotations).as_rotvec() * 0.3).as_matrix()
    u, _, vt = np.linalg.svd(rotations.mean(axis=0))
    projected = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    np.testing.assert_allclose(mean_rotation(rotations), projected, atol=1e-9)
