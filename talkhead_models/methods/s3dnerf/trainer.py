"""Training S3D-NeRF across identities, and rendering an identity it never saw from one of its images.

Data: the corpus-level split of ``pretrained.datasets`` (the one place that
decides test data) gives the frames. A training sample is a window of
``sync_frames`` consecutive ``TRAIN`` frames of a training identity (the
targets, with their tracked cameras and audio) and a source image drawn from
the same identity's ``TRAIN`` frames. The identity the corpus-level models
hold out (``pretrain.holdout_identity``) is never read: S3D-NeRF is
evaluated on it.

A step renders the batch's targets from their source images and takes the
paper's loss (Sec. 3.4): L2 pixels + perceptual + adversarial (StyleGAN2's
non-saturating loss against a discriminator trained in the same step, R1
every ``R1_INTERVAL`` steps) + lip sync (the frozen corpus sync expert on
the rendered mouths of the window against its audio: 1 - cos(e_l, e_a), the
paper's form, bounded, where Wav2Lip takes -log cos) + the mean squared
displacement in units of the head cube.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from talkhead_models.checkpoints import CURVE_FILE, Checkpoints, CurveRow, write_curve
from talkhead_models.components.backends import resolve_device
from talkhead_models.config import ConfigError, from_dict
from talkhead_models.data.identity_reader import IdentityError, IdentityReader
from talkhead_models.methods.base import Driving, MetricLogger, UnsupportedDriving
from talkhead_models.methods.s3dnerf.config import S3DNeRFConfig
from talkhead_models.methods.s3dnerf.discriminator import (Discriminator, discriminator_loss, feature_matching,
                                                           generator_loss, r1_penalty)
from talkhead_models.methods.s3dnerf.model import Cameras, Rendered, S3DNeRF, landing_at
from talkhead_models.preprocess.frames import resized
from talkhead_models.preprocess.parsing import HEAD_LABELS
from talkhead_models.pretrained.audio2motion import MOUTH, MotionFeatures, load_pretrained
from talkhead_models.pretrained.datasets import (TRAIN, SplitConfig, checked_audit, load_corpus, load_identity,
                                                 segment_table)
from talkhead_models.pretrained.sync_expert import (audio_windows, crop_mouths, frozen, load_expert, log_mel,
                                                    mouth_boxes)

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
R1_INTERVAL = 4
"""StyleGAN2's lazy regularisation: R1 every 4 discriminator steps, scaled by 4."""
CLOSED_MOUTH_SHARE = 0.25
"""With ``closed_mouth_sources``, the share of an identity's source candidates kept: the most closed mouths."""


