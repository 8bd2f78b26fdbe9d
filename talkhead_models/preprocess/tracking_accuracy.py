"""Tracking and pairing accuracy against the synthetic corpus' ground truth.

Each function returns plain numbers; :func:`report` gathers them for a set of
processed identities into a dict and a markdown section for
``reports/preprocess_accuracy.md``. How each number is defined:

* **Rotation error**: the tracker's head frame is its own (the face model's
  canonical frame), the truth's is the renderer's, so they differ by one
  constant rotation ``C``. Tracked rotations are turned into OpenCV cameras
  (the truth's convention), ``C`` is the least-squares rotation with
  ``R_tracked @ C ~ R_truth`` over all frames, and the error of a frame is the
  angle of ``R_tracked @ C @ R_truth^T``. Also reported: the frame-to-frame
  error (angle between tracked and true relative rotations of consecutive
  frames of one recording), and, for context, the *landmark bound*: the same
  error for the true 3D face (the truth's own per-frame shape) fitted rigidly
  by PnP to the same observed landmarks with the true focal. What no tracker
  fed those landmarks can beat is roughly that bound. The bound reads
  FaceMesh's 468 points; the tracker, by default, fits their inner face
  averaged with dlib's points (``track.dlib_blend``), which bounds it lower
  (benchmarks/tracking_landmark_sources.py).
* **Focal error**: tracked focal over the true focal scaled to processed
  pixels (``intrinsics[0, 0] * image_size / crop_size``), minus one.
* **Reprojection error**: distance between the fitted model's projected
  points and the points the tracker fitted (FaceMesh's, blended with dlib's
  where the track manifest's ``landmark_source`` says so: the fit's
  residual), and to the true 2D landmarks of the same vertices; medians over points and frames,
  scaled to 512 px frames.
* **DTW warp error**: for each frame of rendition a, the mean frame of b the
  path matches, against the true time warp between the renditions (exact,
  from both phone timelines: ``speech.time_warp``); mean absolute difference
  in frames.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from talkhead_models.data.landmark_arrays import DLIB68_FILE
from talkhead_models.data.manifest import read_manifest
from talkhead_models.data.processed import FPS
from talkhead_models.data.synthetic.speech import PhoneSegment, time_warp
from talkhead_models.preprocess.cameras import OPENGL_TO_OPENCV, euler_to_rotation, rotation_angle_deg
from talkhead_models.preprocess.face_model import FaceModel
from talkhead_models.preprocess.landmark_inputs import blend_dlib
from talkhead_models.preprocess.pairing import matched_frames, read_alignments
from talkhead_models.preprocess.tracking import TrackResult, reproject

log = logging.getLogger(__name__)

REFERENCE_SIZE = 512
"""Reprojection errors are scaled to frames of this side (the papers' resolution)."""

BARS = {
    "rotation_median_deg": 1.0,
    "focal_error": 0.05,
    "reprojection_median_px_512": 1.5,
    "dtw_warp_error_frames": 1.0,
}
"""The issue's targets: median head rotation error, |focal error|, median reprojection error, DTW warp error."""


@dataclass
class IdentityTruth:
    """The ground truth of one processed identity, frame-aligned with its processed frames."""

    rotation: np.ndarray
    """[N, 3, 3] head -> OpenCV camera."""
    translation: np.ndarray
    """[N, 3] head origin in the camera (cm)."""
    landmarks_3d: np.ndarray
    """[N, 478, 3] camera coordinates (cm)."""
    landmarks_2d: np.ndarray
    """[N, 478, 2] processed-frame pixels."""
    focal: float
    """True focal length in processed pixels."""
    segment: np.ndarray
    """[N] recording index of each frame."""


def load_truth(raw_root: Path, clips: pd.DataFrame) -> IdentityTruth | None:
    """Ground truth for every processed frame, or None when a recording has none (real data).

    Processed frame k of a clip shows source time k / 25 s, i.e. source frame
    ``round(k * source_fps / 25)``; crops and resizing map pixels and focal.
    """
    if clips["truth"].isna().any():
        return None
    parts: dict[str, list] = {"rotation": [], "translation": [], "landmarks_3d": [], "landmarks_2d": [], "segment": []}
    focals = []
    for number, row in enumerate(clips.sort_values("first_frame").itertuples(index=False)):
        with np.load(Path(raw_root) / row.truth) as truth:
            count = row.last_frame - row.first_frame + 1
            source = np.clip(np.round(np.arange(count) * row.source_fps / FPS).astype(int), 0,
                             len(truth["rotation"]) - 1)
            scale = row.image_size / row.crop_size
            parts["rotation"].append(truth["rotation"][source].astype(np.float64))
            parts["translation"].append(truth["translation"][source].astype(np.float64))
            parts["landmarks_3d"].append(truth["landmarks_3d"][source].astype(np.float64))
            parts["landmarks_2d"].append((truth["landmarks_2d"][source] - [row.crop_x0, row.crop_y0]) * scale)
            parts["segment"].append(np.full(count, number))
            focals.append(float(truth["intrinsics"][0, 0]) * scale)
    if np.ptp(focals) > 1e-3 * np.mean(focals):
        log.warning("recordings of one identity have different true focals %s; comparing with their mean", focals)
    return IdentityTruth(**{k: np.concatenate(v) for k, v in parts.items()}, focal=float(np.mean(focals)))


def constant_offset(tracked: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The rotation C minimising sum ||tracked_i @ C - truth_i||^2 (both [N, 3, 3])."""
    u, _, vt = np.linalg.svd(np.einsum("nji,njk->ik", tracked, truth))
    return u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt


def rotation_errors(euler: np.ndarray, truth: np.ndarray, segment: np.ndarray) -> dict[str, float]:
    """Head rotation errors (degrees) of tracked euler [N, 3] against true head->OpenCV rotations [N, 3, 3]."""
    tracked = OPENGL_TO_OPENCV @ euler_to_rotation(euler)
    error = rotation_angle_deg(tracked @ constant_offset(tracked, truth), truth)
    same = segment[1:] == segment[:-1]
    step_tracked = tracked[1:] @ np.swapaxes(tracked[:-1], 1, 2)
    step_truth = truth[1:] @ np.swapaxes(truth[:-1], 1, 2)
    step_error = rotation_angle_deg(step_tracked, step_truth)[same]
    return {"rotation_median_deg": float(np.median(error)), "rotation_mean_deg": float(error.mean()),
            "rotation_p90_deg": float(np.percentile(error, 90)),
            "rotation_frame_to_frame_median_deg": float(np.median(step_error)) if len(step_error) else float("nan")}


def landmark_bound(observed: np.ndarray, truth: IdentityTruth, vertices: np.ndarray, image_size: int,
                   stride: int = 5) -> float:
    """Median rotation error (deg) of the true per-frame 3D face fitted by PnP to the observed landmarks."""
    import cv2

    frames = np.arange(0, len(observed), stride)
    camera = np.array([[truth.focal, 0, image_size / 2.0], [0, truth.focal, image_size / 2.0], [0, 0, 1]])
    head = np.einsum("nji,npj->npi", truth.rotation[frames], truth.landmarks_3d[frames] - truth.translation[frames,
                                                                                                              None])
    fitted = []
    for index, frame in enumerate(frames):
        ok, vector, _ = cv2.solvePnP(head[index, vertices], observed[frame, vertices, :2].astype(np.float64), camera,
                                     None, flags=cv2.SOLVEPNP_ITERATIVE)
        fitted.append(cv2.Rodrigues(vector)[0] if ok else np.full((3, 3), np.nan))
    fitted = np.array(fitted)
    usable = np.isfinite(fitted).all(axis=(1, 2))
    offset = constant_offset(fitted[usable], truth.rotation[frames][usable])
    return float(np.median(rotation_angle_deg(fitted[usable] @ offset, truth.rotation[frames][usable])))


def focal_error(tracked: float, true_focal: float) -> float:
    """Relative focal error (tracked / true - 1)."""
    return tracked / true_focal - 1.0


def reprojection_errors(fitted: np.ndarray, observed: np.ndarray, true_2d: np.ndarray,
                        image_size: int) -> dict[str, float]:
    """Median distances (px at 512) of fitted points [N, P, 2] to observed and to true points of the same vertices."""
    scale = REFERENCE_SIZE / image_size
    return {
        "reprojection_median_px_512": float(np.median(np.linalg.norm(fitted - observed, axis=-1)) * scale),
        "reprojection_to_truth_median_px_512": float(np.median(np.linalg.norm(fitted - true_2d, axis=-1)) * scale),
        "landmarks_to_truth_median_px_512": float(np.median(np.linalg.norm(observed - true_2d, axis=-1)) * scale),
    }


def phones_of(truth_path: Path) -> list[PhoneSegment]:
    """The phone timeline stored with a synthetic recording."""
    with np.load(truth_path) as truth:
        return [PhoneSegment(str(p), float(s), float(e))
                for p, s, e in zip(truth["phone_labels"], truth["phone_starts"], truth["phone_ends"])]


def warp_error(path: np.ndarray, n_a: int, phones_a: list[PhoneSegment], phones_b: list[PhoneSegment]) -> float:
    """Mean |matched - true| frame of b over the frames of a; ``path`` [L, 2] clip-relative frame indices."""
    true_b = time_warp(phones_a, phones_b, np.arange(n_a) / FPS) * FPS
    return float(np.abs(matched_frames(path, n_a) - true_b).mean())


def load_track(track_dir: Path) -> TrackResult:
    """track_params.pt as a TrackResult (residuals from residual.npy)."""
    import torch

    params = torch.load(track_dir / "track_params.pt", weights_only=True)
    return TrackResult(id=params["id"][0].double().numpy(), exp=params["exp"].double().numpy(),
                       euler=params["euler"].double().numpy(), trans=params["trans"].double().numpy(),
                       focal=float(params["focal"][0]), residual_px=np.load(track_dir / "residual.npy"))


def evaluate_identity(identity_dir: Path, raw_root: Path, model: FaceModel) -> dict[str, float] | None:
    """Tracking (and, where pairs exist, DTW) accuracy of one processed identity; None without ground truth."""
    clips = pd.read_parquet(identity_dir / "crop" / "clips.parquet").sort_values("first_frame")
    truth = load_truth(raw_root, clips)
    if truth is None:
        return None
    image_size = int(clips["image_size"].iloc[0])
    result = load_track(identity_dir / "track")
    observed = np.load(identity_dir / "landmarks" / "lms478.npy")
    fitted = observed
    if tracker_input(identity_dir) == "facemesh+dlib":
        fitted = blend_dlib(observed, np.load(identity_dir / "landmarks" / DLIB68_FILE))
    detected = np.load(identity_dir / "landmarks" / "detected.npy").astype(bool)
    vertices = model.landmarks
    metrics: dict[str, float] = {"frames": float(len(observed)), "focal_px": result.focal, "true_focal_px": truth.focal,
                                 "focal_error": focal_error(result.focal, truth.focal)}
    metrics.update(rotation_errors(result.euler, truth.rotation, truth.segment))
    metrics.update(reprojection_errors(reproject(model, result, image_size)[detected],
                                       fitted[detected][:, vertices, :2], truth.landmarks_2d[detected][:, vertices],
                                       image_size))
    metrics["rotation_landmark_bound_deg"] = landmark_bound(observed, truth, np.arange(468), image_size)
    pairs_path = identity_dir / "pair" / "pairs.parquet"
    if pairs_path.is_file():
        pairs = pd.read_parquet(pairs_path)
        truth_paths = dict(zip(clips["clip"], clips["truth"]))
        alignments = read_alignments(identity_dir / "pair") if len(pairs) else {}
        errors = []
        for row in pairs.itertuples(index=False):
            path = alignments[row.path] - [row.first_frame_a, row.first_frame_b]
            errors.append(warp_error(path, row.last_frame_a - row.first_frame_a + 1,
                                     phones_of(Path(raw_root) / truth_paths[row.clip_a]),
                                     phones_of(Path(raw_root) / truth_paths[row.clip_b])))
        if errors:
            metrics["dtw_warp_error_frames"] = float(np.mean(errors))
            metrics["dtw_warp_error_max_frames"] = float(np.max(errors))
            metrics["pairs"] = float(len(errors))
    return metrics


SECTION = "Tracking and pairing"

FOCAL_SOURCES = {"ok": "self-calibrated", "still": "default (head too still)", "flat": "default (flat curve)",
                 "edge": "default (no minimum)"}
"""How the face model got each identity's focal (``calibration.json`` status), as the report prints it."""


def focal_sources(face_model: Path) -> dict[str, str]:
    """Identity -> how the face model stage found its focal, from ``calibration.json`` (empty when absent)."""
    path = Path(face_model) / "calibration.json"
    if not path.is_file():
        return {}
    calibration = json.loads(path.read_text())
    return {name: FOCAL_SOURCES.get(entry.get("status", ""), entry.get("status", "?"))
            for name, entry in calibration.items()}


def report(processed_root: Path, raw_root: Path, face_model: Path, identities: list[str]) -> tuple[dict, str]:
    """Accuracy of every listed identity: ``({identity: metrics, "all": pooled, "notes": {...}}, markdown)``.

    ``face_model`` is the face_model stage's folder (``face_model.npz`` inside).
    Identities without ground truth or without a ``track/`` folder are listed
    in ``notes`` and left out of the numbers. Pooled: the median of the
    identities' median rotation errors, the worst focal error, the median
    reprojection error and the mean DTW warp error.
    """
    model = FaceModel.load(Path(face_model) / "face_model.npz")
    per_identity, notes = {}, {}
    for name in identities:
        identity_dir = Path(processed_root) / name
        if not (identity_dir / "track" / "track_params.pt").is_file():
            notes[name] = "not tracked"
            log.info("%s: no track/track_params.pt; left out of the tracking accuracy", name)
            continue
        metrics = evaluate_identity(identity_dir, Path(raw_root), model)
        if metrics is None:
            notes[name] = "no ground truth"
            log.info("%s: no ground truth; left out of the tracking accuracy", name)
            continue
        per_identity[name] = metrics
    if not per_identity:
        lines = [f"## {SECTION}", "", "No tracked identity with ground truth."]
        lines += [f"- {name}: {note}" for name, note in notes.items()]
        return {"notes": notes}, "\n".join(lines) + "\n"
    table = pd.DataFrame(per_identity).T
    pooled = {
        "rotation_median_deg": float(table["rotation_median_deg"].median()),
        "rotation_landmark_bound_deg": float(table["rotation_landmark_bound_deg"].median()),
        "focal_error": float(table["focal_error"].abs().max()),
        "reprojection_median_px_512": float(table["reprojection_median_px_512"].median()),
    }
    if "dtw_warp_error_frames" in table:
        pooled["dtw_warp_error_frames"] = float(table["dtw_warp_error_frames"].mean())
    summary: dict = {name: dict(m) for name, m in per_identity.items()}
    summary["all"] = pooled
    summary["notes"] = notes
    sources = focal_sources(face_model)
    if sources:
        table["focal_source"] = [sources.get(name, "?") for name in table.index]
    table["landmark_source"] = [tracker_input(Path(processed_root) / name) for name in table.index]
    return summary, _markdown(table, pooled, model.source, notes)


def tracker_input(identity_dir: Path) -> str:
    """Which points the track stage fitted (its manifest's ``landmark_source``): facemesh or facemesh+dlib."""
    return read_manifest(identity_dir / "track")["params"].get("landmark_source", "facemesh")


def targets(summary: dict) -> list[dict]:
    """The issue's bars against the pooled numbers of :func:`report`, as rows of the report's target table."""
    pooled = summary.get("all", {})
    rows = []
    for key, bar in BARS.items():
        if key in pooled:
            value = abs(pooled[key])
            rows.append({"section": SECTION, "target": f"{key} <= {bar:g}", "value": value, "met": bool(value <= bar)})
    return rows


def _explanation(table: pd.DataFrame, pooled: dict[str, float]) -> list[str]:
    """Sentences on why a missed bar is missed, from the numbers themselves."""
    lines = []
    bar = BARS["rotation_median_deg"]
    if pooled["rotation_median_deg"] > bar:
        above = table.index[table["rotation_landmark_bound_deg"] > bar].tolist()
        if above:
            lines.append(
                f"Rotation: the landmark bound of {', '.join(above)} is itself above {bar:g} deg: the true 3D face "
                "with the true focal, fitted to these FaceMesh points, misses the bar too. FaceMesh's points on the "
                "renderer follow the head's turns only in part, so the error grows with the head's angle; no rigid "
                "fit to them removes that.")
            blended = table.index[table["landmark_source"] == "facemesh+dlib"].tolist() \
                if "landmark_source" in table else []
            if blended:
                lines.append(
                    f"The tracker of {', '.join(blended)} fitted FaceMesh's inner face averaged with dlib's 68-point "
                    "predictor (`track.dlib_blend`; tracker input facemesh+dlib), whose errors follow the head's "
                    "angle less: on the demo's synthetic corpus it lowered every identity's rotation error, though "
                    "not below the bar (benchmarks/tracking_with_dlib.py against FaceMesh's points alone).")
    if pooled["focal_error"] > BARS["focal_error"] and "focal_source" in table:
        defaults = table.index[table["focal_source"].str.startswith("default")].tolist()
        if defaults:
            lines.append(
                f"Focal: the face model could not self-calibrate the focal of {', '.join(defaults)} (its calibration "
                "curve over 1-4x the image side is flat to a few percent: perspective moves FaceMesh points by less "
                "than their own errors do), so it was built at `face_model.default_focal`, and the tracker's focal "
                "search stays within a few percent of the focal the model was built at (measured on the demo corpus: "
                "a model built at 0.8, 1.0 or 1.25 times the true focal gives the tracker -20%, within 2%, and +24% "
                "focal error). The focal error is then the error of that default for this camera.")
    return lines


def _markdown(table: pd.DataFrame, pooled: dict[str, float], source: str, notes: dict[str, str]) -> str:
    columns = {
        "frames": "frames", "focal_px": "focal (px)", "true_focal_px": "true focal (px)", "focal_error": "focal error",
        "focal_source": "model focal", "landmark_source": "tracker input",
        "rotation_median_deg": "rotation median (deg)", "rotation_landmark_bound_deg": "landmark bound (deg)",
        "rotation_frame_to_frame_median_deg": "frame-to-frame (deg)",
        "reprojection_median_px_512": "reprojection (px @512)",
        "reprojection_to_truth_median_px_512": "fit vs truth (px @512)",
        "landmarks_to_truth_median_px_512": "landmarks vs truth (px @512)",
        "dtw_warp_error_frames": "DTW warp error (frames)", "pairs": "pairs",
    }
    shown = table[[c for c in columns if c in table]].rename(columns=columns)
    numeric = shown.select_dtypes("number").columns
    shown[numeric] = shown[numeric].astype(float).round(3)
    lines = [f"## {SECTION}", "",
             f"Face model: {source}. Definitions in `talkhead_models/preprocess/tracking_accuracy.py`: rotation "
             "error after removing the best constant rotation between the tracker's head frame and the truth's "
             "(median over frames; overall: the median of the identities'); the landmark bound is that error for "
             "the true 3D face fitted by PnP with the true focal to the same FaceMesh points (what the landmarks "
             "allow a rigid fit); focal error: worst identity; reprojection is the fit's distance to the points it "
             "fitted (\"tracker input\": FaceMesh's, or their inner face averaged with dlib's, facemesh+dlib); the "
             "DTW warp error compares the pairs' alignment with the true time warp between the two renditions. "
             "\"Model focal\" says whether the face model self-calibrated the focal or used its default.",
             "", shown.reset_index(names="identity").to_markdown(index=False)]
    if notes:
        lines += ["", *(f"- {name}: {note}" for name, note in notes.items())]
    for paragraph in _explanation(table, pooled):
        lines += ["", paragraph]
    lines.append("")
    return "\n".join(lines)
