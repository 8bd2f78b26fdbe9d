"""Audio to 3D landmark motion (GeneFace's audio2motion, trained on the corpus).

Per video frame, a window of 16 audio feature frames (``features/aud_<kind>.npy``,
[N, 16, D], D read from the array) goes through AD-NeRF's AudioNet; a
temporal convolution stack over the frame codes, conditioned on the
identity's neutral 68x3 shape, outputs each frame's 68x3 displacement from
that neutral shape in the canonical face frame (``canonical.py``; the
targets have the detector's pose-following mouth error removed,
``datasets.load_identity``). The convolutions over time (13 frames of
context) and a velocity loss keep the output smooth; the loss weighs the
mouth points more.

Two variants share the network:

* ``deterministic``: the baseline described above;
* ``vae``: GeneFace's variational form: a posterior encoder sees the true
  motion with the audio and gives a per-frame latent; the decoder gets the
  latent with the audio; a KL term pulls the posterior to N(0, I). GeneFace
  adds a normalising-flow prior; here the prior is the plain Gaussian and
  prediction decodes its mean (z = 0), so the output is deterministic too.

Audio features are normalised per speaker (minus the mean over the speaker's
frames, divided by the training set's std; the pitch of ``mel`` features
relative to the speaker's mean voiced pitch): the held-out identity's voice
differs in pitch and timbre, while emotion shows as a change relative to the
speaker's own average, which the per-speaker mean keeps.

Options beyond GeneFace (off by default, on in the demo profile), for a
corpus of few speakers whose targets are detected (noisy) landmarks:

* an utterance context (``context_frames``): prosodic features (level,
  spectral tilt, energy, pitch) averaged over the seconds around each frame
  of its recording, so the network can tell emotions apart (a smile is held
  through a clip, its cue is the prosody, not 0.3 s of audio), optionally
  taught the training clips' emotion labels (``emotion_weight``);
* vocal-tract-length warping of mel features (``vtlp``), for unseen voices;
* dropout, and an ensemble of networks from several seeds (``ensemble``)
  whose mean prediction keeps what they share of the noisy targets.

The model is generic; ``MotionAdaptation`` is GeneFace's post-net step in
linear form, fitted per face on that face's own training frames by whoever
drives it (``adapt_to_face``).

Data: ``datasets.segment_table``'s segments. Training sequences and the
input/output scales come from ``TRAIN`` segments, validation scores from the
held-out ones, the per-face adaptations of the scores from the long videos'
non-test segments, the speaker means from the non-test frames; no ``TEST``
frame, nor a ``NO_FACE`` one, is read by any of them (only the ``USED``
splits; ``loader_frames`` lists what each reads).
"""

from __future__ import annotations

import logging
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence

import annotated_types
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

from talkhead_models.components.audio import AudioNet
from talkhead_models.config import Device, NonNegativeFloat, NonNegativeInt, PositiveInt
from talkhead_models.data import DataConfig
from talkhead_models.data.arrays import require_finite
from talkhead_models.preprocess.audio_features import AudioConfig, FeatureKind
from talkhead_models.pretrained.canonical import MOUTH
from talkhead_models.pretrained.datasets import (
    HELDOUT, TRAIN, USED, IdentityLandmarks, PretrainDataError, SplitConfig, split_frames,
)
from talkhead_models.pretrained.sync_expert import LOG_EVERY, MetricLogger, cosine_schedule, resolve_device

log = logging.getLogger(__name__)

Variant = Literal["deterministic", "vae"]
VARIANTS = typing.get_args(Variant)
BelowOne = Annotated[float, annotated_types.Interval(ge=0, lt=1)]
"""A dropout probability or a relative warp: 1 would drop everything or warp a frequency to 0."""
WINDOW = 16


@dataclass(frozen=True)
class Audio2MotionConfig:
    """The audio-to-landmark model and its training (params.yaml ``pretrain_audio2motion``)."""

    data: DataConfig = field(default_factory=DataConfig)
    """The shared data section (which identities to read)."""
    pretrain: SplitConfig = field(default_factory=SplitConfig)
    """The shared held-out split of the corpus-level models."""
    feature_kind: FeatureKind = "mel"
    """Audio features read from features/aud_<kind>.npy ([N, 16, D])."""
    variant: Variant = "deterministic"
    """deterministic (the baseline) or vae (GeneFace's variational model with a Gaussian prior)."""
    audio_dim: PositiveInt = 64
    """Per-frame audio code size (AudioNet output)."""
    identity_dim: PositiveInt = 32
    """Code size of the neutral shape."""
    hidden: PositiveInt = 256
    """Channels of the temporal convolutions."""
    latent_dim: PositiveInt = 16
    """Per-frame latent size of the vae variant."""
    kl_weight: NonNegativeFloat = 0.01
    """Weight of the KL term (vae variant)."""
    sequence_frames: PositiveInt = 32
    """Frames per training sequence."""
    batch_size: PositiveInt = 16
    """Sequences per step."""
    steps: PositiveInt = 8000
    """Training steps (Adam)."""
    learning_rate: NonNegativeFloat = 1e-3
    """Adam learning rate (cosine decay to 5% over the steps)."""
    mouth_weight: NonNegativeFloat = 4.0
    """Loss weight of the mouth points 48-67 (the other points weigh 1)."""
    velocity_weight: NonNegativeFloat = 1.0
    """Weight of the frame-to-frame velocity loss (temporal smoothness)."""
    dropout: BelowOne = 0.0
    """Dropout on the audio codes and between the temporal convolutions (training only)."""
    context_frames: NonNegativeInt = 0
    """Window (frames) of the utterance context: prosodic features averaged over the recording's frames in it
    (0 = none)."""
    context_dim: PositiveInt = 16
    """Channels of the utterance context."""
    ensemble: PositiveInt = 1
    """Networks trained with seeds seed, seed + 1, ...; the model averages their predictions (1 = one network)."""
    vtlp: BelowOne = 0.0
    """Vocal-tract-length perturbation of mel features in training: each sequence's log-mel axis is warped by a
    factor drawn from [1 - vtlp, 1 + vtlp] (0 = none; only for feature_kind mel)."""
    emotion_weight: NonNegativeFloat = 0.0
    """Weight of an auxiliary cross-entropy that makes the utterance context tell the training recordings'
    emotion labels apart (needs context_frames; 0 = none). Prediction uses audio only."""
    eval_every: PositiveInt = 500
    """Steps between validation passes."""
    seed: NonNegativeInt = 0
    """Seed of the initialisation and the sampling."""
    device: Device = "auto"
    """auto (CUDA when available), cuda or cpu."""
    threads: NonNegativeInt = 0
    """torch CPU threads (0 = torch's default)."""


