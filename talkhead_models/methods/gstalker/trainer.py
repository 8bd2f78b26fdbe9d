"""GSTalker's training: static head, static torso, then Gaussians and deformation fields jointly (Sec. 3.3, 4.1.2).

Iterations are counted over the whole run: ``[0, S)`` static head (camera =
inverse head pose), ``[S, 2S)`` static torso (fixed camera), ``[2S, 2S + J)``
joint, one random training frame per iteration (``frames_per_step`` in the
joint stage). Each part's own count (its static iterations plus the joint
ones) drives its 3D-GS schedule: the position learning-rate decay, adaptive
density control and the SH degree.

Loss (Sec. 3.3): ``L1(colour) + l1 L1(alpha, parsing mask) + l2 perceptual +
l3 L1(lip patch)``. Every render is composed over the background ``bc.jpg``
(a part that covers what it should not cannot hide behind a black
background). The static head is compared with the frame whose non-head
pixels are replaced by the background, the static torso likewise with neck
and torso, outside the head (what the head hides is unknown); the joint
stage with the real frame. The perceptual term is LPIPS
when its weights are present and 1 - SSIM (3D-GS's structural term)
otherwise.

A few hundred CPU iterations are too few for the pixels alone to teach the
head's field lip motion (it learns a pose correction and flattens the audio
code instead), so two aids the paper does not need can be switched on: a
mouth-motion prior (``mouth_motion_weight``: the mouth's Gaussians should move
on screen as the tracked lips moved from the mean mouth) and a warm-up that
fits the field to that prior alone, without rendering, when the joint stage
begins (``mouth_warmup_iterations``). Both read landmarks of training frames
only; the renderer is driven by audio.

On a CPU the joint stage can train on windows of the frames (``joint_crop``,
mostly around the mouth) with the Gaussians outside a window culled before
the deformation fields run; the paper's setting is the whole frame.

Everything needed to continue lives in ``checkpoint.pt`` (weights only:
tensors and plain containers; the Gaussians are saved as tensors and
rebuilt, since their number changes; both RNG states; the losses not yet in
the curve), written every ``checkpoint_every`` iterations, every
``checkpoint_seconds`` of wall clock and at the end
(talkhead_models.checkpoints: atomic, the previous one kept, an unreadable
one moved aside); a resumed run continues as the uninterrupted one would
have.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import cv2
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from talkhead_models.components.backends import resolve_device
from talkhead_models.components.schedule import exponential_lr
from talkhead_models.atomic import atomic_file
from talkhead_models.checkpoints import (CHECKPOINT_FILE, CURVE_FILE, Checkpoints, CurveRow, UnreadableCheckpoint,
                                         read_checkpoint, read_curve, write_curve)
from talkhead_models.components.densify import DensificationState, DensificationStrategy
from talkhead_models.config import to_dict
from talkhead_models.methods.base import MetricLogger
from talkhead_models.methods.gstalker.config import GSTalkerConfig
from talkhead_models.methods.gstalker.model import (FrameCondition, GaussianPart, GSTalkerModel, PartRender, compose,
                                                    project_points, random_gaussians)
from talkhead_models.methods.gstalker.motion import MotionFeatures, training_features
from talkhead_models.methods.gstalker.scene import FrameTargets, IdentityScene, lips_box
from talkhead_models.metrics.base import MissingWeightsError
from talkhead_models.metrics.image import ssim_per_frame

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("format", "step", "seconds", "meta", "head", "torso", "networks", "optimizers", "densify",
                   "generator")
"""What every GSTalker checkpoint holds (``torch_rng`` and ``pending_losses``: since this change, absent from older
ones)."""
SAMPLES = "samples"
FORMAT = "gstalker-2"
PARTS = ("head", "torso")
MOTION_SOFTNESS = 1.0
"""Pixels added (squared) to the squared distances of the mouth-motion prior's interpolation, so a Gaussian on a
landmark takes that landmark's displacement without dividing by zero."""
MOUTH_WARMUP_FRAMES = 4
"""Training frames per mouth warm-up step (their gradients averaged)."""
CULL_MARGIN = 0.25
"""Joint-stage windows render the Gaussians within this fraction of the window's side of it (room for offsets)."""


