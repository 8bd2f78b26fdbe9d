"""Metric records as the evaluate stage writes them (the contract), for the reporting tests.

``write_corpus`` writes ground_truth, static and part of the R2-Talker ladder
on two identities: LPIPS is n/a everywhere (no weights), Sync is measured
with a substitute, FPS carries its hardware, and r2talker_maglo is missing.

Values are written with per-frame samples (per clip for the lip-sync
scores) whose mean is the value given: a difficulty per frame shared by
every run of an identity (as real test frames are) plus a little noise of
the run's own, both small against the differences the tests compare, so a
comparison's interval excludes zero whenever the means differ by a tenth of
the value. A list instead of a number gives the samples themselves.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from talkhead_models.evaluation import record_json
from talkhead_models.metrics.base import CLIP, FRAME, REPETITION, MetricValue, substitute

HARDWARE = "CPU x86_64, 1 threads of 2 cores"
SYNC_SUBSTITUTE = substitute("the project's sync expert trained on the corpus (SyncNet weights absent)")
LPIPS_MISSING = "missing alexnet-owt-7be5be79.pth in weights/"
HIGHER = {"PSNR": True, "SSIM": True, "LPIPS": False, "M-LMD": False, "F-LMD": False, "Sync": True,
          "LSE-C": True, "LSE-D": False, "Exp-Diff": False, "Exp-Diff to audio source": False, "AUE": False,
          "FPS": True, "Training time": False}
UNITS = {"PSNR": "dB", "M-LMD": "px", "FPS": "frames/s", "Training time": "h"}
PER_CLIP = ("Sync", "LSE-C", "LSE-D")
UNSAMPLED = ("FPS", "Training time", "FID")
"""Run-level values: no per-frame samples."""
FRAMES, CLIPS = 120, 6
INPUTS_DIGEST = "0" * 64
"""The inputs_digest every fixture record carries unless told otherwise: seeds of one run share their inputs."""
SHARED_SPREAD, OWN_SPREAD = 0.05, 0.01
"""Per-frame spread (relative to the value) shared by every run of an identity, and each run's own."""


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, parts)).encode()))


def samples(name: str, value: float, identity: str, method: str, count: int | None = None) -> np.ndarray:
    """Per-frame (or per-clip) values whose mean is exactly ``value`` (see the module docstring)."""
    count = count or (CLIPS if name in PER_CLIP else FRAMES)
    if not math.isfinite(value) or value == 0.0:
        return np.full(count, value)  # the ground truth's inf dB and 0 px hold on every frame
    scale = abs(value) or 1.0
    shared = _rng(name, identity).normal(0.0, SHARED_SPREAD * scale, count)
    own = _rng(name, identity, method).normal(0.0, OWN_SPREAD * scale, count)
    noise = shared + own
    return value + noise - noise.mean()


def metric(name: str, value: float | Sequence[float] | None, per_frame: np.ndarray | None = None) -> MetricValue:
    """A value as the metrics package makes it: n/a with its reason, substitutes and hardware labelled."""
    higher = HIGHER.get(name, True)
    if value is None:
        return MetricValue.not_available(name, LPIPS_MISSING if name == "LPIPS" else "not measured",
                                         higher_is_better=higher)
    if not isinstance(value, (int, float)):
        per_frame = np.asarray(value, np.float64)
        value = float(per_frame.mean())
    reference = SYNC_SUBSTITUTE if name in ("Sync", "LSE-C") else "reference"
    hardware = HARDWARE if name in ("FPS", "Training time") else ""
    return MetricValue(name, float(value), unit=UNITS.get(name, ""), reference=reference, higher_is_better=higher,
                       hardware=hardware, per_frame=per_frame,
                       sample_unit=CLIP if name in PER_CLIP else REPETITION if name == "Training time" else FRAME)


def _metrics(values: dict, identity: str, method: str, with_samples: bool) -> dict:
    found = {}
    for name, value in values.items():
        per_frame = None
        if with_samples and isinstance(value, (int, float)) and name not in UNSAMPLED:
            per_frame = samples(name, float(value), identity, method)
        found[name] = metric(name, value, per_frame).to_dict()
    return found


