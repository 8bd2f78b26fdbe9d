"""R2-Talker training: head (with progressive levels and lips fine-tuning), then torso, resumable.

Head stage (Sec. 3.4): each iteration renders rays of random training
frames inside the projected head box, composited over that frame's torso on
``bc.jpg`` (RAD-NeRF's head-stage backdrop), with an MSE loss. AdamW; the
learning rate drops to x0.1 and x0.01 at 150K and 180K of 240K iterations
and is reset to its initial value when lips fine-tuning starts (200K).
Lips fine-tuning alternates a global step (MSE) with a lip step: a square
patch containing the lips (semantic labels lips + mouth interior), MSE +
lambda * LPIPS(patch) (Table 7: global face L2, local lip L2 + LPIPS). Without
LPIPS weights the patch term is 1 - SSIM, said so in the log and the summary.

Occupancy: the grid starts all-occupied, as torch-ngp's, and is updated
every ``occupancy_update_every`` iterations with the maximum density over
``occupancy_conditions`` random training frames' conditions, kept as a
decaying maximum (RAD-NeRF's maximum-occupancy pruning). CPU aids (off in
the paper profile): the grid starts from the visual hull of the training
frames' head masks and never leaves it (``visual_hull``, so the first
iterations do not march empty space); inside the hull the density first
fits a solid head whose front is the face's triangulated landmarks
(``shape_prior_steps``), and the cells in front of it can be carved out of
the grid for good (``shape_prior_carve``).

Torso stage (RAD-NeRF): the head is frozen; the 2D torso net is trained on
pixels of the torso region against the frames over ``bc.jpg``.

``model_dir`` keeps ``checkpoint.pt`` (model, optimisers, RNG, iteration,
seconds, curve, the losses not yet in the curve), written every
``checkpoint_every`` iterations and every ``checkpoint_seconds`` of wall
clock (talkhead_models.checkpoints: atomic, the previous one kept, an
unreadable one moved aside); a second call resumes from it and continues as
the uninterrupted run would have. The finished model is ``model.pt`` (state
dict + plain dicts), ``curve.csv`` and ``samples/*.png``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from talkhead_models.checkpoints import CURVE_FILE, Checkpoints, CurveRow, write_curve
from talkhead_models.components.head_prior import ShapePrior
from talkhead_models.components.rays import sample_patch
from talkhead_models.config import ConfigError, from_dict
from talkhead_models.methods.base import MetricLogger
from talkhead_models.methods.r2talker.config import R2TalkerConfig
from talkhead_models.methods.r2talker.data import HEAD_LABELS, TORSO_LABELS, IdentityData, SceneFrame, scene_frame
from talkhead_models.components.backends import resolve_device
from talkhead_models.methods.r2talker.model import MODEL_FILE, R2TalkerModel, save_model
from talkhead_models.preprocess.frames import write_image

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("iteration", "seconds", "config", "model", "head_optimiser", "torso_optimiser", "generator",
                   "torch_rng", "curve")
"""What every R2-Talker checkpoint holds (``pending_*``: since this change, absent from older ones)."""
SAMPLES_DIR = "samples"
FACE_DEPTH_RESOLUTION = 128
"""Cells per axis of the face's depth map (x, y over the head box) in the shape prior."""
HULL_FRAMES = 24
HULL_DILATION = 6
TORSO_REGION_FRAMES = 64
TORSO_REGION_DILATION = 8


# ---------------------------------------------------------------------------------------------------------------
# CPU memory: keep freed buffers in the heap

# glibc's mallopt parameters and the values its dynamic thresholds reach after large frees (malloc/malloc.c).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_GLIBC_MMAP_MAX, _GLIBC_MMAP_THRESHOLD_MAX = 65536, 32 * 1024 * 1024


