"""ER-NeRF's data folder in and out: what the import derives, the round trip, an ER-NeRF-style reader of the export,
and the refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from talkhead_models import face_topology as topo
from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.data.processed import CLIP_COLUMNS
from talkhead_models.interop.ernerf import (AU45, ErnerfError, ImportConfig, au45_from_eye, export_ernerf,
                                            eye_from_au45, import_ernerf, openface_table, openface_text,
                                            read_openface, semantic_from_parsing)
from talkhead_models.preprocess.parsing import PARSING_BGR
from talkhead_models.preprocess.splits import SPLIT_COLUMNS
from tests.interop.conftest import IDENTITY

SUBFOLDERS = ("crop", "landmarks", "parse", "features", "track", "split")
TALKING_GAUSSIAN_AUS = (" AU01_r", " AU04_r", " AU05_r", " AU06_r", " AU07_r", " AU25_r", " AU45_r")


# ---------------------------------------------------------------------------------------------------------------
# An ER-NeRF-style reader, written for this test from ER-NeRF's nerf_triplane/provider.py conventions (not ours)


def read_like_ernerf(root: Path, split: str, asr: str = "ds") -> dict[str, np.ndarray]:
    """The frames of ``transforms_<split>.json`` read as ER-NeRF's NeRFDataset reads them.

    Image size from cx, cy (H = 2 int(cy)); ``gt_imgs/<img_id>.jpg`` and ``bc.jpg`` by cv2, BGR -> RGB;
    ``torso_imgs/<img_id>.png`` unchanged (4 channels), BGRA -> RGBA; ``ori_imgs/<img_id>.lms`` by np.loadtxt, [68, 2]
    (x, y), the face rectangle from its rows and columns; eye = clip(au.csv[' AU45_r'][img_id], 0, 2) / 2;
    ``aud_<asr>.npy[min(aud_id, N - 1)]``; the poses as stored. Plus data_utils/process.py's parsing head mask
    (the decoded triple (255, 0, 0)) and TalkingGaussian's action-unit columns.
    """
    transform = json.loads((root / f"transforms_{split}.json").read_text())
    height, width = int(transform["cy"]) * 2, int(transform["cx"]) * 2
    table = pd.read_csv(root / "au.csv")
    blink = table[" AU45_r"].values
    au_exp = table[list(TALKING_GAUSSIAN_AUS)].to_numpy(np.float32)
    features = np.load(root / f"aud_{asr}.npy")
    background = cv2.cvtColor(cv2.imread(str(root / "bc.jpg"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    assert background.shape == (height, width, 3)
    out: dict[str, list] = {key: [] for key in ("images", "torso", "lms", "face_rect", "eye", "auds", "poses",
                                                "head", "au_exp")}
    for frame in transform["frames"]:
        img_id = frame["img_id"]
        image = cv2.imread(str(root / "gt_imgs" / f"{img_id}.jpg"), cv2.IMREAD_UNCHANGED)
        out["images"].append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        torso = cv2.imread(str(root / "torso_imgs" / f"{img_id}.png"), cv2.IMREAD_UNCHANGED)
        assert torso.shape == (height, width, 4)
        out["torso"].append(cv2.cvtColor(torso, cv2.COLOR_BGRA2RGBA))
        lms = np.loadtxt(root / "ori_imgs" / f"{img_id}.lms")
        assert lms.shape == (68, 2)
        out["lms"].append(lms)
        out["face_rect"].append([int(lms[:, 1].min()), int(lms[:, 1].max()), int(lms[:, 0].min()),
                                 int(lms[:, 0].max())])
        out["eye"].append(np.clip(blink[img_id], 0, 2) / 2)
        out["au_exp"].append(au_exp[img_id])
        out["auds"].append(features[min(frame["aud_id"], features.shape[0] - 1)])
        out["poses"].append(np.array(frame["transform_matrix"], np.float32))
        seg = cv2.imread(str(root / "parsing" / f"{img_id}.png"))
        out["head"].append((seg[..., 0] == 255) & (seg[..., 1] == 0) & (seg[..., 2] == 0))
    result = {key: np.asarray(value) for key, value in out.items()}
    result["intrinsics"] = np.array([transform["focal_len"], transform["focal_len"], transform["cx"], transform["cy"]])
    result["background"] = background
    return result


# ---------------------------------------------------------------------------------------------------------------
# Import


def test_the_import_is_a_staged_identity_with_every_subfolder_and_manifest(ernerf_case):
    root, truth = ernerf_case.identity, ernerf_case.truth
    for name in SUBFOLDERS:
        manifest = json.loads((root / name / "manifest.json").read_text())
        assert manifest["stage"] == "import_ernerf" and manifest["params"]["source_folder"]
    reader = IdentityReader(root)
    n = truth.n_frames
    assert not reader.flat and reader.num_frames == n
    for index in (0, 17, n - 1):
        assert bytes(reader.frames().encoded(index)) == (ernerf_case.folder / "ori_imgs" / f"{index}.jpg").read_bytes()
    clips = reader.clips()
    assert tuple(clips.columns) == CLIP_COLUMNS and len(clips) == 1
    assert clips.iloc[0][["clip", "kind", "first_frame", "last_frame", "image_size", "source_fps"]].tolist() == \
        ["video", "video", 0, n - 1, truth.size, 25.0]
    assert reader.feature_kinds() == ["ds", "eo", "hu", "mel"]
    assert reader.audio_features("ds").shape == (n, 16, 29) and reader.audio_features("mel").shape == (n, 16, 95)
    assert reader.audio_features("hu").shape == (n, 2, 1024)


def test_the_478_points_come_from_facemesh_and_the_68_from_the_lms_files(ernerf_case):
    reader = IdentityReader(ernerf_case.identity)
    landmarks = reader.landmarks()
    n = ernerf_case.truth.n_frames
    assert landmarks.points478.shape == (n, 478, 3) and np.isfinite(landmarks.points478).all()
    assert landmarks.detected.all() and landmarks.usable.all()
    lms = np.stack([np.loadtxt(ernerf_case.folder / "ori_imgs" / f"{i}.lms") for i in range(n)])
    np.testing.assert_allclose(landmarks.points68, lms, atol=1e-5)
    # FaceMesh's own iBUG-68 vertices land near the .lms points (a 128 px face).
    error = np.linalg.norm(topo.to_68(np.asarray(landmarks.points478))[..., :2] - lms, axis=-1)
    assert np.median(error) < 3.0
    report = json.loads((ernerf_case.identity / "landmarks" / "report.json").read_text())
    assert report["excluded_by_reason"] == {"no_lms": [], "no_camera": [], "no_parse": [], "facemesh_long_gaps": []}


def test_eye_openness_is_one_minus_ernerfs_clipped_au45(ernerf_case):
    eye = IdentityReader(ernerf_case.identity).eye()
    np.testing.assert_allclose(eye, 1 - np.clip(ernerf_case.truth.au45, 0, 2) / 2, atol=1e-7)
    assert eye.min() == 0.0 and eye.max() == 1.0  # the fixture blinks fully (AU45 2.5) and opens fully


def test_split_holds_transforms_val_frames_as_self_driven_test_frames(ernerf_case):
    reader = IdentityReader(ernerf_case.identity)
    truth = ernerf_case.truth
    table = reader.split()
    assert tuple(table.columns) == SPLIT_COLUMNS and (table["role"] == "self").all()
    row = table.iloc[0]
    assert len(table) == 1 and (row.first_frame, row.last_frame) == (truth.val_start, truth.n_frames - 1)
    assert (row.start_s, row.end_s) == pytest.approx((truth.val_start / 25, truth.n_frames / 25))
    assert reader.training_frames().tolist() == list(range(truth.val_start))
    assert np.flatnonzero(reader.validation_mask()).tolist() == list(range(truth.val_start, truth.n_frames))
    assert reader.self_driven_rows()[["first_frame", "last_frame"]].values.tolist() == \
        [[truth.val_start, truth.n_frames - 1]]
    cameras = reader.cameras()
    assert all(cameras.has(i) for i in range(truth.n_frames)) and cameras.focal == pytest.approx(truth.focal)


def test_semantic_labels_come_from_the_parsing_colours_with_lips_from_the_lms(ernerf_case):
    reader = IdentityReader(ernerf_case.identity)
    seen = set()
    for index in range(0, ernerf_case.truth.n_frames, 6):
        labels = reader.semantic(index)
        colours = reader.parsing_colours(index)
        seen |= set(np.unique(labels).tolist())
        head = np.all(colours == PARSING_BGR[1], axis=-1)
        assert (np.isin(labels, (1, 4, 5)) == head).all()  # lips and mouth only inside ER-NeRF's head
        for label in (0, 2, 3):
            assert (labels[np.all(colours == PARSING_BGR[label], axis=-1)] == label).all()
    assert seen == {0, 1, 2, 3, 4, 5}
    # TalkingGaussian's grey mouth is the mouth interior.
    colours = np.full((8, 8, 3), 255, np.uint8)
    colours[2:6, 2:6] = PARSING_BGR[1]
    colours[3:5, 3:5] = 100
    assert (semantic_from_parsing(colours)[3:5, 3:5] == 5).all()


# ---------------------------------------------------------------------------------------------------------------
# Round trip and an ER-NeRF-style reader of the export


def test_import_then_export_gives_back_the_same_files(ernerf_case):
    original, exported = ernerf_case.folder, ernerf_case.exported
    names = sorted(p.relative_to(original).as_posix() for p in original.rglob("*") if p.is_file())
    back = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert set(names) <= back and back - set(names) == {"aud_mel.npy", "README_talkhead.txt"}
    for name in names:
        if name.endswith(".lms"):
            np.testing.assert_allclose(np.loadtxt(exported / name), np.loadtxt(original / name), atol=1e-5,
                                       err_msg=name)
        elif name == "track_params.pt":
            before, after = (torch.load(root / name, weights_only=True) for root in (original, exported))
            assert before.keys() == after.keys()
            assert all(torch.equal(before[key], after[key]) for key in before)
        else:  # images, audio, features, transforms and au.csv: byte for byte
            assert (exported / name).read_bytes() == (original / name).read_bytes(), name
    au45 = pd.read_csv(exported / "au.csv")[" AU45_r"].to_numpy()
    np.testing.assert_allclose(np.clip(au45, 0, 2), np.clip(ernerf_case.truth.au45, 0, 2), atol=1e-6)


@pytest.mark.parametrize("split", ["train", "val"])
def test_an_ernerf_style_reader_reads_the_export_as_it_reads_the_original(ernerf_case, split):
    original = read_like_ernerf(ernerf_case.folder, split)
    exported = read_like_ernerf(ernerf_case.exported, split)
    assert original.keys() == exported.keys()
    for key, value in original.items():
        if key == "lms":
            np.testing.assert_allclose(exported[key], value, atol=1e-5)
        else:
            np.testing.assert_array_equal(exported[key], value, err_msg=key)
    frames = len(original["images"])
    assert frames == (ernerf_case.truth.val_start if split == "train" else
                      ernerf_case.truth.n_frames - ernerf_case.truth.val_start)
    assert original["head"].any(axis=(1, 2)).all() and (original["torso"][..., 3] > 0).any()


def test_an_edited_eye_is_written_into_the_kept_openface_table(ernerf_case, tmp_path):
    identity = tmp_path / IDENTITY
    shutil.copytree(ernerf_case.identity, identity)
    eye = np.load(identity / "features" / "eye.npy")
    eye[3] = 0.25
    np.save(identity / "features" / "eye.npy", eye)
    summary = export_ernerf(identity, tmp_path / "out")
    assert summary.au_csv == "rewritten"
    before, after = pd.read_csv(ernerf_case.folder / "au.csv"), pd.read_csv(tmp_path / "out" / "au.csv")
    assert list(after.columns) == list(before.columns)
    expected = before[" AU45_r"].to_numpy().copy()
    expected[3] = 1.5
    np.testing.assert_allclose(after[" AU45_r"], expected, atol=1e-6)
    np.testing.assert_allclose(after[" AU25_r"], before[" AU25_r"], atol=1e-6)


def test_au45_and_eye_openness_map_into_each_other():
    au45 = np.array([0.0, 0.3, 1.0, 1.99, 2.0, 3.7])
    eye = eye_from_au45(au45)
    np.testing.assert_allclose(eye, [1.0, 0.85, 0.5, 0.005, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(au45_from_eye(eye), np.clip(au45, 0, 2), atol=1e-6)
    assert au45_from_eye(np.array([1.3]))[0] == 0.0  # wider open than usual is open


def test_a_generated_openface_table_reads_as_openfaces(tmp_path):
    eye = np.array([1.0, 0.5, 0.0], np.float32)
    (tmp_path / "au.csv").write_text(openface_text(openface_table(eye, np.array([True, True, False]))))
    table = pd.read_csv(tmp_path / "au.csv")
    assert list(table.columns[:5]) == ["frame", " face_id", " timestamp", " confidence", " success"]
    assert set(TALKING_GAUSSIAN_AUS) <= set(table.columns)
    np.testing.assert_allclose(table[" AU45_r"], [0.0, 1.0, 2.0])
    assert table[" success"].tolist() == [1, 1, 0] and table["frame"].tolist() == [1, 2, 3]
    assert AU45 in read_openface(tmp_path / "au.csv").columns


# ---------------------------------------------------------------------------------------------------------------
# Incomplete folders


def copy_folder(ernerf_case, tmp_path) -> Path:
    folder = tmp_path / IDENTITY
    shutil.copytree(ernerf_case.folder, folder)
    return folder


@pytest.mark.parametrize("remove, message", [
    ("aud.wav", r"aud.wav not found; run ER-NeRF's .*--task 1"),
    ("transforms_val.json", r"transforms_val.json not found; run ER-NeRF's .*--task 8.*--task 9"),
    ("ori_imgs/*.lms", r"no <i>.lms landmark files; run ER-NeRF's .*--task 7"),
    ("gt_imgs", r"gt_imgs/ not found \(the folder has the other parse outputs\); run ER-NeRF's .*--task 6"),
    ("bc.jpg", r"bc.jpg not found; run ER-NeRF's .*--task 5"),
    ("ori_imgs/7.jpg", r"frames are not numbered 0..46 \(missing e.g. \[7\]\)"),
    ("ori_imgs", r"ori_imgs: frame folder not found"),
])
def test_a_folder_missing_an_essential_file_is_refused_naming_it_and_the_fix(ernerf_case, tmp_path, remove, message):
    folder = copy_folder(ernerf_case, tmp_path)
    for path in folder.glob(remove):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    target = tmp_path / "processed" / IDENTITY
    with pytest.raises(ErnerfError, match=message):
        import_ernerf(folder, target, ImportConfig(audio_kinds=()))
    assert not target.exists() and not target.parent.exists()  # refused before anything is written


def test_damaged_files_are_refused(ernerf_case, tmp_path):
    folder = copy_folder(ernerf_case, tmp_path)
    target = tmp_path / "processed" / IDENTITY
    transforms = json.loads((folder / "transforms_val.json").read_text())
    transforms["frames"][-1]["img_id"] = 60
    (folder / "transforms_val.json").write_text(json.dumps(transforms))
    with pytest.raises(ErnerfError, match="transforms_val.json names frame 60 but ori_imgs/ has 48 frames"):
        import_ernerf(folder, target)
    shutil.copyfile(ernerf_case.folder / "transforms_val.json", folder / "transforms_val.json")
    (folder / "ori_imgs" / "4.lms").write_text("1 2\n3 4\n")
    with pytest.raises(ErnerfError, match=r"4.lms: 2 lines of 2 numbers, expected 68 lines"):
        import_ernerf(folder, target)
    with pytest.raises(ErnerfError, match=r"exists; import under another --identity, or pass --force"):
        import_ernerf(ernerf_case.folder, ernerf_case.identity)


def test_frames_without_lms_camera_or_torso_are_left_out_and_au_less_folders_get_the_eye_from_facemesh(
        ernerf_case, tmp_path):
    folder = copy_folder(ernerf_case, tmp_path)
    (folder / "ori_imgs" / "5.lms").unlink()
    (folder / "torso_imgs" / "9.png").unlink()
    (folder / "au.csv").unlink()
    transforms = json.loads((folder / "transforms_train.json").read_text())
    transforms["frames"] = [f for f in transforms["frames"] if f["img_id"] != 7]
    (folder / "transforms_train.json").write_text(json.dumps(transforms))
    identity = tmp_path / "processed" / IDENTITY
    summary = import_ernerf(folder, identity, ImportConfig(audio_kinds=()))
    assert summary.excluded == {"no_lms": [5], "no_camera": [7], "no_parse": [9], "facemesh_long_gaps": []}
    assert summary.features == ["ds", "eo", "hu"] and "FaceMesh" in summary.eye_source
    reader = IdentityReader(identity)
    assert np.flatnonzero(~reader.usable_mask()).tolist() == [5, 7, 9]
    assert 5 not in reader.training_frames() and 9 not in reader.frames("torso")
    landmarks = reader.landmarks()
    assert np.isfinite(landmarks.points68[5]).all() and not landmarks.detected[5]  # FaceMesh's 68 stand in
    eye = reader.eye()
    assert np.isfinite(eye).all() and eye.shape == (ernerf_case.truth.n_frames,)

    out = tmp_path / "out"
    summary = export_ernerf(identity, out)
    assert not (out / "ori_imgs" / "5.lms").exists() and (out / "ori_imgs" / "7.lms").is_file()
    assert not (out / "torso_imgs" / "9.png").exists() and summary.au_csv == "generated"
    table = pd.read_csv(out / "au.csv")
    assert set(TALKING_GAUSSIAN_AUS) <= set(table.columns) and len(table) == ernerf_case.truth.n_frames
    np.testing.assert_allclose(table[" AU45_r"], au45_from_eye(eye), atol=1e-5)
    assert "AU01-AU07" in (out / "README_talkhead.txt").read_text()


def test_the_command_lines(ernerf_case, tmp_path):
    from stages import export_ernerf as export_cli
    from stages import import_ernerf as import_cli

    processed = ernerf_case.identity.parent
    assert import_cli.main([str(ernerf_case.folder), "--processed", str(processed)]) == 1  # exists, no --force
    out = tmp_path / "exported"
    assert export_cli.main(["--identity", IDENTITY, "--processed", str(processed), str(out)]) == 0
    assert (out / "ori_imgs" / "0.jpg").is_file() and (out / "transforms_val.json").is_file()
    assert export_cli.main(["--identity", IDENTITY, "--processed", str(processed), str(out)]) == 1  # not empty
    assert export_cli.main(["--identity", "../x", "--processed", str(processed), str(tmp_path / "x")]) == 1
    # --force replaces a whole identity: nothing of the old one stays, nothing half-written is left beside it.
    other = tmp_path / "processed"
    shutil.copytree(ernerf_case.identity, other / IDENTITY)
    assert import_cli.main([str(ernerf_case.folder), "--identity", IDENTITY, "--processed", str(other), "--force",
                            "--audio-kinds", ""]) == 0
    assert IdentityReader(other / IDENTITY).feature_kinds() == ["ds", "eo", "hu"]
    assert sorted(p.name for p in other.iterdir()) == [IDENTITY]
