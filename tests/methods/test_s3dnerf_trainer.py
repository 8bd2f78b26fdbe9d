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


def test_a2m_audio_of_a_training_segment_is_what_a_driving_of_it_gets_and_no_test_frame_has_any(
        tracked_root, untrained_audio2motion):
    cfg = dataclasses.replace(CFG, audio_motion=True, motion_window=3)
    frames, windows = training_windows(tracked_root, IDENTITIES, SplitConfig(), cfg)
    network = s3d_trainer.motion_network({"audio2motion": untrained_audio2motion}, torch.device("cpu"))
    motion, features = s3d_trainer.motion_audio(frames, windows, *network, cfg.motion_window)
    data = frames[0]
    assert features["S001"].shape == (len(data.audio), 3, 60)
    spans = windows.spans["S001"]
    inside = np.zeros(len(data.audio), bool)
    for first, last in spans:
        inside[first:last + 1] = True
    # the normaliser is pooled over the TRAIN frames: there the window's centre (the frame itself) has zero mean
    # per value and unit spread over all of them
    centre = features["S001"][inside, 1]
    assert np.abs(centre.mean(0)).max() < 1e-3 and centre.std() == pytest.approx(1.0, rel=1e-3)
    # no frame outside the TRAIN segments (every test frame among them) has a feature
    assert np.isin(held_out_frames(tracked_root)["S001"], np.flatnonzero(~inside)).all()
    assert not features["S001"][~inside].any()
    # a driving recording that is one TRAIN segment gets exactly the features training read for its frames
    first, last = max(spans, key=lambda span: span[1] - span[0])
    mel = np.asarray(data.reader.audio_features("mel")[first:last + 1])
    np.testing.assert_allclose(motion.recording(mel, own_voice=False), features["S001"][first:last + 1], atol=1e-5)
    with pytest.raises(FileNotFoundError, match="pretrain_audio2motion"):
        s3d_trainer.motion_network({}, torch.device("cpu"))


def test_a2m_audio_trains_and_renders_a_new_identity_from_its_image_and_audio(
        tracked_root, untrained_expert, untrained_audio2motion, tmp_path):
    cfg = dataclasses.replace(CFG, audio_motion=True, iterations=2)
    pretrained = {"sync_expert": untrained_expert, "audio2motion": untrained_audio2motion}
    train_s3dnerf(cfg, tracked_root, IDENTITIES, SplitConfig(), pretrained, tmp_path / "model")
    head = S3DNeRFHead(tmp_path / "model", tracked_root / "S001", pretrained=pretrained)
    frames = np.arange(10, 16)
    mel = np.asarray(head.data.reader.audio_features("mel")[frames])
    driving = type("Driving", (), {"frame_indices": frames, "audio_features": {"mel": mel}})()
    images = np.stack(list(head.render(driving, batch=4)))
    assert images.shape[0] == 6 and images.dtype == np.uint8
    # the features come from the driving's audio: another voice renders other frames
    louder = type("Driving", (), {"frame_indices": frames, "audio_features": {"mel": mel * 1.5 + 1.0}})()
    assert not np.array_equal(np.stack(list(head.render(louder, batch=4))), images)
    with pytest.raises(FileNotFoundError, match="pretrain_audio2motion"):
        S3DNeRFHead(tmp_path / "model", tracked_root / "S001")


def test_closed_mouth_sources_are_the_quarter_of_each_identity_s_sources_with_the_smallest_lip_gap(tracked_root):
    _, every = training_windows(tracked_root, IDENTITIES, SplitConfig(), CFG)
    frames, closed = training_windows(tracked_root, IDENTITIES, SplitConfig(),
                                      dataclasses.replace(CFG, closed_mouth_sources=True))
    points = frames[0].points68
    # by hand: the inner lips' gap (62 to 66) over the eye corners' distance (36 to 45), per candidate frame
    candidates = every.sources["S001"]
    gap = np.hypot(*(points[candidates, 66] - points[candidates, 62]).T)
    eyes = np.hypot(*(points[candidates, 45] - points[candidates, 36]).T)
    ratio = gap / eyes
    expected = candidates[ratio <= np.quantile(ratio, 0.25)]
    np.testing.assert_array_equal(closed.sources["S001"], expected)
    assert 0.2 * len(candidates) <= len(expected) <= 0.3 * len(candidates)
    # the targets' windows are every identity's windows still
    np.testing.assert_array_equal(closed.starts["S001"], every.starts["S001"])


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


@pytest.mark.parametrize("field,term,low,high", [("opacity_weight", "opacity", 0.01, 1.0),
                                                 ("coarse_weight", "coarse", 0.01, 1.0),
                                                 ("landmark_flow_weight", "landmark_flow", 0.01, 32.0 ** 2)])
def test_an_aid_loss_is_a_term_of_the_step_only_when_weighted(tracked_root, untrained_expert, field, term, low,
                                                               high):
    frames, windows = training_windows(tracked_root, IDENTITIES, SplitConfig(), CFG)
    for weight, present in ((0.0, False), (0.5, True)):
        cfg = dataclasses.replace(CFG, **{field: weight})
        losses = s3d_trainer.S3DNeRFTrainer(cfg, frames, windows, untrained_expert, torch.device("cpu")).step()
        assert (term in losses) is present
        if present:
            # the untrained render is far from the mask, the face and the source's landmarks: the term is not a
            # zero (the landmark flow's in squared pixels of the 32 px frame, below its diagonal's square)
            assert low < losses[term] < high


@pytest.mark.parametrize("opacity", [1.0, 0.5])
def test_the_landmark_flow_is_the_squared_pixel_distance_of_where_the_rays_land_to_the_source_landmarks(opacity):
    from talkhead_models.methods.s3dnerf.model import Rendered

    size, render = 32, 8
    # every ray lands 3 px (of the 32 px frame) right of its own pixel: a landing map affine in the pixel
    # position, which bilinear reads exactly between pixel centres
    centres = (torch.arange(render, dtype=torch.float32) + 0.5) * (2.0 / render) - 1.0
    rows, columns = torch.meshgrid(centres, centres, indexing="ij")
    landing = opacity * torch.stack([columns + 3 * 2.0 / size, rows])[None]  # premultiplied, like colours
    cover = torch.full((1, 1, render, render), opacity)
    rendered = Rendered(image=torch.zeros(1, 3, size, size), opacity=cover, coarse=torch.zeros(1, 3, render, render),
                        displacement=torch.zeros(1, 1), landing=landing, landing_opacity=cover)
    target = np.array([[[10.0, 12.0], [20.5, 17.25]]], np.float32)
    # the source's landmarks 1 px right and 2 px up of the target's: each lands (3, 0) - (1, -2) = (2, 2) px off
    source = target + np.array([1.0, -2.0], np.float32)
    loss = s3d_trainer.landmark_flow_loss(rendered, target, source, size)
    assert float(loss) == pytest.approx(2.0 ** 2 + 2.0 ** 2, abs=1e-4)


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
