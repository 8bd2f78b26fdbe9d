"""JEAN's dynamic NeRF (Sec. 3.3): AD-NeRF's MLP conditioned on audio and expression codes.

Per frame, the condition is e_in = [e_a, W e_e]: e_a is the AD-NeRF audio
encoder's code (AudioNet over each frame's feature window, AudioAttNet's
learned smoothing over ``audio_attention_frames`` neighbouring frames), and e_e
the expression code of the expression-source frame (the expression
transformer's, or the raw feature in the ablations), mapped to
``expression_condition_dim`` so that e_in has the paper's 96 dimensions.

The radiance field is AD-NeRF's: x positionally encoded with 10 frequencies
and, with e_in, through 8 ReLU layers of 128 (the input re-entering at the
fifth); density from the last hidden layer; colour from it and the viewing
direction (4 frequencies) through one more layer of 64. Positions and
directions are in the head's canonical frame (the tracked camera-to-world
maps the rays there), so the direction is the head pose as the paper says.
A coarse and a fine network are sampled hierarchically
(``components.volume.render_hierarchical``); rays are bounded by the head
box and composited over a backdrop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from talkhead_models.components.audio import AudioAttNet
from talkhead_models.components.encodings import FrequencyEncoding
from talkhead_models.components.head_prior import ShapePrior
from talkhead_models.components.hashgrid import HashGridConfig, HashGridEncoding
from talkhead_models.components.mlp import MLP
from talkhead_models.components.rays import get_rays, intersect_aabb
from talkhead_models.components.volume import RenderResult, render_hierarchical
from talkhead_models.methods.jean.config import JeanConfig
from talkhead_models.pretrained.audio_contrastive import ContrastiveAudioNet

MODEL_FILE = "model.pt"
PRIOR_DEPTH_RESOLUTION = 128
"""Cells per side of the solid-head prior's face depth map (R2-Talker's)."""


class JeanField(nn.Module):
    """One AD-NeRF radiance field: (x, d, e_in) -> (density, colour)."""

    def __init__(self, cfg: JeanConfig) -> None:
        super().__init__()
        self.hash_grid = cfg.position_encoding == "hashgrid"
        if self.hash_grid:
            self.position_encoding = HashGridEncoding(HashGridConfig(
                input_dim=3, num_levels=cfg.hash_levels, level_dim=cfg.hash_level_dim,
                base_resolution=cfg.hash_base_resolution, log2_hashmap_size=cfg.hash_log2_size,
                desired_resolution=cfg.hash_desired_resolution), backend="auto", bound=1.0)
            position_dim = cfg.hash_levels * cfg.hash_level_dim
        else:
            self.position_encoding = FrequencyEncoding(3, cfg.position_frequencies)
            position_dim = self.position_encoding.output_dim
        self.direction_encoding = FrequencyEncoding(3, cfg.direction_frequencies)
        trunk_input = position_dim + cfg.condition_dim
        skip = cfg.layers // 2 + 1 if cfg.layers > 2 else None
        self.trunk = MLP(trunk_input, cfg.hidden, cfg.hidden, cfg.layers, output_activation=nn.ReLU,
                         skips=(skip,) if skip is not None and skip < cfg.layers else ())
        self.density = nn.Linear(cfg.hidden, 1)
        self.feature = nn.Linear(cfg.hidden, cfg.hidden)
        self.colour = nn.Sequential(nn.Linear(cfg.hidden + self.direction_encoding.output_dim, cfg.hidden // 2),
                                    nn.ReLU(), nn.Linear(cfg.hidden // 2, 3), nn.Sigmoid())

    def forward(self, positions: Tensor, directions: Tensor, condition: Tensor) -> tuple[Tensor, Tensor]:
        """``positions``/``directions`` [R, S, 3]; ``condition`` [C] (one frame) or [R, 1, C] (one per ray) ->
        density [R, S], colour [R, S, 3]."""
        shape = positions.shape[:-1]
        encoded = self.position_encoding(positions.reshape(-1, 3)).view(*shape, -1)
        # The condition is the trunk's input after x's encoding (as concatenated), computed once per ray.
        hidden = self.trunk(encoded, shared=condition)
        raw = self.density(hidden).squeeze(-1)
        # AD-NeRF's ReLU; with the hash grid's near-zero initial features a ReLU starts (and stays) dead on
        # most samples, so that aid takes Mip-NeRF's shifted softplus, which always passes a gradient.
        density = torch.nn.functional.softplus(raw - 1.0) if self.hash_grid else torch.relu(raw)
        colour = self.colour(torch.cat([self.feature(hidden), self.direction_encoding(directions)], dim=-1))
        return density, colour


class JeanModel(nn.Module):
    """Coarse and fine fields, the audio encoder (fine-tuned) and the expression input map."""

    def __init__(self, cfg: JeanConfig, box: np.ndarray, audio_feature_dim: int | None,
                 expression_input_dim: int | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("box", torch.as_tensor(np.asarray(box, np.float32)))
        self.audio_net = self.audio_attention = None
        if cfg.audio_encoder != "none":
            if audio_feature_dim is None:
                raise ValueError("an audio-driven JEAN needs the audio feature width")
            # AudioNet on standardised features (the pre-trained encoder's own class, so its weights and
            # normaliser load as they are; an encoder trained from scratch gets the training frames' statistics).
            self.audio_net = ContrastiveAudioNet(audio_feature_dim, cfg.audio_dim)
            self.audio_attention = AudioAttNet(cfg.audio_attention_frames)
        self.expression_map = None
        if cfg.expression_feature != "none":
            if expression_input_dim is None:
                raise ValueError("an expression-driven JEAN needs the expression input width")
            self.expression_map = nn.Linear(expression_input_dim, cfg.expression_condition_dim)
        self.coarse = JeanField(cfg)
        self.fine = JeanField(cfg)
        if cfg.surface_band > 0:
            # The solid-head prior travels with the weights (set by the trainer, loaded with the state dict).
            self.register_buffer("prior_centre", torch.zeros(3))
            self.register_buffer("prior_radii", torch.ones(3))
            self.register_buffer("prior_depth", torch.full((PRIOR_DEPTH_RESOLUTION,) * 2, float("nan")))

    def set_prior(self, prior: ShapePrior) -> None:
        """Keep ``prior`` (built over this model's box) for :meth:`render_rays`' ray bounds."""
        self.prior_centre.copy_(prior.centre)
        self.prior_radii.copy_(prior.radii)
        # Without a depth map (no landmarks) NaN everywhere: the ellipsoid alone is the head.
        self.prior_depth.copy_(prior.depth if prior.depth is not None else torch.full_like(self.prior_depth,
                                                                                          float("nan")))

    def prior(self) -> ShapePrior | None:
        """The solid-head prior the rays are bounded around, or None (``surface_band`` 0: the whole box)."""
        if self.cfg.surface_band <= 0:
            return None
        return ShapePrior(self.prior_centre, self.prior_radii, self.prior_depth, self.box)

    def audio_code(self, windows: Tensor) -> Tensor:
        """[B, frames, 16, D] feature windows of each frame's neighbours -> e_a [B, audio_dim]."""
        batch, frames = windows.shape[:2]
        codes = self.audio_net(windows.flatten(0, 1)).view(batch, frames, -1)
        return self.audio_attention(codes)

    def condition(self, audio_windows: Tensor | None, expression: Tensor | None) -> Tensor:
        """e_in [B, condition_dim] from audio windows [B, frames, 16, D] and expression inputs [B, E]."""
        parts = []
        if self.audio_net is not None:
            parts.append(self.audio_code(audio_windows))
        if self.expression_map is not None:
            parts.append(self.expression_map(expression))
        return torch.cat(parts, dim=-1)

    def ray_bounds(self, origins: Tensor, directions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(near, far, hit) [R] of where rays in the scene frame are sampled; ``hit`` False: the ray is empty.

        The head box; with ``surface_band``, only rays that meet the solid-head prior's ellipsoid grown by
        ``surface_envelope``, and those that meet the prior itself only in its band.
        """
        near, far, hit = intersect_aabb(origins, directions, self.box)
        prior = self.prior()
        if prior is None:
            return near, far, hit
        hit = hit & prior.meets_ellipsoid(origins, directions, self.cfg.surface_envelope)
        far = torch.where(hit, far, near)  # zero length: no matter, as for rays that miss the box
        inside = torch.nonzero(hit).squeeze(-1)
        near[inside], far[inside] = prior.surface_bounds(origins[inside], directions[inside], near[inside],
                                                         far[inside], self.cfg.surface_band,
                                                         self.cfg.surface_band_behind)
        return near, far, hit

    def render_rays(self, condition: Tensor, origins: Tensor, directions: Tensor, perturb: bool,
                    generator: torch.Generator | None = None,
                    bounds: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[RenderResult, RenderResult, Tensor]:
        """(coarse, fine, hit) for rays in the scene frame under one frame's ``condition`` [C].

        Colours are premultiplied (no backdrop): the caller composites. Rays outside :meth:`ray_bounds` get
        nothing; ``bounds`` are those rays' :meth:`ray_bounds` when the caller has them already.
        """
        near, far, hit = bounds if bounds is not None else self.ray_bounds(origins, directions)
        coarse, fine = render_hierarchical(
            lambda x, d: self.coarse(x, d, condition), lambda x, d: self.fine(x, d, condition),
            origins, directions, near, far, self.cfg.coarse_samples, self.cfg.fine_samples, perturb=perturb,
            generator=generator)
        return coarse, fine, hit


def camera_rays(c2w_scene: Tensor, focal: float, cx: float, cy: float, size: int, pixels: Tensor,
                source_size: int) -> tuple[Tensor, Tensor]:
    """Rays of ``pixels`` of a ``size`` px rendering of a camera calibrated at ``source_size`` px."""
    scale = size / source_size
    rays = get_rays(c2w_scene, focal * scale, cx * scale, cy * scale, size, size, pixels)
    return rays.origins, rays.directions


@torch.no_grad()
def render_frame(model: JeanModel, condition: Tensor, c2w_scene: Tensor, intrinsics: tuple[float, float, float],
                 size: int, source_size: int, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """The fine network's premultiplied colour [size, size, 3] and opacity [size, size] of a whole frame.

    Only rays :meth:`JeanModel.ray_bounds` hits are marched (the others are empty).
    """
    focal, cx, cy = intrinsics
    pixels = torch.arange(size * size, device=c2w_scene.device)
    origins, directions = camera_rays(c2w_scene, focal, cx, cy, size, pixels, source_size)
    near, far, hit = model.ray_bounds(origins, directions)
    colour = torch.zeros(size * size, 3, device=c2w_scene.device)
    opacity = torch.zeros(size * size, device=c2w_scene.device)
    inside = torch.nonzero(hit).squeeze(-1)
    for start in range(0, len(inside), chunk):
        index = inside[start:start + chunk]
        _, fine, _ = model.render_rays(condition, origins[index], directions[index], perturb=False,
                                       bounds=(near[index], far[index], hit[index]))
        colour[index] = fine.color
        opacity[index] = fine.opacity
    return colour.view(size, size, 3), opacity.view(size, size)


def save_model(path: Path, model: JeanModel, record: dict) -> None:
    """``model.pt``: the state dict and plain-data settings (loads with ``weights_only=True``)."""
    torch.save({"state_dict": model.state_dict(), **record}, path)
