"""Gaussian rasteriser against gsplat's pure-torch reference and a float64 brute-force renderer."""

import pytest
import torch
from gsplat.cuda._torch_impl import (
    _fully_fused_projection,
    _isect_tiles,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
)

from talkhead_models.components.gaussians import (
    RasterSettings,
    covariance_from_scale_rotation,
    gsplat_available,
    intersect_tiles,
    opengl_c2w_to_viewmat,
    project_gaussians,
    rasterize_gaussians,
    resolve_raster_backend,
    sh_to_color,
)
from talkhead_models.components.rays import get_rays

WIDTH, HEIGHT = 40, 28


def make_scene(count: int, dtype=torch.float64, seed: int = 0):
    """Gaussians in front of a camera at z = -4 looking down +z, a few behind it or off-screen."""
    generator = torch.Generator().manual_seed(seed)
    means = (torch.rand(count, 3, generator=generator) * 2 - 1).to(dtype)
    means[:2, 2] = -5.0  # behind the camera
    means[2, 0] = 30.0  # far outside the field of view
    quats = torch.randn(count, 4, generator=generator).to(dtype)
    scales = (torch.rand(count, 3, generator=generator) * 0.3 + 0.06).to(dtype)  # anisotropic
    opacities = (torch.rand(count, generator=generator) * 0.45 + 0.55).to(dtype)
    opacities[3:8] = 1.0  # alpha clamped at 0.999 near their centres
    colours = torch.rand(count, 3, generator=generator).to(dtype)
    viewmat = torch.eye(4, dtype=dtype)
    viewmat[2, 3] = 4.0
    intrinsics = torch.tensor([[60.0, 0, WIDTH / 2], [0, 60.0, HEIGHT / 2], [0, 0, 1]], dtype=dtype)
    return means, quats, scales, opacities, colours, viewmat, intrinsics


def bruteforce_render(means, quats, scales, opacities, colours, viewmat, intrinsics, background):
    """Every Gaussian at every pixel in depth order, with gsplat's alpha rules, projected by gsplat's reference."""
    covariances, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    _, means2d, depths, conics, _ = _fully_fused_projection(means, covariances, viewmat[None], intrinsics[None], WIDTH, HEIGHT)
    means2d, depths, conics = means2d[0], depths[0], conics[0]
    order = torch.argsort(depths)
    rows, columns = torch.meshgrid(torch.arange(HEIGHT) + 0.5, torch.arange(WIDTH) + 0.5, indexing="ij")
    pixels = torch.stack([columns, rows], dim=-1).reshape(-1, 1, 2).to(means.dtype)
    delta = means2d[order][None] - pixels  # [P, N, 2]
    conic = conics[order]
    quadratic = 0.5 * (conic[:, 0] * delta[..., 0] ** 2 + conic[:, 2] * delta[..., 1] ** 2) + conic[:, 1] * delta[..., 0] * delta[..., 1]
    raw = opacities[order] * torch.exp(-quadratic)
    counted = (quadratic >= 0) & (raw >= 1 / 255) & (depths[order] > 0.01)
    alpha = torch.where(counted, raw.clamp(max=0.999), torch.zeros_like(raw))
    # A pixel stops at the first Gaussian that would take its transmittance to 1e-4 or below.
    alive = torch.cumprod((torch.cumprod(1 - alpha, dim=1) > 1e-4).to(alpha.dtype), dim=1)
    alpha = alpha * alive
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], dim=1), dim=1)
    weights = transmittance * alpha
    opacity = weights.sum(1, keepdim=True)
    image = weights @ colours[order] + (1 - opacity) * background
    return image.reshape(HEIGHT, WIDTH, -1), opacity.reshape(HEIGHT, WIDTH, 1)


SMALL_TILES = RasterSettings(torch_tile_size=8, chunk_size=4)  # many tiles and chunks on a tiny image


def test_covariance_matches_gsplat():
    means, quats, scales, *_ = make_scene(30)
    expected, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    torch.testing.assert_close(covariance_from_scale_rotation(quats, scales), expected)


def test_projection_matches_gsplat():
    means, quats, scales, _, _, viewmat, intrinsics = make_scene(50)
    covariances = covariance_from_scale_rotation(quats, scales)
    projected = project_gaussians(means, covariances, viewmat, intrinsics, WIDTH, HEIGHT)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covariances, viewmat[None], intrinsics[None], WIDTH, HEIGHT)
    visible = (radii[0] > 0).all(-1)
    assert torch.equal(projected.radii, radii[0])
    assert 0 < visible.sum() < 50 and not visible[:3].any()
    torch.testing.assert_close(projected.means2d[visible], means2d[0][visible])
    torch.testing.assert_close(projected.conics[visible], conics[0][visible])
    torch.testing.assert_close(projected.depths, depths[0])