@dataclass
class IdentityFrames:
    """What the trainer and the renderer read of one identity."""

    name: str
    reader: IdentityReader
    c2w: np.ndarray  # [N, 4, 4] float32, NaN where untracked
    focal: float
    cx: float
    cy: float
    stored_size: int
    audio: np.ndarray  # [N, 16, D] feature windows
    size: int

    @classmethod
    def open(cls, root: Path, cfg: S3DNeRFConfig) -> "IdentityFrames":
        reader = IdentityReader(root)
        cameras = reader.cameras()
        if cameras is None:
            raise IdentityError(f"{reader.root}: no tracked cameras; run the track stage")
        kinds = reader.feature_kinds()
        if cfg.audio_feature not in kinds:
            raise ConfigError(f"s3dnerf.audio_feature {cfg.audio_feature!r}: {reader.root} has {kinds}; run the "
                              "audio stage with it or pick one of those")
        stored = reader.frame(0).shape[0]
        return cls(reader.root.name, reader, cameras.c2w.astype(np.float32), float(cameras.focal),
                   float(cameras.cx), float(cameras.cy), stored, reader.audio_features(cfg.audio_feature),
                   cfg.image_size)

    @cached_property
    def points68(self) -> np.ndarray:
        """[N, 68, 2] the landmarks stage's points at ``size`` px (the training losses' mouth boxes)."""
        return np.asarray(self.reader.landmarks().points68, np.float32) * (self.size / self.stored_size)

    def image(self, index: int) -> np.ndarray:
        return resized(self.reader.frame(int(index)), self.size)

    def has_face(self, indices: np.ndarray) -> np.ndarray:
        """Whether each frame has 68 finite landmarks (a source image needs them to hide its face)."""
        return np.isfinite(self.points68[indices]).all(axis=(-1, -2))

    def face_hull(self, index: int, size: int) -> np.ndarray:
        """[size, size] float32: 1 inside the convex hull of frame ``index``'s 68 landmarks (its inner face)."""
        points = self.points68[int(index)] * (size / self.size)
        if not np.isfinite(points).all():
            raise IdentityError(f"{self.reader.root}: frame {index} has no landmarks; re-run the landmarks stage or "
                                "pick another frame")
        hull = cv2.convexHull(np.round(points.astype(np.float64) * 16).astype(np.int32))
        return cv2.fillConvexPoly(np.zeros((size, size), np.float32), hull, 1.0, cv2.LINE_8, shift=4)

    def source_visible(self, index: int, region: str) -> np.ndarray:
        """[size, size] float32: 1 where the super-resolution may read source image ``index`` (``sr_source``):
        everywhere ("full"), or outside the convex hull of its 68 landmarks ("outside_face")."""
        if region == "full":
            return np.ones((self.size, self.size), np.float32)
        return 1.0 - self.face_hull(index, self.size)

    def head_mask(self, index: int, size: int) -> np.ndarray:
        """[size, size] float32: the share of each pixel the parse stage labels head, lips or mouth."""
        head = np.isin(self.reader.semantic(int(index)), HEAD_LABELS).astype(np.float32)
        return cv2.resize(head, (size, size), interpolation=cv2.INTER_AREA)

    def cameras(self, indices: np.ndarray, device: torch.device) -> Cameras:
        count = len(indices)
        return Cameras(torch.as_tensor(self.c2w[indices], device=device),
                       torch.full((count,), self.focal, device=device), torch.full((count,), self.cx, device=device),
                       torch.full((count,), self.cy, device=device), self.stored_size)

    def tracked(self, indices: np.ndarray) -> np.ndarray:
        return np.isfinite(self.c2w[indices]).all(axis=(-1, -2))


def images_tensor(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.stack(images), device=device).permute(0, 3, 1, 2).float() / 255.0


@dataclass
class TrainingWindows:
    """The ``TRAIN`` frames of the training identities: per identity, the first frames of windows of
    ``sync_frames`` consecutive tracked frames with landmarks and the frames a source image is drawn from."""

    starts: dict[str, np.ndarray]
    sources: dict[str, np.ndarray]
    holdout: str
    spans: dict[str, list[tuple[int, int]]]  # the TRAIN segments' first and last frames


def training_windows(processed_root: Path, identities: Sequence[str], split: SplitConfig, cfg: S3DNeRFConfig
                     ) -> tuple[list[IdentityFrames], TrainingWindows]:
    """The training identities' frames and windows from ``segment_table``'s TRAIN segments, audited against every
    split table (no test frame); the held-out identity is not opened."""
    corpus = load_corpus(processed_root, identities)
    segments = segment_table(corpus, split)
    train = segments[segments.split == TRAIN]
    held = sorted(set(map(str, segments.identity)) - set(map(str, train.identity)))
    frames, starts, sources, spans, used = [], {}, {}, {}, []
    for name, rows in train.groupby("identity"):
        data = IdentityFrames.open(Path(processed_root) / str(name), cfg)
        frames.append(data)
        first, local = [], []
        spans[str(name)] = [(int(row.first_frame), int(row.last_frame)) for row in rows.itertuples()]
        for row in rows.itertuples():
            span = np.arange(row.first_frame, row.last_frame + 1)
            # a frame needs its camera (to render it) and its landmarks (the mouth box, the inner-face hull)
            usable = data.tracked(span) & data.has_face(span)
            local.append(span[usable])
            # a window is valid when all its frames are usable
            run = np.convolve(usable.astype(int), np.ones(cfg.sync_frames, int), mode="valid") == cfg.sync_frames
            first.append(span[:len(run)][run])
            used.append(row.start + np.flatnonzero(usable))
        starts[str(name)], sources[str(name)] = np.concatenate(first), np.concatenate(local)
        if cfg.closed_mouth_sources:
            candidates = sources[str(name)]
            opening = mouth_opening(data.points68[candidates])
            sources[str(name)] = candidates[opening <= np.quantile(opening, CLOSED_MOUTH_SHARE)]
    # raises, listing the segments, if any frame read here is a test frame
    checked_audit(corpus, segments, {"s3dnerf_train": np.concatenate(used) if used else np.zeros(0, int)})
    return frames, TrainingWindows(starts, sources, ",".join(held), spans)


