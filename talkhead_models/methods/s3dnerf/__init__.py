"""S3D-NeRF (ECCV 2024): a single-shot, speech-driven NeRF trained once across identities.

One image of a person it never saw and any speech give a talking head, with
no optimisation for the person. Registered names (``MethodSpec.variant`` in
brackets), the rows of the paper's ablation table:

* ``s3dnerf``: the full method (cross-modal deformation with slot attention
  and cross-attention, lip-sync discriminator);
* ``s3dnerf_no_deform`` (no_deform): no deformation field;
* ``s3dnerf_naive_deform`` (naive_deform): displacement from position and audio;
* ``s3dnerf_concat_deform`` (concat_deform): the aggregated visual feature
  concatenated instead of cross-attended;
* ``s3dnerf_no_lip_sync`` (no_lip_sync): without the lip-sync loss.

A run ``s3dnerf-<ID>`` trains on every processed identity but ``<ID>``
(``MethodSpec.across_identities``) and is evaluated on ``<ID>`` from one of its
images, the frame the ``static`` row repeats. Its Training time is what the
identity needs (the model loaded and the source image encoded), the paper's
fit time: the mean of ``FIT_REPETITIONS`` timings, each kept in train.json
(``repetition_seconds``) for the claim's interval; the shared training's
seconds are in train.json as ``shared_training_seconds``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from talkhead_models.components.backends import resolve_device
from talkhead_models.methods.base import MethodSpec, MetricLogger, register
from talkhead_models.methods.s3dnerf.config import S3DNeRFConfig
from talkhead_models.methods.s3dnerf.trainer import S3DNeRFHead, train_s3dnerf
from talkhead_models.pretrained.datasets import SplitConfig, processed_identities

FIT_REPETITIONS = 8
"""Times the fit for a new identity is measured (the claim's interval resamples them; a fit takes < 1 s)."""

VARIANTS = (
    ("s3dnerf", "", {}, "the full method: cross-attention deformation field and lip-sync discriminator"),
    ("s3dnerf_no_deform", "no_deform", {"deformation": "none"}, "ablation: no deformation field"),
    ("s3dnerf_naive_deform", "naive_deform", {"deformation": "naive"},
     "ablation: displacement from position and audio only"),
    ("s3dnerf_concat_deform", "concat_deform", {"deformation": "concat"},
     "ablation: visual feature concatenated, not cross-attended"),
    ("s3dnerf_no_lip_sync", "no_lip_sync", {"sync_weight": 0.0}, "ablation: no lip-sync loss"),
)


def train(cfg: S3DNeRFConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path,
          log_metric: MetricLogger | None = None) -> dict[str, Any]:
    """Train across the identities beside ``identity_root``, holding it out; then time what it needs."""
    identity_root = Path(identity_root)
    names = [p.identity for p in processed_identities(identity_root.parent)]
    summary = train_s3dnerf(cfg, identity_root.parent, names, SplitConfig(holdout_identity=identity_root.name),
                            pretrained, model_dir, log_metric)
    fits = []
    for _ in range(FIT_REPETITIONS):
        started = time.perf_counter()
        S3DNeRFHead(model_dir, identity_root, pretrained=pretrained)
        fits.append(time.perf_counter() - started)
    return {**summary, "seconds": float(np.mean(fits)), "repetition_seconds": fits,
            "shared_training_seconds": summary["seconds"]}


def load(cfg: S3DNeRFConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path) -> S3DNeRFHead:
    return S3DNeRFHead(model_dir, identity_root, device=str(resolve_device(cfg.device, "s3dnerf")),
                       pretrained=pretrained)


SPECS = {name: register(MethodSpec(name=name, family="s3dnerf", config=S3DNeRFConfig, train=train, load=load,
                                   variant=variant, overrides=overrides, description=description,
                                   pretrained=("sync_expert", "audio2motion"), across_identities=True))
         for name, variant, overrides, description in VARIANTS}

__all__ = ["SPECS", "VARIANTS", "S3DNeRFConfig", "S3DNeRFHead"]