# ---------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class MotionData:
    """Every identity's audio windows and canonical displacements, concatenated."""

    features: Tensor  # [F, 16, D] raw audio features
    speaker_mean: Tensor  # [I, D] mean feature of each identity
    identity_index: Tensor  # [F]
    displacement: Tensor  # [F, 68, 3] canonical landmarks minus the identity's neutral shape
    neutral: Tensor  # [I, 68, 3] neutral shapes (canonical units)
    pixels_per_unit: np.ndarray  # [I] image pixels per canonical unit
    segments: pd.DataFrame  # datasets.segment_table
    rigid_displacement: Tensor | None = None  # [F, 68, 3] the same after the rigid fit alone (for comparison)
    truth: Tensor | None = None  # [F, 68, 3] ground-truth displacements (NaN = unknown); None without truth


def speaker_mean(features: np.ndarray | Tensor, pitch_column: int = -1) -> Tensor:
    """[D] mean over a speaker's frames and window steps of [N, 16, D] features.

    The pitch column (``pitch_column`` >= 0; 0 where unvoiced) is averaged over voiced steps only, so that it is
    the speaker's mean pitch and not a mix of pitch and the share of voiced speech.
    """
    array = np.asarray(features, np.float32)
    mean = array.mean(axis=(0, 1))
    if pitch_column >= 0:
        pitch = array[..., pitch_column]
        voiced = pitch != 0
        mean[pitch_column] = pitch[voiced].mean() if voiced.any() else 0.0
    return torch.from_numpy(mean)


def _mel_layout(feature_kind: str, feature_dim: int) -> AudioConfig | None:
    """The audio stage's default config when the features are ``mel`` ones laid out by it, else None."""
    audio = AudioConfig()
    return audio if feature_kind == "mel" and feature_dim == audio.n_mels + audio.n_mfcc + 2 else None


def pitch_column(feature_kind: str, feature_dim: int) -> int:
    """Index of the pitch feature of ``mel`` features with the audio stage's default layout, else -1."""
    return feature_dim - 1 if _mel_layout(feature_kind, feature_dim) else -1


def prosody_columns(feature_kind: str, feature_dim: int) -> list[int]:
    """The features the utterance context reads: of ``mel`` features the prosodic ones (MFCC 0 and 1, i.e.
    level and spectral tilt, log-energy, pitch), which say how a speaker speaks more than what; all otherwise."""
    audio = _mel_layout(feature_kind, feature_dim)
    if audio is None:
        return list(range(feature_dim))
    return [audio.n_mels, audio.n_mels + 1, feature_dim - 2, feature_dim - 1]


def motion_data(identities: Sequence[IdentityLandmarks], segments: pd.DataFrame, feature_kind: str) -> MotionData:
    """Read each identity's audio features and pair them with its canonical landmark displacements."""
    features, means, index, displacement, neutral, rigid, truth = [], [], [], [], [], [], []
    for number, data in enumerate(identities):
        path = data.processed.audio_features(feature_kind)
        if not path.is_file():
            raise PretrainDataError(f"{path}: audio features not found; run the audio stage (`dvc repro audio`) "
                                    f"or set pretrain_audio2motion.feature_kind to a kind it writes")
        array = np.load(path, mmap_mode="r")
        if array.ndim != 3 or array.shape[0] != len(data.image) or array.shape[1] != WINDOW:
            raise PretrainDataError(f"{path}: expected [{len(data.image)}, {WINDOW}, D] features (one window per "
                                    f"frame), found {array.shape}; re-run the audio stage")
        require_finite(array, path, data.processed.producer("features_dir"))
        features.append(torch.from_numpy(np.array(array, dtype=np.float32)))
        own = segments[segments.identity == data.identity]
        # The speaker's mean voice from its training and validation frames only: the test audio stays unseen.
        heard = split_frames(own, USED) - int(own.start.min())
        means.append(speaker_mean(array[heard], pitch_column(feature_kind, array.shape[-1])))
        index.append(torch.full((len(data.image),), number, dtype=torch.long))
        displacement.append(torch.from_numpy(data.canonical - data.neutral.shape))
        neutral.append(torch.from_numpy(data.neutral.shape))
        rigid.append(torch.from_numpy(data.rigid - data.neutral.shape))
        truth.append(torch.from_numpy(data.truth) if data.truth is not None
                     else torch.full(data.canonical.shape, float("nan")))
    has_truth = any(d.truth is not None for d in identities)
    return MotionData(torch.cat(features), torch.stack(means), torch.cat(index), torch.cat(displacement),
                      torch.stack(neutral), np.array([d.neutral.pixels_per_unit for d in identities]),
                      segments.reset_index(drop=True), torch.cat(rigid), torch.cat(truth) if has_truth else None)


# ---------------------------------------------------------------------------------------------------------------
# Network


def _temporal(in_channels: int, hidden: int, out_channels: int, dropout: float = 0.0) -> nn.Sequential:
    """Three non-causal convolutions over frames (kernel 5: 13 frames of context), edges replicated."""
    def conv(a: int, b: int) -> nn.Conv1d:
        return nn.Conv1d(a, b, 5, padding=2, padding_mode="replicate")

    return nn.Sequential(nn.Dropout(dropout), conv(in_channels, hidden), nn.LeakyReLU(0.02), nn.Dropout(dropout),
                         conv(hidden, hidden), nn.LeakyReLU(0.02), nn.Dropout(dropout), conv(hidden, out_channels))


