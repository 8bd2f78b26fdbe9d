"""Densification keeps parameters, optimiser state and statistics in step."""

import math

import pytest
import torch
from torch import nn

from talkhead_models.components.densify import (
    DensificationConfig,
    DensificationState,
    DensificationStrategy,
    check_parameters,
    reset_opacities,
)
from talkhead_models.components.gaussians import rasterize_gaussians


def make_gaussians(count: int = 12):
    generator = torch.Generator().manual_seed(0)
    params = nn.ParameterDict(
        {
            "means": nn.Parameter(torch.rand(count, 3, generator=generator) * 2 - 1),
            "scales": nn.Parameter(torch.full((count, 3), math.log(0.005))),
            "quats": nn.Parameter(torch.randn(count, 4, generator=generator)),
            "opacities": nn.Parameter(torch.full((count,), 2.0)),
            # Row identity, to follow every Gaussian through the operations.
            "tag": nn.Parameter(torch.arange(count, dtype=torch.float32)[:, None].repeat(1, 2)),
        }
    )
    optimizer = torch.optim.Adam([{"params": [p], "name": name} for name, p in params.items()], lr=1e-3)
    # One step so that Adam has moments, distinct per row.
    loss = sum((p * torch.arange(1, p.numel() + 1, dtype=torch.float32).reshape(p.shape)).sum() for p in params.values())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return params, optimizer


def assert_in_step(params, optimizer):
    check_parameters(params, optimizer)
    held = [p for group in optimizer.param_groups for p in group["params"]]
    assert all(any(p is h for h in held) for p in params.values())
    for p in params.values():
        state = optimizer.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape


def test_clone_split_and_prune_keep_parameters_and_optimiser_rows_aligned():
    params, optimizer = make_gaussians(12)
    old_moments = {name: optimizer.state[p]["exp_avg"].clone() for name, p in params.items()}
    parent_means = params["means"].detach()[4:8].clone()
    with torch.no_grad():
        params["scales"][4:8] = math.log(0.5)  # large: split rather than clone
        params["opacities"][10:] = -8.0  # transparent: pruned
    state = DensificationState.initial(12, scene_extent=1.0)
    state.grad_norm_sum[:8] = 1.0  # high gradients for 0..7
    state.visible_count[:] = 1.0
    strategy = DensificationStrategy(DensificationConfig())
    report = strategy.densify_and_prune(params, optimizer, state, prune_large=False, generator=torch.Generator().manual_seed(0))

    assert (report.cloned, report.split, report.pruned) == (4, 4, 2)
    assert params["means"].shape[0] == 12 + 4 + 4 * 2 - 4 - 2
    assert_in_step(params, optimizer)
    tags = params["tag"][:, 0].round().long().tolist()
    # Survivors in order (0-3, 8, 9), then the clones of 0-3, then two children per split parent 4-7.
    assert tags == [0, 1, 2, 3, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7]
    for name, p in params.items():
        moments = optimizer.state[p]["exp_avg"]
        torch.testing.assert_close(moments[:6], old_moments[name][[0, 1, 2, 3, 8, 9]])
        assert torch.count_nonzero(moments[6:]) == 0  # new Gaussians start with zero moments
    children = params["scales"][10:]
    torch.testing.assert_close(children, torch.full_like(children, math.log(0.5 / 1.6)))
    # Children are drawn from the parent's Gaussian (standard deviation 0.5 per axis).
    offsets = (params["means"][10:].detach() - parent_means.repeat(2, 1)).norm(dim=-1)
    assert torch.all(offsets > 0) and torch.all(offsets < 5 * 0.5 * math.sqrt(3))

    loss = sum(p.sum() for p in params.values())
    loss.backward()
    optimizer.step()  # the optimiser still works on the new parameters


def test_opacity_reset_clamps_and_zeroes_moments():
    params, optimizer = make_gaussians(6)
    with torch.no_grad():
        params["opacities"][0] = -6.0  # already below the ceiling
    before = params["opacities"].detach().clone()
    reset_opacities(params, optimizer, 0.01)
    assert_in_step(params, optimizer)
    opacity = torch.sigmoid(params["opacities"])
    assert torch.all(opacity <= 0.01 + 1e-6)
    assert params["opacities"][0] == before[0]
    assert torch.count_nonzero(optimizer.state[params["opacities"]]["exp_avg"]) == 0
    assert torch.count_nonzero(optimizer.state[params["means"]]["exp_avg"]) > 0


def test_statistics_accumulate_from_the_rasteriser():
    params, _ = make_gaussians(12)
    with torch.no_grad():
        params["means"][0] = torch.tensor([0.0, 0.0, -10.0])  # behind the camera
        params["scales"].fill_(math.log(0.05))
    viewmat = torch.eye(4)
    viewmat[2, 3] = 4.0
    intrinsics = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    output = rasterize_gaussians(
        params["means"], params["quats"], params["scales"].exp(), torch.sigmoid(params["opacities"]),
        torch.rand(12, 3), viewmat, intrinsics, 32, 32, backend="torch",
    )
    output.info["means2d"].retain_grad()
    output.image.sum().backward()
    strategy = DensificationStrategy()
    state = strategy.accumulate(DensificationState.initial(12, 1.0), output.info)
    visible = (output.info["radii"] > 0).all(-1)
    assert not visible[0] and visible.sum() > 6
    assert torch.equal(state.visible_count, visible.float())
    assert torch.all(state.grad_norm_sum[visible] > 0) and state.grad_norm_sum[0] == 0
    with pytest.raises(ValueError, match="retain_grad"):
        strategy.accumulate(state, {**output.info, "means2d": output.info["means2d"].detach()})


def test_schedule_follows_3dgs():
    config = DensificationConfig(start_iteration=500, interval=100, opacity_reset_interval=3000, stop_iteration=15000)
    strategy = DensificationStrategy(config)
    params, optimizer = make_gaussians(12)
    state = DensificationState.initial(12, 1.0)
    state.grad_norm_sum[:] = 1.0
    state.visible_count[:] = 1.0
    unchanged, report = strategy.step(params, optimizer, state, iteration=500)
    assert unchanged is state and report.cloned == 0 and params["means"].shape[0] == 12
    state, report = strategy.step(params, optimizer, state, iteration=600)
    assert report.cloned == 12 and params["means"].shape[0] == 24
    assert state.grad_norm_sum.shape == (24,) and state.grad_norm_sum.sum() == 0  # statistics restart
    state, report = strategy.step(params, optimizer, state, iteration=3000)
    assert report.opacity_reset and torch.all(torch.sigmoid(params["opacities"]) <= 0.01 + 1e-6)
    _, report = strategy.step(params, optimizer, state, iteration=15000)
    assert report == type(report)()


def test_check_parameters_rejects_mismatched_rows():
    params, optimizer = make_gaussians(4)
    params["extra"] = nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="disagree"):
        check_parameters(params, optimizer)
