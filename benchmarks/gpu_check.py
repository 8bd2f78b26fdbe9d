"""The paper profile, exercised: CUDA-only tests, the four methods trained at the papers' settings, speed at each
paper's resolution.

Usage (from the repository root, after ``dvc repro`` has processed S001)::

    python -m benchmarks.gpu_check                         # CUDA: reports/bench/gpu_<date>.json, < 8 minutes
    python -m benchmarks.gpu_check --iterations 2          # CPU: reports/bench/paper_profile_cpu.json

Steps, in order, each recorded in the JSON:

1. CUDA-only tests (``pytest -m gpu``): gsplat against the torch rasteriser, tiny-cuda-nn against the torch
   hash grid (each skips itself when its library is missing); then the rasterisers' gradients with respect
   to every Gaussian parameter, compared here (the test compares images only). On a CPU these are skipped and
   the JSON says so.
2. Each method (``r2talker``, ``gstalker``, ``jean``, ``s3dnerf``) trains at the paper profile -- its config's
   dataclass defaults, which ``demo_aids(cfg) == []`` confirms (the check fails otherwise), except for the
   departures ``PAPER_DEPARTURES`` names with their reason (a network whose weights this pipeline cannot load:
   JEAN's EMOCA and DeepSpeech, S3D-NeRF's ImageNet VGG), recorded in the JSON -- with the iteration count reduced
   (``--iterations``; R2-Talker's torso and GSTalker's static stages keep the paper's proportions, the
   schedules scale with them as in ``bench_r2talker``). Iterations per second come from the trainer's logged
   steps, after the first (warm-up); peak memory is torch's CUDA peak, or the process's resident set sampled
   during the step on a CPU.
3. The trained model renders ``--frames`` validation frames at its paper's size, FPS after one warm-up frame:
   450 x 450 for R2-Talker and GSTalker (R2-Talker's supplement Table 5; GSTalker's Table 1 on AD-NeRF's 450 x
   450 videos), JEAN's rays at 480 x 480 (MEAD's frames as JEAN crops them; composited at the processed size),
   and S3D-NeRF at its config's ``image_size``, 512 (HDTF; its Table 1's 9.5 FPS), through the method's own
   ``TalkingHead.render`` on the identity's first self-driven test clip. S3D-NeRF trains across the identities
   beside ``--identity`` and renders ``--identity``, which it holds out.

The whole run has a deadline (``--deadline-s``; default 450 s on CUDA so that start-up and the tests fit in
8 minutes): a method still training when its share runs out is stopped at its next logged step, and its
rate is taken from the steps it made (no rendering then). Assumptions behind the CUDA defaults (1,000 head +
800 torso R2-Talker iterations, 3,000 GSTalker iterations, 300 JEAN and 100 S3D-NeRF iterations): the torch
ray marcher and MLPs at 65,536 rays make a few R2-Talker steps per second once the occupancy grid has pruned
(the first 16 iterations march all 1,024 steps of every ray), gsplat makes GSTalker's steps at tens per
second, JEAN's 2,048 rays of 64 + 128 samples through an 8 x 256 MLP a few steps per second (the paper's
400,000 in two days), and S3D-NeRF's four 512 px sources with a discriminator about one step per second; the
deadline bounds the run whatever the card. None of these has run on a GPU yet. On a CPU, S3D-NeRF's paper
widths took more than 23 GB in their first step (killed, 2026-12-06, even at 128 px): a CPU smoke run sets the
demo profile's widths with ``--set``; on CUDA an out-of-memory method is recorded as such and the others run.

On a CPU the same steps run with fewer iterations: an R2-Talker step at the paper's 65,536 rays evaluates
about 57 million samples before the first occupancy update, minutes per iteration on two cores, so two or
three iterations are what fits; ``train_ray_chunk`` is lowered (``--cpu-ray-chunk``, same gradient) so that a
chunk's samples fit in a few GB. R2-Talker's 450 px render is skipped on a CPU unless ``--r2talker-frames`` asks
for it (an untrained grid marches every step of 200,000 rays: many minutes a frame). Defaults follow the
other benchmarks: one torch thread, fresh temporary model folders, the machine, CPU model and commit recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as ``python -m`` does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import yaml

from benchmarks.bench_components import gstalker_init_scene, machine_info
from benchmarks.bench_r2talker import PAPER_SIZE, bench_rendering, bench_training
from stages._stage import git_commit
from talkhead_models.atomic import write_text
from talkhead_models.config import demo_aids
from talkhead_models.evaluation.speed import speed_driving
from talkhead_models.methods import get_method
from talkhead_models.methods.gstalker import GSTalkerConfig
from talkhead_models.methods.gstalker import load as load_gstalker
from talkhead_models.methods.gstalker import train as train_gstalker
from talkhead_models.methods.gstalker.model import FrameCondition, compose
from talkhead_models.methods.jean import JeanConfig
from talkhead_models.methods.r2talker import R2TalkerConfig
from talkhead_models.methods.r2talker.trainer import retained_heap
from talkhead_models.methods.s3dnerf import S3DNeRFConfig
from talkhead_models.preprocess.audio_features import AudioConfig

logger = logging.getLogger("benchmarks.gpu_check")

ROOT = Path(__file__).resolve().parents[1]
GPU_TESTS = ("tests/components/test_gaussians.py", "tests/components/test_hashgrid.py")
"""Test files holding the ``gpu``-marked tests (gsplat vs torch rasteriser, tcnn vs torch hash grid)."""
CUDA_DEADLINE_S = 450.0
CPU_DEADLINE_S = 1200.0
TEST_TIMEOUT_S = 120.0
METHODS = ("r2talker", "gstalker", "jean", "s3dnerf")
SHARES = {"r2talker": 0.45, "gstalker": 0.2, "jean": 0.2, "s3dnerf": 0.15}
"""How the time left after the tests is shared between the methods still to run (R2-Talker and GSTalker alone:
0.69 and 0.31, as before JEAN and S3D-NeRF were added)."""
JEAN_PAPER_SIZE = 480
"""JEAN's frames: MEAD's middle 1080 x 1080 resized to 480 x 480 (its supplement)."""
DEFAULT_ITERATIONS = {"r2talker": 1000, "gstalker": 3000, "jean": 300, "s3dnerf": 100}
"""CUDA defaults (the module docstring says what they assume)."""
PAPER_DEPARTURES: dict[str, tuple[dict[str, Any], str]] = {
    "jean": ({"emotion_network": "corpus_cnn", "audio_feature": "mel"},
             "EMOCA's and DeepSpeech's weights are not available offline: the corpus emotion CNN's features and "
             "mel features stand in, as in the demo (the NeRF, the encoders and the transformer are the paper's)"),
    "s3dnerf": ({"perceptual_network": "discriminator_features"},
                "this pipeline does not load ImageNet VGG-16 weights yet: the perceptual term runs on the "
                "discriminator's features, as in the demo"),
}
"""Method -> (config fields, reason): the demo aids a paper-profile run cannot do without, and why."""
RENDER_RESERVE_S = 30.0
"""Seconds kept back from each method's training budget for its rendering."""