# --------------------------------------------------------------------------- model construction and checkpoints


def torso_camera(scene: IdentityScene) -> Tensor:
    """The torso's fixed view: looking down -z at the origin from the training cameras' mean distance."""
    c2w = torch.eye(4)
    c2w[2, 3] = scene.mean_camera_distance()
    return c2w


def build_model(cfg: GSTalkerConfig, scene: IdentityScene, seed_offset: int = 0) -> GSTalkerModel:
    """A fresh model: random Gaussians in the cube for both parts, networks seeded by ``cfg.seed``."""
    generator = torch.Generator().manual_seed(cfg.seed + seed_offset)
    head = GaussianPart(random_gaussians(cfg.num_gaussians, cfg.init_cube_side, cfg.init_opacity, cfg.sh_degree,
                                         generator))
    torso = GaussianPart(random_gaussians(cfg.num_gaussians, cfg.init_cube_side, cfg.init_opacity, 0, generator))
    torch.manual_seed(cfg.seed)
    return GSTalkerModel(cfg, scene.feature_shape, torso_camera(scene), torch.from_numpy(scene.mean_training_pose()),
                         head, torso)


def model_from_checkpoint(cfg: GSTalkerConfig, checkpoint: Mapping[str, Any]) -> GSTalkerModel:
    """Rebuild the model (Gaussians of the saved counts) from a checkpoint's tensors."""
    if checkpoint.get("format") != FORMAT:
        raise ValueError(f"not a GSTalker checkpoint (format {checkpoint.get('format')!r}, expected {FORMAT!r})")
    networks = checkpoint["networks"]
    meta = checkpoint["meta"]
    model = GSTalkerModel(cfg, (meta["feature_window"], meta["feature_dim"]), networks["torso_c2w"],
                          networks["pose_mean"], GaussianPart(checkpoint["head"]), GaussianPart(checkpoint["torso"]))
    model.load_state_dict(networks)
    model.head_sh_degree = int(meta["head_sh_degree"])
    return model


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A finished model's checkpoint (the renderer's input)."""
    try:
        return read_checkpoint(path)
    except UnreadableCheckpoint as error:
        raise UnreadableCheckpoint(f"{error}; delete the model folder and re-run the train stage") from error


def _check_record(record: Mapping[str, Any]) -> None:
    missing = [key for key in CHECKPOINT_KEYS if key not in record]
    if missing:
        raise KeyError(f"missing {missing}")


def _incompatible(record: Mapping[str, Any]) -> str | None:
    if record["format"] != FORMAT:
        return f"is of another GSTalker checkpoint format ({record['format']!r}, this code writes {FORMAT!r})"
    return None


# --------------------------------------------------------------------------- losses


class PerceptualLoss:
    """LPIPS (frozen AlexNet, the paper's choice) when its weights are present, else 1 - SSIM (3D-GS's D-SSIM)."""

    def __init__(self, kind: str, device: torch.device) -> None:
        self.network = None
        self.name = "dssim"
        if kind in ("auto", "lpips"):
            from talkhead_models.metrics.perceptual import load_lpips
            try:
                self.network = load_lpips("alex").to(device)
                self.name = "lpips"
            except MissingWeightsError as error:
                if kind == "lpips":
                    raise MissingWeightsError(f"gstalker.perceptual=lpips: {error}; or set perceptual: dssim") \
                        from error
                log.warning("GSTalker perceptual loss: LPIPS weights missing (%s); using 1 - SSIM instead", error)

    def __call__(self, image: Tensor, target: Tensor) -> Tensor:
        """Images [H, W, 3] in [0, 1] -> scalar loss."""
        rendered, truth = image.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None]
        if self.network is not None:
            return self.network(rendered, truth).mean()
        return 1.0 - ssim_per_frame(rendered, truth).mean()


def patch(image: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


# --------------------------------------------------------------------------- training state


@dataclass
class Trainer:
    """Model, optimisers, densification state and counters of one run (resumable)."""

    cfg: GSTalkerConfig
    scene: IdentityScene
    model: GSTalkerModel
    device: torch.device
    step: int = 0
    seconds: float = 0.0
    densify: dict[str, DensificationState] = field(default_factory=dict)
    generator: torch.Generator = field(default_factory=torch.Generator)
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    motion: MotionFeatures | None = None
    """The audio-to-motion features' normaliser (``audio_feature: a2m``), saved so renders use the same."""
    pending_losses: list[float] = field(default_factory=list)
    """Losses of the iterations since the last curve row (the next row is their mean)."""

    def __post_init__(self) -> None:
        self.size = self.scene.image_size // self.cfg.train_downscale
        self.static_size = self.scene.image_size // self.cfg.static_downscale
        self._views: dict[int, tuple[Tensor, Tensor]] = {}
        self.strategy = DensificationStrategy(self.cfg.densify)
        self.perceptual = (PerceptualLoss(self.cfg.perceptual, self.device) if self.cfg.perceptual_weight > 0
                           else None)
        self._build_optimizers()
        if not self.densify:
            self.densify = {part: DensificationState.initial(getattr(self.model, part).count,
                                                             self.cfg.densify_extent, self.device)
                            for part in PARTS}

    # ----- optimisers

    def _build_optimizers(self) -> None:
        cfg = self.cfg
        for part in PARTS:
            params = getattr(self.model, part).params
            groups = [
                {"params": [params["means"]], "lr": cfg.position_lr * cfg.densify_extent, "name": "means"},
                {"params": [params["scales"]], "lr": cfg.scaling_lr, "name": "scales"},
                {"params": [params["quats"]], "lr": cfg.rotation_lr, "name": "quats"},
                {"params": [params["opacities"]], "lr": cfg.opacity_lr, "name": "opacities"},
                {"params": [params["colors"]], "lr": cfg.color_lr, "name": "colors"},
            ]
            if "sh_rest" in params:
                groups.append({"params": [params["sh_rest"]], "lr": cfg.color_lr / 20.0, "name": "sh_rest"})
            self.optimizers[part] = torch.optim.Adam(groups, lr=0.0, eps=1e-15)
        network_groups = [{"params": self.model.network_parameters(), "lr": cfg.deform_lr, "name": "deformation"},
                          {"params": list(self.model.audio_encoder.parameters()), "lr": cfg.audio_learning_rate,
                           "name": "audio"}]
        hashed = self.model.hash_parameters()
        if hashed:
            network_groups.append({"params": hashed, "lr": cfg.hash_lr, "name": "hash"})
        self.optimizers["networks"] = torch.optim.Adam(network_groups, lr=0.0)

    # ----- schedule

    def phase(self, step: int) -> str:
        static = self.cfg.static_iterations
        if step < static:
            return "head"
        if step < 2 * static:
            return "torso"
        return "joint"

    def part_step(self, part: str, step: int) -> int:
        """Iterations ``part`` has trained for before global iteration ``step``."""
        static = self.cfg.static_iterations
        own = min(step, static) if part == "head" else min(max(step - static, 0), static)
        return own + max(step - 2 * static, 0)

    @property
    def part_total(self) -> int:
        return self.cfg.static_iterations + self.cfg.iterations

    def _update_schedule(self, part: str, part_step: int) -> None:
        cfg = self.cfg
        lr = exponential_lr(cfg.position_lr * cfg.densify_extent, cfg.position_lr_final * cfg.densify_extent,
                            part_step / max(self.part_total, 1))
        for group in self.optimizers[part].param_groups:
            if group.get("name") == "means":
                group["lr"] = lr
        if part == "head":
            self.model.head_sh_degree = min(cfg.sh_degree, part_step // max(cfg.sh_degree_interval, 1))

    # ----- one frame

    @property
    def deformed(self) -> bool:
        """True once the joint stage has begun: renders apply the deformation fields."""
        return self.cfg.iterations > 0 and self.step >= 2 * self.cfg.static_iterations

    def view(self, size: int) -> tuple[Tensor, Tensor]:
        """(intrinsics [3, 3], background [size, size, 3]) for renders of ``size`` pixels."""
        if size not in self._views:
            self._views[size] = (self.scene.intrinsics.matrix(size).to(self.device),
                                 self.scene.background(size).to(self.device))
        return self._views[size]

    def condition(self, index: int) -> FrameCondition:
        scene = self.scene
        return FrameCondition(
            c2w=torch.from_numpy(scene.c2w[index]).to(self.device),
            audio=torch.from_numpy(scene.audio(index)).to(self.device),
            eye=torch.tensor([scene.eye[min(index, len(scene.eye) - 1)]], device=self.device),
            pose=torch.from_numpy(scene.raw_poses[index]).to(self.device),
        )

    def targets(self, index: int, size: int) -> FrameTargets:
        targets = self.scene.targets(index, size, self.cfg.lips_padding)
        targets.image = targets.image.to(self.device)
        targets.head_mask = targets.head_mask.to(self.device)
        targets.torso_mask = targets.torso_mask.to(self.device)
        return targets

    def loss(self, phase: str, renders: dict[str, PartRender], targets: FrameTargets, background: Tensor) -> Tensor:
        """The paper's L for the phase (see the module docstring)."""
        cfg = self.cfg
        head_mask, torso_mask = targets.head_mask, targets.torso_mask
        if phase == "head":
            image = compose(renders["head"], None, background)
            truth = targets.image * head_mask + background * (1.0 - head_mask)
            mask_loss = (renders["head"].alpha - head_mask).abs().mean()
        elif phase == "torso":
            visible = 1.0 - head_mask  # what the head hides is unknown
            rendered = renders["torso"]
            image = compose(None, rendered, background)
            truth = targets.image * torso_mask + background * (1.0 - torso_mask)
            color = ((image - truth).abs() * visible).mean()
            mask_loss = ((rendered.alpha - torso_mask).abs() * visible).mean()
            return color + cfg.mask_weight * mask_loss
        else:
            image, truth = compose(renders["head"], renders["torso"], background), targets.image
            torso_visible = 1.0 - head_mask
            mask_loss = ((renders["head"].alpha - head_mask).abs().mean()
                         + ((renders["torso"].alpha - torso_mask).abs() * torso_visible).mean())
        loss = (image - truth).abs().mean() + cfg.mask_weight * mask_loss
        if self.perceptual is not None:
            loss = loss + cfg.perceptual_weight * self.perceptual(image, truth)
        if cfg.lips_weight > 0 and targets.lips_box is not None:
            lips = patch(image, targets.lips_box) - patch(truth, targets.lips_box)
            loss = loss + cfg.lips_weight * lips.abs().mean()
        return loss

    def iteration(self) -> float:
        """One optimisation step on random training frames (``frames_per_step`` in the joint stage); the loss."""
        step, phase = self.step, self.phase(self.step)
        if phase == "joint" and step == 2 * self.cfg.static_iterations and self.cfg.mouth_warmup_iterations > 0:
            self.mouth_warmup()
        parts = PARTS if phase == "joint" else (phase,)
        for part in parts:
            self._update_schedule(part, self.part_step(part, step))
        count = self.cfg.frames_per_step if phase == "joint" else 1
        frames = self.scene.training_frames
        total = 0.0
        for _ in range(count):
            index = int(frames[int(torch.randint(len(frames), (1,), generator=self.generator))])
            loss, renders, subsets = self._frame_loss(phase, parts, index)
            (loss / count).backward()
            total += float(loss.detach()) / count
            for part in parts:
                self._accumulate(part, renders[part], subsets[part])
        with torch.no_grad():
            for part in parts:
                self.optimizers[part].step()
            if phase == "joint":
                self.optimizers["networks"].step()
            for part in parts:
                self._densify(part, self.part_step(part, step) + 1)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total

    def _frame_loss(self, phase: str, parts: tuple[str, ...],
                    index: int) -> tuple[Tensor, dict[str, PartRender], dict[str, Tensor | None]]:
        """Render frame ``index`` (a window of it in a cropped joint stage) and its loss."""
        size = self.size if phase == "joint" else self.static_size
        intrinsics, background = self.view(size)
        condition, targets = self.condition(index), self.targets(index, size)
        side = self.cfg.joint_crop
        subsets: dict[str, Tensor | None] = {part: None for part in parts}
        if phase == "joint" and 0 < side < size:
            x0, y0 = self.crop_origin(targets.lips_box, size, side)
            targets = targets.crop(x0, y0, side)
            intrinsics = self.scene.intrinsics.matrix(size, x0, y0).to(self.device)
            background = background[y0:y0 + side, x0:x0 + side]
            size = side
            subsets = {part: self.model.in_view(part, condition, intrinsics, size, CULL_MARGIN * size)
                       for part in parts}
        deform = phase == "joint"
        renders = {part: self.model.render_part(part, condition, intrinsics, size, deform, subset=subsets[part])
                   for part in parts}
        if torch.is_grad_enabled():
            for render in renders.values():
                render.info["means2d"].retain_grad()
        loss = self.loss(phase, renders, targets, background)
        if deform and self.cfg.mouth_motion_weight > 0:
            head = renders["head"]
            loss = loss + self.cfg.mouth_motion_weight * self.mouth_motion_loss(
                index, condition, head.means.detach(), lambda inside: head.offsets[inside])
        return loss, renders, subsets

    def mouth_motion_loss(self, index: int, condition: FrameCondition, means: Tensor,
                          offsets: Callable[[Tensor], Tensor]) -> Tensor:
        """Mean distance (processed pixels) between where the deformation moves the mouth's Gaussians on screen
        and where the tracked lips moved from the mean mouth (``mouth_motion_weight``).

        ``means`` are the canonical means of the rendered Gaussians, ``offsets(inside)`` the field's dx of those
        selected by the boolean mask ``inside``. Each Gaussian whose undeformed centre projects into the mouth
        box gets the landmarks' displacements interpolated by inverse squared distance.
        """
        size = self.scene.image_size
        intrinsics = self.scene.intrinsics.matrix(size).to(self.device)
        reference, displacement = self.scene.mouth_motion(index)
        x0, y0, x1, y1 = lips_box(reference, size, self.cfg.lips_padding)
        reference, displacement = torch.from_numpy(reference).to(self.device), torch.from_numpy(displacement).to(
            self.device)
        before, depth = project_points(means, condition.c2w, intrinsics)
        inside = ((depth > 0) & (before[:, 0] >= x0) & (before[:, 0] < x1) & (before[:, 1] >= y0)
                  & (before[:, 1] < y1))
        if not bool(inside.any()):
            return means.new_zeros(())
        after, _ = project_points(means[inside] + offsets(inside), condition.c2w, intrinsics)
        weights = 1.0 / (torch.cdist(before[inside], reference).square() + MOTION_SOFTNESS ** 2)
        target = (weights / weights.sum(-1, keepdim=True)) @ displacement
        return (after - before[inside] - target).abs().sum(-1).mean()

    def mouth_warmup(self) -> None:
        """Fit the head's deformation field to the mouth-motion prior alone (no rendering) before the joint stage:
        ``mouth_warmup_iterations`` steps of ``MOUTH_WARMUP_FRAMES`` training frames each."""
        cfg = self.cfg
        means = self.model.head.params["means"].detach()
        field, optimizer = self.model.head_deformation, self.optimizers["networks"]
        frames = self.scene.training_frames
        for _ in tqdm(range(cfg.mouth_warmup_iterations), desc="gstalker mouth warm-up", unit="it",
                      mininterval=5.0):
            for _ in range(MOUTH_WARMUP_FRAMES):
                index = int(frames[int(torch.randint(len(frames), (1,), generator=self.generator))])
                condition = self.condition(index)
                code = self.model.condition_vector("head", condition)
                loss = self.mouth_motion_loss(index, condition, means, lambda inside: field(means[inside], code)[0])
                (loss / MOUTH_WARMUP_FRAMES).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    def crop_origin(self, lips: tuple[int, int, int, int] | None, size: int, side: int) -> tuple[int, int]:
        """Top-left pixel of the joint stage's window: near the mouth or anywhere (``crop_mouth_fraction``)."""
        draws = torch.rand(3, generator=self.generator).tolist()
        if lips is not None and draws[0] < self.cfg.crop_mouth_fraction:
            # Jitter keeps the patch inside the window while moving it around.
            centre_x, centre_y = (lips[0] + lips[2]) / 2, (lips[1] + lips[3]) / 2
            x0 = centre_x - side / 2 + (draws[1] - 0.5) * side / 2
            y0 = centre_y - side / 2 + (draws[2] - 0.5) * side / 2
        else:
            x0, y0 = draws[1] * (size - side), draws[2] * (size - side)
        return int(min(max(round(x0), 0), size - side)), int(min(max(round(y0), 0), size - side))

    def _accumulate(self, part: str, render: PartRender, subset: Tensor | None) -> None:
        """Add one render's screen-space gradients to the part's densification statistics."""
        info = render.info if subset is None else _full_info(render.info, subset, getattr(self.model, part).count)
        self.densify[part] = self.strategy.accumulate(self.densify[part], info)

    def _densify(self, part: str, part_step: int) -> None:
        gaussians = getattr(self.model, part)
        state, report = self.strategy.step(gaussians.params, self.optimizers[part], self.densify[part], part_step)
        self.densify[part] = state
        if report.cloned or report.split or report.pruned:
            log.debug("%s densification at %d: %s -> %d Gaussians", part, part_step, report, gaussians.count)

    # ----- rendering for validation and samples

    @torch.no_grad()
    def render_frame(self, index: int, size: int) -> Tensor:
        """Composite [size, size, 3] of frame ``index`` as the current stage sees it."""
        deform = self.deformed
        intrinsics, background = self.view(size)
        condition = self.condition(index)
        head = self.model.render_part("head", condition, intrinsics, size, deform)
        torso = self.model.render_part("torso", condition, intrinsics, size, deform)
        return compose(head, torso, background).clamp(0.0, 1.0)

    def validation_frames(self, count: int) -> np.ndarray:
        frames = self.scene.validation_frames
        if len(frames) == 0:
            return frames
        return frames[np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)]

    def validate(self) -> float | None:
        """Mean PSNR (dB) of the validation frames at the training size."""
        frames = self.validation_frames(self.cfg.validation_frames)
        if len(frames) == 0:
            return None
        values = []
        for index in frames:
            rendered = self.render_frame(int(index), self.size)
            truth = self.targets(int(index), self.size).image
            mse = float((rendered - truth).pow(2).mean())
            values.append(10.0 * math.log10(1.0 / max(mse, 1e-12)))
        return float(np.mean(values))

    def save_samples(self, folder: Path, count: int) -> list[Path]:
        """Validation frames at the processed size, rendered | truth, as PNG."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index in self.validation_frames(count):
            rendered = self.render_frame(int(index), self.scene.image_size).cpu().numpy()
            truth = self.scene.reader.frame(int(index))
            side_by_side = np.concatenate([(rendered * 255).round().astype(np.uint8), truth], axis=1)
            path = folder / f"frame_{int(index):05d}.png"
            with atomic_file(path) as tmp:
                cv2.imwrite(str(tmp), cv2.cvtColor(side_by_side, cv2.COLOR_RGB2BGR))
            paths.append(path)
        return paths

    # ----- checkpoints

    def checkpoint(self) -> dict[str, Any]:
        meta = {
            "identity": self.scene.reader.root.name, "image_size": self.scene.image_size,
            "feature_kind": self.cfg.audio_feature, "feature_window": self.model.feature_shape[0],
            "feature_dim": self.model.feature_shape[1], "head_sh_degree": self.model.head_sh_degree,
            "deformed": self.deformed,
            "config": to_dict(self.cfg),
        }
        extra = {} if self.motion is None else {"motion": self.motion.state()}
        return {
            **extra,
            "format": FORMAT, "step": self.step, "seconds": self.seconds, "meta": meta,
            "head": self.model.head.state(), "torso": self.model.torso.state(),
            "networks": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizers": {name: _cpu(optimizer.state_dict()) for name, optimizer in self.optimizers.items()},
            "densify": {part: {"grad_norm_sum": state.grad_norm_sum.cpu(), "visible_count": state.visible_count.cpu(),
                               "scene_extent": state.scene_extent} for part, state in self.densify.items()},
            "generator": self.generator.get_state(),
            # Densification's split offsets draw from the global generator.
            "torch_rng": torch.get_rng_state(),
            "pending_losses": list(self.pending_losses),
        }

    @classmethod
    def resume(cls, cfg: GSTalkerConfig, scene: IdentityScene, checkpoint: Mapping[str, Any],
               device: torch.device, motion: MotionFeatures | None = None) -> "Trainer":
        model = model_from_checkpoint(cfg, checkpoint).to_device(device)
        densify = {part: DensificationState(state["grad_norm_sum"].to(device), state["visible_count"].to(device),
                                            float(state["scene_extent"]))
                   for part, state in checkpoint["densify"].items()}
        generator = torch.Generator()
        generator.set_state(checkpoint["generator"])
        trainer = cls(cfg, scene, model, device, step=int(checkpoint["step"]), seconds=float(checkpoint["seconds"]),
                      densify=densify, generator=generator, motion=motion,
                      pending_losses=[float(loss) for loss in checkpoint.get("pending_losses", [])])
        for name, optimizer in trainer.optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
        if "torch_rng" in checkpoint:
            # Set last: building the model and the perceptual loss above draw from it too.
            torch.set_rng_state(checkpoint["torch_rng"])
        return trainer


def _full_info(info: dict[str, Any], subset: Tensor, count: int) -> dict[str, Any]:
    """The rasteriser's info for a render of ``subset`` scattered back to all ``count`` Gaussians (culled ones:
    not visible, no gradient), as the densification statistics expect."""
    grad = info["means2d"].grad.reshape(-1, 2)
    holder = grad.new_zeros(count, 2)
    holder.grad = grad.new_zeros(count, 2).index_copy_(0, subset, grad)
    radii = info["radii"].reshape(-1, 2)
    full_radii = radii.new_zeros(count, 2).index_copy_(0, subset, radii)
    return {**info, "means2d": holder, "radii": full_radii}


def _cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cpu(v) for v in value]
    return value


# --------------------------------------------------------------------------- the train function


def train(cfg: GSTalkerConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path,
          log_metric: MetricLogger | None = None) -> dict[str, Any]:
    """Train (or resume training) GSTalker on one identity into ``model_dir``; the summary numbers."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device, "gstalker")
    motion, features = None, None
    if cfg.audio_feature == "a2m":
        motion, features = training_features(Path(identity_root), pretrained, cfg.motion_window, device)
    scene = IdentityScene(identity_root, cfg.scene_scale, cfg.audio_feature, features)
    checkpoints = Checkpoints(model_dir, cfg.checkpoint_every, cfg.checkpoint_seconds)
    loaded = checkpoints.load(validate=_check_record, incompatible=_incompatible)
    if loaded is not None:
        trainer = _resume(cfg, scene, loaded.path, loaded.record, device, motion)
        log.info("gstalker@%s: resuming from %s at iteration %d of %d (%.0f s trained)", scene.reader.root.name,
                 loaded.path, trainer.step, cfg.total_iterations, trainer.seconds)
    else:
        trainer = Trainer(cfg, scene, build_model(cfg, scene).to_device(device), device,
                          generator=torch.Generator().manual_seed(cfg.seed), motion=motion)
    curve = read_curve(model_dir / CURVE_FILE, trainer.step)
    metric = log_metric or (lambda name, value, step: None)
    _train_loop(trainer, checkpoints, curve, metric)
    checkpoints.save(trainer.checkpoint())
    write_curve(model_dir / CURVE_FILE, curve)
    trainer.save_samples(model_dir / SAMPLES, cfg.samples)
    checkpoints.finish()
    val_psnr = next((row.val_psnr for row in reversed(curve) if row.val_psnr is not None), None)
    summary = {
        "seconds": trainer.seconds, "iterations": trainer.step, "static_iterations": cfg.static_iterations,
        "gaussians": trainer.model.head.count + trainer.model.torso.count,
        "gaussians_head": trainer.model.head.count, "gaussians_torso": trainer.model.torso.count,
        "perceptual_lpips": float(trainer.perceptual is not None and trainer.perceptual.name == "lpips"),
    }
    if curve:
        summary["final_loss"] = curve[-1].loss
    if val_psnr is not None:
        summary["val_psnr"] = val_psnr
    return summary


