"""3D-GS adaptive density control: clone, split, prune and opacity reset.

The Gaussians are a mapping of per-Gaussian parameters (first dimension N)
in 3D-GS's raw form: ``means`` [N, 3], ``scales`` [N, 3] as log standard
deviations, ``quats`` [N, 4], ``opacities`` [N] as logits, plus any others
(SH coefficients, features) that simply follow. Every operation replaces the
parameters and edits the optimiser's per-parameter state (Adam's moments)
row for row, so parameters and optimiser stay in step; new Gaussians start
with zero moments as in 3D-GS.

The running statistics live in an explicit ``DensificationState`` that the
caller keeps (and checkpoints) next to the parameters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, MutableMapping

import torch
from torch import Tensor, nn

from talkhead_models.components.gaussians import quaternion_to_rotation
from talkhead_models.config import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

logger = logging.getLogger(__name__)

GaussianParameters = MutableMapping[str, nn.Parameter]
REQUIRED_PARAMETERS = ("means", "scales", "quats", "opacities")


@dataclass
class DensificationConfig:
    """3D-GS defaults (Kerbl et al. 2023, ``OptimizationParams``)."""

    grad_threshold: NonNegativeFloat = 0.0002
    """Densify Gaussians whose mean screen-space gradient (NDC units) exceeds this."""
    percent_dense: NonNegativeFloat = 0.01
    """Clone when the largest scale is at most this fraction of the scene extent, split otherwise."""
    prune_opacity: Fraction = 0.005
    """Prune Gaussians less opaque than this."""
    prune_scale: NonNegativeFloat = 0.1
    """After the first opacity reset, prune Gaussians larger than this fraction of the scene extent."""
    split_count: PositiveInt = 2
    """A split Gaussian becomes this many."""
    split_scale_divisor: PositiveFloat = 1.6
    """Children's scales are the parent's divided by this (3D-GS: 0.8 * split_count)."""
    start_iteration: NonNegativeInt = 500
    """No densification before this iteration."""
    stop_iteration: NonNegativeInt = 15_000
    """No densification or opacity reset from this iteration on."""
    interval: PositiveInt = 100
    """Densify every this many iterations."""
    opacity_reset_interval: PositiveInt = 3000
    """Reset opacities every this many iterations."""
    reset_opacity: Fraction = 0.01
    """Opacities are clamped down to this at a reset."""


@dataclass
class DensificationState:
    """Running statistics since the last densification, one row per Gaussian."""

    grad_norm_sum: Tensor
    """[N] sum of the norms of the screen-space mean gradients."""
    visible_count: Tensor
    """[N] number of renders in which the Gaussian was visible."""
    scene_extent: float
    """Scene size that the scale thresholds are relative to (3D-GS: camera extent)."""

    @classmethod
    def initial(cls, num_gaussians: int, scene_extent: float, device: torch.device | str = "cpu") -> "DensificationState":
        zeros = torch.zeros(num_gaussians, device=device)
        return cls(grad_norm_sum=zeros, visible_count=zeros.clone(), scene_extent=scene_extent)


@dataclass
class DensificationReport:
    cloned: int = 0
    split: int = 0
    pruned: int = 0
    opacity_reset: bool = False


def check_parameters(params: GaussianParameters, optimizer: torch.optim.Optimizer) -> None:
    """Fail early when a parameter is missing, rows disagree, or the optimiser does not hold a parameter."""
    missing = [name for name in REQUIRED_PARAMETERS if name not in params]
    if missing:
        raise ValueError(f"Gaussian parameters lack {missing}")
    counts = {name: p.shape[0] for name, p in params.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"Gaussian parameters disagree on the number of Gaussians: {counts}")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    absent = [name for name, p in params.items() if id(p) not in held]
    if absent:
        raise ValueError(f"the optimiser does not hold the parameters {absent}")


def _swap_parameter(
    params: GaussianParameters,
    optimizer: torch.optim.Optimizer,
    name: str,
    values: Tensor,
    state_fn: Callable[[Tensor], Tensor],
) -> None:
    """Replace ``params[name]`` by a new parameter holding ``values``, in the optimiser too.

    Row-wise optimiser state (Adam's exp_avg, exp_avg_sq) is mapped with
    ``state_fn``; scalars such as Adam's ``step`` are kept.
    """
    old = params[name]
    new = nn.Parameter(values, requires_grad=old.requires_grad)
    for group in optimizer.param_groups:
        for index, held in enumerate(group["params"]):
            if held is old:
                group["params"][index] = new
    old_state: dict[str, Any] = optimizer.state.pop(old, {})
    if old_state:
        optimizer.state[new] = {
            key: state_fn(value) if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == old.shape[0] else value
            for key, value in old_state.items()
        }
    params[name] = new


def append_gaussians(
    params: GaussianParameters, optimizer: torch.optim.Optimizer, new_rows: dict[str, Tensor]
) -> None:
    """Append Gaussians (one tensor per parameter); their optimiser moments start at zero."""
    count = next(iter(new_rows.values())).shape[0]
    for name, old in list(params.items()):
        _swap_parameter(
            params,
            optimizer,
            name,
            torch.cat([old.detach(), new_rows[name].to(old)]),
            lambda value: torch.cat([value, value.new_zeros((count,) + value.shape[1:])]),
        )


def remove_gaussians(params: GaussianParameters, optimizer: torch.optim.Optimizer, remove: Tensor) -> None:
    """Drop the Gaussians where the boolean mask ``remove`` [N] is set, with their optimiser rows."""
    keep = ~remove
    for name, old in list(params.items()):
        _swap_parameter(params, optimizer, name, old.detach()[keep], lambda value: value[keep])


def reset_opacities(params: GaussianParameters, optimizer: torch.optim.Optimizer, ceiling: float) -> None:
    """Clamp opacities to at most ``ceiling`` and zero their optimiser moments (3D-GS ``reset_opacity``)."""
    logits = params["opacities"].detach()
    clamped = torch.minimum(logits, torch.logit(torch.tensor(ceiling)).to(logits))
    _swap_parameter(params, optimizer, "opacities", clamped, torch.zeros_like)


class DensificationStrategy:
    """3D-GS adaptive density control driven by an explicit ``DensificationState``.

    After each ``loss.backward()``: ``state = strategy.accumulate(state, info)``
    with the rasteriser's ``info`` (its ``means2d`` must have had
    ``retain_grad()`` called before the backward pass), then
    ``state, report = strategy.step(params, optimizer, state, iteration)``.
    """

    def __init__(self, config: DensificationConfig | None = None) -> None:
        self.config = config or DensificationConfig()

    @torch.no_grad()
    def accumulate(self, state: DensificationState, info: dict[str, Any]) -> DensificationState:
        """Add this render's screen-space gradient norms of the visible Gaussians."""
        means2d = info["means2d"]
        if means2d.grad is None:
            raise ValueError("means2d has no gradient: call info['means2d'].retain_grad() before backward()")
        num_gaussians = state.grad_norm_sum.shape[0]
        grads = means2d.grad.reshape(-1, num_gaussians, 2).clone()
        # Pixel gradients to normalised device coordinates, as 3D-GS measures them.
        grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
        grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        visible = (info["radii"].reshape(-1, num_gaussians, 2) > 0).all(-1)
        norms = torch.where(visible, grads.norm(dim=-1), torch.zeros_like(grads[..., 0]))
        return DensificationState(
            grad_norm_sum=state.grad_norm_sum + norms.sum(0),
            visible_count=state.visible_count + visible.sum(0),
            scene_extent=state.scene_extent,
        )

    @torch.no_grad()
    def step(
        self,
        params: GaussianParameters,
        optimizer: torch.optim.Optimizer,
        state: DensificationState,
        iteration: int,
        generator: torch.Generator | None = None,
    ) -> tuple[DensificationState, DensificationReport]:
        """Densify, prune and reset opacities on 3D-GS's schedule; returns the new state and what was done."""
        config = self.config
        report = DensificationReport()
        if iteration >= config.stop_iteration:
            return state, report
        if iteration > config.start_iteration and iteration % config.interval == 0:
            report = self.densify_and_prune(
                params, optimizer, state, prune_large=iteration > config.opacity_reset_interval, generator=generator
            )
            state = DensificationState.initial(params["means"].shape[0], state.scene_extent, state.grad_norm_sum.device)
        if iteration > 0 and iteration % config.opacity_reset_interval == 0:
            reset_opacities(params, optimizer, config.reset_opacity)
            report.opacity_reset = True
        return state, report

    @torch.no_grad()
    def densify_and_prune(
        self,
        params: GaussianParameters,
        optimizer: torch.optim.Optimizer,
        state: DensificationState,
        prune_large: bool,
        generator: torch.Generator | None = None,
    ) -> DensificationReport:
        """Clone small and split large Gaussians with high gradients, then prune transparent (and large) ones."""
        config = self.config
        check_parameters(params, optimizer)
        mean_grads = state.grad_norm_sum / state.visible_count.clamp_min(1)
        high_gradient = mean_grads > config.grad_threshold
        max_scale = params["scales"].exp().amax(-1)
        small = max_scale <= config.percent_dense * state.scene_extent
        clone = high_gradient & small
        split = high_gradient & ~small

        # Clone: an exact copy, which the next optimisation steps pull apart.
        append_gaussians(params, optimizer, {name: p[clone] for name, p in params.items()})
        # Split (clones appended above never split): children sampled inside the parent, smaller.
        split = torch.cat([split, split.new_zeros(int(clone.sum()))])
        children = self._split_children(params, split, generator)
        append_gaussians(params, optimizer, children)
        remove = torch.cat([split, split.new_zeros(children["means"].shape[0])])

        remove |= torch.sigmoid(params["opacities"]) < config.prune_opacity
        if prune_large:
            remove |= params["scales"].exp().amax(-1) > config.prune_scale * state.scene_extent
        split_parents = int(split.sum())
        # Split parents are removed too; count them as split, not pruned.
        pruned = int(remove.sum()) - split_parents
        remove_gaussians(params, optimizer, remove)
        report = DensificationReport(cloned=int(clone.sum()), split=split_parents, pruned=pruned)
        logger.debug(
            "densification: %d cloned, %d split, %d pruned -> %d Gaussians",
            report.cloned,
            report.split,
            report.pruned,
            params["means"].shape[0],
        )
        return report

    def _split_children(
        self, params: GaussianParameters, split: Tensor, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        count = self.config.split_count
        means, log_scales, quats = params["means"][split], params["scales"][split], params["quats"][split]
        std = log_scales.exp().repeat(count, 1)
        offsets = torch.randn(std.shape, generator=generator).to(std) * std
        rotations = quaternion_to_rotation(quats).repeat(count, 1, 1)
        children = {name: p[split].repeat(count, *([1] * (p.dim() - 1))) for name, p in params.items()}
        children["means"] = means.repeat(count, 1) + (rotations @ offsets.unsqueeze(-1)).squeeze(-1)
        children["scales"] = (std / self.config.split_scale_divisor).log()
        return children
