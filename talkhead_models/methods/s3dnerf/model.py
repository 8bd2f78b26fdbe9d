"""S3D-NeRF's generator: one source image and audio in, a rendered frame at a target camera out.

Coordinates: cameras are the tracker's OpenGL camera-to-world matrices in
the head frame (metres, the face plane at z = 0; components/rays.py). A
3D point of a target ray is deformed by the cross-modal deformation field,
then located on the source image's tri-planes through the source camera:

* the xy plane is indexed by the point's projection into the source image
  (normalised to [-1, 1]), so its features are pixel-aligned with the
  encoder's feature maps, and the other two planes by that projection and
  the point's depth in the source camera, normalised over the head cube
  (``box_half_extent`` around ``box_centre_z``);
* the four scales' plane features are averaged over the three planes and
  concatenated across scales, with the source image's colour at the
  projection (pixel-aligned, as pixelNeRF reads its image; the paper does
  not say whether its features carry the colour), and a small MLP decodes
  density and a ``feature_channels``-wide feature whose first three
  channels are RGB (EG3D's decoder).

The feature image is volume-rendered at ``render_size`` (densities per half
side of the head cube) and the super-resolution network brings it to
``image_size``, filling what the head does not cover from the source image.
With ``sr_source: outside_face`` it never sees the source's inner face, so
the face in a frame is the neural render's: shown the whole source, it
learned to pass the source's face through and the render faded out.

The deformation field routes the cross-modal feature to a point through the
slot-attention map: each slot owns parts of the source image (its attention
over the visual tokens), and a point takes the slots' cross-attended
features weighted by the ownership at its projection. The paper's heatmap
(attention highest on the lower face) is this routing seen from the audio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkhead_models.components.encodings import FrequencyEncoding
from talkhead_models.components.rays import intersect_aabb, pixel_directions
from talkhead_models.components.volume import (composite, importance_samples, interval_widths, merge_samples,
                                                query_field, sample_stratified)
from talkhead_models.methods.s3dnerf.config import S3DNeRFConfig

_LRELU = 0.2


# ---------------------------------------------------------------------------------------------------------------
# Cameras


@dataclass
class Cameras:
    """Pinhole cameras of a batch: OpenGL camera-to-world [B, 4, 4] (head frame, metres), intrinsics in pixels of
    an image ``size`` wide and high."""

    c2w: Tensor
    focal: Tensor  # [B]
    cx: Tensor  # [B]
    cy: Tensor  # [B]
    size: int

    def resized(self, size: int) -> "Cameras":
        """The same cameras for square images of side ``size`` (pixel-centre convention kept)."""
        scale = size / self.size
        return Cameras(self.c2w, self.focal * scale, self.cx * scale, self.cy * scale, size)


def project(points: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor]:
    """Head-frame points [B, P, 3] -> (image coordinates in [-1, 1] (x right, y down; grid_sample's
    ``align_corners=False`` convention) [B, P, 2], depth along the viewing axis [B, P])."""
    rotation, origin = cameras.c2w[:, :3, :3], cameras.c2w[:, :3, 3]
    local = torch.einsum("bpj,bjk->bpk", points - origin[:, None], rotation)  # R^T (x - t)
    depth = -local[..., 2]
    safe = torch.where(depth.abs() < 1e-6, torch.full_like(depth, 1e-6), depth)
    column = cameras.focal[:, None] * local[..., 0] / safe + cameras.cx[:, None]
    row = -cameras.focal[:, None] * local[..., 1] / safe + cameras.cy[:, None]
    normalised = torch.stack([2.0 * column / cameras.size - 1.0, 2.0 * row / cameras.size - 1.0], dim=-1)
    return normalised, depth


# ---------------------------------------------------------------------------------------------------------------
# Hierarchical facial appearance encoder (Sec. 3.1)


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), nn.LeakyReLU(_LRELU))


class AppearanceEncoder(nn.Module):
    """FPN over the source image: D_0..D_3 at strides 2, 4, 8 and 16; top-down, each scale concatenates its D_i
    with the upsampled coarser output, and each output F_i is reshaped into three planes of ``plane_channels``."""

    def __init__(self, channels: tuple[int, ...], plane_channels: int) -> None:
        super().__init__()
        self.plane_channels = plane_channels
        widths = (3, *channels)
        self.down = nn.ModuleList(nn.Sequential(_conv(widths[i], widths[i + 1], stride=2),
                                                _conv(widths[i + 1], widths[i + 1])) for i in range(4))
        planes = 3 * plane_channels
        self.top_down = nn.ModuleList(
            _conv(channels[i] + (planes if i < 3 else 0), planes) for i in range(4))
        self.to_planes = nn.ModuleList(nn.Conv2d(planes, planes, 1) for _ in range(4))

    def forward(self, image: Tensor) -> list[Tensor]:
        """[B, 3, S, S] in [0, 1] -> four tri-planes [B, 3, C, S / 2^(i+1), S / 2^(i+1)], finest first."""
        features, h = [], image * 2.0 - 1.0
        for stage in self.down:
            h = stage(h)
            features.append(h)
        outputs: list[Tensor] = [torch.empty(0)] * 4
        coarser = None
        for i in reversed(range(4)):
            h = features[i]
            if coarser is not None:
                h = torch.cat([h, F.interpolate(coarser, size=h.shape[-2:], mode="bilinear", align_corners=False)], 1)
            coarser = self.top_down[i](h)
            outputs[i] = coarser
        return [plane(o).unflatten(1, (3, self.plane_channels)) for plane, o in zip(self.to_planes, outputs)]


def plane_coordinates(image_xy: Tensor, depth_normalised: Tensor) -> Tensor:
    """[B, P, 2] projection and [B, P] normalised depth -> [B, 3, P, 2]: the xy, xz and yz planes' lookups."""
    x, y, z = image_xy[..., 0], image_xy[..., 1], depth_normalised
    return torch.stack([torch.stack([x, y], -1), torch.stack([x, z], -1), torch.stack([z, y], -1)], dim=1)


