"""Differentiable 3D Gaussian splatting: a tile-based PyTorch rasteriser and the gsplat backend.

The torch backend follows gsplat 1.5's "classic" rasterisation step by step,
so the two backends render the same image from the same parameters:

1. EWA projection: world -> camera with an OpenCV world-to-camera matrix
   (x right, y down, z forward), the local affine Jacobian of the pinhole
   projection, a 0.3 px^2 blur (``eps2d``), and an opacity-aware bounding
   radius beyond which a Gaussian's alpha is below 1/255.
2. Colours from spherical harmonics of degree 0..3 in the view direction,
   offset by 0.5 and clamped at 0 (3D-GS's convention).
3. Tile binning: every Gaussian is listed for each square tile its bounding
   box touches; the list is sorted by (tile, depth).
4. Per tile, front-to-back compositing with alpha = min(0.999, o exp(-q)),
   alphas below 1/255 skipped and a pixel finished when its transmittance
   would fall to 1e-4 or below.

Step 4 is vectorised over tiles: intersections are processed in chunks of
``chunk_size`` Gaussians per tile, each chunk a [tiles, chunk, pixels] block,
with the transmittance carried from chunk to chunk. Its backward pass is
written by hand like gsplat's CUDA kernel (back to front, recomputing
alphas) so no [tiles, chunk, pixels] graph is kept. The cost follows the
pixels each Gaussian covers, not Gaussians x pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from talkhead_models.components.backends import cuda_library_available
from talkhead_models.config import NonNegativeFloat, PositiveFloat, PositiveInt

RasterBackend = Literal["torch", "gsplat", "auto"]

ALPHA_THRESHOLD = 1.0 / 255.0
"""Alphas below this are skipped (gsplat, 3D-GS)."""
MAX_ALPHA = 0.999
"""Alpha is clamped here so that 1 - alpha stays invertible in the backward pass (gsplat)."""
TRANSMITTANCE_THRESHOLD = 1e-4
"""A pixel stops compositing when its transmittance would reach this (gsplat, 3D-GS)."""
MAX_BOUNDING_EXTENT = 3.33
"""Bounding box half-size in standard deviations, before the opacity-aware tightening."""

# Real spherical-harmonic constants in 3D-GS's basis order.
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


@dataclass
class RasterSettings:
    """Rasteriser options; defaults are gsplat's."""

    tile_size: PositiveInt = 16
    """gsplat backend: tile side in pixels (gsplat's default, one CUDA block per tile)."""
    torch_tile_size: PositiveInt = 8
    """Torch backend: tile side in pixels. Smaller tiles than gsplat's waste fewer pixel evaluations
    on a CPU (20k Gaussians at 128x128 train about 1.7x faster than with 16); the image does not depend on it."""
    near_plane: PositiveFloat = 0.01
    """Gaussians nearer than this (camera z) are culled."""
    far_plane: PositiveFloat = 1e10
    """Gaussians farther than this are culled."""
    eps2d: NonNegativeFloat = 0.3
    """Added to the projected covariance's diagonal (px^2) so that every Gaussian covers about a pixel."""
    chunk_size: PositiveInt = 32
    """Torch backend: Gaussians per tile composited in one vectorised block (memory vs. Python overhead)."""


@dataclass
class ProjectedGaussians:
    """Screen-space Gaussians for one camera."""

    means2d: Tensor
    """[N, 2] pixel coordinates of the centres."""
    conics: Tensor
    """[N, 3] upper triangle (a, b, c) of the inverse 2D covariance."""
    depths: Tensor
    """[N] camera-space z."""
    radii: Tensor
    """[N, 2] int32 bounding half-sizes in pixels; 0 for culled Gaussians."""


@dataclass
class TileIntersections:
    """(tile, Gaussian) pairs sorted by tile, then by depth (nearest first)."""

    isect_ids: Tensor
    """[M] int64 keys ``tile_id << 32 | float32 bits of the depth``, gsplat's encoding (sorted)."""
    gaussian_ids: Tensor
    """[M] Gaussian of each pair."""
    tile_offsets: Tensor
    """[tiles + 1] start of each tile's run in the sorted pairs."""
    tiles_per_gaussian: Tensor
    """[N] how many tiles each Gaussian touches."""


