"""Volume rendering: stratified and importance sampling, alpha compositing over a background.

Every sample stands for an interval of its ray: its width ``delta`` is the
distance between the midpoints to its neighbours, with the first interval
starting at ``near`` and the last ending at ``far``. The widths of a ray
therefore add up to ``far - near`` and an empty ray shows the background,
unlike NeRF's 1e10 last interval that makes the last sample opaque; the talking-head
methods composite over a background image, so the last sample must not hide it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

# A field maps sample positions [R, S, 3] and unit view directions [R, S, 3]
# to (density [R, S] >= 0, colour [R, S, 3]).
RadianceField = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class RenderResult:
    """Per-ray outputs of compositing."""

    color: Tensor
    """[R, 3] colour composited over the background."""
    opacity: Tensor
    """[R] accumulated opacity (1 - final transmittance)."""
    depth: Tensor
    """[R] expected depth of the opaque part (zero where nothing is hit)."""
    weights: Tensor
    """[R, S] compositing weight of every sample (for importance sampling and losses)."""


def interval_widths(t_values: Tensor, near: Tensor, far: Tensor) -> Tensor:
    """Widths of the intervals that sorted samples ``t_values`` [R, S] stand for, between near and far [R]."""
    midpoints = 0.5 * (t_values[:, 1:] + t_values[:, :-1])
    boundaries = torch.cat([near[:, None], midpoints, far[:, None]], dim=-1)
    return boundaries[:, 1:] - boundaries[:, :-1]


def sample_stratified(
    near: Tensor, far: Tensor, num_samples: int, perturb: bool = False, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``num_samples`` per ray in equal bins of [near, far]: the bin centre, or a uniform point of the bin.

    Returns (t_values [R, S], deltas [R, S]); each delta is the bin width.
    """
    bin_width = (far - near) / num_samples  # [R]
    if perturb:
        offsets = torch.rand(near.shape[0], num_samples, generator=generator, device=near.device, dtype=near.dtype)
    else:
        offsets = torch.full((near.shape[0], num_samples), 0.5, device=near.device, dtype=near.dtype)
    steps = torch.arange(num_samples, device=near.device, dtype=near.dtype)
    t_values = near[:, None] + (steps + offsets) * bin_width[:, None]
    return t_values, bin_width[:, None].expand(-1, num_samples)