@contextlib.contextmanager
def retained_heap(enabled: bool = True) -> Iterator[None]:
    """Within the block, memory torch frees stays in the process's heap for its next tensors (glibc only).

    glibc serves every allocation above 32 MB with a fresh ``mmap`` and unmaps it on free, so each field call
    of a head step (gigabytes of samples' encodings and activations at the paper's 65,536 rays) faults its
    buffers in page by page again: at the paper profile on a CPU that was 40-45% of a step's CPU time, as
    kernel time (measured: 5.5 CPU-s per 256-ray step with all-occupied marching, 3.1 with this; the same
    numbers, only the addresses differ). Here mmap is off and the heap is never trimmed, so freed buffers are
    reused; the peak resident memory grows by about a quarter (fragmentation). On leaving, glibc's
    usual large-allocation thresholds are restored and the free heap is returned to the system.
    """
    libc = None
    if enabled and platform.libc_ver()[0] == "glibc":
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, -1)  # -1: never trim (mallopt(3))
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
        libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_THRESHOLD_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _GLIBC_MMAP_THRESHOLD_MAX)
        libc.malloc_trim(0)


# ---------------------------------------------------------------------------------------------------------------
# Lip-patch perceptual loss


def lip_loss_function(kind: str) -> tuple[Callable[[Tensor, Tensor], Tensor], str]:
    """(loss(pred [P, P, 3], truth [P, P, 3]) -> scalar, name): LPIPS when its weights exist, else 1 - SSIM."""
    from talkhead_models.metrics.base import MissingWeightsError
    from talkhead_models.metrics.image import ssim_per_frame

    def dssim(pred: Tensor, truth: Tensor) -> Tensor:
        return 1.0 - ssim_per_frame(pred.permute(2, 0, 1)[None], truth.permute(2, 0, 1)[None]).mean()

    if kind in ("auto", "lpips"):
        from talkhead_models.metrics.perceptual import load_lpips

        try:
            network = load_lpips("alex")
        except MissingWeightsError as error:
            if kind == "lpips":
                raise
            log.warning("lip fine-tuning uses 1 - SSIM instead of LPIPS: %s", error)
            return dssim, "dssim"

        def lpips(pred: Tensor, truth: Tensor) -> Tensor:
            net = network.to(pred.device)
            return net(pred.permute(2, 0, 1)[None], truth.permute(2, 0, 1)[None]).mean()

        return lpips, "lpips"
    return dssim, "dssim"


def evenly_spaced(frames: np.ndarray, count: int) -> np.ndarray:
    """``count`` frames spread over ``frames`` (all of them when there are fewer)."""
    if len(frames) == 0 or count <= 0:
        return np.array([], np.int64)
    return frames[np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int)]


# ---------------------------------------------------------------------------------------------------------------
# Trainer


