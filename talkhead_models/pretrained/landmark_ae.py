"""JEAN's landmark autoencoder (Sec. 3.1 and suppl. 8.1), trained on the corpus.

Input: a frame's 68 canonical landmarks (``IdentityLandmarks.canonical``:
head pose removed) without the 17 contour points (68 points 0-16), i.e. the
51 brow, nose, eye and lip points, x, y, z flattened (153 values) and
standardised per coordinate with the training frames' mean and std (buffers,
so a checkpoint is self-contained). The last 20 of the 51 are the lips
(68 points 48-67).

An MLP encoder (hidden 256, 256, 128, LeakyReLU 0.02) gives 128 values split
into an eye-nose embedding e_f and a mouth embedding e_m (64 each); an MLP
decoder mirrors it back to the 153 values. Training takes pairs of frames A,
B of the same recording (a segment, so one identity, emotion and split); with
probability 0.8 their mouth embeddings are swapped, and the L1 target of
``decode(e_f(A), e_m(B))`` is A's points with the lips of B (and the other way
round); without a swap the target is the plain landmarks. The swap makes e_m
the only carrier of the lips, which is what the contrastive audio encoder
(``audio_contrastive``) aligns audio with.

The recordings are ``datasets.segment_table``'s segments: pairs and the
normaliser come from ``TRAIN`` segments, validation pairs from the held-out
ones; no ``TEST`` or ``NO_FACE`` frame is read (their points are NaN in
``LandmarkData``; ``loader_frames`` lists the frames each role reads).
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
from torch import Tensor, nn
from tqdm import tqdm

from talkhead_models.config import Device, Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from talkhead_models.data import DataConfig
from talkhead_models.pretrained.datasets import (
    HELDOUT, TRAIN, USED, IdentityLandmarks, PretrainDataError, SplitConfig, split_frames,
)
from talkhead_models.pretrained.sync_expert import LOG_EVERY, MetricLogger, resolve_device

log = logging.getLogger(__name__)

CONTOUR_POINTS = 17
"""The 68-point contour (0-16), left out: the paper attends to the eye-nose and mouth movements."""
KEPT = np.arange(CONTOUR_POINTS, 68)
"""The 68 points the autoencoder reads (51)."""
POINTS = len(KEPT)
LIP_POINTS = 20
"""The last 20 kept points are the lips (68 points 48-67), the part a swap exchanges."""
INPUT_DIM = 3 * POINTS  # 153
MODEL_FILE = "model.pt"
VALIDATION_PAIRS = 2048  # per held-out split and pass; the same pairs every pass, so the curve is comparable


@dataclass(frozen=True)
class LandmarkAEConfig:
    """The landmark autoencoder and its training (params.yaml ``pretrain_landmark_ae``)."""

    data: DataConfig = field(default_factory=DataConfig)
    """The shared data section (which identities to read)."""
    pretrain: SplitConfig = field(default_factory=SplitConfig)
    """The shared held-out split of the corpus-level models."""
    hidden: tuple[PositiveInt, ...] = (256, 256, 128)
    """Hidden layer sizes of the encoder MLP; the decoder uses them in reverse (paper)."""
    embedding_dim: PositiveInt = 64
    """Size of each of the eye-nose (e_f) and mouth (e_m) embeddings (paper)."""
    negative_slope: PositiveFloat = 0.02
    """LeakyReLU negative slope (paper)."""
    swap_probability: Fraction = 0.8
    """Probability that a pair's mouth embeddings are swapped (paper's epsilon)."""
    batch_size: PositiveInt = 256
    """Pairs of frames per step (paper: batch 256)."""
    epochs: PositiveFloat = 15.0
    """Passes over the training frames (each the A of one pair) when ``steps`` is 0 (paper: 15 epochs)."""
    steps: NonNegativeInt = 0
    """Training steps; 0 = ``epochs`` passes. The paper gives epochs of MEAD (about 3.6 M frames, some 200 k steps);
    an epoch of a small corpus is a few dozen steps, so a profile sets steps directly."""
    learning_rate: PositiveFloat = 1e-3
    """Adam learning rate, constant (the paper says Adam with default parameters: 1e-3, no schedule)."""
    weight_decay: NonNegativeFloat = 1e-5
    """Adam weight decay (paper)."""
    eval_every: PositiveInt = 500
    """Steps between validation passes (held-out pairs' plain and swapped reconstruction errors)."""
    seed: NonNegativeInt = 0
    """Seed of the initialisation and the sampling."""
    device: Device = "auto"
    """auto (CUDA when available), cuda or cpu."""
    threads: NonNegativeInt = 0
    """torch CPU threads (0 = torch's default)."""


# ---------------------------------------------------------------------------------------------------------------
# Network


def _mlp(in_features: int, hidden: Sequence[int], out_features: int, negative_slope: float) -> nn.Sequential:
    sizes = (in_features, *hidden)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(negative_slope)]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], out_features))


