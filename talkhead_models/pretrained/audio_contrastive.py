"""JEAN's contrastive audio encoder (Sec. 3.1 and suppl. 8.2), trained on the corpus.

The encoder is AD-NeRF's AudioNet (``components.audio``): a frame's window of
16 audio feature steps ([16, D], ``features/aud_<kind>.npy``) -> a 64-d audio
embedding e_a. Its input is standardised per feature with the training
frames' statistics (buffers of ``ContrastiveAudioNet``, so the checkpoint is
self-contained and a NeRF that fine-tunes it feeds raw features).

The targets are the mouth embeddings e_m of the same frames from the frozen
landmark autoencoder (``landmark_ae``). Per anchor frame x, with
d(x, y) = cos(x, y) / tau (tau = 0.1), eq. 2 of the paper:

    L = -log( exp(d(e_a+, e_m)) / (exp(d(e_a+, e_m)) + exp(d(e_a-, e_m))) )

where e_a+ is the audio of x itself and e_a- the audio of a random frame of
the same identity but another recording (so the negative has the same voice
and only the words differ). Adam, learning rate 1e-3 decaying exponentially to
5e-6 over the steps.

The recordings are ``datasets.segment_table``'s segments: anchors, negatives
and the feature normaliser come from ``TRAIN`` frames, validation anchors and
their negatives from the held-out split they belong to; ``TEST`` and
``NO_FACE`` frames are never read (their rows are NaN in ``ContrastiveData``;
``loader_frames`` lists the frames each role reads).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from talkhead_models.components.audio import AudioNet
from talkhead_models.config import Device, NonNegativeInt, PositiveFloat, PositiveInt
from talkhead_models.data import DataConfig
from talkhead_models.data.identity_reader import IdentityError, IdentityReader
from talkhead_models.preprocess.audio_features import FeatureKind
from talkhead_models.pretrained.datasets import (
    HELDOUT, TRAIN, USED, IdentityLandmarks, PretrainDataError, SplitConfig, split_frames,
)
from talkhead_models.pretrained.landmark_ae import LandmarkAutoencoder, frozen
from talkhead_models.pretrained.sync_expert import LOG_EVERY, MetricLogger, resolve_device

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
ENCODE_BATCH = 1024  # frames per forward pass outside training


@dataclass(frozen=True)
class AudioContrastiveConfig:
    """The contrastive audio encoder and its training (params.yaml ``pretrain_audio_contrastive``)."""

    data: DataConfig = field(default_factory=DataConfig)
    """The shared data section (which identities to read)."""
    pretrain: SplitConfig = field(default_factory=SplitConfig)
    """The shared held-out split of the corpus-level models."""
    audio_feature: FeatureKind = "mel"
    """Audio features read from features/aud_<kind>.npy ([N, 16, D]): the best available offline; the paper uses
    DeepSpeech (``ds``, AD-NeRF's files put there by hand)."""
    temperature: PositiveFloat = 0.1
    """tau of d(x, y) = cos(x, y) / tau (paper)."""
    negatives: PositiveInt = 1
    """Negative audio frames per anchor (paper: 1; more make the InfoNCE a (1 + k)-way choice)."""
    batch_size: PositiveInt = 256
    """Anchor frames per step (paper: 256)."""
    epochs: PositiveFloat = 30.0
    """Passes over the training frames (each an anchor once) when ``steps`` is 0 (paper: 30 epochs)."""
    steps: NonNegativeInt = 0
    """Training steps; 0 = ``epochs`` passes. The paper gives epochs of MEAD (millions of frames); an epoch of a
    small corpus is a few dozen steps, so a profile sets steps directly."""
    learning_rate: PositiveFloat = 1e-3
    """Adam's starting learning rate (paper)."""
    final_learning_rate: PositiveFloat = 5e-6
    """The learning rate reached by exponential decay at the last step (paper)."""
    eval_every: PositiveInt = 500
    """Steps between validation passes (held-out InfoNCE loss and accuracy, retrieval accuracy)."""
    seed: NonNegativeInt = 0
    """Seed of the initialisation and the sampling."""
    device: Device = "auto"
    """auto (CUDA when available), cuda or cpu."""
    threads: NonNegativeInt = 0
    """torch CPU threads (0 = torch's default)."""


# ---------------------------------------------------------------------------------------------------------------
# Network and loss


class ContrastiveAudioNet(AudioNet):
    """AudioNet on standardised features: [B, window, D] raw features -> [B, output_dim]."""

    def __init__(self, feature_dim: int, output_dim: int = 64, window: int = 16) -> None:
        super().__init__(feature_dim, output_dim, window)
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))

    def forward(self, features: Tensor) -> Tensor:
        return super().forward((features - self.feature_mean) / self.feature_std)


