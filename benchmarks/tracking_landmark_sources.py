"""Head-rotation bound of rigid fits to FaceMesh's, dlib's and combined 2D landmarks (issue 23).

Usage: ``python benchmarks/tracking_landmark_sources.py [--identities S001 S002 S003] [--stride 25]
[--output reports/bench/tracking_landmark_sources.json]`` (or ``python -m benchmarks.tracking_landmark_sources``).

The question: would combining dlib's 68 iBUG points with FaceMesh's lower the
tracker's head-rotation error, which the landmarks' noise bounds? The measure is
the *landmark bound* of ``reports/preprocess_accuracy.md``
(:func:`talkhead_models.preprocess.tracking_accuracy.landmark_bound`, called
here for every number reported): the true per-frame 3D face, with the true
focal, fitted by PnP to a source's 2D points; its rotation error after removing
the best constant rotation, median over frames. A source whose bound is lower
lets a rigid fit follow the head better.

Frames: every ``--stride``-th processed frame of each recording with ground
truth, the frames ``landmark_comparison`` runs dlib on, minus frames where
dlib's HOG detector finds no face or FaceMesh's points are missing (so every
source is measured on the same frames). Sources of the 68 points:

* ``facemesh``: the landmarks stage's FaceMesh points at the iBUG-68 vertices (today's input);
* ``dlib_hog``: dlib's shape predictor on its HOG detector's box (``DlibFace.landmarks``);
* ``dlib_meshbox``: dlib's shape predictor on a box derived from FaceMesh's 68 points
  (``DlibFace.landmarks_in_box``, no detection): the points' bounding box mapped to where the HOG
  detector puts its box, by four median ratios measured on *other* frames (offset by half a stride);
* ``dlib_meshbbox``: the same on the plain bounding box of FaceMesh's 68 points (no calibration);
* ``mean_<dlib variant>``: the per-point mean of FaceMesh's and that dlib variant's points.

Point sets each source is fitted with: ``68`` (all iBUG points), ``51`` (no jaw
line: the truth's jaw and brows follow FaceMesh's convention, not iBUG's) and
``tracker`` (the 128 face-model vertices the tracker fits, ``tracking.fitted_rows``,
with the source's points at the 51 inner iBUG vertices and FaceMesh's elsewhere:
what feeding the source to today's tracker would change). ``facemesh`` with all
468 mesh vertices (the report's landmark bound, on these frames) is given for
reference. NME (68 and inner 51, over the outer-eye-corner distance, as the
report's landmark section) is given for context.

Differences: for each source and point set against ``facemesh`` on the same set
and against today's ``facemesh/tracker`` and ``facemesh/468``, a paired
bootstrap over frames of the per-frame rotation error (the project's
``paired_bootstrap``: stratified by identity, statistic the mean of the
identities' mean differences, expanded-percentile 95% interval), per identity and
pooled, and a percentile bootstrap of the difference of the median-of-identities
of per-identity medians (the report's statistic). The constant rotation is
fitted once per source on all its frames and not refitted in the resamples.
PnP (``landmark_bound``'s iterative solver, no initial guess) sometimes
converges to a pose turned by ~180 deg; such frames (error > 90 deg) are
counted as ``flipped_frames`` and kept, as ``landmark_bound`` keeps them.
Times per frame (wall, one thread) of each dlib variant are recorded. About 45 s on one
core: dlib and the fits 15 s, the bootstraps 25 s.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    # Run as a file: make the repository root importable, as ``python -m`` does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import pandas as pd

from benchmarks.bench_components import machine_info
from stages._stage import git_commit
from talkhead_models.atomic import write_text
from talkhead_models.face_topology import MP68
from talkhead_models.metrics.uncertainty import paired_bootstrap
from talkhead_models.preprocess import dlib_face
from talkhead_models.preprocess.accuracy import INNER_51, load_identity, point_errors, true_landmarks
from talkhead_models.preprocess.cameras import rotation_angle_deg
from talkhead_models.preprocess.face_model import FaceModel
from talkhead_models.preprocess.tracking import TrackConfig, fitted_rows
from talkhead_models.preprocess.tracking_accuracy import IdentityTruth, constant_offset, landmark_bound, load_truth

logger = logging.getLogger("benchmarks.tracking_landmark_sources")

ROOT = Path(__file__).resolve().parents[1]
DLIB_VARIANTS = ("dlib_hog", "dlib_meshbox", "dlib_meshbbox")
BASELINE = "facemesh"
TODAY = ("facemesh/tracker", "facemesh/468")
"""Baselines every alternative is also compared with: today's tracker input, and the report's landmark bound set."""
FLIPPED_DEG = 90.0
"""A per-frame error above this is a PnP fit that converged to a flipped pose (counted, kept in the median)."""
RESAMPLES = 2000


def truth_at(truth: IdentityTruth, frames: np.ndarray) -> IdentityTruth:
    """The ground truth of processed frames ``frames`` only (same focal)."""
    return dataclasses.replace(truth, rotation=truth.rotation[frames], translation=truth.translation[frames],
                               landmarks_3d=truth.landmarks_3d[frames], landmarks_2d=truth.landmarks_2d[frames],
                               segment=truth.segment[frames])


def per_frame_bound(observed: np.ndarray, truth: IdentityTruth, vertices: np.ndarray, image_size: int) -> np.ndarray:
    """[K] per-frame rotation errors (deg) of ``landmark_bound``'s fit with ``stride=1`` (NaN where PnP failed).

    The same steps as ``landmark_bound`` (which returns only their median; the
    caller checks the two agree): PnP of the true head-frame shape with the true
    focal, the best constant rotation removed over the frames.
    """
    camera = np.array([[truth.focal, 0, image_size / 2.0], [0, truth.focal, image_size / 2.0], [0, 0, 1]])
    head = np.einsum("nji,npj->npi", truth.rotation, truth.landmarks_3d - truth.translation[:, None])
    fitted = []
    for index in range(len(observed)):
        ok, vector, _ = cv2.solvePnP(head[index, vertices], observed[index, vertices, :2].astype(np.float64), camera,
                                     None, flags=cv2.SOLVEPNP_ITERATIVE)
        fitted.append(cv2.Rodrigues(vector)[0] if ok else np.full((3, 3), np.nan))
    fitted = np.array(fitted)
    usable = np.isfinite(fitted).all(axis=(1, 2))
    errors = np.full(len(observed), np.nan)
    offset = constant_offset(fitted[usable], truth.rotation[usable])
    errors[usable] = rotation_angle_deg(fitted[usable] @ offset, truth.rotation[usable])
    return errors


def points_box(points: np.ndarray) -> np.ndarray:
    """(left, top, right, bottom) bounding box of [P, 2] points."""
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def box_from_points(points: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """The bounding box of [P, 2] points moved by ``ratios`` (left, top, right, bottom offsets over width, height)."""
    box = points_box(points)
    size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
    return box + ratios * size


def calibrate_box(face: dlib_face.DlibFace, samples: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Median offsets (over the FaceMesh 68 points' width/height) from their bounding box to dlib's HOG box.

    ``samples``: (RGB frame, FaceMesh 68 points [68, 2]) pairs, frames not used in the evaluation.
    """
    ratios = []
    for frame, mesh in samples:
        box = face.face_box(frame)
        if box is None:
            continue
        hog = np.array([box.left(), box.top(), box.right(), box.bottom()], np.float64)
        bbox = points_box(mesh)
        size = np.array([bbox[2] - bbox[0], bbox[3] - bbox[1]] * 2)
        ratios.append((hog - bbox) / size)
    ratios = np.array(ratios)
    median = np.median(ratios, axis=0)
    logger.info("box calibration on %d frames: HOG box = FaceMesh 68-point box + %s x (w, h, w, h)", len(ratios),
                np.round(median, 3).tolist())
    return {"faces_found": int(len(ratios)), "frames_tried": len(samples),
            "ratios_left_top_right_bottom": median.tolist(),
            "ratios_iqr": (np.percentile(ratios, 75, axis=0) - np.percentile(ratios, 25, axis=0)).tolist()}