@dataclass
class RasterOutput:
    image: Tensor
    """[H, W, C] composited colour over the background."""
    alpha: Tensor
    """[H, W, 1] accumulated opacity."""
    info: dict[str, Any] = field(default_factory=dict)
    """``means2d`` (the screen-space centres in the graph, for densification), ``radii``, ``width``, ``height``, ``n_cameras``."""


def quaternion_to_rotation(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] from quaternions (w, x, y, z) [..., 4]; normalised here."""
    w, x, y, z = torch.unbind(quats / quats.norm(dim=-1, keepdim=True), dim=-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))  # fmt: skip


def covariance_from_scale_rotation(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariances R S S^T R^T [..., 3, 3] from rotations (quaternions) and per-axis standard deviations."""
    rotation_scale = quaternion_to_rotation(quats) * scales[..., None, :]
    return rotation_scale @ rotation_scale.transpose(-1, -2)


def opengl_c2w_to_viewmat(c2w: Tensor) -> Tensor:
    """World-to-camera matrix (OpenCV axes) for a transforms.json camera-to-world (OpenGL axes)."""
    flip_yz = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=c2w.dtype, device=c2w.device))
    return torch.linalg.inv(c2w @ flip_yz)


def project_gaussians(
    means: Tensor,
    covariances: Tensor,
    viewmat: Tensor,
    intrinsics: Tensor,
    width: int,
    height: int,
    settings: RasterSettings | None = None,
    opacities: Tensor | None = None,
) -> ProjectedGaussians:
    """EWA-project 3D Gaussians [N] to the image of one pinhole camera.

    Without ``opacities`` the bounding radius is 3.33 standard deviations
    (gsplat's reference); with them it shrinks to where alpha reaches 1/255
    and Gaussians below that opacity are culled (gsplat's CUDA path).
    """
    settings = settings or RasterSettings()
    rotation, translation = viewmat[:3, :3], viewmat[:3, 3]
    means_cam = means @ rotation.T + translation
    covariances_cam = rotation @ covariances @ rotation.T
    tx, ty, tz = means_cam.unbind(-1)
    in_depth_range = (tz > settings.near_plane) & (tz < settings.far_plane)
    # Culled Gaussians still pass through the graph; a safe depth keeps their gradients finite.
    tz_safe = torch.where(in_depth_range, tz, torch.ones_like(tz))
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    # The Jacobian is evaluated at a point clamped to 1.3x the field of view, as 3D-GS does,
    # because the linearisation explodes for Gaussians far outside the image.
    tan_fov_x, tan_fov_y = 0.5 * width / fx, 0.5 * height / fy
    x_clamped = tz_safe * torch.clamp(tx / tz_safe, -(cx / fx + 0.3 * tan_fov_x), (width - cx) / fx + 0.3 * tan_fov_x)
    y_clamped = tz_safe * torch.clamp(ty / tz_safe, -(cy / fy + 0.3 * tan_fov_y), (height - cy) / fy + 0.3 * tan_fov_y)
    zeros = torch.zeros_like(tz)
    jacobian = torch.stack(
        [fx / tz_safe, zeros, -fx * x_clamped / tz_safe**2, zeros, fy / tz_safe, -fy * y_clamped / tz_safe**2], dim=-1
    ).reshape(-1, 2, 3)
    covariances2d = jacobian @ covariances_cam @ jacobian.transpose(-1, -2)
    covariances2d = covariances2d + settings.eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    cov_xx, cov_xy, cov_yy = covariances2d[:, 0, 0], covariances2d[:, 0, 1], covariances2d[:, 1, 1]
    determinant = cov_xx * cov_yy - cov_xy * cov_xy
    det_safe = torch.where(determinant > 0, determinant, torch.ones_like(determinant))
    conics = torch.stack([cov_yy / det_safe, -cov_xy / det_safe, cov_xx / det_safe], dim=-1)
    means2d = torch.stack([fx * tx / tz_safe + cx, fy * ty / tz_safe + cy], dim=-1)

    with torch.no_grad():
        extent = torch.full_like(tz, MAX_BOUNDING_EXTENT)
        visible = in_depth_range & (determinant > 0)
        if opacities is not None:
            visible &= opacities >= ALPHA_THRESHOLD
            ratio = (opacities / ALPHA_THRESHOLD).clamp_min(1.0)
            extent = torch.minimum(extent, torch.sqrt(2.0 * torch.log(ratio)))
        radii = torch.stack(
            [torch.ceil(extent * cov_xx.clamp_min(0).sqrt()), torch.ceil(extent * cov_yy.clamp_min(0).sqrt())], dim=-1
        )
        visible &= (
            (means2d[:, 0] + radii[:, 0] > 0)
            & (means2d[:, 0] - radii[:, 0] < width)
            & (means2d[:, 1] + radii[:, 1] > 0)
            & (means2d[:, 1] - radii[:, 1] < height)
        )
        radii = torch.where(visible[:, None], radii, torch.zeros_like(radii)).int()
    return ProjectedGaussians(means2d=means2d, conics=conics, depths=tz, radii=radii)


