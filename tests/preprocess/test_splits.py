"""Self-driven validation frames and cross-driven audio: one rule for track, pair and split."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages import split as split_stage
from talkhead_models.data import DataConfig
from talkhead_models.data.sources import Recording
from talkhead_models.preprocess.splits import (
    SPLIT_COLUMNS, SplitConfig, cross_rows, evaluation_mask, evaluation_ranges, held_out_sentences, split_table,
    usable_self_rows, validation_mask, validation_ranges, video_validation_start,
)
from tests.preprocess.test_tracking import tracked_corpus


def test_held_out_sentences_follow_jean_and_er_nerf():
    assert held_out_sentences(range(1, 85), 24 / 84) == set(range(61, 85))  # JEAN: 60 train, 24 validation
    assert held_out_sentences([3, 1, 2, 2], 24 / 84) == {3}
    assert held_out_sentences([1], 24 / 84) == set() and held_out_sentences([], 0.5) == set()
    assert held_out_sentences([1, 2], 0.9) == {2}  # always something left to train on
    for frames in (11, 100, 1591, 7500):
        assert video_validation_start(frames, 1 / 11) == int(frames * 10 / 11)  # ER-NeRF's split


def test_split_stage_agrees_with_the_track_stage(tiny_corpus, tmp_path):
    root = tracked_corpus(str(tiny_corpus))
    cfg = split_stage.SplitStageConfig(data=DataConfig(source="synthetic"))
    metrics = split_stage.run(cfg, {"crop": root / "S001" / "crop", "corpus": tiny_corpus},
                              {"split": tmp_path / "split"}, identity="S001").metrics
    table = pd.read_parquet(tmp_path / "split" / "split.parquet")
    assert list(table.columns) == list(SPLIT_COLUMNS)
    own = table[table["role"] == "self"]
    frames = np.concatenate([np.arange(r.first_frame, r.last_frame + 1) for r in own.itertuples(index=False)])
    val = json.loads((root / "S001" / "track" / "transforms_val.json").read_text())
    assert sorted(frames) == [f["img_id"] for f in val["frames"]]
    assert set(own["sentence"]) == {0, 2} and metrics["self_frames"] == len(frames)
    video = own[own["kind"] == "video"].iloc[0]
    assert video["end_s"] - video["start_s"] == pytest.approx((video["last_frame"] - video["first_frame"] + 1) / 25)
    cross = table[table["role"] == "cross"]
    assert set(cross["audio_identity"]) == {"S002"} and len(cross) == 3  # the video tail and sentence 2 twice
    assert (cross["first_frame"] == -1).all() and (cross["end_s"] > cross["start_s"]).all()
    assert cross["kind"].iloc[0] == "video" and set(cross.loc[cross["kind"] == "clip", "sentence"]) == {2}
    for source in cross["audio_source"]:
        assert (tiny_corpus / source).is_file()


def test_cross_sources_take_the_video_tail_then_one_emotion_after_another():
    def recording(clip: str, sentence: int, kind: str = "clip") -> Recording:
        emotion = "neutral" if kind == "video" else clip.split("/")[0]
        return Recording("B", clip, Path(f"/raw/B/{clip}.mp4"), None, emotion, 1 if kind == "video" else 3,
                         sentence, None)

    others = {"B": [recording(f"{e}/level_3/{s:03d}", s) for e in ("angry", "happy", "sad") for s in (1, 2, 3)]
              + [recording("video", 0, "video")]}
    asked = []

    def duration(path: Path) -> float:
        asked.append(path)
        return 11.0

    rows = cross_rows("A", others, duration, Path("/raw"), SplitConfig(val_sentence_fraction=0.3,
                                                                        cross_clips_per_identity=3))
    assert [r["clip"] for r in rows] == ["video", "angry/level_3/003", "happy/level_3/003"]
    assert rows[0]["start_s"] == pytest.approx(int(275 * 10 / 11) / 25) and rows[1]["start_s"] == 0.0
    assert len(asked) == 3 and rows[1]["audio_source"] == "B/angry/level_3/003.mp4"


def test_single_sentence_without_video_has_no_self_validation(tiny_corpus, tmp_path, caplog):
    clips = pd.read_parquet(tracked_corpus(str(tiny_corpus)) / "S001" / "crop" / "clips.parquet")
    first = clips[(clips["kind"] == "clip") & (clips["sentence"] == 1)]
    assert not validation_mask(first, int(first["last_frame"].max()) + 1, SplitConfig()).any()
    # One rule under two names: ER-NeRF's "validation" frames are the test frames evaluation scores.
    assert validation_mask is evaluation_mask and validation_ranges is evaluation_ranges
    (tmp_path / "crop").mkdir()
    first.to_parquet(tmp_path / "crop" / "clips.parquet", index=False)
    with caplog.at_level(logging.WARNING):
        split_stage.run(split_stage.SplitStageConfig(data=DataConfig(identities=("S001",))),
                        {"crop": tmp_path / "crop", "corpus": tiny_corpus}, {"split": tmp_path / "split"},
                        identity="S001")
    assert "no self-driven validation frames" in caplog.text and "no other identity" in caplog.text
    assert pd.read_parquet(tmp_path / "split" / "split.parquet").empty


def test_self_rows_are_cut_around_frames_without_a_face():
    """A 10-frame held-out row starting 2 s into its recording, with frames 13-15 and 19 faceless; a second row
    entirely faceless disappears; times move with the frames (25 fps)."""
    row = dict(identity="S001", role="self", audio_identity="S001", clip="sad/level_1/002", kind="clip",
               emotion="sad", level=1, sentence=2, audio_source="x.mp4")
    rows = split_table([{**row, "start_s": 2.0, "end_s": 2.4, "first_frame": 10, "last_frame": 19},
                        {**row, "start_s": 0.0, "end_s": 0.12, "first_frame": 20, "last_frame": 22}])
    usable = np.ones(30, bool)
    usable[[13, 14, 15, 19, 20, 21, 22]] = False
    cut = usable_self_rows(rows, usable)
    assert cut[["first_frame", "last_frame"]].values.tolist() == [[10, 12], [16, 18]]
    np.testing.assert_allclose(cut[["start_s", "end_s"]].values, [[2.0, 2.12], [2.24, 2.36]], atol=1e-12)
    assert (cut["clip"] == "sad/level_1/002").all() and cut.dtypes.equals(rows.dtypes)
    # With every frame usable the rows come back exactly.
    pd.testing.assert_frame_equal(usable_self_rows(rows, np.ones(30, bool)), rows)
