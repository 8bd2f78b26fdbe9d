"""The landmarks stage against the synthetic ground truth, and on frames without a face or with two faces."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from stages import landmarks
from talkhead_models.preprocess import dlib_face
from talkhead_models.preprocess.frames import FrameArchive, FrameArchiveWriter, FrameError, read_clips
from talkhead_models.preprocess.landmarks import (
    FAN_WEIGHTS, LandmarkError, LandmarksConfig, LandmarkSummary, fill_gaps, heatmap_points, smooth,
)
from tests.preprocess.conftest import DROPPED_RECORDING, GREY, blank, build_crop_folder

IDENTITIES = ("S001", "S002")


def truth_68(corpus: Path, clips: pd.DataFrame) -> np.ndarray:
    """Ground-truth 68 points of every processed frame (the fixtures' crops are 1:1 with the source)."""
    return np.concatenate([np.load(corpus / truth)["landmarks_2d_68"] for truth in clips.truth])


def nme(predicted: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per-frame NME normalised by the outer-eye-corner distance (points 36 and 45)."""
    ocular = np.linalg.norm(expected[:, 36] - expected[:, 45], axis=1)
    return np.linalg.norm(predicted - expected, axis=2).mean(axis=1) / ocular


def run_landmarks(base: Path, cfg: LandmarksConfig = LandmarksConfig()) -> dict[str, float]:
    return landmarks.run(cfg, {"crop": base / "crop"}, {"landmarks": base / "landmarks"}, identity=base.name).metrics


@pytest.mark.parametrize("identity", IDENTITIES)
def test_landmarks_match_ground_truth_and_er_nerf_layout(processed_root, landmarks_done, tiny_corpus, identity):
    base = processed_root / identity
    clips = pd.read_parquet(base / "crop" / "clips.parquet")
    out = base / "landmarks"
    points68 = np.load(out / "lms68.npy")
    points478 = np.load(out / "lms478.npy")
    detected = np.load(out / "detected.npy")
    n = len(FrameArchive(base / "crop" / "ori_imgs.zip"))

    assert points478.shape == (n, 478, 3) and points478.dtype == np.float32
    assert points68.shape == (n, 68, 2) and detected.shape == (n,) and detected.dtype == bool
    assert detected.mean() >= 0.99
    assert landmarks_done[identity]["detection_rate"] >= 0.99
    errors = nme(points68, truth_68(tiny_corpus, clips))
    assert errors.mean() < 0.05, errors.mean()
    assert np.percentile(errors, 95) < 0.08

    # A fixed set of files, whatever the frame count (ER-NeRF's per-frame .lms come from stages.export_ernerf).
    with_dlib = not dlib_face.unavailable()
    assert sorted(p.name for p in out.iterdir()) == ["detected.npy", "lms478.npy", "lms68.npy"] + \
        ["lms68_dlib.npy"] * with_dlib + ["manifest.json", "report.json", "usable.npy"]
    assert landmarks_done[identity]["dlib_points"] == float(with_dlib)
    if with_dlib:
        # dlib's points on FaceMesh's face box: as close to the truth as FaceMesh's inner face (the truth's jaw
        # line follows FaceMesh's topology, not iBUG's), and not FaceMesh's points copied.
        dlib68 = np.load(out / "lms68_dlib.npy")
        truth = truth_68(tiny_corpus, clips)
        ocular = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=1)
        inner_errors = np.linalg.norm(dlib68[:, 17:] - truth[:, 17:], axis=2).mean(axis=1) / ocular
        assert dlib68.shape == (n, 68, 2) and np.isfinite(dlib68).all()
        assert inner_errors.mean() < 0.06, inner_errors.mean()
        assert np.abs(dlib68 - points68).mean() > 0.2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "landmarks" and manifest["files"]["lms478.npy"]["shape"] == [n, 478, 3]
    assert manifest["params"]["backend"] == "mediapipe"


def test_frames_without_a_face_are_interpolated_flagged_and_long_gaps_reported(tmp_path, tiny_corpus, caplog):
    blanked = {(0, 10), (1, 0), *((4, k) for k in range(20, 36))}  # one frame, a recording's first, a 16-frame run
    base = tmp_path / "S001"
    clips = build_crop_folder(tiny_corpus, "S001", base / "crop",
                              edit=lambda r, k, frame: blank(frame) if (r, k) in blanked else frame)
    with caplog.at_level(logging.WARNING):
        metrics = run_landmarks(base)
    out = base / "landmarks"
    detected = np.load(out / "detected.npy")
    usable = np.load(out / "usable.npy")
    indices = sorted(int(clips.first_frame[r]) + k for r, k in blanked)
    assert not detected[indices].any() and detected.sum() == len(detected) - len(blanked)
    video_first = int(clips.first_frame[4])
    long_gap = np.arange(video_first + 20, video_first + 36)
    # The 16-frame gap (longer than long_gap_frames=12) is left out; the two single frames are kept.
    assert np.array_equal(np.flatnonzero(~usable), long_gap)
    assert metrics["gaps"] == 3 and metrics["long_gaps"] == 1 and metrics["longest_gap"] == 16
    assert metrics["interpolated_frames"] == len(blanked)
    assert metrics["excluded_frames"] == metrics["excluded_long_gap_frames"] == 16
    assert metrics["excluded_faceless_recording_frames"] == 0

    report = json.loads((out / "report.json").read_text())
    assert report["excluded_frames"] == 16
    assert report["long_gap_list"] == [{"clip": "video", "first_frame": video_first + 20,
                                        "last_frame": video_first + 35, "frames": 16}]
    assert any("frames" in r.message and "interpolated" in r.message for r in caplog.records
               if r.levelno == logging.WARNING)

    # Interpolated points follow the face: a single missing frame is as good as a detected one.
    errors = nme(np.load(out / "lms68.npy"), truth_68(tiny_corpus, clips))
    single = [int(clips.first_frame[0]) + 10, int(clips.first_frame[1])]
    assert errors[single].max() < 0.06
    assert np.isfinite(errors).all() and errors[indices].max() < 0.25
    assert usable[single].all()


def test_recording_without_any_face_is_dropped_and_reported(dropped_recording):
    clips = pd.read_parquet(dropped_recording / "crop" / "clips.parquet")
    out = dropped_recording / "landmarks"
    report = json.loads((out / "report.json").read_text())
    dropped = clips.iloc[DROPPED_RECORDING]
    assert report["dropped_clip_list"] == [dropped["clip"]] and report["dropped_clips"] == 1
    usable = np.load(out / "usable.npy")
    frames = np.arange(dropped["first_frame"], dropped["last_frame"] + 1)
    assert not usable[frames].any() and usable.sum() == len(usable) - len(frames)
    assert report["excluded_faceless_recording_frames"] == report["excluded_frames"] == len(frames)
    assert np.isnan(np.load(out / "lms478.npy")[frames]).all()
    assert usable[frames[-1] + 1]


def test_no_face_in_any_frame_is_a_clear_error(tmp_path):
    crop = tmp_path / "S009" / "crop"
    crop.mkdir(parents=True)
    with FrameArchiveWriter(crop / "ori_imgs.zip", ".jpg") as archive:
        for i in range(4):
            archive.add_image(i, np.full((96, 96, 3), GREY, np.uint8))
    pd.DataFrame([{"clip": "video", "kind": "video", "emotion": "neutral", "level": 1, "sentence": 0,
                   "first_frame": 0, "last_frame": 3, "source": "S009.mp4", "truth": None, "source_fps": 25.0,
                   "crop_x0": 0, "crop_y0": 0, "crop_size": 96, "image_size": 96}]).to_parquet(crop / "clips.parquet")
    with pytest.raises(LandmarkError, match="no face was found in any frame"):
        run_landmarks(tmp_path / "S009")
    assert not (tmp_path / "S009" / "landmarks").exists()
    assert not list((tmp_path / "S009").glob(".landmarks*"))


def test_two_faces_keep_the_subject_and_warn(tmp_path, tiny_corpus, caplog):
    """A mirrored, smaller copy of the speaker beside them: the largest face is tracked, with a warning."""
    top = 64

    def two_faces(recording: int, k: int, frame: np.ndarray) -> np.ndarray:
        canvas = np.full((320, 320, 3), GREY, np.uint8)
        canvas[top:top + 192, :192] = frame
        canvas[100:215, 200:315] = cv2.resize(np.ascontiguousarray(frame[:, ::-1]), (115, 115))
        return canvas

    base = tmp_path / "S001"
    clips = build_crop_folder(tiny_corpus, "S001", base / "crop", edit=two_faces)
    with caplog.at_level(logging.WARNING):
        metrics = run_landmarks(base)
    assert metrics["multi_face_frames"] > 0 and metrics["detection_rate"] >= 0.99
    assert any("more than one face" in r.message for r in caplog.records)
    report = json.loads((base / "landmarks" / "report.json").read_text())
    assert sorted(report["multi_face_clip_list"]) == sorted(clips["clip"])
    errors = nme(np.load(base / "landmarks" / "lms68.npy"), truth_68(tiny_corpus, clips) + [0, top])
    assert errors.mean() < 0.05 and errors.max() < 0.15


def test_fill_gaps_stays_within_each_recording():
    clips = pd.DataFrame({"clip": ["a", "b"], "first_frame": [0, 5], "last_frame": [4, 9]})
    values = np.arange(10, dtype=np.float32)[:, None] * 10
    detected = np.array([0, 1, 0, 1, 0, 1, 1, 0, 0, 0], bool)
    values[~detected] = np.nan
    summary = LandmarkSummary(frames=10)
    usable = fill_gaps([values], detected, clips, LandmarksConfig(long_gap_frames=2), summary)
    # Recording a: 0 held from 1, 2 halfway between 1 and 3, 4 held from 3 (not pulled towards frame 5).
    # Recording b: 7-9 held from 6.
    np.testing.assert_allclose(values[:, 0], [10, 10, 20, 30, 30, 50, 60, 60, 60, 60])
    # Only the 3-frame run is longer than long_gap_frames=2: interpolated all the same, but not usable.
    np.testing.assert_array_equal(usable, [1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    assert summary.excluded_frames == summary.long_gap_frames == 3 and summary.dropped_frames == 0
    assert [(g.clip, g.first, g.last) for g in summary.gaps] == [("a", 0, 0), ("a", 2, 2), ("a", 4, 4),
                                                                  ("b", 7, 9)]
    assert [(g.first, g.last) for g in summary.long_gaps] == [(7, 9)]


def test_smoothing_stays_within_each_recording():
    clips = pd.DataFrame({"clip": ["a", "b"], "first_frame": [0, 8], "last_frame": [7, 15]})
    base = np.repeat([0.0, 10.0], 8)
    jitter = np.where(np.arange(16) % 2, 1.0, -1.0)
    values = (base + jitter).astype(np.float32)[:, None]
    smooth([values], np.ones(16, bool), clips, sigma=2.0)
    residual = values[:, 0] - base
    assert np.abs(residual).max() < 0.5  # the jitter is smoothed away, and no step leaks across the boundary


def test_a_long_gap_at_a_recordings_start_is_smoothed_with_the_rest():
    """Only a dropped recording (no usable frame, NaN points) is left unsmoothed."""
    clips = pd.DataFrame({"clip": ["a", "b"], "first_frame": [0, 8], "last_frame": [7, 15]})
    jitter = np.where(np.arange(16) % 2, 1.0, -1.0).astype(np.float32)[:, None]
    values = jitter.copy()
    values[8:] = np.nan
    usable = np.ones(16, bool)
    usable[:3] = False  # a long gap opening recording a
    usable[8:] = False  # recording b dropped
    smooth([values], usable, clips, sigma=2.0)
    assert np.abs(values[:8]).max() < 0.5 and np.isnan(values[8:]).all()


def test_clip_table_must_cover_the_frames(tmp_path):
    path = tmp_path / "clips.parquet"
    row = {"clip": "x", "kind": "clip", "emotion": "neutral", "level": 1, "sentence": 1, "source": "x.mp4",
           "truth": None, "source_fps": 25.0, "crop_x0": 0, "crop_y0": 0, "crop_size": 64, "image_size": 64}
    pd.DataFrame([{**row, "first_frame": 0, "last_frame": 4}, {**row, "first_frame": 6, "last_frame": 9}]) \
        .to_parquet(path)
    with pytest.raises(FrameError, match="contiguously"):
        read_clips(path, 10)


def test_face_alignment_backend_needs_its_weights_file(tmp_path, monkeypatch, processed_root):
    monkeypatch.setenv("TALKHEAD_WEIGHTS", str(tmp_path))
    with pytest.raises(LandmarkError, match=FAN_WEIGHTS):
        landmarks.run(LandmarksConfig(backend="face_alignment"), {"crop": processed_root / "S001" / "crop"},
                      {"landmarks": tmp_path / "out"}, identity="S001")
    assert not (tmp_path / "out").exists()


def test_fan_heatmaps_map_back_through_the_crop():
    """Peaks a third of a pixel off the grid: a quarter-pixel step towards them, then the crop undone."""
    size, side, centre = 64, 160.0, np.array([100.0, 80.0])
    rows, cols = np.mgrid[:size, :size]
    peaks = np.array([[10.3, 20.0], [40.0, 33.7], [1.0, 62.0]])  # (x, y) in heatmap pixels
    heatmaps = np.stack([np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / 4.0) for x, y in peaks]).astype(np.float32)
    points = heatmap_points(heatmaps, centre, side / 200.0)
    expected_hm = np.array([[10.75, 20.5], [40.5, 34.25], [1.5, 62.5]])  # border peaks are not refined
    np.testing.assert_allclose(points, expected_hm * side / size + centre - side / 2, atol=1e-4)


@pytest.mark.skipif(not (Path(os.environ.get("TALKHEAD_WEIGHTS", "weights")) / FAN_WEIGHTS).is_file(),
                    reason=f"face-alignment weights ({FAN_WEIGHTS}) not in $TALKHEAD_WEIGHTS")
def test_fan_backend_with_released_weights_matches_ground_truth(processed_root, tiny_corpus, tmp_path):
    """ER-NeRF's landmark network on the first 20 frames (FAN is slow on a CPU)."""
    source = processed_root / "S001" / "crop"
    crop = tmp_path / "S001" / "crop"
    crop.mkdir(parents=True)
    with FrameArchiveWriter(crop / "ori_imgs.zip", ".jpg") as archive:
        for i in range(20):
            archive.add(i, bytes(FrameArchive(source / "ori_imgs.zip").encoded(i)))
    clips = pd.read_parquet(source / "clips.parquet").iloc[:1].assign(last_frame=19)
    clips.to_parquet(crop / "clips.parquet")
    run_landmarks(tmp_path / "S001", LandmarksConfig(backend="face_alignment"))
    expected = truth_68(tiny_corpus, clips)[:20]
    assert nme(np.load(tmp_path / "S001" / "landmarks" / "lms68.npy"), expected).mean() < 0.08
