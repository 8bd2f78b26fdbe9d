"""S3D-NeRF's training across identities: the frames it reads (against the split tables read independently),
the held-out identity never opened, resume, and single-shot rendering of an identity from one image."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from talkhead_models.methods.s3dnerf import trainer as s3d_trainer
from talkhead_models.methods.s3dnerf.trainer import S3DNeRFHead, train_s3dnerf, training_windows
from talkhead_models.pretrained.datasets import SplitConfig
from talkhead_models.pretrained.sync_expert import SyncExpert, SyncExpertConfig, save_expert
from tests.methods.resume_fixtures import Killed, kill_at, ticking_clock
from tests.methods.test_s3dnerf_model import TINY
from tests.pretrained.test_leak import held_out_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = dataclasses.replace(TINY, perceptual_network="discriminator_features", iterations=4, batch_size=2,
                          sync_frames=5, warmup_steps=1, log_every=2, checkpoint_seconds=1.0)
IDENTITIES = ["S001", "S002"]


@pytest.fixture(scope="module")
def untrained_expert(tmp_path_factory):
    cfg = SyncExpertConfig(crop_height=32, crop_width=64, n_mels=40, channels=(8, 16, 32, 64), embedding_dim=16)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sync_expert")
    save_expert(SyncExpert(cfg.crop_height, cfg.crop_width, cfg.n_mels, cfg.channels, cfg.embedding_dim), cfg,
                folder / "model.pt")
    return folder


def test_training_reads_train_frames_of_the_training_identities_only(tracked_root):
    frames, windows = training_windows(tracked_root, IDENTITIES, SplitConfig(), CFG)
    # S002, the corpus-level held-out identity (the last one), is not even opened: it lacks the track stage here
    assert [f.name for f in frames] == ["S001"] and windows.holdout == "S002" and set(windows.starts) == {"S001"}
    read = np.union1d((windows.starts["S001"][:, None] + np.arange(CFG.sync_frames)).ravel(),
                      windows.sources["S001"])
    test = held_out_frames(tracked_root)["S001"]
    assert len(read) > 50 and len(test) > 0
    assert len(np.intersect1d(read, test)) == 0
    # every window's frames are consecutive frames of one recording
    clips = frames[0].reader.clips()
    for start in windows.starts["S001"]:
        owner = clips[(clips.first_frame <= start) & (clips.last_frame >= start)].iloc[0]
        assert start + CFG.sync_frames - 1 <= owner.last_frame


def test_no_window_or_source_holds_a_frame_without_landmarks(tracked_root, monkeypatch):
    _, unfiltered = training_windows(tracked_root, IDENTITIES, SplitConfig(), CFG)
    lost = set(unfiltered.sources["S001"][3::17].tolist())  # frames the landmarks stage found no face in
    has_face = s3d_trainer.IdentityFrames.has_face
    monkeypatch.setattr(s3d_trainer.IdentityFrames, "has_face",
                        lambda self, indices: has_face(self, indices) & ~np.isin(indices, list(lost)))
    _, windows = training_windows(tracked_root, IDENTITIES, SplitConfig(), CFG)
    starts, sources = windows.starts["S001"], windows.sources["S001"]
    assert len(lost) >= 3 and not lost & set(sources.tolist())
    assert len(sources) == len(unfiltered.sources["S001"]) - len(lost)
    for start in starts:  # brute force: every frame of every window
        assert not lost & set(range(int(start), int(start) + CFG.sync_frames))
    assert 0 < len(starts) < len(unfiltered.starts["S001"])


def test_a_killed_run_resumes_to_the_uninterrupted_weights_and_renders_an_identity_from_one_image(
        tracked_root, untrained_expert, tmp_path, monkeypatch):
    pretrained = {"sync_expert": untrained_expert}
    whole = train_s3dnerf(CFG, tracked_root, IDENTITIES, SplitConfig(), pretrained, tmp_path / "whole")
    assert whole["identities"] == ["S001"] and whole["held_out"] == "S002" and whole["iterations"] == 4
    ticking_clock(monkeypatch, s3d_trainer)
    with pytest.raises(Killed):
        train_s3dnerf(CFG, tracked_root, IDENTITIES, SplitConfig(), pretrained, tmp_path / "resumed",
                      log_metric=kill_at(2))
    train_s3dnerf(CFG, tracked_root, IDENTITIES, SplitConfig(), pretrained, tmp_path / "resumed")
    first = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["model"]
    second = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["model"]
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(second[key], first[key], atol=0, rtol=0, msg=key)

    head = S3DNeRFHead(tmp_path / "whole", tracked_root / "S001")
    assert head.source_frame == int(head.data.reader.training_frames()[0])
    frames = np.arange(10, 19)
    driving = type("Driving", (), {"frame_indices": frames,
                                   "audio_features": {"mel": head.data.audio[frames]}})()
    images = list(head.render(driving, batch=4))
    # rendered at CFG.image_size, handed out at the identity's frame size for scoring against its frames
    size = head.data.reader.frame(0).shape[0]
    assert len(images) == 9 and images[0].shape == (size, size, 3) and head.image_size == size
    assert images[0].dtype == np.uint8
    again = list(head.render(driving, batch=9))
    np.testing.assert_array_equal(np.stack(again), np.stack(images))


def test_the_mouth_weights_cover_the_lip_box_grown_by_half():
    from talkhead_models.methods.s3dnerf.trainer import mouth_weights

    lips = np.array([[[10.0, 20.0], [14.0, 24.0]]])  # a 4 x 4 px box: grown by 2 px on every side, 8..16 x 18..26
    weights = mouth_weights(lips, 32, 5.0, torch.device("cpu"))[0, 0].numpy()
    expected = np.ones((32, 32))
    expected[18:26, 8:16] = 5.0  # pixel centres 8.5..15.5 (columns) and 18.5..25.5 (rows)
    np.testing.assert_array_equal(weights, expected)


def test_the_head_mask_is_the_share_of_head_pixels_in_each_rendered_pixel(tracked_root):
    from talkhead_models.preprocess.parsing import HEAD_LABELS

    frames, _ = training_windows(tracked_root, IDENTITIES, SplitConfig(), CFG)
    data = frames[0]
    labels = data.reader.semantic(10)
    size = labels.shape[0]
    render = next(r for r in (32, 24, 16, 8) if size % r == 0)
    block = size // render
    # an independent block average of the head pixels (INTER_AREA at an integer factor is exactly that)
    head = np.isin(labels, HEAD_LABELS).astype(np.float64)
    expected = head.reshape(render, block, render, block).mean(axis=(1, 3))
    mask = data.head_mask(10, render)
    assert mask.shape == (render, render) and 0.05 < mask.mean() < 0.9
    np.testing.assert_allclose(mask, expected, atol=1e-6)


@pytest.mark.parametrize("field,term", [("opacity_weight", "opacity"), ("coarse_weight", "coarse")])
def test_an_aid_loss_is_a_term_of_the_step_only_when_weighted(tracked_root, untrained_expert, field, term):
    frames, windows = training_windows(tracked_root, IDENTITIES, SplitConfig(), CFG)
    for weight, present in ((0.0, False), (0.5, True)):
        cfg = dataclasses.replace(CFG, **{field: weight})
        losses = s3d_trainer.S3DNeRFTrainer(cfg, frames, windows, untrained_expert, torch.device("cpu")).step()
        assert (term in losses) is present
        if present:
            # the untrained render is far from the mask and the face: the term is not a zero
            assert 0.01 < losses[term] < 1.0


def test_the_source_shows_the_super_resolution_everything_but_the_convex_hull_of_its_landmarks(tracked_root):
    from scipy.spatial import Delaunay

    frames, windows = training_windows(tracked_root, IDENTITIES, SplitConfig(), CFG)
    data = frames[0]
    index = int(windows.sources["S001"][0])
    visible = data.source_visible(index, "outside_face")
    points = data.points68[index].astype(np.float64)
    # an independent point-in-hull test at the pixel centres (cv2 puts pixel i's centre at i)
    rows, columns = np.mgrid[:data.size, :data.size]
    inside = Delaunay(points).find_simplex(np.stack([columns.ravel(), rows.ravel()], -1)) >= 0
    expected = (~inside).reshape(data.size, data.size).astype(np.float32)
    assert set(np.unique(visible)) <= {0.0, 1.0} and 0.03 < 1 - expected.mean() < 0.6
    disagree = visible != expected
    # rasterisation may differ on the hull's edge pixels (cv2 hides the pixels its outline touches), only there
    edge = np.abs(cv2.dilate(expected, np.ones((3, 3))) - cv2.erode(expected, np.ones((3, 3)))) > 0
    assert disagree.sum() <= 0.5 * edge.sum() and not (disagree & ~edge).any()
    np.testing.assert_array_equal(data.source_visible(index, "full"), np.ones_like(visible))