def kept_points(points68: Tensor) -> Tensor:
    """[..., 68, 3] -> [..., 51, 3] without the contour."""
    if points68.shape[-2:] != (68, 3):
        raise ValueError(f"expected 68 landmarks [..., 68, 3], got {tuple(points68.shape)}")
    return points68[..., CONTOUR_POINTS:, :]


class LandmarkAutoencoder(nn.Module):
    """51 canonical landmarks <-> (e_f, e_m); inputs and outputs in the canonical frame's units."""

    def __init__(self, hidden: Sequence[int] = (256, 256, 128), embedding_dim: int = 64,
                 negative_slope: float = 0.02) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.encoder = _mlp(INPUT_DIM, hidden, 2 * embedding_dim, negative_slope)
        self.decoder = _mlp(2 * embedding_dim, tuple(reversed(hidden)), INPUT_DIM, negative_slope)
        self.register_buffer("point_mean", torch.zeros(INPUT_DIM))
        self.register_buffer("point_std", torch.ones(INPUT_DIM))

    def normalise(self, points51: Tensor) -> Tensor:
        """[B, 51, 3] -> [B, 153] standardised."""
        return (points51.flatten(-2) - self.point_mean) / self.point_std

    def denormalise(self, values: Tensor) -> Tensor:
        """[B, 153] standardised -> [B, 51, 3]."""
        return (values * self.point_std + self.point_mean).unflatten(-1, (POINTS, 3))

    def encode_normalised(self, values: Tensor) -> tuple[Tensor, Tensor]:
        codes = self.encoder(values)
        return codes[..., :self.embedding_dim], codes[..., self.embedding_dim:]

    def decode_normalised(self, e_f: Tensor, e_m: Tensor) -> Tensor:
        return self.decoder(torch.cat([e_f, e_m], dim=-1))

    def encode(self, points68: Tensor) -> tuple[Tensor, Tensor]:
        """[B, 68, 3] canonical landmarks -> eye-nose e_f [B, 64] and mouth e_m [B, 64]."""
        return self.encode_normalised(self.normalise(kept_points(points68)))

    def decode(self, e_f: Tensor, e_m: Tensor) -> Tensor:
        """(e_f, e_m) -> [B, 51, 3] landmarks (the 68 points 17-67) in canonical units."""
        return self.denormalise(self.decode_normalised(e_f, e_m))

    def forward(self, points68: Tensor) -> Tensor:
        """Plain reconstruction [B, 51, 3] of [B, 68, 3] landmarks."""
        return self.decode(*self.encode(points68))


def frozen(model: LandmarkAutoencoder) -> LandmarkAutoencoder:
    """The autoencoder in eval mode with gradients off (the fixed target of the contrastive audio encoder)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class LandmarkData:
    """Every identity's 51 canonical points, concatenated (global frame index), with the recording table."""

    points: Tensor  # [F, 51, 3]; NaN for the frames outside USED (test, no face), which nothing may read
    segments: pd.DataFrame  # datasets.segment_table


