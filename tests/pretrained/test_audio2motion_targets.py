"""audio2motion's targets and inputs: pose-free references, ground truth in the model's frame, the utterance
context, vocal-tract warping and the voiced-pitch speaker mean."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
from scipy.spatial.transform import Rotation

from talkhead_models.pretrained.audio2motion import (
    Audio2Motion, Audio2MotionConfig, MelWarp, _sequence_context, evaluate_recordings, load_model, motion_data,
    predict_landmarks, save_model, speaker_mean, summary_scores, train_audio2motion, window_mean,
)
from talkhead_models.pretrained.canonical import MOUTH, fit_similarity, neutral_shape, remove_pose_dependence
from talkhead_models.pretrained.datasets import (
    SplitConfig, load_identity, processed_identities, segment_table, truth_displacement,
)
from talkhead_models.pretrained.sync_expert import torch_threads


def _face(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(scale=40.0, size=(68, 3)) + np.array([128.0, 128.0, 0.0])


def test_pose_dependence_goes_and_the_speech_motion_stays():
    rng = np.random.default_rng(0)
    frames = 2000
    neutral = neutral_shape(_face(rng)[None]).shape
    angles = rng.uniform(-0.25, 0.25, size=(frames, 3))  # radians
    rotation = Rotation.from_euler("yxz", angles).as_matrix()
    speech = np.zeros((frames, 68, 3))
    speech[:, MOUTH, 1] = rng.normal(scale=0.05, size=(frames, 1))  # opening, independent of the pose
    artefact = np.zeros((frames, 68, 3))
    artefact[:, MOUTH, 0] = 0.5 * angles[:, :1] + 1.5 * angles[:, 1:2] ** 2  # the detector's mouth follows the pose
    canonical = (neutral + speech + artefact).astype(np.float32)

    cleaned = remove_pose_dependence(canonical, rotation, np.arange(frames))

    left = cleaned - neutral - speech
    # What remains of the artefact is its mean over the reference frames (the fit keeps their mean shape).
    np.testing.assert_allclose(left - left.mean(axis=0), 0, atol=6e-3)
    assert np.abs(artefact - artefact.mean(0)).max() > 0.1  # so the check above is not vacuous
    np.testing.assert_allclose(cleaned[:, MOUTH, 1] - neutral[MOUTH, 1], speech[:, MOUTH, 1], atol=6e-3)


def test_truth_displacements_land_in_the_detectors_canonical_frame():
    rng = np.random.default_rng(1)
    frames = 40
    rest = _face(rng)
    motion = np.zeros((frames, 68, 3))
    motion[:, MOUTH, 1] = np.linspace(0, 6, frames)[:, None]
    poses = Rotation.from_euler("yxz", rng.uniform(-10, 10, size=(frames, 3)), degrees=True).as_matrix()
    truth = np.einsum("nij,nkj->nki", poses, rest + motion)
    truth[5] = np.nan  # a frame without truth stays unknown
    # The detector sees the same face at another image scale, turned and shifted: a global similarity.
    turn = Rotation.from_euler("z", 12, degrees=True).as_matrix()
    known = np.ones(frames, bool)
    known[5] = False
    detected = 1.7 * truth[known] @ turn.T + np.array([30.0, -10.0, 4.0])
    neutral_frames = np.array([0, 1, 2, 3, 4, 6, 7, 8, 9])
    detector_neutral = neutral_shape(detected[:9])  # the same nine frames
    detector = fit_similarity(detected, detector_neutral.shape).apply(detected) - detector_neutral.shape

    displacement = truth_displacement(truth.astype(np.float32), neutral_frames, detector_neutral)

    assert np.isnan(displacement[5]).all()
    np.testing.assert_allclose(displacement[known], detector, atol=1e-4)


def test_window_mean_is_truncated_at_the_ends():
    codes = torch.arange(5, dtype=torch.float32).view(1, 1, 5)
    np.testing.assert_allclose(window_mean(codes, 1)[0, 0].numpy(), [0.5, 1, 2, 3, 3.5])
    np.testing.assert_allclose(window_mean(codes, 10)[0, 0].numpy(), np.full(5, 2.0))


def _mel_frames(rng: np.random.Generator, count: int) -> np.ndarray:
    """Features laid out as the audio stage's mel kind: log-mel / 20, its MFCCs / 100, energy, pitch."""
    log_mel = rng.normal(size=(count, 80)).cumsum(axis=1) * 0.1
    mfcc = scipy.fft.dct(20 * log_mel - 50, type=2, norm="ortho", axis=1)[:, :13] / 100
    rest = rng.normal(size=(count, 2))
    return np.concatenate([log_mel, mfcc, rest], axis=1).astype(np.float32)


