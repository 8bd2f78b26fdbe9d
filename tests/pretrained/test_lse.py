"""LSE-D / LSE-C and the best offset, computed as syncnet_python's evaluation computes them."""

from __future__ import annotations

import numpy as np
import torch

from talkhead_models.pretrained.lse import offset_distances, sync_score


def test_scores_match_a_hand_computed_distance_matrix():
    # Three windows, 1-d embeddings, shifts -1..1; audio is zero-padded by one window at both ends.
    video = torch.tensor([[0.0], [1.0], [2.0]])
    audio = torch.tensor([[1.0], [2.0], [4.0]])
    # padded audio: [0, 1, 2, 4, 0]; row i holds |v_i - a_{i-1}|, |v_i - a_i|, |v_i - a_{i+1}|.
    expected = np.array([[0.0, 1.0, 2.0],
                         [0.0, 1.0, 3.0],
                         [0.0, 2.0, 2.0]])
    distances = offset_distances(video, audio, vshift=1).numpy()
    np.testing.assert_allclose(distances, expected, atol=1e-5)
    score = sync_score(video, audio, vshift=1)
    means = expected.mean(0)  # [0, 4/3, 7/3]
    np.testing.assert_allclose(score.mean_distances, means, atol=1e-5)
    assert score.offset == 1  # vshift - argmin = 1 - 0
    assert abs(score.distance - 0.0) < 1e-5
    assert abs(score.confidence - (np.median(means) - means.min())) < 1e-5


def test_delayed_audio_is_found_at_its_offset():
    generator = torch.Generator().manual_seed(0)
    video = torch.nn.functional.normalize(torch.randn(80, 16, generator=generator), dim=1)
    for delay in (-7, 0, 4, 15):
        audio = torch.roll(video, shifts=delay, dims=0)  # audio window j shows video window j - delay
        score = sync_score(video, audio)
        assert score.offset == -delay
        assert score.distance < 0.25 * np.median(score.mean_distances)  # windows past the ends meet zero padding
        assert score.confidence > 0.5
    unrelated = torch.nn.functional.normalize(torch.randn(80, 16, generator=generator), dim=1)
    assert sync_score(video, unrelated).confidence < 0.2
