"""DVC stage ``face_model``: the corpus-level morphable landmark model (or BFM 2009 when present).

Reads every identity's FaceMesh points (``data/processed/<ID>/landmarks``) and
frame size (``crop/clips.parquet``), self-calibrates each identity's focal
length, and writes ``face_model.npz`` (mean, identity and expression bases,
landmark selection; see talkhead_models.preprocess.face_model) with
``calibration.json`` (per-identity focal and how it was found).

In dvc.yaml the stage depends on each identity's landmarks folder and clip
table (:data:`IDENTITY_DEPS`, one entry per identity of ``data.identities``),
not on ``data/processed`` as a whole: the track stages write under
``data/processed/<ID>/track`` from this stage's model, which would be a cycle.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.config import to_dict, validate_name
from talkhead_models.data import DataConfig
from talkhead_models.data.arrays import ArrayFileError, NonFiniteError
from talkhead_models.data.landmark_arrays import read_landmarks
from talkhead_models.data.manifest import write_manifest
from talkhead_models.data.processed import ProcessedIdentity
from talkhead_models.preprocess.face_model import (
    FaceModelConfig, FaceModelError, IdentityLandmarks, build_face_model, weights_dir,
)

log = logging.getLogger(__name__)

MODEL_FILE = "face_model.npz"
CALIBRATION_FILE = "calibration.json"

IDENTITY_DEPS = ("data/processed/{identity}/landmarks", "data/processed/{identity}/crop/clips.parquet")
"""What the stage reads of each identity (dvc.yaml lists these for every identity of ``data.identities``)."""


@dataclass(frozen=True)
class FaceModelStageConfig(FaceModelConfig):
    """The face model's settings plus the shared ``data`` section (which identities enter it)."""

    data: DataConfig = field(default_factory=DataConfig)
    """Shared params section ``data``: ``identities`` limits the corpus (empty: every processed identity)."""


def identity_landmarks(folder: Path) -> IdentityLandmarks:
    """An identity's FaceMesh points, detection flags and frame size, checked against each other."""
    processed = ProcessedIdentity(folder)
    paths = {name: processed.path(name) for name in ("landmarks478", "detected", "landmarks68", "usable", "clips")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"identity {folder.name}: missing {missing}; run the crop and landmarks stages "
                                f"(`dvc repro landmarks@{folder.name}`)")
    sizes = pd.read_parquet(paths["clips"], columns=["image_size"])["image_size"].unique()
    try:  # NaN/inf in a frame with a face is refused naming the file and frames (NonFiniteError)
        stored = read_landmarks(paths["landmarks478"].parent, producer=processed.producer("landmarks478"))
    except NonFiniteError:
        raise
    except ArrayFileError as error:
        raise FaceModelError(str(error)) from error
    if len(sizes) != 1:
        raise FaceModelError(f"{paths['clips']}: frames of several sizes {sorted(sizes)}; the crop stage writes "
                             "one image_size per identity")
    return IdentityLandmarks(folder.name, np.asarray(stored.points478), stored.detected, int(sizes[0]))


def run(cfg: FaceModelStageConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> StageResult:
    root = inputs["processed"]
    if cfg.data.identities:
        names = [validate_name(n, "identity") for n in cfg.data.identities]
    else:
        names = sorted(p.name for p in root.iterdir() if ProcessedIdentity(p).path("landmarks478").is_file())
    if not names:
        raise FileNotFoundError(f"{root}: no identity has landmarks; run the landmarks stage first")
    identities = [identity_landmarks(root / name) for name in names]
    built = build_face_model(identities, FaceModelConfig(**{k: v for k, v in to_dict(cfg).items() if k != "data"}),
                             weights_dir())
    calibration = {}
    for identity in identities:
        found = built.calibrations[identity.name]
        calibration[identity.name] = {"focal_px": found.focal, "focal_factor": found.focal / identity.image_size,
                                      "status": found.status, "image_size": identity.image_size,
                                      "curve": found.curve}
    with atomic_dir(outputs["model"]) as tmp:
        built.model.save(tmp / MODEL_FILE)
        (tmp / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=1))
        write_manifest(tmp, to_dict(cfg), "face_model")
    metrics = {
        "identities": float(len(identities)),
        "points": float(built.model.n_points),
        "id_components": float(built.model.n_id),
        "exp_components": float(built.model.n_exp),
        "focals_calibrated": float(sum(c.status == "ok" for c in built.calibrations.values())),
    }
    log.info("face model (%s) at %s: %s", built.model.source, outputs["model"], json.dumps(metrics))
    return StageResult(metrics=metrics, artifacts=[outputs["model"] / CALIBRATION_FILE])


STAGE = Stage(
    name="face_model",
    config=FaceModelStageConfig,
    section="face_model",
    run=run,
    inputs={"processed": "data/processed"},
    outputs={"model": "data/models/face_model"},
    description=__doc__,
    shared_sections=("data",),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
