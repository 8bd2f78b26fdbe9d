"""Head rendering: occupancy-pruned marching with early ray termination, and full-frame compositing.

Rays are clipped to the head box, marched with the occupancy grid (only
samples in occupied cells are kept) and composited front to back a chunk of
steps at a time; a ray stops once its transmittance falls below
``min_transmittance`` (torch-ngp's inference rule). On a CPU that is what
keeps a solid head affordable: without it every sample behind the face, all
the way through the skull, would be evaluated. The compositing is the
exclusive-cumsum form of ``components.volume.composite``, continued across
chunks through the carried transmittance, so it is exact up to the dropped
tail (< ``min_transmittance`` of the colour).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from talkhead_models.components.occupancy import OccupancyGrid
from talkhead_models.components.rays import get_rays, intersect_aabb

# field(positions [M, 3], directions [M, 3]) -> (density [M], rgb [M, 3])
Field = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class HeadRender:
    """Per-ray head colour (not yet over a background) and opacity."""

    color: Tensor  # [R, 3] premultiplied by opacity
    opacity: Tensor  # [R]
    samples: int  # field evaluations spent
    distortion: Tensor | None = None  # [R] Mip-NeRF 360's distortion of each ray's weights (when asked for)


def march_and_composite(field: Field, grid: OccupancyGrid, origins: Tensor, directions: Tensor, near: Tensor,
                        far: Tensor, num_steps: int, chunk: int, min_transmittance: float,
                        perturb: bool = False, generator: torch.Generator | None = None,
                        distortion: bool = False, max_samples: int = 0) -> HeadRender:
    """Composite ``field`` along rays [R, 3] between near and far [R] (premultiplied colour, opacity).

    ``max_samples`` > 0 keeps only each ray's first that many occupied samples
    (torch-ngp's per-ray step budget): whatever lies behind them is treated as
    empty, in training and rendering alike, so the field learns to be opaque
    within the budget.

    ``distortion``: also return Mip-NeRF 360's distortion loss per ray,
    sum_ij w_i w_j |s_i - s_j| + 1/3 sum_i w_i^2 ds_i over the ray's normalised
    distance s = (t - near) / (far - near), accumulated across chunks through
    running sums of w and w s (the pairwise term in O(samples)).
    """
    num_rays = origins.shape[0]
    color = origins.new_zeros(num_rays, 3)
    transmittance = origins.new_ones(num_rays)
    loss = origins.new_zeros(num_rays) if distortion else None
    if num_rays == 0:
        return HeadRender(color, 1.0 - transmittance, 0, loss)
    samples = grid.march(origins, directions, near, far, num_steps, perturb=perturb, generator=generator)
    if samples.ray_indices.numel() == 0:
        return HeadRender(color, 1.0 - transmittance, 0, loss)
    length = (far - near).clamp_min(1e-6)
    weight_sum, weighted_s = origins.new_zeros(num_rays), origins.new_zeros(num_rays)
    chunk_of = torch.div(samples.step_indices, chunk, rounding_mode="floor")
    if max_samples > 0:
        # Rank of each sample within its ray: samples are packed ray after ray, in marching order.
        counts = torch.bincount(samples.ray_indices, minlength=num_rays)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(samples.ray_indices.numel(), device=origins.device) - first[samples.ray_indices]
        # Samples beyond the budget get an impossible chunk number and are never evaluated.
        chunk_of = torch.where(rank < max_samples, chunk_of, torch.full_like(chunk_of, -1))
    evaluated = 0
    for chunk_index in range(int(chunk_of.max()) + 1 if chunk_of.numel() else 0):
        alive = transmittance.detach() > min_transmittance
        selected = (chunk_of == chunk_index) & alive[samples.ray_indices]
        if not selected.any():
            if not alive.any():
                break
            continue
        rays = samples.ray_indices[selected]
        local = samples.step_indices[selected] - chunk_index * chunk
        sigma, rgb = field(samples.positions[selected], samples.directions[selected])
        evaluated += int(rays.numel())
        # Dense [R, chunk] slots of this chunk; empty slots stay zero (no density, no colour).
        slots = rays * chunk + local
        optical = sigma.new_zeros(num_rays * chunk).index_put((slots,), sigma * samples.deltas[selected])
        optical = optical.view(num_rays, chunk)
        colors = rgb.new_zeros(num_rays * chunk, 3).index_put((slots,), rgb).view(num_rays, chunk, 3)
        accumulated = torch.cumsum(optical, dim=-1) - optical
        weights = transmittance[:, None] * torch.exp(-accumulated) * (1.0 - torch.exp(-optical))
        color = color + (weights[..., None] * colors).sum(1)
        transmittance = transmittance * torch.exp(-optical.sum(-1))
        if loss is not None:
            rays_s = (samples.t_values[selected] - near[rays]) / length[rays]
            s = sigma.new_zeros(num_rays * chunk).index_put((slots,), rays_s).view(num_rays, chunk)
            ds = sigma.new_zeros(num_rays * chunk).index_put((slots,), samples.deltas[selected] / length[rays])
            weighted = weights * s
            before_w = weight_sum[:, None] + torch.cumsum(weights, -1) - weights
            before_ws = weighted_s[:, None] + torch.cumsum(weighted, -1) - weighted
            loss = loss + (2.0 * weights * (s * before_w - before_ws)).sum(-1) \
                + (weights ** 2 * ds.view(num_rays, chunk)).sum(-1) / 3.0
            weight_sum = weight_sum + weights.sum(-1)
            weighted_s = weighted_s + weighted.sum(-1)
    return HeadRender(color, 1.0 - transmittance, evaluated, loss)


def camera_rays(c2w: Tensor, focal: float, cx: float, cy: float, size: int, pixels: Tensor,
                box: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Rays through ``pixels`` of one scene-frame camera, clipped to ``box``: origins, dirs, near, far, hit."""
    bundle = get_rays(c2w, focal, cx, cy, size, size, pixels)
    near, far, hit = intersect_aabb(bundle.origins, bundle.directions, box)
    return bundle.origins, bundle.directions, near, far, hit


def render_head(field: Field, grid: OccupancyGrid, c2w: Tensor, focal: float, cx: float, cy: float, size: int,
                pixels: Tensor, box: Tensor, num_steps: int, chunk: int, min_transmittance: float,
                perturb: bool = False, generator: torch.Generator | None = None,
                distortion: bool = False, max_samples: int = 0) -> HeadRender:
    """Head colour and opacity at ``pixels`` [R] of one camera; rays missing the box stay empty."""
    origins, directions, near, far, hit = camera_rays(c2w, focal, cx, cy, size, pixels, box)
    color = origins.new_zeros(len(pixels), 3)
    opacity = origins.new_zeros(len(pixels))
    loss = origins.new_zeros(len(pixels)) if distortion else None
    index = hit.nonzero().squeeze(-1)
    if index.numel() == 0:
        return HeadRender(color, opacity, 0, loss)
    result = march_and_composite(field, grid, origins[index], directions[index], near[index], far[index],
                                 num_steps, chunk, min_transmittance, perturb, generator, distortion, max_samples)
    color = color.index_put((index,), result.color)
    opacity = opacity.index_put((index,), result.opacity)
    if loss is not None:
        loss = loss.index_put((index,), result.distortion)
    return HeadRender(color, opacity, result.samples, loss)
