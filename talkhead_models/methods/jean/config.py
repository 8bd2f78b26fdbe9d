"""JEAN's hyper-parameters (params.yaml section ``jean``); the defaults are the paper's.

Numbers come from the paper (Sec. 3 and the supplement, Sec. 8). Where the
paper is silent the value is AD-NeRF's (the NeRF JEAN builds on) and the
field says so.

The ablation switches of Table 1 (audio only = AD-NeRF, expression only =
NeRFace) and Table 2 ((a)-(d)) are three fields: which audio encoder,
which per-frame expression feature, and whether the expression transformer
turns that feature into the expression code.

Demo aids (``talkhead_models.config.demo_aid``): the fields whose
non-default value departs from the paper (the emotion network, the audio
feature, the backdrop, the ray sampling around the face); their labels
name them in every table row. Budget reductions (iterations, rays, samples,
network width) are plain fields.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from talkhead_models.config import (ConfigError, Device, Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                                    PositiveInt, demo_aid)
from talkhead_models.preprocess.audio_features import FeatureKind

AudioEncoder = Literal["contrastive", "scratch", "none"]
ExpressionFeature = Literal["emotion", "params", "none"]
EmotionNetwork = Literal["emoca", "corpus_cnn"]
Backdrop = Literal["white", "nearest_pose"]
PositionEncoding = Literal["frequency", "hashgrid"]
AUDIO_ENCODERS = typing.get_args(AudioEncoder)
EXPRESSION_FEATURES = typing.get_args(ExpressionFeature)


@dataclass(frozen=True)
class JeanConfig:
    """The representations, the expression transformer, the dynamic NeRF and their training."""

    # --- Ablation switches (Table 1 baselines, Table 2 (a)-(d)) ----------------------------------------------
    audio_encoder: AudioEncoder = "contrastive"
    """Where e_a comes from: "contrastive" (Sec. 3.1: the AD-NeRF audio encoder pre-trained against the
    landmark autoencoder's mouth embeddings, fine-tuned with the NeRF), "scratch" (AD-NeRF: the same encoder
    trained from random weights with the NeRF; Table 2 rows without the self-supervised encoder) or "none"
    (NeRFace: no audio, Table 1)."""
    expression_feature: ExpressionFeature = "emotion"
    """The per-frame expression input: "emotion" (emotion-recognition features, EMOCA's in the paper),
    "params" (the tracker's 3DMM expression coefficients, Table 2 (b) and (d); NeRFace's input) or "none"
    (AD-NeRF: audio only, Table 1)."""
    expression_transformer: bool = True
    """Encode the expression input with the per-identity expression transformer (Sec. 3.2) and condition on its
    64-d expression part e_e; False feeds the feature itself (Table 2 (a)-(c), NeRFace)."""

    # --- Departures from the paper -------------------------------------------------------------------------
    emotion_network: EmotionNetwork = demo_aid("emoca", "emotion features from a CNN trained on the corpus "
                                                        "labels, not EMOCA")
    """Which network gave the emotion features: "emoca" (the paper: EMOCA's ResNet-50, 2048-d, loaded from the
    weights folder by the pretrain_emotion stage) or "corpus_cnn" (that stage's substitute, trained on the
    corpus's emotion labels without test frames). Must match what the stage produced."""
    audio_feature: FeatureKind = demo_aid("ds", "{value} audio features, not DeepSpeech")
    """Audio feature windows the audio encoder reads (DeepSpeech in the paper; the pretrained encoder's kind
    must match)."""
    backdrop: Backdrop = demo_aid("white", "torso and background of the nearest-pose training frame")
    """What the head is composited over at inference: "white" (the paper renders the face on white and crops
    it for its metrics) or "nearest_pose" (the training frame whose head pose is nearest: its torso over the
    background image, so full frames can be compared with the ground truth)."""
    position_encoding: PositionEncoding = demo_aid("frequency", "hash-grid positional encoding")
    """How x is encoded: "frequency" (AD-NeRF's 10 frequencies, the paper) or "hashgrid" (a multi-resolution hash
    grid, ``hash_*`` fields, which a CPU trains in hundreds instead of hundreds of thousands of iterations; the
    condition still enters the MLP with it, as in the paper)."""
    hash_levels: PositiveInt = 8
    """Levels of the hash grid when ``position_encoding`` is hashgrid (not in the paper)."""
    hash_level_dim: PositiveInt = 2
    """Features per level."""
    hash_base_resolution: PositiveInt = 16
    """Coarsest resolution."""
    hash_desired_resolution: PositiveInt = 512
    """Finest resolution."""
    hash_log2_size: PositiveInt = 15
    """log2 of the entries per level."""
    face_ray_fraction: Fraction = demo_aid(0.0, "{value} of the rays on the face and lips")
    """Share of each step's rays drawn inside the head mask, half of them on the lips (the paper samples 2048
    rays of the frame uniformly); the rest stay uniform over the frame."""
    opacity_weight: NonNegativeFloat = demo_aid(0.0, "opacity loss")
    """Weight of an MSE between each ray's opacity (coarse and fine) and the frame's head mask (parse labels head,
    neck, lips, mouth), R2-Talker's aid of the same name. Not in the paper (0): with a few hundred iterations the
    photometric loss alone leaves the head half transparent over the backdrop (mean opacity 0.72 inside the
    mask, a tenth of its pixels below 0.03, on S001 after 600 iterations), which reads as a washed-out face."""

    surface_band: NonNegativeFloat = demo_aid(0.0, "rays bounded around the landmark solid head")
    """Distance in front of the solid-head prior's surface (scene units, the head box spans [-1, 1]) where a ray's
    samples start, 0 to march the whole head box (the paper). The prior is R2-Talker's: the face's landmarks
    triangulated with the tracked cameras, inside an ellipsoid spanning the head box
    (``components.head_prior.ShapePrior``); rays that pass outside it keep the box, or are empty outside
    ``surface_envelope``. Not in the paper: with the few samples a CPU affords the box is 1.5 deep and the
    face's depth stays a blur from view to view (S001, 100 test frames: M-LMD 2.67 px with 4 + 4 samples over
    the box, 1.56 with 16 + 16, 1.35 with 4 + 4 in a 0.45-deep band)."""
    surface_band_behind: NonNegativeFloat = 0.3
    """Distance behind the prior's surface where the samples end (used when ``surface_band`` is above 0)."""
    surface_envelope: PositiveFloat = 1.2
    """With ``surface_band``: rays that miss the prior's ellipsoid grown by this factor are empty (no samples;
    the opacity loss drives them to nothing anyway). On S001's test views 1.2 leaves 0.03% of the head mask's
    pixels outside (1.1: 0.65%) and marches 39% of the frame instead of the head box's 56%."""

    # --- Representations (Sec. 3.1, 3.2) -------------------------------------------------------------------
    audio_dim: PositiveInt = 64
    """Width of e_a (Sec. 3.1: 64-d)."""
    audio_attention_frames: PositiveInt = 8
    """AD-NeRF's attention smoothing over this many frames' audio codes (AD-NeRF: 8)."""
    expression_dim: PositiveInt = 64
    """Width of e_e (Sec. 3.2: EE's 128-d output split in half)."""
    expression_condition_dim: PositiveInt = 32
    """Width of the expression part of the NeRF's input: the supplement gives the input as 96 = audio +
    expression, with e_a 64-d, so e_e (or the raw feature) enters through a linear map to 32 (how is not said)."""
    transformer_window: PositiveInt = 8
    """ω: frames per window of the expression transformer (Sec. 3.2)."""
    transformer_hidden: PositiveInt = 512
    """Hidden width of the input MLP (2048 -> 512 -> 128)."""
    transformer_model_dim: PositiveInt = 128
    """d_model of EE and ED (the input MLP's output)."""
    transformer_layers: PositiveInt = 3
    """Layers of EE and of ED."""
    transformer_heads: PositiveInt = 8
    """Attention heads."""
    transformer_dropout: Fraction = 0.2
    """Dropout."""
    swap_probability: Fraction = 0.8
    """δ: probability that the expression parts of a DTW-aligned pair are swapped."""
    transformer_feedforward: PositiveInt = 512
    """Feed-forward width of EE's and ED's layers (not given; PyTorch's 2048 makes a CPU step 2.1x slower)."""
    transformer_steps: PositiveInt = 420
    """Training steps of the expression transformer: the supplement's 20 epochs of 60 MEAD pairs (about 5,400
    windows of 8 aligned frames) at batch 256."""
    transformer_batch: PositiveInt = 256
    """Windows per transformer step (supplement 8.3: 256)."""
    transformer_learning_rate: PositiveFloat = 1e-3
    """Adam "with default parameters" (supplement 8.3): 1e-3."""
    transformer_weight_decay: NonNegativeFloat = 1e-5
    """Adam weight decay (supplement 8.3)."""

    # --- Dynamic NeRF (Sec. 3.3, AD-NeRF) ------------------------------------------------------------------
    layers: PositiveInt = 8
    """Linear layers of the MLP (AD-NeRF: 8, the input re-entering at the fifth)."""
    hidden: PositiveInt = 128
    """Hidden width (JEAN: 128)."""
    position_frequencies: PositiveInt = 10
    """Frequencies of x's positional encoding."""
    direction_frequencies: PositiveInt = 4
    """Frequencies of the viewing direction's encoding."""
    coarse_samples: PositiveInt = 64
    """Stratified samples per ray for the coarse network (AD-NeRF: 64)."""
    fine_samples: PositiveInt = 128
    """Importance samples per ray for the fine network (AD-NeRF: 128)."""
    rays_per_step: PositiveInt = 2048
    """Rays per iteration (Sec. 8: 2048), split evenly over ``frames_per_step`` frames."""
    frames_per_step: PositiveInt = demo_aid(1, "{value} frames per step")
    """Training frames each iteration draws its rays from (the paper: 1). Not in the paper; a CPU-budget aid
    like R2-Talker's: with a few hundred iterations, one condition per step leaves the mouth's dependence on
    the audio unlearnt (an average, half-closed mouth on every frame of S001 after 600 one-frame steps)."""
    iterations: PositiveInt = 400_000
    """NeRF iterations (Sec. 8: 400,000, about 2 days on one GPU)."""
    learning_rate: PositiveFloat = 5e-4
    """Adam learning rate of the NeRF, decaying exponentially to ``final_learning_rate``."""
    final_learning_rate: PositiveFloat = 5e-5
    """Learning rate at the last iteration."""
    audio_learning_rate: NonNegativeFloat = 5e-6
    """Learning rate of the pre-trained audio encoder, fine-tuned with the NeRF (an encoder trained from scratch
    uses the NeRF's)."""
    box_margin: NonNegativeFloat = 0.1
    """Margin around the training frames' head box that bounds the rays (fraction of its half size)."""
    render_downscale: PositiveInt = 1
    """Render at 1/this of the frame size and upsample (1 = full size; a budget knob of the CPU demo)."""

    # --- Bookkeeping -----------------------------------------------------------------------------------------
    checkpoint_every: PositiveInt = 10_000
    """Iterations between checkpoints."""
    checkpoint_seconds: PositiveFloat = 60.0
    """Wall-clock seconds after which a checkpoint is written even before ``checkpoint_every``."""
    validate_every: PositiveInt = 10_000
    """Iterations between validation renders (PSNR of a held-out frame, not a test frame)."""
    log_every: PositiveInt = 100
    """Iterations per logged loss point."""
    device: Device = "auto"
    """Torch device."""
    seed: NonNegativeInt = 0
    """Seed of the initialisation and the sampling."""

    def __post_init__(self) -> None:
        if self.audio_encoder == "none" and self.expression_feature == "none":
            raise ConfigError("jean: audio_encoder and expression_feature cannot both be none (nothing drives "
                              "the face)")
        if self.expression_transformer and self.expression_feature == "none":
            raise ConfigError("jean.expression_transformer needs an expression_feature (emotion or params)")
        if self.transformer_model_dim % 2 or self.transformer_model_dim % self.transformer_heads:
            raise ConfigError("jean.transformer_model_dim must be even (split into lip and expression halves) and "
                              "divisible by transformer_heads")
        if self.transformer_model_dim // 2 != self.expression_dim:
            raise ConfigError(f"jean.expression_dim ({self.expression_dim}) must be half of "
                              f"transformer_model_dim ({self.transformer_model_dim}): e_e is half of EE's output")
        if self.final_learning_rate > self.learning_rate:
            raise ConfigError("jean.final_learning_rate must not exceed learning_rate")
        if self.surface_envelope < 1.0:
            raise ConfigError(f"jean.surface_envelope must be at least 1 (the prior's ellipsoid itself), got "
                              f"{self.surface_envelope}: a smaller one cuts the head")

    @property
    def condition_dim(self) -> int:
        """Width of the NeRF's per-frame input e_in (96 in the paper)."""
        audio = self.audio_dim if self.audio_encoder != "none" else 0
        expression = self.expression_condition_dim if self.expression_feature != "none" else 0
        return audio + expression
