"""Inference FPS and training time: throughput and cost, measured on the machine that runs them.

Both values only mean something together with the hardware, so the device
goes into the note (and a table footnote) with the number.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from typing import Any, Callable

import torch

from talkhead_models.metrics.base import MetricValue

log = logging.getLogger(__name__)


def device_description(device: str | torch.device | None = None) -> str:
    """"NVIDIA H100 80GB HBM3 (cuda:0)" or "CPU x86_64, 2 threads": what a reader needs to compare speeds."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    processor = platform.processor() or platform.machine()
    return f"CPU {processor}, {torch.get_num_threads()} threads of {os.cpu_count()} cores"


def _synchronise(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without a barrier the clock would stop before the work does.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_fps(render: Callable[[int], Any], frames: int = 100, warmup: int = 5,
                device: str | torch.device | None = None) -> MetricValue:
    """Frames per second of ``render(i)`` over ``frames`` calls after ``warmup`` untimed calls.

    ``render`` renders frame ``i`` (its output is discarded); ``device`` is
    where it runs, for synchronisation and the note.
    """
    if frames < 1 or warmup < 0:
        raise ValueError(f"need frames >= 1 and warmup >= 0, got frames={frames}, warmup={warmup}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    with torch.no_grad():
        for index in range(warmup):
            render(index)
        _synchronise(device)
        start = time.perf_counter()
        for index in range(frames):
            render(warmup + index)
        _synchronise(device)
        elapsed = time.perf_counter() - start
    fps = frames / elapsed
    description = device_description(device)
    log.info("rendered %d frames in %.3f s: %.2f frames/s on %s", frames, elapsed, fps, description)
    return MetricValue("FPS", fps, unit="frames/s", note=f"{frames} frames after {warmup} warm-up",
                       hardware=description)


def training_time(seconds: float, hardware: str) -> MetricValue:
    """Training wall time in hours (lower is better) from a recorded duration in seconds and where it ran.

    ``hardware`` is :func:`device_description` of the training device, recorded when training ran.
    """
    if seconds < 0:
        raise ValueError(f"training time cannot be negative, got {seconds} s")
    return MetricValue("Training time", seconds / 3600.0, unit="h", higher_is_better=False, hardware=hardware)
