"""GSTalker's hyper-parameters (Chen et al. 2024, Sec. 3-4.1); defaults are the paper's values.

Where the paper is silent the choice follows the code it builds on
(3D-GS for the Gaussians and their optimisation, ER-NeRF for the data
conventions and the tri-plane) and is said so in the field's docstring.

Demo aids (``talkhead_models.config.demo_aid``): the fields whose non-default
value changes the method to make a few hundred CPU iterations enough (the
audio-to-motion audio feature, the mouth-motion prior, the tri-plane's wide
initialisation, the audio smoother's own learning rate); their labels name
them in the tables. Budget reductions every variant shares (iterations,
downscaled frames, crops, SH degree, learning rates and densification
schedule scaled to the short run) are not aids, nor are the loss weights the
paper does not give.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Annotated, Literal

import annotated_types

from talkhead_models.components.densify import DensificationConfig
from talkhead_models.components.gaussians import RasterBackend
from talkhead_models.components.hashgrid import HashGridBackend, TriPlaneConfig
from talkhead_models.config import (Device, Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                                    demo_aid)
from talkhead_models.preprocess.audio_features import FeatureKind

AudioFeature = Literal[FeatureKind, "a2m"]
AUDIO_FEATURE_KINDS = typing.get_args(AudioFeature)
"""Audio features the deformation field can read: files ``aud_<kind>.npy``, or ``a2m`` (computed from ``mel``
by the audio-to-motion model; see ``GSTalkerConfig.audio_feature``)."""
SpatialEncoding = Literal["hash_grid", "coordinates"]
SPATIAL_ENCODINGS = typing.get_args(SpatialEncoding)
PerceptualLoss = Literal["auto", "lpips", "dssim"]
PERCEPTUAL_LOSSES = typing.get_args(PerceptualLoss)
Opacity = Annotated[float, annotated_types.Interval(gt=0, lt=1)]
"""An opacity that has a logit (the Gaussians store inverse sigmoids): strictly between 0 and 1."""
SHDegree = Annotated[int, annotated_types.Interval(ge=0, le=3)]
"""A spherical-harmonics degree the rasterisers implement (0 to 3)."""


@dataclass(frozen=True)
class GSTalkerConfig:
    """GSTalker: static Gaussian initialisation, audio-driven head deformation, pose-driven torso deformation."""

    # --- Static initialisation (Sec. 3.3, 4.1.2) ---
    num_gaussians: PositiveInt = 10_000
    """Random Gaussians per part (head, torso) at the start: "10,000 Gaussian points"."""
    init_cube_side: PositiveFloat = 2.0
    """Side of the cube (centred on the origin of the part's world frame) the random points fill."""
    static_iterations: NonNegativeInt = 10_000
    """Static-scene iterations, for the head and then for the torso ("10,000 iterations"); 0 = no static
    initialisation (Table 4, "w/o static initialization": the random points go straight to the joint stage)."""
    iterations: NonNegativeInt = 100_000
    """Joint iterations (Gaussians + deformation fields) after the static stage ("100,000 iterations")."""
    scene_scale: PositiveFloat = 4.0
    """World units per metre of the tracked head frame. Not in the paper; ER-NeRF's ``nerf_matrix_to_ngp`` scale
    (4), which puts the head (about 0.25 m) well inside the cube of side 2 and the camera about 4 units away."""
    init_opacity: Opacity = 0.1
    """Opacity of the random Gaussians (3D-GS)."""
    sh_degree: SHDegree = 3
    """Spherical-harmonics degree of the head's colours (3D-GS's default; the paper keeps SH undeformed).
    The torso, seen from one fixed view, keeps degree 0."""
    sh_degree_interval: PositiveInt = 1000
    """One more SH degree every this many head iterations, up to ``sh_degree`` (3D-GS)."""

    # --- Adaptive density control (3D-GS, "as in 3D-GS") ---
    densify: DensificationConfig = field(default_factory=DensificationConfig)
    """Clone / split / prune / opacity-reset schedule, counted per part over its static + joint iterations."""
    densify_extent: PositiveFloat = 1.0
    """Scene extent the densification thresholds are relative to: the cube's half side. 3D-GS uses the spread of the
    cameras, which is nearly zero for a talking head filmed from one place."""

    # --- Deformation fields (Sec. 3.2) ---
    triplane: TriPlaneConfig = field(default_factory=TriPlaneConfig)
    """Tri-plane of 2D hash grids at each Gaussian's canonical position: L=14, F=1, resolution 64 to 512."""
    spatial_encoding: SpatialEncoding = "hash_grid"
    """hash_grid (the paper) or coordinates: the raw canonical xyz goes into the deformation MLPs instead
    (Table 4, "w/o hash grid"). Applies to the head's and the torso's field."""
    audio_feature: AudioFeature = demo_aid("mel", "{value} audio")
    """Audio feature kind read from ``aud_<kind>.npy`` and from the driving signal. The paper's Table 1 uses
    DeepSpeech (``ds``: an ER-NeRF-prepared ``aud_ds.npy``); Table 5 compares wav2vec (``wav2vec2``, or ER-NeRF's
    ``eo``) and HuBERT (``hubert``, or ER-NeRF's ``hu``). The audio stage computes ``mel`` without any weights and
    hubert / wav2vec2 from local weights; set ``audio.kind`` to the same value. ``a2m`` is a substitute for
    DeepSpeech / HuBERT when those weights are absent: the mouth-landmark displacements that the corpus-trained
    audio-to-motion model (data/models/audio2motion) predicts from the audio stage's features, windowed over
    ``motion_window`` frames (derived from audio only, for training and driving frames alike): a demo aid, since
    the field then reads another model's lip motion instead of encoding the audio itself. Any kind but ``mel``
    is labelled with its name (``mel`` stands for DeepSpeech, whose graph this project cannot run)."""
    motion_window: PositiveInt = 8
    """Frames per ``a2m`` feature window, centred on the frame (RAD-NeRF's attention window of 8)."""
    audio_dim: PositiveInt = 32
    """Size of the temporally smoothed audio feature f_a. Not given; RAD-NeRF's audio code size."""
    audio_heads: PositiveInt = 4
    """Self-attention heads of the temporal smoother. Not given."""
    deform_hidden: PositiveInt = 64
    """Width of the "tiny MLP" deformation decoder. Not given; Deformable-3DGS-like small width."""
    deform_layers: PositiveInt = 3
    """Linear layers of the deformation decoder (2 hidden)."""
    pose_frequencies: NonNegativeInt = 6
    """Frequencies of the torso's head-pose encoding gamma(p) = (sin(2^i pi p), cos(2^i pi p)), L = 6."""

    # --- Optimisation (Sec. 4.1.2; the Gaussians' own rates are 3D-GS's) ---
    hash_lr: NonNegativeFloat = 5e-3
    """Adam learning rate of the hash-grid tri-planes."""
    deform_lr: NonNegativeFloat = 1.6e-5
    """Adam learning rate of the deformation networks (decoders and the audio smoother)."""
    audio_lr: NonNegativeFloat = demo_aid(0.0, "audio smoother lr {value}")
    """Adam learning rate of the audio smoother alone; 0 = ``deform_lr`` (the paper: one rate for the deformation
    network). A demo aid when set: lower than the decoders' in a short run, because while the tri-plane features
    are still near zero the field can only move every Gaussian alike, the frame-to-frame variation of the audio
    code is then noise to it, and a fast smoother learns to flatten it."""
    deform_hash_init: NonNegativeFloat = demo_aid(1e-4, "tri-plane init ±{value}")
    """Half-range of the uniform initialisation of the deformation tri-planes' tables (Instant-NGP's 1e-4). A demo
    aid when raised: a larger one lets the field tell the mouth from the rest of the head from the first joint
    iteration."""
    position_lr: PositiveFloat = 1.6e-4
    """Gaussian means, times ``densify_extent`` (3D-GS position_lr_init)."""
    position_lr_final: PositiveFloat = 1.6e-6
    """Means' rate at the end of each part's iterations, reached exponentially (3D-GS position_lr_final)."""
    color_lr: NonNegativeFloat = 2.5e-3
    """SH DC coefficients (3D-GS feature_lr); the higher-order ones use a twentieth of it."""
    opacity_lr: NonNegativeFloat = 0.05
    """Opacity logits (3D-GS)."""
    scaling_lr: NonNegativeFloat = 5e-3
    """Log scales (3D-GS)."""
    rotation_lr: NonNegativeFloat = 1e-3
    """Quaternions (3D-GS)."""

    # --- Loss (Sec. 3.3): L = L_color + l1 L_mask + l2 L_lpips + l3 L_lips ---
    mask_weight: NonNegativeFloat = 0.1
    """l1: L1 between each part's rendered alpha and its parsing mask. Not given in the paper."""
    perceptual_weight: NonNegativeFloat = 0.1
    """l2: perceptual loss weight; 0 = Table 4's "w/o LPIPS loss". Not given (ER-NeRF uses 0.01-0.1 for LPIPS)."""
    perceptual: PerceptualLoss = "auto"
    """lpips (needs the LPIPS weights, docs/WEIGHTS.md), dssim (1 - SSIM, 3D-GS's structural term: the substitute
    used without the weights) or auto (LPIPS when its weights are present, else dssim, with a log line)."""
    lips_weight: NonNegativeFloat = 1.0
    """l3: extra L1 on the lip patch (the 68 landmarks' mouth points, padded). Not given."""
    mouth_motion_weight: NonNegativeFloat = demo_aid(0.0, "mouth-motion prior")
    """Weight of a mouth-motion prior (not in the paper, 0 = off): in the joint stage the deformation field is
    also asked to move the mouth's Gaussians on screen as the frame's tracked lips moved from the training
    frames' mean mouth (L1 in processed pixels). A few hundred CPU iterations are too few for the photometric
    loss alone to teach the field lip motion; the paper's 100,000 need no such help. Training only: the
    renderer never reads landmarks."""
    mouth_warmup_iterations: NonNegativeInt = demo_aid(0, "mouth-motion prior")
    """Steps that fit the head's deformation field to the mouth-motion prior alone (no rendering, a few ms each)
    when the joint stage begins; 0 = none (the paper). The field then starts the joint stage already moving the
    lips with the audio feature instead of discovering that from pixels."""
    lips_padding: NonNegativeFloat = 0.3
    """The lip patch is the mouth landmarks' box grown by this fraction of its size on each side."""

    # --- Run ---
    train_downscale: PositiveInt = 1
    """Joint-stage frames are rendered and supervised at 1/this of the processed size (the paper: full size)."""
    joint_crop: NonNegativeInt = 0
    """The joint stage renders and supervises a square window of this many (training) pixels instead of the whole
    frame; 0 = the whole frame (the paper). Windows are centred near the mouth with probability
    ``crop_mouth_fraction``, uniform over the frame otherwise: the deformation is learnt where the audio acts
    at a fraction of a CPU's cost per iteration."""
    frames_per_step: PositiveInt = 1
    """Frames rendered (and their gradients averaged) per joint-stage iteration; 1 as in 3D-GS (the paper gives no
    batch size). Several small windows per step see several audio conditions at the cost of one large one."""
    crop_mouth_fraction: Fraction = 0.5
    """Share of the joint stage's windows that contain the lip patch (with ``joint_crop``)."""
    static_downscale: PositiveInt = 1
    """Static-stage frames are rendered at 1/this of the processed size (the paper: full size). The random cloud
    covers every pixel hundreds of times over, so a coarse static stage is much cheaper on a CPU."""
    seed: NonNegativeInt = 0
    """Seeds the random points, the frame order and the networks."""
    device: Device = "auto"
    """auto (CUDA when available), cpu or cuda."""
    raster_backend: RasterBackend = "auto"
    """Gaussian rasteriser: auto (gsplat on CUDA, torch elsewhere), torch or gsplat."""
    hashgrid_backend: HashGridBackend = "auto"
    """Hash grid: auto (tiny-cuda-nn on CUDA when installed), torch or tcnn."""
    checkpoint_every: PositiveInt = 2000
    """Iterations between checkpoints (training resumes from the last one)."""
    checkpoint_seconds: PositiveFloat = 60.0
    """Wall-clock seconds of training after which a checkpoint is written even before ``checkpoint_every``
    iterations (the paper is silent): a killed run loses at most about this much work."""
    validate_every: PositiveInt = 2000
    """Iterations between validation renders (val_psnr in curve.csv)."""
    validation_frames: NonNegativeInt = 4
    """Validation frames rendered at each validation (spread over the held-out frames)."""
    log_every: PositiveInt = 100
    """Iterations between logged losses and Gaussian counts."""
    samples: NonNegativeInt = 3
    """Validation frames saved as PNG (rendered | truth) into samples/ at the end."""

    def __post_init__(self) -> None:
        if self.spatial_encoding not in SPATIAL_ENCODINGS:
            raise ValueError(f"gstalker.spatial_encoding must be one of {SPATIAL_ENCODINGS}, "
                             f"got {self.spatial_encoding!r}")
        if self.perceptual not in PERCEPTUAL_LOSSES:
            raise ValueError(f"gstalker.perceptual must be one of {PERCEPTUAL_LOSSES}, got {self.perceptual!r}")
        if self.audio_feature not in AUDIO_FEATURE_KINDS:
            raise ValueError(f"gstalker.audio_feature must be one of {AUDIO_FEATURE_KINDS}, "
                             f"got {self.audio_feature!r}")
        if not 0 <= self.sh_degree <= 3:
            raise ValueError(f"gstalker.sh_degree must be 0..3, got {self.sh_degree}")
        if self.num_gaussians < 4 or self.train_downscale < 1 or self.static_downscale < 1:
            raise ValueError("gstalker.num_gaussians must be at least 4, train_downscale and static_downscale at "
                             "least 1")
        if self.joint_crop < 0 or not 0.0 <= self.crop_mouth_fraction <= 1.0 or self.frames_per_step < 1:
            raise ValueError("gstalker.joint_crop must be >= 0, crop_mouth_fraction in [0, 1] and frames_per_step "
                             ">= 1")
        if self.audio_lr < 0:
            raise ValueError(f"gstalker.audio_lr must be >= 0 (0 = deform_lr), got {self.audio_lr}")
        if self.mouth_warmup_iterations < 0 or self.mouth_motion_weight < 0:
            raise ValueError("gstalker.mouth_warmup_iterations and mouth_motion_weight must be non-negative")
        if self.motion_window < 1:
            raise ValueError(f"gstalker.motion_window must be at least 1, got {self.motion_window}")
        if self.static_iterations < 0 or self.iterations < 0:
            raise ValueError("gstalker.static_iterations and iterations must be non-negative")

    @property
    def audio_learning_rate(self) -> float:
        """The audio smoother's learning rate: ``audio_lr``, or the deformation network's when 0 (the paper)."""
        return self.audio_lr or self.deform_lr

    @property
    def total_iterations(self) -> int:
        """Head static + torso static + joint iterations."""
        return 2 * self.static_iterations + self.iterations
