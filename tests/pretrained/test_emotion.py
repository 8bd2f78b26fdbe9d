"""JEAN's per-frame emotion features: the face crop, the split, learning, the stage's files and the EMOCA file."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stages import pretrain_emotion
from talkhead_models.metrics.base import WeightsError
from talkhead_models.pretrained.datasets import HELDOUT_SENTENCE, NO_FACE, TEST, TRAIN, SplitConfig, load_corpus, \
    segment_table
from talkhead_models.pretrained.emotion import (
    EMOTION_SOURCE_EMOCA, EMOTION_SOURCE_SUBSTITUTE, EmotionConfig, EmotionData, crop_faces, crop_margin,
    emotion_data, emotion_features, evaluate_features, extract_features, face_boxes, load_emoca,
    load_emotion_features, load_model, loader_frames, train_emotion_net, write_features,
)
from tests.pretrained.test_leak import global_test_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPLIT = SplitConfig(holdout_sentences=0)  # the tiny corpus's training identity keeps a neutral and a sad clip
TINY = EmotionConfig(pretrain=SPLIT, crop_size=32, channels=(8, 16, 32, 64), feature_dim=16, steps=6, batch_size=16,
                     eval_every=3, eval_frames=64, device="cpu", threads=1)


# ---------------------------------------------------------------------------------------------------------------
# The crop


def _face_landmarks() -> np.ndarray:
    """68 points with eyes centred on (100, 90), outer corners 36 = (70, 90) and 45 = (130, 90), outer lips centred
    on (100, 130): crop centre (100, 110), outer eye distance 60."""
    points = np.zeros((68, 2))
    points[36:42] = (80, 90)
    points[36], points[39] = (70, 90), (90, 90)
    points[42:48] = (120, 90)
    points[42], points[45] = (110, 90), (130, 90)
    points[48:60] = (100, 130)
    points[48], points[54] = (85, 130), (115, 130)
    points[60:68] = (100, 150)  # inner lips: not part of the centre
    return points


def test_face_crop_lands_where_hand_computed_and_follows_head_roll():
    # crop_scale 2 x 60 px = a 120 px square around (100, 110): x in [40, 160), y in [50, 170). Inside it the
    # top-left quarter (x < 100, y < 110) is 200 and the rest 0; outside it everything is 100, which the crop must
    # never sample. At 32 px each crop pixel is 3.75 image pixels, and no sample falls on an edge.
    image = np.full((200, 200), 100.0)
    image[50:170, 40:160] = 0
    image[50:110, 40:100] = 200
    points = _face_landmarks()

    def crop(picture: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        boxes = torch.from_numpy(face_boxes(landmarks[None], [(0, 1)], crop_scale=2.0, smooth_frames=1))
        rgb = torch.from_numpy(np.repeat(picture[None, None], 3, axis=1).astype(np.float32))
        return crop_faces(rgb, boxes, 32)[0, 0].numpy()

    upright = crop(image, points)
    expected = np.zeros((32, 32))
    expected[:16, :16] = 200
    np.testing.assert_allclose(upright, expected, atol=1e-3)

    # The head rolled 90 degrees (image and landmarks): np.rot90 takes the pixel centred on (x, y) to (y, 200 - x).
    rolled = np.ascontiguousarray(np.rot90(image))
    rolled_points = np.stack([points[:, 1], 200 - points[:, 0]], axis=1)
    np.testing.assert_allclose(crop(rolled, rolled_points), expected, atol=1e-2)

    # The stored crops' margin is the same scale, one margin wider on each side.
    margin = crop_margin(32)
    boxes = torch.from_numpy(face_boxes(points[None], [(0, 1)], crop_scale=2.0, smooth_frames=1))
    wide = crop_faces(torch.from_numpy(image[None, None].astype(np.float32)), boxes, 32, margin=margin)[0, 0].numpy()
    np.testing.assert_allclose(wide[margin:-margin, margin:-margin], expected, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# The split


@pytest.fixture(scope="module")
def tiny_emotion(processed_truth):
    identities = load_corpus(processed_truth)
    segments = segment_table(identities, SPLIT)
    return identities, segments, emotion_data(identities, segments, TINY)


def test_loaders_read_no_test_frame_and_training_ignores_them(tiny_emotion, processed_truth):
    identities, segments, data = tiny_emotion
    used = loader_frames(segments)
    # The test frames derived from the split and clip tables alone (test_leak), and the segment table's own.
    test = global_test_frames(processed_truth, segments)
    rows = segments[segments.split.isin([TEST, NO_FACE])]
    excluded = np.concatenate([np.arange(a, b) for a, b in zip(rows.start, rows.stop)])
    assert len(test) and len(used["train"]) and len(used["validation"])
    for frames in used.values():
        assert not np.intersect1d(frames, test).size and not np.intersect1d(frames, excluded).size
    assert len(used["train"]) + len(used["validation"]) + len(np.union1d(test, excluded)) == len(data.labels)
    assert (data.labels[test] == -1).all()  # the test frames' labels are not even kept

    # Training reads only those frames: noise in every test frame's crop (and labels for them) changes nothing.
    poisoned = dataclasses.replace(data, crops=data.crops.clone(), labels=data.labels.copy())
    generator = torch.Generator().manual_seed(1)
    poisoned.crops[torch.from_numpy(test)] = torch.randint(0, 256, poisoned.crops[test].shape, generator=generator,
                                                           dtype=torch.uint8)
    poisoned.labels[test] = np.arange(len(test)) % len(data.emotions)
    clean, dirty = train_emotion_net(TINY, data), train_emotion_net(TINY, poisoned)
    assert [r["loss"] for r in clean.history] == [r["loss"] for r in dirty.history]
    assert clean.validation == dirty.validation
    for name, value in clean.model.state_dict().items():
        assert torch.equal(value, dirty.model.state_dict()[name]), name


# ---------------------------------------------------------------------------------------------------------------
# Learning


def _toy(rng: np.random.Generator, per_class: int, split: str, start: int, size: int) -> tuple[list, list, dict]:
    """Crops whose emotion is drawn in them: a bright top half, bottom half or centre square, under noise and
    random brightness and contrast."""
    crops, labels = [], []
    for label in range(3):
        for _ in range(per_class):
            image = np.zeros((size, size))
            half = size // 2
            if label == 0:
                image[:half] = 1
            elif label == 1:
                image[half:] = 1
            else:
                image[size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
            image = rng.uniform(40, 120) + rng.uniform(40, 100) * image + rng.normal(0, 30, image.shape)
            crops.append(np.clip(image, 0, 255).astype(np.uint8))
            labels.append(label)
    rows = [{"identity": "T", "clip": f"{split}{k}", "kind": "clip", "emotion": name, "sentence": 1, "split": split,
             "start": start + k * per_class, "stop": start + (k + 1) * per_class}
            for k, name in enumerate(("a", "b", "c"))]
    return crops, labels, rows


def test_cnn_learns_an_emotion_drawn_in_the_image_and_extracts_every_frame():
    rng = np.random.default_rng(0)
    size = TINY.crop_size + 2 * crop_margin(TINY.crop_size)
    train, train_labels, train_rows = _toy(rng, 120, TRAIN, 0, size)
    held, held_labels, held_rows = _toy(rng, 40, HELDOUT_SENTENCE, 360, size)
    crops = torch.from_numpy(np.stack(train + held)[:, None])
    labels = np.array(train_labels + held_labels)
    face = np.ones(len(labels), bool)
    face[[5, 400]] = False  # frames without a face: no features
    labels[~face] = -1
    data = EmotionData(crops, labels, ("a", "b", "c"), pd.DataFrame(train_rows + held_rows), face)
    cfg = dataclasses.replace(TINY, steps=150, batch_size=24, eval_every=75, learning_rate=3e-3)
    trained = train_emotion_net(cfg, data)
    features, logits = extract_features(trained.model, data, cfg)
    assert features.shape == (len(labels), cfg.feature_dim) and features.dtype == np.float32
    assert np.isnan(features[~face]).all() and np.isfinite(features[face]).all()
    metrics, confusion, _ = evaluate_features(features, labels, data.segments, data.emotions, logits)
    assert metrics["val_accuracy"] > 0.9 and metrics["val_balanced_accuracy"] > 0.9  # chance: 1/3
    assert metrics["val_centroid_accuracy"] > 0.9  # the features themselves separate the classes
    assert confusion.frames.sum() == 119  # every held-out frame with a face, once
    assert trained.history[-1]["loss"] < trained.history[0]["loss"]


# ---------------------------------------------------------------------------------------------------------------
# The stage and the EMOCA file


def test_stage_writes_features_for_every_frame(processed_truth, tmp_path, monkeypatch, tiny_emotion):
    monkeypatch.setenv("TALKHEAD_WEIGHTS", str(tmp_path / "no_weights"))
    params = {"profile": "paper", "pretrain": {"holdout_sentences": 0},
              "pretrain_emotion": {"crop_size": 32, "channels": [8, 16, 32, 64], "feature_dim": 16, "steps": 8,
                                   "batch_size": 16, "eval_every": 4, "eval_frames": 64, "threads": 1,
                                   "device": "cpu"}}
    folder = tmp_path / "emotion"
    cfg = pretrain_emotion.STAGE.resolve_config(params)  # the stage's run without its MLflow run (test_stages)
    assert cfg.steps == 8 and cfg.pretrain == SPLIT
    result = pretrain_emotion.run(cfg, {"processed": processed_truth}, {"model": folder})
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["source"] == EMOTION_SOURCE_SUBSTITUTE and metrics["test_frames_used"] == 0
    assert 0 <= result.metrics["val_accuracy"] <= 1
    assert (pd.read_csv(folder / "data_audit.csv").filter(like="test_frames_in_").to_numpy() == 0).all()
    for identity in ("S001", "S002"):
        frames = int(pd.read_parquet(processed_truth / identity / "crop" / "clips.parquet").last_frame.max()) + 1
        stored = np.load(folder / "features" / f"{identity}.npy", mmap_mode="r")
        assert stored.shape == (frames, 16) and stored.dtype == np.float32 and np.isfinite(stored).all()
        features, source = load_emotion_features(folder, identity)
        assert source == EMOTION_SOURCE_SUBSTITUTE and np.array_equal(features, stored)

    # model.pt gives the features written, from the same crops.
    _, segments, data = tiny_emotion
    model, config = load_model(folder / "model.pt")
    first = int(segments[segments.identity == "S002"].start.min())
    margin = crop_margin(config["crop_size"])
    with torch.no_grad():
        again = model.features(data.crops[first:first + 8, :, margin:-margin, margin:-margin])
    np.testing.assert_allclose(again.numpy(), load_emotion_features(folder, "S002")[0][:8], rtol=1e-4, atol=1e-5)

    with pytest.raises(FileNotFoundError, match="S009.*dvc repro pretrain_emotion"):
        load_emotion_features(folder, "S009")
    with pytest.raises(FileNotFoundError, match="dvc repro pretrain_emotion"):
        load_emotion_features(tmp_path / "nowhere", "S001")


class _FakeEmoca(nn.Module):
    """Stands in for EMOCA's exported network: [B, 3, 224, 224] in [0, 1] -> [B, width]."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.linear = nn.Linear(48, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pool(images).flatten(1))


