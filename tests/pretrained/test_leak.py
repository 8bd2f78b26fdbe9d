"""No test frame reaches a corpus-level model: not its training, not its validation, not its normalisers.

The test frames are derived here from the split tables and clip tables alone
(not with the code under test): a split.parquet row names a recording of its
``audio_identity``; a clip named there is test data in every frame, the long
video from the row's start on. Two checks:

* the frame ranges the datasets hand to the loaders (``segment_table``'s
  training and validation segments, and the stretches the sync expert's
  sampler actually draws) contain none of them;
* changing every test frame's inputs on disk (landmarks, audio features, the
  image) and in memory (log-mel) changes nothing the models compute: the
  trained weights, every loss, every validation score and the per-face
  adaptations are bit for bit those of the unchanged corpus. Whatever reads a
  test frame, however indirectly, breaks that.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from talkhead_models.pretrained import sync_expert
from talkhead_models.pretrained.audio2motion import (
    Audio2MotionConfig, adapt_to_face, evaluate_recordings, motion_data, speaker_mean, train_audio2motion,
    video_adaptations,
)
from talkhead_models.pretrained.datasets import HELDOUT, TRAIN, SplitConfig, load_corpus, segment_table
from talkhead_models.pretrained.sync_expert import (
    MEL_PER_FRAME, SyncExpertConfig, score_recordings, sync_data, torch_threads, train_sync_expert,
)
from tests.frame_archives import read_member, replace_frames

SPLIT = SplitConfig(holdout_sentences=1)
SYNC = SyncExpertConfig(crop_height=32, crop_width=64, n_mels=40, channels=(8, 16, 32, 64), embedding_dim=32,
                        steps=4, spans=3, anchors_per_span=4, max_negative_offset=8, eval_every=2, threads=1)
MOTION = Audio2MotionConfig(hidden=16, audio_dim=8, identity_dim=4, steps=4, batch_size=4, sequence_frames=16,
                            eval_every=2, context_frames=31, context_dim=4, threads=1)


def held_out_frames(root: Path) -> dict[str, np.ndarray]:
    """Per identity folder under ``root``, the sorted test frames its own and the other split tables name."""
    names = sorted(p.name for p in root.iterdir() if (p / "split" / "split.parquet").is_file())
    clips = {name: pd.read_parquet(root / name / "crop" / "clips.parquet") for name in names}
    frames: dict[str, set[int]] = {name: set() for name in names}
    for name in names:
        for row in pd.read_parquet(root / name / "split" / "split.parquet").to_dict("records"):
            owner = row["audio_identity"]
            recording = clips[owner][clips[owner]["clip"] == row["clip"]].iloc[0]
            first, last = int(recording["first_frame"]), int(recording["last_frame"])
            if row["kind"] == "clip":
                frames[owner].update(range(first, last + 1))
            else:
                begin = first + math.floor(row["start_s"] * 25 + 1e-6)
                frames[owner].update(range(begin, last + 1))
    return {name: np.array(sorted(found), np.int64) for name, found in frames.items()}


def global_test_frames(root: Path, segments: pd.DataFrame) -> np.ndarray:
    """The test frames as indices into the arrays concatenated over the identities of ``segments``."""
    offsets = segments.groupby("identity").start.min()
    return np.concatenate([offsets[name] + frames for name, frames in held_out_frames(root).items()])


def frames_of(segments: pd.DataFrame, splits) -> np.ndarray:
    rows = segments[segments.split.isin(splits)]
    return np.concatenate([np.arange(a, b) for a, b in zip(rows.start, rows.stop)])


@pytest.fixture(scope="module")
def poisoned_root(processed_truth, tmp_path_factory) -> Path:
    """A copy of the processed identities whose test frames have other landmarks, features and images."""
    root = tmp_path_factory.mktemp("poisoned")
    rng = np.random.default_rng(0)
    for name, frames in held_out_frames(processed_truth).items():
        shutil.copytree(processed_truth / name, root / name)
        lms = np.load(root / name / "landmarks" / "lms478.npy")
        lms[frames] += rng.normal(0, 4, lms[frames].shape).astype(np.float32)
        np.save(root / name / "landmarks" / "lms478.npy", lms)
        features = np.load(root / name / "features" / "aud_mel.npy")
        features[frames] = rng.normal(0, 1, features[frames].shape).astype(np.float32)
        np.save(root / name / "features" / "aud_mel.npy", features)
        archive = root / name / "crop" / "ori_imgs.zip"
        shape = read_member(archive, int(frames[0])).shape
        replace_frames(archive, {int(index): rng.integers(0, 256, shape, dtype=np.uint8) for index in frames})
    return root


def test_the_fixture_has_test_frames_of_every_kind(processed_truth):
    frames = held_out_frames(processed_truth)
    for name, found in frames.items():
        clips = pd.read_parquet(processed_truth / name / "crop" / "clips.parquet")
        kinds = {clips.kind[(clips.first_frame <= f) & (clips.last_frame >= f)].iloc[0] for f in found}
        assert kinds == {"clip", "video"}, name


def test_loaders_are_handed_no_test_frame(processed_truth, monkeypatch):
    identities = load_corpus(processed_truth)
    segments = segment_table(identities, SPLIT)
    test = global_test_frames(processed_truth, segments)
    train, validation = frames_of(segments, [TRAIN]), frames_of(segments, HELDOUT)
    assert len(train) and len(validation) and len(test)
    assert not np.intersect1d(train, test).size and not np.intersect1d(validation, test).size
    # Every non-test frame is used for something: the split leaves out nothing else.
    assert len(train) + len(validation) + len(test) == segments.stop.max()

    # The stretches the sync expert's sampler draws, in training and in validation.
    drawn = []
    original = sync_expert._span_contrast

    def recording(expert, mouths, mel, spans, cfg, rng):
        drawn.append(np.asarray(spans))
        return original(expert, mouths, mel, spans, cfg, rng)

    monkeypatch.setattr(sync_expert, "_span_contrast", recording)
    data = sync_data(identities, segments, SYNC)
    with torch_threads(1):
        train_sync_expert(SYNC, data)
    span = 2 * SYNC.max_negative_offset + 5
    read = np.unique(np.concatenate([s[:, None] + np.arange(span) for s in drawn]))
    # Every training step, and at steps 2 and 4 eight validation draws from each held-out split.
    assert len(drawn) == SYNC.steps + 2 * len(HELDOUT) * 8
    assert not np.intersect1d(read, test).size


def _sync_run(root: Path, poison_mel: bool) -> dict:
    identities = load_corpus(root)
    segments = segment_table(identities, SPLIT)
    data = sync_data(identities, segments, SYNC)
    if poison_mel:  # the waveform is shared; its log-mel rows of the test frames are changed here instead
        rows = (MEL_PER_FRAME * global_test_frames(root, segments)[:, None] + np.arange(MEL_PER_FRAME)).ravel()
        data.mel[rows] = torch.randn(len(rows), data.mel.shape[1], generator=torch.Generator().manual_seed(1))
    with torch_threads(1):
        trained = train_sync_expert(SYNC, data)
        scores = score_recordings(trained.expert, data, SYNC)
    return {"state": trained.expert.state_dict(), "history": trained.history, "validation": trained.validation,
            "scores": scores}


def _motion_run(root: Path) -> dict:
    identities = load_corpus(root)
    data = motion_data(identities, segment_table(identities, SPLIT), "mel")
    with torch_threads(1):
        trained = train_audio2motion(MOTION, data)
        adaptations = video_adaptations(trained.model, data)
        scores = evaluate_recordings(trained.model, data, adaptations=adaptations)
        # A method's adaptation to its face (R2-Talker's motion_adaptation): fitted on the training frames.
        face = identities[0]
        training = np.setdiff1d(np.arange(len(face.image)), held_out_frames(root)[face.identity])
        features = np.load(face.processed.audio_features("mel"))
        face_fit = adapt_to_face(trained.model, features, speaker_mean(features[training]), face.neutral.shape,
                                 face.canonical, list(zip(face.clips.first_frame, face.clips.last_frame + 1)),
                                 training)
    return {"state": trained.model.state_dict(), "history": trained.history, "validation": trained.validation,
            "scores": scores, "speaker_mean": data.speaker_mean, "neutral": data.neutral,
            "adaptations": {k: (a.gain, a.offset) for k, a in adaptations.items()},
            "face": (face_fit.gain, face_fit.offset)}


def _assert_same(clean: dict, poisoned: dict) -> None:
    for key, value in clean.items():
        other = poisoned[key]
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, other, check_exact=True, obj=key)
        elif isinstance(value, list):
            assert value == other, key
        else:
            torch.testing.assert_close(other, value, rtol=0, atol=0, msg=key)


def test_sync_expert_computes_nothing_from_a_test_frame(processed_truth, poisoned_root):
    clean = _sync_run(processed_truth, poison_mel=False)
    assert len(clean["scores"]) and clean["scores"].other_lse_c.notna().all()
    _assert_same(clean, _sync_run(poisoned_root, poison_mel=True))


def test_audio2motion_and_its_adaptations_compute_nothing_from_a_test_frame(processed_truth, poisoned_root):
    clean = _motion_run(processed_truth)
    assert len(clean["scores"]) and clean["scores"].adapted_mouth_error.notna().all()
    _assert_same(clean, _motion_run(poisoned_root))