def motion_network(pretrained: Mapping[str, Path], device: torch.device) -> tuple[Any, dict]:
    """The audio-to-motion network ``audio_motion`` reads; a clear error when its folder is not given."""
    return load_pretrained(pretrained, device, "s3dnerf.audio_motion", "s3dnerf.audio_motion: false")


def motion_audio(identities: Sequence[IdentityFrames], windows: TrainingWindows, network: Any,
                 network_config: dict, window: int) -> tuple[MotionFeatures, dict[str, np.ndarray]]:
    """``audio_motion``'s features of the training identities: per identity [N, window, 60], each TRAIN segment
    predicted as a recording of its own (its speaker mean from its own frames, its windows clipped to it, so no
    test frame's audio reaches them); the frames outside every segment, never read, are zeros. The a2m model's face
    input is the identities' mean neutral shape and the normaliser is pooled over every segment's frames: nothing
    of it is per identity, so a new identity's features need only its audio."""
    neutral = np.mean([load_identity(data.reader.layout).neutral.shape for data in identities], axis=0)
    motion = MotionFeatures(network, network_config, neutral.astype(np.float32), torch.zeros(0),
                            np.zeros(3 * len(MOUTH), np.float32), 1.0, window)
    raw = {}
    for data in identities:
        kind_features = np.asarray(data.reader.audio_features(motion.kind), np.float32)
        raw[data.name] = [(first, last, motion.displacements(kind_features[first:last + 1], own_voice=False))
                          for first, last in windows.spans[data.name]]
    pooled = np.concatenate([values for parts in raw.values() for _, _, values in parts])
    motion.centre = pooled.mean(0)
    motion.scale = float(max((pooled - motion.centre).std(), 1e-6))
    features = {}
    for data in identities:
        out = np.zeros((len(data.audio), window, motion.dim), np.float32)
        for first, last, values in raw[data.name]:
            out[first:last + 1] = motion.windows(values)
        features[data.name] = out
    log.info("s3dnerf: audio-to-motion mouth features of %d TRAIN frames (%s), std %.4g canonical units",
             len(pooled), motion.kind, motion.scale)
    return motion, features