class Audio2Motion(nn.Module):
    """[B, T, 16, D] audio windows + [B, 68, 3] neutral shape -> [B, T, 68, 3] canonical displacements."""

    def __init__(self, feature_dim: int, variant: str = "deterministic", audio_dim: int = 64, identity_dim: int = 32,
                 hidden: int = 256, latent_dim: int = 16, dropout: float = 0.0, context_frames: int = 0,
                 context_dim: int = 16, emotions: int = 0, pitch_column: int = -1,
                 context_columns: Sequence[int] | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown audio2motion variant {variant!r}; use one of {VARIANTS}")
        self.variant, self.latent_dim, self.pitch_column = variant, latent_dim, pitch_column
        self.emotions = emotions if context_frames > 1 else 0
        self.audio = AudioNet(feature_dim, audio_dim, WINDOW)
        self.identity = nn.Sequential(nn.Linear(68 * 3, identity_dim), nn.LeakyReLU(0.02))
        latent = latent_dim if variant == "vae" else 0
        self.context_frames = context_frames
        context = context_dim if context_frames > 1 else 0
        if context:
            columns = list(range(feature_dim)) if context_columns is None else list(context_columns)
            self.register_buffer("context_columns", torch.tensor(columns, dtype=torch.long))
            inputs = len(columns) + (1 if pitch_column >= 0 else 0)  # + the share of voiced steps
            self.context = nn.Sequential(nn.Conv1d(inputs, 2 * context_dim, 1), nn.LeakyReLU(0.02),
                                         nn.Conv1d(2 * context_dim, context_dim, 1), nn.LeakyReLU(0.02))
        if self.emotions:
            self.emotion_head = nn.Conv1d(context_dim, emotions, 1)
        self.decoder = _temporal(audio_dim + identity_dim + latent + context, hidden, 68 * 3, dropout)
        if variant == "vae":
            self.posterior = _temporal(audio_dim + 68 * 3, hidden, 2 * latent_dim)
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.register_buffer("displacement_std", torch.ones(()))

    def normalise(self, features: Tensor, speaker_mean: Tensor) -> Tensor:
        """[B, T, 16, D] features minus the speaker's mean, over the training set's std; unvoiced steps of the
        pitch column (``speaker_mean``) stay 0, voiced ones are the pitch relative to the speaker's."""
        normalised = (features - speaker_mean[:, None, None]) / self.feature_std
        if self.pitch_column >= 0:
            column = self.pitch_column
            voiced = features[..., column] != 0
            normalised = torch.cat([normalised[..., :column],
                                    torch.where(voiced, normalised[..., column], 0.0)[..., None],
                                    normalised[..., column + 1:]], dim=-1)
        return normalised

    def encode_audio(self, features: Tensor, speaker_mean: Tensor) -> Tensor:
        """[B, T, 16, D] features, [B, D] speaker means -> [B, audio_dim, T] codes."""
        batch, frames = features.shape[:2]
        normalised = self.normalise(features, speaker_mean)
        return self.audio(normalised.flatten(0, 1)).view(batch, frames, -1).transpose(1, 2)

    def utterance_context(self, features: Tensor, speaker_mean: Tensor) -> Tensor:
        """[B, T, 16, D] features of whole recordings -> [B, context_dim, T]: a projection of the speaker-normalised
        features, averaged over the recording's frames within ``context_frames // 2`` of each frame.

        Emotion is a property of the utterance (pitch level and range, loudness, spectral tilt) more than of
        0.3 s of audio. The average stops at the recording's ends (no padding), so a clip shorter than the
        window gets its whole-clip mean at every frame, in training (``train_audio2motion`` passes the context
        of the whole recording around each sequence) as in prediction.
        """
        half = self.context_frames // 2
        per_frame = self.normalise(features, speaker_mean)[..., self.context_columns]
        if self.pitch_column < 0:
            return window_mean(self.context(per_frame.mean(dim=2).transpose(1, 2)), half)
        voiced = (features[..., self.pitch_column:self.pitch_column + 1] != 0).to(per_frame.dtype)
        codes = self.context(torch.cat([per_frame, voiced], dim=-1).mean(dim=2).transpose(1, 2))  # [B, C, T]
        # Half the channels are averaged over voiced speech only (as a pitch level is): weighted by the share of
        # voiced steps in each frame's window.
        plain, pitched = codes.chunk(2, dim=1)
        share = voiced.mean(dim=2).transpose(1, 2)  # [B, 1, T]
        over_voiced = window_mean(pitched * share, half) / window_mean(share, half).clamp_min(1e-3)
        return torch.cat([window_mean(plain, half), over_voiced], dim=1)

    def emotion_logits(self, context: Tensor) -> Tensor:
        """[B, emotions, T] per-frame emotion scores from the utterance context (the auxiliary task)."""
        return self.emotion_head(context)

    def forward(self, features: Tensor, speaker_mean: Tensor, neutral: Tensor, target: Tensor | None = None,
                context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Displacements [B, T, 68, 3] and the KL term (0 for the deterministic variant).

        The vae variant encodes ``target`` (training) or decodes the prior mean (``target=None``). ``context``
        is the utterance context when ``features`` are a stretch of a longer recording; by default the
        features are taken to be whole recordings.
        """
        audio = self.encode_audio(features, speaker_mean)
        frames = audio.shape[-1]
        identity = self.identity(neutral.flatten(1))[:, :, None].expand(-1, -1, frames)
        inputs = [audio, identity]
        if self.context_frames > 1:
            inputs.append(self.utterance_context(features, speaker_mean) if context is None else context)
        kl = audio.new_zeros(())
        if self.variant == "vae":
            if target is None:
                latent = audio.new_zeros(audio.shape[0], self.latent_dim, frames)
            else:
                scaled = (target / self.displacement_std).flatten(2).transpose(1, 2)
                mean, log_var = self.posterior(torch.cat([audio, scaled], dim=1)).chunk(2, dim=1)
                latent = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
                kl = 0.5 * (mean ** 2 + log_var.exp() - 1 - log_var).sum(1).mean()
            inputs.append(latent)
        out = self.decoder(torch.cat(inputs, dim=1))  # [B, 204, T]
        return out.transpose(1, 2).reshape(audio.shape[0], frames, 68, 3) * self.displacement_std, kl


class Audio2MotionEnsemble(nn.Module):
    """Several ``Audio2Motion`` networks of one configuration; predicts the mean of their displacements.

    Detected landmarks are noisy targets: networks trained from different seeds fit different parts of that
    noise, and their mean keeps what they share.
    """

    def __init__(self, members: Sequence[Audio2Motion]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # configuration attributes (context_frames, feature_std, ...) are the members'
            return getattr(self._modules["members"][0], name)

    def forward(self, features: Tensor, speaker_mean: Tensor, neutral: Tensor,
                target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        outputs = [member(features, speaker_mean, neutral, target) for member in self.members]
        return torch.stack([o[0] for o in outputs]).mean(0), torch.stack([o[1] for o in outputs]).mean(0)


def window_mean(codes: Tensor, half: int) -> Tensor:
    """[B, C, T] -> the mean over frames ``t - half .. t + half`` that exist (truncated at the ends)."""
    frames = codes.shape[-1]
    total = nn.functional.pad(codes.cumsum(dim=-1), (1, 0))
    step = torch.arange(frames, device=codes.device)
    high, low = (step + half + 1).clamp(max=frames), (step - half).clamp(min=0)
    return (total[..., high] - total[..., low]) / (high - low).to(codes.dtype)


def predict_landmarks(model: Audio2Motion | Audio2MotionEnsemble, features: np.ndarray | Tensor, speaker_mean: Tensor,
                      neutral: np.ndarray | Tensor, adaptation: MotionAdaptation | None = None) -> np.ndarray:
    """[N, 68, 3] canonical landmarks driven by one recording's [N, 16, D] audio features.

    ``speaker_mean`` is ``speaker_mean()`` of the speaker's features (its whole
    recording when nothing else of the speaker is known); ``adaptation``, the
    face's ``MotionAdaptation`` when it has one.
    """
    neutral = torch.as_tensor(np.asarray(neutral, np.float32))
    features = torch.as_tensor(np.asarray(features, np.float32))
    displacement = recording_displacements(model, features, speaker_mean, neutral, [(0, len(features))])
    if adaptation is not None:
        displacement = adaptation.apply(displacement)
    return (displacement + neutral).numpy()


# ---------------------------------------------------------------------------------------------------------------
# Adaptation to one face


ADAPTATION_SHRINK = 0.1
"""Variance added to every coordinate's fit, as a fraction of the mouth coordinates' mean variance: a coordinate
the generic model hardly moves keeps gain 1 instead of a gain fitted to noise."""


@dataclass(frozen=True)
class MotionAdaptation:
    """One face's linear post-net: each of the 68 x 3 displacement coordinates is mapped by ``gain * d + offset``.

    GeneFace follows its generic audio-to-motion model with a domain-adaptive post-net trained on the target
    person's own landmarks, because a model trained on other speakers predicts their average mouth: this face
    may open wider than they did, and the detector may see its lips thinner or its corners closer. Here the
    post-net is affine per coordinate, fitted by least squares (``fit_adaptation``) on frames of the face that
    are never evaluated: the training video a method trains its model of the face on.
    """

    gain: Tensor  # [68, 3]
    offset: Tensor  # [68, 3] canonical units
    frames: int  # frames the fit saw

    def apply(self, displacement: Tensor) -> Tensor:
        """[..., 68, 3] displacements from the neutral shape, adapted to the face."""
        return displacement * self.gain.to(displacement) + self.offset.to(displacement)


def fit_adaptation(predicted: Tensor, reference: Tensor, shrink: float = ADAPTATION_SHRINK) -> MotionAdaptation:
    """The affine map per coordinate from the model's ``predicted`` displacements [F, 68, 3] to the face's own
    ``reference`` ones [F, 68, 3] (least squares with intercept; ``shrink`` pulls gains of barely moving
    coordinates to 1)."""
    if predicted.shape != reference.shape or predicted.dim() != 3 or len(predicted) < 2:
        raise ValueError(f"fit_adaptation needs matching [F >= 2, 68, 3] displacements, got {tuple(predicted.shape)} "
                         f"and {tuple(reference.shape)}")
    predicted, reference = predicted.double(), reference.double()
    centred_p, centred_r = predicted - predicted.mean(0), reference - reference.mean(0)
    variance, covariance = (centred_p ** 2).mean(0), (centred_p * centred_r).mean(0)
    prior = shrink * variance[MOUTH].mean() + 1e-12  # a coordinate that never moves keeps gain 1
    gain = (covariance + prior) / (variance + prior)
    offset = reference.mean(0) - gain * predicted.mean(0)
    return MotionAdaptation(gain.float(), offset.float(), len(predicted))


def recording_displacements(model: Audio2Motion | Audio2MotionEnsemble, features: Tensor, speaker_mean: Tensor,
                            neutral: Tensor, recordings: Sequence[tuple[int, int]]) -> Tensor:
    """[sum of lengths, 68, 3] predicted displacements of the recordings ``start..stop`` of ``features`` [N, 16, D],
    each predicted on its own (the utterance context stops at a recording's ends)."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for start, stop in recordings:
            predicted, _ = model(torch.as_tensor(features[start:stop], dtype=torch.float32, device=device)[None],
                                 speaker_mean.to(device)[None], neutral.to(device)[None])
            out.append(predicted[0].cpu())
    return torch.cat(out)


def adapt_to_face(model: Audio2Motion | Audio2MotionEnsemble, features: np.ndarray | Tensor, speaker_mean: Tensor,
                  neutral: np.ndarray | Tensor, canonical: np.ndarray | Tensor, recordings: Sequence[tuple[int, int]],
                  frames: np.ndarray) -> MotionAdaptation:
    """``MotionAdaptation`` of one face from its own voice and landmarks: ``features`` [N, 16, D] and
    ``canonical`` [N, 68, 3] of its N frames, fitted on ``frames`` (indices into N, e.g. the training frames).

    Each run of consecutive ``frames`` within one of the ``recordings`` (``(first, last + 1)`` ranges covering
    them) is predicted on its own, as a recording: the prediction of a fitting frame never reads the audio of
    a frame outside ``frames`` (e.g. the held-out tail of a video) through the temporal context.
    """
    neutral = torch.as_tensor(np.asarray(neutral, np.float32))
    frames = np.unique(np.asarray(frames))
    recording = np.full(len(canonical), -1)
    for number, (start, stop) in enumerate(recordings):
        recording[start:stop] = number
    if (recording[frames] < 0).any():
        raise ValueError("adapt_to_face: some fitting frames lie in none of the recordings")
    breaks = np.flatnonzero((np.diff(frames) != 1) | (np.diff(recording[frames]) != 0)) + 1
    runs = [(int(run[0]), int(run[-1]) + 1) for run in np.split(frames, breaks)]
    predicted = recording_displacements(model, torch.from_numpy(np.array(features, np.float32)), speaker_mean,
                                        neutral, runs)
    reference = torch.as_tensor(np.asarray(canonical, np.float32)[frames]) - neutral
    return fit_adaptation(predicted, reference)


def adaptation_segments(segments: pd.DataFrame) -> pd.DataFrame:
    """The segments the scores' per-face adaptations are fitted on: each identity's long recordings
    (``kind == "video"``, which no scored clip overlaps) up to their test frames, without frames that have no face."""
    return segments[(segments.kind == "video") & segments.split.isin(USED)]


def video_adaptations(model: Audio2Motion | Audio2MotionEnsemble, data: MotionData) -> dict[int, MotionAdaptation]:
    """Per identity index, the ``MotionAdaptation`` fitted on its ``adaptation_segments``, each predicted on its
    own: the adaptation a method gets from the video it trains on."""
    adaptations = {}
    for index, rows in adaptation_segments(data.segments).groupby("identity_index"):
        speaker = int(index)
        predicted = recording_displacements(model, data.features, data.speaker_mean[speaker], data.neutral[speaker],
                                            list(zip(rows.start, rows.stop)))
        reference = torch.cat([data.displacement[a:b] for a, b in zip(rows.start, rows.stop)])
        adaptations[speaker] = fit_adaptation(predicted, reference)
    return adaptations


def loader_frames(segments: pd.DataFrame, cfg: Audio2MotionConfig) -> dict[str, np.ndarray]:
    """Global frame indices each part of training and scoring can read, from the selections they use: ``train``
    (sequences with their utterance context, the input and output scales), ``validation`` (the scored clips),
    ``adaptation`` (the scores' per-face adaptations) and ``speaker_mean``."""
    starts, lengths = _training_sequences(segments, cfg.sequence_frames)
    scored = segments[segments.split.isin(HELDOUT) & (segments.kind == "clip")]
    return {
        "train": np.unique(np.concatenate([np.arange(a, a + n) for a, n in zip(starts, lengths)])),
        "validation": split_frames(scored, HELDOUT),
        "adaptation": split_frames(adaptation_segments(segments), list(segments.split.unique())),
        "speaker_mean": split_frames(segments, USED),
    }


# ---------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainedMotion:
    model: Audio2Motion | Audio2MotionEnsemble
    history: list[dict[str, float]]
    validation: list[dict[str, float]]  # one row per validation pass
    seconds: float  # wall clock
    cpu_seconds: float  # process CPU time (all threads); wall clock on a busy machine says little


def point_weights(mouth_weight: float) -> Tensor:
    weights = torch.ones(68)
    weights[MOUTH] = mouth_weight
    return weights / weights.mean()


def motion_loss(predicted: Tensor, target: Tensor, weights: Tensor, scale: Tensor,
                velocity_weight: float) -> tuple[Tensor, Tensor]:
    """Point-weighted MSE of displacements and of their frame-to-frame velocity (in units of ``scale``)."""
    error = (((predicted - target) / scale) ** 2).sum(-1)  # [B, T, 68]
    position = (error * weights).mean()
    velocity = ((((predicted.diff(dim=1) - target.diff(dim=1)) / scale) ** 2).sum(-1) * weights).mean()
    return position, velocity_weight * velocity


EMOTION_LABELS = ("neutral", "angry", "happy", "sad", "contempt", "disgusted", "fear", "surprised")
"""MEAD's eight emotions; the synthetic corpus uses the first four."""


class MelWarp:
    """Vocal-tract-length perturbation (Jaitly & Hinton 2013) of ``mel`` features ([..., D], module docstring of
    ``preprocess.audio_features``): the log-mel spectrum is resampled at ``f / factor`` and the MFCCs follow.

    The warp is linear in the features, so a speaker's mean warps the same way as the frames: a warped
    recording looks like the same speech from a speaker with a shorter (factor > 1) or longer vocal tract.
    """

    def __init__(self, feature_dim: int, audio: AudioConfig | None = None) -> None:
        audio = audio or AudioConfig()
        expected = audio.n_mels + audio.n_mfcc + 2
        if feature_dim != expected:
            raise PretrainDataError(f"pretrain_audio2motion.vtlp warps mel features of {expected} values per step "
                                    f"(audio stage defaults), these have {feature_dim}; set vtlp: 0")
        self.n_mels, self.n_mfcc = audio.n_mels, audio.n_mfcc
        import librosa
        import scipy.fft

        self.centres = librosa.mel_frequencies(audio.n_mels + 2, fmin=audio.fmin, fmax=audio.fmax)[1:-1]
        # MFCC columns are DCT-II (orthonormal) of the dB log-mel over 100, and the stored log-mel is dB / 20.
        dct = scipy.fft.dct(np.eye(audio.n_mels), type=2, norm="ortho", axis=0)[: audio.n_mfcc]
        self.mfcc_per_mel = torch.from_numpy((dct * 20.0 / 100.0).T.astype(np.float32))  # [n_mels, n_mfcc]

    def __call__(self, features: Tensor, factors: np.ndarray) -> Tensor:
        """``features`` [B, ..., D] warped by ``factors`` [B] (one per batch item)."""
        source = np.stack([np.interp(self.centres / f, self.centres, np.arange(self.n_mels)) for f in factors])
        low = np.floor(source).astype(np.int64).clip(0, self.n_mels - 2)
        fraction = torch.from_numpy((source - low).astype(np.float32)).to(features.device)
        low = torch.from_numpy(low).to(features.device)
        shape = (len(factors),) + (1,) * (features.dim() - 2) + (self.n_mels,)
        mel = features[..., : self.n_mels]
        index = low.view(shape).expand(mel.shape)
        warped = (mel.gather(-1, index) * (1 - fraction.view(shape))
                  + mel.gather(-1, index + 1) * fraction.view(shape))
        mfcc = features[..., self.n_mels: self.n_mels + self.n_mfcc] + (warped - mel) @ self.mfcc_per_mel.to(
            features.device)
        return torch.cat([warped, mfcc, features[..., self.n_mels + self.n_mfcc:]], dim=-1)


def _frame_emotions(segments: pd.DataFrame, frames: int) -> Tensor:
    """[F] index into EMOTION_LABELS of each frame's recording (-1 where the label is unknown)."""
    labels = torch.full((frames,), -1, dtype=torch.long)
    for row in segments.itertuples():
        if row.emotion in EMOTION_LABELS:
            labels[row.start:row.stop] = EMOTION_LABELS.index(row.emotion)
    return labels


def _training_sequences(segments: pd.DataFrame, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of the training recordings long enough for a sequence."""
    rows = segments[segments.split == TRAIN]
    lengths = (rows.stop - rows.start).to_numpy()
    short = lengths < frames
    if short.all():
        raise PretrainDataError(f"every training recording is shorter than pretrain_audio2motion.sequence_frames "
                                f"= {frames}; lower it")
    if short.any():
        log.warning("%d training recordings shorter than %d frames are left out", short.sum(), frames)
    return rows.start.to_numpy()[~short], lengths[~short]


def _sequence_context(model: Audio2Motion, features: Tensor, means: Tensor, first: np.ndarray, stop: np.ndarray,
                      start: np.ndarray, frames: int, warp: MelWarp | None, factors: np.ndarray | None) -> Tensor:
    """[B, context_dim, frames] utterance context of each training sequence, from its recording's frames
    around it (``start``..``stop``: the recording), as prediction computes it on the whole recording."""
    half = model.context_frames // 2
    contexts = []
    for item, (begin, end, low) in enumerate(zip(first, stop, start)):
        lo, hi = max(int(low), int(begin) - half), min(int(end), int(begin) + frames + half)
        around, mean = features[lo:hi][None], means[item: item + 1]
        if warp is not None:
            around, mean = warp(around, factors[item: item + 1]), warp(mean, factors[item: item + 1])
        contexts.append(model.utterance_context(around, mean)[..., begin - lo: begin - lo + frames])
    return torch.cat(contexts)


def train_audio2motion(cfg: Audio2MotionConfig, data: MotionData,
                       log_metric: MetricLogger | None = None) -> TrainedMotion:
    """Train ``cfg.ensemble`` networks (seeds ``seed``, ``seed + 1``, ...) on the training recordings' sequences,
    each validated on the held-out recordings; the model is their average (one network when ensemble is 1)."""
    if cfg.emotion_weight > 0 and cfg.context_frames <= 1:
        raise ValueError("pretrain_audio2motion.emotion_weight needs the utterance context: set context_frames > 1")
    if cfg.ensemble < 1:
        raise ValueError(f"pretrain_audio2motion.ensemble must be >= 1, not {cfg.ensemble}")
    members, history, validation = [], [], []
    started, cpu_started = time.perf_counter(), time.process_time()
    for member in range(cfg.ensemble):
        model, member_history, member_validation = _train_member(cfg, data, member, log_metric)
        members.append(model.cpu().eval())
        # Steps count on across the networks, so the curves of an ensemble run one after the other.
        offset = member * cfg.steps
        history += [{**row, "step": offset + row["step"], "member": member} for row in member_history]
        validation += [{**row, "step": offset + row["step"], "member": member} for row in member_validation]
    model = members[0] if len(members) == 1 else Audio2MotionEnsemble(members)
    return TrainedMotion(model.eval(), history, validation, time.perf_counter() - started,
                         time.process_time() - cpu_started)


def _new_model(cfg: Audio2MotionConfig, data: MotionData, train_frames: Tensor) -> Audio2Motion:
    """A network for ``cfg`` with its input and output scales set from the training frames."""
    feature_dim = data.features.shape[-1]
    column = pitch_column(cfg.feature_kind, feature_dim)
    model = Audio2Motion(feature_dim, cfg.variant, cfg.audio_dim, cfg.identity_dim, cfg.hidden, cfg.latent_dim,
                         cfg.dropout, cfg.context_frames, cfg.context_dim,
                         len(EMOTION_LABELS) if cfg.emotion_weight > 0 else 0, column,
                         prosody_columns(cfg.feature_kind, feature_dim))
    centred = data.features[train_frames] - data.speaker_mean[data.identity_index[train_frames]][:, None]
    std = centred.std(dim=(0, 1))
    if column >= 0:
        voiced = data.features[train_frames][..., column] != 0
        std[column] = centred[..., column][voiced].std()
    model.feature_std.copy_(std.clamp_min(1e-3))
    model.displacement_std.copy_(data.displacement[train_frames].std().clamp_min(1e-6))
    return model


def _train_member(cfg: Audio2MotionConfig, data: MotionData, member: int,
                  log_metric: MetricLogger | None) -> tuple[Audio2Motion, list[dict], list[dict]]:
    """One network of the ensemble, seeded ``cfg.seed + member``: the model, its per-step losses and its
    validation rows."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed + member)
    rng = np.random.default_rng(cfg.seed + member)
    starts, lengths = _training_sequences(data.segments, cfg.sequence_frames)
    train_frames = torch.from_numpy(np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)]))
    model = _new_model(cfg, data, train_frames).to(device)
    frame_emotion = _frame_emotions(data.segments, len(data.features)).to(device)
    warp = MelWarp(data.features.shape[-1]) if cfg.vtlp > 0 else None
    features, displacement = data.features.to(device), data.displacement.to(device)
    means, neutral, identity = data.speaker_mean.to(device), data.neutral.to(device), data.identity_index.to(device)
    weights = point_weights(cfg.mouth_weight).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    schedule = cosine_schedule(optimiser, cfg.steps)
    offsets = torch.arange(cfg.sequence_frames, device=device)
    probability = lengths / lengths.sum()
    history, validation = [], []
    logged_step = member * cfg.steps  # MLflow steps keep counting across the ensemble's networks
    label = f"audio2motion {member + 1}/{cfg.ensemble}" if cfg.ensemble > 1 else "audio2motion"
    progress = tqdm(range(1, cfg.steps + 1), desc=label, unit="step")
    for step in progress:
        model.train()
        pick = rng.choice(len(starts), size=cfg.batch_size, p=probability)
        first = starts[pick] + rng.integers(0, lengths[pick] - cfg.sequence_frames + 1)
        index = torch.from_numpy(first).to(device)[:, None] + offsets  # [B, T]
        speaker = identity[index[:, 0]]
        target = displacement[index]
        batch_features, batch_means = features[index], means[speaker]
        factors = rng.uniform(1 - cfg.vtlp, 1 + cfg.vtlp, size=cfg.batch_size) if warp is not None else None
        if warp is not None:
            batch_features, batch_means = warp(batch_features, factors), warp(batch_means, factors)
        context = None
        if model.context_frames > 1:
            context = _sequence_context(model, features, means[speaker], first, starts[pick] + lengths[pick],
                                        starts[pick], cfg.sequence_frames, warp, factors)
        predicted, kl = model(batch_features, batch_means, neutral[speaker], target, context)
        position, velocity = motion_loss(predicted, target, weights, model.displacement_std, cfg.velocity_weight)
        loss = position + velocity + cfg.kl_weight * kl
        emotion = torch.zeros(())
        if cfg.emotion_weight > 0:
            emotion = nn.functional.cross_entropy(model.emotion_logits(context), frame_emotion[index],
                                                  ignore_index=-1)
            loss = loss + cfg.emotion_weight * emotion
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        row = {"step": step, "loss": loss.item(), "position": position.item(), "velocity": velocity.item(),
               "kl": kl.item(), "emotion": emotion.item(), "lr": schedule.get_last_lr()[0]}
        history.append(row)
        if log_metric is not None and step % LOG_EVERY == 0:
            log_metric("a2m_train_loss", float(np.mean([r["loss"] for r in history[-LOG_EVERY:]])),
                       logged_step + step)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            scores = {"step": step, **summary_scores(evaluate_recordings(model, data))}
            validation.append(scores)
            progress.set_postfix(loss=f"{row['loss']:.3f}", mouth_ratio=f"{scores['mouth_error_ratio']:.3f}")
            if log_metric is not None:
                for name, value in scores.items():
                    if name != "step":
                        log_metric(f"a2m_{name}", value, logged_step + step)
    return model, history, validation


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


