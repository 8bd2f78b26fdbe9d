"""Rays, volume rendering against analytic transmittance, occupancy grid marching, patch sampling."""

import math

import pytest
import torch

from talkhead_models.components.occupancy import OccupancyGrid, OccupancyGridConfig, composite_marched
from talkhead_models.components.rays import get_rays, intersect_aabb, sample_patch, sample_pixels
from talkhead_models.components.volume import (
    composite,
    importance_samples,
    interval_widths,
    merge_samples,
    query_field,
    render_hierarchical,
    render_rays,
    sample_importance,
    sample_stratified,
)

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def parallel_rays(offsets_x: torch.Tensor, start_z: float = 3.0):
    """Rays along -z from z = start_z, displaced along x."""
    origins = torch.stack([offsets_x, torch.zeros_like(offsets_x), torch.full_like(offsets_x, start_z)], dim=-1)
    directions = torch.tensor([0.0, 0.0, -1.0]).expand_as(origins).contiguous()
    return origins, directions


def slab_field(density: float, colour: tuple[float, float, float], half_thickness: float = 0.5):
    def field(positions, directions):
        inside = positions[..., 2].abs() < half_thickness
        densities = torch.where(inside, torch.full_like(positions[..., 2], density), torch.zeros_like(positions[..., 2]))
        return densities, torch.tensor(colour).expand(positions.shape[:-1] + (3,))

    return field


def sphere_field(density: float, radius: float, centre=(0.0, 0.0, 0.0)):
    centre = torch.tensor(centre)

    def field(positions, directions):
        inside = (positions - centre).norm(dim=-1) < radius
        densities = inside.to(positions.dtype) * density
        return densities, torch.ones(positions.shape[:-1] + (3,), dtype=positions.dtype)

    return field