def landmark_data(identities: Sequence[IdentityLandmarks], segments: pd.DataFrame) -> LandmarkData:
    """The USED frames' points; the others are NaN, so a stray read poisons the loss instead of leaking quietly."""
    points = np.concatenate([d.canonical[:, KEPT] for d in identities]).astype(np.float32)
    if len(points) != int(segments.stop.max()):
        raise PretrainDataError(f"{len(points)} landmark frames for a segment table of {int(segments.stop.max())}; "
                                "build the table from the same identities")
    unused = np.ones(len(points), bool)
    unused[split_frames(segments, USED)] = False
    points[unused] = np.nan
    if not np.isfinite(points[~unused]).all():
        raise PretrainDataError("non-finite canonical landmarks in frames with a face; re-run the landmarks stage")
    return LandmarkData(torch.from_numpy(points), segments.reset_index(drop=True))


def point_statistics(points: Tensor, segments: pd.DataFrame) -> tuple[Tensor, Tensor]:
    """Per-coordinate mean and std [153] of the TRAIN frames' points [F, 51, 3]."""
    values = points[torch.from_numpy(split_frames(segments, [TRAIN]))].flatten(1).double()
    if len(values) < 2:
        raise PretrainDataError(f"{len(values)} training frame(s): too few for the landmark normaliser")
    # A floor keeps a near-still coordinate (a nose point after pose removal) from blowing up its noise.
    floor = 1e-3 * values.std(0).max()
    return values.mean(0).float(), values.std(0).clamp_min(floor).float()


