"""JEAN's landmark autoencoder: contour left out, training-only normaliser, mouth swap on held-out frames,
checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from talkhead_models.pretrained.datasets import (
    HELDOUT_SENTENCE, NO_FACE, TEST, TRAIN, SplitConfig, load_corpus, segment_table, split_frames,
)
from talkhead_models.pretrained.landmark_ae import (
    LandmarkAEConfig, LandmarkAutoencoder, PairSampler, landmark_data, load_landmark_ae, save_landmark_ae,
    swap_errors, train_landmark_ae,
)
from talkhead_models.pretrained.sync_expert import torch_threads

TINY = LandmarkAEConfig(steps=300, batch_size=128, eval_every=300, device="cpu", threads=1)
# The tiny corpus's held-out identity is a face shape the one training identity never showed; the swap is judged on
# the held-out sentences of the training identity.
SPLIT = SplitConfig(holdout_sentences=1)


@pytest.fixture(scope="module")
def corpus(processed_truth):
    identities = load_corpus(processed_truth)
    return identities, segment_table(identities, SPLIT)


@pytest.fixture(scope="module")
def trained(corpus):
    with torch_threads(TINY.threads):
        return train_landmark_ae(TINY, *corpus)


def _points(identities) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([d.canonical for d in identities])).float()


def test_the_contour_is_left_out():
    model = LandmarkAutoencoder()
    assert model.encoder[0].in_features == 153 and model.decoder[-1].out_features == 153
    points = torch.randn(4, 68, 3)
    moved = points.clone()
    moved[:, :17] += 5.0
    for a, b in zip(model.encode(points), model.encode(moved)):
        assert a.shape == (4, 64) and torch.equal(a, b)
    assert model.decode(*model.encode(points)).shape == (4, 51, 3)


def test_pairs_are_two_frames_of_one_training_segment(corpus):
    _, segments = corpus
    a, b = PairSampler.of(segments, [TRAIN]).sample(5000, np.random.default_rng(0))
    stops = np.sort(segments.stop.to_numpy())
    assert np.isin(a, split_frames(segments, [TRAIN])).all() and np.isin(b, split_frames(segments, [TRAIN])).all()
    assert (np.searchsorted(stops, a, side="right") == np.searchsorted(stops, b, side="right")).all()
    assert (a != b).all()


def test_training_reduces_the_loss(corpus, trained):
    losses = [row["loss"] for row in trained.history]
    assert len(losses) == TINY.steps and np.isfinite(losses).all()
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:10])
    identities, segments = corpus
    points = _points(identities)[:, 17:]
    a, b = PairSampler.of(segments, [HELDOUT_SENTENCE]).sample(500, np.random.default_rng(2))
    untrained = LandmarkAutoencoder()
    untrained.load_state_dict({**untrained.state_dict(), "point_mean": trained.model.point_mean,
                               "point_std": trained.model.point_std})
    before, after = (swap_errors(model, points[a], points[b]) for model in (untrained, trained.model))
    assert after["l1"] < 0.5 * before["l1"] and after["swap_l1"] < 0.5 * before["swap_l1"]


def test_a_swapped_mouth_embedding_moves_the_mouth_on_held_out_frames(corpus, trained):
    """decode(e_f(A), e_m(B)) has B's lips, as well as B's own reconstruction has them, and A's eyes and nose."""
    identities, segments = corpus
    points = _points(identities)
    a, b = PairSampler.of(segments, [HELDOUT_SENTENCE]).sample(1000, np.random.default_rng(1))
    model = trained.model
    with torch.no_grad():
        f_a, m_a = model.encode(points[a])
        f_b, m_b = model.encode(points[b])
        swapped, plain_a, plain_b = model.decode(f_a, m_b), model.decode(f_a, m_a), model.decode(f_b, m_b)
    lips_a, lips_b = points[a][:, 48:], points[b][:, 48:]  # the last 20 of the 51 points are 68 points 48-67
    swap_error = (swapped[:, -20:] - lips_b).abs().mean()
    plain_error = (plain_b[:, -20:] - lips_b).abs().mean()
    assert swap_error <= 1.5 * plain_error, (swap_error, plain_error)
    # Not a decoder that ignores e_m: its lips would be A's, this far from B's.
    assert swap_error < 0.5 * (lips_a - lips_b).abs().mean()
    upper_a = points[a][:, 17:48]
    assert (swapped[:, :-20] - upper_a).abs().mean() <= 1.5 * (plain_a[:, :-20] - upper_a).abs().mean()


def test_the_normaliser_reads_training_frames_only(corpus, trained):
    identities, segments = corpus
    points = np.concatenate([d.canonical for d in identities])
    train = np.zeros(len(points), bool)
    train[split_frames(segments, [TRAIN])] = True
    assert (~train[split_frames(segments, [TEST])]).all() and (~train).sum() > train.sum()
    far = np.where(train[:, None, None], points, points + 100.0).astype(np.float32)
    bounds = np.cumsum([0] + [len(d.canonical) for d in identities])
    moved = [dataclasses.replace(d, canonical=far[a:b]) for d, a, b in zip(identities, bounds[:-1], bounds[1:])]
    with torch_threads(1):
        one_step = train_landmark_ae(dataclasses.replace(TINY, steps=1), moved, segments)
    expected = points[train][:, 17:].reshape(train.sum(), -1).mean(0)
    np.testing.assert_allclose(one_step.model.point_mean.numpy(), expected, atol=1e-5)
    torch.testing.assert_close(one_step.model.point_std, trained.model.point_std)
    assert np.isfinite(one_step.history[0]["loss"])
    unread = landmark_data(identities, segments).points[split_frames(segments, [TEST, NO_FACE])]
    assert torch.isnan(unread).all()


def test_a_checkpoint_gives_the_same_outputs(trained, tmp_path):
    save_landmark_ae(trained.model, TINY, tmp_path / "model.pt")
    loaded = load_landmark_ae(tmp_path)
    points = torch.randn(8, 68, 3) * 0.1 + trained.model.point_mean.view(51, 3).mean(0)
    with torch.no_grad():
        for ours, theirs in zip(trained.model.encode(points), loaded.encode(points)):
            assert torch.equal(ours, theirs)
        assert torch.equal(trained.model(points), loaded(points))
    with pytest.raises(FileNotFoundError, match="pretrain_landmark_ae"):
        load_landmark_ae(tmp_path / "missing")