def write_record(folder: Path, method: str, family: str, variant: str, identity: str,
                 self_values: dict[str, float | Sequence[float] | None],
                 cross_values: dict[str, float | Sequence[float] | None] | None = None, *, seed: int | None = None,
                 demo_aids: list[str] | None = None, training: dict | None = None,
                 with_samples: bool = True, inputs_digest: str | None = INPUTS_DIGEST,
                 cross_expression_values: dict[str, float | Sequence[float] | None] | None = None) -> Path:
    """``<folder>/<method>/<identity>.json`` (``<identity>.seed<k>.json`` for a seed k > 0) following the
    contract, written as the evaluate stage writes it (Infinity stays JSON ``Infinity``); ``inputs_digest``
    None writes a record from before records carried one."""
    settings = {"self": {"frames": FRAMES, "metrics": _metrics(self_values, identity, method, with_samples)}}
    if cross_values is not None:
        settings["cross"] = {"frames": FRAMES, "metrics": _metrics(cross_values, identity, method, with_samples)}
    if cross_expression_values is not None:
        settings["cross_expression"] = {"frames": FRAMES, "metrics": _metrics(cross_expression_values, identity,
                                                                              method, with_samples)}
    record = {"method": method, "family": family, "variant": variant, "identity": identity}
    if seed is not None:
        record["seed"] = seed
    record.update({"profile": "demo", "hardware": HARDWARE, "settings": settings})
    if demo_aids is not None:
        record["demo_aids"] = demo_aids
    if training is not None:
        record["training"] = training
    if inputs_digest is not None:
        record["inputs_digest"] = inputs_digest
    name = f"{identity}.seed{seed}.json" if seed else f"{identity}.json"
    path = folder / method / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record_json(record))
    return path


def write_corpus(folder: Path) -> Path:
    """ground_truth, static, r2talker_audio_baseline (2 identities), r2talker_landmark_encoding and r2talker (1)."""
    for identity, static_psnr in (("S001", 20.0), ("S002", 22.0)):
        write_record(folder, "ground_truth", "ground_truth", "", identity,
                     {"PSNR": float("inf"), "SSIM": 1.0, "LPIPS": None, "M-LMD": 0.0, "Sync": 7.5},
                     {"Sync": 7.0, "AUE": 0.0}, demo_aids=[])
        write_record(folder, "static", "static", "", identity,
                     {"PSNR": static_psnr, "SSIM": 0.6, "LPIPS": None, "M-LMD": 3.0, "Sync": 1.0, "FPS": 900.0},
                     {"Sync": 0.9, "AUE": 2.0}, demo_aids=[])
    aids = ["a2m audio", "landmark grid 4/16 levels"]
    write_record(folder, "r2talker_audio_baseline", "r2talker", "audio_baseline", "S001",
                 {"PSNR": 25.0, "LPIPS": None, "M-LMD": 2.9, "Sync": 5.0, "FPS": 20.0}, {"Sync": 4.0},
                 demo_aids=aids)
    write_record(folder, "r2talker_audio_baseline", "r2talker", "audio_baseline", "S002",
                 {"PSNR": 27.0, "LPIPS": None, "M-LMD": 2.7, "Sync": None, "FPS": 22.0}, {"Sync": 4.2},
                 demo_aids=aids)
    write_record(folder, "r2talker_landmark_encoding", "r2talker", "landmark_encoding", "S001",
                 {"PSNR": 27.5, "LPIPS": None, "M-LMD": 2.3, "Sync": 6.0, "FPS": 25.0}, demo_aids=aids)
    write_record(folder, "r2talker", "r2talker", "", "S001",
                 {"PSNR": 28.0, "LPIPS": None, "M-LMD": 2.2, "Sync": 6.5, "FPS": 30.0, "Training time": 0.5},
                 demo_aids=[])
    return folder


def write_curve(models: Path, method: str, identity: str, rows: list[tuple[int, float, float, float | None]],
                validation: tuple[list[int], list[int]] | None = None) -> Path:
    """``<models>/<method>/<identity>/curve.csv``: (step, seconds, loss, val_psnr or None); ``validation``
    (frames, [H, W]) goes into the train.json beside it."""
    path = models / method / identity / "curve.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["step,seconds,loss,val_psnr"]
    lines += [f"{step},{seconds},{loss},{'' if psnr is None else psnr}" for step, seconds, loss, psnr in rows]
    path.write_text("\n".join(lines) + "\n")
    if validation is not None:
        summary = {"seconds": rows[-1][1], "validation_frames": validation[0], "validation_resolution": validation[1]}
        (path.parent / "train.json").write_text(json.dumps(summary))
    return path