def sample_triplanes(planes: list[Tensor], coordinates: Tensor) -> Tensor:
    """Bilinear features of every scale at ``coordinates`` [B, 3, P, 2]: the three planes averaged, scales
    concatenated -> [B, P, 4 C]. Outside [-1, 1] a plane reads zeros."""
    batch, _, points, _ = coordinates.shape
    grid = coordinates.reshape(batch * 3, points, 1, 2)
    sampled = []
    for scale in planes:
        flat = scale.reshape(batch * 3, *scale.shape[2:])
        values = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled.append(values[..., 0].reshape(batch, 3, -1, points).mean(1))  # [B, C, P]
    return torch.cat(sampled, dim=1).transpose(1, 2)


# ---------------------------------------------------------------------------------------------------------------
# Cross-modal deformation field (Sec. 3.2)


class SlotAttention(nn.Module):
    """Locatello et al. (2020): slots compete for the input tokens (softmax over slots), each slot is updated by a
    GRU from the attention-weighted mean of the tokens, then a residual MLP.

    Slots start at a learned mean; with ``noise`` they are drawn around it with a learned spread (training).
    """

    def __init__(self, num_slots: int, dim: int, iterations: int) -> None:
        super().__init__()
        self.num_slots, self.dim, self.iterations = num_slots, dim, iterations
        self.slot_mean = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)
        self.slot_log_std = nn.Parameter(torch.full((1, 1, dim), -2.0))
        self.norm_inputs, self.norm_slots, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, tokens: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """[B, N, D] tokens -> (slots [B, K, D], attention [B, K, N]: each token's share per slot, summing to 1
        over the slots). ``noise`` [B, K, D] perturbs the initial slots."""
        batch = tokens.shape[0]
        slots = self.slot_mean.expand(batch, self.num_slots, -1)
        if noise is not None:
            slots = slots + self.slot_log_std.exp() * noise
        tokens = self.norm_inputs(tokens)
        keys, values = self.to_k(tokens), self.to_v(tokens)
        attention = tokens.new_zeros(batch, self.num_slots, tokens.shape[1])
        for _ in range(self.iterations):
            queries = self.to_q(self.norm_slots(slots))
            logits = torch.einsum("bkd,bnd->bkn", queries, keys) / math.sqrt(self.dim)
            attention = logits.softmax(dim=1) + 1e-8
            weights = attention / attention.sum(dim=-1, keepdim=True)
            updates = torch.einsum("bkn,bnd->bkd", weights, values)
            slots = self.gru(updates.reshape(-1, self.dim), slots.reshape(-1, self.dim)).reshape(batch, -1, self.dim)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attention


