"""JEAN's contrastive audio encoder: the InfoNCE of eq. 2, its negatives, what it reads, training and the stages."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from stages import pretrain_audio_contrastive, pretrain_landmark_ae
from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.pretrained.audio_contrastive import (
    AudioContrastiveConfig, ContrastiveAudioNet, ContrastiveData, NegativeSampler, info_nce, load_audio_encoder,
    loader_frames, retrieval_accuracy, train_audio_encoder,
)
from talkhead_models.pretrained.datasets import (
    HELDOUT_SENTENCE, NO_FACE, TEST, TRAIN, PretrainDataError, split_frames,
)
from talkhead_models.pretrained.landmark_ae import load_landmark_ae
from talkhead_models.pretrained.sync_expert import torch_threads

FRAMES = 150


def toy_segments() -> pd.DataFrame:
    """Three identities. I0's recording c1 is cut in two by frames without a face, each recording has a test part;
    I2 has a single training recording, so none of its training frames can be an anchor."""
    layout = {
        "I0": [("c0", TRAIN), ("c1", TRAIN), ("c1", NO_FACE), ("c1", TRAIN), ("c2", TRAIN), ("c3", HELDOUT_SENTENCE),
               ("c4", HELDOUT_SENTENCE), ("c4", TEST)],
        "I1": [("c0", TRAIN), ("c1", TRAIN), ("c2", TRAIN), ("c3", HELDOUT_SENTENCE), ("c4", HELDOUT_SENTENCE),
               ("c5", TEST)],
        "I2": [("c0", TRAIN), ("c1", TEST)],
    }
    rows, start = [], 0
    for identity, recordings in layout.items():
        for clip, split in recordings:
            rows.append({"identity": identity, "clip": clip, "kind": "clip", "split": split, "start": start,
                         "stop": start + FRAMES})
            start += FRAMES
    return pd.DataFrame(rows)


def toy_data(seed: int = 0, feature_dim: int = 8, shuffled: bool = False) -> ContrastiveData:
    """Audio that decides the mouth: e_m is a fixed function of the frame's central audio steps (``shuffled``: of
    another frame's, so the audio says nothing of it). The rows nothing may read (test, no face) are NaN, so reading
    one would poison the loss."""
    segments = toy_segments()
    rng = np.random.default_rng(seed)
    frames = int(segments.stop.max())
    features = rng.normal(size=(frames, 16, feature_dim)).astype(np.float32)
    projection = rng.normal(size=(feature_dim, 64)) / np.sqrt(feature_dim)
    mouth = np.tanh(features[:, 7:9].mean(axis=1) @ projection).astype(np.float32)
    if shuffled:
        mouth = mouth[rng.permutation(frames)]
    unread = split_frames(segments, [TEST, NO_FACE])
    features[unread], mouth[unread] = np.nan, np.nan
    return ContrastiveData(torch.from_numpy(features), torch.from_numpy(mouth), segments, "mel")


def test_info_nce_is_eq_2_by_hand():
    m = np.array([[1.0, 0.0, 0.0], [0.3, -0.2, 0.9]])
    positive = np.array([[0.8, 0.6, 0.0], [0.1, 0.1, 1.0]])
    negative = np.array([[[0.0, 1.0, 0.0]], [[-0.3, 0.2, -0.9]]])
    tau = 0.1

    def d(x, y):
        return x @ y / (tau * np.linalg.norm(x) * np.linalg.norm(y))

    expected = [-np.log(np.exp(d(positive[i], m[i])) / (np.exp(d(positive[i], m[i])) + np.exp(d(negative[i, 0], m[i]))))
                for i in range(2)]
    loss, correct = info_nce(*(torch.tensor(x) for x in (m, positive, negative)), temperature=tau)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)
    assert correct.tolist() == [True, True]
    swapped, wrong = info_nce(*(torch.tensor(x) for x in (m, negative[:, 0], positive[:, None])), temperature=tau)
    assert wrong.tolist() == [False, False] and (swapped > loss).all()
    # More negatives: a (1 + k)-way softmax over the same distances.
    two = np.concatenate([negative, positive[:, None] * -1], axis=1)
    loss2, _ = info_nce(*(torch.tensor(x) for x in (m, positive, two)), temperature=tau)
    logits = np.array([[d(k, m[i]) for k in (positive[i], *two[i])] for i in range(2)])
    np.testing.assert_allclose(loss2.numpy(), np.log(np.exp(logits).sum(1)) - logits[:, 0], rtol=1e-6)


def test_retrieval_accuracy_counts_the_own_audio_ranked_first():
    mouth = torch.eye(4)
    assert retrieval_accuracy(mouth, mouth) == 1.0
    assert retrieval_accuracy(mouth, mouth[[1, 0, 2, 3]]) == 0.5


def test_negatives_are_other_recordings_of_the_same_identity():
    segments = toy_segments()
    sampler = NegativeSampler.of(segments, [TRAIN])
    anchors = sampler.anchors()
    train = split_frames(segments, [TRAIN])
    identity = np.repeat(segments.identity.to_numpy(), FRAMES)
    clip = np.repeat(segments["clip"].to_numpy(), FRAMES)
    assert set(identity[anchors]) == {"I0", "I1"} and set(anchors) == set(train[identity[train] != "I2"])
    negatives = sampler.sample(np.repeat(anchors, 50), 3, np.random.default_rng(0))
    anchor_of = np.repeat(anchors, 50)[:, None]
    assert (identity[negatives] == identity[anchor_of]).all()
    assert (clip[negatives] != clip[anchor_of]).all()  # nor the other part of a recording cut in two
    assert np.isin(negatives, train).all()
    # Uniform over the other recordings' frames: every one of them is drawn.
    of_c1 = anchors[(identity[anchors] == "I0") & (clip[anchors] == "c1")]
    drawn = sampler.sample(np.repeat(of_c1, 200), 1, np.random.default_rng(1))
    others = train[(identity[train] == "I0") & (clip[train] != "c1")]
    assert set(drawn.ravel()) == set(others)
    held = NegativeSampler.of(segments, [HELDOUT_SENTENCE])
    assert np.isin(held.sample(held.anchors(), 5, np.random.default_rng(2)),
                   split_frames(segments, [HELDOUT_SENTENCE])).all()


def test_no_test_or_faceless_frame_is_read():
    segments = toy_segments()
    unread = split_frames(segments, [TEST, NO_FACE])
    for role, frames in loader_frames(segments).items():
        assert not np.isin(frames, unread).any(), role
    for splits in ([TRAIN], [HELDOUT_SENTENCE]):
        sampler = NegativeSampler.of(segments, splits)
        assert not np.isin(sampler.pool, unread).any()
        drawn = sampler.sample(np.repeat(sampler.anchors(), 20), 4, np.random.default_rng(0))
        assert not np.isin(drawn, unread).any()
    # Training and validation on data whose unread rows are NaN stay finite: no such row reached a batch.
    data = toy_data()
    assert torch.isnan(data.features[unread]).all()
    with torch_threads(1):
        trained = train_audio_encoder(AudioContrastiveConfig(steps=30, batch_size=32, eval_every=10,
                                                             device="cpu"), data)
    assert np.isfinite([row["loss"] for row in trained.history]).all()
    assert all(np.isfinite(list(row.values())).all() for row in trained.validation)


def test_held_out_accuracy_rises_above_chance_when_audio_decides_the_mouth():
    cfg = AudioContrastiveConfig(steps=200, batch_size=64, eval_every=100, device="cpu")
    with torch_threads(1):
        trained = train_audio_encoder(cfg, toy_data())
    first, last = trained.validation[0], trained.validation[-1]
    assert last["val_accuracy_heldout_sentence"] > 0.7, last  # chance: 0.5
    assert last["val_retrieval"] > 5 * last["retrieval_chance"], last
    with torch_threads(1):
        control = train_audio_encoder(cfg, toy_data(shuffled=True)).validation[-1]
    assert np.isfinite(control["val_loss"]) and control["val_accuracy"] < 0.62, control
    assert control["val_retrieval"] < 2 * control["retrieval_chance"], control
    assert last["val_loss"] < np.log(2)
    lr = [row["lr"] for row in trained.history]
    np.testing.assert_allclose([lr[0], lr[-1] * (5e-6 / 1e-3) ** (1 / cfg.steps)], [1e-3, 5e-6], rtol=1e-6)
    assert first["step"] == 100 and np.isfinite(first["val_loss"])


def test_the_stages_train_both_encoders_on_the_corpus(processed_truth, tmp_path):
    params = {
        "profile": "paper",
        "pretrain": {"holdout_sentences": 0},
        "pretrain_landmark_ae": {"steps": 20, "batch_size": 32, "eval_every": 10, "threads": 1},
        "pretrain_audio_contrastive": {"steps": 20, "batch_size": 32, "eval_every": 10, "threads": 1},
    }
    models = tmp_path / "data" / "models"
    paths = {"processed": processed_truth, "landmark_ae": models / "landmark_ae",
             "model": models / "audio_contrastive"}
    landmarks = pretrain_landmark_ae.STAGE.execute(
        params, root=tmp_path, paths={"processed": processed_truth, "model": models / "landmark_ae"})
    audio = pretrain_audio_contrastive.STAGE.execute(params, root=tmp_path, paths=paths)
    for folder, result in (("landmark_ae", landmarks), ("audio_contrastive", audio)):
        files = {p.name for p in (models / folder).iterdir()}
        assert {"model.pt", "config.json", "metrics.json", "curves.csv", "validation.csv", "segments.csv",
                "data_audit.csv", "manifest.json"} <= files
        assert len(pd.read_csv(models / folder / "curves.csv")) == 20
        audit = pd.read_csv(models / folder / "data_audit.csv")
        assert audit.filter(like="test_frames_in_").to_numpy().sum() == 0 and audit.test_frames.sum() > 0
        assert result.metrics["test_frames_used"] == 0
        assert json.loads((models / folder / "config.json").read_text())["holdout_identity"] == "S002"
    assert np.isfinite(landmarks.metrics["val_swap_l1"]) and 0 <= audio.metrics["val_accuracy"] <= 1

    encoder, info = load_audio_encoder(models / "audio_contrastive")
    assert isinstance(encoder, ContrastiveAudioNet)
    assert info["feature_kind"] == "mel" and info["feature_dim"] == 95 and info["output_dim"] == 64
    features = np.array(IdentityReader(processed_truth / "S001").audio_features("mel")[:8])
    assert encoder(torch.from_numpy(features)).shape == (8, 64)
    assert load_landmark_ae(models / "landmark_ae").embedding_dim == info["output_dim"]

    other_split = {**params, "pretrain": {"holdout_sentences": 1}}
    with pytest.raises(PretrainDataError, match="another split"):
        pretrain_audio_contrastive.STAGE.execute(other_split, root=tmp_path, paths=paths)
    with pytest.raises(PretrainDataError, match="aud_hubert.npy"):
        pretrain_audio_contrastive.STAGE.execute(
            {**params, "pretrain_audio_contrastive": {"audio_feature": "hubert"}}, root=tmp_path, paths=paths)