class DeadlineReached(RuntimeError):
    """Raised from a trainer's metric callback when the method's time share is spent."""


class PeakMemory:
    """Peak memory during a block: torch's CUDA peak, or the resident set sampled every 50 ms on a CPU (the
    process's lifetime maximum from getrusage would mix the methods)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_bytes = device, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _resident_bytes() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_bytes = max(self.peak_bytes, self._resident_bytes())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        elif Path("/proc/self/statm").is_file():
            self.peak_bytes = self._resident_bytes()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated()
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()

    def record(self) -> dict[str, Any]:
        kind = "cuda_max_memory_allocated" if self.device.type == "cuda" else "resident_set_sampled"
        return {"peak_memory_gb": round(self.peak_bytes / 2**30, 3), "peak_memory_kind": kind}


class StepClock:
    """A trainer's metric callback that records when each logged step ended, and stops the run at a deadline
    (not at its last step: that one has finished anyway, and the model is then saved)."""

    def __init__(self, deadline: float, total: int) -> None:
        self.deadline, self.total = deadline, total
        self.steps: list[tuple[int, float]] = []

    def __call__(self, name: str, value: float, step: int) -> None:
        if not self.steps or self.steps[-1][0] != step:
            self.steps.append((int(step), time.perf_counter()))
        if step < self.total and time.perf_counter() > self.deadline:
            raise DeadlineReached(f"stopped at step {step}: the method's share of --deadline-s is spent")

    def rate(self) -> float | None:
        """Steps per second between the first logged step and the last (the first step's warm-up left out)."""
        if len(self.steps) < 2:
            return None
        (first, start), (last, end) = self.steps[0], self.steps[-1]
        return (last - first) / (end - start) if end > start else None


# ---------------------------------------------------------------------------------------------------------------
# CUDA-only checks


def run_gpu_tests(timeout_s: float) -> dict[str, Any]:
    """``pytest -m gpu`` on the GPU test files; the counts per outcome and each test's outcome."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_tests_") as scratch:
        report = Path(scratch) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", *GPU_TESTS]
        try:
            completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"command": " ".join(command[1:]), "error": f"timed out after {timeout_s:.0f} s"}
        outcomes: dict[str, str] = {}
        if report.is_file():
            for case in ElementTree.parse(report).getroot().iter("testcase"):
                outcome = "passed"
                for child in case:
                    if child.tag in ("failure", "error", "skipped"):
                        outcome = child.tag if child.tag != "skipped" else f"skipped: {child.get('message', '')}"
                outcomes[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return {"command": " ".join(command[1:]), "returncode": completed.returncode, "tests": outcomes,
            "passed": completed.returncode in (0, 5) and not any(o in ("failure", "error") for o in outcomes.values()),
            "output_tail": completed.stdout[-2000:]}


def rasteriser_gradients(count: int = 2000, size: int = 128) -> dict[str, Any]:
    """gsplat's and the torch rasteriser's gradients with respect to means, quaternions, scales, opacities and
    SH coefficients (degree 3) on GSTalker's initial scene, for one random image-space loss: the largest
    difference per tensor relative to the tensor's largest torch gradient."""
    from talkhead_models.components.gaussians import gsplat_available, rasterize_gaussians

    if not gsplat_available():
        return {"skipped": "gsplat's CUDA rasteriser is not available"}
    device = torch.device("cuda")
    scene = gstalker_init_scene(count, size, size, device)
    weights = torch.randn(size, size, 3, device=device, generator=torch.Generator(device).manual_seed(0))
    gradients, images = {}, {}
    for backend in ("torch", "gsplat"):
        leaves = [tensor.detach().clone().requires_grad_(True) for tensor in scene[:5]]
        output = rasterize_gaussians(*leaves, *scene[5:], size, size, sh_degree=3, backend=backend)
        (output.image * weights).sum().backward()
        images[backend] = output.image.detach()
        gradients[backend] = [leaf.grad for leaf in leaves]
    names = ("means", "quats", "scales", "opacities", "sh_coefficients")
    differences = {}
    for name, reference, fast in zip(names, gradients["torch"], gradients["gsplat"]):
        scale = reference.abs().max().clamp_min(1e-12)
        differences[name] = float((fast - reference).abs().max() / scale)
    image_difference = float((images["gsplat"] - images["torch"]).abs().max())
    tolerance = 1e-2
    return {"gaussians": count, "size": size, "image_max_abs_difference": image_difference,
            "gradient_relative_max_difference": differences, "tolerance": tolerance,
            "passed": image_difference < 1e-3 and all(value < tolerance for value in differences.values())}


# ---------------------------------------------------------------------------------------------------------------
# Methods at the paper profile


def paper_configs(device_name: str, iterations: dict[str, int], r2talker_torso: int,
                  cpu_ray_chunk: int) -> dict[str, Any]:
    """The paper profile's configs (dataclass defaults and ``PAPER_DEPARTURES``) with the run's budget:
    iterations, logging, device; no validation or checkpoints inside the timed steps.

    GSTalker's iterations keep the paper's 10,000 static (head, then torso) to 100,000 joint proportions.
    """
    log_every = lambda total: max(1, min(total, 100) // 10)  # noqa: E731  (ten logged steps in a short run)
    r2talker_iterations, gstalker_iterations = iterations["r2talker"], iterations["gstalker"]
    r2talker = dataclasses.replace(
        R2TalkerConfig(), iterations=r2talker_iterations, torso_iterations=r2talker_torso, device=device_name,
        log_every=log_every(r2talker_iterations), validate_every=10**9, validation_frames=0,
        checkpoint_every=10**9)
    if device_name == "cpu":
        r2talker = dataclasses.replace(r2talker, train_ray_chunk=cpu_ray_chunk)
    static = max(1, round(gstalker_iterations * 10_000 / 120_000)) if gstalker_iterations >= 3 else 0
    gstalker = dataclasses.replace(
        GSTalkerConfig(), static_iterations=static, iterations=max(1, gstalker_iterations - 2 * static),
        device=device_name, log_every=log_every(gstalker_iterations), validate_every=10**9, validation_frames=1,
        checkpoint_every=10**9, samples=0)
    jean = dataclasses.replace(
        JeanConfig(), **PAPER_DEPARTURES["jean"][0], iterations=iterations["jean"], device=device_name,
        log_every=log_every(iterations["jean"]), validate_every=10**9, checkpoint_every=10**9,
        checkpoint_seconds=1e9)
    s3dnerf = dataclasses.replace(
        S3DNeRFConfig(), **PAPER_DEPARTURES["s3dnerf"][0], iterations=iterations["s3dnerf"], device=device_name,
        log_every=log_every(iterations["s3dnerf"]), checkpoint_seconds=1e9)
    return {"r2talker": r2talker, "gstalker": gstalker, "jean": jean, "s3dnerf": s3dnerf}


def check_no_demo_aid(method: str, cfg: Any) -> list[str]:
    """``cfg``'s demo aids; an error unless each is one of the method's ``PAPER_DEPARTURES``."""
    aids = demo_aids(cfg)
    fields, _ = PAPER_DEPARTURES.get(method, ({}, ""))
    allowed = demo_aids(dataclasses.replace(get_method(method).config(), **fields))
    extra = [aid for aid in aids if aid not in allowed]
    if extra:
        raise RuntimeError(f"{method}'s paper-profile config uses demo aids {extra}: the paper profile must use "
                           "none beyond PAPER_DEPARTURES")
    return aids


def train_method(method: str, cfg: Any, identity_root: Path, pretrained: dict[str, Path], model_dir: Path,
                 device: torch.device, deadline: float) -> dict[str, Any]:
    clock = StepClock(deadline, getattr(cfg, "total_iterations", cfg.iterations))
    started = time.perf_counter()
    result: dict[str, Any] = {}
    with PeakMemory(device) as memory:
        try:
            if method == "r2talker":
                result = bench_training(cfg, identity_root, model_dir, clock)
            elif method == "gstalker":
                with retained_heap(device.type == "cpu"):
                    summary = train_gstalker(cfg, identity_root, pretrained, model_dir, clock)
                result = {"iterations": cfg.total_iterations, "static_iterations": cfg.static_iterations,
                          "joint_iterations": cfg.iterations, "gaussians": summary["gaussians"],
                          "step_seconds": summary["seconds"]}
            else:
                with retained_heap(device.type == "cpu"):
                    summary = get_method(method).train(cfg, identity_root, pretrained, model_dir, clock)
                result = {"iterations": cfg.iterations,
                          "step_seconds": summary.get("shared_training_seconds", summary["seconds"]),
                          **{key: value for key, value in summary.items()
                             if key not in ("seconds", "shared_training_seconds")}}
                if method == "s3dnerf":
                    result["fit_seconds"] = summary["seconds"]  # the held-out identity's source image, encoded
            result["completed"] = True
        except DeadlineReached as stop:
            result = {"completed": False, "stopped": str(stop)}
        except torch.cuda.OutOfMemoryError as error:
            # Recorded, and the other methods still run: one card's memory is a finding, not a crash.
            torch.cuda.empty_cache()
            result = {"completed": False, "error": f"CUDA out of memory: {str(error).splitlines()[0]}"}
    result.update(memory.record())
    result["wall_seconds"] = time.perf_counter() - started
    result["logged_steps"] = [step for step, _ in clock.steps]
    result["iterations_per_s"] = clock.rate()
    if clock.rate():
        result["seconds_per_iteration"] = 1.0 / clock.rate()
    return result


def render_gstalker(cfg: GSTalkerConfig, identity_root: Path, pretrained: dict[str, Path], model_dir: Path,
                    size: int, frames: int, device: torch.device) -> dict[str, Any]:
    """FPS of ``frames`` validation frames (head and torso over the background) at ``size`` x ``size``."""
    head = load_gstalker(cfg, identity_root, pretrained, model_dir)
    scene = head.scene
    intrinsics = scene.intrinsics.matrix(size).to(device)
    background = scene.background(size).to(device)
    chosen = np.resize(scene.validation_frames if len(scene.validation_frames) else scene.training_frames,
                       frames + 1)
    seconds = []
    with torch.no_grad():
        for number, index in enumerate(int(i) for i in chosen):
            condition = FrameCondition(c2w=torch.from_numpy(scene.c2w[index]).to(device),
                                       audio=torch.from_numpy(scene.audio(index)).to(device),
                                       eye=torch.tensor([float(scene.eye[index])], device=device),
                                       pose=torch.from_numpy(scene.raw_poses[index]).to(device))
            _synchronise(device)
            started = time.perf_counter()
            parts = [head.model.render_part(part, condition, intrinsics, size, head.deform, spatial)
                     for part, spatial in (("head", head.head_spatial), ("torso", head.torso_spatial))]
            compose(*parts, background)
            _synchronise(device)
            if number > 0:
                seconds.append(time.perf_counter() - started)
    return {"size": size, "trained_size": scene.image_size, "frames": frames, "fps": len(seconds) / sum(seconds),
            "median_ms_per_frame": 1000.0 * statistics.median(seconds),
            "gaussians": head.model.head.count + head.model.torso.count}


def render_head(method: str, cfg: Any, identity_root: Path, pretrained: dict[str, Path], model_dir: Path,
                frames: int, device: torch.device) -> dict[str, Any]:
    """FPS of the method's own ``TalkingHead.render`` over ``frames`` frames of the identity's first self-driven
    test clip, after one untimed frame; JEAN's rays at ``JEAN_PAPER_SIZE``. Timed as one call, as the speed stage
    does: a head may render its frames in batches (S3D-NeRF's come 8 at a time)."""
    head = get_method(method).load(cfg, identity_root, pretrained, model_dir)
    size = cfg.image_size if method == "s3dnerf" else JEAN_PAPER_SIZE
    if method == "jean":
        head.render_size = size  # rays at the paper's size; the frame is composited at the processed size
    driving = speed_driving(identity_root, frames, AudioConfig())
    with torch.no_grad():
        warmup = [frame.shape for frame in head.render(driving.slice(0, 1))]
        _synchronise(device)
        started = time.perf_counter()
        count = sum(1 for _ in head.render(driving))
        _synchronise(device)
        seconds = time.perf_counter() - started
    return {"size": size, "output_size": list(warmup[0][:2]), "frames": count, "fps": count / seconds,
            "ms_per_frame": 1000.0 * seconds / count}


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------------------------


def run(identity_root: Path, pretrained: dict[str, dict[str, Path]], device: torch.device, iterations: dict[str, int],
        r2talker_torso: int, frames: dict[str, int], size: int, deadline_s: float, cpu_ray_chunk: int,
        methods: tuple[str, ...], skip_tests: bool, note: str = "",
        overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """All the steps; ``pretrained`` maps each method to its corpus-level models' folders; ``overrides`` (method
    -> config fields) shrink the run for a smoke test and are recorded (a demo aid among them still fails the
    check)."""
    started = time.perf_counter()
    deadline = started + deadline_s
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "commit": git_commit(ROOT),
        "profile": "paper",
        "identity": str(identity_root),
        "device": str(device),
        "deadline_s": deadline_s,
        "render_size": size,
    }
    if note:
        result["note"] = note
    if device.type != "cuda":
        result["cuda_tests"] = {"skipped": "no CUDA device: gsplat/tcnn against torch (images and gradients) need one"}
    elif skip_tests:
        result["cuda_tests"] = {"skipped": "--skip-tests"}
    else:
        logger.info("CUDA-only tests")
        result["cuda_tests"] = {"pytest": run_gpu_tests(min(TEST_TIMEOUT_S, deadline - time.perf_counter())),
                                "rasteriser_gradients": rasteriser_gradients()}
    configs = paper_configs(device.type, iterations, r2talker_torso, cpu_ray_chunk)
    result["methods"] = {}
    for position, method in enumerate(methods):
        cfg = dataclasses.replace(configs[method], **(overrides or {}).get(method, {}))
        record: dict[str, Any] = {"demo_aids": check_no_demo_aid(method, cfg)}
        if method in PAPER_DEPARTURES:
            fields, reason = PAPER_DEPARTURES[method]
            record["paper_departures"] = {"fields": fields, "reason": reason}
        if (overrides or {}).get(method):
            record["overrides"] = overrides[method]
        remaining = deadline - time.perf_counter()
        weights = [SHARES[name] for name in methods[position:]]
        share = remaining * weights[0] / sum(weights)
        budget_end = time.perf_counter() + max(0.0, share - (RENDER_RESERVE_S if frames[method] else 0.0))
        logger.info("%s at the paper profile: training (%.0f s of the deadline left)", method, remaining)
        with tempfile.TemporaryDirectory(prefix=f"gpu_check_{method}_") as scratch:
            model_dir = Path(scratch) / "model"
            model_dir.mkdir()  # as the train stage hands a trainer its (empty) folder
            record["training"] = train_method(method, cfg, identity_root, pretrained[method], model_dir, device,
                                              budget_end)
            if frames[method] <= 0:
                record["rendering"] = {"skipped": "--frames 0 for this method" if device.type == "cuda" else
                                       f"not asked for on a CPU (--{method}-frames)"}
            elif not record["training"].get("completed"):
                record["rendering"] = {"skipped": "training was stopped by the deadline: no model to render"}
            elif time.perf_counter() > deadline:
                record["rendering"] = {"skipped": "the deadline passed"}
            else:
                logger.info("%s: rendering %d frames", method, frames[method])
                with PeakMemory(device) as memory, retained_heap(device.type == "cpu"):
                    if method == "r2talker":
                        record["rendering"] = bench_rendering(model_dir, identity_root, size, frames[method],
                                                              device, "trained by this check")
                    elif method == "gstalker":
                        record["rendering"] = render_gstalker(cfg, identity_root, pretrained[method], model_dir,
                                                              size, frames[method], device)
                    else:
                        record["rendering"] = render_head(method, cfg, identity_root, pretrained[method],
                                                          model_dir, frames[method], device)
                record["rendering"].update(memory.record())
        result["methods"][method] = record
    result["wall_seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identity", type=Path, default=Path("data/processed/S001"),
                        help="a processed identity (the output of the preprocessing stages)")
    parser.add_argument("--models", type=Path, default=Path("data/models"),
                        help="the corpus-level models' folder (JEAN's encoders, S3D-NeRF's sync expert; "
                             "audio2motion for a2m features if a config asks)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="iterations of each method (CUDA defaults: 1000 R2-Talker head, 3000 GSTalker, "
                             "300 JEAN, 100 S3D-NeRF)")
    for method in METHODS:
        parser.add_argument(f"--{method}-iterations", type=int, default=None, help="overrides --iterations")
    parser.add_argument("--torso-iterations", type=int, default=None,
                        help="R2-Talker torso iterations (default: the paper's 200K:240K of the head's)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames to time per method after a warm-up (default 5 on CUDA; on a CPU 2 for GSTalker "
                             "and S3D-NeRF, 0 for R2-Talker and JEAN)")
    for method in METHODS:
        parser.add_argument(f"--{method}-frames", type=int, default=None, help="overrides --frames")
    parser.add_argument("--size", type=int, default=PAPER_SIZE,
                        help="R2-Talker's and GSTalker's rendered frame size (both papers: 450)")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help=f"total seconds (default {CUDA_DEADLINE_S:.0f} on CUDA, {CPU_DEADLINE_S:.0f} on a CPU)")
    parser.add_argument("--cpu-ray-chunk", type=int, default=1024,
                        help="R2-Talker's train_ray_chunk on a CPU (memory only: the gradient is the same)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--skip-tests", action="store_true", help="skip the CUDA-only tests")
    parser.add_argument("--note", default="", help="a sentence recorded with the numbers")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="METHOD.FIELD=VALUE",
                        help="override a config field, e.g. r2talker.rays_per_step=512 (repeatable; recorded; for "
                             "smoke tests -- the paper profile is the defaults)")
    parser.add_argument("--output", type=Path, default=None,
                        help="default reports/bench/gpu_<date>.json on CUDA, reports/bench/paper_profile_cpu.json "
                             "on a CPU")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (args.identity / "track").is_dir():
        parser.error(f"{args.identity} is not a processed identity (no track/): "
                     f"run `dvc repro track@{args.identity.name}`")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    methods = tuple(name.strip() for name in args.methods.split(",") if name.strip())
    if not methods or any(name not in METHODS for name in methods):
        parser.error(f"--methods is a comma-separated subset of {','.join(METHODS)}")
    given = {method: getattr(args, f"{method}_iterations") for method in METHODS}
    if not cuda and args.iterations is None and any(given[method] is None for method in methods):
        parser.error("on a CPU give --iterations (a paper-profile R2-Talker step takes minutes there)")
    iterations = {method: given[method] or args.iterations or DEFAULT_ITERATIONS[method] for method in METHODS}
    if min(iterations[method] for method in methods) < 2:
        parser.error("each method needs at least 2 iterations (the rate is taken after the first)")
    torso = args.torso_iterations if args.torso_iterations is not None else \
        int(round(iterations["r2talker"] * 200_000 / 240_000))
    default_frames = {method: 5 for method in METHODS} if cuda else \
        {"r2talker": 0, "gstalker": 2, "jean": 0, "s3dnerf": 2}
    frames = {method: (getattr(args, f"{method}_frames") if getattr(args, f"{method}_frames") is not None else
                       args.frames if args.frames is not None else default_frames[method])
              for method in METHODS}
    deadline = args.deadline_s or (CUDA_DEADLINE_S if cuda else CPU_DEADLINE_S)
    output = args.output or Path("reports/bench") / (
        f"gpu_{datetime.now(timezone.utc):%Y-%m-%d}.json" if cuda else "paper_profile_cpu.json")
    torch.set_num_threads(max(1, args.threads))
    pretrained: dict[str, dict[str, Path]] = {}
    for method in methods:
        folders = {name: args.models / name for name in get_method(method).pretrained}
        missing = [name for name, folder in folders.items() if not folder.is_dir() and name != "audio2motion"]
        if missing:
            stages = " ".join("pretrain_sync" if name == "sync_expert" else f"pretrain_{name}" for name in missing)
            parser.error(f"{method} needs the corpus-level model(s) {missing} in {args.models}: "
                         f"run `dvc repro {stages}`")
        # audio2motion is read only by configs with a2m features (not the paper profile's), so it may be absent
        pretrained[method] = {name: folder for name, folder in folders.items() if folder.is_dir()}
    overrides: dict[str, dict[str, Any]] = {}
    for item in args.overrides:
        target, separator, value = item.partition("=")
        method, _, name = target.partition(".")
        fields = get_method(method).config if method in METHODS else None
        if not separator or fields is None or name not in {f.name for f in dataclasses.fields(fields)}:
            parser.error(f"--set {item}: expected METHOD.FIELD=VALUE with FIELD a field of the method's config")
        overrides.setdefault(method, {})[name] = yaml.safe_load(value)
    results = run(args.identity, pretrained, device, iterations, torso, frames, args.size, deadline,
                  args.cpu_ray_chunk, methods, args.skip_tests, args.note, overrides)
    results["peak_rss_gb_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    write_text(output, json.dumps(results, indent=2, default=_json_default) + "\n")
    logger.info("wrote %s", output)
    failed = [name for name, record in results.get("cuda_tests", {}).items()
              if isinstance(record, dict) and record.get("passed") is False]
    if failed:
        raise SystemExit(f"CUDA checks failed: {failed} (details in {output})")


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    main()