class AudioEncoder(nn.Module):
    """A 1D fully convolutional audio encoder: a frame's window of audio features [B, 16, D] -> tokens
    [B, 4, E] (two stride-2 convolutions over time), the keys and values of the cross-attention."""

    def __init__(self, feature_dim: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv1d(feature_dim, dim, 3, padding=1), nn.LeakyReLU(_LRELU),
            nn.Conv1d(dim, dim, 3, stride=2, padding=1), nn.LeakyReLU(_LRELU),
            nn.Conv1d(dim, dim, 3, stride=2, padding=1))

    def forward(self, windows: Tensor) -> Tensor:
        return self.layers(windows.transpose(1, 2)).transpose(1, 2)


class UNetMLP(nn.Module):
    """The deformation predictor: an MLP shaped as a U-Net, widths narrowing then widening with each decoder
    layer also reading the encoder layer of its width (skip connections); the last layer starts at zero, so the
    field starts as the identity.

    The first layer is split by input: the per-point part (encoded position) and a per-point mixture of
    per-slot parts (``slot_inputs`` [B, K, Ds] routed by ``routes`` [B, P, K]) and a per-frame part
    (``frame_inputs`` [B, Df]). Linear layers commute with the mixing, so the slot and frame terms are
    projected once per slot and frame instead of once per point: the same function as concatenating every
    input per point.
    """

    def __init__(self, point_dim: int, slot_dim: int, frame_dim: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.point_in = nn.Linear(point_dim, widths[0])
        self.slot_in = nn.Linear(slot_dim, widths[0], bias=False) if slot_dim else None
        self.frame_in = nn.Linear(frame_dim, widths[0], bias=False) if frame_dim else None
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        reversed_widths = widths[::-1]
        self.decoder = nn.ModuleList(nn.Linear(a + b, b) for a, b in zip(reversed_widths[:-1], reversed_widths[1:]))
        self.out = nn.Linear(widths[0], 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, point_inputs: Tensor, slot_inputs: Tensor | None = None, routes: Tensor | None = None,
                frame_inputs: Tensor | None = None) -> Tensor:
        """[B, P, Dp] (+ [B, K, Ds] with [B, P, K], + [B, Df]) -> displacement [B, P, 3]."""
        h = self.point_in(point_inputs)
        if self.slot_in is not None:
            h = h + torch.einsum("bpk,bkw->bpw", routes, self.slot_in(slot_inputs))
        if self.frame_in is not None:
            h = h + self.frame_in(frame_inputs)[:, None]
        skips = [F.leaky_relu(h, _LRELU)]
        for layer in self.encoder:
            skips.append(F.leaky_relu(layer(skips[-1]), _LRELU))
        h = skips.pop()
        for layer in self.decoder:
            h = F.leaky_relu(layer(torch.cat([h, skips.pop()], dim=-1)), _LRELU)
        return self.out(h)


@dataclass
class DeformationContext:
    """Per-batch inputs of the deformation field, computed once per source image and frame."""

    slot_features: Tensor | None  # [B, K, D]: cross-attended (cross_attention) or plain slots (concat)
    slot_maps: Tensor | None  # [B, K, g, g]: each slot's share of the source image's tokens
    audio: Tensor | None  # [B, D]: the frame's pooled audio feature


class CrossModalDeformation(nn.Module):
    """Delta x = Deform(x, a_dri, F_cm) (Sec. 3.2) and the ablation's simpler fields."""

    def __init__(self, cfg: S3DNeRFConfig, audio_dim: int) -> None:
        super().__init__()
        self.kind = cfg.deformation
        self.half_extent = cfg.box_half_extent
        self.register_buffer("centre", torch.tensor([0.0, 0.0, cfg.box_centre_z]), persistent=False)
        if self.kind == "none":
            return
        dim = cfg.embed_dim
        self.position = FrequencyEncoding(3, cfg.position_frequencies)
        self.audio_encoder = AudioEncoder(audio_dim, dim)
        if self.kind in ("cross_attention", "concat"):
            self.token_projection = nn.Linear(3 * cfg.plane_channels, dim)
            self.token_positions = nn.Parameter(torch.zeros(1, 4 * cfg.token_grid ** 2, dim))
            nn.init.normal_(self.token_positions, std=0.02)
            self.slots = SlotAttention(cfg.num_slots, dim, cfg.slot_iterations)
            self.token_grid = cfg.token_grid
        if self.kind == "cross_attention":
            self.cross_attention = nn.MultiheadAttention(dim, cfg.attention_heads, batch_first=True)
        slot_dim = dim if self.kind in ("cross_attention", "concat") else 0
        self.unet = UNetMLP(self.position.output_dim, slot_dim, dim, cfg.deform_widths)

    def context(self, planes: list[Tensor], audio_windows: Tensor, slot_noise: Tensor | None = None
                ) -> DeformationContext:
        """The per-frame inputs: ``planes`` of the source image (repeated per target frame) and the frames'
        audio windows [B, 16, D]."""
        if self.kind == "none":
            return DeformationContext(None, None, None)
        tokens_audio = self.audio_encoder(audio_windows)  # [B, T, D]
        audio = tokens_audio.mean(1)
        if self.kind == "naive":
            return DeformationContext(None, None, audio)
        grid = self.token_grid
        tokens = torch.cat([F.adaptive_avg_pool2d(scale.flatten(1, 2), grid).flatten(2).transpose(1, 2)
                            for scale in planes], dim=1)  # [B, 4 g^2, 3C]
        tokens = self.token_projection(tokens) + self.token_positions
        slots, attention = self.slots(tokens, slot_noise)
        maps = attention.reshape(attention.shape[0], attention.shape[1], 4, grid, grid).mean(2)
        if self.kind == "cross_attention":
            slots, _ = self.cross_attention(slots, tokens_audio, tokens_audio, need_weights=False)
        return DeformationContext(slots, maps, audio)

    def forward(self, points: Tensor, source_xy: Tensor, context: DeformationContext) -> Tensor:
        """Displacement [B, P, 3] in metres of head-frame ``points`` [B, P, 3]; ``source_xy`` [B, P, 2] is their
        projection into the source image (where the slot maps are read)."""
        if self.kind == "none":
            return torch.zeros_like(points)
        encoded = self.position((points - self.centre) / self.half_extent)
        routes = None
        if context.slot_maps is not None:
            routes = F.grid_sample(context.slot_maps, source_xy[:, :, None], mode="bilinear",
                                   padding_mode="border", align_corners=False)[..., 0].transpose(1, 2)
            routes = routes / routes.sum(-1, keepdim=True).clamp_min(1e-6)
        return self.half_extent * self.unet(encoded, context.slot_features, routes, context.audio)


# ---------------------------------------------------------------------------------------------------------------
# Rendering and super-resolution (Sec. 3.3)


class TriPlaneDecoder(nn.Module):
    """EG3D's decoder: plane features -> (density, features); the first three features are RGB in [0, 1]."""

    def __init__(self, in_dim: int, hidden: int, feature_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Softplus(), nn.Linear(hidden, 1 + feature_channels))

    def forward(self, features: Tensor, base_colour: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """[..., D] -> (density [...], features [..., C]); with ``base_colour`` [..., 3] the RGB is decoded as a
        change of it (its logit plus the network's output), so an untrained decoder passes it through."""
        out = self.net(features)
        density = F.softplus(out[..., 0] - 1.0)
        logits = out[..., 1:]
        if base_colour is not None:
            logits = torch.cat([logits[..., :3] + torch.logit(base_colour.clamp(1e-3, 1 - 1e-3)), logits[..., 3:]],
                               dim=-1)
        return density, torch.sigmoid(logits) * (1 + 2e-3) - 1e-3


class SuperResolution(nn.Module):
    """Low-resolution feature image + opacity + the visible part of the source image -> the frame. The start is
    the upsampled coarse RGB (premultiplied by its opacity, as volume rendering gives it) over the visible source;
    the convolutions add a residual. ``visible`` [B, 1, S, S] is 1 where the network may read the source image:
    the source's inner face hidden (``sr_source: outside_face``), the face can only come from the neural render.
    With a landing map (the ``warp_source`` aid, :meth:`landing`) the render's part of the start is the source
    image warped to the target by where the render's rays land in it, at full resolution, instead of the coarse
    RGB. ``convex_scale`` (``landing_upsampling: convex``): the landing map is upsampled by that factor as RAFT
    upsamples its flow, with weights predicted from the features; None: bilinearly."""

    def __init__(self, feature_channels: int, channels: int, convex_scale: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(_conv(feature_channels + 1 + 3 + 1, channels), _conv(channels, channels),
                                 nn.Conv2d(channels, 3, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.convex_scale = convex_scale
        if convex_scale is not None:
            self.landing_weights = nn.Sequential(_conv(feature_channels + 1, channels),
                                                 nn.Conv2d(channels, 9 * convex_scale ** 2, 1))
            # starts as bilinear upsampling: zero residual over the bilinear weights' logits
            nn.init.zeros_(self.landing_weights[-1].weight)
            self.landing_weights[-1].bias.data.copy_(bilinear_neighbour_weights(convex_scale).clamp_min(1e-6).log())

    def landing(self, features: Tensor, opacity: Tensor, source_xy: Tensor, size: int) -> tuple[Tensor, Tensor]:
        """Where the rays land, ``source_xy`` [B, 2, r, r] premultiplied by ``opacity`` [B, 1, r, r], and that
        opacity, both upsampled to the frame's ``size``: a frame pixel's landing point is the one divided by the
        other."""
        if self.convex_scale is None:
            return (F.interpolate(source_xy, size=size, mode="bilinear", align_corners=False),
                    F.interpolate(opacity, size=size, mode="bilinear", align_corners=False))
        if opacity.shape[-1] * self.convex_scale != size:
            raise ValueError(f"convex upsampling by {self.convex_scale} turns {opacity.shape[-1]} px into "
                             f"{opacity.shape[-1] * self.convex_scale}, not {size}")
        logits = self.landing_weights(torch.cat([features, opacity], dim=1))
        return (convex_upsample(source_xy, logits, self.convex_scale),
                convex_upsample(opacity, logits, self.convex_scale))

    def forward(self, features: Tensor, opacity: Tensor, source: Tensor, visible: Tensor,
                landing: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``features`` [B, C, r, r] (premultiplied), ``opacity`` [B, 1, r, r], ``source`` [B, 3, S, S] (all of
        it: ``visible`` hides what the network may not read), ``landing``: :meth:`landing`'s premultiplied map
        and opacity at S."""
        size = source.shape[-2:]
        features = F.interpolate(features, size=size, mode="bilinear", align_corners=False)
        if landing is None:
            up_opacity = F.interpolate(opacity, size=size, mode="bilinear", align_corners=False)
            render = features[:, :3]
        else:  # composited at the landing map's opacity (convex-upsampled with it)
            landed, up_opacity = landing
            grid = landed / up_opacity.clamp_min(1e-3)
            warped = F.grid_sample(source, grid.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                                   align_corners=False)
            render = up_opacity * warped
        source = source * visible
        base = render + (1.0 - up_opacity) * source
        return base + self.net(torch.cat([features, up_opacity, source, visible], dim=1))


def bilinear_neighbour_weights(scale: int) -> Tensor:
    """[9 * scale^2]: the weight bilinear upsampling by ``scale`` (align_corners=False) gives each of a coarse
    pixel's 3 x 3 neighbours (row-major) at each of its scale x scale fine pixels (row-major), laid out as
    :func:`convex_upsample` reads its logits."""
    impulses = torch.eye(9).reshape(9, 1, 3, 3)
    fine = F.interpolate(impulses, scale_factor=scale, mode="bilinear", align_corners=False)
    return fine[:, 0, scale:2 * scale, scale:2 * scale].reshape(-1)


def convex_upsample(values: Tensor, logits: Tensor, scale: int) -> Tensor:
    """[B, C, r, r] -> [B, C, r*scale, r*scale]: each fine pixel the softmax(``logits``)-weighted mean of its
    coarse pixel's 3 x 3 neighbours (RAFT's convex upsampling; borders replicated). ``logits`` [B, 9*scale^2, r,
    r], neighbour-major."""
    batch, channels, height, width = values.shape
    weights = logits.reshape(batch, 1, 9, scale, scale, height, width).softmax(dim=2)
    padded = F.pad(values, (1, 1, 1, 1), mode="replicate")
    neighbours = F.unfold(padded, 3).reshape(batch, channels, 9, 1, 1, height, width)
    fine = (weights * neighbours).sum(dim=2)  # [B, C, s, s, r, r]
    return fine.permute(0, 1, 4, 2, 5, 3).reshape(batch, channels, height * scale, width * scale)


@dataclass
class Rendered:
    """A batch of rendered frames."""

    image: Tensor  # [B, 3, S, S] (not clamped while training)
    opacity: Tensor  # [B, 1, r, r]
    coarse: Tensor  # [B, 3, r, r] the neural render's RGB (over black), before super-resolution
    displacement: Tensor  # [B, P] squared displacement at every sample, in units of the cube's half side
    landing: Tensor | None = None  # [B, 2, h, h] where the rays land in the source image, premultiplied like the
    # colours (grid_sample coordinates x opacity); composited with ``warp_source`` (at image_size, as the warp
    # reads it) or the landmark-flow loss alone (at render_size)
    landing_opacity: Tensor | None = None  # [B, 1, h, h] the opacity ``landing`` is premultiplied by


def landing_at(landing: Tensor, opacity: Tensor, points: Tensor) -> Tensor:
    """Where the rays through ``points`` [B, L, 2] (grid_sample coordinates of the rendered frame) land in the
    source image [B, L, 2]: the composited landing map and opacity read bilinearly there, the one divided by the
    other (a ray's mean landing point, its samples weighted as volume rendering weighs colours)."""
    grid = points[:, :, None]
    landed = F.grid_sample(landing, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0]
    cover = F.grid_sample(opacity, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0]
    return (landed / cover.clamp_min(1e-3)).transpose(1, 2)


class S3DNeRF(nn.Module):
    """The generator: encoder, deformation field, tri-plane decoder and super-resolution."""

    def __init__(self, cfg: S3DNeRFConfig, audio_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = AppearanceEncoder(cfg.encoder_channels, cfg.plane_channels)
        self.deformation = CrossModalDeformation(cfg, audio_dim)
        self.decoder = TriPlaneDecoder(4 * cfg.plane_channels + 3, cfg.decoder_hidden, cfg.feature_channels)
        self.super_resolution = SuperResolution(
            cfg.feature_channels, cfg.sr_channels,
            cfg.image_size // cfg.render_size if cfg.landing_upsampling == "convex" else None)
        half, z = cfg.box_half_extent, cfg.box_centre_z
        self.register_buffer("aabb", torch.tensor([-half, -half, z - half, half, half, z + half]), persistent=False)

    def encode(self, source: Tensor) -> list[Tensor]:
        """Source images [B, 3, S, S] in [0, 1] -> their multi-scale tri-planes."""
        return self.encoder(source)

    def forward(self, planes: list[Tensor], source: Tensor, source_cameras: Cameras, target_cameras: Cameras,
                audio_windows: Tensor, source_visible: Tensor | None = None, perturb: bool = False,
                generator: torch.Generator | None = None, slot_noise: Tensor | None = None) -> Rendered:
        """Render one target frame per batch entry: ``planes`` and ``source`` [B, 3, S, S] of its source image,
        both cameras [B], the frame's audio window [B, 16, D]; ``source_visible`` [B, 1, S, S] is what of the
        source the super-resolution may read (all of it when None)."""
        cfg = self.cfg
        batch, size = source.shape[0], cfg.render_size
        context = self.deformation.context(planes, audio_windows, slot_noise)
        cameras = target_cameras.resized(size)
        pixels = torch.arange(size * size, device=source.device)
        directions = torch.stack([pixel_directions(pixels, size, f, x, y) for f, x, y in
                                  zip(cameras.focal, cameras.cx, cameras.cy)])  # [B, R, 3]
        directions = F.normalize(torch.einsum("brj,bkj->brk", directions, cameras.c2w[:, :3, :3]), dim=-1)
        origins = cameras.c2w[:, None, :3, 3].expand_as(directions)
        near, far, _ = intersect_aabb(origins.reshape(-1, 3), directions.reshape(-1, 3), self.aabb)
        source_depth_centre = project(self.aabb.new_tensor([[0.0, 0.0, cfg.box_centre_z]]).expand(batch, 1, 3),
                                      source_cameras)[1]  # [B, 1]
        squared_shift: list[Tensor] = []
        landing = cfg.warp_source or cfg.landmark_flow_weight > 0

        def field(positions: Tensor, _directions: Tensor) -> tuple[Tensor, Tensor]:
            points = positions.reshape(batch, -1, 3)
            source_xy, _ = project(points, source_cameras)
            moved = points + self.deformation(points, source_xy, context)
            squared_shift.append(((moved - points) / cfg.box_half_extent).square().sum(-1))
            moved_xy, depth = project(moved, source_cameras)
            depth = (depth - source_depth_centre) / cfg.box_half_extent
            features = sample_triplanes(planes, plane_coordinates(moved_xy, depth))
            colour = F.grid_sample(source, moved_xy[:, :, None], mode="bilinear", padding_mode="border",
                                   align_corners=False)[..., 0].transpose(1, 2)
            density, colours = self.decoder(torch.cat([features, colour], dim=-1),
                                            colour if cfg.colour_skip else None)
            # per half side of the head cube, not per metre: an untrained field then makes a ray through the
            # cube about half opaque rather than 3% (the pixel loss alone barely raised that, docs/HISTORY.md)
            density = density / cfg.box_half_extent
            if landing:  # composited like the colours: the render's mean source coordinates
                colours = torch.cat([colours, moved_xy], dim=-1)
            return density.reshape(positions.shape[:-1]), colours.reshape(*positions.shape[:-1], -1)

        flat_origins, flat_directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        t_coarse, deltas = sample_stratified(near, far, cfg.samples_coarse, perturb, generator)
        samples = query_field(field, flat_origins, flat_directions, t_coarse)
        result = composite(samples.densities, samples.colors, deltas, t_coarse)
        if cfg.samples_fine:
            # One field serves both passes, so the fine pass queries only its new samples.
            t_fine = importance_samples(t_coarse, result.weights, near, far, cfg.samples_fine, perturb, generator)
            samples = merge_samples(samples, query_field(field, flat_origins, flat_directions, t_fine))
            result = composite(samples.densities, samples.colors, interval_widths(samples.t_values, near, far),
                               samples.t_values)
        features = result.color.reshape(batch, size, size, -1).permute(0, 3, 1, 2)
        source_xy = None
        if landing:
            features, source_xy = features[:, :-2], features[:, -2:]
        opacity = result.opacity.reshape(batch, 1, size, size)
        if source_visible is None:
            source_visible = torch.ones_like(source[:, :1])
        landed = None  # (where the rays land, premultiplied, and its opacity), at the resolution the warp reads
        if cfg.warp_source:
            landed = self.super_resolution.landing(features, opacity, source_xy, cfg.image_size)
        elif landing:
            landed = source_xy, opacity
        image = self.super_resolution(features, opacity, source, source_visible,
                                      landed if cfg.warp_source else None)
        return Rendered(image=image, opacity=opacity, coarse=features[:, :3],
                        displacement=torch.cat(squared_shift, dim=-1),
                        landing=None if landed is None else landed[0],
                        landing_opacity=None if landed is None else landed[1])

