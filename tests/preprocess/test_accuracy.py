"""The accuracy report: ground-truth mapping, the stage's files, and that its numbers can fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages import preprocess_report
from stages.preprocess_report import PreprocessReportConfig
from talkhead_models.data import DataConfig
from talkhead_models.preprocess import dlib_face, tracking_accuracy
from talkhead_models.preprocess.accuracy import RecordingTruth, iter_npz_frames, recording_truths


def run_report(tmp_path: Path, processed: Path, corpus: Path, identities: tuple[str, ...] = ()) -> dict:
    outputs = {"report": tmp_path / "reports" / "preprocess_accuracy.md",
               "metrics": tmp_path / "reports" / "preprocess_accuracy.json"}
    preprocess_report.run(PreprocessReportConfig(data=DataConfig(identities=identities)),
                          {"raw": corpus, "processed": processed}, outputs)
    return {"markdown": outputs["report"].read_text(), "json": json.loads(outputs["metrics"].read_text())}


def linked_identity(source: Path, target: Path, clips: pd.DataFrame | None = None,
                    lms68: np.ndarray | None = None) -> None:
    """A processed identity sharing ``source``'s frames and masks, with its own clip table or landmarks."""
    (target / "crop").mkdir(parents=True)
    (target / "crop" / "ori_imgs.zip").symlink_to(source / "crop" / "ori_imgs.zip")
    (clips if clips is not None else pd.read_parquet(source / "crop" / "clips.parquet")).to_parquet(
        target / "crop" / "clips.parquet")
    (target / "parse").symlink_to(source / "parse")
    shutil.copytree(source / "landmarks", target / "landmarks")
    if lms68 is not None:
        np.save(target / "landmarks" / "lms68.npy", lms68)


def test_report_meets_the_targets_on_the_tiny_corpus(processed_root, parse_done, tiny_corpus, tmp_path):
    result = run_report(tmp_path, processed_root, tiny_corpus)
    sections = result["json"]["sections"]
    for identity in ("S001", "S002", "overall"):
        assert sections["Landmarks"][identity]["nme68"] <= 0.05
        assert sections["Landmarks"][identity]["nme51"] <= 0.05
        assert sections["Landmarks"][identity]["detection_rate"] >= 0.99
        assert sections["Semantic parsing"][identity]["head_iou"] >= 0.9
    overall = sections["Landmarks"]["overall"]
    assert overall["frames"] == sections["Landmarks"]["S001"]["frames"] + sections["Landmarks"]["S002"]["frames"]
    assert all(t["met"] for t in result["json"]["targets"]) and len(result["json"]["targets"]) == 3
    markdown = result["markdown"]
    assert "# Preprocessing accuracy" in markdown and "| S002 |" in markdown and "| overall |" in markdown
    assert "**no**" not in markdown and "no ground truth" not in markdown


def test_identity_without_ground_truth_is_said_so(processed_root, parse_done, tiny_corpus, tmp_path):
    processed = tmp_path / "processed"
    clips = pd.read_parquet(processed_root / "S002" / "crop" / "clips.parquet").assign(truth=None)
    linked_identity(processed_root / "S002", processed / "V001", clips=clips)
    linked_identity(processed_root / "S001", processed / "S001")
    result = run_report(tmp_path, processed, tiny_corpus)
    assert result["json"]["ground_truth"] == {"S001": True, "V001": False}
    row = next(line for line in result["markdown"].splitlines() if line.startswith("| V001 |")
               and "%" in line)
    assert "no ground truth" in row and "100.00%" in row  # detection needs no truth
    landmarks = result["json"]["sections"]["Landmarks"]
    assert "nme68" not in landmarks["V001"] and landmarks["overall"]["nme68"] == landmarks["S001"]["nme68"]
    assert result["json"]["notes"]["Semantic parsing"]["V001"] == "no ground truth"


def test_wrong_landmarks_fail_the_target(processed_root, parse_done, tiny_corpus, tmp_path):
    """Landmarks shifted by a tenth of the inter-ocular distance must show as NME 0.1, target not met."""
    source = processed_root / "S001"
    lms68 = np.load(source / "landmarks" / "lms68.npy")
    ocular = np.linalg.norm(lms68[:, 36] - lms68[:, 45], axis=1)
    shifted = lms68 + np.stack([0.1 * ocular, np.zeros_like(ocular)], axis=1)[:, None, :]
    linked_identity(source, tmp_path / "processed" / "S001", lms68=shifted)
    result = run_report(tmp_path, tmp_path / "processed", tiny_corpus, identities=("S001",))
    nme = result["json"]["sections"]["Landmarks"]["S001"]["nme68"]
    assert 0.09 < nme < 0.13
    assert not next(t for t in result["json"]["targets"] if t["target"].startswith("nme68"))["met"]
    assert "**no**" in result["markdown"]


