"""R2-Talker's speed as the paper reports it: training iterations per second and rendering FPS at 450 x 450.

Usage (from the repository root, after `dvc repro` has processed S001)::

    python -m benchmarks.bench_r2talker --profile paper --iterations 40 --torso-iterations 20
    python -m benchmarks.bench_r2talker --model data/models/r2talker/S001 --output reports/bench/r2talker_demo.json

Training: the method's own trainer (``train_r2talker``) runs ``--iterations`` head steps and
``--torso-iterations`` torso steps with the chosen profile's config (``paper``: the dataclass defaults, 65,536
rays per step; ``demo``: params.yaml's demo overrides); the rate is taken from its curve, between the first
logged step and the last of each stage, so start-up and the first step's warm-up are left out. The iteration
budget scales the paper's schedules (progressive levels, lips fine-tuning), so a short run goes through the
same kinds of steps in the same proportions.

Rendering: the trained model (or ``--model``'s) renders ``--frames`` validation frames of the identity at
``--size`` pixels (``R2TalkerModel.resized``: the same cameras, intrinsics scaled), conditioned on their tracked
landmarks; FPS is frames over the wall time after one warm-up frame. A model trained for a few dozen iterations
has not pruned its occupancy grid yet, so its FPS is a lower bound; ``--model`` times a fully trained one.

On a CUDA machine the trainer and renderer run there (``device: auto``) with the tcnn hash grid when
tiny-cuda-nn is installed. Writes the machine, the date, the settings and the numbers as JSON.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as ``python -m`` does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import yaml

from benchmarks.bench_components import machine_info
from talkhead_models.atomic import write_text
from talkhead_models.config import from_dict, load_params, section_overrides
from talkhead_models.methods.base import MetricLogger
from talkhead_models.methods.r2talker import R2TalkerConfig
from talkhead_models.methods.r2talker.data import IdentityData
from talkhead_models.components.backends import resolve_device
from talkhead_models.methods.r2talker.model import MODEL_FILE, load_record
from talkhead_models.checkpoints import CURVE_FILE
from talkhead_models.methods.r2talker.trainer import train_r2talker

logger = logging.getLogger("benchmarks.bench_r2talker")

PAPER_SIZE = 450
"""R2-Talker reports its inference speed on 450 x 450 frames."""


def profile_config(profile: str, params_path: Path) -> R2TalkerConfig:
    """The paper's config (the dataclass defaults) or the demo profile's, as the train stage builds it."""
    if profile == "paper":
        return R2TalkerConfig()
    params = load_params(params_path)
    params["profile"] = profile
    return from_dict(R2TalkerConfig, section_overrides(params, "r2talker"), "r2talker")


SUMMARISED_FIELDS = ("condition", "maglo", "progressive", "backend", "position_levels", "position_log2_hashmap_size",
                     "position_desired_resolution", "landmark_levels", "sigma_hidden", "geo_feat_dim", "march_steps",
                     "max_samples", "min_transmittance", "occupancy_resolution", "rays_per_step", "frames_per_step")
"""The config fields that set the speed, reported with each number."""


def config_summary(cfg: R2TalkerConfig) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in SUMMARISED_FIELDS}


def stage_rate(curve: list[tuple[int, float]], first_step: int, last_step: int) -> float | None:
    """Steps per second between the first and the last logged step in (first_step, last_step]."""
    rows = [(step, seconds) for step, seconds in curve if first_step < step <= last_step]
    if len(rows) < 2 or rows[-1][1] <= rows[0][1]:
        return None
    return (rows[-1][0] - rows[0][0]) / (rows[-1][1] - rows[0][1])


def read_curve(model_dir: Path) -> list[tuple[int, float]]:
    with open(model_dir / CURVE_FILE, newline="") as handle:
        return [(int(row["step"]), float(row["seconds"])) for row in csv.DictReader(handle)]


def bench_training(cfg: R2TalkerConfig, identity_root: Path, model_dir: Path,
                   log_metric: MetricLogger | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``model_dir``; head and torso iterations per second from the curve."""
    started = time.perf_counter()
    summary = train_r2talker(cfg, identity_root, {}, model_dir, log_metric)
    wall = time.perf_counter() - started
    curve = read_curve(model_dir)
    head = stage_rate(curve, 0, cfg.iterations)
    torso = stage_rate(curve, cfg.iterations, cfg.iterations + cfg.torso_iterations)
    return {
        "head_iterations": cfg.iterations,
        "torso_iterations": cfg.torso_iterations,
        "head_iterations_per_s": head,
        "torso_iterations_per_s": torso,
        "rays_per_step": cfg.rays_per_step,
        "torso_rays_per_step": cfg.torso_rays_per_step,
        "step_seconds": summary["seconds"],
        "wall_seconds": wall,
        "occupancy": summary["occupancy"],
        "config": config_summary(cfg),
    }


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_rendering(model_dir: Path, identity_root: Path, size: int, frames: int, device: torch.device,
                    model_label: str | None = None) -> dict[str, Any]:
    """FPS of ``frames`` validation frames rendered at ``size`` x ``size`` (after one warm-up frame)."""
    model, scene, record = load_record(model_dir / MODEL_FILE, device)
    data = IdentityData(identity_root, with_landmarks=model.cfg.condition == "landmarks",
                        audio_kind=model.cfg.audio_kind if model.cfg.condition == "audio" else None)
    trained_size = model.image_size
    model = model.resized(size)
    chosen = np.resize(data.validation_frames, frames + 1)  # the warm-up frame first
    inputs = (data.landmark_windows(chosen, model.cfg.landmark_window) if model.cfg.condition == "landmarks"
              else data.audio_windows(chosen, model.cfg.audio_attention_window))
    with torch.no_grad():
        conditions = model.head.frame_conditions(torch.as_tensor(inputs, device=device),
                                                 torch.as_tensor(data.eye[chosen], device=device))
    scale = size / trained_size
    intrinsics = (data.cameras.focal * scale, data.cameras.cx * scale, data.cameras.cy * scale)
    background = torch.as_tensor(data.background, device=device).permute(2, 0, 1)[None]
    background = torch.nn.functional.interpolate(background, size=(size, size), mode="bilinear",
                                                 align_corners=False)[0].permute(1, 2, 0)
    background = background.reshape(-1, 3).contiguous()
    seconds = []
    for index, frame in enumerate(chosen):
        c2w = torch.as_tensor(scene.c2w(data.cameras.c2w[int(frame)]), dtype=torch.float32, device=device)
        _synchronise(device)
        started = time.perf_counter()
        model.render_frame(conditions[index], c2w, intrinsics, background)
        _synchronise(device)
        if index > 0:
            seconds.append(time.perf_counter() - started)
    return {
        "size": size,
        "trained_size": trained_size,
        "frames": frames,
        "fps": len(seconds) / sum(seconds),
        "median_ms_per_frame": 1000.0 * statistics.median(seconds),
        "occupancy": model.grid.occupancy_ratio,
        "config": config_summary(model.cfg),
        "model": model_label or str(model_dir),
        "model_iterations": record.get("iterations"),
    }


