"""Evaluation metrics: one function per metric, batched over frames, each returning a :class:`MetricValue`.

=============  ======================================  ===========================================
metric         function                                needs (in the weights folder)
=============  ======================================  ===========================================
PSNR, SSIM     image.psnr, image.ssim                  nothing
LPIPS          perceptual.lpips                        alexnet-owt-7be5be79.pth, lpips_alex_lin.pth
FID            fid_score.fid                           pt_inception-2015-12-05-6726825d.pth
M-LMD, F-LMD   landmarks.mouth_lmd, .face_lmd          nothing (68 landmarks, dlib's if installed)
Sync/LSE-C/D   sync.sync_metrics                       a SyncScorer (SyncNet or the sync expert)
CPBD           sharpness.cpbd                          nothing
AUE            action_units.aue                        nothing (landmark-based substitute)
ACD            identity.acd                            arcface_r50.pth (evaluation: else dlib)
Exp-Diff       expression.exp_diff                     nothing (tracker coefficients)
FPS            speed.measure_fps                       nothing
Training time  speed.training_time                     nothing
=============  ======================================  ===========================================

:data:`METRICS` maps each table name to its :class:`MetricSpec`;
:func:`available_metrics` says, for a weights folder, which are measured
as the papers do, which with a substitute, and which are n/a and why.
docs/WEIGHTS.md lists the files and where to get them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from talkhead_models.metrics.action_units import ACTION_UNITS, AU_SUBSTITUTE, action_unit_estimates, aue
from talkhead_models.metrics.base import (NOT_AVAILABLE, REFERENCE, MetricValue, MissingWeightsError, WeightsError,
                                          as_frames, footnotes, substitute, weights_dir)
from talkhead_models.metrics.sharpness import cpbd, cpbd_sharpness
from talkhead_models.metrics.expression import exp_diff
from talkhead_models.metrics.fid_score import INCEPTION_FILE, FidInceptionV3, fid, frechet_distance, load_fid_inception
from talkhead_models.metrics.identity import ARCFACE_FILE, IResNet50, acd, align_faces, load_arcface
from talkhead_models.metrics.image import psnr, ssim
from talkhead_models.metrics.landmarks import face_lmd, mouth_lmd
from talkhead_models.metrics.perceptual import BACKBONE_FILES, LINEAR_FILES, LpipsNetwork, load_lpips, lpips
from talkhead_models.metrics.speed import device_description, measure_fps, training_time
from talkhead_models.metrics.sync import SYNC_METRICS, SyncScorer, sync_metrics

SYNCNET_FILE = "syncnet_v2.model"
"""SyncNet's published weights; read by the sync scorer (talkhead_models.pretrained), named here for availability."""
SYNC_EXPERT_SUBSTITUTE = substitute("the project's sync expert trained on the corpus (SyncNet weights absent)")


@dataclass(frozen=True)
class MetricSpec:
    """A table metric: its function, what it compares, and the weights files it needs."""

    name: str
    function: Callable[..., MetricValue | dict[str, MetricValue]]
    inputs: str
    """What the function takes, e.g. "generated frames, ground-truth frames"."""
    higher_is_better: bool
    weights: tuple[str, ...] = ()
    """Files that must be in the weights folder for the value to exist."""
    substitute_label: str = ""
    """Set for metrics that are always measured with a stand-in for the papers' tool."""


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("PSNR", psnr, "generated frames, ground-truth frames", True),
    MetricSpec("SSIM", ssim, "generated frames, ground-truth frames", True),
    MetricSpec("LPIPS", lpips, "generated frames, ground-truth frames", False,
               weights=(BACKBONE_FILES["alex"], LINEAR_FILES["alex"])),
    MetricSpec("FID", fid, "generated frame set, real frame set", False, weights=(INCEPTION_FILE,)),
    MetricSpec("M-LMD", mouth_lmd, "generated 68 landmarks, ground-truth 68 landmarks", False),
    MetricSpec("F-LMD", face_lmd, "generated 68 landmarks, ground-truth 68 landmarks", False),
    MetricSpec("Sync", sync_metrics, "sync scorer, generated frames or mouths, audio", True),
    MetricSpec("LSE-C", sync_metrics, "sync scorer, generated frames or mouths, audio", True),
    MetricSpec("LSE-D", sync_metrics, "sync scorer, generated frames or mouths, audio", False),
    MetricSpec("CPBD", cpbd, "generated frames", True),
    MetricSpec("AUE", aue, "generated 68 landmarks, ground-truth 68 landmarks", False,
               substitute_label=AU_SUBSTITUTE),
    MetricSpec("ACD", acd, "generated frames, reference frames (+ 68 landmarks to align)", False,
               weights=(ARCFACE_FILE,)),
    MetricSpec("Exp-Diff", exp_diff, "generated expression coefficients, driving expression coefficients", False),
    MetricSpec("FPS", measure_fps, "render callable", True),
    MetricSpec("Training time", training_time, "recorded seconds, hardware", False),
)}


def available_metrics(weights: str | Path | None = None) -> dict[str, str]:
    """Per metric: "reference", "substitute: <what>", or "n/a: <missing files>" for this weights folder."""
    folder = weights_dir(weights)
    status = {}
    for name, spec in METRICS.items():
        missing = [file for file in spec.weights if not (folder / file).exists()]
        if missing:
            status[name] = f"{NOT_AVAILABLE}: missing {', '.join(missing)} in {folder}/"
        elif spec.substitute_label:
            status[name] = spec.substitute_label
        elif name in SYNC_METRICS:
            status[name] = REFERENCE if (folder / SYNCNET_FILE).exists() else SYNC_EXPERT_SUBSTITUTE
        else:
            status[name] = REFERENCE
    return status


__all__ = [
    "ACTION_UNITS", "METRICS", "MetricSpec", "MetricValue", "MissingWeightsError", "NOT_AVAILABLE", "REFERENCE",
    "SYNCNET_FILE", "SyncScorer", "WeightsError", "FidInceptionV3", "IResNet50", "LpipsNetwork", "acd",
    "action_unit_estimates", "align_faces", "as_frames", "aue", "available_metrics", "cpbd", "cpbd_sharpness",
    "device_description", "exp_diff", "face_lmd", "fid", "footnotes", "frechet_distance", "load_arcface",
    "load_fid_inception", "load_lpips", "lpips", "measure_fps", "mouth_lmd", "psnr", "ssim", "substitute",
    "sync_metrics", "training_time", "weights_dir",
]
