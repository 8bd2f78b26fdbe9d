"""The solid-head prior: triangulation, the ellipsoid cut by the face, and rays narrowed around its surface."""

import math

import numpy as np
import torch

from talkhead_models.components.head_prior import ShapePrior, triangulate, triangulated_face


def look_at(eye: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world at ``eye`` looking at the origin (y up)."""
    back = eye / np.linalg.norm(eye)
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(back, right), back], axis=1)
    c2w[:3, 3] = eye
    return c2w



def test_triangulation_recovers_the_points_the_cameras_saw():
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.08, 0.08, (20, 3))
    angles = np.radians(rng.uniform(-8, 8, (12, 2)))
    c2w = np.stack([look_at(0.5 * np.array([np.sin(a) * np.cos(b), np.sin(b), np.cos(a) * np.cos(b)]))
                    for a, b in angles])
    focal, cx, cy = 600.0, 128.0, 120.0
    camera = np.einsum("fji,fpj->fpi", c2w[:, :3, :3], points[None] - c2w[:, None, :3, 3])
    pixels = np.stack([-focal * camera[..., 0] / camera[..., 2] + cx, focal * camera[..., 1] / camera[..., 2] + cy],
                      axis=-1)
    np.testing.assert_allclose(triangulate(c2w, pixels, focal, cx, cy), points, atol=1e-8)


def test_shape_prior_is_the_ellipsoid_cut_by_the_face_depth():
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    depth = torch.full((8, 8), float("nan"))
    depth[2:6, 2:6] = 0.2  # a flat face at z = 0.2 over the middle of the box
    prior = ShapePrior(torch.zeros(3), torch.full((3,), 0.9), depth, box)
    points = torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.0, 0.3], [0.0, 0.8, 0.3], [0.0, 0.0, -0.95]])
    assert prior.inside(points).tolist() == [True, False, True, False]
    front = prior.front(points)
    assert torch.allclose(front[:2], torch.tensor([0.2, 0.2]))  # the face, in front of the ellipsoid's 0.9
    assert torch.allclose(front[2], torch.tensor(0.9 * (1 - (0.8 / 0.9) ** 2) ** 0.5))  # the ellipsoid
    assert torch.isinf(ShapePrior(torch.zeros(3), torch.full((3,), 0.5), None, box).front(
        torch.tensor([[0.9, 0.9, 0.0]]))).all()


def test_triangulated_face_uses_only_frames_whose_landmarks_are_all_finite():
    rng = np.random.default_rng(1)
    points = rng.uniform(-0.08, 0.08, (10, 3))
    c2w = np.stack([look_at(0.5 * np.array([np.sin(a), 0.0, np.cos(a)])) for a in np.radians([-6, -2, 3, 7])])
    focal, cx, cy = 500.0, 128.0, 128.0
    camera = np.einsum("fji,fpj->fpi", c2w[:, :3, :3], points[None] - c2w[:, None, :3, 3])
    pixels = np.stack([-focal * camera[..., 0] / camera[..., 2] + cx, focal * camera[..., 1] / camera[..., 2] + cy,
                       np.zeros(camera.shape[:2])], axis=-1)
    pixels[1, 3, 0] = np.nan  # a frame with a lost landmark says nothing
    np.testing.assert_allclose(triangulated_face(c2w, pixels, focal, cx, cy), points, atol=1e-8)
    pixels[2:, 0, 1] = np.inf
    assert triangulated_face(c2w, pixels, focal, cx, cy) is None  # one usable frame cannot triangulate


def test_spanning_prior_puts_the_ellipsoid_behind_the_most_forward_face_point():
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    face = np.array([[-0.3, -0.3, 0.2], [0.3, -0.3, 0.2], [0.0, 0.4, 0.2], [0.0, 0.0, 0.5]])
    prior = ShapePrior.spanning(torch.tensor([-0.8, -0.9, -0.8]), torch.tensor([0.8, 0.9, 0.8]), face, box, 65)
    assert torch.allclose(prior.radii, torch.tensor([0.8, 0.9, 0.8]))
    assert math.isclose(float(prior.centre[2]), 0.5 - 0.8, abs_tol=1e-6)
    # The nose point's own depth at its (x, y); linear between the points inside the outline (to the depth
    # map's cell, 1/32 here); the ellipsoid outside it.
    assert math.isclose(float(prior.front(torch.tensor([[0.0, 0.0, 0.0]]))[0]), 0.5, abs_tol=1e-6)
    assert math.isclose(float(prior.front(torch.tensor([[0.0, -0.15, 0.0]]))[0]), 0.35, abs_tol=0.01)
    assert math.isclose(float(prior.front(torch.tensor([[0.0, -0.6, 0.0]]))[0]),
                        -0.3 + 0.8 * math.sqrt(1 - (0.6 / 0.9) ** 2), abs_tol=1e-6)
    bare = ShapePrior.spanning(torch.tensor([-0.8, -0.9, -0.8]), torch.tensor([0.8, 0.9, 0.8]), None, box, 65)
    assert bare.depth is None and torch.allclose(bare.centre, torch.zeros(3))


def brute_force_crossing(prior: ShapePrior, origin: torch.Tensor, direction: torch.Tensor, near: float,
                         far: float) -> float | None:
    """The first t in [near, far] where the ray is at or behind the prior's front, by a 20,000-step march."""
    t = torch.linspace(near, far, 20_000)
    points = origin[None] + t[:, None] * direction[None]
    front = prior.front(points)
    behind = torch.isfinite(front) & (points[:, 2] <= front)
    return float(t[behind.nonzero()[0, 0]]) if behind.any() else None


def test_surface_bounds_are_a_band_around_where_the_ray_meets_the_front():
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    # A smooth face: a dome of depth 0.45 - 0.4 r^2 over the disc r < 0.6, inside an ellipsoid of radius 0.8.
    xs = torch.linspace(-1.0, 1.0, 201)
    grid_y, grid_x = torch.meshgrid(xs, xs, indexing="ij")
    radius2 = grid_x ** 2 + grid_y ** 2
    depth = torch.where(radius2 < 0.36, 0.45 - 0.4 * radius2, torch.full_like(radius2, float("nan")))
    prior = ShapePrior(torch.tensor([0.0, 0.0, -0.3]), torch.tensor([0.8, 0.8, 0.8]), depth, box)
    generator = torch.Generator().manual_seed(0)
    count = 200
    # Cameras 3 units away within 15 degrees of frontal, rays through points of the head's front.
    angle = torch.deg2rad(torch.rand(count, 2, generator=generator) * 30 - 15)
    origins = 3.0 * torch.stack([torch.sin(angle[:, 0]) * torch.cos(angle[:, 1]), torch.sin(angle[:, 1]),
                                 torch.cos(angle[:, 0]) * torch.cos(angle[:, 1])], -1)
    targets = torch.rand(count, 3, generator=generator) * torch.tensor([1.6, 1.6, 0.2]) - torch.tensor([0.8, 0.8, 0])
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    near = torch.full((count,), 1.5)
    far = torch.full((count,), 4.5)
    before, behind = 0.1, 0.25
    narrow_near, narrow_far = prior.surface_bounds(origins, directions, near, far, before, behind)
    checked = 0
    for i in range(count):
        crossing = brute_force_crossing(prior, origins[i], directions[i], 1.5, 4.5)
        if crossing is None:  # the ray passes outside the solid: the box's bounds stay
            assert float(narrow_near[i]) == 1.5 and float(narrow_far[i]) == 4.5
            continue
        checked += 1
        assert abs(float(narrow_near[i]) - max(1.5, crossing - before)) < 0.01, i
        assert abs(float(narrow_far[i]) - min(4.5, crossing + behind)) < 0.01, i
    assert checked > count // 2


def test_meets_ellipsoid_agrees_with_a_dense_march_of_the_grown_ellipsoid():
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    prior = ShapePrior(torch.tensor([0.1, -0.05, -0.2]), torch.tensor([0.5, 0.7, 0.4]), None, box)
    generator = torch.Generator().manual_seed(1)
    count = 400
    origins = torch.tensor([0.0, 0.0, 3.0]) + 0.3 * torch.randn(count, 3, generator=generator)
    targets = torch.rand(count, 3, generator=generator) * 2.4 - 1.2
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    # Half the rays point away from the head: a sphere behind the origin is not met.
    directions[::2] = -directions[::2]
    t = torch.linspace(0.0, 6.0, 20_000)
    for grow in (1.0, 1.2):
        met = prior.meets_ellipsoid(origins, directions, grow)
        points = origins[:, None] + t[None, :, None] * directions[:, None]
        inside = ((((points - prior.centre) / (prior.radii * grow)) ** 2).sum(-1) <= 1.0).any(-1)
        assert met.tolist() == inside.tolist(), grow
        assert 0 < int(met.sum()) < count // 2