@dataclass
class PairSampler:
    """Pairs of different frames A, B of one segment, A uniform over the frames of ``splits``' segments."""

    frames: np.ndarray  # [n] global frame indices
    start: np.ndarray  # [n] their segment's first frame
    length: np.ndarray  # [n] their segment's length

    @classmethod
    def of(cls, segments: pd.DataFrame, splits: Sequence[str]) -> "PairSampler":
        rows = segments[segments.split.isin(splits) & (segments.stop - segments.start >= 2)]
        if rows.empty:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
        lengths = (rows.stop - rows.start).to_numpy()
        return cls(np.concatenate([np.arange(a, b) for a, b in zip(rows.start, rows.stop)]),
                   np.repeat(rows.start.to_numpy(), lengths), np.repeat(lengths, lengths))

    def __len__(self) -> int:
        return len(self.frames)

    def sample(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pick = rng.integers(len(self.frames), size=count)
        a, start, length = self.frames[pick], self.start[pick], self.length[pick]
        b = start + (a - start + 1 + rng.integers(length - 1)) % length  # any frame of the segment but A
        return a, b


def loader_frames(segments: pd.DataFrame) -> dict[str, np.ndarray]:
    """Global frame indices training (pairs, the normaliser) and validation (pairs) can read."""
    return {"train": PairSampler.of(segments, [TRAIN]).frames, "normaliser": split_frames(segments, [TRAIN]),
            "validation": PairSampler.of(segments, HELDOUT).frames}


def swapped_targets(a: Tensor, b: Tensor, swap: Tensor) -> tuple[Tensor, Tensor]:
    """Targets of the decoded pair [B, 51, 3] (or flattened [B, 153]): where ``swap`` [B], A's points with B's lips
    and B's with A's; elsewhere the plain points."""
    shape = a.shape
    a, b = a.reshape(len(a), POINTS, 3), b.reshape(len(b), POINTS, 3)
    lips = torch.zeros(POINTS, 1, dtype=torch.bool, device=a.device)
    lips[-LIP_POINTS:] = True
    exchange = swap[:, None, None] & lips
    return torch.where(exchange, b, a).reshape(shape), torch.where(exchange, a, b).reshape(shape)


def pair_loss(model: LandmarkAutoencoder, a: Tensor, b: Tensor, swap: Tensor) -> Tensor:
    """L1 (standardised units) of the decoded pair against its targets; ``a``, ``b`` [B, 153] standardised."""
    e_f, e_m = model.encode_normalised(torch.cat([a, b]))
    f_a, f_b = e_f.chunk(2)
    m_a, m_b = e_m.chunk(2)
    column = swap[:, None]
    out_a = model.decode_normalised(f_a, torch.where(column, m_b, m_a))
    out_b = model.decode_normalised(f_b, torch.where(column, m_a, m_b))
    target_a, target_b = swapped_targets(a, b, swap)
    return 0.5 * (F.l1_loss(out_a, target_a) + F.l1_loss(out_b, target_b))


# ---------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainedLandmarkAE:
    model: LandmarkAutoencoder
    history: list[dict[str, float]]  # one row per step
    validation: list[dict[str, float]]  # one row per validation pass
    seconds: float  # wall clock
    cpu_seconds: float  # process CPU time (all threads); wall clock on a busy machine says little


def training_steps(cfg: LandmarkAEConfig, training_frames: int) -> int:
    """``cfg.steps``, or ``cfg.epochs`` passes over the training frames (each the A of one pair)."""
    return cfg.steps or max(1, math.ceil(cfg.epochs * training_frames / cfg.batch_size))


def train_landmark_ae(cfg: LandmarkAEConfig, identities: Sequence[IdentityLandmarks], segments: pd.DataFrame,
                      log_metric: MetricLogger | None = None) -> TrainedLandmarkAE:
    """Swap-autoencoder training on pairs of training frames; validation on held-out pairs."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = landmark_data(identities, segments)
    sampler = PairSampler.of(data.segments, [TRAIN])
    if not len(sampler):
        raise PretrainDataError("no training segment of 2 frames or more for the landmark autoencoder's pairs")
    model = LandmarkAutoencoder(cfg.hidden, cfg.embedding_dim, cfg.negative_slope)
    mean, std = point_statistics(data.points, data.segments)
    model.point_mean.copy_(mean)
    model.point_std.copy_(std)
    model.to(device)
    standardised = model.normalise(data.points.to(device))  # [F, 153]; NaN outside USED
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = training_steps(cfg, len(sampler))
    validation_pairs = _validation_pairs(data.segments, cfg.seed)
    history, validation = [], []
    started, cpu_started = time.perf_counter(), time.process_time()
    progress = tqdm(range(1, steps + 1), desc="landmark autoencoder", unit="step")
    for step in progress:
        model.train()
        a, b = (torch.from_numpy(x).to(device) for x in sampler.sample(cfg.batch_size, rng))
        swap = torch.from_numpy(rng.random(cfg.batch_size) < cfg.swap_probability).to(device)
        loss = pair_loss(model, standardised[a], standardised[b], swap)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.append({"step": step, "loss": loss.item()})
        if log_metric is not None and step % LOG_EVERY == 0:
            log_metric("landmark_ae_train_loss", float(np.mean([r["loss"] for r in history[-LOG_EVERY:]])), step)
        if step % cfg.eval_every == 0 or step == steps:
            scores = evaluate_pairs(model, data.points.to(device), validation_pairs)
            validation.append({"step": step, **scores})
            progress.set_postfix(loss=f"{loss.item():.3f}", val_swap_ratio=f"{scores.get('val_swap_ratio', 0):.2f}")
            if log_metric is not None:
                for name, value in scores.items():
                    log_metric(f"landmark_ae_{name}", value, step)
    return TrainedLandmarkAE(model.cpu().eval(), history, validation, time.perf_counter() - started,
                             time.process_time() - cpu_started)


def _validation_pairs(segments: pd.DataFrame, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fixed pairs per held-out split (its own generator: the training draws do not change them)."""
    rng = np.random.default_rng([seed, 1])
    pairs = {}
    for split in HELDOUT:
        sampler = PairSampler.of(segments, [split])
        if len(sampler):
            pairs[split] = sampler.sample(VALIDATION_PAIRS, rng)
    return pairs


def swap_errors(model: LandmarkAutoencoder, a: Tensor, b: Tensor) -> dict[str, float]:
    """Mean absolute errors (canonical units) of frames A and B [n, 51, 3]:

    ``l1`` the plain reconstruction of A (all points), ``mouth_l1`` the plain reconstruction of B's lips,
    ``swap_l1`` decode(e_f(A), e_m(B)) against A with B's lips, ``swap_mouth_l1`` its lips against B's,
    ``mouth_change`` A's lips against B's (what a decoder that ignored e_m would miss).
    """
    with torch.no_grad():
        f_a, m_a = model.encode_normalised(model.normalise(a))
        f_b, m_b = model.encode_normalised(model.normalise(b))
        plain_a, plain_b = model.decode(f_a, m_a), model.decode(f_b, m_b)
        swapped = model.decode(f_a, m_b)
        target, _ = swapped_targets(a, b, torch.ones(len(a), dtype=torch.bool, device=a.device))
        lips = slice(POINTS - LIP_POINTS, POINTS)
        return {"l1": (plain_a - a).abs().mean().item(),
                "mouth_l1": (plain_b[:, lips] - b[:, lips]).abs().mean().item(),
                "swap_l1": (swapped - target).abs().mean().item(),
                "swap_mouth_l1": (swapped[:, lips] - b[:, lips]).abs().mean().item(),
                "mouth_change": (a[:, lips] - b[:, lips]).abs().mean().item()}


def evaluate_pairs(model: LandmarkAutoencoder, points: Tensor,
                   pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """``swap_errors`` per held-out split (``val_<error>_<split>``), their means over the splits (``val_<error>``)
    and ``val_swap_ratio``: the swapped lips' error over the plain one (1 = e_m carries the lips fully)."""
    model.eval()
    scores: dict[str, float] = {}
    per_split = []
    for split, (a, b) in pairs.items():
        errors = swap_errors(model, points[torch.from_numpy(a)], points[torch.from_numpy(b)])
        per_split.append(errors)
        scores.update({f"val_{name}_{split}": value for name, value in errors.items()})
    for name in per_split[0] if per_split else ():
        scores[f"val_{name}"] = float(np.mean([errors[name] for errors in per_split]))
    if per_split:
        scores["val_swap_ratio"] = scores["val_swap_mouth_l1"] / max(scores["val_mouth_l1"], 1e-12)
    return scores


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def model_config(cfg: LandmarkAEConfig) -> dict:
    """What rebuilds the network (stored beside the weights)."""
    return {"hidden": list(cfg.hidden), "embedding_dim": cfg.embedding_dim, "negative_slope": cfg.negative_slope,
            "kept_points": KEPT.tolist(), "lip_points": LIP_POINTS}


def save_landmark_ae(model: LandmarkAutoencoder, cfg: LandmarkAEConfig, path: Path) -> None:
    """``path`` (a model.pt file): state dict + ``model_config``."""
    torch.save({"state_dict": model.state_dict(), "config": model_config(cfg)}, path)


def load_landmark_ae(folder: Path, device: str = "cpu") -> LandmarkAutoencoder:
    """The autoencoder of ``folder``/model.pt (or of a model.pt path), loaded with ``weights_only=True``, in eval
    mode."""
    path = Path(folder)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: landmark autoencoder not found; run `dvc repro pretrain_landmark_ae`")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    config = checkpoint["config"]
    if config["kept_points"] != KEPT.tolist() or config["lip_points"] != LIP_POINTS:
        raise PretrainDataError(f"{path}: made for points {config['kept_points']} (lips: last "
                                f"{config['lip_points']}), this code reads {KEPT.tolist()}; retrain it")
    model = LandmarkAutoencoder(tuple(config["hidden"]), config["embedding_dim"], config["negative_slope"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()
