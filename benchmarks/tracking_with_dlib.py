"""The actual tracker's head-rotation error with dlib's points mixed into its 2D input (issue 23). ``B_mean`` is
what the track stage now fits by default (``track.dlib_blend``, ``landmark_inputs.blend_dlib``).

Usage: ``python benchmarks/tracking_with_dlib.py [--identities S001 S002 S003]
[--output reports/bench/tracking_with_dlib.json]``.

``benchmarks/tracking_landmark_sources.py`` measured a rigid-fit *bound*; this
runs ``tracking.track`` itself, as ``stages/track.py`` calls it (the stage's
inputs via ``read_landmark_inputs``, ``data/models/face_model/face_model.npz``,
``TrackConfig`` from the ``track`` section: checked equal to the params the
stored ``track/manifest.json`` was made with), on every frame, with its 2D
input changed at the FaceMesh vertices of the 51 inner iBUG points
(``MP68[INNER_51]``; z stays FaceMesh's):

* ``A_facemesh``: FaceMesh's points alone, the tracker's input before ``track.dlib_blend`` (it reproduced
  ``reports/preprocess_accuracy.md`` of 6dda8ca to 0.001 deg);
* ``B_mean``: per-point mean of FaceMesh's and dlib's points (dlib's shape predictor on the
  calibrated FaceMesh box, ``DlibFace.landmarks_around``: the landmarks stage's ``lms68_dlib.npy``, box
  offsets ``dlib_face.HOG_BOX_FROM_POINTS`` as calibrated by ``tracking_landmark_sources.py``);
* ``C_dlib``: dlib's points alone there;
* ``D_mean_inner51``: B with the tracker fitting only the 51 inner rows (``fitted_rows`` patched);
* ``D_mean_inner51_x4``: B with the 51 inner rows repeated 4 times among the 128 (a 4x point weight;
  the smoothness term on those points is weighted alike);
* ``D_facemesh_inner51_x4``: the same weighting on today's input (control: weighting vs source).

Rotation error as ``tracking_accuracy.evaluate_identity`` (``rotation_errors``);
reprojection median against FaceMesh's points (the report's) and against the
variant's own input. Paired bootstrap (the project's ``paired_bootstrap``) of
per-frame rotation error differences against A, per identity and stratified
pooled; frames within a recording are autocorrelated, so a recording-level
(block) bootstrap is given beside it. dlib points are cached in
``/tmp/tracking_with_dlib`` between runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch

from benchmarks.bench_components import machine_info
from stages._stage import git_commit
from stages.track import MODEL_FILE, recording_labels
from talkhead_models.atomic import write_text
from talkhead_models.config import to_dict
from talkhead_models.data.processed import ProcessedIdentity
from talkhead_models.face_topology import MP68
from talkhead_models.metrics.uncertainty import paired_bootstrap
from talkhead_models.preprocess import dlib_face, tracking
from talkhead_models.preprocess.accuracy import INNER_51
from talkhead_models.preprocess.cameras import OPENGL_TO_OPENCV, euler_to_rotation, rotation_angle_deg
from talkhead_models.preprocess.face_model import FaceModel
from talkhead_models.preprocess.landmark_inputs import blend_dlib, read_landmark_inputs
from talkhead_models.preprocess.tracking import TrackConfig, reproject, track
from talkhead_models.preprocess.tracking_accuracy import (constant_offset, focal_error, load_truth,
                                                          reprojection_errors, rotation_errors)

logger = logging.getLogger("benchmarks.tracking_with_dlib")
ROOT = Path(__file__).resolve().parents[1]
CACHE = Path("/tmp/tracking_with_dlib")
INNER = MP68[INNER_51]
ORIGINAL_FITTED_ROWS = tracking.fitted_rows
BLOCK_RESAMPLES = 2000


def inner_rows(model: FaceModel) -> np.ndarray:
    position = {int(v): i for i, v in enumerate(model.landmarks)}
    return np.array([position[int(v)] for v in INNER if int(v) in position])


def patched_rows(mode: str):
    """A ``fitted_rows`` replacement: ``inner51`` (only those rows) or ``x<k>`` (inner rows repeated k times)."""
    def rows(model: FaceModel, max_points: int) -> np.ndarray:
        inner = inner_rows(model)
        if mode == "inner51":
            return np.sort(inner)
        repeat = int(mode[1:])
        return np.concatenate([ORIGINAL_FITTED_ROWS(model, max_points)] + [inner] * (repeat - 1))
    return rows


VARIANTS = {
    "A_facemesh": ("facemesh", None),
    "B_mean": ("mean", None),
    "C_dlib": ("dlib", None),
    "D_mean_inner51": ("mean", "inner51"),
    "D_mean_inner51_x4": ("mean", "x4"),
    "D_facemesh_inner51_x4": ("facemesh", "x4"),
}


def dlib_points(identity: str, processed: Path, points: np.ndarray, usable: np.ndarray,
                face: dlib_face.DlibFace) -> tuple[np.ndarray, dict]:
    """[N, 68, 2] dlib's points on every usable frame, boxed as the landmarks stage boxes them
    (``DlibFace.landmarks_around``; NaN elsewhere), with times."""
    cache = CACHE / f"{identity}_meshbox.npy"
    frames = ProcessedIdentity(processed / identity).frames("frames")
    if cache.is_file():
        stored = np.load(cache)
        if len(stored) == len(points):
            return stored, json.loads(cache.with_suffix(".json").read_text())
    out = np.full((len(points), 68, 2), np.nan)
    read_s, dlib_s = [], []
    for index in np.flatnonzero(usable):
        start = time.perf_counter()
        image = frames.read(int(index))
        read_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        out[index] = face.landmarks_around(image, points[index, MP68, :2])
        dlib_s.append(time.perf_counter() - start)
    times = {"frames": int(len(dlib_s)), "read_total_s": float(np.sum(read_s)), "dlib_total_s": float(np.sum(dlib_s)),
             "dlib_median_ms": float(np.median(dlib_s) * 1e3), "dlib_mean_ms": float(np.mean(dlib_s) * 1e3)}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(cache, out)
    cache.with_suffix(".json").write_text(json.dumps(times))
    return out, times


def variant_points(points: np.ndarray, dlib: np.ndarray, source: str) -> np.ndarray:
    if source == "mean":
        return blend_dlib(points, dlib)  # the track stage's blend
    changed = points.copy()
    if source == "dlib":
        have = np.isfinite(dlib).all(axis=(1, 2))
        changed[np.ix_(have, INNER, [0, 1])] = dlib[have][:, INNER_51]
    return changed


def per_frame_rotation(euler: np.ndarray, truth_rotation: np.ndarray) -> np.ndarray:
    tracked = OPENGL_TO_OPENCV @ euler_to_rotation(euler)
    return rotation_angle_deg(tracked @ constant_offset(tracked, truth_rotation), truth_rotation)


def block_bootstrap(a: dict, b: dict, segments: dict, seed: int = 0) -> dict:
    """Mean-of-identities mean difference, recordings resampled within each identity (percentile 95%)."""
    rng = np.random.default_rng(seed)
    names = list(a)
    blocks = {n: [(a[n] - b[n])[segments[n] == s] for s in np.unique(segments[n])] for n in names}
    estimate = float(np.mean([np.mean(a[n] - b[n]) for n in names]))
    draws = np.empty(BLOCK_RESAMPLES)
    for draw in range(BLOCK_RESAMPLES):
        means = []
        for n in names:
            pick = rng.integers(0, len(blocks[n]), len(blocks[n]))
            means.append(np.concatenate([blocks[n][p] for p in pick]).mean())
        draws[draw] = np.mean(means)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"estimate": estimate, "low": float(low), "high": float(high),
            "blocks": {n: len(blocks[n]) for n in names}}


def interval_dict(interval) -> dict:
    return {"estimate": interval.estimate, "low": interval.low, "high": interval.high, "samples": interval.samples,
            "dropped": interval.dropped, "excludes_zero": interval.sign != 0}


def stage_config(processed: Path, identity: str) -> TrackConfig:
    cfg = TrackConfig()
    manifest = json.loads((processed / identity / "track" / "manifest.json").read_text())
    params = manifest.get("params", manifest)
    mismatched = {k: (v, params.get(k)) for k, v in to_dict(cfg).items() if params.get(k) != v}
    if mismatched:
        raise AssertionError(f"{identity}: TrackConfig() differs from the stage's params: {mismatched}")
    return cfg


def run_identity(identity: str, processed: Path, raw: Path, model: FaceModel, face, variants) -> dict:
    root = processed / identity
    clips, points, detected, usable, image_size, _ = read_landmark_inputs(root / "crop", root / "landmarks", identity)
    truth = load_truth(raw, clips)
    cfg = stage_config(processed, identity)
    labels = recording_labels(clips, len(points))
    dlib, dlib_times = dlib_points(identity, processed, points, usable, face)
    logger.info("%s: dlib on %d frames, %.1f s (%.2f ms median)", identity, dlib_times["frames"],
                dlib_times["dlib_total_s"], dlib_times["dlib_median_ms"])
    vertices = model.landmarks
    out = {"frames": int(len(points)), "image_size": image_size, "true_focal_px": truth.focal, "dlib": dlib_times,
           "variants": {}}
    errors = {}
    for name in variants:
        source, rows_mode = VARIANTS[name]
        observed = variant_points(points, dlib, source)
        tracking.fitted_rows = patched_rows(rows_mode) if rows_mode else ORIGINAL_FITTED_ROWS
        try:
            start = time.perf_counter()
            result = track(model, observed, detected, labels, image_size, cfg, identity)
            seconds = time.perf_counter() - start
        finally:
            tracking.fitted_rows = ORIGINAL_FITTED_ROWS
        metrics = {"track_s": seconds, "focal_px": result.focal, "focal_error": focal_error(result.focal, truth.focal),
                   "focal_status": result.focal_status}
        metrics.update(rotation_errors(result.euler, truth.rotation, truth.segment))
        fitted = reproject(model, result, image_size)[detected]
        metrics.update(reprojection_errors(fitted, points[detected][:, vertices, :2],
                                           truth.landmarks_2d[detected][:, vertices], image_size))
        metrics["reprojection_own_input_median_px_512"] = reprojection_errors(
            fitted, observed[detected][:, vertices, :2], truth.landmarks_2d[detected][:, vertices],
            image_size)["reprojection_median_px_512"]
        per_frame = per_frame_rotation(result.euler, truth.rotation)
        assert np.isclose(np.median(per_frame), metrics["rotation_median_deg"], atol=1e-9)
        errors[name] = per_frame
        out["variants"][name] = metrics
        logger.info("%s %s: rotation %.3f deg, f2f %.3f, reproj %.3f px@512, focal %.1f, %.1f s", identity, name,
                    metrics["rotation_median_deg"], metrics["rotation_frame_to_frame_median_deg"],
                    metrics["reprojection_median_px_512"], result.focal, seconds)
    return out, errors, truth.segment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", nargs="+", default=["S001", "S002", "S003"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--processed", type=Path, default=ROOT / "data/processed")
    parser.add_argument("--raw", type=Path, default=ROOT / "data/raw/synthetic")
    parser.add_argument("--face-model", type=Path, default=ROOT / "data/models/face_model")
    parser.add_argument("--output", type=Path, default=ROOT / "reports/bench/tracking_with_dlib.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    started = time.perf_counter()
    face = dlib_face.DlibFace()
    model = FaceModel.load(args.face_model / MODEL_FILE)
    per_identity, errors, segments = {}, {}, {}
    for identity in args.identities:
        per_identity[identity], errors[identity], segments[identity] = run_identity(
            identity, args.processed, args.raw, model, face, args.variants)
    comparisons = {}
    base = "A_facemesh"
    for name in args.variants:
        if name == base:
            continue
        labels = np.concatenate([np.full(len(errors[i][name]), i) for i in args.identities])
        comparisons[name] = {
            "pooled_frames": interval_dict(paired_bootstrap(
                np.concatenate([errors[i][name] for i in args.identities]),
                np.concatenate([errors[i][base] for i in args.identities]), groups=labels)),
            "per_identity_frames": {i: interval_dict(paired_bootstrap(errors[i][name], errors[i][base]))
                                    for i in args.identities},
            "pooled_recording_blocks": block_bootstrap({i: errors[i][name] for i in args.identities},
                                                       {i: errors[i][base] for i in args.identities}, segments),
        }
    overall = {name: float(np.median([per_identity[i]["variants"][name]["rotation_median_deg"]
                                      for i in args.identities])) for name in args.variants}
    commit = git_commit(ROOT)
    report = {"benchmark": "tracking_with_dlib",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "commit": commit.removesuffix("-dirty"), "tree_dirty": commit.endswith("-dirty"),
              "machine": machine_info(),
              "settings": {"identities": args.identities, "variants": {v: VARIANTS[v] for v in args.variants},
                           "box_ratios": list(dlib_face.HOG_BOX_FROM_POINTS), "threads": 1,
                           "track_config": to_dict(TrackConfig())},
              "per_identity": per_identity, "overall_rotation_median_of_identities": overall,
              "differences_vs_A": comparisons, "runtime_s": time.perf_counter() - started}
    write_text(args.output, json.dumps(report, indent=1, default=str) + "\n")
    logger.info("overall: %s", json.dumps({k: round(v, 3) for k, v in overall.items()}))
    for name, comparison in comparisons.items():
        p = comparison["pooled_frames"]
        blk = comparison["pooled_recording_blocks"]
        logger.info("%s - A: %+.3f [%+.3f, %+.3f] deg (frames); [%+.3f, %+.3f] (recording blocks)", name,
                    p["estimate"], p["low"], p["high"], blk["low"], blk["high"])
    logger.info("wrote %s (%.0f s)", args.output, report["runtime_s"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
