"""The corpus-level models' split (train / validation / test) and the landmark loading."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from talkhead_models.pretrained.canonical import RIGID_ANCHORS
from talkhead_models.pretrained.datasets import (
    HELDOUT_IDENTITY, HELDOUT_SENTENCE, TEST, TRAIN, PretrainDataError, SplitConfig, evaluation_masks, load_corpus,
    load_identity, processed_identities, segment_table,
)


@pytest.fixture(scope="module")
def identities(processed_truth):
    return load_corpus(processed_truth)


def _ranges(segments: pd.DataFrame, identity: str, split: str) -> set[tuple[str, int, int]]:
    rows = segments[(segments.identity == identity) & (segments.split == split)]
    return {(r.clip, int(r.first_frame), int(r.last_frame)) for r in rows.itertuples()}


def test_split_leaves_the_test_frames_out_and_validates_on_the_rest(identities):
    segments = segment_table(identities, SplitConfig())
    for data in identities:
        clips = data.clips
        video = clips[clips.kind == "video"].iloc[0]
        length = video.last_frame - video.first_frame + 1
        cut = video.first_frame + int(length * 10 / 11)  # ER-NeRF's split of the long video: the tail is test
        # The tiny corpus has clip sentences 1 and 2: 24/84 of two sentences rounds to one, sentence 2 is test.
        test = {(r.clip, r.first_frame, r.last_frame) for r in clips[clips.sentence == 2].itertuples()}
        test.add(("video", cut, video.last_frame))
        assert _ranges(segments, data.identity, TEST) == test
        rest = {(r.clip, r.first_frame, r.last_frame) for r in clips[(clips.kind == "clip")
                                                                     & (clips.sentence == 1)].itertuples()}
        head = ("video", video.first_frame, cut - 1)
        if data.identity == "S002":  # the held-out identity validates on all its non-test frames
            assert _ranges(segments, "S002", HELDOUT_IDENTITY) == rest | {head}
            assert not _ranges(segments, "S002", TRAIN)
        else:  # the highest non-test sentence validates, the video up to its test start trains
            assert _ranges(segments, "S001", HELDOUT_SENTENCE) == rest
            assert _ranges(segments, "S001", TRAIN) == {head}
    # Global frame ranges tile the concatenated identities without gaps.
    np.testing.assert_array_equal(segments.start.to_numpy()[1:], segments.stop.to_numpy()[:-1])
    assert segments.stop.iloc[-1] == sum(len(i.image) for i in identities)


def test_split_follows_the_params(identities):
    segments = segment_table(identities, SplitConfig(holdout_identity="S001", holdout_sentences=0))
    assert set(segments[segments.identity == "S001"].split) == {HELDOUT_IDENTITY, TEST}
    s002 = segments[segments.identity == "S002"]
    assert set(s002.split) == {TRAIN, TEST} and set(s002[s002.split == TRAIN].sentence) == {0, 1}
    with pytest.raises(PretrainDataError, match="S009"):
        segment_table(identities, SplitConfig(holdout_identity="S009"))


def test_test_frames_come_from_every_split_table_and_bind_the_canonical_frame(processed_truth, tmp_path):
    # Another identity's table naming a recording of S001 as cross-driven audio makes it S001's test data too.
    for name in ("S001", "S002"):
        shutil.copytree(processed_truth / name, tmp_path / name)
    table = pd.read_parquet(tmp_path / "S002" / "split" / "split.parquet")
    clips = pd.read_parquet(tmp_path / "S001" / "crop" / "clips.parquet")
    extra = clips[(clips.kind == "clip") & (clips.sentence == 1)].iloc[0]
    row = table[table.role == "cross"].iloc[-1].copy()
    row[["audio_identity", "clip", "kind", "start_s", "end_s"]] = ["S001", extra["clip"], "clip", 0.5, 0.6]
    pd.concat([table, row.to_frame().T.astype(table.dtypes)]).to_parquet(tmp_path / "S002" / "split" /
                                                                        "split.parquet", index=False)
    folders = processed_identities(tmp_path)
    masks = evaluation_masks(folders)
    assert masks["S001"][extra.first_frame:extra.last_frame + 1].all()  # the whole clip, not 0.5-0.6 s of it
    own = load_identity(folders[0], test=evaluation_masks(folders[:1])["S001"])
    with pytest.raises(PretrainDataError, match="test frames"):
        segment_table([own, load_identity(folders[1])], SplitConfig())
    corpus = load_corpus(tmp_path)
    segments = segment_table(corpus, SplitConfig())
    assert _ranges(segments, "S001", TEST) >= {(extra["clip"], extra.first_frame, extra.last_frame)}
    # The neutral shape and the pose fit never see a test frame: changing the test frames' landmarks changes
    # nothing else.
    lms = np.load(tmp_path / "S001" / "landmarks" / "lms478.npy")
    lms[masks["S001"]] += np.random.default_rng(0).normal(0, 3, lms[masks["S001"]].shape).astype(np.float32)
    np.save(tmp_path / "S001" / "landmarks" / "lms478.npy", lms)
    moved = load_corpus(tmp_path)[0]
    keep = ~masks["S001"]
    np.testing.assert_array_equal(moved.neutral.shape, corpus[0].neutral.shape)
    np.testing.assert_array_equal(moved.canonical[keep], corpus[0].canonical[keep])


def test_without_a_split_table_the_models_refuse_to_train(processed_truth, tmp_path):
    for name in ("S001", "S002"):
        shutil.copytree(processed_truth / name, tmp_path / name, ignore=shutil.ignore_patterns("split"))
    with pytest.raises(PretrainDataError, match=r"dvc repro split@S00\d"):
        load_corpus(tmp_path)


def test_canonical_landmarks_of_the_truth_have_no_pose_left(identities):
    for data in identities:
        rigid = data.canonical[:, RIGID_ANCHORS]
        # The rig's skull points are rigid: after the pose is removed they sit on the neutral shape.
        residual = np.linalg.norm(rigid - data.neutral.shape[RIGID_ANCHORS], axis=-1)
        assert residual.mean() < 0.01, data.identity
        assert 10 < data.neutral.pixels_per_unit < 100


def test_missing_landmarks_name_the_stage_to_run(processed_truth, tmp_path):
    copy = tmp_path / "S001"
    shutil.copytree(processed_truth / "S001" / "crop", copy / "crop")
    with pytest.raises(PretrainDataError, match="landmarks stage"):
        load_identity(processed_identities(tmp_path, ["S001"])[0])
    with pytest.raises(PretrainDataError, match="S404"):
        processed_identities(tmp_path, ["S404"])