def info_nce(mouth: Tensor, positive: Tensor, negatives: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Per-anchor InfoNCE (eq. 2) and whether the positive beats every negative.

    ``mouth`` [B, E] anchors' e_m, ``positive`` [B, E] their own audio embeddings, ``negatives`` [B, k, E] other
    recordings' audio embeddings.
    """
    anchor = F.normalize(mouth, dim=-1)
    keys = F.normalize(torch.cat([positive[:, None], negatives], dim=1), dim=-1)  # [B, 1 + k, E]
    logits = (keys * anchor[:, None]).sum(-1) / temperature
    loss = torch.logsumexp(logits, dim=1) - logits[:, 0]
    return loss, logits[:, 0] > logits[:, 1:].max(dim=1).values


def retrieval_accuracy(mouth: Tensor, audio: Tensor) -> float:
    """Share of the frames [n, E] whose own audio is the most similar, by cosine, to their e_m among the n."""
    similarity = F.normalize(mouth, dim=-1) @ F.normalize(audio, dim=-1).T
    return (similarity.argmax(dim=1) == torch.arange(len(mouth), device=mouth.device)).float().mean().item()


# ---------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class ContrastiveData:
    """Every identity's audio windows and frozen mouth embeddings, concatenated (global frame index)."""

    features: Tensor  # [F, window, D] raw features; NaN outside USED (test, no face): nothing may read them
    mouth: Tensor  # [F, E] e_m of the frozen landmark autoencoder; NaN outside USED
    segments: pd.DataFrame  # datasets.segment_table
    feature_kind: str


def contrastive_data(identities: Sequence[IdentityLandmarks], segments: pd.DataFrame,
                     landmark_ae: LandmarkAutoencoder, feature_kind: str) -> ContrastiveData:
    """Read the USED frames' audio feature windows and encode their canonical landmarks' mouths."""
    encoder = frozen(landmark_ae.cpu())
    features, mouths = [], []
    for data in identities:
        try:
            reader = IdentityReader(data.processed.root)
        except IdentityError as error:
            raise PretrainDataError(str(error)) from None
        try:
            array = reader.audio_features(feature_kind)
        except IdentityError as error:
            raise PretrainDataError(f"{error}; or set pretrain_audio_contrastive.audio_feature to a kind there "
                                    f"({reader.feature_kinds() or 'none'})") from None
        if array.ndim != 3 or len(array) != len(data.image):
            raise PretrainDataError(f"{data.processed.audio_features(feature_kind)}: expected [{len(data.image)}, "
                                    f"window, D] (one window per frame), found {array.shape}; re-run the audio stage")
        own = segments[segments.identity == data.identity]
        used = split_frames(own, USED) - int(own.start.min())
        window = np.full(array.shape, np.nan, np.float32)
        window[used] = array[used]
        mouth = torch.full((len(array), encoder.embedding_dim), float("nan"))
        with torch.no_grad():
            for chunk in np.array_split(used, max(1, math.ceil(len(used) / ENCODE_BATCH))):
                mouth[chunk] = encoder.encode(torch.from_numpy(data.canonical[chunk]).float())[1]
        features.append(torch.from_numpy(window))
        mouths.append(mouth)
    return ContrastiveData(torch.cat(features), torch.cat(mouths), segments.reset_index(drop=True), feature_kind)


@dataclass
class NegativeSampler:
    """Anchors and their negatives within a pool of frames (the segments of some splits): a negative is a frame of
    the pool from the anchor's identity but another recording (another clips.parquet row)."""

    pool: np.ndarray  # [n] global frame indices, grouped by identity, then by recording
    identity_span: np.ndarray  # [n, 2] the pool positions of the frame's identity
    recording_span: np.ndarray  # [n, 2] the pool positions of the frame's recording
    position: np.ndarray  # [frames] pool position of each global frame index; -1 outside the pool

    @classmethod
    def of(cls, segments: pd.DataFrame, splits: Sequence[str]) -> "NegativeSampler":
        rows = segments[segments.split.isin(splits)].sort_values(["identity", "clip", "start"], kind="stable")
        position = np.full(int(segments.stop.max()) if len(segments) else 0, -1, np.int64)
        if rows.empty:
            empty = np.zeros((0, 2), np.int64)
            return cls(np.zeros(0, np.int64), empty, empty, position)
        lengths = (rows.stop - rows.start).to_numpy()
        pool = np.concatenate([np.arange(a, b) for a, b in zip(rows.start, rows.stop)])
        spans = []
        for keys in (["identity"], ["identity", "clip"]):
            # Rows are sorted by these keys, so each group's frames are one run of the pool.
            group = np.repeat(rows.groupby(keys, sort=False).ngroup().to_numpy(), lengths)
            names = np.arange(group.max() + 1)
            first, last = np.searchsorted(group, names), np.searchsorted(group, names, "right")
            spans.append(np.stack([first[group], last[group]], axis=1))
        position[pool] = np.arange(len(pool))
        return cls(pool, spans[0], spans[1], position)

    def anchors(self) -> np.ndarray:
        """The pool's frames that have a negative (their identity has another recording in the pool)."""
        others = np.diff(self.identity_span, axis=1)[:, 0] - np.diff(self.recording_span, axis=1)[:, 0]
        return self.pool[others > 0]

    def sample(self, anchors: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        """[len(anchors), count] negatives, uniform over the other recordings' frames of each anchor's identity."""
        at = self.position[np.asarray(anchors, np.int64)]
        if (at < 0).any():
            raise ValueError("an anchor outside the pool")
        (id_first, id_last), (rec_first, rec_last) = self.identity_span[at].T, self.recording_span[at].T
        others = (id_last - id_first) - (rec_last - rec_first)
        if (others <= 0).any():
            raise ValueError("an anchor without another recording of its identity in the pool")
        offset = (rng.random((len(at), count)) * others[:, None]).astype(np.int64)
        chosen = id_first[:, None] + offset
        chosen += np.where(chosen >= rec_first[:, None], (rec_last - rec_first)[:, None], 0)  # skip its recording
        return self.pool[chosen]


def loader_frames(segments: pd.DataFrame) -> dict[str, np.ndarray]:
    """Global frame indices training (anchors, negatives, the normaliser) and validation (per held-out split:
    anchors and negatives) can read."""
    validation = [NegativeSampler.of(segments, [split]).pool for split in HELDOUT]
    return {"train": NegativeSampler.of(segments, [TRAIN]).pool, "normaliser": split_frames(segments, [TRAIN]),
            "validation": np.unique(np.concatenate(validation))}


# ---------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainedAudioEncoder:
    encoder: ContrastiveAudioNet
    history: list[dict[str, float]]  # one row per step
    validation: list[dict[str, float]]  # one row per validation pass
    seconds: float  # wall clock
    cpu_seconds: float  # process CPU time (all threads); wall clock on a busy machine says little


def training_steps(cfg: AudioContrastiveConfig, anchors: int) -> int:
    """``cfg.steps``, or ``cfg.epochs`` passes over the training anchors."""
    return cfg.steps or max(1, math.ceil(cfg.epochs * anchors / cfg.batch_size))


def exponential_schedule(optimiser: torch.optim.Optimizer, start: float, end: float,
                         steps: int) -> torch.optim.lr_scheduler.ExponentialLR:
    """Learning rate ``start`` at step 0 decaying geometrically to ``end`` after ``steps`` steps."""
    return torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=(end / start) ** (1 / max(steps, 1)))


def train_audio_encoder(cfg: AudioContrastiveConfig, data: ContrastiveData,
                        log_metric: MetricLogger | None = None) -> TrainedAudioEncoder:
    """InfoNCE training on the training frames; validation on the held-out ones."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    sampler = NegativeSampler.of(data.segments, [TRAIN])
    anchors = sampler.anchors()
    if not len(anchors):
        raise PretrainDataError("no training identity has two recordings: the contrastive audio encoder's negatives "
                                "come from another recording of the anchor's identity")
    if len(anchors) < len(sampler.pool):
        log.warning("%d training frames of identities with one training recording are no anchors",
                    len(sampler.pool) - len(anchors))
    _, window, feature_dim = data.features.shape
    encoder = ContrastiveAudioNet(feature_dim, data.mouth.shape[1], window)
    normaliser = data.features[torch.from_numpy(split_frames(data.segments, [TRAIN]))]
    encoder.feature_mean.copy_(normaliser.mean(dim=(0, 1)))
    encoder.feature_std.copy_(normaliser.std(dim=(0, 1)).clamp_min(1e-3))
    encoder.to(device)
    features, mouth = data.features.to(device), data.mouth.to(device)
    steps = training_steps(cfg, len(anchors))
    optimiser = torch.optim.Adam(encoder.parameters(), lr=cfg.learning_rate)
    schedule = exponential_schedule(optimiser, cfg.learning_rate, cfg.final_learning_rate, steps)
    held_out = _validation_sets(data.segments, cfg)
    history, validation = [], []
    started, cpu_started = time.perf_counter(), time.process_time()
    progress = tqdm(range(1, steps + 1), desc="contrastive audio encoder", unit="step")
    for step in progress:
        encoder.train()
        batch = rng.choice(anchors, size=cfg.batch_size)
        negatives = sampler.sample(batch, cfg.negatives, rng)
        frames = torch.from_numpy(np.concatenate([batch, negatives.ravel()])).to(device)
        audio = encoder(features[frames])
        positive, negative = audio[:len(batch)], audio[len(batch):].view(len(batch), cfg.negatives, -1)
        losses, correct = info_nce(mouth[frames[:len(batch)]], positive, negative, cfg.temperature)
        loss = losses.mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        row = {"step": step, "loss": loss.item(), "accuracy": correct.float().mean().item(),
               "lr": optimiser.param_groups[0]["lr"]}
        schedule.step()
        history.append(row)
        if log_metric is not None and step % LOG_EVERY == 0:
            log_metric("audio_contrastive_train_loss", float(np.mean([r["loss"] for r in history[-LOG_EVERY:]])),
                       step)
        if step % cfg.eval_every == 0 or step == steps:
            scores = evaluate(encoder, features, mouth, held_out, cfg)
            validation.append({"step": step, **scores})
            progress.set_postfix(loss=f"{row['loss']:.3f}", val_acc=f"{scores.get('val_accuracy', 0):.3f}")
            if log_metric is not None:
                for name, value in scores.items():
                    log_metric(f"audio_contrastive_{name}", value, step)
    return TrainedAudioEncoder(encoder.cpu().eval(), history, validation, time.perf_counter() - started,
                               time.process_time() - cpu_started)


@dataclass
class _HeldOut:
    anchors: np.ndarray  # [n] every frame of the split that has a negative
    negatives: np.ndarray  # [n, k] drawn once, so every validation pass scores the same tuples
    batches: list[np.ndarray]  # the anchors shuffled once into retrieval batches


def _validation_sets(segments: pd.DataFrame, cfg: AudioContrastiveConfig) -> dict[str, _HeldOut]:
    rng = np.random.default_rng([cfg.seed, 1])
    sets = {}
    for split in HELDOUT:
        sampler = NegativeSampler.of(segments, [split])
        anchors = sampler.anchors()
        if not len(anchors):
            if len(sampler.pool):
                log.warning("%s: no identity has two recordings; not validated", split)
            continue
        shuffled = rng.permutation(anchors)
        # Full batches only: retrieval among fewer candidates would be easier than the reported chance.
        size = min(cfg.batch_size, len(anchors))
        batches = [shuffled[i:i + size] for i in range(0, len(shuffled) - size + 1, size)]
        sets[split] = _HeldOut(anchors, sampler.sample(anchors, cfg.negatives, rng), batches)
    return sets


def _embed(encoder: ContrastiveAudioNet, features: Tensor, frames: np.ndarray) -> Tensor:
    index = torch.from_numpy(frames.ravel()).to(features.device)
    out = torch.cat([encoder(features[chunk]) for chunk in index.split(ENCODE_BATCH)])
    return out.view(*frames.shape, -1)


def evaluate(encoder: ContrastiveAudioNet, features: Tensor, mouth: Tensor, held_out: dict[str, _HeldOut],
             cfg: AudioContrastiveConfig) -> dict[str, float]:
    """Per held-out split (``_<split>``) and averaged over them: ``val_loss`` (InfoNCE), ``val_accuracy`` (share
    of anchors whose own audio is nearer their e_m than every negative; chance 1 / (1 + negatives)),
    ``val_retrieval`` (share whose own audio is the nearest among a batch of ``batch_size`` frames' audio) and
    ``retrieval_chance`` (1 / that batch size)."""
    encoder.eval()
    scores: dict[str, float] = {}
    with torch.no_grad():
        for split, held in held_out.items():
            positive = _embed(encoder, features, held.anchors)
            negative = _embed(encoder, features, held.negatives)
            target = mouth[torch.from_numpy(held.anchors).to(mouth.device)]
            losses, correct = info_nce(target, positive, negative, cfg.temperature)
            scores[f"val_loss_{split}"] = losses.mean().item()
            scores[f"val_accuracy_{split}"] = correct.float().mean().item()
            if held.batches:
                scores[f"val_retrieval_{split}"] = float(np.mean([
                    retrieval_accuracy(mouth[torch.from_numpy(b).to(mouth.device)], _embed(encoder, features, b))
                    for b in held.batches]))
                scores[f"retrieval_chance_{split}"] = 1 / len(held.batches[0])
    for name in ("val_loss", "val_accuracy", "val_retrieval", "retrieval_chance"):
        values = [v for k, v in scores.items() if k.startswith(f"{name}_")]
        if values:
            scores[name] = float(np.mean(values))
    return scores


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def model_info(encoder: ContrastiveAudioNet, cfg: AudioContrastiveConfig) -> dict:
    """What rebuilds the encoder and says what it reads (stored beside the weights)."""
    return {"feature_kind": cfg.audio_feature, "feature_dim": int(encoder.feature_mean.numel()),
            "window": encoder.window, "output_dim": int(encoder.head[-1].out_features),
            "temperature": cfg.temperature}


def save_audio_encoder(encoder: ContrastiveAudioNet, cfg: AudioContrastiveConfig, path: Path) -> None:
    """``path`` (a model.pt file): state dict + ``model_info``."""
    torch.save({"state_dict": encoder.state_dict(), "info": model_info(encoder, cfg)}, path)


def load_audio_encoder(folder: Path, device: str = "cpu") -> tuple[ContrastiveAudioNet, dict]:
    """The encoder of ``folder``/model.pt (or of a model.pt path), loaded with ``weights_only=True``, in eval mode,
    and its info: ``feature_kind`` (the aud_<kind>.npy it reads), ``feature_dim``, ``window``, ``output_dim``,
    ``temperature``. It takes raw features (it standardises them itself)."""
    path = Path(folder)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: contrastive audio encoder not found; run "
                                "`dvc repro pretrain_audio_contrastive`")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    info = dict(checkpoint["info"])
    encoder = ContrastiveAudioNet(info["feature_dim"], info["output_dim"], info["window"])
    encoder.load_state_dict(checkpoint["state_dict"])
    return encoder.to(device).eval(), info