def sh_to_color(degree: int, directions: Tensor, coefficients: Tensor) -> Tensor:
    """Evaluate real SH of ``degree`` (0..3) with ``coefficients`` [..., K, C] in ``directions`` [..., 3].

    Returns the raw SH value; ``rasterize_gaussians`` adds 0.5 and clamps at 0.
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {degree}")
    if coefficients.shape[-2] < (degree + 1) ** 2:
        raise ValueError(f"degree {degree} needs {(degree + 1) ** 2} coefficients, got {coefficients.shape[-2]}")
    result = SH_C0 * coefficients[..., 0, :]
    if degree == 0:
        return result
    x, y, z = [d.unsqueeze(-1) for d in torch.unbind(directions / directions.norm(dim=-1, keepdim=True), dim=-1)]
    sh = coefficients
    result = result - SH_C1 * y * sh[..., 1, :] + SH_C1 * z * sh[..., 2, :] - SH_C1 * x * sh[..., 3, :]
    if degree == 1:
        return result
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    result = (
        result
        + SH_C2[0] * xy * sh[..., 4, :]
        + SH_C2[1] * yz * sh[..., 5, :]
        + SH_C2[2] * (2.0 * zz - xx - yy) * sh[..., 6, :]
        + SH_C2[3] * xz * sh[..., 7, :]
        + SH_C2[4] * (xx - yy) * sh[..., 8, :]
    )
    if degree == 2:
        return result
    return (
        result
        + SH_C3[0] * y * (3 * xx - yy) * sh[..., 9, :]
        + SH_C3[1] * xy * z * sh[..., 10, :]
        + SH_C3[2] * y * (4 * zz - xx - yy) * sh[..., 11, :]
        + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12, :]
        + SH_C3[4] * x * (4 * zz - xx - yy) * sh[..., 13, :]
        + SH_C3[5] * z * (xx - yy) * sh[..., 14, :]
        + SH_C3[6] * x * (xx - 3 * yy) * sh[..., 15, :]
    )


@torch.no_grad()
def intersect_tiles(
    means2d: Tensor, radii: Tensor, depths: Tensor, tile_size: int, tiles_x: int, tiles_y: int
) -> TileIntersections:
    """List every (tile, Gaussian) pair whose bounding box overlaps, sorted by tile then depth.

    Tile bounds are gsplat's: floor((mean - radius) / tile) .. ceil((mean + radius) / tile),
    clamped to the image's tiles.
    """
    num_gaussians = means2d.shape[0]
    device = means2d.device
    tile_means = means2d.float() / tile_size
    tile_radii = radii.float() / tile_size
    lower = torch.floor(tile_means - tile_radii).long()
    upper = torch.ceil(tile_means + tile_radii).long()
    lower[:, 0].clamp_(0, tiles_x)
    lower[:, 1].clamp_(0, tiles_y)
    upper[:, 0].clamp_(0, tiles_x)
    upper[:, 1].clamp_(0, tiles_y)
    extent = upper - lower  # [N, 2] tiles covered along x and y
    visible = (radii > 0).all(-1)
    tiles_per_gaussian = torch.where(visible, extent[:, 0] * extent[:, 1], torch.zeros_like(extent[:, 0]))

    gaussian_ids = torch.repeat_interleave(torch.arange(num_gaussians, device=device), tiles_per_gaussian)
    first_pair = torch.cumsum(tiles_per_gaussian, 0) - tiles_per_gaussian
    local = torch.arange(gaussian_ids.numel(), device=device) - first_pair[gaussian_ids]
    width_in_tiles = extent[gaussian_ids, 0]
    tile_x = lower[gaussian_ids, 0] + local % width_in_tiles
    tile_y = lower[gaussian_ids, 1] + torch.div(local, width_in_tiles, rounding_mode="floor")
    tile_ids = tile_y * tiles_x + tile_x
    # Positive float32 depths order like their bit patterns, so one int64 key sorts by (tile, depth).
    depth_bits = depths.detach().float().contiguous().view(torch.int32).long() & 0xFFFFFFFF
    isect_ids = (tile_ids << 32) | depth_bits[gaussian_ids]
    isect_ids, order = torch.sort(isect_ids)
    gaussian_ids = gaussian_ids[order]
    tile_counts = torch.bincount(isect_ids >> 32, minlength=tiles_x * tiles_y)
    tile_offsets = torch.cat([torch.zeros(1, dtype=torch.long, device=device), torch.cumsum(tile_counts, 0)])
    return TileIntersections(isect_ids, gaussian_ids, tile_offsets, tiles_per_gaussian.int())


@dataclass
class _Chunk:
    """One vectorised block of the tile composite: ``chunk_size`` Gaussians of each active tile."""

    tiles: Tensor  # [Ta] tile ids
    gaussian_ids: Tensor  # [Ta, K] (0 where the slot is empty)
    filled: Tensor  # [Ta, K] bool
    log_transmittance: Tensor  # [Ta, P] log T of each pixel before the chunk
    finished: Tensor  # [Ta, P] bool: pixel stopped compositing before the chunk


def _tile_pixel_centres(tiles_x: int, tiles_y: int, tile_size: int, device, dtype) -> Tensor:
    """Pixel-centre coordinates [tiles, tile_size^2, 2] of every tile, row-major inside a tile."""
    local = torch.arange(tile_size, device=device, dtype=dtype)
    local_y, local_x = torch.meshgrid(local, local, indexing="ij")
    tile_y, tile_x = torch.meshgrid(
        torch.arange(tiles_y, device=device, dtype=dtype), torch.arange(tiles_x, device=device, dtype=dtype), indexing="ij"
    )
    x = tile_x.reshape(-1, 1) * tile_size + local_x.reshape(1, -1) + 0.5
    y = tile_y.reshape(-1, 1) * tile_size + local_y.reshape(1, -1) + 0.5
    return torch.stack([x, y], dim=-1)


class _ChunkAlphas(NamedTuple):
    alpha: Tensor  # [Ta, K, P] composited alpha (0 where skipped)
    unclamped: Tensor  # [Ta, K, P] bool: counted and below MAX_ALPHA, so alpha depends on the parameters
    delta_x: Tensor  # [Ta, K, P] mean minus pixel centre, x
    delta_y: Tensor  # [Ta, K, P] mean minus pixel centre, y
    falloff: Tensor  # [Ta, K, P] exp(-q), the Gaussian without its opacity


def _chunk_alphas(chunk: _Chunk, pixels: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor) -> _ChunkAlphas:
    """Alphas of one chunk with gsplat's rules, and the intermediate values the backward pass reuses."""
    ids = chunk.gaussian_ids
    tile_pixels = pixels[chunk.tiles]  # [Ta, P, 2]
    delta_x = means2d[ids, 0].unsqueeze(-1) - tile_pixels[:, None, :, 0]  # [Ta, K, P]
    delta_y = means2d[ids, 1].unsqueeze(-1) - tile_pixels[:, None, :, 1]
    conic = conics[ids]  # [Ta, K, 3]
    quadratic = (
        0.5 * (conic[..., 0:1] * delta_x * delta_x + conic[..., 2:3] * delta_y * delta_y)
        + conic[..., 1:2] * delta_x * delta_y
    )
    falloff = torch.exp(-quadratic)
    raw_alpha = opacities[ids].unsqueeze(-1) * falloff
    counted = (quadratic >= 0) & (raw_alpha >= ALPHA_THRESHOLD) & chunk.filled.unsqueeze(-1)
    alpha = torch.where(counted, raw_alpha.clamp_max(MAX_ALPHA), torch.zeros_like(raw_alpha))
    return _ChunkAlphas(alpha, counted & (raw_alpha <= MAX_ALPHA), delta_x, delta_y, falloff)


