"""audio2motion: it learns the mouth from audio, both variants run, and checkpoints load safely."""

from __future__ import annotations

import numpy as np
import pytest
from talkhead_models.pretrained.audio2motion import (
    Audio2MotionConfig, evaluate_recordings, load_model, motion_data, predict_landmarks, save_model,
    summary_scores, train_audio2motion,
)
from talkhead_models.pretrained.datasets import TRAIN, SplitConfig, load_identity, processed_identities, segment_table
from talkhead_models.pretrained.sync_expert import torch_threads

TINY = Audio2MotionConfig(hidden=64, audio_dim=32, identity_dim=16, steps=300, batch_size=8, sequence_frames=24,
                          learning_rate=2e-3, eval_every=300)


@pytest.fixture(scope="module")
def tiny_motion(processed_truth):
    identities = [load_identity(p) for p in processed_identities(processed_truth)]
    return motion_data(identities, segment_table(identities, SplitConfig(holdout_sentences=0)), "mel")


@pytest.fixture(scope="module")
def trained(tiny_motion):
    with torch_threads(1):
        return train_audio2motion(TINY, tiny_motion)


def test_beats_the_neutral_mouth_on_a_set_it_can_fit(tiny_motion, trained):
    table = evaluate_recordings(trained.model, tiny_motion, splits=(TRAIN,))
    scores = summary_scores(table)
    assert scores["mouth_error_ratio"] < 0.7, table[["clip", "mouth_error", "baseline_error"]]
    assert trained.history[-1]["loss"] < trained.history[0]["loss"]
    # Smooth: the prediction jitters no more than twice its reference landmarks do.
    assert (table.jitter <= 2 * table.reference_jitter + 1e-4).all()


def test_checkpoint_round_trip_predicts_the_same_landmarks(tiny_motion, trained, tmp_path):
    save_model(trained.model, TINY, tmp_path / "model.pt")
    model, config = load_model(tmp_path / "model.pt")
    assert config["feature_dim"] == tiny_motion.features.shape[-1]
    row = tiny_motion.segments.iloc[0]
    features = tiny_motion.features[row.start:row.stop]
    mean = tiny_motion.speaker_mean[row.identity_index]
    neutral = tiny_motion.neutral[row.identity_index]
    landmarks = predict_landmarks(model, features, mean, neutral)
    assert landmarks.shape == (row.stop - row.start, 68, 3)
    np.testing.assert_allclose(landmarks, predict_landmarks(trained.model, features, mean, neutral), atol=1e-5)


def test_variational_variant_trains_and_predicts_deterministically(tiny_motion):
    cfg = Audio2MotionConfig(variant="vae", hidden=32, audio_dim=16, identity_dim=8, latent_dim=4, steps=20,
                             batch_size=4, sequence_frames=16, eval_every=20)
    with torch_threads(1):
        result = train_audio2motion(cfg, tiny_motion)
    assert all(np.isfinite(row["loss"]) for row in result.history) and result.history[-1]["kl"] > 0
    row = tiny_motion.segments.iloc[0]
    args = (tiny_motion.features[row.start:row.stop], tiny_motion.speaker_mean[0], tiny_motion.neutral[0])
    np.testing.assert_array_equal(predict_landmarks(result.model, *args), predict_landmarks(result.model, *args))
    with pytest.raises(ValueError, match="variant"):
        train_audio2motion(Audio2MotionConfig(variant="flow", steps=1), tiny_motion)
