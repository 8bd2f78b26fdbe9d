"""DVC stage ``track@<ID>``: head pose, expression and focal length from the FaceMesh points (their inner face
averaged with dlib's, ``dlib_blend``).

Writes, in the ER-NeRF / RAD-NeRF conventions (see
talkhead_models.preprocess.cameras): ``track_params.pt`` ({id, exp, euler,
trans, focal}), ``transforms_train.json`` / ``transforms_val.json``
(``focal_len``, ``cx``, ``cy``, ``frames[{img_id, aud_id,
transform_matrix}]``; validation frames by talkhead_models.preprocess.splits),
plus ``exp.npy`` ([N, K] expression coefficients, for Exp-Diff and pairing)
and ``residual.npy`` ([N] median landmark reprojection error per frame, px; NaN in a recording without a
face, so ``residual_median_px`` is taken over the landmarks stage's usable frames).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.config import to_dict
from talkhead_models.data.manifest import write_manifest
from talkhead_models.preprocess.cameras import transform_matrix
from talkhead_models.preprocess.face_model import FaceModel
from talkhead_models.preprocess.landmark_inputs import blend_dlib, read_landmark_inputs
from talkhead_models.preprocess.splits import SplitConfig, validation_mask
from talkhead_models.preprocess.tracking import TrackConfig, TrackResult, track

log = logging.getLogger(__name__)

MODEL_FILE = "face_model.npz"


@dataclass(frozen=True)
class TrackStageConfig(TrackConfig):
    """The tracker's settings plus the shared ``split`` section (which frames validate)."""

    split: SplitConfig = field(default_factory=SplitConfig)
    """Shared params section ``split``: the validation frames written to transforms_val.json."""
    dlib_blend: bool = True
    """Fit the mean of FaceMesh's and dlib's points at the 51 inner iBUG points (``lms68_dlib.npy``,
    :func:`~talkhead_models.preprocess.landmark_inputs.blend_dlib`) instead of FaceMesh's alone; FaceMesh's alone,
    with a warning, where the landmarks stage wrote no dlib points."""


def recording_labels(clips: pd.DataFrame, n_frames: int) -> np.ndarray:
    """[N] index of the recording each frame belongs to (smoothness stays within one)."""
    labels = np.full(n_frames, -1, dtype=np.int64)
    for number, row in enumerate(clips.itertuples(index=False)):
        labels[row.first_frame:row.last_frame + 1] = number
    return labels


def transforms(result: TrackResult, frames: np.ndarray, image_size: int) -> dict:
    """One transforms_*.json document for the given frame indices."""
    poses = transform_matrix(result.euler[frames], result.trans[frames])
    return {
        "focal_len": float(result.focal),
        "cx": image_size / 2.0,
        "cy": image_size / 2.0,
        "frames": [{"img_id": int(i), "aud_id": int(i), "transform_matrix": pose.tolist()}
                   for i, pose in zip(frames, poses)],
    }


def track_params(result: TrackResult) -> dict[str, torch.Tensor]:
    """The peers' track_params.pt dictionary (float32 tensors; id as [1, Ki], focal as [1])."""
    return {
        "id": torch.as_tensor(result.id, dtype=torch.float32)[None],
        "exp": torch.as_tensor(result.exp, dtype=torch.float32),
        "euler": torch.as_tensor(result.euler, dtype=torch.float32),
        "trans": torch.as_tensor(result.trans, dtype=torch.float32),
        "focal": torch.tensor([result.focal], dtype=torch.float32),
    }


def model_focal_status(face_model: Path, identity: str) -> tuple[str | None, float]:
    """How the face model found this identity's focal and the focal it used (calibration.json); None, nan
    when not recorded."""
    path = face_model / "calibration.json"
    entry = json.loads(path.read_text()).get(identity, {}) if path.is_file() else {}
    return entry.get("status"), float(entry.get("focal_px", float("nan")))


def run(cfg: TrackStageConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path], identity: str) -> StageResult:
    clips, points, detected, usable, image_size, dlib68 = read_landmark_inputs(inputs["crop"], inputs["landmarks"],
                                                                                identity)
    landmark_source = "facemesh"
    if cfg.dlib_blend and dlib68 is not None:
        points, landmark_source = blend_dlib(points, dlib68), "facemesh+dlib"
    elif cfg.dlib_blend:
        log.warning("%s: no lms68_dlib.npy in %s (the landmarks stage ran without dlib): tracking FaceMesh's points "
                    "alone", identity, inputs["landmarks"])
    model = FaceModel.load(inputs["face_model"] / MODEL_FILE)
    tracker_cfg = TrackConfig(**{k: v for k, v in to_dict(cfg).items() if k not in ("split", "dlib_blend")})
    started = time.perf_counter()
    result = track(model, points, detected, recording_labels(clips, len(points)), image_size, tracker_cfg, identity)
    seconds = time.perf_counter() - started
    model_focal, model_focal_px = model_focal_status(inputs["face_model"], identity)
    if model_focal not in ("ok", None):
        log.warning("%s: the face model was built at its default focal %.1f px for this identity (self-calibration: "
                    "%s); the focal search stays near the focal the model was built at, so %.1f px follows that "
                    "default rather than measuring the camera (face_model's calibration.json)", identity,
                    model_focal_px, model_focal, result.focal)
    validation = validation_mask(clips, len(points), cfg.split)
    if not validation.any():
        log.warning("%s: no validation frames (a single sentence and no continuous video); transforms_val.json "
                    "lists no frames", identity)
    with atomic_dir(outputs["track"]) as tmp:
        torch.save(track_params(result), tmp / "track_params.pt")
        for name, frames in (("train", np.flatnonzero(~validation)), ("val", np.flatnonzero(validation))):
            (tmp / f"transforms_{name}.json").write_text(json.dumps(transforms(result, frames, image_size), indent=1))
        np.save(tmp / "exp.npy", result.exp.astype(np.float32))
        np.save(tmp / "residual.npy", result.residual_px.astype(np.float32))
        metrics = {
            "frames": float(len(points)),
            "focal_px": result.focal,
            "focal_factor": result.focal / image_size,
            # Over the frames with a face: a recording without one has NaN points, hence NaN residuals.
            "residual_median_px": float(np.nanmedian(result.residual_px[usable])),
            "frames_per_second": len(points) / max(seconds, 1e-9),
            "validation_frames": float(validation.sum()),
        }
        params = {**to_dict(cfg), "landmark_source": landmark_source, "face_model_source": model.source,
                  "focal_status": result.focal_status, "face_model_focal_status": model_focal,
                  "focal_curve": result.focal_curve, "metrics": metrics}
        write_manifest(tmp, params, "track")
    log.info("%s: tracked %d frames (%s points) at %.0f frames/s, focal %.1f px (%s), median residual %.2f px",
             identity, len(points), landmark_source, metrics["frames_per_second"], result.focal, result.focal_status,
             metrics["residual_median_px"])
    return StageResult(metrics=metrics, artifacts=[outputs["track"] / "manifest.json"])


STAGE = Stage(
    name="track",
    config=TrackStageConfig,
    section="track",
    run=run,
    inputs={"crop": "data/processed/{identity}/crop", "landmarks": "data/processed/{identity}/landmarks",
            "face_model": "data/models/face_model"},
    outputs={"track": "data/processed/{identity}/track"},
    description=__doc__,
    shared_sections=("split",),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
