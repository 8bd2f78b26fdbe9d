"""The lip-sync adapter on shifted audio, the speed helpers and Exp-Diff."""

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from talkhead_models.metrics import MissingWeightsError, SyncScorer, exp_diff, measure_fps, sync_metrics, training_time

FPS, SAMPLE_RATE = 25, 16000
HOP = SAMPLE_RATE // FPS


class EnvelopeScorer:
    """A SyncNet-style evaluation on one-dimensional 'embeddings' (mouth darkness, audio loudness per frame).

    Like syncnet_python: mean distance per candidate shift, LSE-D the minimum, LSE-C the median minus
    the minimum, and the offset with its sign (audio delayed by k frames: -k).
    """

    reference = "substitute: test scorer (mouth darkness against audio loudness)"

    def __init__(self, max_offset: int = 8) -> None:
        self.max_offset = max_offset

    def score(self, frames: torch.Tensor, audio: np.ndarray) -> tuple[float, float, int]:
        mouth = 1.0 - frames[:, :, 40:56, 24:40].mean(dim=(1, 2, 3)).numpy()
        loudness = np.sqrt((audio[: len(frames) * HOP].reshape(len(frames), HOP) ** 2).mean(axis=1))
        mouth, loudness = [(x - x.mean()) / x.std() for x in (mouth, loudness)]
        window = slice(self.max_offset, len(frames) - self.max_offset)
        offsets = np.arange(-self.max_offset, self.max_offset + 1)
        distances = np.array([np.abs(mouth[window] - np.roll(loudness, -offset)[window]).mean() for offset in offsets])
        delay = int(offsets[distances.argmin()])
        return float(np.median(distances) - distances.min()), float(distances.min()), -delay


@pytest.fixture(scope="module")
def talking():
    """100 frames whose dark mouth box opens with a smooth envelope, and noise audio with that loudness."""
    rng = np.random.default_rng(0)
    envelope = np.convolve(rng.random(100 + 8), np.ones(5) / 5, mode="valid")[:100]
    envelope = (envelope - envelope.min()) / (envelope.max() - envelope.min())
    frames = torch.ones(100, 3, 64, 64)
    for index, opening in enumerate(envelope):
        frames[index, :, 48 - int(8 * opening):48 + int(8 * opening) + 1, 24:40] = 0.0
    audio = (rng.normal(size=100 * HOP) * np.repeat(0.05 + envelope, HOP)).astype(np.float32)
    return frames, audio


def test_scorer_protocol_is_structural():
    assert isinstance(EnvelopeScorer(), SyncScorer)
    assert not isinstance(object(), SyncScorer)


def test_lse_finds_the_shift_of_delayed_audio(talking):
    frames, audio = talking
    scorer = EnvelopeScorer()
    aligned = sync_metrics(scorer, frames, audio)
    delayed = sync_metrics(scorer, frames, np.concatenate([np.zeros(3 * HOP, np.float32), audio[:-3 * HOP]]))
    unrelated = sync_metrics(scorer, frames, np.random.default_rng(1).permutation(audio.reshape(100, HOP)).ravel())
    assert aligned["LSE-C"].note == "audio-video offset 0 frames"
    assert delayed["LSE-D"].note == "audio-video offset -3 frames"
    assert aligned["LSE-C"].value > 2 * unrelated["LSE-C"].value
    assert aligned["LSE-D"].value < unrelated["LSE-D"].value and not aligned["LSE-D"].higher_is_better
    # The shift moves the offset, not the quality of the sync (up to the frames the shift drops).
    assert delayed["LSE-C"].value == pytest.approx(aligned["LSE-C"].value, rel=0.2)
    assert aligned["Sync"].value == aligned["LSE-C"].value
    assert aligned["Sync"].reference == scorer.reference and aligned["Sync"].substituted


def test_sync_without_a_scorer_or_its_weights_is_n_a(talking):
    frames, audio = talking
    missing = sync_metrics(None, frames, audio)
    assert set(missing) == {"Sync", "LSE-C", "LSE-D"}
    assert all(value.value is None and "syncnet_v2.model" in value.footnote() for value in missing.values())

    class WithoutWeights:
        def score(self, frames_or_mouths, audio):
            raise MissingWeightsError("syncnet_v2.model (SyncNet) not found in weights/; see docs/WEIGHTS.md")

    failed = sync_metrics(WithoutWeights(), frames, audio)
    assert failed["LSE-D"].cell() == "n/a" and "syncnet_v2.model" in failed["LSE-D"].note

    class Undeclared:
        def score(self, frames_or_mouths, audio):
            return SimpleNamespace(offset=1, distance=6.5, confidence=7.5)  # like pretrained.lse.SyncScore

    values = sync_metrics(Undeclared(), frames, audio)
    assert values["LSE-C"].reference == "substitute: sync scorer Undeclared"
    assert values["LSE-C"].value == 7.5 and values["LSE-D"].value == 6.5 and "offset 1 frames" in values["Sync"].note


def test_fps_counts_only_the_timed_frames(monkeypatch):
    # A clock that only the renders advance, so the expected rate is exact whatever the machine's load.
    clock = [1000.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    calls = []

    def render(index: int) -> None:
        calls.append(index)
        clock[0] += 0.3 if index < 2 else 0.01  # slow warm-up (compilation, caches), then 10 ms per frame

    value = measure_fps(render, frames=10, warmup=2)
    assert calls == list(range(12))
    # 10 frames in 0.1 s; with the warm-up counted it would be 10 / 0.7 = 14.3, with one frame lost 90.
    assert value.value == pytest.approx(100.0, rel=1e-9)
    assert value.unit == "frames/s" and "CPU" in value.hardware and value.footnote().startswith("FPS: measured on")


def test_training_time_is_hours_with_the_hardware():
    value = training_time(5400.0, "NVIDIA A100 (cuda:0)")
    assert value.value == 1.5 and value.unit == "h" and not value.higher_is_better
    assert value.footnote() == "Training time: measured on NVIDIA A100 (cuda:0)"
    with pytest.raises(ValueError):
        training_time(-1.0, "cpu")


def test_exp_diff_is_the_coefficient_mse():
    driving = np.zeros((2, 4))
    generated = np.array([[1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]])  # per frame 1/4 and 8/4
    value = exp_diff(generated, torch.as_tensor(driving))
    np.testing.assert_allclose(value.per_frame, [0.25, 2.0])
    assert value.value == pytest.approx(1.125) and not value.higher_is_better
    with pytest.raises(ValueError, match="differ in shape"):
        exp_diff(generated, np.zeros((3, 4)))
