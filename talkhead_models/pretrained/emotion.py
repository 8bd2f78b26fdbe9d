"""Per-frame emotion features for JEAN's expression transformer.

JEAN feeds its expression transformer the 2048-d features of EMOCA's
emotion-recognition ResNet-50 for every frame. Two sources, in this order:

1. **EMOCA** (the paper's features), when the local weights folder
   (``$TALKHEAD_WEIGHTS``, default ``./weights``; docs/WEIGHTS.md) holds
   ``emoca_resnet50_emotion.pt`` (``EmotionConfig.weights_file``). The file is
   a **TorchScript** module (``torch.jit.save``), not a state dict: EMOCA's
   emotion network is a torchvision-style ResNet-50 inside its own Lightning
   module, so the file carries its own code. Contract:

   * input: ``[B, 3, 224, 224]`` float RGB in [0, 1], a face crop per frame
     (``emoca_boxes``: DECA/EMOCA's landmark crop, an axis-aligned square of
     side 1.25 x 1.1 x the mean side of the 68 landmarks' bounding box, centred
     on the box); any normalisation (ImageNet mean/std) is inside the module;
   * output: ``[B, 2048]`` (or ``[B, 2048, 1, 1]``), the backbone's globally
     pooled features, before any emotion head.

   How to make it (a machine with EMOCA installed, github.com/radekd91/emoca):
   load the image-based emotion recogniser ``ResNet50`` of EMOCA's
   ``assets/EmotionRecognition/image_based_networks`` with
   ``gdl_apps.EmotionRecognition.utils.io.load_model``, wrap
   ``model.backbone`` (torchvision ResNet-50 whose ``fc`` is the identity)
   with the normalisation EMOCA applies before it in a ``nn.Module`` whose
   ``forward(images)`` returns the 2048-d features, and save
   ``torch.jit.trace(wrapper.eval(), torch.rand(1, 3, 224, 224))`` as
   ``weights/emoca_resnet50_emotion.pt``. A file that does not load as
   TorchScript, or does not map a 224 x 224 crop to 2048 values, is an error
   naming it (``WeightsError``), never silently replaced by the substitute.

2. **Substitute** (the normal case here): a small emotion-recognition CNN
   trained on the corpus's own labels (the ``emotion`` column of each
   identity's clip table; the long "video" recordings are neutral), and its
   penultimate activations (``feature_dim`` = 256, not 2048) as the features.
   Input: a grey 64 x 64 face crop per frame, a similarity warp of the frame
   (``face_boxes``: centred halfway between the eyes' centre and the outer
   lips' centre, rotated to the eye line, side = 1.8 x the outer eye-corner
   distance, smoothed over 3 frames within a recording), each crop
   standardised. Network (``EmotionNet``): four stride-2 3x3 conv blocks
   (BatchNorm, ReLU; 64 -> 4 px), global average pooling, a fully connected
   layer of ``feature_dim`` with ReLU (the features), dropout and a linear
   classifier over the emotions. Adam, cosine decay, class-balanced batches,
   translation jitter and horizontal flips. It is trained on ``TRAIN`` frames
   and validated on the held-out ones (``datasets.HELDOUT``); ``TEST`` and
   ``NO_FACE`` frames are never read for either (``loader_frames``; labels of
   those frames are not even kept).

After training (or with EMOCA), features are extracted for **every** frame of
every identity, test frames included: that is inference on a driving input,
not training. Frames without a face get NaN rows. The stage
(``stages/pretrain_emotion.py``) writes them as
``data/models/emotion/features/<ID>.npy`` ([N, D] float32, memory-mappable);
``load_emotion_features`` reads them with their source label.

Held-out scores: frame accuracy per held-out split, balanced accuracy (mean
per-emotion recall), a per-emotion confusion matrix, per-clip majority votes,
and ``pair_accuracy``: for held-out clips of the same identity and sentence in
two emotions (JEAN's training pairs), how often each clip's mean feature is
nearer (cosine) to its own emotion's training centroid than to the other
clip's emotion's -- whether the features separate the emotions of one
sentence. The nearest-centroid scores need no classifier, so they exist for
EMOCA's features as well.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from tqdm import tqdm

from talkhead_models.config import Device, Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from talkhead_models.data import DataConfig
from talkhead_models.metrics.base import WeightsError, substitute
from talkhead_models.preprocess.frames import read_frames
from talkhead_models.pretrained.datasets import (
    HELDOUT, TRAIN, USED, IdentityLandmarks, SplitConfig, split_frames,
)
from talkhead_models.pretrained.sync_expert import cosine_schedule, mouth_affines, resolve_device

log = logging.getLogger(__name__)

EMOTION_SOURCE_SUBSTITUTE = substitute("emotion CNN trained on the corpus labels (not EMOCA)")
"""Source label of features from the corpus-trained substitute network."""
EMOTION_SOURCE_EMOCA = "EMOCA"
"""Source label of features from EMOCA's emotion ResNet-50 (the paper's)."""
EMOCA_FILE = "emoca_resnet50_emotion.pt"
"""EMOCA's emotion network in the weights folder (TorchScript; the module docstring gives the contract)."""
EMOCA_FEATURE_DIM = 2048
"""EMOCA's ResNet-50 pooled features (the paper's 2048-d)."""
EMOCA_IMAGE_SIZE = 224
"""EMOCA's input crop side in pixels."""
EMOCA_CROP_SCALE = 1.25 * 1.1
"""DECA/EMOCA's landmark crop: box side 1.1 x the mean side of the landmarks' bounding box, then scale 1.25."""

