"""JEAN training for one identity: the expression transformer on DTW pairs, then the dynamic NeRF.

1. **Expression transformer** (when ``expression_transformer``): trained on
   the identity's training pairs (``data.training_pairs``), then frozen; its
   expression code e_e of every frame is computed per recording (windows
   never cross a recording) and kept in memory.
2. **Dynamic NeRF** (Sec. 3.3): each iteration takes one training frame
   (``frames_per_step`` of them in the demo, the rays split evenly),
   ``rays_per_step`` pixels (``face_ray_fraction`` of them inside the head
   mask, half of those on the lips, in the demo), each ray conditioned by its
   frame's e_in from the audio encoder (fine-tuned at
   ``audio_learning_rate``) and the frozen expression code, renders coarse
   and fine, and minimises the sum of their photometric MSEs (Eq. 6) against
   the frame composited over its own torso and background (plus, in the demo,
   ``opacity_weight`` times the MSE of their opacities against the head
   mask). Adam, the learning rate decaying exponentially from
   ``learning_rate`` to ``final_learning_rate``.

``model_dir`` keeps ``checkpoint.pt`` (model, optimiser, RNG states,
iteration, seconds, curve) written every ``checkpoint_every`` iterations and
every ``checkpoint_seconds``; a second call resumes from it. The finished
model is ``model.pt``, with ``curve.csv`` and ``samples/*.png``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np
import torch
from tqdm import tqdm

from talkhead_models.checkpoints import CURVE_FILE, Checkpoints, CurveRow, write_curve
from talkhead_models.components.backends import resolve_device
from talkhead_models.components.head_prior import ShapePrior, identity_face_points
from talkhead_models.components.schedule import exponential_lr, window_indices
from talkhead_models.components.scene import head_scene_frame
from talkhead_models.config import from_dict
from talkhead_models.data.identity_reader import IdentityError, IdentityReader
from talkhead_models.methods.base import SAMPLES_DIR, MetricLogger
from talkhead_models.methods.jean.config import JeanConfig
from talkhead_models.methods.jean.data import (BOX_FRAMES, HEAD_LABELS, LIP_LABELS, backdrop, expression_inputs,
                                               recording_bounds, training_pairs, training_sequence_frames,
                                               validation_frames)
from talkhead_models.methods.jean.model import (MODEL_FILE, PRIOR_DEPTH_RESOLUTION, JeanModel, camera_rays,
                                                render_frame, save_model)
from talkhead_models.preprocess.frames import read_image, resized

log = logging.getLogger(__name__)


class Normaliser:
    """Per-feature mean and standard deviation of the training frames' expression inputs."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean, self.std = np.asarray(mean, np.float32), np.maximum(np.asarray(std, np.float32), 1e-6)

    @classmethod
    def fit(cls, values: np.ndarray) -> "Normaliser":
        return cls(np.nanmean(values, 0), np.nanstd(values, 0))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return np.nan_to_num((np.asarray(values, np.float32) - self.mean) / self.std)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "Normaliser":
        return cls(np.asarray(record["mean"]), np.asarray(record["std"]))


def expression_codes_per_recording(model: Any, inputs: np.ndarray, first: np.ndarray, last: np.ndarray,
                                   window: int) -> np.ndarray:
    """The transformer's e_e of every frame, each recording encoded on its own (windows never cross one)."""
    from talkhead_models.methods.jean.transformer import expression_codes

    codes = np.zeros((len(inputs), model.code_dim), np.float32)
    for start in np.unique(first):
        stop = int(last[start]) + 1
        codes[start:stop] = expression_codes(model, np.nan_to_num(inputs[start:stop]), window=window)
    return codes


def transformer_options(cfg: JeanConfig) -> dict[str, Any]:
    """The expression transformer's architecture from the config (stored with the model to rebuild it)."""
    return {"window": cfg.transformer_window, "hidden_dim": cfg.transformer_hidden,
            "model_dim": cfg.transformer_model_dim, "layers": cfg.transformer_layers,
            "heads": cfg.transformer_heads, "dropout": cfg.transformer_dropout,
            "feedforward_dim": cfg.transformer_feedforward}


