"""The sync expert: mouth crops, training on a tiny corpus, offsets, checkpoints and the discriminator's gradient."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from talkhead_models.data.processed import SAMPLE_RATE
from talkhead_models.media import read_audio
from talkhead_models.pretrained.datasets import TRAIN, SplitConfig, load_identity, processed_identities, segment_table
from talkhead_models.pretrained.sync_expert import (
    MEL_PER_FRAME, ExpertScorer, SyncExpertConfig, audio_windows, centre_crop, crop_mouths, frozen, load_expert,
    model_config, mouth_boxes, save_expert, score_pair, score_recordings, sync_data, sync_loss, torch_threads,
    train_sync_expert, video_windows,
)

TINY = SyncExpertConfig(crop_height=32, crop_width=64, n_mels=40, channels=(8, 16, 32, 64), embedding_dim=64,
                        steps=200, spans=6, anchors_per_span=8, learning_rate=2e-3, eval_every=200, threads=1)


@pytest.fixture(scope="module")
def tiny_sync(processed_truth):
    identities = [load_identity(p) for p in processed_identities(processed_truth)]
    data = sync_data(identities, segment_table(identities, SplitConfig(holdout_sentences=0)), TINY)
    with torch_threads(TINY.threads):
        return identities, data, train_sync_expert(TINY, data)


def _frame_and_truth(corpus, identity="S001", clip="neutral/level_1/001.npz", index=10):
    truth = np.load(corpus / identity / "truth" / "front" / clip)
    return truth["labels"][index], truth["landmarks_2d_68"][index]


def test_mouth_crop_centres_the_lips_and_undoes_head_roll(tiny_corpus):
    labels, points = _frame_and_truth(tiny_corpus)
    lips = np.isin(labels, [4, 5]).astype(np.float32) * 255  # lips and mouth interior
    size = labels.shape[0]
    rotation = cv2.getRotationMatrix2D((size / 2, size / 2), 20, 1.0)
    rolled = cv2.warpAffine(lips, rotation, (size, size))
    rolled_points = points @ rotation[:, :2].T + rotation[:, 2]

    def crop(image, landmarks):
        box = torch.from_numpy(mouth_boxes(landmarks[None], [(0, 1)]))
        return crop_mouths(torch.from_numpy(np.repeat(image[None, None], 3, 1)), box, 48, 96)[0].numpy()

    upright, from_rolled = crop(lips, points), crop(rolled, rolled_points)
    mask = upright > 127
    assert 0.1 < mask.mean() < 0.6
    rows, cols = np.nonzero(mask)
    assert abs(rows.mean() - 24) < 6 and abs(cols.mean() - 48) < 6  # the lips sit in the middle
    assert (mask == (from_rolled > 127)).mean() > 0.95  # a rolled head gives the same crop


def test_expert_learns_sync_and_finds_a_known_offset(tiny_sync):
    _, data, trained = tiny_sync
    assert trained.history[-1]["loss"] < 0.5 * trained.history[0]["loss"]
    scores = score_recordings(trained.expert, data, TINY, splits=(TRAIN,))
    assert (scores.offset.abs() <= 1).mean() >= 0.75, scores[["clip", "offset"]]
    assert (scores.lse_c > scores.other_lse_c).mean() >= 0.75

    row = data.segments[(data.segments.split == TRAIN) & (data.segments.kind == "clip")].iloc[0]
    mouths = centre_crop(data.mouths, TINY.crop_height, TINY.crop_width)[row.start:row.stop]
    mel = data.mel[MEL_PER_FRAME * row.start:MEL_PER_FRAME * row.stop]
    delay = 6
    delayed = torch.cat([mel[:1].expand(MEL_PER_FRAME * delay, -1), mel[:-MEL_PER_FRAME * delay]])
    assert abs(score_pair(trained.expert, mouths, mel).offset) <= 1
    assert abs(score_pair(trained.expert, mouths, delayed).offset + delay) <= 1


def test_scorer_reads_frames_and_a_waveform(tiny_sync, processed_truth):
    identities, data, trained = tiny_sync
    row = data.segments[(data.segments.split == TRAIN) & (data.segments.kind == "clip")].iloc[0]
    identity = next(i for i in identities if i.identity == row.identity)
    local = slice(row.first_frame, row.last_frame + 1)
    frames = np.stack([identity.processed.frames("frames").read(i) for i in range(local.start, local.stop)])
    audio = read_audio(identity.processed.path("audio"), SAMPLE_RATE)[local.start * 640:local.stop * 640]
    scorer = ExpertScorer(trained.expert, model_config(TINY))
    score = scorer.score((frames, identity.image[local]), audio)
    assert abs(score.offset) <= 1 and score.confidence > 0
    assert scorer.reference.startswith("substitute: ")


def test_checkpoint_round_trip_and_frozen_discriminator_gradient(tiny_sync, tmp_path):
    identities, data, trained = tiny_sync
    save_expert(trained.expert, TINY, tmp_path / "model.pt")
    expert, config = load_expert(tmp_path / "model.pt")
    starts = torch.arange(0, 40, 8)
    windows = centre_crop(video_windows(data.mouths, starts), 32, 64).float()
    mel = audio_windows(data.mel, starts)
    torch.testing.assert_close(expert(windows, mel), trained.expert(windows, mel))
    assert config["crop_height"] == 32 and config["n_mels"] == TINY.n_mels

    # As S3D-NeRF's discriminator: frozen weights, gradient reaching the rendered image through the crop.
    discriminator = frozen(expert)
    frames = torch.stack([torch.from_numpy(identities[0].processed.frames("frames").read(i)) for i in range(5)])
    images = frames.permute(0, 3, 1, 2).float().requires_grad_(True)
    boxes = torch.from_numpy(mouth_boxes(identities[0].image[:5], [(0, 5)], TINY.crop_scale))
    crops = crop_mouths(images, boxes, 32, 64)
    loss = sync_loss(discriminator, crops[None], audio_windows(data.mel, torch.tensor([0])))
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in discriminator.parameters())