class S3DNeRFTrainer:
    """The generator, the discriminator, the frozen sync expert and their optimisers."""

    def __init__(self, cfg: S3DNeRFConfig, identities: Sequence[IdentityFrames], windows: TrainingWindows,
                 sync_expert: Path | None, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.identities = {i.name: i for i in identities if i.name in windows.starts}
        if not self.identities:
            raise ConfigError("s3dnerf: no training identity has TRAIN frames")
        self.windows = windows
        self.audio_dim = int(next(iter(self.identities.values())).audio.shape[-1])
        self.model = S3DNeRF(cfg, self.audio_dim).to(device)
        self.discriminator = Discriminator(cfg.image_size, cfg.disc_channels).to(device)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.99))
        self.disc_optimiser = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.disc_learning_rate,
                                               betas=(0.0, 0.99))
        self.expert, self.expert_config, self.mel = None, None, {}
        if cfg.sync_weight > 0:
            if sync_expert is None:
                raise ConfigError("s3dnerf.sync_weight > 0 needs the sync expert (pretrain_sync stage's model)")
            self.expert, self.expert_config = load_expert(Path(sync_expert) / "model.pt", str(device))
            frozen(self.expert)
            self.mel = {name: torch.as_tensor(log_mel(data.reader.audio(), self.expert_config["n_mels"]),
                                              device=device) for name, data in self.identities.items()}
        if cfg.perceptual_network == "vgg" and cfg.perceptual_weight > 0:
            raise ConfigError("s3dnerf.perceptual_network vgg needs ImageNet VGG-16 weights, which this pipeline "
                              "does not load yet; set perceptual_network: discriminator_features")
        self.rng = np.random.default_rng(cfg.seed)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.iteration, self.seconds = 0, 0.0
        self.curve: list[CurveRow] = []
        self.pending: list[float] = []
        self.names = sorted(self.identities)

    def draw(self) -> tuple[str, int, int]:
        name = self.names[int(self.rng.integers(len(self.names)))]
        starts, sources = self.windows.starts[name], self.windows.sources[name]
        return name, int(starts[self.rng.integers(len(starts))]), int(sources[self.rng.integers(len(sources))])

    def step(self) -> dict[str, float]:
        cfg, device, window = self.cfg, self.device, self.cfg.sync_frames
        draws = [self.draw() for _ in range(cfg.batch_size)]
        sources, visible, targets, audio, source_cams, target_cams, boxes, lips, masks, faces = ([] for _ in range(10))
        target_marks, source_marks = [], []
        for name, start, source in draws:
            data = self.identities[name]
            frames = np.arange(start, start + window)
            sources.append(data.image(source))
            visible.append(data.source_visible(source, cfg.sr_source))
            targets += [data.image(i) for i in frames]
            if cfg.opacity_weight > 0:
                masks += [data.head_mask(i, cfg.render_size) for i in frames]
            if cfg.coarse_weight > 0:
                faces += [data.face_hull(i, cfg.render_size) for i in frames]
            audio.append(np.asarray(data.audio[frames], np.float32))
            source_cams.append(data.cameras(np.full(window, source), device))
            target_cams.append(data.cameras(frames, device))
            if cfg.mouth_weight != 1.0:
                lips.append(data.points68[frames][:, MOUTH])
            if cfg.landmark_flow_weight > 0:  # the lips: the inner face's 17-67 at x0.01 kept the mouth as still
                target_marks.append(data.points68[frames][:, MOUTH])
                source_marks.append(np.repeat(data.points68[source, MOUTH][None], window, axis=0))
            if self.expert is not None:
                boxes.append(mouth_boxes(data.points68[frames], [(0, window)], self.expert_config["crop_scale"],
                                         self.expert_config["smooth_frames"]))
        source_images = images_tensor(sources, device)
        source = source_images.repeat_interleave(window, 0)
        source_visible = torch.as_tensor(np.stack(visible), device=device)[:, None].repeat_interleave(window, 0)
        target = images_tensor(targets, device)
        src_cams, tgt_cams = concat_cameras(source_cams), concat_cameras(target_cams)
        planes = [p.repeat_interleave(window, 0) for p in self.model.encode(source_images)]
        noise = torch.randn(len(target), cfg.num_slots, cfg.embed_dim, generator=self.generator, device=device)
        rendered = self.model(planes, source, src_cams, tgt_cams,
                              torch.as_tensor(np.concatenate(audio), device=device), source_visible,
                              perturb=True, generator=self.generator, slot_noise=noise)
        adversarial = self.iteration >= cfg.warmup_steps
        squared = (rendered.image - target).square()
        if cfg.mouth_weight != 1.0:
            weights_map = mouth_weights(np.concatenate(lips), cfg.image_size, cfg.mouth_weight, device)
            losses = {"pixel": (weights_map * squared).mean() / weights_map.mean()}
        else:
            losses = {"pixel": squared.mean()}
        losses["deform"] = rendered.displacement.mean()
        if cfg.opacity_weight > 0:
            head = torch.as_tensor(np.stack(masks), device=device)[:, None]
            losses["opacity"] = (rendered.opacity - head).square().mean()
        if cfg.landmark_flow_weight > 0:
            losses["landmark_flow"] = landmark_flow_loss(rendered, np.concatenate(target_marks),
                                                         np.concatenate(source_marks), cfg.image_size)
        if cfg.coarse_weight > 0:
            face = torch.as_tensor(np.stack(faces), device=device)[:, None]
            small = torch.nn.functional.interpolate(target, size=cfg.render_size, mode="area")
            losses["coarse"] = (face * (rendered.coarse - small).square()).sum() / (3 * face.sum()).clamp_min(1.0)
        real_logits = None
        if adversarial and (cfg.adversarial_weight > 0 or cfg.perceptual_weight > 0):
            fake_logits, fake_features = self.discriminator(rendered.image)
            losses["adversarial"] = generator_loss(fake_logits)
            # One pass over the real frames serves the perceptual term (its activations, detached) and the
            # discriminator's step below (its logits): the generator's step does not change the discriminator.
            real_logits, real_features = self.discriminator(target)
            if cfg.perceptual_weight > 0:
                losses["perceptual"] = feature_matching(fake_features, real_features)
        if self.expert is not None and adversarial:
            box = torch.as_tensor(np.concatenate(boxes), device=device)
            height, width = self.expert_config["crop_height"], self.expert_config["crop_width"]
            mouths = crop_mouths(rendered.image, box, height, width).reshape(cfg.batch_size, window, height, width)
            mel = torch.stack([audio_windows(self.mel[name], torch.tensor([start], device=device))[0]
                               for name, start, _ in draws])
            losses["sync"] = (1.0 - self.expert(mouths, mel)).mean()
        weights = {"pixel": cfg.pixel_weight, "deform": cfg.deform_weight, "adversarial": cfg.adversarial_weight,
                   "perceptual": cfg.perceptual_weight, "sync": cfg.sync_weight, "opacity": cfg.opacity_weight,
                   "coarse": cfg.coarse_weight, "landmark_flow": cfg.landmark_flow_weight}
        total = sum(weights[key] * value for key, value in losses.items())
        self.optimiser.zero_grad(set_to_none=True)
        total.backward()
        self.optimiser.step()
        if adversarial and cfg.adversarial_weight > 0:
            # the generator's loss left gradients in the discriminator; its own step starts from none
            self.disc_optimiser.zero_grad(set_to_none=True)
            fake_logits, _ = self.discriminator(rendered.image.detach())
            disc = discriminator_loss(real_logits, fake_logits)
            if cfg.r1_gamma > 0 and self.iteration % R1_INTERVAL == 0:
                disc = disc + 0.5 * cfg.r1_gamma * R1_INTERVAL * r1_penalty(self.discriminator, target)
            disc.backward()
            self.disc_optimiser.step()
            losses["discriminator"] = disc.detach()
        self.iteration += 1
        return {"total": float(total.detach()), **{key: float(value.detach()) for key, value in losses.items()}}

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict:
        return {"kind": "s3dnerf", "config": asdict(self.cfg), "iteration": self.iteration, "seconds": self.seconds,
                "model": self.model.state_dict(), "discriminator": self.discriminator.state_dict(),
                "optimiser": self.optimiser.state_dict(), "disc_optimiser": self.disc_optimiser.state_dict(),
                "torch_rng": self.generator.get_state(), "numpy_rng": self.rng.bit_generator.state,
                "curve": [row.as_list() for row in self.curve], "pending": list(self.pending)}

    def restore(self, record: Mapping[str, Any]) -> None:
        self.model.load_state_dict(record["model"])
        self.discriminator.load_state_dict(record["discriminator"])
        self.optimiser.load_state_dict(record["optimiser"])
        self.disc_optimiser.load_state_dict(record["disc_optimiser"])
        self.generator.set_state(record["torch_rng"])
        self.rng.bit_generator.state = record["numpy_rng"]
        self.iteration, self.seconds = int(record["iteration"]), float(record["seconds"])
        self.curve = [CurveRow.from_list(row) for row in record["curve"]]
        self.pending = list(record["pending"])


