"""The held-out split and the landmark loading of the corpus-level models."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from talkhead_models.pretrained.canonical import RIGID_ANCHORS
from talkhead_models.pretrained.datasets import (
    HELDOUT_IDENTITY, HELDOUT_SENTENCE, TRAIN, PretrainDataError, SplitConfig, load_identity,
    processed_identities, segment_table,
)


@pytest.fixture(scope="module")
def identities(processed_truth):
    return [load_identity(p) for p in processed_identities(processed_truth)]


def test_split_holds_out_the_last_identity_and_the_last_sentence(identities):
    segments = segment_table(identities, SplitConfig())
    assert set(segments[segments.identity == "S002"].split) == {HELDOUT_IDENTITY}
    s001 = segments[segments.identity == "S001"]
    held = s001[s001.split == HELDOUT_SENTENCE]
    assert set(held.sentence) == {2} and set(held.kind) == {"clip"} and set(held.emotion) == {"neutral", "sad"}
    train = s001[s001.split == TRAIN]
    assert set(train.sentence) == {0, 1} and set(train[train.sentence == 0].kind) == {"video"}
    # Global frame ranges tile the concatenated identities without gaps.
    np.testing.assert_array_equal(segments.start.to_numpy()[1:], segments.stop.to_numpy()[:-1])
    assert segments.stop.iloc[-1] == sum(len(i.image) for i in identities)


def test_split_follows_the_params(identities):
    segments = segment_table(identities, SplitConfig(holdout_identity="S001", holdout_sentences=0))
    assert set(segments[segments.identity == "S001"].split) == {HELDOUT_IDENTITY}
    assert set(segments[segments.identity == "S002"].split) == {TRAIN}
    with pytest.raises(PretrainDataError, match="S009"):
        segment_table(identities, SplitConfig(holdout_identity="S009"))


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