@pytest.mark.skipif(bool(dlib_face.unavailable()), reason=dlib_face.unavailable() or "")
def test_dlib_section_scores_dlib_and_facemesh_on_the_same_frames(processed_root, parse_done, tiny_corpus, tmp_path):
    """FaceMesh points moved by a tenth of the inter-ocular distance show in FaceMesh's column only; dlib's own
    points, found on the frames, stay within the 5% bar the landmarks stage is held to."""
    source = processed_root / "S001"
    lms68 = np.load(source / "landmarks" / "lms68.npy")
    ocular = np.linalg.norm(lms68[:, 36] - lms68[:, 45], axis=1)
    shifted = lms68 + np.stack([0.1 * ocular, np.zeros_like(ocular)], axis=1)[:, None, :]
    linked_identity(source, tmp_path / "processed" / "S001", lms68=shifted)
    plain = run_report(tmp_path / "plain", processed_root, tiny_corpus, identities=("S001",))
    moved = run_report(tmp_path / "moved", tmp_path / "processed", tiny_corpus, identities=("S001",))
    before = plain["json"]["sections"]["Landmarks: dlib beside FaceMesh"]["S001"]
    after = moved["json"]["sections"]["Landmarks: dlib beside FaceMesh"]["S001"]
    assert before["frames"] >= 4 and before["dlib_detection_rate"] == 1.0
    assert before["dlib_nme51"] < 0.05 and before["dlib_nme68"] < 0.08
    assert after["dlib_nme68"] == before["dlib_nme68"]
    assert 0.09 < after["facemesh_nme68"] < 0.13 and before["facemesh_nme68"] < 0.05
    assert "| S001 |" in plain["markdown"] and "Landmarks: dlib beside FaceMesh" in plain["markdown"]


def test_truth_mapping_follows_crop_box_and_frame_rate(tmp_path):
    truth = tmp_path / "t.npz"
    np.savez_compressed(truth, labels=np.zeros((3, 4, 4), np.uint8))
    clips = pd.DataFrame([{"clip": "c", "first_frame": 10, "last_frame": 19, "truth": "t.npz", "source_fps": 30.0,
                           "crop_x0": 10, "crop_y0": -20, "crop_size": 100, "image_size": 50},
                          {"clip": "v", "first_frame": 20, "last_frame": 29, "truth": None, "source_fps": 25.0,
                           "crop_x0": 0, "crop_y0": 0, "crop_size": 50, "image_size": 50}])
    (recording,) = recording_truths(clips, tmp_path)
    assert recording.frames.tolist() == list(range(10, 20))
    assert recording.source_frames.tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 10, 11]  # round(k / 25 * 30)
    np.testing.assert_allclose(recording.to_processed(np.array([[10.0, -20.0], [110.0, 80.0]])),
                               [[0, 0], [50, 50]])
    source = np.ones((60, 60), np.uint8)
    labels = recording.labels(source)
    assert labels.shape == (50, 50)
    # The box's rows -20..-1 lie above the source: background; its columns 10..59 are inside.
    assert (labels[:10] == 0).all() and (labels[10:40, :25] == 1).all() and (labels[:, 25:] == 0).all()
    with pytest.raises(FileNotFoundError, match="missing"):
        recording_truths(clips.assign(truth="gone.npz"), tmp_path)


def test_streamed_npz_frames_equal_np_load(tmp_path):
    array = np.random.default_rng(0).integers(0, 6, (7, 5, 6), dtype=np.uint8)
    np.savez_compressed(tmp_path / "t.npz", labels=array, other=np.arange(3))
    indices = [0, 0, 2, 5, 6, 9]
    frames = [frame.copy() for frame in iter_npz_frames(tmp_path / "t.npz", "labels", indices)]
    np.testing.assert_array_equal(np.stack(frames), array[np.minimum(indices, 6)])


