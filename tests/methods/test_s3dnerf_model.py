"""S3D-NeRF's generator and discriminator against independent computations: the pinhole rays of
components/rays.py, a hand-written bilinear lookup, permutation symmetries of slot attention, the concatenated
form of the factorised U-Net input, finite differences for R1."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from talkhead_models.components.rays import get_rays
from talkhead_models.config import ConfigError
from talkhead_models.methods.s3dnerf.config import S3DNeRFConfig
from talkhead_models.methods.s3dnerf.discriminator import Discriminator, minibatch_stddev, r1_penalty
from talkhead_models.methods.s3dnerf.model import (Cameras, CrossModalDeformation, S3DNeRF, SlotAttention,
                                                   TriPlaneDecoder, UNetMLP, plane_coordinates, project,
                                                   sample_triplanes)

TINY = S3DNeRFConfig(image_size=32, render_size=8, feature_channels=8, samples_coarse=6, samples_fine=4,
                     encoder_channels=(8, 8, 16, 16), plane_channels=4, embed_dim=16, attention_heads=2,
                     num_slots=3, token_grid=2, deform_widths=(16, 8), decoder_hidden=16, sr_channels=8,
                     disc_channels=(8, 8), position_frequencies=2)
AUDIO_DIM = 12


def look_at(eye: np.ndarray, target: np.ndarray = np.zeros(3)) -> np.ndarray:
    """OpenGL camera-to-world of a camera at ``eye`` looking at ``target`` (+y up)."""
    back = (eye - target) / np.linalg.norm(eye - target)
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, back, eye
    return c2w


def cameras(eyes: list[list[float]], size: int = 64, focal: float = 140.0) -> Cameras:
    c2w = torch.tensor(np.stack([look_at(np.asarray(e, float)) for e in eyes]), dtype=torch.float32)
    n = len(eyes)
    return Cameras(c2w, torch.full((n,), focal), torch.full((n,), size / 2), torch.full((n,), size / 2), size)


def test_paper_values_and_refusals():
    cfg = S3DNeRFConfig()
    assert (cfg.pixel_weight, cfg.perceptual_weight, cfg.adversarial_weight, cfg.sync_weight,
            cfg.deform_weight) == (1.0, 0.01, 1.0, 0.5, 0.001)
    assert len(cfg.encoder_channels) == 4 and cfg.deformation == "cross_attention"
    with pytest.raises(ConfigError, match="four scales"):
        S3DNeRFConfig(encoder_channels=(8, 16, 32))
    with pytest.raises(ConfigError, match="multiple of render_size"):
        S3DNeRFConfig(image_size=100, render_size=32)


def test_a_point_on_a_pixel_ray_projects_to_that_pixel():
    cams = cameras([[0.1, -0.05, 0.6]], size=64)
    pixels = torch.tensor([0, 63, 64 * 20 + 7, 64 * 64 - 1])
    rays = get_rays(cams.c2w[0], 140.0, 32.0, 32.0, 64, 64, pixels)
    points = rays.origins + 0.45 * rays.directions
    xy, depth = project(points[None], cams)
    columns, rows = (pixels % 64).float(), (pixels // 64).float()
    expected = torch.stack([(columns + 0.5) / 64 * 2 - 1, (rows + 0.5) / 64 * 2 - 1], -1)
    torch.testing.assert_close(xy[0], expected, atol=1e-5, rtol=0)
    # depth along the viewing axis: t times the cosine between the ray and the axis
    axis = -cams.c2w[0, :3, 2]
    torch.testing.assert_close(depth[0], 0.45 * (rays.directions @ axis), atol=1e-6, rtol=0)


def bilinear_zero_padded(plane: np.ndarray, u: float, v: float) -> np.ndarray:
    """Hand-written bilinear lookup of plane [C, H, W] at normalised (u, v), pixel centres at (i + 0.5) / W."""
    channels, height, width = plane.shape
    x, y = (u + 1) * width / 2 - 0.5, (v + 1) * height / 2 - 0.5
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    out = np.zeros(channels)
    for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
        for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            if 0 <= xi < width and 0 <= yi < height:
                out += wx * wy * plane[:, yi, xi]
    return out


def test_triplane_lookup_matches_a_hand_written_bilinear_average_of_the_three_planes():
    generator = torch.Generator().manual_seed(0)
    planes = [torch.randn(1, 3, 2, 6 // s + 1, 8 // s, generator=generator) for s in (1, 2, 3, 4)]
    xy = torch.tensor([[[0.3, -0.7], [-0.95, 0.99], [1.2, 0.0]]])
    depth = torch.tensor([[0.1, -0.5, 0.8]])
    sampled = sample_triplanes(planes, plane_coordinates(xy, depth))[0].numpy()
    for p in range(3):
        x, y, z = float(xy[0, p, 0]), float(xy[0, p, 1]), float(depth[0, p])
        expected = np.concatenate([
            (bilinear_zero_padded(scale[0, 0].numpy(), x, y) + bilinear_zero_padded(scale[0, 1].numpy(), x, z)
             + bilinear_zero_padded(scale[0, 2].numpy(), z, y)) / 3 for scale in planes])
        np.testing.assert_allclose(sampled[p], expected, atol=1e-5)


def test_slot_attention_ignores_the_token_order_and_follows_the_slot_order():
    torch.manual_seed(0)
    slots = SlotAttention(num_slots=4, dim=8, iterations=3)
    tokens, noise = torch.randn(2, 10, 8), torch.randn(2, 4, 8)
    out, attention = slots(tokens, noise)
    order = torch.randperm(10)
    out_perm, attention_perm = slots(tokens[:, order], noise)
    torch.testing.assert_close(out_perm, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention_perm, attention[:, :, order], atol=1e-5, rtol=1e-5)
    swap = torch.tensor([2, 0, 3, 1])
    out_swapped, _ = slots(tokens, noise[:, swap])
    # slots start at one shared mean, so permuting their noise permutes them
    torch.testing.assert_close(out_swapped, out[:, swap], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention.sum(1), torch.ones(2, 10), atol=1e-5, rtol=0)


def test_the_factorised_unet_input_equals_concatenating_every_input_per_point():
    torch.manual_seed(0)
    net = UNetMLP(point_dim=5, slot_dim=6, frame_dim=4, widths=(16, 8, 4))
    torch.nn.init.normal_(net.out.weight)
    point, slot, frame = torch.randn(2, 7, 5), torch.randn(2, 3, 6), torch.randn(2, 4)
    routes = torch.rand(2, 7, 3).softmax(-1)
    per_point = torch.cat([point, routes @ slot, frame[:, None].expand(-1, 7, -1)], dim=-1)
    weight = torch.cat([net.point_in.weight, net.slot_in.weight, net.frame_in.weight], dim=1)
    first = torch.nn.functional.leaky_relu(per_point @ weight.T + net.point_in.bias, 0.2)
    h1 = torch.nn.functional.leaky_relu(net.encoder[0](first), 0.2)
    h2 = torch.nn.functional.leaky_relu(net.encoder[1](h1), 0.2)
    d1 = torch.nn.functional.leaky_relu(net.decoder[0](torch.cat([h2, h1], -1)), 0.2)
    d0 = torch.nn.functional.leaky_relu(net.decoder[1](torch.cat([d1, first], -1)), 0.2)
    torch.testing.assert_close(net(point, slot, routes, frame), net.out(d0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["cross_attention", "concat", "naive", "none"])
def test_each_deformation_reads_what_its_ablation_row_says(kind):
    torch.manual_seed(0)
    field = CrossModalDeformation(dataclasses.replace(TINY, deformation=kind), AUDIO_DIM)
    for module in field.modules():
        if isinstance(module, UNetMLP):
            torch.nn.init.normal_(module.out.weight, std=0.1)
    planes = [torch.randn(1, 3, 4, s, s) for s in (16, 8, 4, 2)]
    other_planes = [torch.randn_like(p) for p in planes]
    audio, other_audio = torch.randn(1, 16, AUDIO_DIM), torch.randn(1, 16, AUDIO_DIM)
    points, xy = torch.randn(1, 5, 3) * 0.05, torch.rand(1, 5, 2) * 2 - 1

    def displacement(p, a):
        return field(points, xy, field.context(p, a))

    base = displacement(planes, audio)
    moved_by_audio = not torch.allclose(displacement(planes, other_audio), base)
    moved_by_image = not torch.allclose(displacement(other_planes, audio), base)
    assert (moved_by_audio, moved_by_image) == {"cross_attention": (True, True), "concat": (True, True),
                                                "naive": (True, False), "none": (False, False)}[kind]
    if kind == "none":
        assert torch.count_nonzero(base) == 0


@pytest.mark.parametrize("warp_source", [False, True])
def test_untrained_renders_are_the_source_where_rays_miss_the_head_and_differentiable_everywhere(warp_source):
    torch.manual_seed(0)
    model = S3DNeRF(dataclasses.replace(TINY, warp_source=warp_source), AUDIO_DIM)
    source = torch.rand(2, 3, 32, 32, requires_grad=True)
    src_cams = cameras([[0.0, 0.0, 0.6], [0.0, 0.0, 0.6]])
    # the first target looks at the head, the second one looks away from it
    target = cameras([[0.05, 0.0, 0.6], [0.0, 0.0, 0.6]])
    target.c2w[1] = torch.tensor(look_at(np.array([0.0, 0.0, 0.6]), np.array([0.0, 0.0, 2.0])), dtype=torch.float32)
    rendered = model(model.encode(source), source, src_cams, target, torch.randn(2, 16, AUDIO_DIM))
    assert rendered.image.shape == (2, 3, 32, 32) and rendered.opacity.shape == (2, 1, 8, 8)
    assert float(rendered.opacity[1].detach().max()) == 0.0
    torch.testing.assert_close(rendered.image[1], source[1], atol=1e-6, rtol=0)
    assert float(rendered.opacity[0].detach().max()) > 0.0
    rendered.image[0].sum().backward()
    assert source.grad is not None and float(source.grad[0].abs().sum()) > 0
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_the_landing_map_is_composited_for_the_flow_loss_without_changing_the_frame():
    """With the landmark-flow loss but not ``warp_source`` the render also composites where its rays land (for the
    loss) and the frame is the one rendered without it: the same weights, the same samples."""
    source = torch.rand(1, 3, 32, 32)
    src_cams, target = cameras([[0.0, 0.0, 0.6]]), cameras([[0.03, 0.0, 0.6]])
    audio = torch.randn(1, 16, AUDIO_DIM)
    frames = {}
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        model = S3DNeRF(dataclasses.replace(TINY, landmark_flow_weight=weight), AUDIO_DIM)
        frames[weight] = model(model.encode(source), source, src_cams, target, audio)
    assert frames[0.0].landing is None and frames[0.5].landing.shape == (1, 2, 8, 8)
    torch.testing.assert_close(frames[0.5].image, frames[0.0].image, atol=1e-6, rtol=0)
    # a ray's landing point is within the source image where the head covers it (not a colour, a coordinate)
    opacity = frames[0.5].opacity[0, 0]
    covered = opacity > 0.5 * opacity.max()
    assert float(opacity.max()) > 0.0
    landed = frames[0.5].landing[0] / frames[0.5].opacity[0]
    assert float(landed[:, covered].abs().max()) < 1.0


def test_an_untrained_convex_landing_map_renders_the_bilinear_frame_and_needs_the_warp():
    """``landing_upsampling: convex`` starts as bilinear upsampling: the same weights render the same frame, and
    the landing map the flow loss reads is the warp's, at the frame's size."""
    source = torch.rand(1, 3, 32, 32)
    src_cams, target = cameras([[0.0, 0.0, 0.6]]), cameras([[0.03, 0.0, 0.6]])
    audio = torch.randn(1, 16, AUDIO_DIM)
    frames = {}
    for upsampling in ("bilinear", "convex"):
        torch.manual_seed(0)
        model = S3DNeRF(dataclasses.replace(TINY, warp_source=True, landing_upsampling=upsampling), AUDIO_DIM)
        frames[upsampling] = model(model.encode(source), source, src_cams, target, audio)
    assert frames["convex"].landing.shape == (1, 2, 32, 32) == frames["bilinear"].landing.shape
    torch.testing.assert_close(frames["convex"].image, frames["bilinear"].image, atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="warp_source"):
        dataclasses.replace(TINY, landing_upsampling="convex")


def test_the_super_resolution_cannot_pass_the_hidden_source_through():
    torch.manual_seed(0)
    model = S3DNeRF(TINY, AUDIO_DIM)
    for layer in (model.super_resolution.net[-1].weight, model.super_resolution.net[-1].bias):
        torch.nn.init.normal_(layer, std=0.1)  # a trained residual, not the zero start
    source = torch.rand(1, 3, 32, 32, requires_grad=True)
    visible = torch.ones(1, 1, 32, 32)
    visible[..., 8:24, 8:24] = 0.0
    away = cameras([[0.0, 0.0, 0.6]])
    away.c2w[0] = torch.tensor(look_at(np.array([0.0, 0.0, 0.6]), np.array([0.0, 0.0, 2.0])), dtype=torch.float32)
    rendered = model(model.encode(source), source, cameras([[0.0, 0.0, 0.6]]), away,
                     torch.randn(1, 16, AUDIO_DIM), visible)
    assert float(rendered.opacity.detach().max()) == 0.0
    rendered.image.sum().backward()
    # with no render in front of it, the hidden square reaches the image only through the encoder's planes, which
    # rays that miss the head never read: the image does not depend on it at all
    assert float(source.grad[..., 8:24, 8:24].abs().max()) == 0.0
    assert float(source.grad[..., :8, :].abs().min()) > 0.0


def test_the_super_resolution_starts_from_the_render_over_the_visible_source():
    from talkhead_models.methods.s3dnerf.model import SuperResolution

    torch.manual_seed(0)
    sr = SuperResolution(feature_channels=5, channels=4)  # its residual starts at zero
    alpha, colour, source = torch.rand(1, 1, 4, 4), torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    visible = (torch.rand(1, 1, 4, 4) > 0.5).float()
    features = torch.cat([alpha * colour, torch.rand(1, 2, 4, 4)], dim=1)  # volume rendering's premultiplied RGB
    image = sr(features, alpha, source, visible)
    # "over", by hand, per pixel: the render's colour at its opacity, the source where visible behind it
    expected = torch.empty_like(source)
    for y in range(4):
        for x in range(4):
            a = float(alpha[0, 0, y, x])
            behind = source[0, :, y, x] if visible[0, 0, y, x] else torch.zeros(3)
            expected[0, :, y, x] = a * colour[0, :, y, x] + (1 - a) * behind
    torch.testing.assert_close(image, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shift", [0, 1])
def test_the_warped_source_is_read_where_the_rays_land(shift):
    """Rays landing ``shift`` render pixels right of their own pixel, at opacity a: the start is a x the source
    shifted by as many image pixels (by hand: a translation) + (1 - a) x the visible source, away from the border
    where the bilinear grid clamps; the coarse RGB does not reach it."""
    from talkhead_models.methods.s3dnerf.model import SuperResolution

    torch.manual_seed(0)
    sr = SuperResolution(feature_channels=5, channels=4)
    size, render, factor, alpha = 32, 8, 4, 0.75
    source = torch.rand(1, 3, size, size)
    centres = (torch.arange(render) + 0.5) / render * 2 - 1
    rows, columns = torch.meshgrid(centres, centres, indexing="ij")
    landing = alpha * torch.stack([columns + 2 * shift / render, rows])[None]  # premultiplied, like colours
    visible = (torch.rand(1, 1, size, size) > 0.5).float()
    features, cover = torch.rand(1, 5, render, render), torch.full((1, 1, render, render), alpha)
    image = sr(features, cover, source, visible, sr.landing(features, cover, landing, size))
    moved = torch.roll(source, -shift * factor, dims=-1)  # moved[..., x] = source[..., x + shift * factor]
    expected = alpha * moved + (1 - alpha) * source * visible
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2 - shift * factor))
    torch.testing.assert_close(image[inner], expected[inner], atol=1e-5, rtol=0)


def test_convex_upsampling_starts_as_bilinear_and_its_weights_choose_among_the_neighbours():
    from talkhead_models.methods.s3dnerf.model import SuperResolution, convex_upsample

    torch.manual_seed(0)
    scale, render = 4, 6
    sr = SuperResolution(feature_channels=5, channels=4, convex_scale=scale)
    features, opacity = torch.rand(2, 5, render, render), torch.rand(2, 1, render, render)
    landing = opacity * torch.rand(2, 2, render, render)
    # untrained, the convex map is torch's bilinear upsampling (align_corners=False clamps at the border, as the
    # replicated border does)
    landed, cover = sr.landing(features, opacity, landing, render * scale)
    torch.testing.assert_close(landed, F.interpolate(landing, scale_factor=scale, mode="bilinear"), atol=1e-5, rtol=0)
    torch.testing.assert_close(cover, F.interpolate(opacity, scale_factor=scale, mode="bilinear"), atol=1e-5, rtol=0)
    # all the weight on the centre neighbour: nearest-neighbour upsampling, by hand a repeat of every pixel
    logits = torch.full((2, 9, scale, scale, render, render), -1e4)
    logits[:, 4] = 0.0
    values = torch.rand(2, 3, render, render)
    nearest = values.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    torch.testing.assert_close(convex_upsample(values, logits.reshape(2, -1, render, render), scale), nearest)
    # all of it on the right-hand neighbour: every fine pixel of coarse column x takes column x + 1's value (the
    # last column its own, the border replicated)
    logits = torch.full((2, 9, scale, scale, render, render), -1e4)
    logits[:, 5] = 0.0
    shifted = torch.cat([values[..., 1:], values[..., -1:]], dim=-1)
    expected = shifted.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    torch.testing.assert_close(convex_upsample(values, logits.reshape(2, -1, render, render), scale), expected)


def test_the_colour_skip_decodes_a_change_of_the_source_colour():
    torch.manual_seed(0)
    decoder = TriPlaneDecoder(10, 8, 5)
    features, colour = torch.randn(4, 7, 10), torch.rand(4, 7, 3) * 0.9 + 0.05
    plain_density, plain = decoder(features)
    density, skipped = decoder(features, colour)
    torch.testing.assert_close(density, plain_density)
    torch.testing.assert_close(skipped[..., 3:], plain[..., 3:])  # only the RGB reads the colour
    torch.nn.init.zeros_(decoder.net[-1].weight)
    torch.nn.init.zeros_(decoder.net[-1].bias)
    # a decoder whose output is zero hands the colour back (up to the sigmoid's 1e-3 margin), and grey otherwise
    torch.testing.assert_close(decoder(features, colour)[1][..., :3], colour, atol=2e-3, rtol=0)
    torch.testing.assert_close(decoder(features)[1][..., :3], torch.full_like(colour, 0.5), atol=1e-6, rtol=0)


def test_minibatch_stddev_matches_numpy():
    x = torch.randn(8, 3, 2, 2, dtype=torch.float64)
    out = minibatch_stddev(x, group_size=4)
    groups = x.numpy().reshape(4, 2, 3, 2, 2)
    std = np.sqrt(groups.var(axis=0) + 1e-8).mean(axis=(1, 2, 3))  # per column of the group
    for sample in range(8):
        np.testing.assert_allclose(out[sample, 3].numpy(), std[sample % 2], atol=1e-12)


def test_r1_penalty_matches_finite_differences():
    torch.manual_seed(0)
    disc = Discriminator(8, (4, 4)).double()
    real = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    penalty = float(r1_penalty(disc, real).detach())
    eps, squares = 1e-6, []
    for sample in range(2):
        grad = np.zeros(real[sample].numel())
        for i in range(grad.size):
            delta = torch.zeros(real.numel(), dtype=torch.float64)
            delta[sample * grad.size + i] = eps
            up, _ = disc(real + delta.reshape(real.shape))
            down, _ = disc(real - delta.reshape(real.shape))
            grad[i] = float((up.sum() - down.sum()) / (2 * eps))
        squares.append((grad ** 2).sum())
    assert penalty == pytest.approx(np.mean(squares), rel=1e-5)