def mouth_opening(points68: np.ndarray) -> np.ndarray:
    """[N] the inner lips' gap (points 62 to 66) over the eye-corner distance (36 to 45) of [N, 68, 2] points."""
    gap = np.linalg.norm(points68[:, 66] - points68[:, 62], axis=-1)
    return gap / np.linalg.norm(points68[:, 45] - points68[:, 36], axis=-1)


def landmark_flow_loss(rendered: Rendered, target_points: np.ndarray, source_points: np.ndarray, size: int
                       ) -> torch.Tensor:
    """Mean squared distance in pixels of a ``size`` px frame between where the rays through each target frame's
    landmarks ([F, L, 2] pixels) land in its source image and the source frame's same landmarks ([F, L, 2])."""
    device = rendered.opacity.device
    target = torch.as_tensor(target_points, device=device) * (2.0 / size) - 1.0  # project()'s grid coordinates
    landed = landing_at(rendered.landing, rendered.landing_opacity, target)
    landed_pixels = (landed + 1.0) * (size / 2.0)
    return (landed_pixels - torch.as_tensor(source_points, device=device)).square().sum(-1).mean()


def mouth_weights(lips: np.ndarray, size: int, weight: float, device: torch.device) -> torch.Tensor:
    """[F, 1, size, size] pixel-loss weights: ``weight`` inside each frame's lip box ([F, 20, 2] points, the box
    grown by half its size on every side), 1 elsewhere."""
    low, high = np.nanmin(lips, axis=1), np.nanmax(lips, axis=1)
    margin = 0.5 * (high - low)
    low, high = torch.as_tensor(low - margin, device=device), torch.as_tensor(high + margin, device=device)
    centres = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    inside_x = (centres[None] >= low[:, :1]) & (centres[None] <= high[:, :1])  # [F, size] columns
    inside_y = (centres[None] >= low[:, 1:]) & (centres[None] <= high[:, 1:])  # [F, size] rows
    inside = inside_y[:, :, None] & inside_x[:, None, :]
    return (1.0 + (weight - 1.0) * inside.float())[:, None]