def test_opacity_aware_radius_bounds_the_visible_footprint():
    means, quats, scales, opacities, _, viewmat, intrinsics = make_scene(50)
    covariances = covariance_from_scale_rotation(quats, scales)
    plain = project_gaussians(means, covariances, viewmat, intrinsics, WIDTH, HEIGHT)
    tight = project_gaussians(means, covariances, viewmat, intrinsics, WIDTH, HEIGHT, opacities=opacities)
    assert torch.all(tight.radii <= plain.radii) and torch.any(tight.radii < plain.radii)
    # At the bounding box edge along x (other axis at the centre) alpha is already below 1/255.
    visible = (tight.radii > 0).all(-1)
    edge_quadratic = 0.5 * tight.conics[visible, 0] * tight.radii[visible, 0].double() ** 2
    assert torch.all(opacities[visible] * torch.exp(-edge_quadratic) <= 1 / 255 + 1e-9)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spherical_harmonics_match_gsplat(degree):
    generator = torch.Generator().manual_seed(degree)
    directions = torch.randn(20, 3, generator=generator, dtype=torch.float64)
    coefficients = torch.randn(20, 16, 3, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(sh_to_color(degree, directions, coefficients), _spherical_harmonics(degree, directions, coefficients))


def test_tile_intersections_match_gsplat():
    means, quats, scales, _, _, viewmat, intrinsics = make_scene(40, dtype=torch.float32)
    covariances = covariance_from_scale_rotation(quats, scales)
    radii, means2d, depths, _, _ = _fully_fused_projection(means, covariances, viewmat[None], intrinsics[None], WIDTH, HEIGHT)
    tile_size, tiles_x, tiles_y = 8, 5, 4
    expected_counts, expected_ids, expected_flatten = _isect_tiles(means2d[0], radii[0], depths[0], tile_size, tiles_x, tiles_y)
    ours = intersect_tiles(means2d[0], radii[0], depths[0], tile_size, tiles_x, tiles_y)
    assert expected_ids.numel() > 40
    assert torch.equal(ours.tiles_per_gaussian, expected_counts)
    assert torch.equal(ours.isect_ids, expected_ids)
    assert torch.equal(ours.gaussian_ids, expected_flatten.long())
    assert ours.tile_offsets[-1] == expected_ids.numel()


def test_image_matches_float64_bruteforce():
    scene = make_scene(80)
    background = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)
    expected_image, expected_alpha = bruteforce_render(*scene, background)
    assert (expected_alpha > 1 - 1e-3).sum() > 20  # pixels that stop at the transmittance cut-off
    single = [tensor.float() for tensor in scene]
    output = rasterize_gaussians(*single[:5], single[5], single[6], WIDTH, HEIGHT, background=background.float(),
                                 settings=SMALL_TILES, backend="torch")
    assert output.image.shape == (HEIGHT, WIDTH, 3) and output.alpha.shape == (HEIGHT, WIDTH, 1)
    torch.testing.assert_close(output.image.double(), expected_image, atol=1e-4, rtol=0)
    torch.testing.assert_close(output.alpha.double(), expected_alpha, atol=1e-4, rtol=0)
    default_tiles = rasterize_gaussians(*single[:5], single[5], single[6], WIDTH, HEIGHT, background=background.float(), backend="torch")
    torch.testing.assert_close(default_tiles.image, output.image, atol=1e-6, rtol=0)


def test_gradients_match_bruteforce_autograd():
    means, quats, scales, opacities, colours, viewmat, intrinsics = make_scene(80)
    background = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)
    ours = [tensor.clone().requires_grad_(True) for tensor in (means, quats, scales, opacities, colours)]
    reference = [tensor.clone().requires_grad_(True) for tensor in (means, quats, scales, opacities, colours)]
    output = rasterize_gaussians(*ours, viewmat, intrinsics, WIDTH, HEIGHT, background=background, settings=SMALL_TILES, backend="torch")
    expected_image, expected_alpha = bruteforce_render(*reference, viewmat, intrinsics, background)
    generator = torch.Generator().manual_seed(5)
    image_weights = torch.randn(HEIGHT, WIDTH, 3, generator=generator, dtype=torch.float64)
    alpha_weights = torch.randn(HEIGHT, WIDTH, 1, generator=generator, dtype=torch.float64)
    ((output.image * image_weights).sum() + (output.alpha * alpha_weights).sum()).backward()
    ((expected_image * image_weights).sum() + (expected_alpha * alpha_weights).sum()).backward()
    for name, mine, theirs in zip(["means", "quats", "scales", "opacities", "colours"], ours, reference):
        assert mine.grad[8:].abs().sum() > 0, f"no gradient reaches {name}"
        torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-8, rtol=1e-6, msg=f"gradient of {name}")


