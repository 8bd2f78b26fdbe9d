"""The identity reader on a flat folder with ER-NeRF's file names and on our staged layout."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from talkhead_models.data.arrays import NonFiniteError
from talkhead_models.data.identity_reader import IdentityError, open_identity
from talkhead_models.data.processed import CLIP_COLUMNS, SAMPLE_RATE
from talkhead_models.media import write_audio
from talkhead_models.preprocess.splits import split_table

N_FRAMES = 12
SIZE = 48


def write_frames(folder: Path, n_frames: int = N_FRAMES) -> None:
    """ER-NeRF's numbered folder, or with a ``.zip`` name our frame archive (written with zipfile)."""
    images = [cv2.imencode(".jpg", np.full((SIZE, SIZE, 3), 10 * i, np.uint8))[1].tobytes() for i in range(n_frames)]
    if folder.suffix == ".zip":
        folder.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(folder, "w", zipfile.ZIP_STORED) as archive:
            for i, data in enumerate(images):
                archive.writestr(f"{i}.jpg", data)
        return
    folder.mkdir(parents=True)
    for i, data in enumerate(images):
        (folder / f"{i}.jpg").write_bytes(data)


def tone(n_frames: int) -> np.ndarray:
    t = np.arange(n_frames * SAMPLE_RATE // 25) / SAMPLE_RATE
    return (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def transforms(ids: range) -> dict:
    return {"focal_len": 1200.0, "cx": SIZE / 2, "cy": SIZE / 2,
            "frames": [{"img_id": i, "aud_id": i, "transform_matrix": np.eye(4).tolist()} for i in ids]}


@pytest.fixture
def ernerf_folder(tmp_path) -> Path:
    """What ER-NeRF's data_utils/process.py leaves in data/<name>/ (the files the reader uses)."""
    root = tmp_path / "obama"
    write_frames(root / "ori_imgs")
    for i in range(N_FRAMES):
        np.savetxt(root / "ori_imgs" / f"{i}.lms", np.full((68, 2), float(i)), "%f")
    write_audio(root / "aud.wav", tone(N_FRAMES), SAMPLE_RATE)
    np.save(root / "aud_ds.npy", np.zeros((N_FRAMES, 16, 29), np.float32))
    np.save(root / "aud_hu.npy", np.zeros((N_FRAMES, 2, 1024), np.float32))
    (root / "transforms_train.json").write_text(json.dumps(transforms(range(0, 10))))
    (root / "transforms_val.json").write_text(json.dumps(transforms(range(10, N_FRAMES))))
    cv2.imwrite(str(root / "bc.jpg"), np.zeros((SIZE, SIZE, 3), np.uint8))
    (root / "obama.mp4").write_bytes(b"")
    return root


def test_flat_ernerf_folder_reads_as_a_processed_identity(ernerf_folder):
    identity = open_identity(ernerf_folder)
    assert identity.flat and identity.num_frames == N_FRAMES
    clips = identity.clips()
    assert tuple(clips.columns) == CLIP_COLUMNS and len(clips) == 1
    row = clips.iloc[0]
    assert (row.first_frame, row.last_frame, row.kind, row.source) == (0, N_FRAMES - 1, "video", "obama.mp4")
    assert (row.crop_size, row.image_size, row.source_fps) == (SIZE, SIZE, 25.0)
    audio = identity.audio()
    assert abs(len(audio) - N_FRAMES * 640) <= 1
    assert np.abs(audio).max() == pytest.approx(0.2, abs=0.01)
    assert identity.feature_kinds() == ["ds", "hu"]
    assert identity.audio_features("ds").shape == (N_FRAMES, 16, 29)
    assert identity.audio_features("hu").shape == (N_FRAMES, 2, 1024)
    assert identity.frame(3).shape == (SIZE, SIZE, 3) and identity.frame(3)[0, 0, 0] == pytest.approx(30, abs=2)
    np.testing.assert_allclose(identity.landmarks68(5), np.full((68, 2), 5.0))
    assert [f["img_id"] for f in identity.transforms("val")["frames"]] == [10, 11]
    with pytest.raises(IdentityError, match=r"aud_mel.npy not found \(present: \['ds', 'hu'\]\)"):
        identity.audio_features("mel")
    with pytest.raises(IdentityError, match="eye.npy not found"):
        identity.eye()


def test_cameras_merge_both_transforms_files_and_leave_untracked_frames_nan(ernerf_folder):
    train = transforms([0, 2, 4])
    train["frames"][1]["transform_matrix"] = (np.eye(4) * 2).tolist()
    (ernerf_folder / "transforms_train.json").write_text(json.dumps(train))
    (ernerf_folder / "transforms_val.json").write_text(json.dumps(transforms([10])))
    cameras = open_identity(ernerf_folder).cameras()
    assert cameras.c2w.shape == (N_FRAMES, 4, 4) and (cameras.focal, cameras.cx, cameras.cy) == (1200.0, 24.0, 24.0)
    assert [i for i in range(N_FRAMES) if cameras.has(i)] == [0, 2, 4, 10]
    np.testing.assert_array_equal(cameras.c2w[2], np.eye(4) * 2)
    for name in ("transforms_train.json", "transforms_val.json"):
        (ernerf_folder / name).unlink()
    with pytest.raises(IdentityError, match=r"transforms_train.json not found: no tracked cameras; run `python -m "
                                            r"stages.track --identity obama`"):
        open_identity(ernerf_folder).cameras()


def test_flat_folder_whose_transforms_name_missing_frames_is_an_error(ernerf_folder):
    (ernerf_folder / "transforms_val.json").write_text(json.dumps(transforms(range(10, N_FRAMES + 3))))
    with pytest.raises(IdentityError, match=f"names frame {N_FRAMES + 2} but ori_imgs/ has {N_FRAMES} frames"):
        open_identity(ernerf_folder).clips()


def test_staged_folder_reads_our_clip_table_and_features(tmp_path):
    root = tmp_path / "S001"
    write_frames(root / "crop" / "ori_imgs.zip")
    write_audio(root / "crop" / "aud.wav", tone(N_FRAMES), SAMPLE_RATE)
    rows = [
        {"clip": "neutral/level_1/001", "kind": "clip", "emotion": "neutral", "level": 1, "sentence": 1,
         "first_frame": 0, "last_frame": 4, "source": "S001/video/front/neutral/level_1/001.mp4", "truth": None,
         "source_fps": 30.0, "crop_x0": 10, "crop_y0": 0, "crop_size": 100, "image_size": SIZE},
        {"clip": "video", "kind": "video", "emotion": "neutral", "level": 1, "sentence": 0,
         "first_frame": 5, "last_frame": N_FRAMES - 1, "source": "videos/S001.mp4", "truth": None,
         "source_fps": 25.0, "crop_x0": 0, "crop_y0": 0, "crop_size": 100, "image_size": SIZE},
    ]
    pd.DataFrame(rows, columns=list(CLIP_COLUMNS)).to_parquet(root / "crop" / "clips.parquet", index=False)
    (root / "features").mkdir()
    np.save(root / "features" / "aud_mel.npy", np.ones((N_FRAMES, 16, 95), np.float32))
    np.save(root / "features" / "eye.npy", np.ones(N_FRAMES, np.float32))
    identity = open_identity(root)
    assert not identity.flat and identity.num_frames == N_FRAMES
    assert identity.clips()["clip"].tolist() == ["neutral/level_1/001", "video"]
    assert identity.audio_features("mel").shape == (N_FRAMES, 16, 95)
    assert identity.feature_kinds() == ["mel"]
    assert identity.eye().shape == (N_FRAMES,)
    (root / "crop" / "clips.parquet").unlink()
    with pytest.raises(IdentityError, match="clips.parquet not found; re-run the crop stage"):
        identity.clips()


def test_a_folder_without_frames_is_not_an_identity(tmp_path):
    with pytest.raises(IdentityError, match="is not a processed identity"):
        open_identity(tmp_path)


def test_frames_without_a_face_are_neither_trained_on_nor_scored(tmp_path):
    """12 frames, 8-11 held out by split.parquet; usable.npy flags 2-3 and 9 faceless."""
    root = tmp_path / "S001"
    write_frames(root / "crop" / "ori_imgs.zip")
    (root / "landmarks").mkdir()
    usable = np.ones(N_FRAMES, bool)
    usable[[2, 3, 9]] = False
    np.save(root / "landmarks" / "usable.npy", usable)
    (root / "split").mkdir()
    split_table([dict(identity="S001", role="self", audio_identity="S001", clip="video", kind="video",
                      emotion="neutral", level=1, sentence=0, start_s=0.32, end_s=0.48, first_frame=8, last_frame=11,
                      audio_source="S001.mp4")]).to_parquet(root / "split" / "split.parquet")
    identity = open_identity(root)
    assert identity.training_frames().tolist() == [0, 1, 4, 5, 6, 7]
    assert np.flatnonzero(identity.held_out_mask()).tolist() == [8, 9, 10, 11]
    assert np.flatnonzero(identity.validation_mask()).tolist() == [8, 10, 11]
    rows = identity.self_driven_rows()
    assert rows[["first_frame", "last_frame"]].values.tolist() == [[8, 8], [10, 11]]
    np.testing.assert_allclose(rows[["start_s", "end_s"]].values, [[0.32, 0.36], [0.40, 0.48]])

    usable[:8] = False
    np.save(root / "landmarks" / "usable.npy", usable)
    with pytest.raises(IdentityError, match="no frame outside the held-out ones has a face"):
        open_identity(root).training_frames()


def test_nan_in_a_flat_folders_lms_file_is_refused(ernerf_folder):
    np.savetxt(ernerf_folder / "ori_imgs" / "4.lms", np.full((68, 2), np.nan), "%f")
    with pytest.raises(NonFiniteError, match=r"4.lms: NaN or inf in the landmarks of frame 4; .*re-run the "
                                             r"ER-NeRF/RAD-NeRF preprocessing"):
        open_identity(ernerf_folder).landmarks68(4)


def test_staged_and_flat_frames_decode_the_same(tmp_path, ernerf_folder):
    write_frames(tmp_path / "S001" / "crop" / "ori_imgs.zip")
    staged, flat = open_identity(tmp_path / "S001"), open_identity(ernerf_folder)
    for index in (0, 5, N_FRAMES - 1):
        np.testing.assert_array_equal(staged.frame(index), flat.frame(index))
        np.testing.assert_array_equal(staged.frame(index), cv2.imread(str(ernerf_folder / "ori_imgs" / f"{index}.jpg"))[..., ::-1])


def test_the_earlier_per_frame_layout_is_refused_with_the_stage_to_rerun(tmp_path):
    write_frames(tmp_path / "S001" / "crop" / "ori_imgs")
    with pytest.raises(IdentityError, match=r"earlier per-frame layout.*dvc repro crop@S001"):
        open_identity(tmp_path / "S001")


def test_a_parse_image_missing_says_whether_the_frame_has_a_face(tmp_path):
    root = tmp_path / "S001"
    write_frames(root / "crop" / "ori_imgs.zip")
    (root / "landmarks").mkdir()
    usable = np.ones(N_FRAMES, bool)
    usable[5] = False
    np.save(root / "landmarks" / "usable.npy", usable)
    (root / "parse").mkdir()
    with zipfile.ZipFile(root / "parse" / "gt_imgs.zip", "w", zipfile.ZIP_STORED) as archive:
        for i in range(4):  # frames 0-3 only: 4 has a face but was not written, 5 has none
            archive.writestr(f"{i}.jpg", cv2.imencode(".jpg", np.full((SIZE, SIZE, 3), 10 * i, np.uint8))[1].tobytes())
    identity = open_identity(root)
    assert identity.gt_image(3).shape == (SIZE, SIZE, 3)
    with pytest.raises(IdentityError, match=r"gt_imgs.zip: no frame 5: it has no face"):
        identity.gt_image(5)
    with pytest.raises(IdentityError, match=r"frame 4 has a face \(usable.npy\) but is missing; .*dvc repro parse@S001"):
        identity.gt_image(4)
