"""S3D-NeRF's hyper-parameters (params.yaml section ``s3dnerf``); the defaults are the paper's.

The paper (ECCV 2024, Sec. 3) gives the architecture and the loss weights;
it gives no layer widths, plane sizes, sample counts or optimiser settings.
Where it is silent the value is EG3D's (the tri-plane generator whose
neural rendering + super-resolution design it follows) or, for slot
attention, Locatello et al.'s, and the field says so.

The ablation table's rows are one switch, ``deformation``: "cross_attention"
(the full model), "concat" (feature-concatenation deformation), "naive"
(displacement from position and audio only) and "none" (no deformation);
``sync_weight`` 0 is the row without the lip-sync discriminator.

Demo aids (``talkhead_models.config.demo_aid``): the perceptual loss's
network (ImageNet VGG in the paper; with no ImageNet weights here, feature
matching on the adversarial discriminator's activations), a lower
adversarial weight, extra losses on the neural render (its coarse RGB on
the inner face, its opacity, where its lip landmarks land in the source),
the source's colour read through the render (``colour_skip``,
``warp_source``), the audio-to-motion model's mouth displacements as the
audio (``audio_motion``) and closed-mouth training sources. Budget
reductions (image size, planes, samples, widths, iterations) are plain
fields.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from talkhead_models.config import (ConfigError, Device, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                                    PositiveInt, demo_aid)

Deformation = Literal["cross_attention", "concat", "naive", "none"]
SourceRegion = Literal["outside_face", "full"]
PerceptualNetwork = Literal["vgg", "discriminator_features"]
DEFORMATIONS = typing.get_args(Deformation)


@dataclass(frozen=True)
class S3DNeRFConfig:
    """The appearance encoder, the cross-modal deformation field, the renderer and their training."""

    # --- Ablation switches -----------------------------------------------------------------------------------
    deformation: Deformation = "cross_attention"
    """How the displacement of a 3D point is predicted (Sec. 3.2 and the ablation table): "cross_attention"
    (slot-aggregated visual features attend to the audio, U-Net on position, audio and the cross-modal
    feature), "concat" (the same U-Net on position, audio and the aggregated visual feature concatenated:
    Feat-Concatenate Deform), "naive" (position and audio only: Naive Deform) or "none" (w/o Deform)."""

    # --- Departures from the paper ---------------------------------------------------------------------------
    perceptual_network: PerceptualNetwork = demo_aid(
        "vgg", "perceptual loss on the discriminator's features, not ImageNet VGG")
    """Network of the perceptual term: "vgg" (the paper; needs ImageNet VGG-16 weights in the weights folder) or
    "discriminator_features" (L1 between the adversarial discriminator's activations of the render and of the
    real frame, pix2pixHD's feature matching; needs no pre-trained network)."""

    opacity_weight: NonNegativeFloat = demo_aid(0.0, "opacity loss against the parsed head mask")
    """Weight of an MSE between the neural render's opacity and the target frame's head mask (the parse stage's
    head, lips and mouth, shrunk to ``render_size``). Not in the paper (0), and off in the demo. With the demo's
    other aids, 0.1 kept the backdrop around the head sharp but the face lost its features again (dlib found a
    face in 0 of 8 renders of held-out S003, against 8 of 8 without it; docs/HISTORY.md, "S3D-NeRF renders a
    face")."""
    colour_skip: bool = demo_aid(False, "decoded RGB a change of the source's colour")
    """Decode a point's RGB as a change of the source image's colour at its projection (its logit plus the
    decoder's output) instead of from the features alone (the paper's and EG3D's decoder: False). The decoder
    reads that colour either way; with four training identities from one photo, 400 steps learned their
    common face instead of reading it, and rendered it on every identity (docs/HISTORY.md)."""
    warp_source: bool = demo_aid(False, "render's pixels read from the source where its rays land")
    """The neural render's part of a frame read from the source image at full resolution: each pixel takes the
    source's colour where its ray lands in the source image (the mean of its samples' projections after the
    deformation, weighted as volume rendering weighs colours) instead of the render's coarse RGB, which the
    super-resolution still reads. Head pose and mouth motion still come from the NeRF's density and
    deformation; the colour at ``render_size`` no longer blurs the face. Not in the paper (False), whose
    super-resolution learns the detail. Tried as a detail layer only (the warp less its blur added to the
    coarse RGB) it left the face blurred, the residual filling the hidden face with the training identities'
    skin colour (docs/HISTORY.md, "S3D-NeRF's face from its source")."""
    landing_upsampling: Literal["bilinear", "convex"] = demo_aid("bilinear", "landing map convex-upsampled")
    """How ``warp_source`` brings where the rays land from ``render_size`` to ``image_size``: "bilinear", or
    "convex" (RAFT's convex upsampling, Teed and Deng 2020: each frame pixel a learned convex combination of the
    landing points of the 3 x 3 render pixels around it, its weights predicted from the render's features). At
    the demo's 32 px a mouth is about one render pixel tall, and a bilinear landing map can only stretch a closed
    source's lips, not part them. Only with ``warp_source``; the paper has no landing map."""
    coarse_weight: NonNegativeFloat = demo_aid(0.0, "coarse render loss on the inner face")
    """Weight of an L2 between the neural render's RGB (before super-resolution, composited over black) and the
    target frame shrunk to ``render_size``, inside the convex hull of the target's 68 landmarks (training only).
    Not in the paper (0), whose NeRF renders "a coarse image of the inner face region" but whose loss is on the
    final frame alone."""
    mouth_weight: PositiveFloat = demo_aid(1.0, "pixel loss x{value} on the mouth")
    """Weight of the pixel loss inside each target frame's mouth box (the tracked lips' box, grown by half; the
    paper weighs every pixel alike: 1). Training only; the renders never read a target frame's landmarks."""
    audio_motion: bool = demo_aid(False, "a2m audio")
    """The 1D convolutional audio encoder reads the mouth-landmark displacements that the corpus audio-to-motion
    model (data/models/audio2motion, trained without the held-out identity) predicts from ``audio_feature``, over
    ``motion_window`` frames, instead of ``audio_feature``'s windows themselves (the paper: the speech signal).
    GSTalker's demo has the same aid: in the demo's 400 steps, the encoder learned no lip motion from the speech
    features (the renders' mouths did not open with the audio; docs/HISTORY.md). Derived from audio alone, per
    recording (its speaker mean from its own frames), for training and driving alike; the a2m model's face input
    is the training identities' mean neutral shape, so a new identity needs nothing but its image."""
    motion_window: PositiveInt = 8
    """Frames per ``audio_motion`` window, centred on the frame (GSTalker's and RAD-NeRF's 8)."""
    closed_mouth_sources: bool = demo_aid(False, "training sources with the mouth closed")
    """Draw a training sample's source image from the quarter of its identity's frames with the most closed mouth
    (the inner lips' gap over the eye-corner distance, from the landmarks stage) instead of from all of them (the
    paper: any frame). The deformation then learns to open a closed mouth by the audio rather than also to read
    how open the source's is; a render's source is still whatever image it is given."""
    landmark_flow_weight: NonNegativeFloat = demo_aid(0.0, "lip landmark flow loss x{value}")
    """Weight of a loss on where the rays through the target frame's lip landmarks (iBUG 48-67, from the landmarks
    stage) land in the source image, against the source frame's same landmarks: squared pixels at ``image_size``.
    It supervises the deformation with the tracked lips' motion, as GSTalker's mouth-motion prior does its
    Gaussians; the paper has only the photometric, perceptual, adversarial, lip-sync and deformation losses (0).
    Training only: a render reads the audio and the source image, never a landmark."""

    # --- Images and rendering --------------------------------------------------------------------------------
    sr_source: SourceRegion = "outside_face"
    """What of the source image the super-resolution reads. The paper's NeRF renders "a coarse image of the inner
    face region", after which the super-resolution "adds details for the outer face and background"; it does not
    say how the source image reaches the super-resolution. "outside_face" (our reading) hides the source's inner
    face, the convex hull of its 68 landmarks, from the super-resolution, so the face in a frame can only come
    from the neural render; "full" shows it the whole source image, and then a render worse than the source's
    own face is faded out: in the demo of 2026-12-06 (densities per metre, none of today's aids) every pixel's
    opacity fell below 1e-5 and every frame was the source image plus a residual blind to the audio and the
    pose (docs/HISTORY.md)."""
    image_size: PositiveInt = 512
    """Side of the output image in pixels (HDTF at 512 in the paper); frames are resized to it."""
    render_size: PositiveInt = 128
    """Side of the neural rendering before super-resolution (paper silent; EG3D renders 128 for 512)."""
    feature_channels: PositiveInt = 32
    """Channels of the rendered feature image; the first three are the coarse RGB (EG3D: 32)."""
    samples_coarse: PositiveInt = 48
    """Stratified samples per ray (paper silent; EG3D's 48)."""
    samples_fine: NonNegativeInt = 48
    """Importance samples per ray on top (EG3D's 48)."""
    box_half_extent: PositiveFloat = 0.16
    """Half side in metres of the cube around the head frame's origin that rays are cut to and the tri-plane's
    depth axis spans (the tracker's head frame; a head is about 0.2 m wide)."""
    box_centre_z: float = -0.04
    """Depth of that cube's centre in the head frame, metres (the frame's origin lies on the face plane)."""

    # --- Hierarchical appearance encoder (Sec. 3.1) ----------------------------------------------------------
    encoder_channels: tuple[PositiveInt, ...] = (64, 128, 256, 512)
    """Channels of the four downsampling stages D_0..D_3 (paper: four scales; widths silent, ResNet's)."""
    plane_channels: PositiveInt = 32
    """Channels of each of the three planes of a scale (EG3D: 32); the FPN output of a scale has 3x this."""

    # --- Cross-modal deformation field (Sec. 3.2) ------------------------------------------------------------
    num_slots: PositiveInt = 7
    """Slots aggregating the visual features (paper silent; Locatello et al.'s 7)."""
    slot_iterations: PositiveInt = 3
    """Slot-attention iterations (Locatello et al.'s 3)."""
    token_grid: PositiveInt = 8
    """Each scale's features are pooled to token_grid x token_grid tokens before slot attention (paper silent)."""
    embed_dim: PositiveInt = 128
    """Width of the slots, the audio tokens and the cross-modal feature (paper silent)."""
    attention_heads: PositiveInt = 4
    """Heads of the multi-head cross-attention (paper silent)."""
    audio_feature: str = "mel"
    """Audio feature windows ([16, D] per frame) the 1D fully convolutional audio encoder reads (paper: the
    speech signal; the stored features of the audio stage here)."""
    position_frequencies: PositiveInt = 6
    """Frequencies of the positional encoding of x fed to the deformation U-Net (paper silent)."""
    deform_widths: tuple[PositiveInt, ...] = (256, 128, 64)
    """Encoder widths of the U-Net-shaped deformation MLP; the decoder mirrors them with skip connections."""

    # --- Decoder and super-resolution -------------------------------------------------------------------------
    decoder_hidden: PositiveInt = 64
    """Hidden width of the tri-plane decoder MLP (EG3D: one hidden layer of 64)."""
    sr_channels: PositiveInt = 64
    """Channels of the super-resolution network's convolutions (paper silent)."""

    # --- Discriminator -----------------------------------------------------------------------------------------
    disc_channels: tuple[PositiveInt, ...] = (64, 128, 256, 256)
    """Channels of the StyleGAN-style discriminator's residual downsampling blocks (paper: a StyleGAN
    discriminator trained from scratch; widths follow the image size)."""
    r1_gamma: NonNegativeFloat = 1.0
    """Weight of the R1 gradient penalty on real images (StyleGAN2; paper silent)."""

    # --- Loss (Sec. 3.4) ------------------------------------------------------------------------------------
    pixel_weight: NonNegativeFloat = 1.0
    """L2 pixel loss."""
    perceptual_weight: NonNegativeFloat = 0.01
    """Perceptual loss."""
    adversarial_weight: NonNegativeFloat = demo_aid(1.0, "adversarial loss x{value}, not x{default}")
    """Non-saturating adversarial loss of the generator. At demo size (200 adversarial steps, a discriminator
    trained from scratch) the paper's 1.0 shifted every frame's colours (PSNR 15.3 dB on held-out S003 against
    the source image's 20.9; docs/HISTORY.md), so the demo lowers it, labelled."""
    sync_weight: NonNegativeFloat = 0.5
    """Lip-sync loss from the frozen sync expert (0: the "w/o Lip Sync" row)."""
    deform_weight: NonNegativeFloat = 0.001
    """Mean squared displacement (deformation regulariser)."""
    sync_frames: PositiveInt = 5
    """Consecutive target frames per sample, the sync expert's window (Wav2Lip's 5)."""

    # --- Optimisation (paper silent) ---------------------------------------------------------------------------
    iterations: PositiveInt = 200_000
    """Generator steps across the training identities (paper silent)."""
    batch_size: PositiveInt = 4
    """Source images per step, each with ``sync_frames`` targets of its identity."""
    learning_rate: PositiveFloat = 2e-4
    """Adam learning rate of the generator (paper silent)."""
    disc_learning_rate: PositiveFloat = 2e-4
    """Adam learning rate of the discriminator."""
    warmup_steps: NonNegativeInt = 0
    """Steps of pixel and deformation loss alone before the adversarial, perceptual and lip-sync terms switch on
    (paper silent; Wav2Lip switches its sync loss on late; 0 = every term from the start)."""
    seed: NonNegativeInt = 0
    """Seed of the initial weights and of the frames drawn."""
    threads: NonNegativeInt = 0
    """torch CPU threads (0 = torch's default)."""
    device: Device = "auto"
    """Torch device."""
    checkpoint_seconds: PositiveFloat = 60.0
    """Wall time between checkpoints (resume)."""
    log_every: PositiveInt = 50
    """Steps between logged losses."""

    def __post_init__(self) -> None:
        if len(self.encoder_channels) != 4:
            raise ConfigError(f"s3dnerf.encoder_channels: the encoder has four scales (Sec. 3.1), got "
                              f"{list(self.encoder_channels)}")
        if self.image_size % self.render_size:
            raise ConfigError(f"s3dnerf.image_size {self.image_size} must be a multiple of render_size "
                              f"{self.render_size} (the super-resolution upsamples by an integer factor)")
        if self.feature_channels < 3:
            raise ConfigError("s3dnerf.feature_channels must be at least 3 (the first three are RGB)")
        if self.embed_dim % self.attention_heads:
            raise ConfigError(f"s3dnerf.embed_dim {self.embed_dim} must be divisible by attention_heads "
                              f"{self.attention_heads}")
        if self.landing_upsampling != "bilinear" and not self.warp_source:
            raise ConfigError("s3dnerf.landing_upsampling only applies with warp_source: set warp_source: true or "
                              "leave landing_upsampling at bilinear")
        if not self.deform_widths:
            raise ConfigError("s3dnerf.deform_widths: at least one width")
