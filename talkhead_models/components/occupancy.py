"""Occupancy grid for empty-space skipping, with the maximum-occupancy update over conditions.

A talking head's density changes with its condition (audio, landmarks), so a
grid built from one condition would cut away the mouth of another.
RAD-NeRF and R2-Talker keep, per cell, the maximum density over all
conditions seen; this grid does the same: ``update`` evaluates every given
condition and keeps the maximum, decayed by an exponential moving maximum
as in Instant-NGP.

Marching takes the same stratified samples as dense rendering
(``volume.sample_stratified``) and keeps only those in occupied cells, so
the field is evaluated where there is something to see, and a fully
occupied grid renders exactly the dense image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from talkhead_models.components.volume import RenderResult, composite, sample_stratified
from talkhead_models.config import Fraction, NonNegativeFloat, PositiveInt

logger = logging.getLogger(__name__)

# density_fn(points [M, 3], condition) -> densities [M]
ConditionalDensity = Callable[[Tensor, Any], Tensor]


@dataclass
class OccupancyGridConfig:
    """Defaults follow torch-ngp / RAD-NeRF."""

    resolution: PositiveInt = 128
    """Cells per axis."""
    density_threshold: NonNegativeFloat = 10.0
    """A cell is occupied when its density exceeds min(mean density, this)."""
    decay: Fraction = 0.95
    """Old densities decay by this factor at each update (exponential moving maximum)."""
    chunk_size: PositiveInt = 65536
    """Points per density evaluation during an update, to bound memory."""


@dataclass
class MarchedSamples:
    """Samples of a batch of rays that fall in occupied cells, packed ray after ray."""

    ray_indices: Tensor
    """[M] ray of each sample."""
    step_indices: Tensor
    """[M] position of each sample along its ray (0..num_steps-1)."""
    t_values: Tensor
    """[M] distance along the ray."""
    deltas: Tensor
    """[M] interval width."""
    positions: Tensor
    """[M, 3] world positions."""
    directions: Tensor
    """[M, 3] unit view directions."""
    num_rays: int
    num_steps: int


class OccupancyGrid(nn.Module):
    """A bit grid over an axis-aligned box, kept as a persistent buffer so it is saved with the model."""

    def __init__(self, aabb: Tensor | Sequence[float], config: OccupancyGridConfig | None = None) -> None:
        super().__init__()
        self.config = config or OccupancyGridConfig()
        resolution = self.config.resolution
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(6))
        self.register_buffer("density", torch.zeros(resolution**3))
        # A fresh grid skips nothing: nothing is known to be empty before the first update.
        self.register_buffer("occupied", torch.ones(resolution**3, dtype=torch.bool))

    @property
    def occupancy_ratio(self) -> float:
        return float(self.occupied.float().mean())

    def cell_centres(self, cell_indices: Tensor) -> Tensor:
        """World-space centres of flattened cell indices (x fastest)."""
        resolution = self.config.resolution
        coords = torch.stack(
            [cell_indices % resolution, (cell_indices // resolution) % resolution, cell_indices // resolution**2],
            dim=-1,
        ).to(self.aabb.dtype)
        return self.aabb[:3] + (coords + 0.5) / resolution * (self.aabb[3:] - self.aabb[:3])

    def cell_of(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Flattened cell index of each point [M, 3] and whether the point lies inside the box."""
        resolution = self.config.resolution
        unit = (points - self.aabb[:3]) / (self.aabb[3:] - self.aabb[:3])
        inside = ((unit >= 0) & (unit < 1)).all(-1)
        coords = (unit * resolution).long().clamp(0, resolution - 1)
        return coords[:, 0] + resolution * (coords[:, 1] + resolution * coords[:, 2]), inside

    @torch.no_grad()
    def update(
        self,
        density_fn: ConditionalDensity,
        conditions: Sequence[Any],
        cell_fraction: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        """Re-estimate cell densities as the maximum over ``conditions`` at a random point of each cell.

        ``cell_fraction`` < 1 updates a random subset of cells (Instant-NGP's
        cheaper later updates); cells not drawn keep their values.
        """
        if not conditions:
            raise ValueError("occupancy update needs at least one condition")
        num_cells = self.density.numel()
        if cell_fraction >= 1.0:
            cells = torch.arange(num_cells, device=self.density.device)
        else:
            count = max(1, int(num_cells * cell_fraction))
            cells = torch.randperm(num_cells, generator=generator)[:count].to(self.density.device)
        cell_size = (self.aabb[3:] - self.aabb[:3]) / self.config.resolution
        new_density = torch.empty(cells.numel(), device=self.density.device)
        for start in range(0, cells.numel(), self.config.chunk_size):
            chunk = cells[start : start + self.config.chunk_size]
            jitter = torch.rand(chunk.numel(), 3, generator=generator).to(self.aabb.device) - 0.5
            points = self.cell_centres(chunk) + jitter * cell_size
            densities = torch.stack([density_fn(points, condition).reshape(-1) for condition in conditions])
            new_density[start : start + chunk.numel()] = densities.amax(0)
        self.density[cells] = torch.maximum(self.density[cells] * self.config.decay, new_density)
        threshold = min(float(self.density.mean()), self.config.density_threshold)
        self.occupied.copy_(self.density > threshold)
        logger.debug("occupancy grid updated: %.1f%% of cells occupied", 100 * self.occupancy_ratio)

    @torch.no_grad()
    def march(
        self,
        origins: Tensor,
        directions: Tensor,
        near: Tensor,
        far: Tensor,
        num_steps: int,
        perturb: bool = False,
        generator: torch.Generator | None = None,
    ) -> MarchedSamples:
        """Stratified samples [near, far] per ray, keeping only those inside occupied cells."""
        t_values, deltas = sample_stratified(near, far, num_steps, perturb, generator)
        positions = origins[:, None, :] + t_values[..., None] * directions[:, None, :]
        cells, inside = self.cell_of(positions.reshape(-1, 3))
        keep = inside & self.occupied[cells]
        flat = keep.nonzero().squeeze(-1)
        ray_indices = torch.div(flat, num_steps, rounding_mode="floor")
        return MarchedSamples(
            ray_indices=ray_indices,
            step_indices=flat % num_steps,
            t_values=t_values.reshape(-1)[flat],
            deltas=deltas.reshape(-1)[flat],
            positions=positions.reshape(-1, 3)[flat],
            directions=directions[ray_indices],
            num_rays=origins.shape[0],
            num_steps=num_steps,
        )


def composite_marched(
    samples: MarchedSamples, densities: Tensor, colors: Tensor, background: Tensor | None = None
) -> RenderResult:
    """Composite the field's outputs at marched samples; skipped samples count as empty space.

    The packed values are scattered back to their [rays, steps] slots (zeros
    elsewhere) and composited densely: compositing is cheap next to the field,
    and this keeps it identical to ``volume.composite``.
    """
    shape = (samples.num_rays, samples.num_steps)
    flat = samples.ray_indices * samples.num_steps + samples.step_indices
    dense_density = densities.new_zeros(shape).reshape(-1).index_put((flat,), densities).reshape(shape)
    dense_color = colors.new_zeros(*shape, colors.shape[-1]).reshape(-1, colors.shape[-1])
    dense_color = dense_color.index_put((flat,), colors).reshape(*shape, colors.shape[-1])
    dense_t = samples.t_values.new_zeros(shape).reshape(-1).index_put((flat,), samples.t_values).reshape(shape)
    dense_delta = samples.deltas.new_zeros(shape).reshape(-1).index_put((flat,), samples.deltas).reshape(shape)
    return composite(dense_density, dense_color, dense_delta, dense_t, background)