class Trainer:
    """State of one training run; ``run`` continues from ``iteration`` to the end."""

    def __init__(self, cfg: R2TalkerConfig, data: IdentityData, scene: SceneFrame, model: R2TalkerModel,
                 device: torch.device, model_dir: Path, log_metric: MetricLogger | None) -> None:
        self.cfg, self.data, self.scene, self.model, self.device = cfg, data, scene, model, device
        self.model_dir, self.log_metric = Path(model_dir), log_metric
        self.generator = torch.Generator().manual_seed(cfg.seed)
        # Sampling along rays happens on the device; a CPU generator cannot drive it on CUDA (global RNG there).
        self.march_generator = self.generator if device.type == "cpu" else None
        self.iteration, self.seconds = 0, 0.0
        self.curve: list[CurveRow] = []
        self.checkpoints = Checkpoints(self.model_dir, cfg.checkpoint_every, cfg.checkpoint_seconds)
        size = data.image_size
        self.intrinsics = (data.cameras.focal, data.cameras.cx, data.cameras.cy)
        c2w = scene.c2w(np.nan_to_num(data.cameras.c2w, nan=0.0))
        self.c2w = torch.as_tensor(c2w, dtype=torch.float32, device=device)
        self.background = torch.as_tensor(data.background.reshape(-1, 3), device=device)
        self.eye = torch.as_tensor(data.eye, device=device)
        self.frames = torch.as_tensor(data.training_frames)
        self.validation = evenly_spaced(data.validation_frames, cfg.validation_frames)
        head = self.model.head
        self.head_optimiser = self._optimiser([head.position.embeddings] + self._grid_params(head),
                                              self._net_params(head))
        self.torso_optimiser = self._optimiser([self.model.torso.grid.embeddings], self._net_params(self.model.torso))
        self.lip_loss, self.lip_loss_name = lip_loss_function(cfg.lips_loss)
        self._losses: list[float] = []
        self._samples = self._rays = 0
        self._size = size

    # -- parameters ----------------------------------------------------------------------------------------

    @staticmethod
    def _grid_params(module: torch.nn.Module) -> list[Tensor]:
        """Hash tables other than the positional one (the landmark grid)."""
        return [p for name, p in module.named_parameters() if name.endswith("embeddings")
                and not name.startswith("position.")]

    @staticmethod
    def _net_params(module: torch.nn.Module) -> list[Tensor]:
        return [p for name, p in module.named_parameters() if not name.endswith("embeddings")]

    def _optimiser(self, grids: list[Tensor], nets: list[Tensor]) -> torch.optim.Optimizer:
        # torch-ngp's Adam settings; no weight decay on hash tables (Instant-NGP practice).
        cfg = self.cfg
        groups = [{"params": grids, "lr": cfg.learning_rate, "weight_decay": 0.0, "initial_lr": cfg.learning_rate},
                  {"params": nets, "lr": cfg.network_learning_rate, "weight_decay": cfg.weight_decay,
                   "initial_lr": cfg.network_learning_rate}]
        try:  # the fused kernel is several times faster on a CPU (Adam's update is memory-bound)
            return torch.optim.AdamW(groups, betas=(0.9, 0.99), eps=1e-15, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.AdamW(groups, betas=(0.9, 0.99), eps=1e-15)

    @staticmethod
    def _set_learning_rate(optimiser: torch.optim.Optimizer, factor: float) -> None:
        for group in optimiser.param_groups:
            group["lr"] = group["initial_lr"] * factor

    # -- conditions ----------------------------------------------------------------------------------------

    def condition_inputs(self, frames: np.ndarray) -> Tensor:
        if self.cfg.condition == "landmarks":
            windows = self.data.landmark_windows(frames, self.cfg.landmark_window)
        else:
            windows = self.data.audio_windows(frames, self.cfg.audio_attention_window)
        return torch.as_tensor(windows, dtype=torch.float32, device=self.device)

    def conditions(self, frames: np.ndarray) -> Tensor:
        """[F, C] conditions of ``frames`` (differentiable)."""
        return self.model.head.frame_conditions(self.condition_inputs(frames), self.eye[torch.as_tensor(frames)])

    # -- geometry helpers ----------------------------------------------------------------------------------

    def box_rectangle(self, frame: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) pixel rectangle of the projected head box in ``frame`` (clipped to the image)."""
        box = self.model.box.cpu().numpy()
        corners = np.array([[box[i], box[j + 1], box[k + 2]] for i in (0, 3) for j in (0, 3) for k in (0, 3)])
        c2w = self.c2w[frame].cpu().numpy()
        camera = (corners - c2w[:3, 3]) @ c2w[:3, :3]
        focal, cx, cy = self.intrinsics
        u = -focal * camera[:, 0] / camera[:, 2] + cx
        v = focal * camera[:, 1] / camera[:, 2] + cy
        size = self._size
        x0, x1 = int(np.clip(np.floor(u.min()), 0, size - 1)), int(np.clip(np.ceil(u.max()), 1, size))
        y0, y1 = int(np.clip(np.floor(v.min()), 0, size - 1)), int(np.clip(np.ceil(v.max()), 1, size))
        return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)

    def box_pixels(self, frame: int, count: int) -> Tensor:
        x0, y0, x1, y1 = self.box_rectangle(frame)
        columns = torch.randint(x0, x1, (count,), generator=self.generator)
        rows = torch.randint(y0, y1, (count,), generator=self.generator)
        return (rows * self._size + columns).to(self.device)

    def training_pixels(self, frame: int, labels: np.ndarray, count: int) -> Tensor:
        """``count`` pixels: shares inside the lips box and the head mask, the rest over the projected box."""
        cfg = self.cfg
        parts = []
        lips = int(round(count * cfg.lips_ray_fraction))
        box = self.data.lips_box(labels) if lips else None
        if box is not None:
            x0, y0, x1, y1 = box
            margin = max(2, (x1 - x0) // 4)
            x0, y0 = max(0, x0 - margin), max(0, y0 - margin)
            x1, y1 = min(self._size, x1 + margin), min(self._size, y1 + margin)
            columns = torch.randint(x0, x1, (lips,), generator=self.generator)
            rows = torch.randint(y0, y1, (lips,), generator=self.generator)
            parts.append((rows * self._size + columns).to(self.device))
        else:
            lips = 0
        head = int(round(count * cfg.head_ray_fraction))
        if head:
            inside = np.flatnonzero(np.isin(labels.reshape(-1), HEAD_LABELS))
            if len(inside):
                pick = torch.randint(len(inside), (head,), generator=self.generator).numpy()
                parts.append(torch.as_tensor(inside[pick], device=self.device))
            else:
                head = 0
        parts.append(self.box_pixels(frame, max(1, count - lips - head)))
        return torch.cat(parts)

    @torch.no_grad()
    def carve_occupancy(self) -> None:
        """Start the occupancy grid from the visual hull of the training frames' (dilated) head masks."""
        grid = self.model.grid
        cells = torch.arange(grid.density.numel(), device=self.device)
        centres = grid.cell_centres(cells).cpu().numpy()
        keep = np.ones(len(centres), bool)
        picked = evenly_spaced(self.data.training_frames, HULL_FRAMES)
        focal, cx, cy = self.intrinsics
        size = self._size
        for frame in picked:
            mask = self.data.region_mask(HEAD_LABELS, np.array([frame]), HULL_DILATION)
            c2w = self.c2w[int(frame)].cpu().numpy()
            camera = (centres - c2w[:3, 3]) @ c2w[:3, :3]
            u = np.floor(-focal * camera[:, 0] / camera[:, 2] + cx).astype(np.int64)
            v = np.floor(focal * camera[:, 1] / camera[:, 2] + cy).astype(np.int64)
            inside = (u >= 0) & (u < size) & (v >= 0) & (v < size) & (camera[:, 2] < 0)
            hit = np.zeros(len(centres), bool)
            hit[inside] = mask[v[inside], u[inside]]
            keep &= hit | ~inside
        keep_tensor = torch.as_tensor(keep, device=self.device)
        self.model.hull.copy_(keep_tensor)
        # Densities start unknown (zero): the first update keeps the hull cells whose density the field already
        # raises above the mean, as torch-ngp's first update does for its all-occupied start.
        grid.density.zero_()
        grid.occupied.copy_(keep_tensor)
        log.info("occupancy grid carved from %d frames' head masks: %.1f%% of cells kept", len(picked),
                 100 * keep.mean())

    def shape_prior(self) -> ShapePrior:
        """The solid head the density starts from (``ShapePrior.spanning``): an ellipsoid spanning the hull's
        cells, behind the face's triangulated landmarks (when there are landmarks). The silhouette always comes
        from the masks."""
        centres = self.model.grid.cell_centres(self.model.hull.nonzero().squeeze(-1))
        face = self.data.face_points()
        if face is not None:
            face = (face - self.scene.centre) * self.scene.scale
        return ShapePrior.spanning(centres.amin(0), centres.amax(0), face, self.model.box, FACE_DEPTH_RESOLUTION)

    def fit_shape_prior(self, prior: ShapePrior) -> None:
        """Fit the density to ``prior``'s solid head, as Neuralangelo / NeuS start from a sphere.

        The target is the per-step opacity of a surface (inside) or of empty space.
        """
        cfg, grid, hull = self.cfg, self.model.grid, self.model.hull
        box = self.model.box
        # Inside: a density whose samples are half opaque per step; outside: nearly empty (log densities).
        step = float((box[5] - box[2]) / cfg.march_steps)
        inside_log, outside_log = math.log(0.7 / step), math.log(0.01)
        head = self.model.head
        grids = [head.position.embeddings] + self._grid_params(head)
        optimiser = self._optimiser(grids, self._net_params(head))
        frames = self.frames[torch.randint(len(self.frames), (cfg.shape_prior_steps,), generator=self.generator)]
        for frame in frames.numpy():
            points = box[:3] + torch.rand(8192, 3, generator=self.generator).to(self.device) * (box[3:] - box[:3])
            cells, inside = grid.cell_of(points)
            solid = inside & hull[cells] & prior.inside(points)
            condition = self.conditions(np.array([frame]))[0]
            target = torch.where(solid, inside_log, outside_log)
            loss = torch.mean((head.log_density(points, condition) - target) ** 2)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        log.info("shape prior fitted in %d steps (loss %.4f)", cfg.shape_prior_steps, float(loss.detach()))

    @torch.no_grad()
    def carve_in_front(self, prior: ShapePrior) -> None:
        """Remove from the hull the cells more than ``shape_prior_carve`` in front of ``prior``'s surface.

        With a per-ray sample budget (``max_samples``) a ray only ever sees its
        first few occupied samples: cells in front of the face that the field
        fills (its coarse levels spread density from the surface) would catch
        every ray, and the texture would be painted there, centimetres in front
        of the face, smeared across the views.
        """
        grid, hull = self.model.grid, self.model.hull
        cells = hull.nonzero().squeeze(-1)
        centres = grid.cell_centres(cells)
        away = cells[centres[:, 2] > prior.front(centres) + self.cfg.shape_prior_carve]
        hull[away] = False
        grid.occupied &= hull
        log.info("shape prior: %.1f%% of the hull's cells lie more than %.2f in front of the head and are "
                 "carved away", 100 * len(away) / max(len(cells), 1), self.cfg.shape_prior_carve)

    @torch.no_grad()
    def update_occupancy(self) -> None:
        """Maximum density over a few training frames' conditions (decaying maximum), inside the hull only.

        The threshold is torch-ngp's min(mean density, threshold), with the mean
        taken over the hull's cells (the carved-away cells would drag it to zero
        and keep every wisp of fog). The first update evaluates every cell, later
        ones a random ``occupancy_cell_fraction`` (Instant-NGP's cheaper updates).
        """
        count = max(1, self.cfg.occupancy_conditions)
        frames = self.frames[torch.randint(len(self.frames), (count,), generator=self.generator)].numpy()
        conditions = list(self.conditions(frames))
        grid, hull = self.model.grid, self.model.hull
        first = self.iteration <= self.cfg.occupancy_update_every

        def hull_density(points: Tensor, condition: Tensor) -> Tensor:
            cells, inside = grid.cell_of(points)
            keep = (inside & hull[cells]).nonzero().squeeze(-1)
            density = points.new_zeros(points.shape[0])
            if keep.numel():
                density[keep] = self.model.head.density(points[keep], condition)
            return density

        grid.update(hull_density, conditions, cell_fraction=1.0 if first else self.cfg.occupancy_cell_fraction,
                    generator=self.generator)
        grid.density.mul_(hull)
        threshold = min(float(grid.density[hull].mean()), self.cfg.density_threshold)
        grid.occupied.copy_(hull & (grid.density > threshold))

    @torch.no_grad()
    def find_torso_region(self) -> None:
        picked = evenly_spaced(self.data.training_frames, TORSO_REGION_FRAMES)
        region = self.data.region_mask(TORSO_LABELS, picked, TORSO_REGION_DILATION)
        self.model.torso_region.copy_(torch.as_tensor(region.reshape(-1), device=self.device))
        log.info("torso region: %.1f%% of the frame", 100 * region.mean())

    # -- one iteration -------------------------------------------------------------------------------------

    def frame_targets(self, frame: int) -> tuple[Tensor, Tensor, np.ndarray]:
        truth, backdrop, labels = self.data.training_images(frame)
        as_float = lambda image: torch.as_tensor(image.reshape(-1, 3), device=self.device).float() / 255.0  # noqa: E731
        return as_float(truth), as_float(backdrop), labels

    def head_step(self) -> float:
        cfg = self.cfg
        lips_start = cfg.lips_start_iteration
        self._set_learning_rate(self.head_optimiser,
                                cfg.learning_rate_factor(self.iteration, cfg.iterations, lips_start))
        self.model.set_progress(self.iteration)
        if self.iteration % cfg.occupancy_update_every == 0 and self.iteration > 0:
            self.update_occupancy()
        # Lips fine-tuning alternates a lip-patch step with a global step.
        lip_step = self.iteration >= lips_start and (self.iteration - lips_start) % 2 == 0
        count = max(1, cfg.frames_per_step)
        frames = self.frames[torch.randint(len(self.frames), (count,), generator=self.generator)].numpy()
        conditions = self.conditions(frames)
        self.head_optimiser.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=self.device)
        backpropagated = 0.0  # the loss of the frames already backpropagated chunk by chunk
        for frame, condition in zip(frames, conditions):
            truth, backdrop, labels = self.frame_targets(int(frame))
            region = self.data.lips_box(labels) if lip_step else None
            if region is not None:
                pixels = sample_patch(self._size, self._size, cfg.lips_patch, region, self.generator).to(self.device)
            else:
                pixels = self.training_pixels(int(frame), labels, max(1, cfg.rays_per_step // count))
            chunk = cfg.train_ray_chunk
            if region is not None or chunk <= 0 or len(pixels) <= chunk:
                # The patch's perceptual loss needs all its rays at once; a frame that fits is kept in the
                # step's graph, so the usual configurations take the plain path.
                loss = loss + self._head_loss(frame, condition, pixels, truth, backdrop, labels, region) / count
                continue
            # Each chunk's mean, weighted by its share of the frame's rays, sums to the frame's mean.
            for start in range(0, len(pixels), chunk):
                rays = pixels[start:start + chunk]
                chunk_loss = self._head_loss(frame, condition, rays, truth, backdrop, labels, None)
                chunk_loss = chunk_loss * (len(rays) / len(pixels) / count)
                chunk_loss.backward(retain_graph=True)  # the frame's condition graph is shared by its chunks
                backpropagated += float(chunk_loss.detach())
                del chunk_loss  # frees this chunk's graph before the next one is built
        if loss.requires_grad:
            loss.backward()
        self.head_optimiser.step()
        return float(loss.detach()) + backpropagated

    def _head_loss(self, frame: np.integer, condition: Tensor, pixels: Tensor, truth: Tensor, backdrop: Tensor,
                   labels: np.ndarray, region: tuple[int, int, int, int] | None) -> Tensor:
        """Photometric (+ distortion, opacity, lip-patch) loss of the head at ``pixels`` of ``frame``."""
        cfg = self.cfg
        head = self.model.render_head(condition, self.c2w[int(frame)], self.intrinsics, pixels, perturb=True,
                                      generator=self.march_generator, distortion=cfg.distortion_weight > 0,
                                      chunk=cfg.march_steps)
        self._samples += head.samples
        self._rays += len(pixels)
        predicted = head.color + (1.0 - head.opacity[:, None]) * backdrop[pixels]
        loss = torch.mean((predicted - truth[pixels]) ** 2)
        if head.distortion is not None:
            loss = loss + cfg.distortion_weight * head.distortion.mean()
        if cfg.opacity_weight > 0:
            inside = torch.as_tensor(np.isin(labels.reshape(-1), HEAD_LABELS), device=self.device)[pixels]
            loss = loss + cfg.opacity_weight * torch.mean((head.opacity - inside.float()) ** 2)
        if region is not None:
            patch = (cfg.lips_patch, cfg.lips_patch, 3)
            loss = loss + cfg.lips_weight * self.lip_loss(predicted.view(patch), truth[pixels].view(patch))
        return loss

    def torso_step(self) -> float:
        cfg = self.cfg
        step = self.iteration - cfg.iterations
        self._set_learning_rate(self.torso_optimiser, cfg.learning_rate_factor(step, cfg.torso_iterations))
        count = max(1, cfg.frames_per_step)
        frames = self.frames[torch.randint(len(self.frames), (count,), generator=self.generator)].numpy()
        region = self.model.torso_region.nonzero().squeeze(-1)
        with torch.no_grad():
            conditions = self.conditions(frames)
        loss = torch.zeros((), device=self.device)
        for frame, condition in zip(frames, conditions):
            truth = self.frame_targets(int(frame))[0]
            pick = torch.randint(len(region), (max(1, cfg.torso_rays_per_step // count),), generator=self.generator)
            pixels = region[pick.to(region.device)]
            c2w = self.c2w[int(frame)]
            with torch.no_grad():
                head = self.model.render_head(condition, c2w, self.intrinsics, pixels)
            anchors = self.model.torso.anchor_pixels(c2w, *self.intrinsics, self._size)
            layer = self.model.torso_layer(pixels, anchors, self.background[pixels])[0]
            predicted = head.color + (1.0 - head.opacity[:, None]) * layer
            loss = loss + torch.mean((predicted - truth[pixels]) ** 2) / count
        self.torso_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.torso_optimiser.step()
        return float(loss.detach())

    # -- validation and samples ----------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> float:
        """Mean PSNR of the validation frames (tracked landmarks as the condition); writes a sample PNG."""
        if len(self.validation) == 0:
            return float("nan")
        self.model.eval()
        started = time.perf_counter()
        scores = []
        conditions = self.conditions(self.validation)
        for number, (frame, condition) in enumerate(zip(self.validation, conditions)):
            frame = int(frame)
            head_background = None
            if not bool(self.model.torso_trained):
                head_background = self.frame_targets(frame)[1]
            image = self.model.render_frame(condition, self.c2w[frame], self.intrinsics, self.background,
                                            head_background).cpu().numpy()
            truth = self.data.frame(frame).astype(np.float32) / 255.0
            scores.append(10.0 * math.log10(1.0 / max(float(np.mean((image - truth) ** 2)), 1e-10)))
            if number == 0:
                sample = np.concatenate([image, truth], axis=1)
                path = self.model_dir / SAMPLES_DIR / f"step_{self.iteration:07d}.png"
                path.parent.mkdir(exist_ok=True)
                write_image(path, (sample * 255.0 + 0.5).astype(np.uint8))
        self.model.train()
        log.info("validation at %d: %.2f dB over %d frames (%.2f s per frame)", self.iteration, np.mean(scores),
                 len(scores), (time.perf_counter() - started) / len(scores))
        return float(np.mean(scores))

    # -- checkpoints ---------------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        record = {
            "iteration": self.iteration, "seconds": self.seconds, "config": asdict(self.cfg),
            "model": self.model.state_dict(), "head_optimiser": self.head_optimiser.state_dict(),
            "torso_optimiser": self.torso_optimiser.state_dict(), "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(), "curve": [row.as_list() for row in self.curve],
            # A wall-clock checkpoint can fall between two curve rows: the next row averages these losses too.
            "pending_losses": list(self._losses), "pending_samples": self._samples, "pending_rays": self._rays,
        }
        self.checkpoints.save(record)
        self.write_curve()

    def _incompatible(self, record: Mapping[str, Any]) -> str | None:
        """Why this run cannot continue ``record`` (None: it can)."""
        try:
            saved = from_dict(R2TalkerConfig, record["config"], where="r2talker (checkpoint)")
        except ConfigError as error:
            return f"was made with a config this code does not accept ({error})"
        if _architecture(saved) != _architecture(self.cfg):
            return "was made with another architecture"
        return None

    def resume(self) -> bool:
        """Continue from the newest readable checkpoint made with the same architecture; True when resumed."""
        # On the CPU: the generator's state must stay a CPU tensor; load_state_dict moves the rest to the device.
        loaded = self.checkpoints.load("cpu", validate=_check_keys, incompatible=self._incompatible)
        if loaded is None:
            return False
        path, record = loaded
        self.model.load_state_dict(record["model"])
        self.head_optimiser.load_state_dict(record["head_optimiser"])
        self.torso_optimiser.load_state_dict(record["torso_optimiser"])
        self.generator.set_state(record["generator"])
        torch.set_rng_state(record["torch_rng"])
        self.iteration, self.seconds = int(record["iteration"]), float(record["seconds"])
        self.curve = [CurveRow.from_list(row) for row in record["curve"]]
        self._losses = [float(loss) for loss in record.get("pending_losses", [])]
        self._samples, self._rays = int(record.get("pending_samples", 0)), int(record.get("pending_rays", 0))
        log.info("resumed from %s at iteration %d (%.0f s trained)", path, self.iteration, self.seconds)
        return True

    def write_curve(self) -> None:
        write_curve(self.model_dir / CURVE_FILE, self.curve)

    # -- the loop ------------------------------------------------------------------------------------------

    def _log(self, name: str, value: float) -> None:
        if self.log_metric is not None and math.isfinite(value):
            self.log_metric(name, float(value), self.iteration)

    def run(self) -> None:
        cfg = self.cfg
        total = cfg.total_iterations
        if self.iteration == 0 and cfg.visual_hull:
            # Without the hull, ``model.hull`` keeps every cell and the fresh grid is all-occupied (torch-ngp).
            self.carve_occupancy()
            if cfg.shape_prior_steps > 0:
                started = time.perf_counter()
                prior = self.shape_prior()
                if cfg.shape_prior_carve > 0:
                    self.carve_in_front(prior)
                self.fit_shape_prior(prior)
                self.seconds += time.perf_counter() - started
                self.update_occupancy()
        if cfg.torso_iterations > 0 and not bool(self.model.torso_region.any()):
            self.find_torso_region()
        self.model.train()
        progress = tqdm(range(self.iteration, total), desc="r2talker", unit="it", initial=self.iteration,
                        total=total)
        for _ in progress:
            started = time.perf_counter()
            in_head = self.iteration < cfg.iterations
            loss = self.head_step() if in_head else self.torso_step()
            self.iteration += 1
            if not in_head:
                self.model.torso_trained.fill_(True)
            self.seconds += time.perf_counter() - started
            self._losses.append(loss)
            validate = self.iteration % cfg.validate_every == 0 or self.iteration == total
            if self.iteration % cfg.log_every == 0 or validate:
                mean_loss = float(np.mean(self._losses))
                self._losses.clear()
                psnr = self.validate() if validate else float("nan")
                self.curve.append(CurveRow(self.iteration, self.seconds, mean_loss,
                                           None if math.isnan(psnr) else psnr))
                self._log("train_loss", mean_loss)
                self._log("val_psnr", psnr)
                self._log("active_levels", float(self.model.head.position.active_levels))
                self._log("occupancy", self.model.grid.occupancy_ratio)
                samples_per_ray = self._samples / max(self._rays, 1)
                self._samples = self._rays = 0
                self._log("samples_per_ray", samples_per_ray)
                progress.set_postfix(loss=f"{mean_loss:.4f}", spr=f"{samples_per_ray:.1f}",
                                     occ=f"{self.model.grid.occupancy_ratio:.3f}",
                                     **({"psnr": f"{psnr:.2f}"} if validate else {}))
            if self.checkpoints.due(self.iteration) or self.iteration == cfg.iterations:
                self.save_checkpoint()
        self.save_checkpoint()


def _architecture(cfg: R2TalkerConfig) -> dict[str, Any]:
    """The config fields that shape the parameters (a checkpoint of another shape cannot resume)."""
    skipped = {"iterations", "torso_iterations", "checkpoint_every", "checkpoint_seconds", "validate_every",
               "validation_frames", "log_every", "device", "backend", "rays_per_step", "torso_rays_per_step",
               "frames_per_step", "train_ray_chunk", "motion_adaptation"}
    return {k: v for k, v in asdict(cfg).items() if k not in skipped}


def _check_keys(record: Mapping[str, Any]) -> None:
    missing = [key for key in CHECKPOINT_KEYS if key not in record]
    if missing:
        raise KeyError(f"missing {missing}")


def train_r2talker(cfg: R2TalkerConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path,
                   log_metric: MetricLogger | None = None) -> dict[str, Any]:
    """Train (or resume) R2-Talker on one identity into ``model_dir``; returns the summary numbers."""
    device = resolve_device(cfg.device, "r2talker")
    torch.manual_seed(cfg.seed)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    data = IdentityData(Path(identity_root), with_landmarks=cfg.condition == "landmarks",
                        audio_kind=cfg.audio_kind if cfg.condition == "audio" else None)
    scene = scene_frame(data, cfg.box_margin)
    audio_dim = data.audio.shape[-1] if data.audio is not None else None
    model = R2TalkerModel(cfg, scene.box, data.image_size, audio_dim).to(device)
    trainer = Trainer(cfg, data, scene, model, device, model_dir, log_metric)
    trainer.resume()
    with retained_heap(device.type == "cpu"):
        trainer.run()
    trainer.write_curve()
    save_model(model_dir / MODEL_FILE, model, scene, data.neutral,
               {"identity": data.root.name, "iterations": trainer.iteration, "lip_loss": trainer.lip_loss_name})
    trainer.checkpoints.finish()
    validation = [row.val_psnr for row in trainer.curve if row.val_psnr is not None]
    summary = {"seconds": trainer.seconds, "iterations": trainer.iteration,
               "head_iterations": cfg.iterations, "torso_iterations": cfg.torso_iterations,
               "final_loss": trainer.curve[-1].loss if trainer.curve else float("nan"),
               "val_psnr": validation[-1] if validation else float("nan"),
               "occupancy": model.grid.occupancy_ratio,
               "lip_loss_lpips": 1.0 if trainer.lip_loss_name == "lpips" else 0.0}
    log.info("r2talker@%s: %d iterations in %.0f s, validation PSNR %.2f dB", data.root.name, trainer.iteration,
             trainer.seconds, summary["val_psnr"])
    return summary
