"""JEAN's expression transformer (paper Sec. 3.2, supplement 8.3): per-identity expression codes.

Per-frame emotion features e_emo (EMOCA's 2048-d ResNet features in the
paper; any width D here) of one sentence said in two emotions A and B,
aligned by DTW, are cut into windows of ω = 8 aligned path steps. The
encoder EE maps a window through two linear layers (D -> 512 -> 128,
LeakyReLU) and a transformer encoder (3 layers, 8 heads, dropout 0.2,
sinusoidal positions, the window padded with learned start and end vectors
that are stripped again); each frame's 128-d output is split into a 64-d
lip part e_l (first half) and a 64-d expression part e_e (second half). With
probability δ = 0.8 the expression parts of the A and B windows are
exchanged, the whole window at once. The decoder ED, an autoregressive
transformer decoder of the same size whose sequence begins with the learned
start vector, attends to the (e_l, e_e) frames and reconstructs the window
frame by frame, ending in a 2-layer MLP (128 -> 512 -> D, LeakyReLU 0.02).
The loss is L1 (Eq. 4).

The target after a swap follows the expression part. The decoder gets
(e_l of A, e_e of B) and must reproduce e_B; (e_l of B, e_e of A) must
reproduce e_A. The paper's Eq. 4 says only that e'_A is compared with e_A,
so what matters is which decoded window counts as e'_A. It is the one
decoded with A's expression part, for these reasons:

* A and B say the same sentence and are DTW-aligned, so at each aligned
  step A's lip part describes the same mouth shape as B's. (e_l of A, e_e of
  B) is therefore "B's emotion saying this sentence", which is e_B. This is
  the same reasoning as the paper's landmark autoencoder, whose swapped
  target takes each part from the frame whose embedding supplied it.
* If the target followed the lip part instead, the expression part would
  come from the wrong emotion 80% of the time. The decoder would learn to
  ignore it, and e_l would end up carrying the emotion: the opposite of
  what JEAN wants, since e_e is the NeRF's expression input.

With the target following e_e, the decoder can get the emotion only from
e_e, because e_l comes from the other emotion 80% of the time. So e_e must
carry the emotion, and whatever emotion is left in e_l is useless to the
decoder. The scheme does not force the speech out of e_e: the aligned pair
shares its lip content, so e_e could carry it too. In the paper, the 64-d
bottleneck and the decoder's use of e_l are what keep it out.

Two choices the paper leaves open:

* The end vector appears only in the encoder's padding. A window always has
  ω frames, so generation stops after ω steps and no end vector needs to be
  predicted.
* The features are normalised per dimension with the mean and std of the
  training frames (stored as buffers), and the L1 is measured in those
  units, so dimensions of very different scale weigh alike.

At inference there is no DTW. ``expression_codes`` takes each frame's own
window of ω frames around it (frames t-ω/2 .. t+ω/2-1, clamped at the
clip's ends) and keeps EE's ω/2-th output, as the supplement describes.

Training (``train_expression_transformer``) is deterministic given the
seed. It can also be resumed: ``on_checkpoint`` receives a dict with the
model, Adam and RNG states, the step and the history, and passing that
dict back as ``state`` continues the run exactly as if it had not stopped
(same features, pairs and ``TransformerTraining``). The global torch RNG is
left as the caller had it.

Settings: the supplement gives Adam "with default parameters" (lr 1e-3),
weight decay 1e-5, batch 256 and 20 epochs. The defaults here keep lr 1e-3
and weight decay 1e-5 but use batches of 32 windows, which gives more steps
on a CPU budget. The paper does not give the transformer's feed-forward
width. It is 512 here (4 x d_model, as in Vaswani et al.); PyTorch's default
of 2048 makes a training step about 2x slower on the CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkhead_models.methods.base import MetricLogger

log = logging.getLogger(__name__)

LEAKY_SLOPE = 0.02
MAX_POSITIONS = 512
"""Sinusoid table length: windows longer than this (minus the two padding vectors) are refused."""

STATE_VERSION = 1


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(hidden, outputs))


def _sinusoids(length: int, dim: int) -> Tensor:
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)
    return table


class ExpressionTransformer(nn.Module):
    """EE + ED of one identity; ``encode`` and ``decode`` take and give features in their raw units."""

    def __init__(self, feature_dim: int, hidden_dim: int = 512, model_dim: int = 128, layers: int = 3,
                 heads: int = 8, dropout: float = 0.2, window: int = 8, feedforward_dim: int = 512) -> None:
        super().__init__()
        if model_dim % 2 or model_dim % heads:
            raise ValueError(f"model_dim {model_dim} must be even and divisible by heads {heads}")
        if not 1 <= window <= MAX_POSITIONS - 2:
            raise ValueError(f"window {window} outside 1..{MAX_POSITIONS - 2}")
        self.feature_dim, self.model_dim, self.window = feature_dim, model_dim, window
        self.code_dim = model_dim // 2
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        # Not persistent: a pure function of model_dim, so checkpoints need not carry it.
        self.register_buffer("positions", _sinusoids(MAX_POSITIONS, model_dim), persistent=False)
        self.input_mlp = _mlp(feature_dim, hidden_dim, model_dim)
        # The decoder's own embedding of the frames it has produced so far; the paper does not say it is
        # shared with EE's input layers, and sharing would tie ED's inputs to EE's training.
        self.target_mlp = _mlp(feature_dim, hidden_dim, model_dim)
        self.output_mlp = _mlp(model_dim, hidden_dim, feature_dim)
        self.start_token = nn.Parameter(torch.randn(model_dim) * 0.02)
        self.end_token = nn.Parameter(torch.randn(model_dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(model_dim, heads, feedforward_dim, dropout, batch_first=True),
            layers, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(model_dim, heads, feedforward_dim, dropout, batch_first=True), layers)

    @torch.no_grad()
    def set_normalisation(self, mean: Tensor | np.ndarray, std: Tensor | np.ndarray) -> None:
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32)
        # A constant feature would divide by zero; it carries nothing either way.
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        self.feature_mean.copy_(torch.as_tensor(np.asarray(mean), dtype=torch.float32))

    def normalise(self, features: Tensor) -> Tensor:
        return (features - self.feature_mean) / self.feature_std

    def _check(self, features: Tensor) -> None:
        if features.ndim != 3 or features.shape[-1] != self.feature_dim:
            raise ValueError(f"expected [B, W, {self.feature_dim}] features, got {tuple(features.shape)}")
        if features.shape[1] > MAX_POSITIONS - 2:
            raise ValueError(f"window {features.shape[1]} longer than {MAX_POSITIONS - 2}")

    def encode(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """[B, W, D] features -> (lip [B, W, 64], expression [B, W, 64])."""
        self._check(features)
        batch, width = features.shape[:2]
        inner = self.input_mlp(self.normalise(features))
        tokens = torch.cat([self.start_token.expand(batch, 1, -1), inner, self.end_token.expand(batch, 1, -1)], 1)
        hidden = self.encoder(self.dropout(tokens + self.positions[:width + 2]))[:, 1:-1]
        return hidden[..., :self.code_dim], hidden[..., self.code_dim:]

    def _next_frames(self, memory: Tensor, previous: Tensor) -> Tensor:
        """Normalised predictions for frames 0..k given the raw frames 0..k-1 (``previous`` [B, k, D])."""
        batch, length = memory.shape[0], previous.shape[1] + 1
        tokens = torch.cat([self.start_token.expand(batch, 1, -1), self.target_mlp(self.normalise(previous))], 1)
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=memory.device, dtype=memory.dtype)
        hidden = self.decoder(self.dropout(tokens + self.positions[:length]), memory, tgt_mask=mask,
                              tgt_is_causal=True)
        return self.output_mlp(hidden)

    def decode_normalised(self, lip: Tensor, expression: Tensor, target: Tensor | None = None) -> Tensor:
        """As ``decode``, but the output is in normalised units (what the loss compares)."""
        memory = torch.cat([lip, expression], -1)
        if target is not None:
            self._check(target)
            if target.shape[:2] != memory.shape[:2]:
                raise ValueError(f"target {tuple(target.shape)} does not match codes {tuple(memory.shape)}")
            return self._next_frames(memory, target[:, :-1])
        frames = memory.new_zeros(memory.shape[0], 0, self.feature_dim)
        for _ in range(memory.shape[1]):
            # The step's prediction goes back in raw units, through the same embedding teacher forcing uses,
            # so that generation and teacher forcing on generated frames are one computation.
            step = self._next_frames(memory, frames)[:, -1:]
            frames = torch.cat([frames, step * self.feature_std + self.feature_mean], 1)
        return self.normalise(frames)

    def decode(self, lip: Tensor, expression: Tensor, target: Tensor | None = None) -> Tensor:
        """(lip, expression) [B, W, 64] -> reconstructed features [B, W, D].

        With ``target`` [B, W, D], teacher forcing: frame i is predicted from the start vector and target
        frames 0..i-1 under a causal mask. Without it, frames are generated one at a time, each fed back.
        """
        return self.decode_normalised(lip, expression, target) * self.feature_std + self.feature_mean

    def forward(self, features: Tensor) -> Tensor:
        lip, expression = self.encode(features)
        return self.decode(lip, expression, features)


def swap_expressions(lip_a: Tensor, expression_a: Tensor, lip_b: Tensor, expression_b: Tensor,
                     swap: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Exchange the expression parts of the windows where ``swap`` [B] is true.

    Returns (lip_a, expression for A's lip part, lip_b, expression for B's lip part). Each decoded window's
    target is the features of the window whose expression part it received (see the module docstring).
    """
    chosen = swap[:, None, None]
    return (lip_a, torch.where(chosen, expression_b, expression_a),
            lip_b, torch.where(chosen, expression_a, expression_b))