def test_recording_truth_resizes_like_the_frames():
    recording = RecordingTruth("c", np.arange(1), np.arange(1), Path("unused"), 0.0, 0.0, 4.0, 8)
    source = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert recording.labels(source).shape == (8, 8)
    assert recording.labels(source)[7, 7] == 15


def _tracked_copy(tiny_corpus, tmp_path: Path, exact: bool) -> Path:
    """A processed root linking the tracked test corpus' identities, with emotion pairs added."""
    from tests.preprocess.test_pairing import run_pair
    from tests.preprocess.test_tracking import IDENTITIES, tracked_corpus

    source = tracked_corpus(str(tiny_corpus), exact=exact)
    root = tmp_path / ("exact" if exact else "facemesh")
    (root / "models").mkdir(parents=True)
    (root / "models" / "face_model").symlink_to(source / "models" / "face_model")
    for identity in IDENTITIES:
        for part in ("crop", "landmarks", "track"):
            (root / identity).mkdir(exist_ok=True)
            (root / identity / part).symlink_to(source / identity / part)
        run_pair(source, identity, root / identity / "pair")
    return root


def test_tracking_section_meets_the_bars_with_exact_landmarks(tiny_corpus, tmp_path):
    root = _tracked_copy(tiny_corpus, tmp_path, exact=True)
    summary, markdown = tracking_accuracy.report(root, tiny_corpus, root / "models" / "face_model",
                                                 ["S001", "S002"])
    targets = tracking_accuracy.targets(summary)
    assert [t["target"].split(" ")[0] for t in targets] == list(tracking_accuracy.BARS)
    assert all(t["met"] for t in targets), targets
    assert summary["all"]["rotation_median_deg"] == pytest.approx(
        np.median([summary[i]["rotation_median_deg"] for i in ("S001", "S002")]))
    assert summary["all"]["focal_error"] == max(abs(summary[i]["focal_error"]) for i in ("S001", "S002"))
    assert summary["S001"]["pairs"] == 2 and "| S002 " in markdown and "self-calibrated" in markdown
    assert "Rotation:" not in markdown and "Focal:" not in markdown  # nothing missed, nothing to explain


def test_tracking_section_explains_missed_bars_and_skips_untracked(tiny_corpus, tmp_path):
    root = _tracked_copy(tiny_corpus, tmp_path, exact=False)
    (root / "V001" / "landmarks").mkdir(parents=True)  # processed, not tracked yet
    summary, markdown = tracking_accuracy.report(root, tiny_corpus, root / "models" / "face_model",
                                                 ["S001", "S002", "V001"])
    assert summary["notes"] == {"V001": "not tracked"} and "V001" not in summary
    assert "- V001: not tracked" in markdown
    for identity in ("S001", "S002"):
        assert summary[identity]["reprojection_median_px_512"] <= 1.5
        assert summary[identity]["dtw_warp_error_frames"] <= 1.0
    # A missed rotation bar is explained exactly when some identity's landmark bound is above the bar too.
    above = [i for i in ("S001", "S002") if summary[i]["rotation_landmark_bound_deg"] > 1.0]
    missed = summary["all"]["rotation_median_deg"] > 1.0
    assert ("Rotation:" in markdown) == (missed and bool(above))
    if "Rotation:" in markdown:
        assert all(identity in markdown.split("Rotation:")[1].split("\n")[0] for identity in above)
    rows = {t["target"].split(" ")[0]: t for t in tracking_accuracy.targets(summary)}
    assert rows["rotation_median_deg"]["met"] == (not missed)


def test_report_stage_puts_tracking_bars_in_the_target_table():
    from stages.preprocess_report import ReportWithTracking
    from talkhead_models.preprocess.accuracy import Report

    tracking = {"S001": {"rotation_median_deg": 1.4}, "notes": {},
                "all": {"rotation_median_deg": 1.4, "focal_error": -0.02, "reprojection_median_px_512": 0.7}}
    report = ReportWithTracking.extend(Report(sections=(), identities=["S001"]), tracking, "## Tracking and pairing\n")
    rows = {t["target"]: t["met"] for t in report.to_json()["targets"]}
    assert rows == {"rotation_median_deg <= 1": False, "focal_error <= 0.05": True,
                    "reprojection_median_px_512 <= 1.5": True}
    markdown = report.to_markdown()
    assert "| Tracking and pairing | rotation_median_deg <= 1 | 1.4 | **no** |" in markdown
    assert markdown.rstrip().endswith("## Tracking and pairing") and report.to_json()["tracking"] == tracking
