"""DTW pairing of one sentence across emotions, against the exact time warp of the synthetic speech."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages import pair as pair_stage
from talkhead_models.preprocess.pairing import (
    PairConfig, build_sequences, dtw_path, eligible_clips, matched_frames, pair_clips,
)
from talkhead_models.preprocess.tracking_accuracy import phones_of, warp_error
from tests.preprocess.test_tracking import IDENTITIES, tracked_corpus


def run_pair(root: Path, identity: str, out: Path, cfg: PairConfig = PairConfig()):
    base = root / identity
    return pair_stage.run(cfg, {"crop": base / "crop", "landmarks": base / "landmarks", "track": base / "track",
                                "face_model": root / "models" / "face_model"}, {"pair": out}, identity=identity)


def warp_errors(root: Path, identity: str, pair_dir: Path, corpus: Path) -> list[float]:
    clips = pd.read_parquet(root / identity / "crop" / "clips.parquet")
    truth = dict(zip(clips["clip"], clips["truth"]))
    errors = []
    for row in pd.read_parquet(pair_dir / "pairs.parquet").itertuples(index=False):
        path = np.load(pair_dir / "aligned.npz")[row.path] - [row.first_frame_a, row.first_frame_b]
        errors.append(warp_error(path, row.last_frame_a - row.first_frame_a + 1,
                                 phones_of(corpus / truth[row.clip_a]), phones_of(corpus / truth[row.clip_b])))
    return errors


@pytest.mark.parametrize("feature, bar", [("expression", 1.0), ("landmarks", 1.5)])
def test_dtw_recovers_the_true_time_warp(tiny_corpus, tmp_path, feature, bar):
    root = tracked_corpus(str(tiny_corpus))
    for identity in IDENTITIES:
        out = tmp_path / identity / "pair"
        metrics = run_pair(root, identity, out, PairConfig(feature=feature)).metrics
        pairs = pd.read_parquet(out / "pairs.parquet")
        assert metrics["pairs"] == len(pairs) == 2  # two sentences, neutral with sad
        assert set(pairs["split"]) == {"train", "val"}
        assert pairs.loc[pairs["split"] == "val", "sentence"].tolist() == [2]
        for row in pairs.itertuples(index=False):
            path = np.load(out / "aligned.npz")[row.path]
            assert path.dtype == np.int32 and path.shape == (row.path_length, 2)
            assert tuple(path[0]) == (row.first_frame_a, row.first_frame_b)
            assert tuple(path[-1]) == (row.last_frame_a, row.last_frame_b)
            assert (np.diff(path, axis=0) >= 0).all()
        errors = warp_errors(root, identity, out, tiny_corpus)
        assert np.mean(errors) <= bar, errors


def test_dtw_path_recovers_a_known_warp():
    rng = np.random.default_rng(0)
    signal = np.cumsum(rng.normal(size=(400, 3)), axis=0)
    times_b = np.arange(120)
    warp = times_b * 99 / 119 + 5.0 * np.sin(np.pi * times_b / 119)  # frame of a shown at each frame of b
    a = signal[np.arange(100) * 2]
    b = np.stack([np.interp(warp * 2, np.arange(400), signal[:, d]) for d in range(3)], axis=1)
    path, cost = dtw_path(b, a)
    assert cost >= 0 and np.abs(matched_frames(path, 120) - warp).mean() < 1.0


def test_sentence_without_a_partner_emotion_is_skipped_with_a_warning(tiny_corpus, caplog):
    root = tracked_corpus(str(tiny_corpus))
    clips = pd.read_parquet(root / "S001" / "crop" / "clips.parquet")
    lonely = clips[~((clips["emotion"] == "sad") & (clips["sentence"] == 2))]
    with caplog.at_level(logging.WARNING):
        result = pair_clips("S001", lonely, lambda first, last: np.zeros((last - first + 1, 2)), "expression",
                            PairConfig())
    assert result.unpaired_sentences == [2] and result.pairs["sentence"].tolist() == [1]
    assert "no partner emotion" in caplog.text


def test_emotion_features_fall_back_to_expression_without_weights(tiny_corpus, tmp_path, caplog):
    root = tracked_corpus(str(tiny_corpus))
    with caplog.at_level(logging.WARNING):
        run_pair(root, "S001", tmp_path / "pair", PairConfig(feature="emotion"))
    assert "emotion.npy not found" in caplog.text
    assert set(pd.read_parquet(tmp_path / "pair" / "pairs.parquet")["feature"]) == {"expression"}
    with pytest.raises(ValueError, match="pair.feature 'mouth' unknown"):
        run_pair(root, "S001", tmp_path / "other", PairConfig(feature="mouth"))
    assert not (tmp_path / "other").exists()


def test_sequences_concatenate_one_emotion_and_leave_out_inconsistent_clips(tiny_corpus):
    root = tracked_corpus(str(tiny_corpus))
    clips = pd.read_parquet(root / "S001" / "crop" / "clips.parquet")
    n_frames = int(clips["last_frame"].max()) + 1
    rotations = np.repeat(np.eye(3)[None], n_frames, axis=0)
    depth = np.full(n_frames, 7.0)
    far = clips[(clips["emotion"] == "neutral") & (clips["sentence"] == 1)].iloc[0]
    depth[far.first_frame:far.last_frame + 1] = 9.0  # a clip filmed from further away (another zoom)
    sequences = build_sequences("S001", clips, rotations, depth, PairConfig(sequence_frames=10))
    members = [clip for listed in sequences["clips"] for clip in listed]
    assert far["clip"] not in members
    assert sorted(members) == sorted(set(eligible_clips(clips, PairConfig())["clip"]) - {far["clip"]})
    for row in sequences.itertuples(index=False):
        assert {clip.split("/")[0] for clip in row.clips} == {row.emotion}
        assert row.frames == sum(last - first + 1 for first, last in zip(row.first_frames, row.last_frames))
    long = build_sequences("S001", clips, rotations, np.full(n_frames, 7.0), PairConfig(sequence_frames=10_000))
    assert len(long) == 4  # neutral and sad, each train and validation: one sequence apiece


def test_identity_without_clips_gets_empty_tables(tiny_corpus, tmp_path):
    root = tracked_corpus(str(tiny_corpus))
    base = tmp_path / "S001"
    for folder in ("crop", "landmarks", "track"):
        (base / folder).mkdir(parents=True)
        for file in (root / "S001" / folder).iterdir():
            (base / folder / file.name).write_bytes(file.read_bytes())
    clips = pd.read_parquet(base / "crop" / "clips.parquet")
    video = clips[clips["kind"] == "video"]
    assert video["last_frame"].iloc[0] == clips["last_frame"].max()
    video.to_parquet(base / "crop" / "clips.parquet", index=False)
    result = pair_stage.run(PairConfig(), {"crop": base / "crop", "landmarks": base / "landmarks",
                                           "track": base / "track", "face_model": root / "models" / "face_model"},
                            {"pair": base / "pair"}, identity="S001")
    assert result.metrics["pairs"] == 0
    assert pd.read_parquet(base / "pair" / "pairs.parquet").empty
    assert pd.read_parquet(base / "pair" / "sequences.parquet").empty
