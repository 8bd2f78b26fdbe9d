"""The face's linear post-net (GeneFace's domain adaptation): it recovers a known map, leaves still coordinates
alone, fits only the frames it is given, and is what predict_landmarks applies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from talkhead_models.pretrained.audio2motion import (
    Audio2Motion, adapt_to_face, fit_adaptation, predict_landmarks, recording_displacements, speaker_mean,
)
from talkhead_models.pretrained.canonical import MOUTH


def _moving_mouth(frames: int, seed: int = 0) -> torch.Tensor:
    """[F, 68, 3] displacements in which only the mouth moves."""
    generator = torch.Generator().manual_seed(seed)
    displacement = torch.zeros(frames, 68, 3)
    displacement[:, MOUTH] = torch.randn(frames, len(MOUTH), 3, generator=generator) * 0.02
    return displacement


def test_recovers_a_known_gain_and_offset_per_coordinate():
    predicted = _moving_mouth(400)
    gain = 1.0 + 0.3 * torch.rand(68, 3, generator=torch.Generator().manual_seed(1))
    offset = 0.005 * torch.randn(68, 3, generator=torch.Generator().manual_seed(2))
    adaptation = fit_adaptation(predicted, predicted * gain + offset, shrink=0.0)
    torch.testing.assert_close(adaptation.gain[MOUTH], gain[MOUTH], atol=1e-4, rtol=0)
    torch.testing.assert_close(adaptation.offset, offset, atol=1e-5, rtol=0)
    torch.testing.assert_close(adaptation.apply(predicted), predicted * gain + offset, atol=1e-5, rtol=0)
    assert adaptation.frames == 400


def test_coordinates_the_model_does_not_move_keep_gain_one():
    predicted = _moving_mouth(200)
    reference = predicted * 1.5 + 0.001 * torch.randn(200, 68, 3, generator=torch.Generator().manual_seed(3))
    adaptation = fit_adaptation(predicted, reference)
    still = np.setdiff1d(np.arange(68), MOUTH)
    torch.testing.assert_close(adaptation.gain[still], torch.ones(len(still), 3))
    # The moving mouth's gain is pulled from 1.5 towards 1 by the shrink only (variance + 10% of the mean).
    assert 1.3 < float(adaptation.gain[MOUTH].mean()) < 1.5
    with pytest.raises(ValueError, match="68, 3"):
        fit_adaptation(predicted, reference[:10])


def test_adapt_to_face_fits_only_the_given_frames_and_predict_landmarks_applies_it():
    torch.manual_seed(0)
    model = Audio2Motion(feature_dim=8, hidden=16, audio_dim=8, identity_dim=4).eval()
    features = np.random.default_rng(0).normal(size=(120, 16, 8)).astype(np.float32)
    neutral = np.random.default_rng(1).normal(size=(68, 3)).astype(np.float32)
    mean = speaker_mean(features)
    recordings = [(0, 50), (50, 120)]
    predicted = recording_displacements(model, torch.from_numpy(features), mean, torch.from_numpy(neutral), recordings)
    fitting = np.r_[0:40, 60:110]
    unseen = np.setdiff1d(np.arange(120), fitting)
    # Each run of fitting frames is predicted as a recording of its own (no context from the unseen frames).
    runs = recording_displacements(model, torch.from_numpy(features), mean, torch.from_numpy(neutral),
                                   [(0, 40), (60, 110)])
    canonical = neutral + 2.0 * predicted.numpy() + 0.01
    canonical[fitting] = neutral + 2.0 * runs.numpy() + 0.01
    canonical[unseen] += 5.0  # frames it must not see
    adaptation = adapt_to_face(model, features, mean, neutral, canonical, recordings, fitting)
    expected = fit_adaptation(runs, torch.from_numpy(canonical[fitting] - neutral))
    assert adaptation.frames == len(fitting)
    torch.testing.assert_close(adaptation.gain, expected.gain)
    torch.testing.assert_close(adaptation.offset, expected.offset)
    assert float(adaptation.gain[MOUTH].mean()) == pytest.approx(2.0, abs=0.15)
    # Nothing of the unseen frames, neither landmarks nor audio, reaches the fit.
    other_features, other_canonical = features.copy(), canonical.copy()
    other_features[unseen] = np.random.default_rng(5).normal(size=other_features[unseen].shape)
    other_canonical[unseen] = -3.0
    again = adapt_to_face(model, other_features, mean, neutral, other_canonical, recordings, fitting)
    torch.testing.assert_close(again.gain, adaptation.gain, rtol=0, atol=0)
    torch.testing.assert_close(again.offset, adaptation.offset, rtol=0, atol=0)

    adapted = predict_landmarks(model, features[50:120], mean, neutral, adaptation)
    plain = predict_landmarks(model, features[50:120], mean, neutral)
    np.testing.assert_allclose(adapted - neutral, adaptation.apply(torch.from_numpy(plain - neutral)).numpy(),
                               atol=1e-5)
    with pytest.raises(ValueError, match="none of the recordings"):
        adapt_to_face(model, features, mean, neutral, canonical, [(0, 50)], fitting)