def test_emoca_file_is_used_when_valid_and_refused_naming_it_when_malformed(tiny_emotion, tmp_path):
    identities, segments, _ = tiny_emotion
    weights = tmp_path / "weights"
    weights.mkdir()
    path = weights / TINY.weights_file
    path.write_bytes(b"not a network")
    with pytest.raises(WeightsError, match=str(path)):
        load_emoca(path)
    torch.jit.save(torch.jit.script(_FakeEmoca(16)), path)
    with pytest.raises(WeightsError, match=rf"{path}.*\[1, 2048\]"):
        load_emoca(path)
    torch.save({"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}, path)  # a state dict is not the contract
    with pytest.raises(WeightsError, match=str(path)):
        load_emoca(path)
    assert load_emoca(tmp_path / "absent.pt") is None

    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(_FakeEmoca(2048)), path)
    result = emotion_features(identities, segments, TINY, weights)
    assert result.source == EMOTION_SOURCE_EMOCA == result.metrics["source"]
    assert {k: v.shape for k, v in result.features.items()} == {d.identity: (len(d.image), 2048) for d in identities}
    assert 0 <= result.metrics["val_accuracy"] <= 1 and result.metrics["prediction"] == "train centroids"
    write_features(tmp_path / "out", result)
    features, source = load_emotion_features(tmp_path / "out", "S001")
    assert source == EMOTION_SOURCE_EMOCA and features.shape[1] == 2048
