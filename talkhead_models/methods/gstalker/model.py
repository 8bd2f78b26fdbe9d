"""GSTalker's model: two sets of 3D Gaussians (head, torso) and their deformation fields.

* Head: Gaussians in the canonical head frame, seen through each frame's
  camera (the inverse head pose). In the joint stage an audio-conditioned
  deformation field moves, rotates and rescales them (Eq. 4):
  ``dx, dq, ds = MLP(f_H(x), f_a, f_e)`` with ``f_H`` the tri-plane hash
  encoding of the canonical position, ``f_a`` the temporally smoothed audio
  feature and ``f_e`` the eye feature. Colour (SH) and opacity are not deformed.
* Torso: Gaussians seen from one fixed camera, deformed by
  ``MLP(f_H(x), gamma(P))`` with ``gamma`` the frequency encoding (L = 6) of
  the head pose P (Eq. 5).
* Composition: head over torso over the background ``bc.jpg``.

Gaussian parameters are kept in 3D-GS's raw form (``means``, log ``scales``,
``quats``, opacity logits, SH ``colors`` DC [N, 1, 3] and ``sh_rest``) as
plain ``nn.Parameter`` dicts, because densification replaces them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from talkhead_models.components.audio import TemporalSmoother
from talkhead_models.components.densify import GaussianParameters
from talkhead_models.components.encodings import FrequencyEncoding
from talkhead_models.components.gaussians import SH_C0, RasterOutput, opengl_c2w_to_viewmat, rasterize_gaussians
from talkhead_models.components.hashgrid import TriPlaneHashGrid
from talkhead_models.components.mlp import MLP
from talkhead_models.methods.gstalker.config import GSTalkerConfig

DEFORMATION_OUTPUTS = 10
"""dx (3), dq (4), ds (3)."""
NEIGHBOURS = 3
"""3D-GS initialises each scale to the RMS distance to the 3 nearest points."""


def random_gaussians(count: int, side: float, opacity: float, sh_degree: int,
                     generator: torch.Generator) -> dict[str, Tensor]:
    """GSTalker's initialisation: ``count`` points uniform in a cube of ``side`` centred on the origin.

    Scales, rotations and opacities as 3D-GS initialises a random point cloud:
    isotropic scale = RMS distance to the 3 nearest points, identity rotation,
    opacity ``opacity``, random colours.
    """
    means = (torch.rand(count, 3, generator=generator) - 0.5) * side
    nearest = []
    for start in range(0, count, 2048):
        distances = torch.cdist(means[start:start + 2048], means)
        nearest.append(distances.topk(NEIGHBOURS + 1, largest=False).values[:, 1:].square().mean(-1))
    scales = torch.cat(nearest).clamp_min(1e-7).sqrt().log()[:, None].repeat(1, 3)
    quats = torch.zeros(count, 4)
    quats[:, 0] = 1.0
    colours = torch.rand(count, 1, 3, generator=generator)
    tensors = {
        "means": means,
        "scales": scales,
        "quats": quats,
        "opacities": torch.full((count,), math.log(opacity / (1.0 - opacity))),
        "colors": (colours - 0.5) / SH_C0,
    }
    if sh_degree > 0:
        tensors["sh_rest"] = torch.zeros(count, (sh_degree + 1) ** 2 - 1, 3)
    return tensors


class GaussianPart:
    """One set of Gaussians (head or torso) as a dict of raw parameters that densification may replace."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.params: GaussianParameters = {name: nn.Parameter(value.detach().clone())
                                           for name, value in tensors.items()}

    @property
    def count(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def sh_coefficients(self) -> int:
        return 1 + (self.params["sh_rest"].shape[1] if "sh_rest" in self.params else 0)

    def to(self, device: torch.device) -> "GaussianPart":
        self.params = {name: nn.Parameter(p.detach().to(device)) for name, p in self.params.items()}
        return self

    def state(self) -> dict[str, Tensor]:
        """Plain tensors (for a weights-only checkpoint)."""
        return {name: p.detach().cpu().clone() for name, p in self.params.items()}

    def colours(self) -> Tensor:
        """[N, K, 3] SH coefficients."""
        if "sh_rest" in self.params:
            return torch.cat([self.params["colors"], self.params["sh_rest"]], dim=1)
        return self.params["colors"]


class DeformationField(nn.Module):
    """Per-Gaussian offsets (dx, dq, ds) from the canonical position and a per-frame condition.

    The spatial feature is the tri-plane hash encoding (the paper) or the raw
    coordinates (Table 4's "w/o hash grid"). The decoder's last layer starts
    at zero, so the joint stage begins from the static Gaussians.
    """

    def __init__(self, condition_dim: int, cfg: GSTalkerConfig, bound: float) -> None:
        super().__init__()
        self.encoder = (TriPlaneHashGrid(cfg.triplane, backend=cfg.hashgrid_backend, bound=bound)
                        if cfg.spatial_encoding == "hash_grid" else None)
        if self.encoder is not None:
            with torch.no_grad():
                for table in self.encoder.parameters():
                    table.uniform_(-cfg.deform_hash_init, cfg.deform_hash_init)
        spatial_dim = self.encoder.output_dim if self.encoder is not None else 3
        self.decoder = MLP(spatial_dim + condition_dim, DEFORMATION_OUTPUTS, cfg.deform_hidden, cfg.deform_layers)
        last = self.decoder.layers[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def spatial(self, means: Tensor) -> Tensor:
        """[N, S] spatial feature of canonical positions (constant while rendering: cache it)."""
        return self.encoder(means) if self.encoder is not None else means

    def forward(self, means: Tensor, condition: Tensor, spatial: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Offsets for Gaussians at ``means`` [N, 3] under ``condition`` [C] -> dx [N, 3], dq [N, 4], ds [N, 3]."""
        spatial = self.spatial(means) if spatial is None else spatial
        inputs = torch.cat([spatial, condition.reshape(1, -1).expand(spatial.shape[0], -1)], dim=-1)
        offsets = self.decoder(inputs)
        return offsets[:, :3], offsets[:, 3:7], offsets[:, 7:]


@dataclass
class PartRender:
    """One part rendered over black: colour premultiplied by alpha."""

    rgb: Tensor
    """[H, W, 3]."""
    alpha: Tensor
    """[H, W, 1]."""
    info: dict[str, Any]
    """The rasteriser's info (``means2d`` for densification)."""
    means: Tensor | None = None
    """[N, 3] canonical means of the rendered Gaussians (with ``offsets``: for the mouth-motion prior)."""
    offsets: Tensor | None = None
    """[N, 3] the deformation field's dx (None when not deformed)."""


@dataclass
class FrameCondition:
    """What drives one frame: the head camera, the audio window, the eye feature and the head pose."""

    c2w: Tensor
    """[4, 4] camera-to-world (OpenGL axes, world units) of the head camera."""
    audio: Tensor
    """[window, D] audio features."""
    eye: Tensor
    """[1] open-eye ratio."""
    pose: Tensor
    """[6] head pose (Euler angles, translation in world units), before centring."""


class GSTalkerModel(nn.Module):
    """Networks (deformation fields, audio smoother) as a module; the Gaussians beside it as ``GaussianPart``s."""

    def __init__(self, cfg: GSTalkerConfig, feature_shape: tuple[int, int], torso_c2w: Tensor, pose_mean: Tensor,
                 head: GaussianPart, torso: GaussianPart) -> None:
        super().__init__()
        self.cfg = cfg
        window, feature_dim = feature_shape
        self.feature_shape = (int(window), int(feature_dim))
        bound = cfg.init_cube_side / 2
        self.audio_encoder = TemporalSmoother(feature_dim, cfg.audio_dim, window=window, num_heads=cfg.audio_heads)
        self.head_deformation = DeformationField(cfg.audio_dim + 1, cfg, bound)
        self.pose_encoding = FrequencyEncoding(6, cfg.pose_frequencies, include_input=True, multiplier=math.pi)
        self.torso_deformation = DeformationField(self.pose_encoding.output_dim, cfg, bound)
        self.register_buffer("torso_c2w", torso_c2w.float().clone())
        self.register_buffer("pose_mean", pose_mean.float().clone())
        self.head = head
        self.torso = torso
        self.head_sh_degree = 0
        """SH degree the head's colours are evaluated with (3D-GS raises it during training)."""

    def to_device(self, device: torch.device) -> "GSTalkerModel":
        self.to(device)
        self.head.to(device)
        self.torso.to(device)
        return self

    def hash_parameters(self) -> list[nn.Parameter]:
        return [p for field in (self.head_deformation, self.torso_deformation) if field.encoder is not None
                for p in field.encoder.parameters()]

    def network_parameters(self) -> list[nn.Parameter]:
        """The deformation decoders (and the torso's); not the tables, not the audio smoother."""
        excluded = {id(p) for p in [*self.hash_parameters(), *self.audio_encoder.parameters()]}
        return [p for p in self.parameters() if id(p) not in excluded]

    def condition_vector(self, part: str, condition: FrameCondition) -> Tensor:
        """The deformation field's per-frame input: (f_a, f_e) for the head, gamma(P) for the torso."""
        if part == "head":
            audio = self.audio_encoder(condition.audio.unsqueeze(0))[0]
            return torch.cat([audio, condition.eye.reshape(1)])
        return self.pose_encoding(condition.pose - self.pose_mean)

    def render_part(self, part: str, condition: FrameCondition, intrinsics: Tensor, size: int, deform: bool,
                    spatial: Tensor | None = None, subset: Tensor | None = None) -> PartRender:
        """Rasterise the head (through the frame's camera) or the torso (through the fixed camera) over black.

        ``deform`` applies the part's deformation field; ``subset`` (indices) renders only those Gaussians
        (``spatial`` then holds their rows only).
        """
        gaussians = self.head if part == "head" else self.torso
        params = gaussians.params
        if subset is None:
            means, quats, log_scales, logits, colours = (params["means"], params["quats"], params["scales"],
                                                         params["opacities"], gaussians.colours())
        else:
            means, quats, log_scales, logits, colours = (params["means"][subset], params["quats"][subset],
                                                         params["scales"][subset], params["opacities"][subset],
                                                         gaussians.colours()[subset])
        canonical, dx = means, None
        if deform:
            field = self.head_deformation if part == "head" else self.torso_deformation
            dx, dq, ds = field(means, self.condition_vector(part, condition), spatial)
            means, quats, log_scales = means + dx, quats + dq, log_scales + ds
        c2w, degree = (condition.c2w, self.head_sh_degree) if part == "head" else (self.torso_c2w, 0)
        out: RasterOutput = rasterize_gaussians(
            means, quats, log_scales.exp(), torch.sigmoid(logits), colours[:, : (degree + 1) ** 2],
            opengl_c2w_to_viewmat(c2w), intrinsics, size, size, sh_degree=degree, background=means.new_zeros(3),
            backend=self.cfg.raster_backend,
        )
        return PartRender(out.image, out.alpha, out.info, canonical, dx)

    @torch.no_grad()
    def in_view(self, part: str, condition: FrameCondition, intrinsics: Tensor, size: int,
                margin: float) -> Tensor:
        """Indices of the part's canonical Gaussians whose 3-sigma disc comes within ``margin`` px of the image.

        A cull before the deformation field runs: windows of a frame see a fraction of the Gaussians, and
        the margin leaves room for the deformation's offsets.
        """
        params = (self.head if part == "head" else self.torso).params
        pixels, depth = project_points(params["means"], condition.c2w if part == "head" else self.torso_c2w,
                                       intrinsics)
        u, v = pixels[:, 0], pixels[:, 1]
        reach = 3.0 * params["scales"].exp().amax(-1) * intrinsics[0, 0] / depth.clamp_min(1e-6) + margin
        keep = ((depth > 0) & (u + reach > 0) & (u - reach < size) & (v + reach > 0) & (v - reach < size))
        return keep.nonzero().squeeze(-1)


def project_points(points: Tensor, c2w: Tensor, intrinsics: Tensor) -> tuple[Tensor, Tensor]:
    """World points [N, 3] seen by the camera ``c2w`` -> pixel coordinates [N, 2] and depths [N]."""
    viewmat = opengl_c2w_to_viewmat(c2w)
    camera = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    depth = camera[:, 2]
    safe = depth.clamp_min(1e-6)
    pixels = torch.stack([intrinsics[0, 0] * camera[:, 0] / safe + intrinsics[0, 2],
                          intrinsics[1, 1] * camera[:, 1] / safe + intrinsics[1, 2]], dim=-1)
    return pixels, depth


def compose(head: PartRender | None, torso: PartRender | None, background: Tensor) -> Tensor:
    """Head over torso over the background: [H, W, 3] (each part's colour is premultiplied by its alpha)."""
    image = background
    for part in (torso, head):
        if part is not None:
            image = part.rgb + (1.0 - part.alpha) * image
    return image