def mouth_distance(predicted: Tensor, reference: Tensor) -> float:
    """Mean 3D distance of the mouth points 48-67 ([T, 68, 3] each; NaN where ``reference`` has no frames)."""
    return float((predicted[:, MOUTH] - reference[:, MOUTH]).norm(dim=-1).mean())


def evaluate_recordings(model: Audio2Motion | Audio2MotionEnsemble, data: MotionData, splits: Sequence[str] = HELDOUT,
                        adaptations: Mapping[int, MotionAdaptation] | None = None) -> pd.DataFrame:
    """Per MEAD-like clip of ``splits``: mean mouth-point distance (3D, canonical frame) of the prediction and of the
    neutral-mouth baseline (zero displacement) to the reference, in canonical units and in pixels.

    The reference is the clip's own landmarks as the model's targets are made (``mouth_error``,
    ``baseline_error``); ``rigid_*`` use the canonical frame of the rigid fit alone; where the source has
    ground truth, ``truth_*`` measure against the true landmarks and ``detector_truth_error`` how far the
    reference itself is from them. Also the frame-to-frame jitter (mean second difference) of the prediction
    and of the reference. With ``adaptations`` (per identity index, ``video_adaptations``), ``adapted_*`` score
    the prediction after its identity's adaptation.
    """
    model.eval()
    adaptations = adaptations or {}
    device = next(model.parameters()).device
    rows = data.segments[data.segments.split.isin(splits) & (data.segments.kind == "clip")]
    zero = torch.zeros(1, 68, 3)
    results = []
    with torch.no_grad():
        for row in rows.itertuples():
            speaker = row.identity_index
            predicted, _ = model(data.features[row.start:row.stop].to(device)[None],
                                 data.speaker_mean[speaker].to(device)[None], data.neutral[speaker].to(device)[None])
            predicted = predicted[0].cpu()
            reference = data.displacement[row.start:row.stop]
            error, baseline = mouth_distance(predicted, reference), mouth_distance(zero, reference)
            pixels = float(data.pixels_per_unit[speaker])
            result = {
                "identity": row.identity, "clip": row.clip, "kind": row.kind, "emotion": row.emotion,
                "split": row.split, "frames": row.stop - row.start,
                "mouth_error": error, "baseline_error": baseline,
                "mouth_error_px": error * pixels, "baseline_error_px": baseline * pixels,
                "jitter": float(predicted[:, MOUTH].diff(n=2, dim=0).norm(dim=-1).mean()),
                "reference_jitter": float(reference[:, MOUTH].diff(n=2, dim=0).norm(dim=-1).mean()),
            }
            adaptation = adaptations.get(int(speaker))
            adapted = adaptation.apply(predicted) if adaptation is not None else None
            if adapted is not None:
                result["adapted_mouth_error"] = mouth_distance(adapted, reference)
            if data.rigid_displacement is not None:
                rigid = data.rigid_displacement[row.start:row.stop]
                result.update(rigid_mouth_error=mouth_distance(predicted, rigid),
                              rigid_baseline_error=mouth_distance(zero, rigid))
            truth = data.truth[row.start:row.stop] if data.truth is not None else None
            if truth is not None and torch.isfinite(truth).all():
                result.update(truth_mouth_error=mouth_distance(predicted, truth),
                              truth_baseline_error=mouth_distance(zero, truth),
                              detector_truth_error=mouth_distance(reference, truth),
                              truth_jitter=float(truth[:, MOUTH].diff(n=2, dim=0).norm(dim=-1).mean()))
                if adapted is not None:
                    result["adapted_truth_mouth_error"] = mouth_distance(adapted, truth)
            results.append(result)
    return pd.DataFrame(results)