def picked_frames(recording, stride: int, offset: int = 0) -> np.ndarray:
    """Positions within ``recording.frames`` of every ``stride``-th frame from ``offset``, as landmark_comparison."""
    return np.arange(offset, len(recording.frames), stride)


def calibration_samples(processed_root: Path, raw_root: Path, identities: list[str], stride: int) -> list:
    samples = []
    for identity in identities:
        data = load_identity(processed_root, identity, raw_root)
        mesh68 = np.load(data.processed.root / "landmarks" / "lms68.npy", mmap_mode="r")
        frames = data.processed.frames("frames")
        for recording in data.recordings:
            for index in recording.frames[picked_frames(recording, stride, stride // 2)]:
                points = np.asarray(mesh68[index], np.float64)
                if np.isfinite(points).all():
                    samples.append((frames.read(int(index)), points))
    return samples


def measure_identity(identity: str, processed_root: Path, raw_root: Path, face: dlib_face.DlibFace,
                     ratios: np.ndarray, stride: int) -> dict:
    """Per-frame points of every source on the identity's frames, with times, truth and NME."""
    data = load_identity(processed_root, identity, raw_root)
    clips = pd.read_parquet(data.processed.root / "crop" / "clips.parquet").sort_values("first_frame")
    truth = load_truth(raw_root, clips)
    if truth is None:
        raise ValueError(f"{identity}: no ground truth")
    image_size = int(clips["image_size"].iloc[0])
    mesh478 = np.load(data.processed.root / "landmarks" / "lms478.npy", mmap_mode="r")
    frames = data.processed.frames("frames")
    rows, expected, points = [], [], {name: [] for name in ("facemesh",) + DLIB_VARIANTS}
    times = {"read": [], "dlib_hog": [], "dlib_meshbox": [], "dlib_meshbbox": []}
    skipped = {"no_hog_face": 0, "facemesh_missing": 0}
    for recording in data.recordings:
        picked = picked_frames(recording, stride)
        true68 = true_landmarks(recording)[picked]
        for index, true_points in zip(recording.frames[picked], true68):
            index = int(index)
            mesh = np.asarray(mesh478[index, :, :2], np.float64)
            if not np.isfinite(mesh).all():
                skipped["facemesh_missing"] += 1
                continue
            start = time.perf_counter()
            image = frames.read(index)
            times["read"].append(time.perf_counter() - start)
            start = time.perf_counter()
            hog = face.landmarks(image)
            times["dlib_hog"].append(time.perf_counter() - start)
            mesh68 = mesh[MP68]
            start = time.perf_counter()
            meshbox = face.landmarks_in_box(image, box_from_points(mesh68, ratios))
            times["dlib_meshbox"].append(time.perf_counter() - start)
            start = time.perf_counter()
            meshbbox = face.landmarks_in_box(image, points_box(mesh68))
            times["dlib_meshbbox"].append(time.perf_counter() - start)
            if hog is None:
                skipped["no_hog_face"] += 1
                continue
            rows.append(index)
            expected.append(true_points)
            points["facemesh"].append(mesh)
            points["dlib_hog"].append(hog.astype(np.float64))
            points["dlib_meshbox"].append(meshbox.astype(np.float64))
            points["dlib_meshbbox"].append(meshbbox.astype(np.float64))
    rows = np.array(rows)
    mesh = np.stack(points.pop("facemesh"))
    sub_truth = truth_at(truth, rows)
    expected = np.stack(expected)
    if not np.allclose(sub_truth.landmarks_2d[:, MP68], expected, atol=1e-3):
        raise AssertionError(f"{identity}: load_truth and true_landmarks disagree on the frames' 2D points")
    sixty_eight = {"facemesh": mesh[:, MP68]} | {name: np.stack(value) for name, value in points.items()}
    for name in DLIB_VARIANTS:
        sixty_eight[f"mean_{name}"] = (sixty_eight["facemesh"] + sixty_eight[name]) / 2.0
    return {"rows": rows, "truth": sub_truth, "image_size": image_size, "mesh": mesh, "points68": sixty_eight,
            "expected": expected, "times": times, "skipped": skipped, "tried": len(times["read"])}


def fit_sources(measured: dict, tracker_vertices: np.ndarray) -> dict:
    """Per-frame errors, bounds and NMEs of every (source, point set) and of FaceMesh with its 468 vertices."""
    truth, image_size, mesh = measured["truth"], measured["image_size"], measured["mesh"]
    vertex_sets = {"68": MP68, "51": MP68[INNER_51], "tracker": tracker_vertices}
    results = {}
    for source, sixty_eight in measured["points68"].items():
        observed = mesh.copy()
        observed[:, MP68] = sixty_eight
        errors = point_errors(sixty_eight, measured["expected"])
        nme = {"nme68": float(errors.mean()), "nme51": float(errors[:, INNER_51].mean())}
        for set_name, vertices in vertex_sets.items():
            results[(source, set_name)] = _fit(observed, truth, vertices, image_size) | nme
    results[(BASELINE, "468")] = _fit(mesh, truth, np.arange(468), image_size) | {
        key: results[(BASELINE, "68")][key] for key in ("nme68", "nme51")}
    return results


def _fit(observed: np.ndarray, truth: IdentityTruth, vertices: np.ndarray, image_size: int) -> dict:
    bound = landmark_bound(observed, truth, vertices, image_size, stride=1)
    errors = per_frame_bound(observed, truth, vertices, image_size)
    if not np.isclose(np.nanmedian(errors), bound, rtol=0, atol=1e-9):
        raise AssertionError(f"per-frame errors' median {np.nanmedian(errors)} differs from landmark_bound {bound}")
    return {"bound_deg": bound, "errors": errors}


def median_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray], seed: int = 0) -> dict:
    """Bootstrap (percentile, 95%) of median over identities of per-identity median(a) - that of b, frames paired."""
    rng = np.random.default_rng(seed)
    names = list(a)
    estimate = float(np.median([np.nanmedian(a[n]) for n in names]) - np.median([np.nanmedian(b[n]) for n in names]))
    draws = np.empty(RESAMPLES)
    for draw in range(RESAMPLES):
        med_a, med_b = [], []
        for name in names:
            pick = rng.integers(0, len(a[name]), len(a[name]))
            med_a.append(np.nanmedian(a[name][pick]))
            med_b.append(np.nanmedian(b[name][pick]))
        draws[draw] = np.median(med_a) - np.median(med_b)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"estimate": estimate, "low": float(low), "high": float(high)}