FEATURES_DIR = "features"
"""Sub-folder of the model folder holding ``<ID>.npy``."""
FEATURES_INFO = "features.json"
"""Beside ``features/``: source label, feature size and frames per identity."""
MODEL_FILE = "model.pt"
MARGIN_FRACTION = 1 / 12  # stored crops are this much larger on each side, for translation jitter
EYES = slice(36, 48)
OUTER_LIPS = slice(48, 60)
LOG_EVERY = 10  # steps per logged training-loss point

MetricLogger = Callable[[str, float, int], None]


@dataclass(frozen=True)
class EmotionConfig:
    """Per-frame emotion features (params.yaml ``pretrain_emotion``): EMOCA's when its weights are present, else a
    substitute CNN trained on the corpus's emotion labels."""

    data: DataConfig = field(default_factory=DataConfig)
    """The shared data section (which identities to read)."""
    pretrain: SplitConfig = field(default_factory=SplitConfig)
    """The shared held-out split of the corpus-level models."""
    weights_file: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = EMOCA_FILE
    """EMOCA's emotion network (TorchScript) in the weights folder; when present its 2048-d features are used (the
    paper's) and nothing is trained."""
    emoca_feature_dim: PositiveInt = EMOCA_FEATURE_DIM
    """Feature size the EMOCA file must give (the paper's 2048, ResNet-50's pooled features)."""
    crop_size: PositiveInt = 64
    """Substitute: face crop side in pixels (ours; a small CNN's input, where a 2-core CPU can train it)."""
    crop_scale: PositiveFloat = 1.8
    """Substitute: crop side as a multiple of the outer eye-corner distance (ours: brows to chin, little hair)."""
    smooth_frames: PositiveInt = 3
    """Substitute: moving-average length (frames) of the crop centre, angle and size within a recording."""
    grayscale: bool = True
    """Substitute: grey crops (ours: emotion is in the face's shape; colour would mostly tell the identities
    apart, of which only a couple train it)."""
    channels: tuple[PositiveInt, ...] = (32, 64, 128, 256)
    """Substitute: channels of the stride-2 conv blocks (ours; 64 px -> 4 px with four blocks)."""
    feature_dim: PositiveInt = 256
    """Substitute: size of the penultimate layer, the features written (ours; the paper's EMOCA features are 2048-d,
    JEAN's first linear layer maps whatever size comes to 512)."""
    dropout: Fraction = 0.2
    """Substitute: dropout between the features and the classifier (ours)."""
    steps: PositiveInt = 3000
    """Substitute: training steps (ours: about 38 passes over the ~5,000 training frames of the synthetic corpus
    at batch 64; a few minutes on one CPU core)."""
    batch_size: PositiveInt = 64
    """Substitute: frames per step, drawn class-balanced (each emotion equally likely; ours: the long neutral
    recordings would otherwise make up over half of every batch)."""
    learning_rate: PositiveFloat = 2e-3
    """Substitute: Adam learning rate, cosine decay to 5% over the steps (ours)."""
    weight_decay: NonNegativeFloat = 1e-4
    """Substitute: Adam's L2 weight decay (ours)."""
    flip: bool = True
    """Substitute: mirror half of the training crops (ours: emotions are left-right symmetric)."""
    eval_every: PositiveInt = 500
    """Substitute: steps between validation passes during training (the last step always has one)."""
    eval_frames: PositiveInt = 1024
    """Substitute: held-out frames (a fixed random draw) scored at each validation pass during training; the final
    scores use every held-out frame."""
    seed: NonNegativeInt = 0
    """Seed of the initialisation and the sampling."""
    device: Device = "auto"
    """auto (CUDA when available), cuda or cpu."""
    threads: NonNegativeInt = 0
    """torch CPU threads (0 = torch's default)."""
    batch_frames: PositiveInt = 128
    """Frames per batch when cropping and extracting features (memory only; no effect on the results)."""


# ---------------------------------------------------------------------------------------------------------------
# Crops


def _smooth_within(raw: np.ndarray, segments: Sequence[tuple[int, int]], size: int) -> np.ndarray:
    """Moving average of ``raw`` [N, k] over ``size`` frames within each (start, stop) range; rows with a NaN are
    filled from their neighbours (linearly) before and NaN again after; a range without a finite row stays NaN."""
    from scipy.ndimage import uniform_filter1d

    smoothed = np.full_like(raw, np.nan)
    for start, stop in segments:
        part = raw[start:stop]
        finite = np.isfinite(part).all(axis=1)
        if not finite.any():
            continue
        if not finite.all():
            where = np.flatnonzero(finite)
            part = np.stack([np.interp(np.arange(len(part)), where, part[where, k]) for k in range(part.shape[1])], 1)
        out = uniform_filter1d(part, size=max(1, size), axis=0, mode="nearest")
        out[~finite] = np.nan
        smoothed[start:stop] = out
    return smoothed