def ratio(rows: pd.DataFrame, error: str = "mouth_error", baseline: str = "baseline_error") -> float:
    """Frame-weighted mean ``error`` over frame-weighted mean ``baseline`` of a table's recordings."""
    return float((rows[error] * rows.frames).sum() / (rows[baseline] * rows.frames).sum())


def summary_scores(table: pd.DataFrame) -> dict[str, float]:
    """Frame-weighted mouth errors over all recordings of the table and per split, the worst emotion's ratio,
    and (where the table has them) the ratios against the rigid-only reference and the ground truth."""
    scores = {}
    for name, rows in [("all", table), *table.groupby("split")]:
        weights = rows.frames / rows.frames.sum()
        error, baseline = float((rows.mouth_error * weights).sum()), float((rows.baseline_error * weights).sum())
        suffix = "" if name == "all" else f"_{name}"
        scores[f"mouth_error{suffix}"] = error
        scores[f"baseline_error{suffix}"] = baseline
        scores[f"mouth_error_ratio{suffix}"] = error / baseline
    scores["mouth_error_ratio_worst_emotion"] = max(ratio(rows) for _, rows in table.groupby("emotion"))
    scores["mouth_error_ratio_worst_split_emotion"] = max(
        ratio(rows) for _, rows in table.groupby(["split", "emotion"]))
    if "adapted_mouth_error" in table and table.adapted_mouth_error.notna().all():
        scores["adapted_mouth_error_ratio"] = ratio(table, "adapted_mouth_error")
        scores["adapted_mouth_error_ratio_worst_emotion"] = max(
            ratio(rows, "adapted_mouth_error") for _, rows in table.groupby("emotion"))
        scores["adapted_mouth_error_ratio_worst_split_emotion"] = max(
            ratio(rows, "adapted_mouth_error") for _, rows in table.groupby(["split", "emotion"]))
    if "rigid_mouth_error" in table:
        scores["rigid_mouth_error_ratio"] = ratio(table, "rigid_mouth_error", "rigid_baseline_error")
    if "truth_mouth_error" in table and table.truth_mouth_error.notna().any():
        known = table[table.truth_mouth_error.notna()]
        scores["truth_mouth_error_ratio"] = ratio(known, "truth_mouth_error", "truth_baseline_error")
        scores["truth_mouth_error_ratio_worst_emotion"] = max(
            ratio(rows, "truth_mouth_error", "truth_baseline_error") for _, rows in known.groupby("emotion"))
        scores["detector_truth_error_ratio"] = ratio(known, "detector_truth_error", "truth_baseline_error")
        if "adapted_truth_mouth_error" in known and known.adapted_truth_mouth_error.notna().all():
            scores["adapted_truth_mouth_error_ratio"] = ratio(known, "adapted_truth_mouth_error",
                                                              "truth_baseline_error")
    return scores


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def save_model(model: Audio2Motion | Audio2MotionEnsemble, cfg: Audio2MotionConfig, path: Path) -> None:
    members = len(model.members) if isinstance(model, Audio2MotionEnsemble) else 1
    config = {"ensemble": members, "feature_dim": int(model.feature_std.shape[0]), "variant": cfg.variant, "audio_dim": cfg.audio_dim,
              "identity_dim": cfg.identity_dim, "hidden": cfg.hidden, "latent_dim": cfg.latent_dim,
              "feature_kind": cfg.feature_kind, "context_frames": model.context_frames,
              "context_dim": cfg.context_dim, "emotions": model.emotions, "pitch_column": model.pitch_column,
              "context_columns": model.context_columns.tolist() if model.context_frames > 1 else None}
    torch.save({"state_dict": model.state_dict(), "config": config}, path)