def _chunk_transmittance(chunk: _Chunk, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Transmittance in front of each sample, whether it is composited, and log(1 - alpha) of the composited ones."""
    log_survival = torch.log1p(-alpha)
    log_after = chunk.log_transmittance.unsqueeze(1) + torch.cumsum(log_survival, dim=1)
    # gsplat stops a pixel at the first Gaussian that would take T to 1e-4 or below;
    # within a chunk log T only decreases, so "still above" is a prefix of the chunk.
    composited = (log_after > math.log(TRANSMITTANCE_THRESHOLD)) & ~chunk.finished.unsqueeze(1)
    transmittance_before = torch.exp(log_after - log_survival)
    return transmittance_before, composited, torch.where(composited, log_survival, torch.zeros_like(log_survival))


class _TileComposite(torch.autograd.Function):
    """Front-to-back compositing of sorted tile intersections with a hand-written backward pass."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, background, intersections, geometry):
        tiles_x, tiles_y, tile_size, chunk_size = geometry
        num_tiles, pixels_per_tile = tiles_x * tiles_y, tile_size * tile_size
        pixels = _tile_pixel_centres(tiles_x, tiles_y, tile_size, means2d.device, means2d.dtype)
        offsets = intersections.tile_offsets
        counts = offsets[1:] - offsets[:-1]
        log_transmittance = means2d.new_zeros(num_tiles, pixels_per_tile)
        finished = torch.zeros(num_tiles, pixels_per_tile, dtype=torch.bool, device=means2d.device)
        accumulated = means2d.new_zeros(num_tiles, pixels_per_tile, colors.shape[-1])
        slot = torch.arange(chunk_size, device=means2d.device)
        chunks = []
        start = 0
        while True:
            tiles = ((counts > start) & ~finished.all(-1)).nonzero().squeeze(-1)
            if tiles.numel() == 0:
                break
            pair = offsets[tiles, None] + start + slot  # [Ta, K] index into the sorted pairs
            filled = pair < offsets[tiles + 1, None]
            ids = intersections.gaussian_ids[torch.where(filled, pair, torch.zeros_like(pair))]
            chunk = _Chunk(tiles, ids, filled, log_transmittance[tiles], finished[tiles])
            alpha = _chunk_alphas(chunk, pixels, means2d, conics, opacities).alpha
            transmittance, composited, log_survival = _chunk_transmittance(chunk, alpha)
            weights = torch.where(composited, transmittance * alpha, torch.zeros_like(alpha))
            accumulated[tiles] += torch.einsum("tkp,tkc->tpc", weights, colors[ids])
            log_transmittance[tiles] = chunk.log_transmittance + log_survival.sum(1)
            finished[tiles] = chunk.finished | ~composited[:, -1, :]
            chunks.append(chunk)
            start += chunk_size
        final_transmittance = torch.exp(log_transmittance)
        image = accumulated + final_transmittance.unsqueeze(-1) * background
        ctx.chunks = chunks
        ctx.pixels = pixels
        ctx.save_for_backward(means2d, conics, opacities, colors, background, final_transmittance)
        return image, 1.0 - final_transmittance

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        means2d, conics, opacities, colors, background, final_transmittance = ctx.saved_tensors
        grad_means2d = torch.zeros_like(means2d)
        grad_conics = torch.zeros_like(conics)
        grad_opacities = torch.zeros_like(opacities)
        grad_colors = torch.zeros_like(colors)
        grad_background = (final_transmittance.unsqueeze(-1) * grad_image).sum((0, 1))
        # behind[pixel]: how the loss changes with the light that passes the Gaussians processed so
        # far (back to front): the later Gaussians' colour and the background seen through T, and
        # the image alpha 1 - T. d loss / d alpha_k = T_k (c_k . g) - behind_k / (1 - alpha_k).
        behind = final_transmittance * ((background * grad_image).sum(-1) - grad_alpha)
        for chunk in reversed(ctx.chunks):
            ids, tiles = chunk.gaussian_ids, chunk.tiles
            alpha, unclamped, delta_x, delta_y, falloff = _chunk_alphas(chunk, ctx.pixels, means2d, conics, opacities)
            transmittance, composited, _ = _chunk_transmittance(chunk, alpha)
            weights = torch.where(composited, transmittance * alpha, torch.zeros_like(alpha))
            tile_grad = grad_image[tiles]  # [Ta, P, C]
            color_dot_grad = torch.einsum("tkc,tpc->tkp", colors[ids], tile_grad)
            contribution = weights * color_dot_grad
            chunk_total = contribution.sum(1)
            behind_each = behind[tiles].unsqueeze(1) + chunk_total.unsqueeze(1) - torch.cumsum(contribution, dim=1)
            behind[tiles] += chunk_total
            grad_alpha_each = transmittance * color_dot_grad - behind_each / (1.0 - alpha)
            grad_alpha_each = torch.where(composited & unclamped, grad_alpha_each, torch.zeros_like(alpha))
            # alpha = o * exp(-q): d alpha / d q = -alpha, d alpha / d o = exp(-q).
            grad_quadratic = -alpha * grad_alpha_each
            conic = conics[ids].unsqueeze(-1)
            flat_ids = ids.reshape(-1)
            grad_opacities.index_add_(0, flat_ids, (falloff * grad_alpha_each).sum(-1).reshape(-1))
            grad_conics.index_add_(
                0,
                flat_ids,
                torch.stack(
                    [
                        (0.5 * delta_x * delta_x * grad_quadratic).sum(-1),
                        (delta_x * delta_y * grad_quadratic).sum(-1),
                        (0.5 * delta_y * delta_y * grad_quadratic).sum(-1),
                    ],
                    dim=-1,
                ).reshape(-1, 3),
            )
            grad_means2d.index_add_(
                0,
                flat_ids,
                torch.stack(
                    [
                        ((conic[:, :, 0] * delta_x + conic[:, :, 1] * delta_y) * grad_quadratic).sum(-1),
                        ((conic[:, :, 2] * delta_y + conic[:, :, 1] * delta_x) * grad_quadratic).sum(-1),
                    ],
                    dim=-1,
                ).reshape(-1, 2),
            )
            grad_colors.index_add_(0, flat_ids, torch.einsum("tkp,tpc->tkc", weights, tile_grad).reshape(-1, colors.shape[-1]))
        return grad_means2d, grad_conics, grad_opacities, grad_colors, grad_background, None, None


def composite_tiles(
    projected: ProjectedGaussians,
    opacities: Tensor,
    colors: Tensor,
    background: Tensor,
    width: int,
    height: int,
    settings: RasterSettings,
) -> tuple[Tensor, Tensor]:
    """Rasterise projected Gaussians with the vectorised tile compositor -> (image [H, W, C], alpha [H, W, 1])."""
    tile_size = settings.torch_tile_size
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    intersections = intersect_tiles(projected.means2d, projected.radii, projected.depths, tile_size, tiles_x, tiles_y)
    image, alpha = _TileComposite.apply(
        projected.means2d,
        projected.conics,
        opacities,
        colors,
        background,
        intersections,
        (tiles_x, tiles_y, tile_size, settings.chunk_size),
    )

    def untile(values: Tensor) -> Tensor:
        channels = values.shape[-1]
        grid = values.reshape(tiles_y, tiles_x, tile_size, tile_size, channels).permute(0, 2, 1, 3, 4)
        return grid.reshape(tiles_y * tile_size, tiles_x * tile_size, channels)[:height, :width]

    return untile(image), untile(alpha.unsqueeze(-1))


def gsplat_available() -> bool:
    """gsplat's rasteriser needs CUDA (on a CPU machine it tries to compile its kernels and fails)."""
    return cuda_library_available("gsplat")


def resolve_raster_backend(backend: RasterBackend, device: torch.device) -> Literal["torch", "gsplat"]:
    """``auto`` uses gsplat for CUDA tensors when it is installed, torch otherwise."""
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if backend == "gsplat" and not (device.type == "cuda" and gsplat_available()):
        raise RuntimeError(
            "rasteriser backend 'gsplat' needs gsplat, a CUDA device and CUDA tensors; "
            "use backend='torch' (or 'auto') on a CPU"
        )
    if backend not in ("torch", "gsplat"):
        raise ValueError(f"unknown rasteriser backend {backend!r}: use 'torch', 'gsplat' or 'auto'")
    return backend


def rasterize_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmat: Tensor,
    intrinsics: Tensor,
    width: int,
    height: int,
    sh_degree: int | None = None,
    background: Tensor | None = None,
    settings: RasterSettings | None = None,
    backend: RasterBackend = "auto",
) -> RasterOutput:
    """Render N Gaussians for one camera; the same call for both backends (gsplat.rasterization's conventions).

    means [N, 3]; quats [N, 4] (w, x, y, z, any norm); scales [N, 3] standard
    deviations; opacities [N] in [0, 1]; colors [N, D] or, with ``sh_degree``,
    SH coefficients [N, K, 3]; viewmat [4, 4] world-to-camera in OpenCV axes
    (see ``opengl_c2w_to_viewmat``); intrinsics [3, 3] in pixels.
    """
    settings = settings or RasterSettings()
    if background is None:
        channels = 3 if sh_degree is not None else colors.shape[-1]
        background = means.new_zeros(channels)
    chosen = resolve_raster_backend(backend, means.device)
    if chosen == "gsplat":
        return _rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmat, intrinsics, width, height, sh_degree, background, settings
        )
    projected = project_gaussians(
        means,
        covariance_from_scale_rotation(quats, scales),
        viewmat,
        intrinsics,
        width,
        height,
        settings,
        opacities=opacities.detach(),
    )
    if sh_degree is not None:
        camera_centre = -viewmat[:3, :3].T @ viewmat[:3, 3]
        colors = torch.clamp_min(sh_to_color(sh_degree, means - camera_centre, colors) + 0.5, 0.0)
    image, alpha = composite_tiles(projected, opacities, colors, background, width, height, settings)
    info = {
        "means2d": projected.means2d,
        "radii": projected.radii,
        "depths": projected.depths,
        "width": width,
        "height": height,
        "n_cameras": 1,
        "backend": "torch",
    }
    return RasterOutput(image=image, alpha=alpha, info=info)


def _rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmat, intrinsics, width, height, sh_degree, background, settings
) -> RasterOutput:
    from gsplat import rasterization

    images, alphas, gsplat_info = rasterization(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmat[None],
        intrinsics[None],
        width,
        height,
        near_plane=settings.near_plane,
        far_plane=settings.far_plane,
        eps2d=settings.eps2d,
        sh_degree=sh_degree,
        packed=False,
        tile_size=settings.tile_size,
        backgrounds=background[None],
        rasterize_mode="classic",
    )
    info = {
        # [1, N, 2]: the tensor in the graph, whose gradient densification reads.
        "means2d": gsplat_info["means2d"],
        "radii": gsplat_info["radii"][0],
        "depths": gsplat_info["depths"][0],
        "width": width,
        "height": height,
        "n_cameras": 1,
        "backend": "gsplat",
    }
    return RasterOutput(image=images[0], alpha=alphas[0], info=info)
