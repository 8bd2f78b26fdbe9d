"""R2-Talker's networks: the conditioned head field and RAD-NeRF's 2D torso field.

Head field (Fig. 2, supplement Table 6)::

    x ──hash grid (16 x 4)──> f_x ──sigma net (3 FC, 128)──> sigma, geo (128)
                                        ^ M-AGLO after each hidden FC: h * (1 + gamma) + beta,
                                        | (gamma, beta) = bypass FCs (3 x 128) of the frame's condition
    landmarks [5, 68, 3] ──hash grid (16 x 2) at each point──> concat (5*68*32) ──> condition
    geo, dir ──colour head──> rgb

The condition is global: one vector per frame, shared by all its samples.
The ablation variants swap parts (``R2TalkerConfig.condition`` / ``maglo`` /
``audio_spatial``): without M-AGLO an MLP turns the condition into a 32-d
feature concatenated to every sample (GLO, as Geneface++); the audio
baseline is RAD-NeRF, its condition the AudioNet + AudioAttNet feature of the
audio windows, fused per sample by the audio-spatial decomposition::

    [f_x, audio] ──ambient MLP (3 FC, 64)──> tanh ──> 2D coordinate ──2D hash grid──> f_a
    [f_x, f_a, eye] ──sigma net──> sigma, geo
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from talkhead_models.components.audio import AudioAttNet, AudioNet
from talkhead_models.components.encodings import FrequencyEncoding
from talkhead_models.components.hashgrid import HashGridConfig, HashGridEncoding, LandmarkHashEncoder
from talkhead_models.components.mlp import MLP, AffineConditionedMLP
from talkhead_models.methods.r2talker.config import R2TalkerConfig

LANDMARKS = 68
AUDIO_WINDOW = 16
DENSITY_CLAMP = 15.0


def trunc_exp(values: Tensor) -> Tensor:
    """torch-ngp's density activation: exp, kept finite (its gradient is clamped the same way)."""
    return torch.exp(values.clamp(max=DENSITY_CLAMP))