def _resume(cfg: GSTalkerConfig, scene: IdentityScene, path: Path, record: Mapping[str, Any], device: torch.device,
            motion: MotionFeatures | None) -> Trainer:
    """The trainer of ``record``; a checkpoint of another architecture is refused naming the file and the fix."""
    try:
        return Trainer.resume(cfg, scene, record, device, motion)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: cannot continue this checkpoint with the current gstalker settings ({error}); "
                         f"restore the settings it was made with, or delete {path.parent} to train from the "
                         "start") from error


def _train_loop(trainer: Trainer, checkpoints: Checkpoints, curve: list[CurveRow],
                metric: Callable[[str, float, int], None]) -> None:
    cfg = trainer.cfg
    total = cfg.total_iterations
    if trainer.step >= total:
        return
    losses = trainer.pending_losses
    started = time.perf_counter()
    seconds_before = trainer.seconds
    progress = tqdm(total=total, initial=trainer.step, desc="gstalker", unit="it", mininterval=5.0)
    try:
        while trainer.step < total:
            losses.append(trainer.iteration())
            trainer.seconds = seconds_before + time.perf_counter() - started
            progress.update(1)
            step = trainer.step
            last = step == total
            validate = last or step % max(cfg.validate_every, 1) == 0
            if validate or step % max(cfg.log_every, 1) == 0:
                val_psnr = trainer.validate() if validate else None
                # Validation time is not training time.
                started = time.perf_counter() - (trainer.seconds - seconds_before)
                row = CurveRow(step, trainer.seconds, float(np.mean(losses)), val_psnr)
                curve.append(row)
                losses.clear()
                _log_row(trainer, row, metric)
            if not last and checkpoints.due(step):
                checkpoints.save(trainer.checkpoint())
                write_curve(checkpoints.folder / CURVE_FILE, curve)
                # Writing checkpoints is not training time either.
                started = time.perf_counter() - (trainer.seconds - seconds_before)
    finally:
        progress.close()


def _log_row(trainer: Trainer, row: CurveRow, metric: Callable[[str, float, int], None]) -> None:
    metric("loss", row.loss, row.step)
    if row.val_psnr is not None:
        metric("val_psnr", row.val_psnr, row.step)
    head, torso = trainer.model.head.count, trainer.model.torso.count
    metric("gaussians", float(head + torso), row.step)
    metric("gaussians_head", float(head), row.step)
    metric("gaussians_torso", float(torso), row.step)
    log.info("gstalker %s step %d: loss %.4f%s, %d + %d Gaussians, %.0f s", trainer.phase(row.step - 1), row.step,
             row.loss, "" if row.val_psnr is None else f", val PSNR {row.val_psnr:.2f} dB", head, torso, row.seconds)