def interval_dict(interval) -> dict:
    return {"estimate": interval.estimate, "low": interval.low, "high": interval.high, "samples": interval.samples,
            "dropped": interval.dropped, "excludes_zero": interval.sign != 0}


def ms_summary(values: list[float]) -> dict:
    values = np.array(values) * 1e3
    return {"median_ms": float(np.median(values)), "mean_ms": float(values.mean()),
            "p90_ms": float(np.percentile(values, 90)), "frames": int(len(values))}


def run(identities: list[str], processed_root: Path, raw_root: Path, face_model: Path, stride: int) -> dict:
    started = time.perf_counter()
    cv2.setNumThreads(1)
    face = dlib_face.DlibFace()
    model = FaceModel.load(face_model / "face_model.npz")
    tracker_vertices = model.landmarks[fitted_rows(model, TrackConfig().max_points)]
    inner51 = set(MP68[INNER_51].tolist())
    logger.info("tracker's fitted vertices: %d (%d of them the inner iBUG-51)", len(tracker_vertices),
                len(inner51 & set(tracker_vertices.tolist())))
    calibration = calibrate_box(face, calibration_samples(processed_root, raw_root, identities, stride))
    ratios = np.array(calibration["ratios_left_top_right_bottom"])
    per_identity, errors, times = {}, {}, {name: [] for name in ("read",) + DLIB_VARIANTS}
    for identity in identities:
        logger.info("%s: running dlib and the fits", identity)
        measured = measure_identity(identity, processed_root, raw_root, face, ratios, stride)
        fits = fit_sources(measured, tracker_vertices)
        for name in times:
            times[name] += measured["times"][name]
        per_identity[identity] = {
            "frames": int(len(measured["rows"])), "frames_tried": measured["tried"], "skipped": measured["skipped"],
            "true_focal_px": measured["truth"].focal, "image_size": measured["image_size"],
            "sources": {f"{source}/{points}": {"bound_deg": fit["bound_deg"],
                                               "mean_error_deg": float(np.nanmean(fit["errors"])),
                                               "p90_error_deg": float(np.nanpercentile(fit["errors"], 90)),
                                               "flipped_frames": int((fit["errors"] > FLIPPED_DEG).sum()),
                                               "nme68": fit["nme68"], "nme51": fit["nme51"]}
                        for (source, points), fit in fits.items()},
        }
        for key, fit in fits.items():
            errors.setdefault(key, {})[identity] = fit["errors"]
        logger.info("%s: %s", identity, json.dumps({k: round(v["bound_deg"], 3)
                                                    for k, v in per_identity[identity]["sources"].items()}))
    overall = {}
    for key in errors:
        name = f"{key[0]}/{key[1]}"
        overall[name] = {metric: float(np.median([per_identity[i]["sources"][name][metric] for i in identities]))
                         for metric in ("bound_deg", "mean_error_deg", "p90_error_deg", "nme68", "nme51")}
        overall[name]["flipped_frames"] = int(sum(per_identity[i]["sources"][name]["flipped_frames"]
                                                  for i in identities))
    comparisons, intervals = {}, {}
    for (source, points), by_identity in errors.items():
        if source == BASELINE:
            continue
        name = f"{source}/{points}"
        comparisons[name] = {}
        for baseline in dict.fromkeys((f"{BASELINE}/{points}",) + TODAY):
            base = errors[tuple(baseline.split("/"))]
            labels = np.concatenate([np.full(len(by_identity[i]), i) for i in identities])
            pooled = paired_bootstrap(np.concatenate([by_identity[i] for i in identities]),
                                      np.concatenate([base[i] for i in identities]), groups=labels)
            intervals[(name, baseline)] = pooled
            comparisons[name][baseline] = {
                "mean_difference_pooled": interval_dict(pooled),
                "mean_difference_per_identity": {i: interval_dict(paired_bootstrap(by_identity[i], base[i]))
                                                 for i in identities},
                "median_of_medians_difference": median_difference(by_identity, base),
            }
    best = min(comparisons, key=lambda name: overall[name]["bound_deg"])
    verdicts = {baseline: {"facemesh_bound_deg": overall[baseline]["bound_deg"],
                           "mean_difference_pooled": interval_dict(intervals[(best, baseline)]),
                           "median_of_medians_difference": comparisons[best][baseline]["median_of_medians_difference"],
                           "measurably_better": bool(intervals[(best, baseline)].sign < 0)}
                for baseline in comparisons[best]}
    return {
        "benchmark": "tracking_landmark_sources",
        "settings": {"identities": identities, "stride": stride, "processed_root": str(processed_root),
                     "raw_root": str(raw_root), "face_model": str(face_model), "bootstrap_resamples": RESAMPLES,
                     "tracker_fitted_vertices": int(len(tracker_vertices)),
                     "flipped_fit_deg": FLIPPED_DEG,
                     "threads": "1 (OMP/OpenBLAS/MKL, cv2); dlib single-threaded"},
        "box_calibration": calibration,
        "per_identity": per_identity,
        "overall_median_of_identities": overall,
        "comparisons_against_facemesh": comparisons,
        "best_alternative": {"name": best, "bound_deg": overall[best]["bound_deg"], "against": verdicts},
        "times_per_frame": {name: ms_summary(values) for name, values in times.items()},
        "runtime_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", nargs="+", default=["S001", "S002", "S003"])
    parser.add_argument("--stride", type=int, default=25,
                        help="every n-th frame with ground truth (landmark_comparison's)")
    parser.add_argument("--processed", type=Path, default=ROOT / "data/processed")
    parser.add_argument("--raw", type=Path, default=ROOT / "data/raw/synthetic")
    parser.add_argument("--face-model", type=Path, default=ROOT / "data/models/face_model")
    parser.add_argument("--output", type=Path, default=ROOT / "reports/bench/tracking_landmark_sources.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reason = dlib_face.unavailable()
    if reason:
        logger.error("%s", reason)
        return 1
    results = run(args.identities, args.processed, args.raw, args.face_model, args.stride)
    commit = git_commit(ROOT)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit.removesuffix("-dirty"),
              "tree_dirty": commit.endswith("-dirty"), "machine": machine_info(), **results}
    write_text(args.output, json.dumps(report, indent=1) + "\n")
    best = results["best_alternative"]
    for baseline, verdict in best["against"].items():
        interval = verdict["mean_difference_pooled"]
        logger.info("best alternative %s: %.3f deg vs %s %.3f deg; pooled mean difference %+.3f [%+.3f, %+.3f] deg "
                    "(%s)", best["name"], best["bound_deg"], baseline, verdict["facemesh_bound_deg"],
                    interval["estimate"], interval["low"], interval["high"],
                    "measurably better" if verdict["measurably_better"] else "not measurably better")
    logger.info("runtime %.0f s", results["runtime_s"])
    logger.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
