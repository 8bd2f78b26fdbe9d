"""A SyncNet-style lip-sync expert trained on the corpus.

Inputs, as Wav2Lip's expert and syncnet_python's SyncNet: a window of 5 video
frames (0.2 s at 25 fps) of the mouth region and the audio of the same 0.2 s
(20 log-mel frames at 100 Hz). Frame i of a video covers [i/25, (i+1)/25) s,
so the window starting at frame i pairs with mel frames 4i .. 4i+19.

The mouth crop is a similarity warp of the frame: centred on the lips (68
points 48-67), rotated to the eye line, sized from the outer eye-corner
distance (rigid, so the crop does not shrink when the lips spread), and
smoothed over a few frames. It is done with ``grid_sample``, so a rendered
image can be cropped differentiably: the frozen expert serves as S3D-NeRF's
lip-sync discriminator through ``sync_loss``.

The two encoders end in ReLU and L2 normalisation (unit vectors in the
positive orthant, as Wav2Lip's expert), so the Euclidean distance used by the
LSE scores is sqrt(2 - 2 cos). Training is contrastive (InfoNCE): a step
takes a few stretches of 35 frames from the training recordings; each video
window is contrasted with every audio window of its stretch (shifts of 3 to
30 frames; shifts of 1-2 frames are left out) and of the other stretches
(other clips).

The recordings are ``datasets.segment_table``'s segments: training stretches
come from ``TRAIN`` segments, validation stretches and scores from the
held-out ones; no stretch, normaliser or score reads a ``TEST`` or
``NO_FACE`` segment (``loader_frames`` lists the frames each role reads).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from talkhead_models.config import Device, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from talkhead_models.data import DataConfig
from talkhead_models.data.processed import FPS, SAMPLE_RATE
from talkhead_models.media import read_audio
from talkhead_models.metrics.base import substitute
from talkhead_models.preprocess.frames import read_frames
from talkhead_models.pretrained.datasets import HELDOUT, TRAIN, USED, IdentityLandmarks, SplitConfig
from talkhead_models.pretrained.lse import SyncScore, sync_score

log = logging.getLogger(__name__)

WINDOW_FRAMES = 5
MEL_RATE = 100
MEL_PER_FRAME = int(MEL_RATE / FPS)  # 4
MEL_WINDOW = WINDOW_FRAMES * MEL_PER_FRAME  # 20
MARGIN_FRACTION = 1 / 12  # stored crops are this much larger on each side, for translation jitter

MetricLogger = Callable[[str, float, int], None]
LOG_EVERY = 10  # steps per logged training-loss point (the mean over them); every step goes to curves.csv


@dataclass(frozen=True)
class SyncExpertConfig:
    """The sync expert's inputs, network and training (params.yaml ``pretrain_sync``)."""

    data: DataConfig = field(default_factory=DataConfig)
    """The shared data section (which identities to read)."""
    pretrain: SplitConfig = field(default_factory=SplitConfig)
    """The shared held-out split of the corpus-level models."""
    crop_height: PositiveInt = 48
    """Mouth crop height in pixels (Wav2Lip's expert: the lower half of a 96 px face)."""
    crop_width: PositiveInt = 96
    """Mouth crop width in pixels."""
    crop_scale: PositiveFloat = 1.0
    """Crop width as a multiple of the outer eye-corner distance."""
    smooth_frames: PositiveInt = 5
    """Moving-average length (frames) of the crop centre, angle and size within a recording."""
    n_mels: PositiveInt = 80
    """Log-mel bands at 100 Hz of the audio branch."""
    channels: tuple[PositiveInt, ...] = (32, 64, 128, 256)
    """Channels of the video encoder's stride-2 stages (the audio encoder uses half)."""
    embedding_dim: PositiveInt = 256
    """Size of the embeddings."""
    steps: PositiveInt = 6000
    """Training steps (Adam)."""
    spans: PositiveInt = 8
    """Stretches of recordings per step; each gives its in-sync pairs and its own shifted negatives."""
    anchors_per_span: PositiveInt = 8
    """Video windows per stretch (a step embeds spans x anchors video windows)."""
    min_negative_offset: PositiveInt = 3
    """Smallest shift (frames) counted as out of sync; nearer shifts are left out of the contrast."""
    max_negative_offset: PositiveInt = 15
    """A stretch holds the audio windows of shifts up to this many frames around its middle (syncnet_python's
    search range), so it is 2 x this + 5 frames long."""
    temperature: PositiveFloat = 0.07
    """InfoNCE temperature on the cosine similarity."""
    learning_rate: NonNegativeFloat = 1e-3
    """Adam learning rate (cosine decay to 5% over the steps)."""
    eval_every: PositiveInt = 500
    """Steps between validation passes (held-out windows' InfoNCE accuracy)."""
    seed: NonNegativeInt = 0
    """Seed of the initialisation and the sampling."""
    device: Device = "auto"
    """auto (CUDA when available), cuda or cpu."""
    threads: NonNegativeInt = 0
    """torch CPU threads (0 = torch's default)."""


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def log_mel(audio: np.ndarray, n_mels: int = 80, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[T, n_mels] log-mel at 100 Hz; frame j is centred at j / 100 s, T = len(audio) // (sample_rate / 100)."""
    import librosa

    hop = sample_rate // MEL_RATE
    mel = librosa.feature.melspectrogram(y=np.asarray(audio, np.float32), sr=sample_rate, n_fft=512,
                                         win_length=int(0.025 * sample_rate), hop_length=hop, n_mels=n_mels,
                                         fmin=55, fmax=min(7600, sample_rate // 2))
    frames = len(audio) // hop
    return np.log(mel[:, :frames].T + 1e-5).astype(np.float32)


def mouth_boxes(lms68_xy: np.ndarray, segments: Sequence[tuple[int, int]], crop_scale: float = 1.0,
                smooth_frames: int = 5) -> np.ndarray:
    """[N, 4] crop centre x, y, angle (rad, of the eye line) and half width, in pixels, per frame.

    ``segments`` are the (start, stop) frame ranges of the recordings: the
    moving average never mixes two recordings.
    """
    from scipy.ndimage import uniform_filter1d

    points = np.asarray(lms68_xy, np.float64)[..., :2]
    centre = points[:, 48:68].mean(axis=1)
    eye_line = points[:, 45] - points[:, 36]
    half_width = 0.5 * crop_scale * np.linalg.norm(eye_line, axis=1)
    direction = eye_line / np.maximum(np.linalg.norm(eye_line, axis=1, keepdims=True), 1e-6)
    raw = np.concatenate([centre, direction, half_width[:, None]], axis=1)
    smoothed = np.empty_like(raw)
    for start, stop in segments:
        smoothed[start:stop] = uniform_filter1d(raw[start:stop], size=max(1, smooth_frames), axis=0, mode="nearest")
    angle = np.arctan2(smoothed[:, 3], smoothed[:, 2])
    return np.stack([smoothed[:, 0], smoothed[:, 1], angle, smoothed[:, 4]], axis=1).astype(np.float32)


def mouth_affines(boxes: Tensor, image_height: int, image_width: int, aspect: float, width_scale: float = 1.0,
                  height_scale: float = 1.0) -> Tensor:
    """[B, 2, 3] ``affine_grid`` matrices mapping a crop (height/width = ``aspect``, each side enlarged by its
    scale) into the image."""
    cx, cy, angle, half_width = boxes.unbind(-1)
    half_height = half_width * aspect * height_scale
    half_width = half_width * width_scale
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = 2.0 / image_width, 2.0 / image_height
    row_x = torch.stack([sx * cos * half_width, -sx * sin * half_height, sx * cx - 1], dim=-1)
    row_y = torch.stack([sy * sin * half_width, sy * cos * half_height, sy * cy - 1], dim=-1)
    return torch.stack([row_x, row_y], dim=-2)


def crop_mouths(images: Tensor, boxes: Tensor, height: int, width: int, margin: bool = False) -> Tensor:
    """Grey mouth crops [B, h, w] (values as the images', differentiable) from RGB images [B, 3, H, W].

    With ``margin`` the crop is larger by about ``MARGIN_FRACTION`` of its
    size on each side, at the same pixel scale, so a random ``height x width``
    window of it is a jittered crop and its centre is the plain crop.
    """
    out_h, out_w = (_with_margin(height), _with_margin(width)) if margin else (height, width)
    theta = mouth_affines(boxes.to(images.dtype), images.shape[-2], images.shape[-1], height / width,
                          width_scale=out_w / width, height_scale=out_h / height)
    grid = F.affine_grid(theta, [images.shape[0], 1, out_h, out_w], align_corners=False)
    grey = (images * images.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(dim=1, keepdim=True)
    return F.grid_sample(grey, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]


def _with_margin(size: int) -> int:
    return size + 2 * round(size * MARGIN_FRACTION)


def video_windows(mouths: Tensor, starts: Tensor) -> Tensor:
    """[B, 5, h, w] windows of consecutive crops starting at ``starts`` from [F, h, w]."""
    return mouths[starts[:, None] + torch.arange(WINDOW_FRAMES, device=starts.device)]


def audio_windows(mel: Tensor, frame_starts: Tensor) -> Tensor:
    """[B, n_mels, 20] mel windows of the video windows starting at ``frame_starts`` from [T, n_mels]."""
    index = MEL_PER_FRAME * frame_starts[:, None] + torch.arange(MEL_WINDOW, device=frame_starts.device)
    return mel[index].transpose(1, 2)


# ---------------------------------------------------------------------------------------------------------------
# Network


def _conv_block(in_channels: int, out_channels: int, stride: int | tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class SyncExpert(nn.Module):
    """Mouth-window and audio-window encoders into a shared embedding space.

    Inputs are raw: grey crops (any range; each window is standardised) and
    log-mel windows (standardised with the training set's statistics, kept as
    buffers so a checkpoint is self-contained).
    """

    def __init__(self, crop_height: int = 48, crop_width: int = 96, n_mels: int = 80,
                 channels: Sequence[int] = (32, 64, 128, 256), embedding_dim: int = 256) -> None:
        super().__init__()
        self.crop_height, self.crop_width, self.n_mels = crop_height, crop_width, n_mels
        # Video [5, h, w]: one full-resolution block, then stride-2 stages (48 x 96 -> 3 x 6).
        video_blocks = [_conv_block(WINDOW_FRAMES, channels[0], 1)]
        video_blocks += [_conv_block(a, b, 2) for a, b in zip((channels[0], *channels[:-1]), channels)]
        # Audio [1, n_mels, 20]: halve frequency first, then both axes (80 x 20 -> 5 x 5).
        audio_channels = [max(8, c // 2) for c in channels]
        strides = [(2, 1) if i < 2 else 2 for i in range(len(channels))]
        audio_blocks = [_conv_block(1, audio_channels[0], 1)]
        audio_blocks += [_conv_block(a, b, s) for a, b, s in
                         zip((audio_channels[0], *audio_channels[:-1]), audio_channels, strides)]
        self.video = nn.Sequential(*video_blocks, nn.Flatten())
        self.audio = nn.Sequential(*audio_blocks, nn.Flatten())
        with torch.no_grad():  # the flattened sizes follow from the input sizes
            video_size = self.video(torch.zeros(1, WINDOW_FRAMES, crop_height, crop_width)).shape[1]
            audio_size = self.audio(torch.zeros(1, 1, n_mels, MEL_WINDOW)).shape[1]
        self.video_head = nn.Linear(video_size, embedding_dim)
        self.audio_head = nn.Linear(audio_size, embedding_dim)
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))

    def embed_video(self, windows: Tensor) -> Tensor:
        """[B, 5, h, w] grey mouth windows -> [B, E] unit embeddings."""
        mean = windows.mean(dim=(1, 2, 3), keepdim=True)
        std = windows.std(dim=(1, 2, 3), keepdim=True)
        return F.normalize(F.relu(self.video_head(self.video((windows - mean) / (std + 1e-3)))), dim=-1, eps=1e-6)

    def embed_audio(self, mel_windows: Tensor) -> Tensor:
        """[B, n_mels, 20] log-mel windows -> [B, E] unit embeddings."""
        normalised = (mel_windows - self.mel_mean[:, None]) / self.mel_std[:, None]
        return F.normalize(F.relu(self.audio_head(self.audio(normalised[:, None]))), dim=-1, eps=1e-6)

    def forward(self, windows: Tensor, mel_windows: Tensor) -> Tensor:
        """Cosine similarity in [0, 1] of matching video and audio windows (Wav2Lip's sync probability)."""
        return (self.embed_video(windows) * self.embed_audio(mel_windows)).sum(-1)


def sync_loss(expert: SyncExpert, windows: Tensor, mel_windows: Tensor) -> Tensor:
    """Wav2Lip's expert sync loss for a generator: BCE of the sync probability against "in sync"."""
    probability = expert(windows, mel_windows).clamp(1e-6, 1 - 1e-6)
    return -torch.log(probability).mean()


def frozen(expert: SyncExpert) -> SyncExpert:
    """The expert in eval mode with gradients off: a fixed discriminator for another model's training."""
    expert.eval()
    for parameter in expert.parameters():
        parameter.requires_grad_(False)
    return expert


def embed_clip(expert: SyncExpert, mouths: Tensor, mel: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Video and audio embeddings of a recording, window by window, as syncnet_python evaluates.

    ``mouths`` [n, h, w] crops and ``mel`` [>= 4 m, n_mels] of the audio; with
    m = min(n, mel frames // 4) (syncnet_python's min_length), the windows
    start at frames 0 .. m - 6 (its ``lastframe = min_length - 5``).
    """
    length = min(len(mouths), len(mel) // MEL_PER_FRAME)
    starts = torch.arange(max(0, length - WINDOW_FRAMES), device=mouths.device)
    video, audio = [], []
    with torch.no_grad():
        for chunk in starts.split(batch_size):
            video.append(expert.embed_video(video_windows(mouths, chunk).float()))
            audio.append(expert.embed_audio(audio_windows(mel, chunk)))
    if not video:
        raise ValueError(f"a recording of {length} frames is too short for a {WINDOW_FRAMES}-frame window")
    return torch.cat(video), torch.cat(audio)


# ---------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class SyncData:
    """Every identity's mouth crops and log-mel, concatenated, with the recording table."""

    mouths: Tensor  # [F, h + margin, w + margin] uint8 grey crops
    mel: Tensor  # [4 F, n_mels] log-mel, frame i <-> rows 4i .. 4i+3
    segments: pd.DataFrame  # datasets.segment_table rows: identity, clip, emotion, split, start, stop, ...


def sync_data(identities: Sequence[IdentityLandmarks], segments: pd.DataFrame, cfg: SyncExpertConfig,
              batch_size: int = 64) -> SyncData:
    """Crop every frame's mouth and compute every identity's log-mel."""
    mouths, mels = [], []
    for data in identities:
        rows = segments[segments.identity == data.identity]
        offset = int(rows.start.min())
        boxes = mouth_boxes(data.image, [(r.start - offset, r.stop - offset) for r in rows.itertuples()],
                            cfg.crop_scale, cfg.smooth_frames)
        count = len(data.image)
        crops = []
        batch: list[np.ndarray] = []
        for index, frame in enumerate(tqdm(read_frames(data.processed.frames("frames"), range(count)), total=count,
                                           desc=f"mouths {data.identity}", unit="frame", leave=False)):
            batch.append(frame)
            if len(batch) == batch_size or index == count - 1:
                images = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float()
                box = torch.from_numpy(boxes[index + 1 - len(batch): index + 1])
                crop = crop_mouths(images, box, cfg.crop_height, cfg.crop_width, margin=True)
                crops.append(crop.round().clamp(0, 255).to(torch.uint8))
                batch = []
        mouths.append(torch.cat(crops))
        audio = read_audio(data.processed.path("audio"), SAMPLE_RATE)
        mel = log_mel(audio, cfg.n_mels)
        needed = MEL_PER_FRAME * len(data.image)
        if len(mel) < needed:
            log.warning("%s: audio is %.2f s shorter than the %d frames; padded with its last frame",
                        data.processed.path("audio"), (needed - len(mel)) / MEL_RATE, len(data.image))
            mel = np.concatenate([mel, np.repeat(mel[-1:], needed - len(mel), axis=0)])
        mels.append(torch.from_numpy(mel[:needed]))
    return SyncData(torch.cat(mouths), torch.cat(mels), segments.reset_index(drop=True))


def centre_crop(mouths: Tensor, height: int, width: int) -> Tensor:
    """The plain crop inside stored crops with margin."""
    top = (mouths.shape[-2] - height) // 2
    left = (mouths.shape[-1] - width) // 2
    return mouths[..., top:top + height, left:left + width]


def _span_starts(segments: pd.DataFrame, span_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """First frame and number of possible stretch starts of every recording at least ``span_frames`` long."""
    room = (segments.stop - segments.start - span_frames + 1).to_numpy()
    usable = room > 0
    return segments.start.to_numpy()[usable], room[usable]


def _sample_spans(first: np.ndarray, room: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` stretch starts, recordings drawn in proportion to their length."""
    pick = rng.choice(len(first), size=count, p=room / room.sum())
    return first[pick] + rng.integers(0, room[pick])


# ---------------------------------------------------------------------------------------------------------------
# Training


def cosine_schedule(optimiser: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay of the learning rate to 5% of its start over ``steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` torch CPU threads (0 leaves torch's setting), restoring the previous count after."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device: cpu or auto")
    return torch.device(device)


@dataclass
class TrainedExpert:
    expert: SyncExpert
    history: list[dict[str, float]]  # one row per logged step
    validation: list[dict[str, float]]  # one row per validation pass
    seconds: float  # wall clock
    cpu_seconds: float  # process CPU time (all threads); wall clock on a busy machine says little


def loader_frames(segments: pd.DataFrame, cfg: SyncExpertConfig) -> dict[str, np.ndarray]:
    """Global frame indices that training (stretches, the log-mel normaliser) and validation (stretches, the scored
    clips and the other recordings whose audio they are scored with) can read, from the same selections."""
    span = _span_frames(cfg)

    def spans(rows: pd.DataFrame) -> list[np.ndarray]:
        first, room = _span_starts(rows, span)
        return [np.arange(a, a + n + span - 1) for a, n in zip(first, room)]

    train_rows = segments[segments.split == TRAIN]
    train = spans(train_rows) + [np.arange(a, b) for a, b in zip(train_rows.start, train_rows.stop)]
    validation = spans(segments[segments.split.isin(HELDOUT)])
    for row, other in _scored_clips(segments, HELDOUT):
        validation.append(np.arange(row.start, row.stop))
        if other is not None:
            start = int(other["start"])
            validation.append(np.arange(start, min(int(other["stop"]), start + row.stop - row.start)))
    return {role: np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
            for role, parts in (("train", train), ("validation", validation))}


def train_sync_expert(cfg: SyncExpertConfig, data: SyncData, log_metric: MetricLogger | None = None) -> TrainedExpert:
    """Contrastive training on the training recordings; validation on the held-out ones."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_rows = data.segments[data.segments.split == TRAIN]
    span_frames = _span_frames(cfg)
    first, room = _span_starts(train_rows, span_frames)
    if len(first) == 0:
        raise ValueError(f"no training recording is {span_frames} frames long; lower "
                         "pretrain_sync.max_negative_offset")
    if len(first) < len(train_rows):
        log.warning("%d training recordings shorter than %d frames are left out", len(train_rows) - len(first),
                    span_frames)
    train_frames = np.concatenate([np.arange(MEL_PER_FRAME * r.start, MEL_PER_FRAME * r.stop)
                                   for r in train_rows.itertuples()])
    expert = SyncExpert(cfg.crop_height, cfg.crop_width, cfg.n_mels, tuple(cfg.channels), cfg.embedding_dim)
    expert.mel_mean.copy_(data.mel[train_frames].mean(0))
    expert.mel_std.copy_(data.mel[train_frames].std(0).clamp_min(1e-3))
    expert.to(device)
    mouths, mel = data.mouths.to(device), data.mel.to(device)
    optimiser = torch.optim.Adam(expert.parameters(), lr=cfg.learning_rate)
    schedule = cosine_schedule(optimiser, cfg.steps)
    margin_h = mouths.shape[-2] - cfg.crop_height
    margin_w = mouths.shape[-1] - cfg.crop_width
    history, validation = [], []
    started, cpu_started = time.perf_counter(), time.process_time()
    progress = tqdm(range(1, cfg.steps + 1), desc="sync expert", unit="step")
    for step in progress:
        expert.train()
        spans = _sample_spans(first, room, cfg.spans, rng)
        top, left = int(rng.integers(margin_h + 1)), int(rng.integers(margin_w + 1))
        loss, accuracy = _span_contrast(expert, mouths[..., top:top + cfg.crop_height, left:left + cfg.crop_width],
                                        mel, spans, cfg, rng)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        row = {"step": step, "loss": loss.item(), "accuracy": accuracy.item(), "lr": schedule.get_last_lr()[0]}
        history.append(row)
        if log_metric is not None and step % LOG_EVERY == 0:
            log_metric("sync_train_loss", float(np.mean([r["loss"] for r in history[-LOG_EVERY:]])), step)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            scores = evaluate_windows(expert, data, cfg, rng)
            validation.append({"step": step, **scores})
            progress.set_postfix(loss=f"{row['loss']:.3f}", val_acc=f"{scores['val_accuracy']:.3f}")
            if log_metric is not None:
                for name, value in scores.items():
                    log_metric(f"sync_{name}", value, step)
    return TrainedExpert(expert.cpu().eval(), history, validation, time.perf_counter() - started,
                         time.process_time() - cpu_started)


def _span_frames(cfg: SyncExpertConfig) -> int:
    return 2 * cfg.max_negative_offset + WINDOW_FRAMES


def _span_contrast(expert: SyncExpert, mouths: Tensor, mel: Tensor, spans: np.ndarray, cfg: SyncExpertConfig,
                   rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """InfoNCE of video windows against every audio window of all stretches; accuracy of the in-sync one first.

    Stretch s holds the audio windows starting at its frames 0 .. 2 max_offset;
    a video window at position p of the stretch is in sync with audio window p.
    The other windows of its own stretch (shifts of 3 .. 30 frames) and of the
    other stretches are its negatives; shifts of 1-2 frames, nearly in sync
    at 25 fps, are left out.
    """
    device = mouths.device
    windows = 2 * cfg.max_negative_offset + 1
    anchors = min(cfg.anchors_per_span, windows)
    positions = torch.from_numpy(np.argsort(rng.random((len(spans), windows)), axis=1)[:, :anchors]).to(device)
    span_first = torch.from_numpy(spans).to(device)
    video = expert.embed_video(video_windows(mouths, (span_first[:, None] + positions).flatten()).float())
    audio = expert.embed_audio(audio_windows(mel, (span_first[:, None] + torch.arange(windows, device=device))
                                             .flatten()))
    logits = video @ audio.T / cfg.temperature  # [spans x anchors, spans x windows]
    span_index = torch.arange(len(spans), device=device)
    target = (span_index[:, None] * windows + positions).flatten()
    shift = positions.flatten()[:, None] - torch.arange(windows, device=device)[None]  # [S*A, windows]
    near = (shift.abs() > 0) & (shift.abs() < cfg.min_negative_offset)
    same_span = span_index.repeat_interleave(anchors)[:, None] == span_index[None]  # [S*A, S]
    excluded = same_span[:, :, None] & near[:, None, :]
    logits = logits.masked_fill(excluded.flatten(1), float("-inf"))
    loss = F.cross_entropy(logits, target)
    accuracy = (logits.argmax(dim=1) == target).float().mean()
    return loss, accuracy


def evaluate_windows(expert: SyncExpert, data: SyncData, cfg: SyncExpertConfig, rng: np.random.Generator,
                     passes: int = 8) -> dict[str, float]:
    """Held-out contrastive loss and accuracy (the in-sync audio ranked first) on random held-out stretches."""
    expert.eval()
    device = next(expert.parameters()).device
    mouths = centre_crop(data.mouths, cfg.crop_height, cfg.crop_width).to(device)
    mel = data.mel.to(device)
    scores = {}
    for split in HELDOUT:
        first, room = _span_starts(data.segments[data.segments.split == split], _span_frames(cfg))
        if len(first) == 0:
            continue
        with torch.no_grad():
            results = [_span_contrast(expert, mouths, mel, _sample_spans(first, room, cfg.spans, rng), cfg, rng)
                       for _ in range(passes)]
        scores[f"val_loss_{split}"] = float(np.mean([loss.item() for loss, _ in results]))
        scores[f"val_accuracy_{split}"] = float(np.mean([accuracy.item() for _, accuracy in results]))
    scores["val_accuracy"] = float(np.mean([v for k, v in scores.items() if k.startswith("val_accuracy_")]))
    return scores


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def model_config(cfg: SyncExpertConfig) -> dict:
    """What rebuilds the network and its inputs (stored beside the weights)."""
    return {"crop_height": cfg.crop_height, "crop_width": cfg.crop_width, "crop_scale": cfg.crop_scale,
            "smooth_frames": cfg.smooth_frames, "n_mels": cfg.n_mels, "channels": list(cfg.channels),
            "embedding_dim": cfg.embedding_dim}


def save_expert(expert: SyncExpert, cfg: SyncExpertConfig, path: Path) -> None:
    torch.save({"state_dict": expert.state_dict(), "config": model_config(cfg)}, path)


def load_expert(path: Path, device: str = "cpu") -> tuple[SyncExpert, dict]:
    """The expert from ``model.pt`` (loaded with ``weights_only=True``) in eval mode, and its input config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sync expert checkpoint not found; run `dvc repro pretrain_sync`")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    config = checkpoint["config"]
    expert = SyncExpert(config["crop_height"], config["crop_width"], config["n_mels"], tuple(config["channels"]),
                        config["embedding_dim"])
    expert.load_state_dict(checkpoint["state_dict"])
    return expert.to(device).eval(), config


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


def _scored_clips(segments: pd.DataFrame, splits: Sequence[str]) -> list[tuple[Any, Any]]:
    """(segment, other) per MEAD-like clip of ``splits``: ``other`` is the recording whose audio it is also scored
    with, its identity's next non-test clip of another sentence (else the first, else a non-test part of its long
    video), or None. Never a test segment, nor one without a face (only the ``USED`` splits)."""
    usable = segments[segments.split.isin(USED)].reset_index(drop=True)
    clips = usable[usable.kind == "clip"]
    pairs = []
    for row in clips[clips.split.isin(splits)].itertuples():
        others = clips[(clips.identity == row.identity) & (clips.sentence != row.sentence)]
        after = others[others.index > row.Index]
        videos = usable[(usable.identity == row.identity) & (usable.kind != "clip")]
        candidates = [after, others, videos]
        other = next((c.iloc[0] for c in candidates if len(c)), None)
        pairs.append((row, other))
    return pairs


def score_recordings(expert: SyncExpert, data: SyncData, cfg: SyncExpertConfig,
                     splits: Sequence[str] = HELDOUT) -> pd.DataFrame:
    """syncnet_python's scores of every MEAD-like clip of ``splits``, with its own audio and with the audio of
    another recording of the same identity (``_scored_clips``: another sentence's clip, else its long video;
    the other audio is read for the clip's length)."""
    device = next(expert.parameters()).device
    mouths = centre_crop(data.mouths, cfg.crop_height, cfg.crop_width)
    results = []
    for row, other in _scored_clips(data.segments, splits):
        crops = mouths[row.start:row.stop].to(device)
        own = score_pair(expert, crops, data.mel[MEL_PER_FRAME * row.start:MEL_PER_FRAME * row.stop].to(device))
        result = {"identity": row.identity, "clip": row.clip, "emotion": row.emotion, "split": row.split,
                  "frames": row.stop - row.start, "offset": own.offset, "lse_d": own.distance,
                  "lse_c": own.confidence}
        if other is not None:
            start = int(other["start"])
            stop = min(int(other["stop"]), start + row.stop - row.start)
            mel = data.mel[MEL_PER_FRAME * start:MEL_PER_FRAME * stop].to(device)
            shuffled = score_pair(expert, crops, mel)
            result.update(other_clip=other["clip"], other_offset=shuffled.offset, other_lse_d=shuffled.distance,
                          other_lse_c=shuffled.confidence)
        results.append(result)
    return pd.DataFrame(results)


def score_pair(expert: SyncExpert, mouths: Tensor, mel: Tensor) -> SyncScore:
    """syncnet_python's scores of one video (its mouth crops) against one audio (its log-mel)."""
    video, audio = embed_clip(expert, mouths, mel)
    return sync_score(video, audio)


EXPERT_REFERENCE = substitute("the project's sync expert trained on the corpus (SyncNet weights absent)")


class ExpertScorer:
    """Lip-sync scores (syncnet_python's procedure) with the corpus-trained sync expert."""

    reference = EXPERT_REFERENCE

    def __init__(self, expert: SyncExpert, config: dict) -> None:
        self.expert, self.config = expert.eval(), config

    def mouths(self, frames: np.ndarray, lms68: np.ndarray) -> Tensor:
        """[n, h, w] grey mouth crops (0-255) of one recording's RGB frames [n, H, W, 3] and 68 landmarks."""
        boxes = mouth_boxes(lms68, [(0, len(frames))], self.config["crop_scale"], self.config["smooth_frames"])
        images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        return crop_mouths(images, torch.from_numpy(boxes), self.config["crop_height"], self.config["crop_width"])

    def score(self, frames_or_mouths: tuple[np.ndarray, np.ndarray] | np.ndarray | Tensor,
              audio: np.ndarray) -> SyncScore:
        """``frames_or_mouths``: (RGB frames [n, H, W, 3], 68 landmarks [n, 68, >= 2]) or mouth crops [n, h, w]
        (0-255 grey); ``audio``: the 16 kHz waveform of the same span."""
        if isinstance(frames_or_mouths, tuple):
            mouths = self.mouths(*frames_or_mouths)
        else:
            mouths = torch.as_tensor(np.asarray(frames_or_mouths, np.float32))
        device = next(self.expert.parameters()).device
        mel = torch.from_numpy(log_mel(audio, self.config["n_mels"]))
        return score_pair(self.expert, mouths.to(device), mel.to(device))