def face_boxes(lms68_xy: np.ndarray, segments: Sequence[tuple[int, int]], crop_scale: float = 1.8,
               smooth_frames: int = 3) -> np.ndarray:
    """[N, 4] crop centre x, y, angle (rad, of the eye line) and half side, in pixels, per frame (the substitute's
    face crop); NaN rows where the landmarks are not finite.

    Centre: halfway between the mean of the eye points (68-point 36-47) and of the outer lips (48-59); side:
    ``crop_scale`` x the outer eye-corner distance (36-45). ``segments`` are the (start, stop) frame ranges of the
    recordings: the moving average never mixes two recordings.
    """
    points = np.asarray(lms68_xy, np.float64)[..., :2]
    centre = 0.5 * (points[:, EYES].mean(axis=1) + points[:, OUTER_LIPS].mean(axis=1))
    eye_line = points[:, 45] - points[:, 36]
    length = np.linalg.norm(eye_line, axis=1, keepdims=True)
    direction = eye_line / np.maximum(length, 1e-6)
    raw = np.concatenate([centre, direction, 0.5 * crop_scale * length], axis=1)
    smoothed = _smooth_within(raw, segments, smooth_frames)
    angle = np.arctan2(smoothed[:, 3], smoothed[:, 2])
    return np.stack([smoothed[:, 0], smoothed[:, 1], angle, smoothed[:, 4]], axis=1).astype(np.float32)


def emoca_boxes(lms68_xy: np.ndarray) -> np.ndarray:
    """[N, 4] EMOCA's crop per frame as (centre x, y, angle 0, half side): DECA's ``bbox2point`` for 68 landmarks
    (side 1.1 x the mean of the bounding box's width and height) times EMOCA's scale 1.25, axis-aligned."""
    points = np.asarray(lms68_xy, np.float64)[..., :2]
    low, high = points.min(axis=1), points.max(axis=1)
    centre = 0.5 * (low + high)
    half = 0.5 * EMOCA_CROP_SCALE * 0.5 * ((high - low).sum(axis=1))
    return np.stack([centre[:, 0], centre[:, 1], np.zeros(len(points)), half], axis=1).astype(np.float32)