def sample_importance(
    t_coarse: Tensor,
    weights: Tensor,
    near: Tensor,
    far: Tensor,
    num_samples: int,
    perturb: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """NeRF's fine sampling: ``num_samples`` drawn from the piecewise-constant pdf of the coarse weights.

    Returns the coarse and new samples merged and sorted, (t_values [R, S+Sf],
    deltas [R, S+Sf]), as AD-NeRF and JEAN feed them to the fine network.
    The new samples are detached: gradients do not flow into the sampling.
    """
    t_fine = importance_samples(t_coarse, weights, near, far, num_samples, perturb, generator)
    t_values, _ = torch.sort(torch.cat([t_coarse.detach(), t_fine], dim=-1), dim=-1)
    return t_values, interval_widths(t_values, near, far)


def importance_samples(
    t_coarse: Tensor,
    weights: Tensor,
    near: Tensor,
    far: Tensor,
    num_samples: int,
    perturb: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The new samples alone of :func:`sample_importance`: [R, Sf] depths, unsorted, detached."""
    with torch.no_grad():
        midpoints = 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1])
        edges = torch.cat([near[:, None], midpoints, far[:, None]], dim=-1)  # [R, S+1]
        # A small floor keeps the pdf defined on rays whose weights are all zero.
        pdf = weights.detach() + 1e-5
        pdf = pdf / pdf.sum(-1, keepdim=True)
        cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], dim=-1)  # [R, S+1]
        cdf[:, -1] = 1.0
        if perturb:
            uniform = torch.rand(
                t_coarse.shape[0], num_samples, generator=generator, device=t_coarse.device, dtype=t_coarse.dtype
            )
        else:
            steps = (torch.arange(num_samples, device=t_coarse.device, dtype=t_coarse.dtype) + 0.5) / num_samples
            uniform = steps.expand(t_coarse.shape[0], num_samples).contiguous()
        upper = torch.searchsorted(cdf, uniform, right=True).clamp(1, cdf.shape[-1] - 1)
        lower = upper - 1
        cdf_low, cdf_high = cdf.gather(1, lower), cdf.gather(1, upper)
        edge_low, edge_high = edges.gather(1, lower), edges.gather(1, upper)
        fraction = (uniform - cdf_low) / (cdf_high - cdf_low).clamp_min(1e-12)
        return edge_low + fraction.clamp(0.0, 1.0) * (edge_high - edge_low)


def composite(
    densities: Tensor,
    colors: Tensor,
    deltas: Tensor,
    t_values: Tensor,
    background: Tensor | None = None,
) -> RenderResult:
    """Alpha-composite samples front to back: w_i = T_i (1 - exp(-sigma_i delta_i)), T_i = exp(-sum_{j<i} sigma_j delta_j).

    ``densities`` [R, S], ``colors`` [R, S, 3], ``deltas`` and ``t_values`` [R, S];
    ``background`` [R, 3] or [3] fills the remaining transmittance.
    """
    optical_depth = densities * deltas
    # Exclusive cumulative sum in log space: exact and differentiable, no cumprod of (1 - alpha).
    accumulated = torch.cumsum(optical_depth, dim=-1) - optical_depth
    transmittance = torch.exp(-accumulated)
    alpha = 1.0 - torch.exp(-optical_depth)
    weights = transmittance * alpha
    opacity = weights.sum(-1)
    color = (weights.unsqueeze(-1) * colors).sum(-2)
    if background is not None:
        color = color + (1.0 - opacity).unsqueeze(-1) * background
    depth = (weights * t_values).sum(-1)
    return RenderResult(color=color, opacity=opacity, depth=depth, weights=weights)


@dataclass
class FieldSamples:
    """A field's outputs at the samples of every ray."""

    t_values: Tensor
    """[R, S] sample depths."""
    densities: Tensor
    """[R, S]"""
    colors: Tensor
    """[R, S, C]"""


def query_field(field: RadianceField, origins: Tensor, directions: Tensor, t_values: Tensor) -> FieldSamples:
    """``field`` at depths ``t_values`` [R, S] of the rays ``origins``, ``directions`` [R, 3]."""
    positions = origins[:, None, :] + t_values[..., None] * directions[:, None, :]
    densities, colors = field(positions, directions[:, None, :].expand_as(positions))
    return FieldSamples(t_values, densities, colors)


def merge_samples(first: FieldSamples, second: FieldSamples) -> FieldSamples:
    """Both sets of samples of the same rays, sorted by depth.

    A one-network hierarchical renderer queries the field at the new fine samples only and merges them with the
    coarse ones it already has: the same values, and gradients, as querying it again at every merged sample.
    """
    t_values, order = torch.sort(torch.cat([first.t_values, second.t_values], dim=-1), dim=-1)
    densities = torch.cat([first.densities, second.densities], dim=-1).gather(-1, order)
    colors = torch.cat([first.colors, second.colors], dim=-2)
    colors = colors.gather(-2, order[..., None].expand(-1, -1, colors.shape[-1]))
    return FieldSamples(t_values, densities, colors)


def render_rays(
    field: RadianceField,
    origins: Tensor,
    directions: Tensor,
    t_values: Tensor,
    deltas: Tensor,
    background: Tensor | None = None,
) -> RenderResult:
    """Query ``field`` at the samples of every ray and composite them."""
    samples = query_field(field, origins, directions, t_values)
    return composite(samples.densities, samples.colors, deltas, t_values, background)


def render_hierarchical(
    coarse_field: RadianceField,
    fine_field: RadianceField,
    origins: Tensor,
    directions: Tensor,
    near: Tensor,
    far: Tensor,
    num_coarse: int = 64,
    num_fine: int = 128,
    perturb: bool = True,
    background: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[RenderResult, RenderResult]:
    """AD-NeRF / JEAN two-pass rendering: stratified coarse samples, then importance-sampled fine samples.

    Defaults are AD-NeRF's 64 coarse and 128 fine samples per ray. Returns
    (coarse, fine) results; both are usually supervised.
    """
    t_coarse, deltas_coarse = sample_stratified(near, far, num_coarse, perturb, generator)
    coarse = render_rays(coarse_field, origins, directions, t_coarse, deltas_coarse, background)
    t_all, deltas_all = sample_importance(t_coarse, coarse.weights, near, far, num_fine, perturb, generator)
    fine = render_rays(fine_field, origins, directions, t_all, deltas_all, background)
    return coarse, fine