def test_sh_colours_and_their_gradients():
    means, quats, scales, opacities, _, viewmat, intrinsics = make_scene(40)
    coefficients = (torch.randn(40, 16, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.3).requires_grad_(True)
    output = rasterize_gaussians(means, quats, scales, opacities, coefficients, viewmat, intrinsics, WIDTH, HEIGHT,
                                 sh_degree=3, settings=SMALL_TILES, backend="torch")
    camera_centre = torch.tensor([0.0, 0.0, -4.0], dtype=torch.float64)
    colours = torch.clamp_min(_spherical_harmonics(3, means - camera_centre, coefficients.detach()) + 0.5, 0.0)
    expected, _ = bruteforce_render(means, quats, scales, opacities, colours, viewmat, intrinsics, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(output.image, expected, atol=1e-8, rtol=0)
    output.image.sum().backward()
    assert coefficients.grad[8:, 15].abs().sum() > 0  # the degree-3 band gets a gradient


def test_opengl_camera_matches_ray_convention():
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.linalg.matrix_exp(torch.tensor([[0.0, -0.3, 0.2], [0.3, 0.0, -0.1], [-0.2, 0.1, 0.0]]))
    c2w[:3, 3] = torch.tensor([0.3, -0.2, 2.5])
    focal, cx, cy = 30.0, 20.0, 14.0
    pixel = torch.tensor([9 * WIDTH + 31])
    ray = get_rays(c2w, focal, cx, cy, HEIGHT, WIDTH, pixel_indices=pixel)
    point = ray.origins[0] + 1.7 * ray.directions[0]
    viewmat = opengl_c2w_to_viewmat(c2w)
    camera_point = viewmat[:3, :3] @ point + viewmat[:3, 3]
    assert camera_point[2] > 0
    projected = torch.tensor([focal * camera_point[0] / camera_point[2] + cx, focal * camera_point[1] / camera_point[2] + cy])
    torch.testing.assert_close(projected, torch.tensor([31.5, 9.5]))


@pytest.mark.skipif(gsplat_available(), reason="gsplat with CUDA is available here")
def test_backend_selection_on_cpu():
    assert resolve_raster_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeError, match="CUDA"):
        resolve_raster_backend("gsplat", torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not gsplat_available(), reason="gsplat's rasteriser needs a CUDA device")
def test_gsplat_backend_matches_torch_backend():
    scene = [tensor.float().cuda() for tensor in make_scene(60)]
    coefficients = torch.randn(60, 16, 3, device="cuda") * 0.3
    background = torch.tensor([0.2, 0.3, 0.4], device="cuda")
    images = {
        backend: rasterize_gaussians(*scene[:4], coefficients, scene[5], scene[6], WIDTH, HEIGHT, sh_degree=3,
                                     background=background, backend=backend)
        for backend in ("torch", "gsplat")
    }
    torch.testing.assert_close(images["torch"].image, images["gsplat"].image, atol=1e-4, rtol=0)
    torch.testing.assert_close(images["torch"].alpha, images["gsplat"].alpha, atol=1e-4, rtol=0)


def test_scene_with_nothing_visible_renders_the_background():
    means, quats, scales, opacities, colours, viewmat, intrinsics = make_scene(10)
    hidden_means = (means - torch.tensor([0.0, 0.0, 10.0], dtype=torch.float64)).requires_grad_(True)  # all behind the camera
    background = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    output = rasterize_gaussians(hidden_means, quats, scales, opacities, colours, viewmat, intrinsics, WIDTH, HEIGHT,
                                 background=background, backend="torch")
    torch.testing.assert_close(output.image, background.expand(HEIGHT, WIDTH, 3))
    assert torch.count_nonzero(output.alpha) == 0
    output.image.sum().backward()
    assert torch.count_nonzero(hidden_means.grad) == 0 and torch.isfinite(hidden_means.grad).all()
