"""Audio to 3D landmark motion (GeneFace's audio2motion, trained on the corpus).

Per video frame, a window of 16 audio feature frames (``features/aud_<kind>.npy``,
[N, 16, D], D read from the array) goes through AD-NeRF's AudioNet; a
temporal convolution stack over the frame codes, conditioned on the
identity's neutral 68x3 shape, outputs each frame's 68x3 displacement from
that neutral shape in the canonical face frame (``canonical.py``). The
convolutions over time (13 frames of context) and a velocity loss keep the
output smooth; the loss weighs the mouth points more.

Two variants share the network:

* ``deterministic``: the baseline described above;
* ``vae``: GeneFace's variational form: a posterior encoder sees the true
  motion with the audio and gives a per-frame latent; the decoder gets the
  latent with the audio; a KL term pulls the posterior to N(0, I). GeneFace
  adds a normalising-flow prior; here the prior is the plain Gaussian and
  prediction decodes its mean (z = 0), so the output is deterministic too.

Audio features are normalised per speaker (minus the mean over the speaker's
frames, divided by the training set's std): the held-out identity's voice
differs in pitch and timbre, while emotion shows as a change relative to the
speaker's own average, which the per-speaker mean keeps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

from talkhead_models.components.audio import AudioNet
from talkhead_models.data import DataConfig
from talkhead_models.pretrained.canonical import MOUTH
from talkhead_models.pretrained.datasets import HELDOUT, TRAIN, IdentityLandmarks, PretrainDataError, SplitConfig
from talkhead_models.pretrained.sync_expert import LOG_EVERY, MetricLogger, cosine_schedule, resolve_device

log = logging.getLogger(__name__)

VARIANTS = ("deterministic", "vae")
WINDOW = 16


@dataclass(frozen=True)
class Audio2MotionConfig:
    """The audio-to-landmark model and its training (params.yaml ``pretrain_audio2motion``)."""

    data: DataConfig = field(default_factory=DataConfig)
    """The shared data section (which identities to read)."""
    pretrain: SplitConfig = field(default_factory=SplitConfig)
    """The shared held-out split of the corpus-level models."""
    feature_kind: str = "mel"
    """Audio features read from features/aud_<kind>.npy ([N, 16, D])."""
    variant: str = "deterministic"
    """deterministic (the baseline) or vae (GeneFace's variational model with a Gaussian prior)."""
    audio_dim: int = 64
    """Per-frame audio code size (AudioNet output)."""
    identity_dim: int = 32
    """Code size of the neutral shape."""
    hidden: int = 256
    """Channels of the temporal convolutions."""
    latent_dim: int = 16
    """Per-frame latent size of the vae variant."""
    kl_weight: float = 0.01
    """Weight of the KL term (vae variant)."""
    sequence_frames: int = 32
    """Frames per training sequence."""
    batch_size: int = 16
    """Sequences per step."""
    steps: int = 8000
    """Training steps (Adam)."""
    learning_rate: float = 1e-3
    """Adam learning rate (cosine decay to 5% over the steps)."""
    mouth_weight: float = 4.0
    """Loss weight of the mouth points 48-67 (the other points weigh 1)."""
    velocity_weight: float = 1.0
    """Weight of the frame-to-frame velocity loss (temporal smoothness)."""
    eval_every: int = 500
    """Steps between validation passes."""
    seed: int = 0
    """Seed of the initialisation and the sampling."""
    device: str = "auto"
    """auto (CUDA when available), cuda or cpu."""
    threads: int = 0
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


def speaker_mean(features: np.ndarray | Tensor) -> Tensor:
    """[D] mean over a speaker's frames and window steps of [N, 16, D] features."""
    return torch.from_numpy(np.asarray(features, np.float32).mean(axis=(0, 1)))


def motion_data(identities: Sequence[IdentityLandmarks], segments: pd.DataFrame, feature_kind: str) -> MotionData:
    """Read each identity's audio features and pair them with its canonical landmark displacements."""
    features, means, index, displacement, neutral = [], [], [], [], []
    for number, data in enumerate(identities):
        path = data.processed.audio_features(feature_kind)
        if not path.is_file():
            raise PretrainDataError(f"{path}: audio features not found; run the audio stage (`dvc repro audio`) "
                                    f"or set pretrain_audio2motion.feature_kind to a kind it writes")
        array = np.load(path, mmap_mode="r")
        if array.ndim != 3 or array.shape[0] != len(data.image) or array.shape[1] != WINDOW:
            raise PretrainDataError(f"{path}: expected [{len(data.image)}, {WINDOW}, D] features (one window per "
                                    f"frame), found {array.shape}; re-run the audio stage")
        features.append(torch.from_numpy(np.array(array, dtype=np.float32)))
        means.append(speaker_mean(array))
        index.append(torch.full((len(data.image),), number, dtype=torch.long))
        displacement.append(torch.from_numpy(data.canonical - data.neutral.shape))
        neutral.append(torch.from_numpy(data.neutral.shape))
    return MotionData(torch.cat(features), torch.stack(means), torch.cat(index), torch.cat(displacement),
                      torch.stack(neutral), np.array([d.neutral.pixels_per_unit for d in identities]),
                      segments.reset_index(drop=True))


# ---------------------------------------------------------------------------------------------------------------
# Network


def _temporal(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    """Three non-causal convolutions over frames (kernel 5: 13 frames of context), edges replicated."""
    def conv(a: int, b: int) -> nn.Conv1d:
        return nn.Conv1d(a, b, 5, padding=2, padding_mode="replicate")

    return nn.Sequential(conv(in_channels, hidden), nn.LeakyReLU(0.02), conv(hidden, hidden), nn.LeakyReLU(0.02),
                         conv(hidden, out_channels))


class Audio2Motion(nn.Module):
    """[B, T, 16, D] audio windows + [B, 68, 3] neutral shape -> [B, T, 68, 3] canonical displacements."""

    def __init__(self, feature_dim: int, variant: str = "deterministic", audio_dim: int = 64, identity_dim: int = 32,
                 hidden: int = 256, latent_dim: int = 16) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown audio2motion variant {variant!r}; use one of {VARIANTS}")
        self.variant, self.latent_dim = variant, latent_dim
        self.audio = AudioNet(feature_dim, audio_dim, WINDOW)
        self.identity = nn.Sequential(nn.Linear(68 * 3, identity_dim), nn.LeakyReLU(0.02))
        latent = latent_dim if variant == "vae" else 0
        self.decoder = _temporal(audio_dim + identity_dim + latent, hidden, 68 * 3)
        if variant == "vae":
            self.posterior = _temporal(audio_dim + 68 * 3, hidden, 2 * latent_dim)
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.register_buffer("displacement_std", torch.ones(()))

    def encode_audio(self, features: Tensor, speaker_mean: Tensor) -> Tensor:
        """[B, T, 16, D] features, [B, D] speaker means -> [B, audio_dim, T] codes."""
        batch, frames = features.shape[:2]
        normalised = (features - speaker_mean[:, None, None]) / self.feature_std
        return self.audio(normalised.flatten(0, 1)).view(batch, frames, -1).transpose(1, 2)

    def forward(self, features: Tensor, speaker_mean: Tensor, neutral: Tensor,
                target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Displacements [B, T, 68, 3] and the KL term (0 for the deterministic variant).

        The vae variant encodes ``target`` (training) or decodes the prior mean (``target=None``).
        """
        audio = self.encode_audio(features, speaker_mean)
        frames = audio.shape[-1]
        identity = self.identity(neutral.flatten(1))[:, :, None].expand(-1, -1, frames)
        inputs = [audio, identity]
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


def predict_landmarks(model: Audio2Motion, features: np.ndarray | Tensor, speaker_mean: Tensor,
                      neutral: np.ndarray | Tensor) -> np.ndarray:
    """[N, 68, 3] canonical landmarks driven by one recording's [N, 16, D] audio features.

    ``speaker_mean`` is ``speaker_mean()`` of the speaker's features (its whole
    recording when nothing else of the speaker is known).
    """
    device = next(model.parameters()).device
    neutral = torch.as_tensor(np.asarray(neutral, np.float32), device=device)
    with torch.no_grad():
        displacement, _ = model(torch.as_tensor(np.asarray(features, np.float32), device=device)[None],
                                speaker_mean.to(device)[None], neutral[None])
    return (displacement[0] + neutral).cpu().numpy()


# ---------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainedMotion:
    model: Audio2Motion
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


def train_audio2motion(cfg: Audio2MotionConfig, data: MotionData,
                       log_metric: MetricLogger | None = None) -> TrainedMotion:
    """Train on the training recordings' sequences; validate on the held-out recordings."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    starts, lengths = _training_sequences(data.segments, cfg.sequence_frames)
    train_frames = torch.from_numpy(np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)]))
    model = Audio2Motion(data.features.shape[-1], cfg.variant, cfg.audio_dim, cfg.identity_dim, cfg.hidden,
                         cfg.latent_dim)
    centred = data.features[train_frames] - data.speaker_mean[data.identity_index[train_frames]][:, None]
    model.feature_std.copy_(centred.std(dim=(0, 1)).clamp_min(1e-3))
    model.displacement_std.copy_(data.displacement[train_frames].std().clamp_min(1e-6))
    model.to(device)
    features, displacement = data.features.to(device), data.displacement.to(device)
    means, neutral, identity = data.speaker_mean.to(device), data.neutral.to(device), data.identity_index.to(device)
    weights = point_weights(cfg.mouth_weight).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    schedule = cosine_schedule(optimiser, cfg.steps)
    offsets = torch.arange(cfg.sequence_frames, device=device)
    probability = lengths / lengths.sum()
    history, validation = [], []
    started, cpu_started = time.perf_counter(), time.process_time()
    progress = tqdm(range(1, cfg.steps + 1), desc="audio2motion", unit="step")
    for step in progress:
        model.train()
        pick = rng.choice(len(starts), size=cfg.batch_size, p=probability)
        first = starts[pick] + rng.integers(0, lengths[pick] - cfg.sequence_frames + 1)
        index = torch.from_numpy(first).to(device)[:, None] + offsets  # [B, T]
        speaker = identity[index[:, 0]]
        target = displacement[index]
        predicted, kl = model(features[index], means[speaker], neutral[speaker], target)
        position, velocity = motion_loss(predicted, target, weights, model.displacement_std, cfg.velocity_weight)
        loss = position + velocity + cfg.kl_weight * kl
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        row = {"step": step, "loss": loss.item(), "position": position.item(), "velocity": velocity.item(),
               "kl": kl.item(), "lr": schedule.get_last_lr()[0]}
        history.append(row)
        if log_metric is not None and step % LOG_EVERY == 0:
            log_metric("a2m_train_loss", float(np.mean([r["loss"] for r in history[-LOG_EVERY:]])), step)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            table = evaluate_recordings(model, data)
            scores = {"step": step, **summary_scores(table)}
            validation.append(scores)
            progress.set_postfix(loss=f"{row['loss']:.3f}", mouth_ratio=f"{scores['mouth_error_ratio']:.3f}")
            if log_metric is not None:
                for name, value in scores.items():
                    if name != "step":
                        log_metric(f"a2m_{name}", value, step)
    return TrainedMotion(model.cpu().eval(), history, validation, time.perf_counter() - started,
                         time.process_time() - cpu_started)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_recordings(model: Audio2Motion, data: MotionData, splits: Sequence[str] = HELDOUT) -> pd.DataFrame:
    """Per MEAD-like clip of ``splits``: mean mouth-point distance (3D, canonical frame) of the prediction and of the
    neutral-mouth baseline to the truth, in canonical units and in pixels, and the frame-to-frame jitter."""
    model.eval()
    device = next(model.parameters()).device
    rows = data.segments[data.segments.split.isin(splits) & (data.segments.kind == "clip")]
    results = []
    with torch.no_grad():
        for row in rows.itertuples():
            speaker = row.identity_index
            predicted, _ = model(data.features[row.start:row.stop].to(device)[None],
                                 data.speaker_mean[speaker].to(device)[None], data.neutral[speaker].to(device)[None])
            predicted = predicted[0].cpu()
            truth = data.displacement[row.start:row.stop]
            error = (predicted[:, MOUTH] - truth[:, MOUTH]).norm(dim=-1).mean()
            baseline = truth[:, MOUTH].norm(dim=-1).mean()
            pixels = float(data.pixels_per_unit[speaker])
            results.append({
                "identity": row.identity, "clip": row.clip, "kind": row.kind, "emotion": row.emotion,
                "split": row.split, "frames": row.stop - row.start,
                "mouth_error": float(error), "baseline_error": float(baseline),
                "mouth_error_px": float(error) * pixels, "baseline_error_px": float(baseline) * pixels,
                "jitter": float(predicted[:, MOUTH].diff(n=2, dim=0).norm(dim=-1).mean()),
                "truth_jitter": float(truth[:, MOUTH].diff(n=2, dim=0).norm(dim=-1).mean()),
            })
    return pd.DataFrame(results)