def load_model(path: Path, device: str = "cpu") -> tuple[Audio2Motion | Audio2MotionEnsemble, dict]:
    """The model from ``model.pt`` (loaded with ``weights_only=True``) in eval mode, and its config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio2motion checkpoint not found; run `dvc repro pretrain_audio2motion`")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    config = checkpoint["config"]
    def network() -> Audio2Motion:
        return Audio2Motion(config["feature_dim"], config["variant"], config["audio_dim"], config["identity_dim"],
                            config["hidden"], config["latent_dim"], context_frames=config.get("context_frames", 0),
                            context_dim=config.get("context_dim", 16), emotions=config.get("emotions", 0),
                            pitch_column=config.get("pitch_column", -1),
                            context_columns=config.get("context_columns"))

    members = config.get("ensemble", 1)
    model = network() if members == 1 else Audio2MotionEnsemble([network() for _ in range(members)])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), config


# ---------------------------------------------------------------------------------------------------------------
# Mouth motion as a per-frame audio feature (GSTalker's and S3D-NeRF's ``a2m`` demo aid)


def centred_windows(per_frame: np.ndarray, window: int, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """[n, D] per-frame vectors -> [n, window, D]: frames ``i - window // 2 ..`` clipped to each frame's
    recording ``[first[i], last[i]]`` (a window never reaches into another recording)."""
    offsets = np.arange(window) - window // 2
    index = np.arange(len(per_frame))[:, None] + offsets[None]
    index = np.clip(index, first[:, None], last[:, None])
    return per_frame[index]


@dataclass
class MotionFeatures:
    """The audio-to-motion network and a normalisation of its mouth displacements: one identity's (GSTalker) or
    the training identities' pooled (S3D-NeRF, whose new identity has no frames to fit one on)."""

    network: Any
    """``Audio2Motion`` (or its ensemble) in eval mode."""
    network_config: dict
    """The network's saved config (``feature_kind``, ``pitch_column``)."""
    neutral: np.ndarray
    """[68, 3] the neutral canonical shape the network reads as its identity input (the identity's, or the training
    identities' mean)."""
    own_mean: Tensor
    """[D] the identity's speaker mean of the network's audio features (for its own voice)."""
    centre: np.ndarray
    """[60] mean mouth displacement over the training frames."""
    scale: float
    """Standard deviation of the centred mouth displacements over the training frames (one number for all 60
    values: keeps the points' relative motion)."""
    window: int
    """Frames per feature window (centred on the frame)."""

    @property
    def kind(self) -> str:
        """The audio feature kind the network reads."""
        return str(self.network_config.get("feature_kind", "mel"))

    @property
    def dim(self) -> int:
        return 3 * len(MOUTH)

    def displacements(self, features: np.ndarray, own_voice: bool) -> np.ndarray:
        """[n, 60] raw mouth displacements predicted from one recording's [n, 16, D] audio windows."""
        features = np.array(features, np.float32)  # a writable copy (features are often memory-mapped)
        mean = (self.own_mean if own_voice
                else speaker_mean(features, self.network_config.get("pitch_column", -1)))
        landmarks = predict_landmarks(self.network, features, mean, self.neutral)
        return (landmarks - self.neutral[None])[:, MOUTH].reshape(len(features), -1).astype(np.float32)

    def normalise(self, displacements: np.ndarray) -> np.ndarray:
        return ((displacements - self.centre[None]) / self.scale).astype(np.float32)

    def windows(self, displacements: np.ndarray) -> np.ndarray:
        """[n, window, 60] normalised windows of one recording's [n, 60] raw displacements (clipped to it)."""
        per_frame = self.normalise(displacements)
        n = len(per_frame)
        return centred_windows(per_frame, self.window, np.zeros(n, np.int64), np.full(n, n - 1, np.int64))

    def recording(self, features: np.ndarray, own_voice: bool) -> np.ndarray:
        """[n, window, 60] features of one whole recording's frames."""
        return self.windows(self.displacements(features, own_voice))

    def state(self) -> dict[str, Any]:
        """Plain tensors and numbers for a weights-only checkpoint (the network itself is not copied)."""
        return {"neutral": torch.from_numpy(self.neutral.astype(np.float32)), "own_mean": self.own_mean.cpu(),
                "centre": torch.from_numpy(self.centre.astype(np.float32)), "scale": float(self.scale),
                "window": int(self.window)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], network: Any, network_config: dict) -> "MotionFeatures":
        """The features a checkpoint's ``state()`` describes, on ``network`` (read again from its folder)."""
        return cls(network, network_config, np.asarray(state["neutral"], np.float32),
                   torch.as_tensor(state["own_mean"]), np.asarray(state["centre"], np.float32),
                   float(state["scale"]), int(state["window"]))


def load_pretrained(pretrained: Mapping[str, Path], device: torch.device | str, setting: str, fallback: str
                    ) -> tuple[Audio2Motion | Audio2MotionEnsemble, dict]:
    """The network in ``pretrained["audio2motion"]`` for a method whose ``setting`` reads it; without that folder,
    an error that says how to make it or, ``fallback``, how to do without."""
    if "audio2motion" not in pretrained:
        raise FileNotFoundError(f"{setting} reads the audio-to-motion model, but no audio2motion folder was given; "
                                f"run `dvc repro pretrain_audio2motion` (or set {fallback})")
    return load_model(Path(pretrained["audio2motion"]) / "model.pt", device=str(device))