def pair_loss(model: ExpressionTransformer, features_a: Tensor, features_b: Tensor, swap: Tensor) -> Tensor:
    """Eq. 4 on aligned windows [B, W, D] of A and B, with expression parts swapped where ``swap`` [B].

    The mean absolute error per normalised feature over both decoded windows (the paper's sum of the two
    L1 terms, halved and scaled by the feature count).
    """
    lip, expression = model.encode(torch.cat([features_a, features_b]))
    half = features_a.shape[0]
    lip_a, expression_a, lip_b, expression_b = swap_expressions(lip[:half], expression[:half], lip[half:],
                                                                 expression[half:], swap)
    chosen = swap[:, None, None]
    target_a = torch.where(chosen, features_b, features_a)
    target_b = torch.where(chosen, features_a, features_b)
    target = torch.cat([target_a, target_b])
    predicted = model.decode_normalised(torch.cat([lip_a, lip_b]), torch.cat([expression_a, expression_b]), target)
    return F.l1_loss(predicted, model.normalise(target))


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def frame_codes(model: ExpressionTransformer, features: np.ndarray | Tensor, window: int | None = None,
                batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per frame t: EE's (lip, expression) output [n, 64] each at the ω/2-th position of its window.

    The window of t is frames t-ω/2 .. t-ω/2+ω-1 clamped to [0, n-1], so position ω/2 is frame t itself.
    ``window`` defaults to the one the model was built for.
    """
    window = model.window if window is None else window
    values = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if values.ndim != 2:
        raise ValueError(f"expected [n, D] features, got {tuple(values.shape)}")
    count, half = values.shape[0], window // 2
    if count == 0:
        empty = np.zeros((0, model.code_dim), np.float32)
        return empty, empty.copy()
    values = values.to(_device(model))
    offsets = torch.arange(window, device=values.device) - half
    was_training = model.training
    model.eval()
    try:
        lips, expressions = [], []
        for first in range(0, count, batch):
            frames = torch.arange(first, min(count, first + batch), device=values.device)
            lip, expression = model.encode(values[(frames[:, None] + offsets).clamp(0, count - 1)])
            lips.append(lip[:, half])
            expressions.append(expression[:, half])
    finally:
        model.train(was_training)
    return torch.cat(lips).cpu().numpy(), torch.cat(expressions).cpu().numpy()


def expression_codes(model: ExpressionTransformer, features: np.ndarray | Tensor, window: int | None = None,
                     batch: int = 1024) -> np.ndarray:
    """[n, D] frames of one clip -> [n, 64] expression codes e_e (eval mode, no DTW)."""
    return frame_codes(model, features, window, batch)[1]


@dataclass(frozen=True)
class TransformerTraining:
    steps: int = 300
    batch_size: int = 32
    """Windows per emotion per step. The supplement's batch is 256; 32 gives more steps in a CPU budget."""
    learning_rate: float = 1e-3
    """Adam "with default parameters" (supplement 8.3), i.e. PyTorch's 1e-3."""
    weight_decay: float = 1e-5
    swap_probability: float = 0.8
    seed: int = 0
    log_every: int = 100
    """Steps between logged training-loss means and validation passes."""
    checkpoint_every: int = 0
    """Steps between ``on_checkpoint`` calls (0: only at the end)."""


def _pair_windows(pairs: Sequence[tuple[np.ndarray, np.ndarray] | np.ndarray], window: int, frames: int,
                  stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``window`` consecutive path steps of every pair, as [n, window] frame indices of A, B.

    Windows start every ``stride`` steps, and the last one ends on the path's last step. A path shorter
    than the window gives one window, its last step repeated.
    """
    windows_a, windows_b = [], []
    for number, pair in enumerate(pairs):
        if isinstance(pair, np.ndarray):
            # A DTW path [L, 2]; unpacking it as a tuple would take its first two rows.
            if pair.ndim != 2 or pair.shape[1] != 2:
                raise ValueError(f"pair {number}: a path array must be [L, 2], got {pair.shape}")
            pair = (pair[:, 0], pair[:, 1])
        path_a, path_b = (np.asarray(path, np.int64).ravel() for path in pair)
        if path_a.shape != path_b.shape:
            raise ValueError(f"pair {number}: aligned paths differ in length ({len(path_a)} vs {len(path_b)})")
        if len(path_a) == 0:
            log.warning("pair %d has an empty path; left out", number)
            continue
        if min(path_a.min(), path_b.min()) < 0 or max(path_a.max(), path_b.max()) >= frames:
            raise ValueError(f"pair {number}: frame index outside 0..{frames - 1}")
        last = max(len(path_a) - window, 0)
        starts = np.unique(np.append(np.arange(0, last + 1, stride), last))
        steps = np.minimum(starts[:, None] + np.arange(window), len(path_a) - 1)
        windows_a.append(path_a[steps])
        windows_b.append(path_b[steps])
    if not windows_a:
        return np.zeros((0, window), np.int64), np.zeros((0, window), np.int64)
    return np.concatenate(windows_a), np.concatenate(windows_b)


@torch.no_grad()
def _validation_losses(model: ExpressionTransformer, features: Tensor, windows_a: Tensor, windows_b: Tensor,
                       batch: int = 512) -> dict[str, float]:
    """Teacher-forced Eq. 4 on every validation window, unswapped and all swapped, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        totals = {"val_loss": 0.0, "val_swapped_loss": 0.0}
        for first in range(0, len(windows_a), batch):
            a, b = features[windows_a[first:first + batch]], features[windows_b[first:first + batch]]
            for name, swapped in (("val_loss", False), ("val_swapped_loss", True)):
                swap = torch.full((len(a),), swapped, device=features.device)
                totals[name] += pair_loss(model, a, b, swap).item() * len(a)
    finally:
        model.train(was_training)
    return {name: total / len(windows_a) for name, total in totals.items()}


def _resumable(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with the one that saved its state."""
    return {k: v for k, v in settings.items() if k not in ("steps", "log_every", "checkpoint_every")}


def train_expression_transformer(
        features: np.ndarray, pairs: Sequence[tuple[np.ndarray, np.ndarray] | np.ndarray],
        training: TransformerTraining, validation_pairs: Sequence[tuple[np.ndarray, np.ndarray] | np.ndarray] = (),
        log_metric: MetricLogger | None = None,
        state: dict[str, Any] | None = None, on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        model_options: dict[str, Any] | None = None) -> tuple[ExpressionTransformer, list[dict[str, float]]]:
    """Train one identity's expression transformer on aligned pairs of its frames.

    ``features`` [N, D] are the identity's per-frame emotion features, indexed by frame; each pair gives
    the aligned frame indices of A and B (two arrays of equal length L, or one [L, 2] DTW path). Each step
    draws ``batch_size`` windows of ω consecutive path steps uniformly among all windows of all pairs,
    swaps the expression parts of each with probability ``swap_probability``, and takes one Adam step on
    ``pair_loss``. ``history`` has one row per step ("step", "loss"); rows every ``log_every`` steps and
    the last also get "val_loss" and "val_swapped_loss" when ``validation_pairs`` are given, and a row
    with step 0 holds the untrained model's validation losses. The model is returned in eval mode on the CPU.

    ``state`` resumes a run from a dict that ``on_checkpoint`` received (see the module docstring); only
    ``steps``, ``log_every`` and ``checkpoint_every`` may differ from the run that saved it, so a finished run
    can also be extended. ``model_options`` are extra ``ExpressionTransformer`` arguments (they must match).
    Training runs on the CPU; with other processes on the cores, one torch thread is much faster than two.
    """
    values = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if values.ndim != 2:
        raise ValueError(f"expected [N, D] features, got {tuple(values.shape)}")
    options = dict(model_options or {})
    window = options.get("window", 8)
    windows_a, windows_b = _pair_windows(pairs, window, len(values))
    if len(windows_a) == 0:
        raise ValueError("no training pair has any aligned step")
    # Validation windows tile the paths rather than overlap: every step is scored, at ~1/ω of the cost.
    val_a, val_b = _pair_windows(validation_pairs, window, len(values), stride=window)
    used = np.unique(np.concatenate([windows_a.ravel(), windows_b.ravel()]))
    log.info("expression transformer: %d training windows from %d pairs (%d frames), %d validation windows",
             len(windows_a), len(pairs), len(used), len(val_a))
    windows_a_t, windows_b_t = torch.from_numpy(windows_a), torch.from_numpy(windows_b)
    val_a_t, val_b_t = torch.from_numpy(val_a), torch.from_numpy(val_b)

    # Dropout and initialisation draw from the global RNG; a forked one keeps the run reproducible and the
    # caller's RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)
        model = ExpressionTransformer(values.shape[1], **options)
        model.set_normalisation(values[used].mean(0), values[used].std(0))
        optimiser = torch.optim.Adam(model.parameters(), lr=training.learning_rate,
                                     weight_decay=training.weight_decay)
        generator = torch.Generator().manual_seed(training.seed)
        history: list[dict[str, float]] = []
        step = 0
        if state is not None:
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"training state version {state.get('version')} is not {STATE_VERSION}")
            if _resumable(state["training"]) != _resumable(dataclasses.asdict(training)) \
                    or state["model_options"] != options:
                raise ValueError("training state was saved with other settings; resume with the same ones")
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            history, step = copy.deepcopy(state["history"]), state["step"]
            log.info("expression transformer: resuming at step %d of %d", step, training.steps)
        elif len(val_a):
            history.append({"step": 0, **_validation_losses(model, values, val_a_t, val_b_t)})

        def snapshot() -> dict[str, Any]:
            return {"version": STATE_VERSION, "step": step, "training": dataclasses.asdict(training),
                    "model_options": options, "model": copy.deepcopy(model.state_dict()),
                    "optimiser": copy.deepcopy(optimiser.state_dict()), "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(), "history": copy.deepcopy(history)}

        model.train()
        started, recent = time.perf_counter(), []
        while step < training.steps:
            step += 1
            chosen = torch.randint(len(windows_a_t), (training.batch_size,), generator=generator)
            swap = torch.rand(training.batch_size, generator=generator) < training.swap_probability
            loss = pair_loss(model, values[windows_a_t[chosen]], values[windows_b_t[chosen]], swap)
            optimiser.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"expression transformer loss {loss.item()} at step {step}")
            loss.backward()
            optimiser.step()
            row = {"step": step, "loss": loss.item()}
            history.append(row)
            recent.append(row["loss"])
            if step % training.log_every == 0 or step == training.steps:
                if len(val_a):
                    row.update(_validation_losses(model, values, val_a_t, val_b_t))
                rate = len(recent) / max(time.perf_counter() - started, 1e-9)
                log.info("expression transformer step %d/%d: loss %.4f%s (%.1f steps/s)", step, training.steps,
                         np.mean(recent), "".join(f", {k} {v:.4f}" for k, v in row.items() if k.startswith("val")),
                         rate)
                if log_metric is not None:
                    log_metric("expression_loss", float(np.mean(recent)), step)
                    for name in ("val_loss", "val_swapped_loss"):
                        if name in row:
                            log_metric(f"expression_{name}", row[name], step)
                started, recent = time.perf_counter(), []
            if on_checkpoint is not None and (step == training.steps or (
                    training.checkpoint_every and step % training.checkpoint_every == 0)):
                on_checkpoint(snapshot())
    return model.cpu().eval(), history
