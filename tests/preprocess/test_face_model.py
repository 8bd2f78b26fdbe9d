"""The morphable landmark model: corpus build, focal self-calibration, BFM 2009 path, bad input."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from talkhead_models import face_topology as topo
from talkhead_models.preprocess import face_model as fm
from tests.preprocess.test_tracking import IDENTITIES, tracked_corpus


def identities(root) -> list[fm.IdentityLandmarks]:
    from stages.face_model import identity_landmarks

    return [identity_landmarks(root / name) for name in IDENTITIES]


def test_corpus_model_is_in_the_peers_head_frame(tiny_corpus):
    root = tracked_corpus(str(tiny_corpus))
    model = fm.FaceModel.load(root / "models" / "face_model" / "face_model.npz")
    assert model.source == "corpus" and model.n_points == fm.FACE_VERTICES
    assert model.n_id == len(IDENTITIES) - 1 and model.n_exp == fm.FaceModelConfig().exp_components
    row = {int(v): i for i, v in enumerate(model.landmarks)}
    mean = model.mean
    # x towards the subject's left, y up, z out of the face; decimetres; origin at the face oval
    assert mean[row[263], 0] > mean[row[33], 0]
    assert mean[row[topo.FOREHEAD], 1] > mean[row[topo.CHIN], 1]
    assert mean[row[topo.NOSE_TIP], 2] > mean[[row[v] for v in topo.FACE_OVAL], 2].mean() + 0.2
    assert np.linalg.norm(mean[row[263]] - mean[row[33]]) == pytest.approx(fm.EYE_OUTER_DISTANCE_DM, rel=0.05)
    assert np.abs(mean[[row[v] for v in topo.FACE_OVAL]].mean(axis=0)).max() < 0.05
    # expressions never move the head rigidly; components come strongest first
    rigid = fm.rigid_directions(mean)
    flat = model.exp_basis.reshape(model.n_exp, -1)
    assert np.abs(flat @ rigid.T).max() < 1e-4 * np.linalg.norm(flat, axis=1).max()
    norms = np.linalg.norm(flat, axis=1)
    assert np.all(np.diff(norms) <= 1e-6)


def test_focal_self_calibration_finds_the_true_focal_from_exact_landmarks(tiny_corpus):
    root = tracked_corpus(str(tiny_corpus), exact=True)
    calibration = json.loads((root / "models" / "face_model" / "calibration.json").read_text())
    clips = pd.read_parquet(root / "S001" / "crop" / "clips.parquet")
    with np.load(tiny_corpus / clips["truth"].iloc[0]) as truth:
        true_focal = float(truth["intrinsics"][0, 0])
    for name in IDENTITIES:
        assert calibration[name]["status"] == "ok"
        assert calibration[name]["focal_px"] == pytest.approx(true_focal, rel=0.02)


def test_calibration_without_perspective_cues_falls_back_with_a_warning(tiny_corpus, caplog):
    points = np.load(tracked_corpus(str(tiny_corpus)) / "S001" / "landmarks" / "lms478.npy")
    still = fm.IdentityLandmarks("still", np.repeat(points[:1], 60, axis=0), np.ones(60, bool), 192)
    cfg = fm.FaceModelConfig()
    with caplog.at_level(logging.WARNING):
        found = fm.calibrate_focal(still, cfg)
    assert found.status == "still"
    assert found.focal == pytest.approx(cfg.default_focal * 192)
    assert "default_focal" in caplog.text


@pytest.mark.parametrize("scores, expected", [
    ([5.0, 3.0, 1.0, 2.0, 4.0], "ok"),              # a bracketed minimum
    ([1.0, 1.01, 1.02, 1.01, 1.03], "flat"),        # nothing 5% above the best
    ([1.0, 2.0, 3.0, 4.0, 5.0], "edge"),            # the minimum at the range's end
    # S003 (Grace Hopper) in the demo corpus of 4957bd9: 0.02% lower one step in, then a monotone climb
    ([1.3310, 1.3305, 1.3390, 1.3530, 1.4070, 1.4380, 1.4420, 1.4660], "edge"),
    ([1.10, 1.00, 1.02, 1.20], "ok"),               # 10% up on the left, 20% on the right
    ([1.04, 1.00, 1.02, 1.20], "edge"),             # 4% up on the left: not bracketed
])
def test_a_focal_minimum_counts_only_when_the_curve_rises_on_both_sides(scores, expected):
    assert fm.curve_status(np.array(scores), min_contrast=0.05) == expected


def fake_bfm(path, corpus: fm.FaceModel, rotation: np.ndarray, scale: float, components: int = 5) -> np.ndarray:
    """A BFM-2009-shaped .mat whose 68 keypoints are the corpus mean turned and scaled; returns those points (dm)."""
    rng = np.random.default_rng(0)
    vertices = rng.normal(0.0, 50000.0, (53490, 3))
    row = {int(v): i for i, v in enumerate(corpus.landmarks)}
    keypoints = scale * corpus.mean[[row[int(v)] for v in topo.MP68]] @ rotation.T
    vertices[fm.BFM_68] = keypoints * fm.BFM_MICROMETRES_PER_DECIMETRE
    vertices -= vertices.mean(axis=0)
    savemat(path, {"shapeMU": vertices.reshape(-1, 1), "shapePC": rng.normal(0.0, 1.0, (vertices.size, components)),
                   "shapeEV": np.linspace(2.0, 1.0, components).reshape(-1, 1)})
    return vertices[fm.BFM_68] / fm.BFM_MICROMETRES_PER_DECIMETRE


def test_bfm_2009_replaces_mean_and_identity_and_carries_the_corpus_expressions(tiny_corpus, tmp_path):
    root = tracked_corpus(str(tiny_corpus))
    corpus = fm.FaceModel.load(root / "models" / "face_model" / "face_model.npz")
    angle = np.radians(10.0)
    rotation = np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]])
    keypoints = fake_bfm(tmp_path / fm.BFM_FILE, corpus, rotation, 1.2)
    model = fm.load_bfm(tmp_path / fm.BFM_FILE, corpus, n_id=3)
    assert model.source == "bfm2009" and model.n_points == 68 and model.n_id == 3
    assert np.array_equal(model.landmarks, topo.MP68)
    assert np.allclose(model.mean, keypoints, atol=1e-6)
    row = {int(v): i for i, v in enumerate(corpus.landmarks)}
    expected = 1.2 * corpus.exp_basis[:, [row[int(v)] for v in topo.MP68]] @ rotation.T
    assert np.allclose(model.exp_basis, expected, atol=1e-6)
    built = fm.build_face_model(identities(root), fm.FaceModelConfig(id_components=4), tmp_path)
    assert built.model.source == "bfm2009" and built.corpus.source == "corpus" and built.model.n_id == 4


def test_unreadable_bfm_is_a_clear_error(tiny_corpus, tmp_path):
    corpus = fm.FaceModel.load(tracked_corpus(str(tiny_corpus)) / "models" / "face_model" / "face_model.npz")
    (tmp_path / fm.BFM_FILE).write_bytes(b"not a mat file")
    with pytest.raises(fm.FaceModelError, match="not a readable BFM 2009"):
        fm.load_bfm(tmp_path / fm.BFM_FILE, corpus, 10)
    savemat(tmp_path / "partial.mat", {"shapeMU": np.zeros((30, 1))})
    with pytest.raises(fm.FaceModelError, match="lacks"):
        fm.load_bfm(tmp_path / "partial.mat", corpus, 10)


def test_identity_without_faces_is_named_in_the_error(tiny_corpus):
    good = identities(tracked_corpus(str(tiny_corpus)))[0]
    empty = fm.IdentityLandmarks("S009", good.points, np.zeros(len(good.points), bool), 192)
    with pytest.raises(fm.FaceModelError, match="identity S009: 0 frame"):
        fm.build_corpus_model([good, empty], None, 8, 4, 100)


def test_model_round_trips_and_stage_refuses_missing_landmarks(tiny_corpus, tmp_path):
    from stages import face_model as stage

    model = fm.FaceModel.load(tracked_corpus(str(tiny_corpus)) / "models" / "face_model" / "face_model.npz")
    model.save(tmp_path / "copy.npz")
    again = fm.FaceModel.load(tmp_path / "copy.npz")
    assert np.allclose(again.exp_basis, model.exp_basis, atol=1e-6) and again.source == model.source
    (tmp_path / "processed" / "S001" / "crop").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="landmarks"):
        stage.run(stage.FaceModelStageConfig(data=stage.DataConfig(identities=("S001",))),
                  {"processed": tmp_path / "processed"}, {"model": tmp_path / "model"})
    assert not (tmp_path / "model").exists()