def test_rays_follow_the_opengl_camera_convention():
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([0.1, 0.2, 3.0])
    height, width, focal = 5, 7, 4.0
    rays = get_rays(c2w, focal, cx=3.5, cy=2.5, height=height, width=width)
    directions = rays.directions.reshape(height, width, 3)
    torch.testing.assert_close(directions[2, 3], torch.tensor([0.0, 0.0, -1.0]))  # centre pixel looks down -z
    assert directions[2, 6, 0] > 0 and directions[0, 3, 1] > 0 and directions[4, 3, 1] < 0  # right is +x, up is +y
    expected = torch.tensor([(6 + 0.5 - 3.5) / focal, 0.0, -1.0])
    torch.testing.assert_close(directions[2, 6], expected / expected.norm())
    assert torch.equal(rays.origins[0], c2w[:3, 3])
    rotated = c2w.clone()
    rotated[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # camera turned to look down -x
    turned = get_rays(rotated, focal, 3.5, 2.5, height, width, pixel_indices=torch.tensor([2 * width + 3]))
    torch.testing.assert_close(turned.directions[0], torch.tensor([-1.0, 0.0, 0.0]))


def test_aabb_intersection():
    origins, directions = parallel_rays(torch.tensor([0.0, 0.5, 1.5]))
    near, far, hit = intersect_aabb(origins, directions, AABB)
    assert hit.tolist() == [True, True, False]
    torch.testing.assert_close(near[:2], torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(far[:2], torch.tensor([4.0, 4.0]))
    assert near[2] == far[2]


def test_constant_density_slab_gives_analytic_transmittance():
    density, background = 1.7, torch.tensor([0.0, 0.0, 1.0])
    origins, directions = parallel_rays(torch.tensor([0.0, 0.3]))
    near, far, _ = intersect_aabb(origins, directions, AABB)
    # 64 bins over [2, 4]: the slab z in [-0.5, 0.5] is t in [2.5, 3.5], exactly bins 16..47.
    t_values, deltas = sample_stratified(near, far, 64)
    result = render_rays(slab_field(density, (1.0, 0.0, 0.0)), origins, directions, t_values, deltas, background)
    transmittance = math.exp(-density * 1.0)
    torch.testing.assert_close(result.opacity, torch.full((2,), 1 - transmittance))
    torch.testing.assert_close(result.color, torch.tensor([1 - transmittance, 0.0, transmittance]).expand(2, 3))
    torch.testing.assert_close(deltas.sum(-1), far - near)


def test_sphere_gives_analytic_transmittance():
    density, radius = 2.0, 0.8
    offsets = torch.linspace(0.0, 0.75, 6)
    origins, directions = parallel_rays(offsets)
    near, far, _ = intersect_aabb(origins, directions, AABB)
    t_values, deltas = sample_stratified(near, far, 4096)
    result = render_rays(sphere_field(density, radius), origins, directions, t_values, deltas)
    chord = 2 * torch.sqrt(radius**2 - offsets**2)
    torch.testing.assert_close(1 - result.opacity, torch.exp(-density * chord), atol=2e-3, rtol=0)


def test_importance_sampling_concentrates_on_the_surface():
    origins, directions = parallel_rays(torch.tensor([0.0]))
    near, far, _ = intersect_aabb(origins, directions, AABB)
    thin_slab = slab_field(50.0, (1.0, 1.0, 1.0), half_thickness=0.05)
    t_coarse, deltas = sample_stratified(near, far, 64)
    coarse = render_rays(thin_slab, origins, directions, t_coarse, deltas)
    t_all, deltas_all = sample_importance(t_coarse, coarse.weights, near, far, 128)
    fine_near_slab = ((t_all - 3.0).abs() < 0.1).sum()
    assert fine_near_slab >= 100  # most of the 128 new samples; uniform sampling would put ~13 there
    assert torch.all(t_all[:, 1:] >= t_all[:, :-1])
    torch.testing.assert_close(deltas_all.sum(-1), far - near)


def test_hierarchical_rendering_of_a_slab():
    origins, directions = parallel_rays(torch.tensor([0.0, -0.4]))
    near, far, _ = intersect_aabb(origins, directions, AABB)
    field = slab_field(1.0, (0.2, 0.4, 0.6))
    coarse, fine = render_hierarchical(field, field, origins, directions, near, far, 32, 64, perturb=True,
                                       generator=torch.Generator().manual_seed(0))
    expected = 1 - math.exp(-1.0)
    assert fine.weights.shape == (2, 96)
    torch.testing.assert_close(fine.opacity, torch.full((2,), expected), atol=0.03, rtol=0)
    torch.testing.assert_close(coarse.opacity, torch.full((2,), expected), atol=0.05, rtol=0)


def make_rays(count: int = 64):
    generator = torch.Generator().manual_seed(0)
    offsets = torch.rand(count, 2, generator=generator) * 1.6 - 0.8
    origins = torch.cat([offsets, torch.full((count, 1), 3.0)], dim=-1)
    directions = torch.tensor([0.0, 0.0, -1.0]).expand(count, 3).contiguous()
    near, far, _ = intersect_aabb(origins, directions, AABB)
    return origins, directions, near, far


def test_merging_the_fine_samples_equals_querying_every_sample_again():
    """S3D-NeRF's one-network fine pass queries only the new samples; the image and the gradients must be those of
    querying the field again at every merged sample (sample_importance + render_rays, AD-NeRF's two passes)."""
    torch.manual_seed(0)
    weight = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)

    def field(positions, directions):
        # a smooth blob whose density and colour both depend on the parameter
        density = torch.nn.functional.softplus(8.0 - 6.0 * positions.square().sum(-1) + positions @ weight)
        return density, torch.sigmoid(positions * weight)

    origins, directions = parallel_rays(torch.linspace(-0.8, 0.8, 9))
    origins[:, 1] = 0.5 * origins[:, 0].flip(0)  # off the y = 0 plane, so every parameter has a gradient
    near, far, _ = intersect_aabb(origins, directions, AABB)
    t_coarse, deltas = sample_stratified(near, far, 6, perturb=True, generator=torch.Generator().manual_seed(1))
    coarse = query_field(field, origins, directions, t_coarse)
    weights = composite(coarse.densities, coarse.colors, deltas, t_coarse).weights
    t_fine = importance_samples(t_coarse, weights, near, far, 5, perturb=True,
                                generator=torch.Generator().manual_seed(2))
    merged = merge_samples(coarse, query_field(field, origins, directions, t_fine))
    reused = composite(merged.densities, merged.colors, interval_widths(merged.t_values, near, far), merged.t_values)
    (grad_reused,) = torch.autograd.grad(reused.color.sum() + reused.depth.sum(), weight)

    t_all, deltas_all = sample_importance(t_coarse, weights, near, far, 5, perturb=True,
                                          generator=torch.Generator().manual_seed(2))
    again = render_rays(field, origins, directions, t_all, deltas_all)
    (grad_again,) = torch.autograd.grad(again.color.sum() + again.depth.sum(), weight)
    assert torch.equal(merged.t_values, t_all)
    assert (t_all.diff(dim=-1) >= 0).all() and t_all.shape == (9, 11)
    torch.testing.assert_close(reused.color, again.color, rtol=0, atol=1e-6)
    torch.testing.assert_close(reused.weights, again.weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_reused, grad_again, rtol=1e-5, atol=1e-6)
    assert grad_again.abs().min() > 1e-3  # the comparison is not between two zeros


def test_empty_occupancy_grid_marches_no_samples():
    grid = OccupancyGrid(AABB, OccupancyGridConfig(resolution=16))
    grid.update(lambda points, condition: torch.zeros(points.shape[0]), conditions=[None])
    origins, directions, near, far = make_rays()
    samples = grid.march(origins, directions, near, far, num_steps=32)
    assert samples.ray_indices.numel() == 0
    background = torch.tensor([0.1, 0.2, 0.3])
    result = composite_marched(samples, torch.zeros(0), torch.zeros(0, 3), background)
    torch.testing.assert_close(result.color, background.expand(64, 3))


def test_full_occupancy_grid_renders_the_dense_image():
    grid = OccupancyGrid(AABB, OccupancyGridConfig(resolution=16))
    grid.update(lambda points, condition: torch.full((points.shape[0],), 100.0), conditions=[None])
    assert grid.occupancy_ratio == 1.0
    origins, directions, near, far = make_rays()
    field = sphere_field(3.0, 0.7)
    samples = grid.march(origins, directions, near, far, num_steps=48)
    assert samples.ray_indices.numel() == 64 * 48
    densities, colours = field(samples.positions, samples.directions)
    marched = composite_marched(samples, densities, colours, torch.tensor([0.5, 0.5, 0.5]))
    t_values, deltas = sample_stratified(near, far, 48)
    dense = render_rays(field, origins, directions, t_values, deltas, torch.tensor([0.5, 0.5, 0.5]))
    torch.testing.assert_close(marched.color, dense.color)
    torch.testing.assert_close(marched.depth, dense.depth)


def test_occupancy_keeps_the_maximum_over_conditions():
    grid = OccupancyGrid(AABB, OccupancyGridConfig(resolution=8))
    centres = {"open_mouth": torch.tensor([0.5, 0.5, 0.5]), "closed_mouth": torch.tensor([-0.5, -0.5, -0.5])}

    def density(points, condition):
        return ((points - centres[condition]).norm(dim=-1) < 0.3).float() * 20.0

    generator = torch.Generator().manual_seed(0)
    grid.update(density, conditions=list(centres), generator=generator)
    cells, _ = grid.cell_of(torch.stack(list(centres.values()) + [torch.tensor([0.5, -0.5, 0.0])]))
    assert grid.occupied[cells].tolist() == [True, True, False]
    # A later update that sees only one condition keeps the other's cells (decayed maximum).
    grid.update(density, conditions=["open_mouth"], generator=generator)
    assert grid.occupied[cells].tolist() == [True, True, False]


def test_occupancy_grid_skips_empty_space_and_keeps_the_image():
    field = sphere_field(5.0, 0.5)
    grid = OccupancyGrid(AABB, OccupancyGridConfig(resolution=32))
    generator = torch.Generator().manual_seed(1)
    # One random point per cell and update can miss a cell the sphere only grazes; repeated
    # updates (training does one every few iterations) keep the maximum and find it.
    for _ in range(16):
        grid.update(lambda points, condition: field(points, None)[0], conditions=[None], generator=generator)
    origins, directions, near, far = make_rays(128)
    samples = grid.march(origins, directions, near, far, num_steps=64)
    assert samples.ray_indices.numel() < 0.25 * 128 * 64
    densities, colours = field(samples.positions, samples.directions)
    marched = composite_marched(samples, densities, colours)
    t_values, deltas = sample_stratified(near, far, 64)
    dense = render_rays(field, origins, directions, t_values, deltas)
    torch.testing.assert_close(marched.opacity, dense.opacity, atol=0.02, rtol=0)


def test_patch_sampling_stays_in_the_region_and_the_image():
    generator = torch.Generator().manual_seed(0)
    height, width = 40, 50
    for _ in range(20):
        patch = sample_patch(height, width, 8, region=(10, 20, 30, 35), generator=generator)
        rows, columns = patch // width, patch % width
        assert patch.shape == (64,)
        assert rows.min() >= 20 and rows.max() < 35 and columns.min() >= 10 and columns.max() < 30
        assert torch.equal(rows.reshape(8, 8), rows.reshape(8, 8)[:, :1].expand(8, 8))  # row-major square
    small = sample_patch(height, width, 8, region=(46, 0, 50, 4))  # lips box smaller than the patch, at the corner
    rows, columns = small // width, small % width
    assert rows.min() == 0 and columns.max() == width - 1
    with pytest.raises(ValueError):
        sample_patch(height, width, 41)
    pixels = sample_pixels(height, width, 100, generator)
    assert pixels.unique().numel() == 100 and pixels.max() < height * width


def test_composite_weights_sum_to_opacity():
    densities = torch.rand(4, 10) * 3
    deltas = torch.full((4, 10), 0.1)
    t_values = torch.cumsum(deltas, -1)
    result = composite(densities, torch.rand(4, 10, 3), deltas, t_values)
    torch.testing.assert_close(result.weights.sum(-1), result.opacity)
    torch.testing.assert_close(1 - result.opacity, torch.exp(-(densities * deltas).sum(-1)))