def crop_faces(images: Tensor, boxes: Tensor, size: int, grayscale: bool = True, margin: int = 0) -> Tensor:
    """Square crops [B, C, size + 2 margin, size + 2 margin] (values as the images') of RGB images [B, 3, H, W].

    ``boxes`` [B, 4] (``face_boxes``/``emoca_boxes``): the crop spans ``2 x half side`` pixels around the centre
    in the image's continuous coordinates (pixel i covers [i, i + 1)); ``margin`` adds that many crop pixels on
    every side at the same scale (a random ``size`` window of it is a translated crop; its middle is the plain one).
    Differentiable (``grid_sample``); ``grayscale`` turns RGB into grey first (C = 1, ITU-R 601 luma), otherwise
    the images' channels are kept (grey images [B, 1, H, W] give grey crops).
    """
    out = size + 2 * margin
    scale = out / size
    theta = mouth_affines(boxes.to(images.dtype), images.shape[-2], images.shape[-1], 1.0, width_scale=scale,
                          height_scale=scale)
    grid = F.affine_grid(theta, [images.shape[0], 1, out, out], align_corners=False)
    if grayscale and images.shape[1] == 3:
        images = (images * images.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(dim=1, keepdim=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def crop_margin(size: int) -> int:
    """Pixels added on each side of a stored crop for translation jitter."""
    return round(size * MARGIN_FRACTION)


# ---------------------------------------------------------------------------------------------------------------
# Network


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class EmotionNet(nn.Module):
    """Stride-2 conv blocks, global average pooling, the ``feature_dim`` features (ReLU), dropout, classifier.

    Input: crops [B, C, h, w] in any range (0-255); each crop is standardised (its mean and standard deviation)
    first, so brightness and contrast say nothing.
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (32, 64, 128, 256), feature_dim: int = 256,
                 classes: int = 4, dropout: float = 0.2) -> None:
        super().__init__()
        widths = (in_channels, *channels)
        self.encoder = nn.Sequential(*[_conv_block(a, b) for a, b in zip(widths[:-1], widths[1:])],
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(channels[-1], feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, classes)

    def features(self, crops: Tensor) -> Tensor:
        """[B, C, h, w] crops -> [B, feature_dim] penultimate activations (the emotion features)."""
        crops = crops.float()
        mean = crops.mean(dim=(1, 2, 3), keepdim=True)
        std = crops.std(dim=(1, 2, 3), keepdim=True)
        return self.head(self.encoder((crops - mean) / (std + 1e-3)))

    def forward(self, crops: Tensor) -> Tensor:
        """[B, C, h, w] crops -> [B, classes] logits."""
        return self.classifier(self.dropout(self.features(crops)))


# ---------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class EmotionData:
    """Every identity's face crops, concatenated (global frame index), with labels and the segment table."""

    crops: Tensor
    """[F, C, s + 2m, s + 2m] uint8 crops with the jitter margin (zeros where a frame has no face)."""
    labels: np.ndarray
    """[F] class index into ``emotions`` of the frames of the ``USED`` splits; -1 elsewhere (test, no face)."""
    emotions: tuple[str, ...]
    """The classes: the emotions of the training segments, sorted."""
    segments: pd.DataFrame
    """``datasets.segment_table`` rows: identity, clip, kind, emotion, sentence, split, start, stop, ..."""
    face: np.ndarray
    """[F] True where a frame has a face (usable, finite landmarks) and so a crop and features."""


def training_emotions(segments: pd.DataFrame) -> tuple[str, ...]:
    """The classes: the emotions of the training segments, sorted."""
    emotions = tuple(sorted(segments.loc[segments.split == TRAIN, "emotion"].astype(str).unique()))
    if len(emotions) < 2:
        raise ValueError(f"the training segments hold {len(emotions)} emotion(s) {list(emotions)}; an emotion "
                         "classifier needs at least 2 (process identities recorded in several emotions)")
    return emotions


def frame_labels(segments: pd.DataFrame, emotions: Sequence[str], frames: int) -> np.ndarray:
    """[frames] class index of every frame of the training and held-out segments; -1 for the others (test, no face)
    and for held-out emotions the training segments lack."""
    labels = np.full(frames, -1, np.int64)
    index = {name: k for k, name in enumerate(emotions)}
    for row in segments[segments.split.isin(USED)].itertuples():
        labels[row.start:row.stop] = index.get(str(row.emotion), -1)
    return labels


def loader_frames(segments: pd.DataFrame) -> dict[str, np.ndarray]:
    """Global frame indices training (the batch sampler; the training centroids of the nearest-centroid scores) and
    validation (the passes during training, the final scores) read: the ``TRAIN`` and the held-out segments' frames,
    never a ``TEST`` or ``NO_FACE`` one."""
    return {"train": split_frames(segments, [TRAIN]), "validation": split_frames(segments, HELDOUT)}


def emotion_data(identities: Sequence[IdentityLandmarks], segments: pd.DataFrame, cfg: EmotionConfig) -> EmotionData:
    """Crop every frame's face (with the jitter margin) and label the frames of the training and held-out segments.

    Every frame is cropped once, test frames included, because the features are extracted for every frame after
    training; training and validation index only ``loader_frames``.
    """
    margin = crop_margin(cfg.crop_size)
    crops, faces = [], []
    for data in identities:
        rows = segments[segments.identity == data.identity]
        offset = int(rows.start.min())
        count = len(data.image)
        face = np.ones(count, bool) if data.usable is None else np.asarray(data.usable, bool).copy()
        boxes = face_boxes(data.image, [(r.start - offset, r.stop - offset) for r in rows.itertuples()],
                           cfg.crop_scale, cfg.smooth_frames)
        face &= np.isfinite(boxes).all(axis=1)
        boxes[~face] = np.array([0, 0, 0, 1], np.float32)  # cropped but never used: zeroed below
        channels = 1 if cfg.grayscale else 3
        out = torch.zeros(count, channels, cfg.crop_size + 2 * margin, cfg.crop_size + 2 * margin, dtype=torch.uint8)
        # Grey crops from the JPEGs' own luma (decoded grey: a third of the pixels to warp, no colour conversion).
        frames = read_frames(data.processed.frames("frames"), range(count),
                             flags=cv2.IMREAD_GRAYSCALE if cfg.grayscale else cv2.IMREAD_COLOR)
        for first in tqdm(range(0, count, cfg.batch_frames), desc=f"faces {data.identity}", unit="batch",
                          leave=False):
            batch = np.stack([next(frames) for _ in range(min(cfg.batch_frames, count - first))])
            images = torch.from_numpy(batch[:, None] if cfg.grayscale else batch.transpose(0, 3, 1, 2)).float()
            crop = crop_faces(images, torch.from_numpy(boxes[first:first + len(batch)]), cfg.crop_size,
                              grayscale=False, margin=margin)
            out[first:first + len(batch)] = crop.round().clamp(0, 255).to(torch.uint8)
        out[torch.from_numpy(~face)] = 0
        crops.append(out)
        faces.append(face)
    emotions = training_emotions(segments)
    face = np.concatenate(faces)
    labels = frame_labels(segments, emotions, len(face))
    labels[~face] = -1
    return EmotionData(torch.cat(crops), labels, emotions, segments.reset_index(drop=True), face)


def centre_crop(crops: Tensor, size: int) -> Tensor:
    """The plain crop inside stored crops with margin."""
    top = (crops.shape[-2] - size) // 2
    left = (crops.shape[-1] - size) // 2
    return crops[..., top:top + size, left:left + size]


# ---------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainedEmotion:
    model: EmotionNet
    emotions: tuple[str, ...]
    history: list[dict[str, float]]  # one row per step
    validation: list[dict[str, float]]  # one row per validation pass
    seconds: float  # wall clock
    cpu_seconds: float  # process CPU time (all threads)


def _balanced_sampler(frames: np.ndarray, labels: np.ndarray, classes: int,
                      rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    """Draws of ``count`` frames of ``frames``: an emotion uniformly among those present, then a frame of it."""
    pools = [frames[labels[frames] == k] for k in range(classes)]
    pools = [pool for pool in pools if len(pool)]

    def draw(count: int) -> np.ndarray:
        which = rng.integers(len(pools), size=count)
        return np.array([pools[k][rng.integers(len(pools[k]))] for k in which], np.int64)

    return draw


def train_emotion_net(cfg: EmotionConfig, data: EmotionData, log_metric: MetricLogger | None = None) -> TrainedEmotion:
    """Cross-entropy training on the training frames (class-balanced batches, jitter, flips); validation passes on
    a fixed draw of held-out frames. Reads only the crops and labels of ``loader_frames``."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    used = loader_frames(data.segments)
    train = used["train"][data.labels[used["train"]] >= 0]
    if len(train) == 0:
        raise ValueError("no labelled training frame with a face; check the segment table")
    held = used["validation"][data.labels[used["validation"]] >= 0]
    if len(held) > cfg.eval_frames:
        held = np.sort(rng.choice(held, size=cfg.eval_frames, replace=False))
    classes = len(data.emotions)
    model = EmotionNet(data.crops.shape[1], tuple(cfg.channels), cfg.feature_dim, classes, cfg.dropout).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = cosine_schedule(optimiser, cfg.steps)
    draw = _balanced_sampler(train, data.labels, classes, rng)
    labels = torch.from_numpy(data.labels)
    margin = data.crops.shape[-1] - cfg.crop_size
    history, validation = [], []
    started, cpu_started = time.perf_counter(), time.process_time()
    progress = tqdm(range(1, cfg.steps + 1), desc="emotion net", unit="step")
    for step in progress:
        model.train()
        index = torch.from_numpy(draw(cfg.batch_size))
        top, left = (int(v) for v in rng.integers(margin + 1, size=2))
        crops = data.crops[index, :, top:top + cfg.crop_size, left:left + cfg.crop_size].float()
        if cfg.flip:
            mirror = torch.from_numpy(rng.random(len(index)) < 0.5)
            crops[mirror] = crops[mirror].flip(-1)
        target = labels[index].to(device)
        logits = model(crops.to(device))
        loss = F.cross_entropy(logits, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        history.append({"step": step, "loss": loss.item(),
                        "accuracy": (logits.argmax(1) == target).float().mean().item(),
                        "lr": schedule.get_last_lr()[0]})
        if log_metric is not None and step % LOG_EVERY == 0:
            log_metric("emotion_train_loss", float(np.mean([r["loss"] for r in history[-LOG_EVERY:]])), step)
        if len(held) and (step % cfg.eval_every == 0 or step == cfg.steps):
            scores = _validation_pass(model, data, held, cfg)
            validation.append({"step": step, **scores})
            progress.set_postfix(loss=f"{loss.item():.3f}", val_acc=f"{scores['val_accuracy']:.3f}")
            if log_metric is not None:
                for name, value in scores.items():
                    log_metric(f"emotion_{name}", value, step)
    return TrainedEmotion(model.cpu().eval(), data.emotions, history, validation, time.perf_counter() - started,
                          time.process_time() - cpu_started)


def _validation_pass(model: EmotionNet, data: EmotionData, frames: np.ndarray, cfg: EmotionConfig) -> dict[str, float]:
    device = next(model.parameters()).device
    model.eval()
    losses, hits = [], []
    with torch.no_grad():
        for chunk in np.array_split(frames, max(1, -(-len(frames) // cfg.batch_frames))):
            index = torch.from_numpy(chunk)
            logits = model(centre_crop(data.crops[index], cfg.crop_size).to(device))
            target = torch.from_numpy(data.labels[chunk]).to(device)
            losses.append(F.cross_entropy(logits, target, reduction="sum").item())
            hits.append((logits.argmax(1) == target).sum().item())
    return {"val_loss": float(np.sum(losses) / len(frames)), "val_accuracy": float(np.sum(hits) / len(frames))}


# ---------------------------------------------------------------------------------------------------------------
# Features


def extract_features(model: EmotionNet, data: EmotionData, cfg: EmotionConfig) -> tuple[np.ndarray, np.ndarray]:
    """[F, feature_dim] features and [F, classes] logits of every frame (plain centre crops, eval mode); NaN rows
    where a frame has no face."""
    device = resolve_device(cfg.device)
    model = model.to(device).eval()
    features = np.full((len(data.face), cfg.feature_dim), np.nan, np.float32)
    logits = np.full((len(data.face), len(data.emotions)), np.nan, np.float32)
    frames = np.flatnonzero(data.face)
    with torch.no_grad():
        for first in range(0, len(frames), cfg.batch_frames):
            chunk = frames[first:first + cfg.batch_frames]
            crops = centre_crop(data.crops[torch.from_numpy(chunk)], cfg.crop_size).to(device)
            feature = model.features(crops)
            features[chunk] = feature.cpu().numpy()
            logits[chunk] = model.classifier(feature).cpu().numpy()
    model.cpu()
    return features, logits


def load_emoca(path: Path, device: str = "cpu", feature_dim: int = EMOCA_FEATURE_DIM) -> torch.jit.ScriptModule | None:
    """EMOCA's emotion network from ``path`` (TorchScript, the module docstring's contract) in eval mode, or None
    (logged) when the file is absent; a file that does not load, or does not map a [1, 3, 224, 224] crop to
    ``feature_dim`` values, is a ``WeightsError`` naming it."""
    path = Path(path)
    if not path.is_file():
        log.info("%s not found: emotion features come from a CNN trained on the corpus labels instead of EMOCA", path)
        return None
    fix = ("export EMOCA's emotion ResNet-50 as talkhead_models/pretrained/emotion.py's docstring (and "
           "docs/WEIGHTS.md) says, or remove the file to train the substitute")
    try:
        module = torch.jit.load(str(path), map_location=device)
    except Exception as error:  # torch raises RuntimeError, ValueError or zip errors for a file that is not TorchScript
        raise WeightsError(f"{path}: not a TorchScript module ({type(error).__name__}: {str(error)[:200]}); "
                           f"{fix}") from None
    module.eval()
    try:
        with torch.no_grad():
            probe = module(torch.zeros(1, 3, EMOCA_IMAGE_SIZE, EMOCA_IMAGE_SIZE, device=device))
    except Exception as error:
        raise WeightsError(f"{path}: fails on a [1, 3, {EMOCA_IMAGE_SIZE}, {EMOCA_IMAGE_SIZE}] crop "
                           f"({type(error).__name__}: {str(error)[:200]}); {fix}") from None
    shape = tuple(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
    if not isinstance(probe, Tensor) or probe.reshape(1, -1).shape[1] != feature_dim or probe.shape[0] != 1:
        raise WeightsError(f"{path}: gives {shape} for one crop, not [1, {feature_dim}] features; {fix}")
    log.info("emotion features from EMOCA (%s)", path)
    return module


def emoca_features(module: torch.jit.ScriptModule, identities: Sequence[IdentityLandmarks], cfg: EmotionConfig,
                   device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """[F, emoca_feature_dim] EMOCA features of every frame of every identity (concatenated, as the segment table's
    global index) and the [F] face mask; NaN rows where a frame has no face."""
    features, faces = [], []
    for data in identities:
        count = len(data.image)
        face = np.ones(count, bool) if data.usable is None else np.asarray(data.usable, bool).copy()
        boxes = emoca_boxes(data.image)
        face &= np.isfinite(boxes).all(axis=1)
        out = np.full((count, cfg.emoca_feature_dim), np.nan, np.float32)
        wanted = np.flatnonzero(face)
        frames = read_frames(data.processed.frames("frames"), wanted)
        with torch.no_grad():
            for first in tqdm(range(0, len(wanted), cfg.batch_frames), desc=f"EMOCA {data.identity}", unit="batch",
                              leave=False):
                chunk = wanted[first:first + cfg.batch_frames]
                images = torch.from_numpy(np.stack([next(frames) for _ in chunk])).permute(0, 3, 1, 2).float() / 255
                crops = crop_faces(images, torch.from_numpy(boxes[chunk]), EMOCA_IMAGE_SIZE, grayscale=False)
                out[chunk] = module(crops.to(device)).reshape(len(chunk), -1).float().cpu().numpy()
        features.append(out)
        faces.append(face)
    return np.concatenate(features), np.concatenate(faces)


# ---------------------------------------------------------------------------------------------------------------
# Scores


def centroid_predictions(features: np.ndarray, labels: np.ndarray, train: np.ndarray,
                         classes: int) -> tuple[np.ndarray, np.ndarray]:
    """[F] nearest training centroid (cosine) of every frame with finite features (-1 elsewhere) and the [K, D]
    unit centroids (NaN rows for emotions without a training frame)."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-8)
    train = train[(labels[train] >= 0) & np.isfinite(unit[train]).all(axis=1)]
    centroids = np.full((classes, features.shape[1]), np.nan)
    for k in range(classes):
        members = train[labels[train] == k]
        if len(members):
            mean = unit[members].mean(axis=0)
            centroids[k] = mean / max(np.linalg.norm(mean), 1e-8)
    present = np.isfinite(centroids).all(axis=1)
    similarity = np.nan_to_num(unit) @ np.where(present[:, None], centroids, 0.0).T
    similarity[:, ~present] = -np.inf
    predicted = np.where(np.isfinite(unit).all(axis=1), similarity.argmax(axis=1), -1)
    return predicted.astype(np.int64), centroids


def _recall_scores(truth: np.ndarray, predicted: np.ndarray, emotions: Sequence[str]) -> dict[str, float]:
    scores: dict[str, float] = {"accuracy": float((truth == predicted).mean()) if len(truth) else float("nan")}
    recalls = []
    for k, name in enumerate(emotions):
        mine = truth == k
        if mine.any():
            recall = float((predicted[mine] == k).mean())
            scores[f"recall_{name}"] = recall
            recalls.append(recall)
    scores["balanced_accuracy"] = float(np.mean(recalls)) if recalls else float("nan")
    return scores


def _pair_accuracy(features: np.ndarray, centroids: np.ndarray, data_labels: np.ndarray,
                   clips: pd.DataFrame) -> tuple[float, int]:
    """Over pairs of clips of one identity and sentence in two emotions: the share of clips whose mean unit feature
    is nearer (cosine) to its own emotion's training centroid than to the other clip's emotion's."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-8)
    means = []
    for row in clips.itertuples():
        rows = unit[row.start:row.stop]
        rows = rows[np.isfinite(rows).all(axis=1)]
        label = int(data_labels[row.start]) if row.stop > row.start else -1
        means.append((row.identity, row.sentence, label, rows.mean(axis=0) if len(rows) else None))
    hits, total = 0, 0
    for i, (identity, sentence, label, mean) in enumerate(means):
        for other_identity, other_sentence, other_label, other_mean in means[i + 1:]:
            if (identity, sentence) != (other_identity, other_sentence) or label == other_label:
                continue
            if min(label, other_label) < 0 or mean is None or other_mean is None:
                continue
            if not (np.isfinite(centroids[label]).all() and np.isfinite(centroids[other_label]).all()):
                continue
            for own, rival, vector in ((label, other_label, mean), (other_label, label, other_mean)):
                hits += int(vector @ centroids[own] > vector @ centroids[rival])
                total += 1
    return (hits / total if total else float("nan")), total


def evaluate_features(features: np.ndarray, data_labels: np.ndarray, segments: pd.DataFrame,
                      emotions: Sequence[str], logits: np.ndarray | None = None) -> tuple[dict[str, float],
                                                                                           pd.DataFrame, pd.DataFrame]:
    """Held-out scores of per-frame features (and the classifier's logits when there are any): metrics, the
    per-emotion confusion matrix per held-out split, and per held-out clip the majority vote. Reads the training
    frames' features (centroids) and the held-out frames' only."""
    used = loader_frames(segments)
    classes = len(emotions)
    centroid, centroids = centroid_predictions(features, data_labels, used["train"], classes)
    if logits is not None:
        predicted = np.where(np.isfinite(logits).all(axis=1), np.argmax(np.nan_to_num(logits, nan=-np.inf), axis=1),
                             -1)
        method = "classifier"
    else:
        predicted, method = centroid, "train centroids"
    metrics: dict[str, float] = {}
    confusion_rows, clip_rows = [], []
    splits = [(split, segments[segments.split == split]) for split in HELDOUT]
    splits.append(("heldout", segments[segments.split.isin(HELDOUT)]))
    for split, rows in splits:
        frames = split_frames(rows, list(HELDOUT))
        frames = frames[data_labels[frames] >= 0] if len(frames) else frames
        if not len(frames):
            continue
        suffix = "" if split == "heldout" else f"_{split}"
        truth = data_labels[frames]
        for name, value in _recall_scores(truth, predicted[frames], emotions).items():
            metrics[f"val_{name}{suffix}"] = value
        centroid_scores = _recall_scores(truth, centroid[frames], emotions)
        metrics[f"val_centroid_accuracy{suffix}"] = centroid_scores["accuracy"]
        metrics[f"val_centroid_balanced_accuracy{suffix}"] = centroid_scores["balanced_accuracy"]
        clip_segments = rows[rows.kind == "clip"]
        pair, pairs = _pair_accuracy(features, centroids, data_labels, clip_segments)
        metrics[f"val_pair_accuracy{suffix}"] = pair
        metrics[f"val_pairs{suffix}"] = float(pairs)
        if split == "heldout":
            continue
        for k, name in enumerate(emotions):
            mine = predicted[frames][truth == k]
            if len(mine):
                confusion_rows.append({"split": split, "emotion": name, "frames": int(len(mine)),
                                       **{f"predicted_{other}": int((mine == j).sum())
                                          for j, other in enumerate(emotions)}})
        for row in rows.itertuples():
            votes = predicted[row.start:row.stop]
            votes = votes[votes >= 0]
            truth_label = int(data_labels[row.start]) if row.stop > row.start else -1
            vote = int(np.bincount(votes, minlength=classes).argmax()) if len(votes) else -1
            clip_rows.append({"identity": row.identity, "clip": row.clip, "kind": row.kind, "emotion": row.emotion,
                              "sentence": row.sentence, "split": split, "frames": int(row.stop - row.start),
                              "frame_accuracy": float((votes == truth_label).mean()) if len(votes) else float("nan"),
                              "vote": emotions[vote] if vote >= 0 else "",
                              "correct": bool(vote == truth_label and vote >= 0)})
    clips = pd.DataFrame(clip_rows)
    if len(clips):
        voted = clips[clips.kind == "clip"]
        metrics["val_clip_accuracy"] = float(voted.correct.mean()) if len(voted) else float("nan")
    metrics["prediction"] = method  # type: ignore[assignment]
    return metrics, pd.DataFrame(confusion_rows), clips


# ---------------------------------------------------------------------------------------------------------------
# The whole procedure


@dataclass
class EmotionFeatures:
    """What the stage writes: every identity's features and how they were made and scored."""

    source: str
    """``EMOTION_SOURCE_SUBSTITUTE`` or ``EMOTION_SOURCE_EMOCA``."""
    features: dict[str, np.ndarray]
    """Per identity, [N, D] float32 (NaN rows: no face)."""
    emotions: tuple[str, ...]
    metrics: dict[str, Any]
    confusion: pd.DataFrame
    clips: pd.DataFrame
    checkpoint: dict[str, Any]
    """What ``model.pt`` holds: the substitute's state dict and config, or EMOCA's file name."""
    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)


def model_config(cfg: EmotionConfig, emotions: Sequence[str]) -> dict[str, Any]:
    """What rebuilds the substitute network and its inputs (stored beside the weights)."""
    return {"source": EMOTION_SOURCE_SUBSTITUTE, "crop_size": cfg.crop_size, "crop_scale": cfg.crop_scale,
            "smooth_frames": cfg.smooth_frames, "grayscale": cfg.grayscale, "channels": list(cfg.channels),
            "feature_dim": cfg.feature_dim, "dropout": cfg.dropout, "emotions": list(emotions)}


def emotion_features(identities: Sequence[IdentityLandmarks], segments: pd.DataFrame, cfg: EmotionConfig,
                     weights: Path, log_metric: MetricLogger | None = None) -> EmotionFeatures:
    """EMOCA's features when ``weights`` (the weights folder) holds ``cfg.weights_file``, else the substitute's
    (trained here), for every frame of ``identities``; scored on the held-out frames."""
    started = time.perf_counter()
    device = str(resolve_device(cfg.device))
    module = load_emoca(Path(weights) / cfg.weights_file, device, cfg.emoca_feature_dim)
    emotions = training_emotions(segments)
    counts = [len(d.image) for d in identities]
    metrics: dict[str, Any] = {}
    if module is not None:
        features, face = emoca_features(module, identities, cfg, device)
        labels = frame_labels(segments, emotions, len(face))
        labels[~face] = -1
        logits, source = None, EMOTION_SOURCE_EMOCA
        checkpoint = {"config": {"source": source, "weights_file": cfg.weights_file,
                                 "feature_dim": cfg.emoca_feature_dim, "emotions": list(emotions)}}
        history: list[dict[str, float]] = []
        validation: list[dict[str, float]] = []
        metrics["extract_seconds"] = time.perf_counter() - started
    else:
        data = emotion_data(identities, segments, cfg)
        labels, face = data.labels, data.face
        metrics["data_seconds"] = time.perf_counter() - started
        trained = train_emotion_net(cfg, data, log_metric)
        extracting = time.perf_counter()
        features, logits = extract_features(trained.model, data, cfg)
        metrics.update(train_seconds=trained.seconds, train_cpu_seconds=trained.cpu_seconds,
                       extract_seconds=time.perf_counter() - extracting,
                       final_train_loss=float(np.mean([r["loss"] for r in trained.history[-LOG_EVERY:]])))
        source, history, validation = EMOTION_SOURCE_SUBSTITUTE, trained.history, trained.validation
        checkpoint = {"state_dict": trained.model.state_dict(), "config": model_config(cfg, emotions)}
    scores, confusion, clips = evaluate_features(features, labels, segments, emotions, logits)
    metrics = {"source": source, **scores, **metrics, "feature_dim": float(features.shape[1]),
               "frames_without_face": float((~face).sum())}
    bounds = np.cumsum([0, *counts])
    per_identity = {d.identity: features[a:b] for d, a, b in zip(identities, bounds[:-1], bounds[1:])}
    return EmotionFeatures(source, per_identity, emotions, metrics, confusion, clips, checkpoint, history, validation)


# ---------------------------------------------------------------------------------------------------------------
# Reading back


def write_features(folder: Path, result: EmotionFeatures) -> None:
    """``folder``/features/<ID>.npy per identity and ``folder``/features.json (source, size, frames)."""
    out = Path(folder) / FEATURES_DIR
    out.mkdir(parents=True, exist_ok=True)
    for identity, features in result.features.items():
        np.save(out / f"{identity}.npy", np.ascontiguousarray(features, np.float32))
    dims = {int(f.shape[1]) for f in result.features.values()}
    info = {"source": result.source, "feature_dim": dims.pop() if len(dims) == 1 else sorted(dims),
            "emotions": list(result.emotions), "frames": {k: int(len(v)) for k, v in result.features.items()}}
    (Path(folder) / FEATURES_INFO).write_text(json.dumps(info, indent=1))


def load_emotion_features(folder: Path, identity: str) -> tuple[np.ndarray, str]:
    """[N, D] float32 emotion features of every frame of ``identity`` (memory-mapped; NaN rows where a frame has no
    face) from the ``pretrain_emotion`` stage's folder (``data/models/emotion``), and their source label
    (``EMOTION_SOURCE_SUBSTITUTE`` or ``EMOTION_SOURCE_EMOCA``)."""
    folder = Path(folder)
    info_path = folder / FEATURES_INFO
    path = folder / FEATURES_DIR / f"{identity}.npy"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path}: emotion features not found; run `dvc repro pretrain_emotion`")
    info = json.loads(info_path.read_text())
    if not path.is_file():
        known = sorted(info.get("frames", {}))
        raise FileNotFoundError(f"{path}: no emotion features for identity {identity!r} (the folder holds "
                                f"{known}); add it to params.yaml data.identities and run "
                                "`dvc repro pretrain_emotion`")
    try:
        features = np.load(path, mmap_mode="r")
    except ValueError as error:
        raise ValueError(f"{path}: not a .npy array ({error}); run `dvc repro pretrain_emotion`") from None
    frames = info.get("frames", {}).get(identity)
    if features.ndim != 2 or features.dtype != np.float32 or (frames is not None and len(features) != frames):
        raise ValueError(f"{path}: {features.dtype} {features.shape}, expected float32 [{frames}, D]; run "
                         "`dvc repro pretrain_emotion`")
    return features, str(info["source"])


def save_model(result: EmotionFeatures, path: Path) -> None:
    torch.save(result.checkpoint, path)


def load_model(path: Path, device: str = "cpu") -> tuple[EmotionNet, dict]:
    """The substitute network from ``model.pt`` (``weights_only=True``) in eval mode, and its input config; an
    error when the folder's features came from EMOCA (its network is the weights folder's file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: emotion network checkpoint not found; run `dvc repro pretrain_emotion`")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    config = checkpoint["config"]
    if "state_dict" not in checkpoint:
        raise ValueError(f"{path}: the features came from {config.get('source')} ({config.get('weights_file')} in "
                         "the weights folder); load that file with load_emoca")
    model = EmotionNet(1 if config["grayscale"] else 3, tuple(config["channels"]), config["feature_dim"],
                       len(config["emotions"]), config["dropout"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), config


def summary(metrics: Mapping[str, Any]) -> str:
    """One log line of the held-out scores."""
    def value(name: str) -> float:
        return float(metrics.get(name, float("nan")))

    return (f"emotion features ({metrics['source']}): held-out frame accuracy {value('val_accuracy'):.3f} (balanced "
            f"{value('val_balanced_accuracy'):.3f}; held-out sentences {value('val_accuracy_heldout_sentence'):.3f}, "
            f"held-out identity {value('val_accuracy_heldout_identity'):.3f}); same-sentence pairs told apart "
            f"{value('val_pair_accuracy'):.3f}")