def summary_scores(table: pd.DataFrame) -> dict[str, float]:
    """Frame-weighted mouth errors over all recordings of the table and per split."""
    scores = {}
    for name, rows in [("all", table), *table.groupby("split")]:
        weights = rows.frames / rows.frames.sum()
        error, baseline = float((rows.mouth_error * weights).sum()), float((rows.baseline_error * weights).sum())
        suffix = "" if name == "all" else f"_{name}"
        scores[f"mouth_error{suffix}"] = error
        scores[f"baseline_error{suffix}"] = baseline
        scores[f"mouth_error_ratio{suffix}"] = error / baseline
    return scores


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def save_model(model: Audio2Motion, cfg: Audio2MotionConfig, path: Path) -> None:
    config = {"feature_dim": int(model.feature_std.shape[0]), "variant": cfg.variant, "audio_dim": cfg.audio_dim,
              "identity_dim": cfg.identity_dim, "hidden": cfg.hidden, "latent_dim": cfg.latent_dim,
              "feature_kind": cfg.feature_kind}
    torch.save({"state_dict": model.state_dict(), "config": config}, path)


def load_model(path: Path, device: str = "cpu") -> tuple[Audio2Motion, dict]:
    """The model from ``model.pt`` (loaded with ``weights_only=True``) in eval mode, and its config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio2motion checkpoint not found; run `dvc repro pretrain_audio2motion`")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    config = checkpoint["config"]
    model = Audio2Motion(config["feature_dim"], config["variant"], config["audio_dim"], config["identity_dim"],
                         config["hidden"], config["latent_dim"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), config