def concat_cameras(parts: Sequence[Cameras]) -> Cameras:
    sizes = {p.size for p in parts}
    if len(sizes) != 1:
        raise ValueError(f"cameras of different image sizes {sorted(sizes)} in one batch")
    return Cameras(torch.cat([p.c2w for p in parts]), torch.cat([p.focal for p in parts]),
                   torch.cat([p.cx for p in parts]), torch.cat([p.cy for p in parts]), sizes.pop())


def _check_record(record: Mapping[str, Any]) -> None:
    for key in ("kind", "config", "iteration", "model", "discriminator", "optimiser", "disc_optimiser", "torch_rng",
                "numpy_rng", "curve", "pending"):
        if key not in record:
            raise KeyError(key)


def _incompatible(cfg: S3DNeRFConfig):
    def check(record: Mapping[str, Any]) -> str | None:
        if record.get("kind") != "s3dnerf":
            return "is not an S3D-NeRF checkpoint"
        if from_dict(S3DNeRFConfig, record["config"], where="s3dnerf (checkpoint)") != cfg:
            return "was made with another configuration"
        return None
    return check


def train_s3dnerf(cfg: S3DNeRFConfig, processed_root: Path, identities: Sequence[str], split: SplitConfig,
                  pretrained: Mapping[str, Path], model_dir: Path, log_metric: MetricLogger | None = None
                  ) -> dict[str, Any]:
    """Train S3D-NeRF on the TRAIN frames of ``identities`` (the held-out one is left out) into ``model_dir``
    (resumes from its checkpoint); the summary."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device, "s3dnerf")
    model_dir = Path(model_dir)
    frames, windows = training_windows(Path(processed_root), identities, split, cfg)
    motion = None
    if cfg.audio_motion:
        motion, features = motion_audio(frames, windows, *motion_network(pretrained, device), cfg.motion_window)
        frames = [dataclasses.replace(f, audio=features[f.name]) for f in frames]
    trainer = S3DNeRFTrainer(cfg, frames, windows, pretrained.get("sync_expert"), device)
    checkpoints = Checkpoints(model_dir, cfg.iterations + 1, cfg.checkpoint_seconds)
    loaded = checkpoints.load(validate=_check_record, incompatible=_incompatible(cfg))
    if loaded is not None:
        trainer.restore(loaded.record)
        log.info("s3dnerf: resuming at iteration %d from %s", trainer.iteration, loaded.path)
    log.info("s3dnerf: training on %s (%s windows of %d frames), holding out %s, %d px from %d px renders",
             ", ".join(trainer.names), ", ".join(str(len(windows.starts[n])) for n in trainer.names),
             cfg.sync_frames, windows.holdout or "nothing", cfg.image_size, cfg.render_size)
    started = time.perf_counter() - trainer.seconds
    progress = tqdm(total=cfg.iterations, initial=trainer.iteration, desc="s3dnerf", mininterval=10)
    while trainer.iteration < cfg.iterations:
        losses = trainer.step()
        trainer.pending.append(losses["total"])
        progress.update(1)
        step, last = trainer.iteration, trainer.iteration == cfg.iterations
        if step % cfg.log_every == 0 or last:
            loss = float(np.mean(trainer.pending))
            trainer.pending.clear()
            trainer.seconds = time.perf_counter() - started
            trainer.curve.append(CurveRow(step, trainer.seconds, loss, None))
            log.info("s3dnerf step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
            if log_metric is not None:
                for key, value in losses.items():
                    log_metric(f"train_{key}", value, step)
        if not last and checkpoints.due(step):
            trainer.seconds = time.perf_counter() - started
            checkpoints.save(trainer.checkpoint())
    progress.close()
    trainer.seconds = time.perf_counter() - started
    write_curve(model_dir / CURVE_FILE, trainer.curve)
    record = {"config": asdict(cfg), "audio_dim": trainer.audio_dim, "identities": trainer.names,
              "held_out": windows.holdout, "model": trainer.model.state_dict()}
    if motion is not None:
        record["motion"] = motion.state()
    torch.save(record, model_dir / MODEL_FILE)
    checkpoints.save(trainer.checkpoint())
    checkpoints.finish()
    return {"seconds": trainer.seconds, "iterations": trainer.iteration, "identities": trainer.names,
            "held_out": windows.holdout,
            "training_windows": {name: int(len(windows.starts[name])) for name in trainer.names}}


class S3DNeRFHead:
    """An identity rendered from one of its images by a trained model: no optimisation for the identity.

    The source image is the identity's first frame that is neither a test frame of its own split nor without a
    face (``IdentityReader.training_frames``), the frame the ``static`` row repeats; the targets' cameras come
    from the tracking of the driven frames. Frames are rendered at ``image_size`` and resized to the identity's
    frame size, so they are scored against its real frames (a demo that renders smaller is blurrier for it).
    """

    def __init__(self, model_dir: Path, identity_root: Path, device: str = "cpu",
                 pretrained: Mapping[str, Path] | None = None) -> None:
        record = torch.load(Path(model_dir) / MODEL_FILE, map_location=device, weights_only=True)
        self.cfg = from_dict(S3DNeRFConfig, record["config"], where="s3dnerf (model)")
        self.device = torch.device(device)
        self.motion = None
        if "motion" in record:
            self.motion = MotionFeatures.from_state(record["motion"], *motion_network(pretrained or {}, self.device))
        self.model = S3DNeRF(self.cfg, int(record["audio_dim"])).to(self.device)
        self.model.load_state_dict(record["model"])
        self.model.eval()
        self.trained_on = list(record["identities"])
        self.data = IdentityFrames.open(Path(identity_root), self.cfg)
        if self.data.name in self.trained_on:
            log.warning("s3dnerf: %s was among the training identities %s: not a single-shot result",
                        self.data.name, self.trained_on)
        candidates = self.data.reader.training_frames()
        if not len(candidates) or not self.data.tracked(candidates[:1]).all():
            raise IdentityError(f"{self.data.reader.root}: its first non-test frame, the source image, is missing or "
                                "untracked; re-run the track stage")
        self.source_frame = int(candidates[0])
        source = images_tensor([self.data.image(self.source_frame)], self.device)
        with torch.no_grad():
            self.planes = self.model.encode(source)
        self.source = source
        self.source_visible = torch.as_tensor(self.data.source_visible(self.source_frame, self.cfg.sr_source),
                                              device=self.device)[None, None]
        self.image_size = self.data.stored_size

    def render(self, driving: Driving, batch: int = 8) -> Iterator[np.ndarray]:
        kind = self.motion.kind if self.motion is not None else self.cfg.audio_feature
        features = driving.audio_features.get(kind)
        if features is None:
            raise UnsupportedDriving(f"s3dnerf needs {kind!r} audio features")
        if self.motion is not None:  # the driving recording's own speaker mean, as each TRAIN segment had
            features = self.motion.recording(features, own_voice=False)
        frames = np.asarray(driving.frame_indices)
        for first in range(0, len(frames), batch):
            chunk = frames[first:first + batch]
            count = len(chunk)
            with torch.no_grad():
                out = self.model([p.expand(count, -1, -1, -1, -1) for p in self.planes],
                                 self.source.expand(count, -1, -1, -1),
                                 self.data.cameras(np.full(count, self.source_frame), self.device),
                                 self.data.cameras(chunk, self.device),
                                 torch.as_tensor(np.asarray(features[first:first + count], np.float32),
                                                 device=self.device),
                                 self.source_visible.expand(count, -1, -1, -1))
            images = (out.image.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
            for image in images:
                yield image if self.image_size == self.cfg.image_size else cv2.resize(
                    image, (self.image_size, self.image_size), interpolation=cv2.INTER_CUBIC)