def run(identity_root: Path, profile: str, iterations: int, torso_iterations: int, size: int, frames: int,
        device_name: str, model_dir: Path | None, params_path: Path, overrides: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
    cfg = dataclasses.replace(profile_config(profile, params_path), **(overrides or {}))
    log_every = max(1, min(iterations, max(torso_iterations, 1)) // 5)
    # No validation renders: they are not training steps, and at the paper's sizes on a CPU one takes minutes.
    cfg = dataclasses.replace(cfg, iterations=iterations, torso_iterations=torso_iterations, device=device_name,
                              log_every=log_every, validate_every=10**9, validation_frames=0,
                              checkpoint_every=10**9)
    device = resolve_device(device_name, "r2talker")
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "method": "r2talker",
        "profile": profile,
        "identity": identity_root.name,
        "device": str(device),
    }
    with tempfile.TemporaryDirectory(prefix="bench_r2talker_") as scratch:
        if model_dir is not None:
            result["profile"] = f"the trained model's ({model_dir})"
        else:
            logger.info("training r2talker (%s profile) for %d + %d iterations on %s", profile, iterations,
                        torso_iterations, device)
            model_dir = Path(scratch) / "model"
            result["training"] = bench_training(cfg, identity_root, model_dir)
        if frames > 0:
            logger.info("rendering %d frames at %d x %d", frames, size, size)
            label = "trained by this benchmark" if "training" in result else None
            result["rendering"] = bench_rendering(model_dir, identity_root, size, frames, device, label)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identity", type=Path, default=Path("data/processed/S001"),
                        help="a processed identity (the output of the preprocessing stages)")
    parser.add_argument("--profile", choices=("paper", "demo"), default="paper")
    parser.add_argument("--iterations", type=int, default=40, help="head iterations to time")
    parser.add_argument("--torso-iterations", type=int, default=20, help="torso iterations to time")
    parser.add_argument("--model", type=Path, default=None,
                        help="render this trained model folder instead of training one (its own config is used)")
    parser.add_argument("--size", type=int, default=PAPER_SIZE, help="rendered frame size in pixels")
    parser.add_argument("--frames", type=int, default=5,
                        help="frames to time (after one warm-up frame); 0 times training only")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field of the config to train, e.g. --set rays_per_step=8192 "
                             "(repeatable; recorded with the numbers)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--output", type=Path, default=Path("reports/bench/r2talker.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (args.identity / "track").is_dir():
        parser.error(f"{args.identity} is not a processed identity (no track/): run `dvc repro track@{args.identity.name}`")
    if args.model is not None and not (args.model / MODEL_FILE).is_file():
        parser.error(f"{args.model}/{MODEL_FILE} not found: train it with `dvc repro train@r2talker-<ID>-s0`")
    if args.iterations < 2 or args.frames < 0:
        parser.error("--iterations must be at least 2 and --frames at least 0")
    if args.model is not None and args.frames == 0:
        parser.error("--model with --frames 0 has nothing to time")
    torch.set_num_threads(max(1, args.threads))
    overrides = {}
    for item in args.overrides:
        name, separator, value = item.partition("=")
        if not separator or name not in {f.name for f in dataclasses.fields(R2TalkerConfig)}:
            parser.error(f"--set {item}: expected FIELD=VALUE with FIELD a field of R2TalkerConfig")
        overrides[name] = yaml.safe_load(value)
    results = run(args.identity, args.profile, args.iterations, args.torso_iterations, args.size, args.frames,
                  args.device, args.model, args.params, overrides)
    write_text(args.output, json.dumps(results, indent=2) + "\n")
    logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