class HeadField(nn.Module):
    """Density and colour of the head for one frame's condition."""

    def __init__(self, cfg: R2TalkerConfig, audio_feature_dim: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.position = HashGridEncoding(HashGridConfig(
            input_dim=3, num_levels=cfg.position_levels, level_dim=cfg.position_level_dim,
            base_resolution=cfg.position_base_resolution, log2_hashmap_size=cfg.position_log2_hashmap_size,
            desired_resolution=cfg.position_desired_resolution), backend=cfg.backend, bound=1.0)
        self.directions = FrequencyEncoding(3, cfg.direction_frequencies)
        eye_dim = 1 if cfg.use_eye else 0
        if cfg.condition == "landmarks":
            self.landmarks = LandmarkHashEncoder(HashGridConfig(
                input_dim=3, num_levels=cfg.landmark_levels, level_dim=cfg.landmark_level_dim,
                base_resolution=cfg.landmark_base_resolution, log2_hashmap_size=cfg.landmark_log2_hashmap_size,
                desired_resolution=cfg.landmark_desired_resolution), backend=cfg.backend, bound=cfg.landmark_bound)
            raw_dim = self.landmarks.output_dim(cfg.landmark_window * LANDMARKS) + eye_dim
        else:
            if audio_feature_dim is None:
                raise ValueError("the audio-conditioned baseline needs the audio feature size")
            self.audio_net = AudioNet(audio_feature_dim, cfg.audio_dim, AUDIO_WINDOW)
            self.audio_attention = AudioAttNet(cfg.audio_attention_window, cfg.audio_dim)
            raw_dim = cfg.audio_dim + eye_dim
        position_dim = self.position.output_dim
        sigma_out = 1 + cfg.geo_feat_dim
        if cfg.maglo:
            self.sigma_net = AffineConditionedMLP(position_dim, sigma_out, raw_dim, cfg.sigma_hidden,
                                                  cfg.sigma_layers, cfg.bypass_hidden, cfg.bypass_layers)
        else:
            per_sample = raw_dim
            if cfg.condition == "landmarks":
                # Eq. (8): an MLP turns the concatenated landmark encodings into the conditional feature.
                self.condition_net = MLP(raw_dim, cfg.condition_dim, cfg.bypass_hidden, cfg.bypass_layers)
                per_sample = cfg.condition_dim
            if cfg.audio_spatial:
                # RAD-NeRF: the eye ratio goes to the sigma net, the audio feature through the ambient grid (the
                # landmark condition has the eye mixed in by its MLP already).
                self.ambient_eye_dim = eye_dim if cfg.condition == "audio" else 0
                self.ambient_net = MLP(position_dim + per_sample - self.ambient_eye_dim, cfg.ambient_dim,
                                       cfg.ambient_hidden, cfg.ambient_layers)
                self.ambient = HashGridEncoding(HashGridConfig(
                    input_dim=cfg.ambient_dim, num_levels=cfg.ambient_levels, level_dim=cfg.ambient_level_dim,
                    base_resolution=cfg.ambient_base_resolution, log2_hashmap_size=cfg.ambient_log2_hashmap_size,
                    desired_resolution=cfg.ambient_desired_resolution), backend=cfg.backend, bound=1.0)
                per_sample = self.ambient.output_dim + self.ambient_eye_dim
            self.sigma_net = MLP(position_dim + per_sample, sigma_out, cfg.sigma_hidden, cfg.sigma_layers)
        self.color_net = MLP(self.directions.output_dim + cfg.geo_feat_dim, 3, cfg.color_hidden, cfg.color_layers)

    # -- conditions ------------------------------------------------------------------------------------------

    def frame_conditions(self, inputs: Tensor, eye: Tensor) -> Tensor:
        """Per-frame conditions [F, C] the sigma net consumes.

        ``inputs``: landmark windows [F, window, 68, 3] (canonical frame) or
        audio windows [F, attention window, 16, D]; ``eye`` [F].
        """
        if self.cfg.condition == "landmarks":
            raw = self.landmarks(inputs)
        else:
            frames, window = inputs.shape[:2]
            codes = self.audio_net(inputs.flatten(0, 1)).view(frames, window, -1)
            raw = self.audio_attention(codes)
        if self.cfg.use_eye:
            raw = torch.cat([raw, eye.reshape(-1, 1).to(raw.dtype)], dim=-1)
        if not self.cfg.maglo and self.cfg.condition == "landmarks":
            return self.condition_net(raw)
        return raw

    # -- field -----------------------------------------------------------------------------------------------

    def _sigma_net(self, positions: Tensor, condition: Tensor) -> Tensor:
        features = self.position(positions)
        if self.cfg.maglo:
            return self.sigma_net(features, condition)
        count = features.shape[0]
        if self.cfg.audio_spatial:
            split = condition.shape[0] - self.ambient_eye_dim
            code, eye = condition[:split], condition[split:]
            ambient = torch.tanh(self.ambient_net(torch.cat([features, code.reshape(1, -1).expand(count, -1)], -1)))
            return self.sigma_net(torch.cat([features, self.ambient(ambient),
                                             eye.reshape(1, -1).expand(count, -1)], dim=-1))
        expanded = condition.reshape(1, -1).expand(count, -1)
        return self.sigma_net(torch.cat([features, expanded], dim=-1))

    def log_density(self, positions: Tensor, condition: Tensor) -> Tensor:
        """[M] density before its exponential activation."""
        return self._sigma_net(positions, condition)[:, 0]

    def density(self, positions: Tensor, condition: Tensor) -> Tensor:
        """[M] densities at scene positions [M, 3] under one frame's condition [C]."""
        return trunc_exp(self.log_density(positions, condition))

    def forward(self, positions: Tensor, directions: Tensor, condition: Tensor) -> tuple[Tensor, Tensor]:
        """(density [M], rgb [M, 3]) at positions [M, 3] seen along unit directions [M, 3]."""
        hidden = self._sigma_net(positions, condition)
        sigma = trunc_exp(hidden[:, 0])
        rgb = torch.sigmoid(self.color_net(torch.cat([self.directions(directions), hidden[:, 1:]], dim=-1)))
        return sigma, rgb


# RAD-NeRF's anchor points: three points in front of the face whose projections encode the head pose.
TORSO_ANCHORS = ((0.01, 0.01, 0.1), (-0.1, -0.1, 0.1), (0.1, -0.1, 0.1))


class TorsoField(nn.Module):
    """RAD-NeRF's torso: a 2D deformation conditioned on the head pose, then a 2D hash grid -> alpha, rgb.

    The pose enters as the image positions of three anchor points fixed to
    the head (RAD-NeRF projects them too; here in normalised pixel
    coordinates rather than raw x/z, y/z, so the encoding sees values of
    order one).
    """

    def __init__(self, cfg: R2TalkerConfig) -> None:
        super().__init__()
        self.deform_encoding = FrequencyEncoding(2, 8)
        self.anchor_encoding = FrequencyEncoding(6, 4)
        conditioning = self.deform_encoding.output_dim + self.anchor_encoding.output_dim
        self.deform_net = MLP(conditioning, 2, cfg.torso_deform_hidden, 3)
        self.grid = HashGridEncoding(HashGridConfig(
            input_dim=2, num_levels=cfg.torso_levels, level_dim=cfg.torso_level_dim,
            base_resolution=cfg.torso_base_resolution, log2_hashmap_size=cfg.torso_log2_hashmap_size,
            desired_resolution=cfg.torso_desired_resolution), backend=cfg.backend, bound=1.0)
        self.torso_net = MLP(self.grid.output_dim + conditioning, 4, cfg.torso_hidden, 3)
        self.register_buffer("anchors", torch.tensor(TORSO_ANCHORS, dtype=torch.float32))

    def anchor_pixels(self, c2w: Tensor, focal: float, cx: float, cy: float, size: int) -> Tensor:
        """[6] normalised image positions of the anchors under the scene-frame camera ``c2w`` [4, 4]."""
        rotation, origin = c2w[:3, :3], c2w[:3, 3]
        camera = (self.anchors - origin) @ rotation  # world -> camera (OpenGL)
        u = -focal * camera[:, 0] / camera[:, 2] + cx
        v = focal * camera[:, 1] / camera[:, 2] + cy
        return (torch.stack([u, v], -1) / size * 2.0 - 1.0).reshape(6)

    def forward(self, pixels: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(alpha [M], rgb [M, 3], offset [M, 2]) at normalised pixel positions [M, 2] in [-1, 1]."""
        encoded_anchor = self.anchor_encoding(anchors.reshape(1, 6)).expand(pixels.shape[0], -1)
        conditioning = torch.cat([self.deform_encoding(pixels), encoded_anchor], dim=-1)
        offset = self.deform_net(conditioning)
        warped = (pixels + offset).clamp(-1.0, 1.0)
        hidden = self.torso_net(torch.cat([self.grid(warped), conditioning], dim=-1))
        # RAD-NeRF's slightly widened sigmoids let alpha and colour reach exactly 0 and 1.
        alpha = torch.sigmoid(hidden[:, 0]) * 1.002 - 0.001
        rgb = torch.sigmoid(hidden[:, 1:]) * 1.002 - 0.001
        return alpha.clamp(0.0, 1.0), rgb.clamp(0.0, 1.0), offset
