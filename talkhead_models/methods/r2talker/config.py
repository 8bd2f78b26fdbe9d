"""R2-Talker's hyper-parameters (params.yaml section ``r2talker``); the defaults are the paper's.

Numbers come from the paper (Sec. 3.4) and its supplement (Table 6). Where
the paper is silent the value is RAD-NeRF's (the code base R2-Talker and
its Geneface++ baseline build on), and the field says so.

Demo aids (``talkhead_models.config.demo_aid``): the fields whose non-default
value changes the method itself to make a few CPU minutes enough (the
landmark grid's coarseness, the visual-hull start, the solid-head prior and
carving, the opacity and distortion losses); their labels name them in the
tables. Budget reductions that every ladder rung shares (iterations, rays,
image and grid sizes, samples per ray, schedule) are not aids: they shrink
the paper's procedure without changing it.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from talkhead_models.components.hashgrid import HashGridBackend
from talkhead_models.config import (Device, Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                                    demo_aid)
from talkhead_models.preprocess.audio_features import FeatureKind

Condition = Literal["landmarks", "audio"]
LipLoss = Literal["auto", "lpips", "dssim"]
CONDITIONS = typing.get_args(Condition)
LIP_LOSSES = typing.get_args(LipLoss)


@dataclass(frozen=True)
class R2TalkerConfig:
    """The model, its training schedule and the ablation switches of Table 4."""

    # --- Ablation switches (Table 4: baseline -> + landmark encoding -> + M-AGLO -> + progressive) ----------
    condition: Condition = "landmarks"
    """What drives the face: "landmarks" (hash-grid landmark encoding, Sec. 3.2) or "audio" (the RAD-NeRF
    baseline: AudioNet + AudioAttNet features of the audio windows)."""
    maglo: bool = True
    """M-AGLO (Sec. 3.3): modulate every hidden FC layer of the sigma net by (scale, shift) from bypass FCs of the
    per-frame condition; False = GLO, the conditional feature concatenated to every sample's positional feature."""
    progressive: bool = True
    """Conditional progressive optimisation: the positional grid starts with its coarsest levels."""
    audio_spatial: bool = False
    """RAD-NeRF's audio-spatial decomposition, the Table 4 baseline's conditioning: per sample, an ambient MLP
    maps the positional feature and the condition to a 2D ambient coordinate, whose 2D hash-grid feature enters
    the sigma net beside the positional one (instead of the condition itself). R2-Talker applies its condition
    globally instead, which "eliminates the heavy computations required by audio-spatial decomposition"
    (Sec. 3.3); needs ``maglo`` off."""

    # --- Positional encoder: hash grid (Table 6) ----------------------------------------------------------
    position_levels: PositiveInt = 16
    """Levels of the positional hash grid."""
    position_level_dim: PositiveInt = 4
    """Features per level (4, as Neuralangelo; RAD-NeRF uses 2)."""
    position_base_resolution: PositiveInt = 32
    """Coarsest resolution."""
    position_log2_hashmap_size: PositiveInt = 16
    """log2 of the entries per level."""
    position_desired_resolution: PositiveInt = 2048
    """Finest resolution."""

    # --- Sigma net and colour head -------------------------------------------------------------------------
    sigma_layers: PositiveInt = 3
    """FC layers of the sigma net (Table 6)."""
    sigma_hidden: PositiveInt = 128
    """Hidden width of the sigma net (Table 6)."""
    geo_feat_dim: PositiveInt = 128
    """Geometry feature passed to the colour head: the sigma net outputs 1 + 128 (Table 6)."""
    color_layers: PositiveInt = 2
    """FC layers of the colour head (RAD-NeRF; not in Table 6)."""
    color_hidden: PositiveInt = 64
    """Hidden width of the colour head (RAD-NeRF)."""
    direction_frequencies: NonNegativeInt = 4
    """Frequency encoding of the view direction (AD-NeRF's 4 frequencies; RAD-NeRF uses degree-4 SH)."""

    # --- Landmark encoder: hash grid at every landmark of a window (Table 6) -------------------------------
    landmark_levels: PositiveInt = demo_aid(16, "landmark grid {value}/{default} levels")
    """Levels of the landmark hash grid. A demo aid when cut: a coarse grid changes what R2-Talker's condition
    encodes (the features vary smoothly with the mouth instead of hashing per-frame FaceMesh jitter), not only
    what it costs."""
    landmark_level_dim: PositiveInt = 2
    """Features per level of the landmark grid."""
    landmark_base_resolution: PositiveInt = demo_aid(32, "landmark grid base res. {value}/{default}")
    """Coarsest resolution of the landmark grid (a demo aid when changed, as ``landmark_levels``)."""
    landmark_log2_hashmap_size: PositiveInt = 16
    """log2 of its entries per level."""
    landmark_desired_resolution: PositiveInt = demo_aid(2048, "landmark grid finest res. {value}/{default}")
    """Finest resolution of the landmark grid (a demo aid when changed, as ``landmark_levels``)."""
    landmark_window: PositiveInt = 5
    """Frames of 68 landmarks per condition, centred on the frame (5: the FC input is 5 x 68 x 2 x 16)."""
    landmark_bound: PositiveFloat = 2.0
    """The grid covers [-bound, bound]^3 of the canonical face frame (unit RMS radius; landmarks lie within
    about 1.5)."""
    motion_adaptation: bool = True
    """At test time, follow the audio-to-landmark generator with this face's linear post-net (GeneFace's
    domain adaptation, which R2-Talker's landmark generator comes with): per landmark coordinate, a gain and
    offset fitted on the training frames, so that the driving landmarks move as this face's tracked ones did in
    training instead of as the corpus' average speaker's (``pretrained.audio2motion.MotionAdaptation``)."""

    # --- Conditioning --------------------------------------------------------------------------------------
    bypass_layers: PositiveInt = 3
    """FC layers of each M-AGLO bypass branch (Table 6); also the landmark MLP of the GLO variant."""
    bypass_hidden: PositiveInt = 128
    """Hidden width of the bypass branches (Table 6)."""
    condition_dim: PositiveInt = 32
    """Conditional feature of the landmark GLO variant, concatenated to every sample (the width of RAD-NeRF's
    audio feature, which the baseline fuses through its ambient grid instead)."""
    use_eye: bool = True
    """Append the eye-openness ratio to the per-frame condition (RAD-NeRF's AU45 input, which the landmark
    generator cannot predict from audio)."""
    audio_kind: FeatureKind = "mel"
    """Audio features of the audio baseline (features/aud_<kind>.npy)."""
    audio_dim: PositiveInt = 32
    """AudioNet output of the audio baseline (RAD-NeRF)."""
    audio_attention_window: PositiveInt = 8
    """Frames smoothed by AudioAttNet in the audio baseline (RAD-NeRF / AD-NeRF)."""

    # --- Audio-spatial decomposition (``audio_spatial``; RAD-NeRF's values) ------------------------------
    ambient_dim: PositiveInt = 2
    """Dimensions of the ambient coordinate (tanh of the ambient MLP's output)."""
    ambient_layers: PositiveInt = 3
    """FC layers of the ambient MLP."""
    ambient_hidden: PositiveInt = 64
    """Hidden width of the ambient MLP."""
    ambient_levels: PositiveInt = 16
    """Levels of the ambient hash grid."""
    ambient_level_dim: PositiveInt = 2
    """Features per level of the ambient grid."""
    ambient_base_resolution: PositiveInt = 16
    """Coarsest resolution of the ambient grid."""
    ambient_log2_hashmap_size: PositiveInt = 16
    """log2 of its entries per level."""
    ambient_desired_resolution: PositiveInt = 2048
    """Finest resolution of the ambient grid."""

    # --- Rendering -----------------------------------------------------------------------------------------
    march_steps: PositiveInt = 1024
    """Stratified steps per ray across the head box (torch-ngp marches about 1024 steps across its cube)."""
    termination_chunk: PositiveInt = 16
    """Steps composited at a time; rays whose transmittance falls below ``min_transmittance`` stop."""
    min_transmittance: Fraction = 1e-4
    """Early ray termination threshold (torch-ngp's)."""
    max_samples: NonNegativeInt = 0
    """Occupied samples each ray may evaluate, in training and rendering (0 = no limit, as torch-ngp's
    inference; its training marches a bounded number of steps per ray)."""
    box_margin: NonNegativeFloat = 0.1
    """Relative margin added around the head box found from the training masks."""
    occupancy_resolution: PositiveInt = 128
    """Cells per axis of the occupancy grid (torch-ngp)."""
    occupancy_update_every: PositiveInt = 16
    """Iterations between occupancy updates (torch-ngp)."""
    occupancy_conditions: PositiveInt = 4
    """Training frames whose conditions an update takes the maximum density over (the grid keeps a decaying
    maximum across updates, so all conditions accumulate, Sec. 3.4)."""
    occupancy_cell_fraction: Fraction = 1.0
    """Fraction of cells re-evaluated per update."""
    density_threshold: NonNegativeFloat = 10.0
    """Occupancy density threshold (RAD-NeRF)."""
    visual_hull: bool = demo_aid(False, "visual-hull occupancy start")
    """Start the occupancy grid from the visual hull of the training frames' head masks, and never mark a cell
    outside it occupied. Not in the paper (False: the grid starts all-occupied and its updates, from the field,
    prune it, as torch-ngp / RAD-NeRF do); a CPU-budget aid: the first iterations do not march the empty space
    around the head. The solid-head prior (``shape_prior_steps``) takes its silhouette from the hull."""

    # --- Head training (Sec. 3.4) ---------------------------------------------------------------------------
    iterations: PositiveInt = 240_000
    """Head iterations, lips fine-tuning included."""
    rays_per_step: PositiveInt = 65_536
    """Rays per iteration (RAD-NeRF's num_rays = 4096 x 16)."""
    head_ray_fraction: Fraction = 0.0
    """Share of a frame's rays drawn inside its head mask (the rest uniformly over the projected head box, as
    RAD-NeRF draws them over the image; 0 in the paper). Not a demo aid: with a few thousand rays instead of
    65,536 (a third of a 450 x 450 frame's pixels) it keeps the pixels the paper covers at every step covered."""
    lips_ray_fraction: Fraction = 0.0
    """Share of a frame's rays drawn inside its lips box (0 in the paper; the lips fine-tuning stage alone
    focuses on them there). Raising it spends a short CPU budget where the condition matters; not a demo aid
    for the reason ``head_ray_fraction`` gives (the paper's dense sampling sees the lips at every step)."""
    frames_per_step: PositiveInt = 1
    """Training frames the rays of one iteration come from (RAD-NeRF: one image per iteration)."""
    train_ray_chunk: NonNegativeInt = 4096
    """A frame with more rays than this in a head step is rendered and backpropagated this many rays at a
    time, each chunk's graph freed after its backward: the gradient is the same (the loss is a mean over
    rays), the memory is bounded by the chunk. Not a paper value: torch-ngp fuses the march in CUDA, while
    here the paper's 65,536 rays x ~400 samples each before the occupancy grid has pruned would hold
    tens of millions of samples' activations at once (out of memory with 24 GiB; 4,096 rays peaked at
    15.8 GB on a CPU). 0: never split."""
    learning_rate: NonNegativeFloat = 1e-2
    """Learning rate of the hash grids (RAD-NeRF)."""
    network_learning_rate: NonNegativeFloat = 1e-3
    """Learning rate of the MLPs (RAD-NeRF)."""
    weight_decay: NonNegativeFloat = 1e-2
    """AdamW decoupled weight decay of the MLPs (torch's default; the paper gives none); hash tables get none."""
    decay_at: tuple[Fraction, Fraction] = (0.625, 0.75)
    """Fractions of the iterations where the LR drops to x0.1 and x0.01 (150K and 180K of 240K)."""
    lips_start: Fraction = 200 / 240
    """Fraction of the iterations where lips fine-tuning starts and the LR is reset (200K of 240K)."""
    lips_patch: PositiveInt = 32
    """Side of the square patch containing the lips rendered per frame while fine-tuning (RAD-NeRF)."""
    lips_weight: NonNegativeFloat = 0.01
    """lambda of L = MSE + lambda * LPIPS(patch) (the paper's value is lost in the text; RAD-NeRF / ER-NeRF)."""
    lips_loss: LipLoss = "auto"
    """Perceptual lip loss: lpips (needs its weights), dssim (1 - SSIM, weight-free) or auto (lpips if present)."""
    opacity_weight: NonNegativeFloat = demo_aid(0.0, "opacity loss")
    """Weight of an MSE between each head ray's opacity and the frame's head mask (parse labels head, neck,
    lips, mouth). Not in the paper (0); a CPU-budget aid: it clears the fog around the silhouette early, so the
    occupancy grid prunes it and fewer samples are marched."""
    distortion_weight: NonNegativeFloat = demo_aid(0.0, "distortion loss")
    """Weight of Mip-NeRF 360's distortion loss on the head rays' weights. Not in the paper (0); a CPU-budget
    aid: it turns the early volumetric fog into a surface, so rays terminate after a few samples."""
    shape_prior_steps: NonNegativeInt = demo_aid(0, "solid-head prior")
    """Iterations that first fit the density to a solid head (the mask hull, cut in depth by an ellipsoid whose
    front is the face's landmarks triangulated with the tracked cameras, and by their depth inside the face's
    outline), as Neuralangelo / NeuS start from a sphere. Not in the paper (0); a CPU-budget aid: training then starts
    from a surface instead of a fog that every ray has to march through. Needs ``visual_hull`` (the silhouette and
    the ellipsoid's extent are the hull's)."""
    shape_prior_carve: NonNegativeFloat = demo_aid(0.0, "carved {value} in front of the face")
    """Hull cells further than this (scene units; the head box spans 2) in front of the shape prior's surface
    are removed from the occupancy grid for good; 0 keeps them. Not in the paper; a CPU-budget aid that goes
    with ``max_samples``: a ray that may only evaluate a few samples must meet the face, not the empty space
    in front of it (where the field, left free, grows the density that paints the texture centimetres in
    front of the face, smeared across views). Needs ``shape_prior_steps`` (it carves in front of that prior)."""
    progressive_initial_levels: PositiveInt = 4
    """Positional grid levels active at the start."""
    progressive_every: PositiveInt = 5000
    """Iterations per additional level at ``progressive_reference_iterations``; scaled with ``iterations``."""
    progressive_reference_iterations: PositiveInt = 240_000
    """The iteration budget ``progressive_every`` refers to (the paper's)."""

    # --- Torso training (RAD-NeRF) ----------------------------------------------------------------------------
    torso_iterations: NonNegativeInt = 200_000
    """Torso iterations after the head (RAD-NeRF's torso run); 0 = composite over the ground-truth-free
    background only."""
    torso_rays_per_step: PositiveInt = 65_536
    """Pixels per torso iteration."""
    torso_levels: PositiveInt = 16
    """Levels of the torso's 2D hash grid (RAD-NeRF)."""
    torso_level_dim: PositiveInt = 2
    """Features per level of the torso grid."""
    torso_base_resolution: PositiveInt = 16
    """Coarsest resolution of the torso grid."""
    torso_log2_hashmap_size: PositiveInt = 16
    """log2 entries per level of the torso grid."""
    torso_desired_resolution: PositiveInt = 2048
    """Finest resolution of the torso grid."""
    torso_hidden: PositiveInt = 32
    """Hidden width of the torso colour net (RAD-NeRF)."""
    torso_deform_hidden: PositiveInt = 64
    """Hidden width of the torso deformation net (RAD-NeRF)."""

    # --- Bookkeeping ---------------------------------------------------------------------------------------
    checkpoint_every: PositiveInt = 10_000
    """Iterations between resumable checkpoints."""
    checkpoint_seconds: PositiveFloat = 60.0
    """Wall-clock seconds of training after which a checkpoint is written even before ``checkpoint_every``
    iterations (the paper is silent): a killed run loses at most about this much work."""
    validate_every: PositiveInt = 10_000
    """Iterations between validation renders (PSNR in curve.csv, a sample PNG)."""
    validation_frames: NonNegativeInt = 2
    """Held-out frames rendered at each validation."""
    log_every: PositiveInt = 100
    """Iterations between logged loss values."""
    device: Device = "auto"
    """auto (CUDA when available), cuda or cpu."""
    backend: HashGridBackend = "auto"
    """Hash-grid backend: auto, torch or tcnn."""
    seed: NonNegativeInt = 0
    """Seed of the initialisation and the sampling."""

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"r2talker.condition must be one of {CONDITIONS}, got {self.condition!r}")
        if self.audio_spatial and self.maglo:
            raise ValueError("r2talker.audio_spatial (RAD-NeRF's per-sample conditioning) and maglo (R2-Talker's "
                             "global one) exclude each other: switch one off")
        if self.lips_loss not in LIP_LOSSES:
            raise ValueError(f"r2talker.lips_loss must be one of {LIP_LOSSES}, got {self.lips_loss!r}")
        if not 0 < self.decay_at[0] <= self.decay_at[1] <= 1:
            raise ValueError(f"r2talker.decay_at must be increasing fractions in (0, 1], got {self.decay_at}")
        if self.landmark_window < 1 or self.landmark_window % 2 == 0:
            raise ValueError(f"r2talker.landmark_window must be odd and positive, got {self.landmark_window}")
        if self.head_ray_fraction < 0 or self.lips_ray_fraction < 0 or \
                self.head_ray_fraction + self.lips_ray_fraction > 1:
            raise ValueError("r2talker.head_ray_fraction and lips_ray_fraction must be >= 0 and sum to at most 1")
        if self.shape_prior_steps > 0 and not self.visual_hull:
            raise ValueError("r2talker.shape_prior_steps needs visual_hull: the solid-head prior's silhouette and "
                             "extent are the visual hull's (set visual_hull: true or shape_prior_steps: 0)")
        if self.shape_prior_carve > 0 and self.shape_prior_steps <= 0:
            raise ValueError("r2talker.shape_prior_carve carves in front of the solid-head prior: it needs "
                             "shape_prior_steps > 0")
        if self.iterations < 1 or self.rays_per_step < 1 or self.frames_per_step < 1:
            raise ValueError("r2talker.iterations, rays_per_step and frames_per_step must be positive")

    @property
    def total_iterations(self) -> int:
        return self.iterations + self.torso_iterations

    @property
    def lips_start_iteration(self) -> int:
        return int(round(self.lips_start * self.iterations))

    def levels_per_step(self) -> int:
        """Iterations per additional positional level, scaled from the paper's 5000 of 240K."""
        scaled = self.progressive_every * self.iterations / self.progressive_reference_iterations
        return max(1, int(round(scaled)))

    def learning_rate_factor(self, iteration: int, total: int, lips_start: int | None = None) -> float:
        """x1, then x0.1 and x0.01 at ``decay_at``; reset to x1 from ``lips_start`` (head stage only)."""
        if lips_start is not None and iteration >= lips_start:
            return 1.0
        if iteration >= self.decay_at[1] * total:
            return 0.01
        if iteration >= self.decay_at[0] * total:
            return 0.1
        return 1.0