class JeanTrainer:
    """The NeRF stage: per-frame conditions, ray sampling, optimisation and checkpoints."""

    def __init__(self, cfg: JeanConfig, reader: IdentityReader, pretrained: Mapping[str, Path],
                 model_dir: Path, device: torch.device) -> None:
        self.cfg, self.reader, self.device, self.model_dir = cfg, reader, device, Path(model_dir)
        self.cameras = reader.cameras()
        self.frames = training_sequence_frames(reader)
        self.validation = validation_frames(reader, self.frames)
        self.first, self.last = recording_bounds(reader)
        self.source_size = int(reader.frame(int(self.frames[0])).shape[0])
        self.size = max(8, self.source_size // cfg.render_downscale)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.background = read_image(reader.layout.path("background")).astype(np.float32) / 255.0
        self._audio_setup(pretrained)
        self._expression_setup(pretrained)
        self._scene_setup()
        self.model = JeanModel(cfg, self.scene.box, self.audio_dim_in, self.expression_dim_in).to(device)
        if cfg.surface_band > 0:
            self.model.set_prior(self._shape_prior())
        if self.pretrained_audio is not None:
            self.model.audio_net.load_state_dict(self.pretrained_audio.state_dict())
        elif self.model.audio_net is not None:
            flat = self.audio[self.reader.training_frames()].reshape(-1, self.audio.shape[-1])
            self.model.audio_net.feature_mean.copy_(torch.as_tensor(flat.mean(0)))
            self.model.audio_net.feature_std.copy_(torch.as_tensor(np.maximum(flat.std(0), 1e-6)))
        # The encoder's own parameters take its learning rate; AudioAttNet belongs to the NeRF (AD-NeRF).
        nerf_params = [p for name, p in self.model.named_parameters() if not name.startswith("audio_net.")]
        groups = [{"params": nerf_params, "lr": cfg.learning_rate, "base": "nerf"}]
        if self.model.audio_net is not None:
            audio_lr = cfg.audio_learning_rate if cfg.audio_encoder == "contrastive" else cfg.learning_rate
            groups.append({"params": list(self.model.audio_net.parameters()), "lr": audio_lr, "base": "audio"})
        self.optimiser = torch.optim.Adam(groups)
        self.iteration, self.seconds, self.curve, self.pending = 0, 0.0, [], []
        self._load_images()

    # ------------------------------------------------------------------ inputs
    def _audio_setup(self, pretrained: Mapping[str, Path]) -> None:
        cfg = self.cfg
        self.audio = None
        self.audio_dim_in = None
        self.pretrained_audio = None
        self.audio_source = "none"
        if cfg.audio_encoder == "none":
            return
        self.audio = np.asarray(self.reader.audio_features(cfg.audio_feature), np.float32)  # [N, 16, D]
        self.audio_dim_in = int(self.audio.shape[-1])
        if cfg.audio_encoder == "contrastive":
            from talkhead_models.pretrained.audio_contrastive import load_audio_encoder

            if "audio_contrastive" not in pretrained:
                raise FileNotFoundError("JEAN's audio encoder is pre-trained by the pretrain_audio_contrastive "
                                        "stage (`dvc repro pretrain_audio_contrastive`)")
            encoder, info = load_audio_encoder(Path(pretrained["audio_contrastive"]))
            kind = info.get("feature_kind", info.get("audio_feature"))
            if kind != cfg.audio_feature:
                raise ValueError(f"jean.audio_feature is {cfg.audio_feature!r} but the pre-trained audio encoder "
                                 f"in {pretrained['audio_contrastive']} reads {kind!r}; set them alike")
            self.pretrained_audio = encoder
            self.audio_source = f"contrastive ({kind})"
        else:
            self.audio_source = f"scratch ({cfg.audio_feature})"

    def _expression_setup(self, pretrained: Mapping[str, Path]) -> None:
        cfg = self.cfg
        self.expression = None
        self.expression_dim_in = None
        self.transformer = None
        self.normaliser = None
        self.transformer_summary: dict[str, Any] = {}
        if cfg.expression_feature == "none":
            return
        raw = expression_inputs(cfg, self.reader, pretrained)
        if len(raw) != self.reader.num_frames:
            raise IdentityError(f"{self.reader.root}: {len(raw)} expression inputs for {self.reader.num_frames} "
                                "frames; re-run the stage that made them")
        training = self.reader.training_frames()
        self.normaliser = Normaliser.fit(raw[training])
        inputs = self.normaliser(raw)
        if cfg.expression_transformer:
            self.transformer = self._train_transformer(inputs)
            self.expression = expression_codes_per_recording(self.transformer, inputs, self.first, self.last,
                                                             cfg.transformer_window)
        else:
            self.expression = inputs
        self.expression_dim_in = int(self.expression.shape[-1])

    def _train_transformer(self, inputs: np.ndarray):
        from talkhead_models.methods.jean.transformer import TransformerTraining, train_expression_transformer

        cfg = self.cfg
        pairs = training_pairs(self.reader)
        started = time.perf_counter()
        training = TransformerTraining(steps=cfg.transformer_steps, batch_size=cfg.transformer_batch,
                                       learning_rate=cfg.transformer_learning_rate,
                                       weight_decay=cfg.transformer_weight_decay,
                                       swap_probability=cfg.swap_probability, seed=cfg.seed)
        self.transformer_options = transformer_options(cfg)
        model, history = train_expression_transformer(inputs, [(a, b) for _, a, b in pairs], training,
                                                      model_options=self.transformer_options)
        model.eval()
        seconds = time.perf_counter() - started
        last = history[-1] if history else {}
        self.transformer_summary = {"transformer_seconds": seconds, "transformer_pairs": len(pairs),
                                    "transformer_steps": cfg.transformer_steps,
                                    **{f"transformer_{k}": float(v) for k, v in last.items()
                                       if isinstance(v, (int, float)) and k != "step"}}
        log.info("expression transformer: %d pairs, %d steps in %.0f s (last %s)", len(pairs),
                 cfg.transformer_steps, seconds, last)
        return model

    def _scene_setup(self) -> None:
        picked = self.frames[np.linspace(0, len(self.frames) - 1, min(BOX_FRAMES, len(self.frames))).astype(int)]
        masks = ((self.cameras.c2w[i], np.isin(self.reader.semantic(int(i)), HEAD_LABELS)) for i in picked)
        scene = head_scene_frame(masks, self.cameras.focal, self.cameras.cx, self.cameras.cy, self.cfg.box_margin,
                                 self.reader.root.name)
        if scene is None:
            raise IdentityError(f"{self.reader.layout.path('semantic')}: no head pixels in the training frames; "
                                "re-run the parse stage")
        self.scene = scene

    def _shape_prior(self) -> ShapePrior:
        """R2-Talker's solid head over this model's box: an ellipsoid spanning the box (without its margin),
        its front the training frames' landmarks triangulated with their cameras (the ellipsoid alone when the
        identity has no landmarks)."""
        face = identity_face_points(self.reader, self.frames)
        if face is None:
            log.warning("%s: no landmarks to triangulate; the solid-head prior is the ellipsoid alone",
                        self.reader.root)
        else:
            face = (face - self.scene.centre) * self.scene.scale
        box = torch.as_tensor(np.asarray(self.scene.box, np.float32))
        extent = box[3:] / (1.0 + self.cfg.box_margin)
        return ShapePrior.spanning(-extent, extent, face, box, PRIOR_DEPTH_RESOLUTION)

    def _load_images(self) -> None:
        """Every training frame's target, backdrop and face / lip pixels at the rendering size, as uint8."""
        size = self.size
        count = len(self.frames)
        self.truth = np.zeros((count, size, size, 3), np.uint8)
        self.backdrops = np.zeros((count, size, size, 3), np.uint8)
        self.head_masks = np.zeros((count, size, size), bool)
        self.face_pixels: list[np.ndarray] = []
        self.lip_pixels: list[np.ndarray] = []
        for slot, index in enumerate(tqdm(self.frames, desc="jean: frames", leave=False, mininterval=5)):
            self.truth[slot] = resized(self.reader.gt_image(int(index)), size)
            self.backdrops[slot] = (resized(backdrop(self.reader, int(index), self.background), size) * 255 + .5
                                    ).astype(np.uint8)
            labels = self.reader.semantic(int(index))
            if labels.shape[0] != size:
                labels = cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST)
            self.head_masks[slot] = np.isin(labels, HEAD_LABELS)
            self.face_pixels.append(np.flatnonzero(self.head_masks[slot]))
            self.lip_pixels.append(np.flatnonzero(np.isin(labels, LIP_LABELS)))

    # ------------------------------------------------------------------ conditions
    def audio_windows(self, frames: np.ndarray) -> torch.Tensor | None:
        if self.audio is None:
            return None
        index = window_indices(frames, self.cfg.audio_attention_frames, self.first[frames], self.last[frames])
        return torch.as_tensor(self.audio[np.minimum(index, len(self.audio) - 1)], device=self.device)

    def expression_input(self, frames: np.ndarray) -> torch.Tensor | None:
        if self.expression is None:
            return None
        return torch.as_tensor(self.expression[frames], device=self.device)

    def camera(self, index: int) -> torch.Tensor:
        return torch.as_tensor(self.scene.c2w(self.cameras.c2w[index]), dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------ training
    def _rays(self, slot: int, total: int) -> np.ndarray:
        """``total`` pixels of frame ``slot``: ``face_ray_fraction`` inside the head mask (half of them on the
        lips), the rest uniform over the frame."""
        cfg, size = self.cfg, self.size
        face = self.face_pixels[slot]
        lips = self.lip_pixels[slot]
        on_face = int(round(total * cfg.face_ray_fraction)) if len(face) else 0
        on_lips = on_face // 2 if len(lips) else 0
        chosen = [self.rng.integers(0, size * size, total - on_face)]
        if on_face - on_lips:
            chosen.append(face[self.rng.integers(0, len(face), on_face - on_lips)])
        if on_lips:
            chosen.append(lips[self.rng.integers(0, len(lips), on_lips)])
        return np.concatenate(chosen)

    def step(self) -> float:
        cfg = self.cfg
        progress = self.iteration / max(cfg.iterations - 1, 1)
        for group in self.optimiser.param_groups:
            if group["base"] == "nerf" or cfg.audio_encoder == "scratch":
                group["lr"] = exponential_lr(cfg.learning_rate, cfg.final_learning_rate, progress)
        slots = self.rng.integers(0, len(self.frames), cfg.frames_per_step)
        frames = self.frames[slots]
        conditions = self.model.condition(self.audio_windows(frames), self.expression_input(frames))
        per_frame = max(1, min(cfg.rays_per_step, self.size * self.size) // cfg.frames_per_step)
        origins, directions, targets, behinds, inside, ray_conditions = [], [], [], [], [], []
        for number, (slot, index) in enumerate(zip(slots.tolist(), frames.tolist())):
            pixels = self._rays(slot, per_frame)
            frame_origins, frame_directions = camera_rays(
                self.camera(index), self.cameras.focal, self.cameras.cx, self.cameras.cy, self.size,
                torch.as_tensor(pixels, device=self.device), self.source_size)
            origins.append(frame_origins)
            directions.append(frame_directions)
            targets.append(self.truth[slot].reshape(-1, 3)[pixels])
            behinds.append(self.backdrops[slot].reshape(-1, 3)[pixels])
            inside.append(self.head_masks[slot].reshape(-1)[pixels])
            ray_conditions.append(conditions[number].expand(len(pixels), -1))
        # One condition per ray, [R, 1, C]: the field broadcasts it over the ray's samples.
        condition = torch.cat(ray_conditions)[:, None, :]
        coarse, fine, _ = self.model.render_rays(condition, torch.cat(origins), torch.cat(directions),
                                                 perturb=True, generator=self.generator)
        target = torch.as_tensor(np.concatenate(targets), device=self.device).float() / 255.0
        behind = torch.as_tensor(np.concatenate(behinds), device=self.device).float() / 255.0
        loss = sum(((result.color + (1.0 - result.opacity)[:, None] * behind - target) ** 2).mean()
                   for result in (coarse, fine))
        if cfg.opacity_weight > 0:
            mask = torch.as_tensor(np.concatenate(inside), device=self.device).float()
            loss = loss + cfg.opacity_weight * sum(((result.opacity - mask) ** 2).mean() for result in (coarse, fine))
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self.iteration += 1
        return loss.item()

    def render(self, index: int, condition_frame: int | None = None) -> np.ndarray:
        """A full frame at the rendering size over the frame's own backdrop (samples and validation)."""
        frame = index if condition_frame is None else condition_frame
        frames = np.array([frame])
        self.model.eval()
        with torch.no_grad():
            condition = self.model.condition(self.audio_windows(frames), self.expression_input(frames))[0]
            colour, opacity = render_frame(self.model, condition, self.camera(index),
                                           (self.cameras.focal, self.cameras.cx, self.cameras.cy), self.size,
                                           self.source_size)
        self.model.train()
        behind = resized(backdrop(self.reader, index, self.background), self.size)
        image = colour.cpu().numpy() + (1.0 - opacity.cpu().numpy())[..., None] * behind
        return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)

    def validation_psnr(self) -> float:
        if len(self.validation) == 0:
            return float("nan")
        values = []
        for index in self.validation:
            rendered = self.render(int(index)).astype(np.float32) / 255
            truth = resized(self.reader.frame(int(index)), self.size).astype(np.float32) / 255
            values.append(-10 * np.log10(max(float(((rendered - truth) ** 2).mean()), 1e-10)))
        return float(np.mean(values))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict:
        return {"kind": "jean", "config": asdict(self.cfg), "iteration": self.iteration, "seconds": self.seconds,
                "model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
                "torch_rng": self.generator.get_state(), "numpy_rng": self.rng.bit_generator.state,
                "curve": [row.as_list() for row in self.curve], "pending": list(self.pending)}

    def restore(self, record: Mapping[str, Any]) -> None:
        self.model.load_state_dict(record["model"])
        self.optimiser.load_state_dict(record["optimiser"])
        self.generator.set_state(record["torch_rng"])
        self.rng.bit_generator.state = record["numpy_rng"]
        self.iteration, self.seconds = int(record["iteration"]), float(record["seconds"])
        self.curve = [CurveRow.from_list(row) for row in record["curve"]]
        self.pending = list(record["pending"])

    def model_record(self) -> dict:
        record = {"config": asdict(self.cfg), "scene": self.scene.to_dict(), "image_size": self.source_size,
                  "render_size": self.size, "audio_feature_dim": self.audio_dim_in,
                  "expression_input_dim": self.expression_dim_in, "training_frames": self.frames.tolist(),
                  "audio_source": self.audio_source}
        if self.normaliser is not None:
            record["normaliser"] = self.normaliser.to_dict()
        if self.transformer is not None:
            record["transformer"] = {"state_dict": self.transformer.state_dict(),
                                     "feature_dim": int(self.transformer.feature_dim),
                                     "options": self.transformer_options}
        return record


def _check_record(record: Mapping[str, Any]) -> None:
    for key in ("kind", "config", "iteration", "model", "optimiser", "torch_rng", "numpy_rng", "curve", "pending"):
        if key not in record:
            raise KeyError(key)


def _incompatible(cfg: JeanConfig):
    def check(record: Mapping[str, Any]) -> str | None:
        if record.get("kind") != "jean":
            return "is not a JEAN checkpoint"
        if from_dict(JeanConfig, record["config"], where="jean (checkpoint)") != cfg:
            return "was made with another configuration"
        return None
    return check


def train_jean(cfg: JeanConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path,
               log_metric: MetricLogger | None = None) -> dict[str, Any]:
    """Train JEAN on one identity into ``model_dir`` (resumes from its checkpoint); the summary."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device, "jean")
    reader = IdentityReader(identity_root)
    model_dir = Path(model_dir)
    trainer = JeanTrainer(cfg, reader, pretrained, model_dir, device)
    checkpoints = Checkpoints(model_dir, cfg.checkpoint_every, cfg.checkpoint_seconds)
    loaded = checkpoints.load(validate=_check_record, incompatible=_incompatible(cfg))
    if loaded is not None:
        trainer.restore(loaded.record)
        log.info("jean@%s: resuming at iteration %d from %s", reader.root.name, trainer.iteration, loaded.path)
    log.info("jean@%s: %d training frames at %d px, audio %s, expression %s%s", reader.root.name,
             len(trainer.frames), trainer.size, trainer.audio_source, cfg.expression_feature,
             " through the transformer" if cfg.expression_transformer else "")
    started = time.perf_counter() - trainer.seconds
    progress = tqdm(total=cfg.iterations, initial=trainer.iteration, desc=f"jean@{reader.root.name}",
                    mininterval=10)
    while trainer.iteration < cfg.iterations:
        trainer.pending.append(trainer.step())
        progress.update(1)
        step = trainer.iteration
        last = step == cfg.iterations
        if step % cfg.log_every == 0 or last:
            loss = float(np.mean(trainer.pending))
            trainer.pending.clear()
            psnr = trainer.validation_psnr() if (step % cfg.validate_every == 0 or last) else None
            trainer.seconds = time.perf_counter() - started
            trainer.curve.append(CurveRow(step, trainer.seconds, loss, psnr))
            if log_metric is not None:
                log_metric("train_loss", loss, step)
                if psnr is not None and np.isfinite(psnr):
                    log_metric("val_psnr", psnr, step)
        if not last and checkpoints.due(step):
            trainer.seconds = time.perf_counter() - started
            checkpoints.save(trainer.checkpoint())
    progress.close()
    trainer.seconds = time.perf_counter() - started
    samples = model_dir / SAMPLES_DIR
    samples.mkdir(exist_ok=True)
    for index in trainer.validation[:1].tolist() + [int(trainer.frames[len(trainer.frames) // 2])]:
        cv2.imwrite(str(samples / f"frame_{index:05d}.png"), trainer.render(int(index))[..., ::-1])
    write_curve(model_dir / CURVE_FILE, trainer.curve)
    save_model(model_dir / MODEL_FILE, trainer.model, trainer.model_record())
    checkpoints.save(trainer.checkpoint())
    checkpoints.finish()
    final_psnr = trainer.curve[-1].val_psnr if trainer.curve and trainer.curve[-1].val_psnr is not None else None
    return {"seconds": trainer.seconds, "iterations": trainer.iteration, "training_frames": len(trainer.frames),
            "render_size": trainer.size, **({"val_psnr": final_psnr} if final_psnr is not None else {}),
            **trainer.transformer_summary}
