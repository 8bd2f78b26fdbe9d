"""The nearest_pose reference row against a brute-force nearest neighbour written independently (scipy's rotation
angle, the world-to-camera pose by matrix inversion), on a hand-made identity and on the tracked tiny one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.evaluation import EvaluationConfig, EvaluationInputs, evaluate_method
from talkhead_models.evaluation.driving import FrameBudget, drivings
from talkhead_models.methods import Driving, get_method
from talkhead_models.methods.nearest_pose import NearestPoseConfig, pose_distance
from talkhead_models.preprocess.audio_features import AudioConfig
from tests.methods.conftest import IDENTITY

SCALE = NearestPoseConfig().translation_scale


def brute_force_distance(c2w_a: np.ndarray, c2w_b: np.ndarray, scale: float) -> float:
    """Rotation angle of the world-to-camera poses' relative rotation plus their translations' distance / scale."""
    w2c_a, w2c_b = np.linalg.inv(c2w_a), np.linalg.inv(c2w_b)
    angle = Rotation.from_matrix(w2c_a[:3, :3] @ w2c_b[:3, :3].T).magnitude()
    return float(angle + np.linalg.norm(w2c_a[:3, 3] - w2c_b[:3, 3]) / scale)


def brute_force_nearest(c2w: np.ndarray, cameras: np.ndarray, candidates: list[int], scale: float) -> tuple[int, float]:
    best, best_distance = -1, math.inf
    for frame in candidates:
        distance = brute_force_distance(c2w, cameras[frame], scale)
        if distance < best_distance:
            best, best_distance = frame, distance
    return best, best_distance


def c2w_of(rotation: np.ndarray, head_in_camera: np.ndarray) -> np.ndarray:
    """Camera-to-world (head frame) of a head rotated by ``rotation`` whose origin sits at ``head_in_camera``."""
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = rotation, head_in_camera
    return np.linalg.inv(w2c)


def write_flat_identity(root: Path, cameras: np.ndarray, validation: list[int]) -> None:
    """An ER-NeRF-layout identity: one flat colour per frame (distinct after JPEG), the given cameras."""
    (root / "ori_imgs").mkdir(parents=True)
    for i in range(len(cameras)):
        colour = np.array([(37 * i) % 256, (91 * i + 40) % 256, (13 * i + 200) % 256], np.uint8)
        cv2.imwrite(str(root / "ori_imgs" / f"{i}.jpg"), np.broadcast_to(colour, (24, 24, 3))[..., ::-1].copy())
    for split, frames in (("train", [i for i in range(len(cameras)) if i not in validation]), ("val", validation)):
        record = {"focal_len": 30.0, "cx": 12.0, "cy": 12.0,
                  "frames": [{"img_id": i, "aud_id": i, "transform_matrix": cameras[i].tolist()} for i in frames]}
        (root / f"transforms_{split}.json").write_text(json.dumps(record))


def random_cameras(rng: np.random.Generator, count: int) -> np.ndarray:
    """Head turns up to ~17 degrees, the head ~70 cm in front of the camera, shifted by up to 3 cm."""
    rotations = Rotation.from_rotvec(rng.uniform(-0.3, 0.3, (count, 3))).as_matrix()
    positions = np.array([0.0, 0.0, -0.7]) + rng.uniform(-0.03, 0.03, (count, 3))
    return np.stack([c2w_of(r, t) for r, t in zip(rotations, positions)])


def driving_of(identity: str, role: str, frames: np.ndarray) -> Driving:
    n = len(frames)
    return Driving(identity=identity, role=role, audio=np.zeros(n * 640, np.float32), audio_features={},
                   eye=np.zeros(n, np.float32), frame_indices=np.asarray(frames))


def train_and_load(root: Path, model: Path, cfg: NearestPoseConfig | None = None):
    spec = get_method("nearest_pose")
    cfg = cfg or spec.resolve_config({})
    model.mkdir()
    summary = spec.train(cfg, root, {}, model)
    return spec.load(cfg, root, {}, model), summary


def test_distance_is_the_rotation_angle_plus_the_head_shift_over_the_scale():
    base = c2w_of(np.eye(3), np.array([0.0, 0.0, -0.7]))
    turned = c2w_of(Rotation.from_euler("y", 5, degrees=True).as_matrix(), np.array([0.01, 0.0, -0.7]))
    # 5 degrees and 1 cm: by hand 0.0872665 + 0.01 / 0.1.
    assert pose_distance(base, turned[None], 0.1)[0] == pytest.approx(math.radians(5) + 0.1, abs=1e-9)
    assert pose_distance(base, turned[None], 0.05)[0] == pytest.approx(math.radians(5) + 0.2, abs=1e-9)
    with pytest.raises(ValueError, match="translation_scale"):
        NearestPoseConfig(translation_scale=0.0)


def test_a_turned_head_in_place_is_nearer_than_a_shifted_one(tmp_path):
    # Frame 0 drives; frame 1 is the same head shifted 1 cm (d = 0.1), frame 2 the head turned 4 degrees in place
    # (d = 0.07). Measured by the camera's position in the head frame, the turn would swing the camera ~5 cm and
    # frame 1 would win: the distance must use the head's position in the camera.
    cameras = np.stack([c2w_of(np.eye(3), np.array([0.0, 0.0, -0.7])),
                        c2w_of(np.eye(3), np.array([0.01, 0.0, -0.7])),
                        c2w_of(Rotation.from_euler("y", 4, degrees=True).as_matrix(), np.array([0.0, 0.0, -0.7]))])
    write_flat_identity(tmp_path / "id", cameras, validation=[0])
    head, _ = train_and_load(tmp_path / "id", tmp_path / "model")
    assert head.nearest(0) == 2


def test_each_driving_frame_shows_the_nearest_training_frame_never_a_held_out_one(tmp_path):
    rng = np.random.default_rng(3)
    cameras = random_cameras(rng, 40)
    validation = list(range(25, 40))
    # Held-out frames 26-32 are near copies of 25: an implementation searching every frame would pick one of them.
    for i in range(26, 33):
        cameras[i] = cameras[25] @ c2w_of(Rotation.from_rotvec(rng.normal(0, 1e-3, 3)).as_matrix(), np.zeros(3))
    write_flat_identity(tmp_path / "id", cameras, validation)
    root = tmp_path / "id"
    head, summary = train_and_load(root, tmp_path / "model")
    training = [i for i in range(40) if i not in validation]
    assert summary["candidates"] == len(training) and sorted(head.frames.tolist()) == training

    reader = IdentityReader(root)
    indices = np.array(validation + [3, 17])  # training frames drive too (cross-driven walks may cross them)
    rendered = list(head.render(driving_of("id", "self", indices)))
    assert len(rendered) == len(indices)
    chosen = []
    for index, frame in zip(indices, rendered):
        expected, best = brute_force_nearest(cameras[index], cameras, training, SCALE)
        pick = head.nearest(int(index))
        assert pick not in validation
        assert brute_force_distance(cameras[index], cameras[pick], SCALE) == pytest.approx(best, abs=1e-9)
        assert pick == expected
        np.testing.assert_array_equal(frame, reader.frame(expected))
        chosen.append(pick)
    assert chosen[-2:] == [3, 17]  # a training frame is its own nearest
    assert len(set(chosen[:len(validation)])) > 1  # the poses differ, so does the choice (not a static row)


def test_the_scale_trades_rotation_against_translation(tmp_path):
    # Frame 1: 2 cm shift; frame 2: 6 degree turn. 0.1 m: 0.2 vs 0.105 -> frame 2; 0.5 m: 0.04 vs 0.105 -> frame 1.
    cameras = np.stack([c2w_of(np.eye(3), np.array([0.0, 0.0, -0.7])),
                        c2w_of(np.eye(3), np.array([0.0, 0.02, -0.7])),
                        c2w_of(Rotation.from_euler("x", 6, degrees=True).as_matrix(), np.array([0.0, 0.0, -0.7]))])
    write_flat_identity(tmp_path / "id", cameras, validation=[0])
    near, _ = train_and_load(tmp_path / "id", tmp_path / "a", NearestPoseConfig(translation_scale=0.1))
    far, _ = train_and_load(tmp_path / "id", tmp_path / "b", NearestPoseConfig(translation_scale=0.5))
    assert (near.nearest(0), far.nearest(0)) == (2, 1)


def test_untracked_training_frames_are_skipped_and_an_untracked_driving_frame_is_an_error(tmp_path):
    cameras = random_cameras(np.random.default_rng(5), 8)
    write_flat_identity(tmp_path / "id", cameras, validation=[6, 7])
    for split in ("train", "val"):  # the tracker wrote no camera for frames 0 and 7
        path = tmp_path / "id" / f"transforms_{split}.json"
        record = json.loads(path.read_text())
        record["frames"] = [f for f in record["frames"] if f["img_id"] not in (0, 7)]
        path.write_text(json.dumps(record))
    head, summary = train_and_load(tmp_path / "id", tmp_path / "model")
    assert head.frames.tolist() == [1, 2, 3, 4, 5] and summary["candidates"] == 5
    assert head.nearest(6) == brute_force_nearest(cameras[6], cameras, [1, 2, 3, 4, 5], SCALE)[0]
    with pytest.raises(ValueError, match="no tracked camera"):
        list(head.render(driving_of("id", "self", np.array([6, 7]))))


def test_self_and_cross_driving_on_the_tracked_identity(tracked_root, tiny_corpus, tmp_path):
    root = tracked_root / IDENTITY
    head, _ = train_and_load(root, tmp_path / "model")
    reader = IdentityReader(root)
    cameras = reader.cameras().c2w
    training = [int(i) for i in reader.training_frames() if np.isfinite(cameras[i]).all()]
    held_out = set(np.flatnonzero(reader.validation_mask()).tolist())
    budget = FrameBudget(max_frames=24, min_clip_frames=12)
    for role in ("self", "cross"):
        clips = drivings(reader, role, budget, tiny_corpus, AudioConfig(), ("mel",))
        assert clips, role
        for driving in clips:
            rendered = list(head.render(driving))
            assert len(rendered) == driving.num_frames
            for index, frame in zip(driving.frame_indices, rendered):
                expected, best = brute_force_nearest(cameras[index], cameras, training, SCALE)
                pick = head.nearest(int(index))
                assert pick not in held_out
                assert brute_force_distance(cameras[index], cameras[pick], SCALE) == pytest.approx(best, abs=1e-9)
                np.testing.assert_array_equal(frame, reader.frame(pick))


def test_evaluation_scores_it_as_a_reference_row(tracked_root, tiny_corpus, tmp_path, monkeypatch):
    spec = get_method("nearest_pose")
    cfg = spec.resolve_config({})
    model = tmp_path / "model"
    model.mkdir()
    spec.train(cfg, tracked_root / IDENTITY, {}, model)
    monkeypatch.setattr("talkhead_models.evaluation._sync_scorer", lambda inputs: None)
    inputs = EvaluationInputs(identity_root=tracked_root / IDENTITY, model_dir=model, raw_root=tiny_corpus,
                              sync_expert=None, face_model=None, pretrained={}, weights=tmp_path / "no_weights")
    record = evaluate_method(spec, cfg, EvaluationConfig(max_self_frames=20, max_cross_frames=20, min_clip_frames=10,
                                                         videos=False),
                             AudioConfig(), inputs, tmp_path / "videos", profile="test")
    own = record["settings"]["self"]["metrics"]
    assert record["family"] == "nearest_pose" and record["settings"]["cross"]["frames"] > 0
    assert math.isfinite(own["PSNR"]["value"]) and own["PSNR"]["value"] > 10
    assert own["FPS"]["value"] is None and "reference row" in own["FPS"]["note"]