def test_mel_warp_moves_formants_and_keeps_the_features_consistent():
    rng = np.random.default_rng(2)
    frames = torch.from_numpy(_mel_frames(rng, 6)).view(2, 3, 95)
    warp = MelWarp(95)
    torch.testing.assert_close(warp(frames, np.array([1.0, 1.0])), frames)

    warped = warp(frames, np.array([1.15, 0.9]))
    # MFCCs are still the DCT of the (warped) log-mel; energy and pitch are untouched.
    mfcc = scipy.fft.dct(20 * warped[..., :80].numpy() - 50, type=2, norm="ortho", axis=-1)[..., :13] / 100
    np.testing.assert_allclose(warped[..., 80:93].numpy(), mfcc, atol=1e-4)
    torch.testing.assert_close(warped[..., 93:], frames[..., 93:])
    # Linear: the warped mean is the mean of the warped frames, so a speaker mean warps with its frames.
    torch.testing.assert_close(warp(frames.mean(dim=1), np.array([1.15, 0.9])), warped.mean(dim=1), atol=1e-5,
                               rtol=1e-5)
    # A spectral peak moves up for a shorter vocal tract (factor > 1).
    peak = torch.zeros(1, 95)
    peak[0, 40] = 1.0
    assert int(warp(peak, np.array([1.2]))[0, :80].argmax()) > 40
    with pytest.raises(Exception, match="vtlp"):
        MelWarp(64)


def test_speaker_mean_averages_pitch_over_voiced_steps_only():
    features = np.zeros((4, 16, 95), np.float32)
    features[..., 0] = 2.0
    features[:2, :, 94] = 0.5  # voiced half; the rest is unvoiced (0)
    mean = speaker_mean(features, pitch_column=94)
    assert mean[0] == pytest.approx(2.0) and mean[94] == pytest.approx(0.5)
    assert speaker_mean(features)[94] == pytest.approx(0.25)


@pytest.fixture(scope="module")
def truth_motion(processed_truth, tiny_corpus):
    identities = [load_identity(p, tiny_corpus) for p in processed_identities(processed_truth)]
    return identities, motion_data(identities, segment_table(identities, SplitConfig(holdout_sentences=1)), "mel")


def test_landmarks_made_from_the_truth_match_the_ground_truth(truth_motion):
    identities, data = truth_motion
    for identity in identities:
        # The tiny corpus's processed landmarks are its truth projected into the image; the ground truth is the
        # same landmarks in the head's frame, so the two differ only by what a similarity cannot undo of the
        # perspective projection.
        assert identity.truth is not None and np.isfinite(identity.truth).all()
        truth = identity.truth[:, MOUTH]
        rigid = (identity.rigid - identity.neutral.shape)[:, MOUTH]
        distance = np.linalg.norm(rigid - truth, axis=-1).mean() / np.linalg.norm(truth, axis=-1).mean()
        assert distance < 0.15, (identity.identity, distance)
    assert data.truth is not None and data.truth.shape == data.displacement.shape


def test_training_context_is_the_whole_recordings_context(truth_motion):
    _, data = truth_motion
    torch.manual_seed(0)
    model = Audio2Motion(95, hidden=16, audio_dim=8, identity_dim=4, context_frames=31, context_dim=4,
                         pitch_column=94, context_columns=[80, 81, 93, 94])
    row = data.segments[data.segments.kind == "video"].iloc[0]
    mean = data.speaker_mean[row.identity_index][None]
    whole = model.utterance_context(data.features[row.start:row.stop][None], mean)
    first = np.array([row.start, row.start + 20])
    context = _sequence_context(model, data.features, mean.expand(2, -1), first, np.full(2, row.stop),
                                np.full(2, row.start), 16, None, None)
    torch.testing.assert_close(context[0], whole[0, :, :16])
    torch.testing.assert_close(context[1], whole[0, :, 20:36])


def test_context_model_trains_scores_the_truth_and_round_trips(truth_motion, tmp_path):
    _, data = truth_motion
    cfg = Audio2MotionConfig(hidden=32, audio_dim=16, identity_dim=8, steps=30, batch_size=4, sequence_frames=16,
                             eval_every=30, dropout=0.1, context_frames=31, context_dim=8, emotion_weight=0.3,
                             vtlp=0.1)
    with torch_threads(1):
        trained = train_audio2motion(cfg, data)
    assert all(np.isfinite(row["loss"]) for row in trained.history)
    table = evaluate_recordings(trained.model, data)
    assert {"truth_mouth_error", "detector_truth_error", "rigid_mouth_error"} <= set(table.columns)
    # The reference is the truth up to perspective and the pose correction (which over these few frames also
    # takes some true motion that happens to follow the pose; it is fitted on the non-test frames only, 250 of
    # about 470 per tiny identity, and one scored clip reaches 0.41): still far closer to it than the neutral mouth.
    assert (table.detector_truth_error < 0.45 * table.truth_baseline_error).all(), table.detector_truth_error
    assert (table.rigid_baseline_error > 0).all()
    scores = summary_scores(table)
    assert scores["mouth_error_ratio_worst_emotion"] >= scores["mouth_error_ratio"] > 0
    assert 0 < scores["truth_mouth_error_ratio"] <= scores["truth_mouth_error_ratio_worst_emotion"]

    save_model(trained.model, cfg, tmp_path / "model.pt")
    model, config = load_model(tmp_path / "model.pt")
    assert config["context_frames"] == 31 and config["pitch_column"] == 94
    row = data.segments.iloc[0]
    args = (data.features[row.start:row.stop], data.speaker_mean[row.identity_index], data.neutral[row.identity_index])
    np.testing.assert_allclose(predict_landmarks(model, *args), predict_landmarks(trained.model, *args), atol=1e-5)
