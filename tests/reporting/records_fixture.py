"""Metric records as the evaluate stage writes them (the contract), for the reporting tests.

``write_corpus`` writes ground_truth, static and part of the R2-Talker ladder
on two identities: LPIPS is n/a everywhere (no weights), Sync is measured
with a substitute, FPS carries its hardware, and r2talker_maglo is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from talkhead_models.metrics.base import MetricValue, substitute

HARDWARE = "CPU x86_64, 1 threads of 2 cores"
SYNC_SUBSTITUTE = substitute("the project's sync expert trained on the corpus (SyncNet weights absent)")
LPIPS_MISSING = "missing alexnet-owt-7be5be79.pth in weights/"
HIGHER = {"PSNR": True, "SSIM": True, "LPIPS": False, "M-LMD": False, "F-LMD": False, "Sync": True,
          "LSE-C": True, "Exp-Diff": False, "AUE": False, "FPS": True, "Training time": False}
UNITS = {"PSNR": "dB", "M-LMD": "px", "FPS": "frames/s", "Training time": "h"}


def metric(name: str, value: float | None) -> MetricValue:
    """A value as the metrics package makes it: n/a with its reason, substitutes and hardware labelled."""
    higher = HIGHER.get(name, True)
    if value is None:
        return MetricValue.not_available(name, LPIPS_MISSING if name == "LPIPS" else "not measured",
                                         higher_is_better=higher)
    reference = SYNC_SUBSTITUTE if name in ("Sync", "LSE-C") else "reference"
    hardware = HARDWARE if name in ("FPS", "Training time") else ""
    return MetricValue(name, float(value), unit=UNITS.get(name, ""), reference=reference, higher_is_better=higher,
                       hardware=hardware)


def write_record(folder: Path, method: str, family: str, variant: str, identity: str,
                 self_values: dict[str, float | None], cross_values: dict[str, float | None] | None = None) -> Path:
    """``<folder>/<method>/<identity>.json`` following the contract (Infinity stays JSON ``Infinity``)."""
    settings = {"self": {"frames": 120, "metrics": {n: metric(n, v).to_dict() for n, v in self_values.items()}}}
    if cross_values is not None:
        settings["cross"] = {"frames": 300, "metrics": {n: metric(n, v).to_dict() for n, v in cross_values.items()}}
    record = {"method": method, "family": family, "variant": variant, "identity": identity, "profile": "demo",
              "hardware": HARDWARE, "settings": settings}
    path = folder / method / f"{identity}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return path


def write_corpus(folder: Path) -> Path:
    """ground_truth, static, r2talker_audio_baseline (2 identities), r2talker_landmark_encoding and r2talker (1)."""
    for identity, static_psnr in (("S001", 20.0), ("S002", 22.0)):
        write_record(folder, "ground_truth", "ground_truth", "", identity,
                     {"PSNR": float("inf"), "SSIM": 1.0, "LPIPS": None, "M-LMD": 0.0, "Sync": 7.5},
                     {"Sync": 7.0, "AUE": 0.0})
        write_record(folder, "static", "static", "", identity,
                     {"PSNR": static_psnr, "SSIM": 0.6, "LPIPS": None, "M-LMD": 3.0, "Sync": 1.0, "FPS": 900.0},
                     {"Sync": 0.9, "AUE": 2.0})
    write_record(folder, "r2talker_audio_baseline", "r2talker", "audio_baseline", "S001",
                 {"PSNR": 25.0, "LPIPS": None, "M-LMD": 2.9, "Sync": 5.0, "FPS": 20.0}, {"Sync": 4.0})
    write_record(folder, "r2talker_audio_baseline", "r2talker", "audio_baseline", "S002",
                 {"PSNR": 27.0, "LPIPS": None, "M-LMD": 2.7, "Sync": None, "FPS": 22.0}, {"Sync": 4.2})
    write_record(folder, "r2talker_landmark_encoding", "r2talker", "landmark_encoding", "S001",
                 {"PSNR": 27.5, "LPIPS": None, "M-LMD": 2.3, "Sync": 6.0, "FPS": 25.0})
    write_record(folder, "r2talker", "r2talker", "", "S001",
                 {"PSNR": 28.0, "LPIPS": None, "M-LMD": 2.2, "Sync": 6.5, "FPS": 30.0, "Training time": 0.5})
    return folder


def write_curve(models: Path, method: str, identity: str, rows: list[tuple[int, float, float, float | None]]) -> Path:
    """``<models>/<method>/<identity>/curve.csv``: (step, seconds, loss, val_psnr or None)."""
    path = models / method / identity / "curve.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["step,seconds,loss,val_psnr"]
    lines += [f"{step},{seconds},{loss},{'' if psnr is None else psnr}" for step, seconds, loss, psnr in rows]
    path.write_text("\n".join(lines) + "\n")
    return path
