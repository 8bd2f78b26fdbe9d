"""M-LMD / F-LMD by hand, and the landmark-based action units on the synthetic corpus's ground truth."""

from pathlib import Path

import numpy as np
import pytest

from talkhead_models.metrics import ACTION_UNITS, action_unit_estimates, aue, face_lmd, mouth_lmd


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A plausible 68-point face (pixels) from the demo geometry: eyes 60 px apart, mouth below the nose."""
    rng = np.random.default_rng(0)
    points = np.zeros((68, 2))
    points[0:17] = np.stack([np.linspace(40, 160, 17), 100 + 60 * np.sin(np.linspace(0, np.pi, 17))], 1)
    points[17:22] = np.stack([np.linspace(55, 90, 5), [70, 66, 64, 65, 68]], 1)
    points[22:27] = np.stack([np.linspace(110, 145, 5), [68, 65, 64, 66, 70]], 1)
    points[27:31] = np.stack([np.full(4, 100.0), np.linspace(80, 110, 4)], 1)
    points[31:36] = np.stack([np.linspace(90, 110, 5), [118, 120, 121, 120, 118]], 1)
    eye = np.array([[-12, 0], [-6, -4], [6, -4], [12, 0], [6, 4], [-6, 4]], float)
    points[36:42], points[42:48] = eye + [70, 85], eye + [130, 85]
    angles = np.linspace(np.pi, -np.pi, 12, endpoint=False)
    points[48:60] = np.stack([100 + 22 * np.cos(angles), 140 - 8 * np.sin(angles)], 1)
    inner = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    points[60:68] = np.stack([100 + 14 * np.cos(inner), 140 - 3 * np.sin(inner)], 1)
    return points + rng.normal(0, 0.5, points.shape)


def test_lmd_ignores_a_shift_of_the_whole_set(face):
    shifted = face + [7.0, -3.0]
    assert mouth_lmd(shifted[None], face[None]).value == pytest.approx(0.0, abs=1e-12)
    assert face_lmd(shifted[None], face[None]).value == pytest.approx(0.0, abs=1e-12)


def test_lmd_of_one_moved_point_by_hand(face):
    # Frame 0: point 48 moved by (3, 4), 5 px. After centring, that point is off by 5 (1 - 1/n) and
    # every other point by 5 / n, so the mean is 2 * 5 (n - 1) / n^2. Frame 1 is exact.
    generated = np.stack([face, face])
    generated[0, 48] += [3.0, 4.0]
    target = np.stack([face, face])
    mouth, full = mouth_lmd(generated, target), face_lmd(generated, target)
    np.testing.assert_allclose(mouth.per_frame, [2 * 5 * 19 / 20**2, 0.0], atol=1e-12)
    np.testing.assert_allclose(full.per_frame, [2 * 5 * 67 / 68**2, 0.0], atol=1e-12)
    assert mouth.value == pytest.approx(0.2375) and full.value == pytest.approx(5 * 67 / 68**2)
    assert mouth.unit == "px" and not mouth.higher_is_better


def test_action_units_ignore_position_rotation_and_scale(face):
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 1.7 * face @ rotation.T + [40.0, -25.0]
    np.testing.assert_allclose(action_unit_estimates(moved[None]), action_unit_estimates(face[None]), atol=1e-9)


def test_raising_the_inner_brows_is_au01_alone(face):
    eye_axis = face[42:48].mean(0) - face[36:42].mean(0)
    up = np.array([eye_axis[1], -eye_axis[0]])  # perpendicular to the eye line, towards the forehead (y is down)
    raised = face.copy()
    raised[[21, 22]] += 0.1 * up  # by a tenth of the interocular distance
    change = action_unit_estimates(raised[None]) - action_unit_estimates(face[None])
    expected = np.zeros(len(ACTION_UNITS))
    expected[ACTION_UNITS.index("AU01")] = 10.0  # percent of IOD
    np.testing.assert_allclose(change[0], expected, atol=1e-9)
    value = aue(raised[None], face[None])
    assert value.value == pytest.approx(10.0 / len(ACTION_UNITS))
    assert value.reference == "substitute: landmark-based AU estimate (OpenFace not available)"
    assert "AU01 10.00" in value.note and value.footnote().startswith("AUE: substitute: landmark-based")


def _truth(corpus: Path, emotion: str) -> list[np.lib.npyio.NpzFile]:
    files = sorted(corpus.glob(f"*/truth/front/{emotion}/level_*/*.npz"))
    assert files, f"no {emotion} clips in the tiny corpus"
    return [np.load(file) for file in files]


def test_action_units_follow_the_corpus_ground_truth_expressions(tiny_corpus):
    neutral, sad = _truth(tiny_corpus, "neutral"), _truth(tiny_corpus, "sad")
    landmarks = np.concatenate([clip["landmarks_2d_68"] for clip in neutral + sad])
    keys = list(neutral[0]["expression_keys"])
    expression = np.concatenate([clip["expression"] for clip in neutral + sad])
    estimates = action_unit_estimates(landmarks)

    def correlation(unit: str, key: str) -> float:
        return np.corrcoef(estimates[:, ACTION_UNITS.index(unit)], expression[:, keys.index(key)])[0, 1]

    assert correlation("AU25", "jaw_open") > 0.9
    assert correlation("AU26", "jaw_open") > 0.6
    assert correlation("AU45", "blink_right") > 0.9
    assert correlation("AU12", "lip_spread") > 0.6
    # Sadness raises the inner brows and pulls the mouth corners down (per identity, same sentences).
    for identity in sorted({str(clip["identity"]) for clip in neutral}):
        def mean(clips, unit):
            chosen = [clip for clip in clips if str(clip["identity"]) == identity]
            return np.concatenate([action_unit_estimates(c["landmarks_2d_68"]) for c in chosen])[
                :, ACTION_UNITS.index(unit)].mean()
        assert mean(sad, "AU01") > mean(neutral, "AU01") + 1.0
        assert mean(sad, "AU15") > mean(neutral, "AU15") + 1.0
