"""Frame archives against zipfile and cv2: the same bytes in, the same pixels out, nothing half-written."""

from __future__ import annotations

import pickle
import zipfile

import cv2
import numpy as np
import pytest

from talkhead_models.preprocess.frames import (
    FrameArchive, FrameArchiveWriter, FrameError, encode_image, open_frames, read_frames,
)


def images(count: int, channels: int = 3, size: int = 20) -> list[np.ndarray]:
    rng = np.random.default_rng(count)
    return [rng.integers(0, 256, (size, size, channels), dtype=np.uint8) for _ in range(count)]


def test_members_are_the_encoded_bytes_and_decode_like_cv2(tmp_path):
    frames = images(6)
    with FrameArchiveWriter(tmp_path / "gt_imgs.zip", ".jpg") as writer:
        for index in (3, 0, 5, 1, 4, 2):  # any order: the archive is read by index
            writer.add_image(index, frames[index])
    archive = FrameArchive(tmp_path / "gt_imgs.zip")
    assert len(archive) == 6 and archive.indices.tolist() == list(range(6)) and archive.contiguous_count() == 6
    with zipfile.ZipFile(tmp_path / "gt_imgs.zip") as independent:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in independent.infolist())
        for index in range(6):
            stored = independent.read(f"{index}.jpg")
            # what cv2.imwrite would have written at quality 95, byte for byte
            expected = cv2.imencode(".jpg", frames[index][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
            assert stored == expected == bytes(archive.encoded(index))
            decoded = cv2.imdecode(np.frombuffer(stored, np.uint8), cv2.IMREAD_COLOR)
            np.testing.assert_array_equal(archive.read(index, rgb=False), decoded)
            np.testing.assert_array_equal(archive.read(index), decoded[..., ::-1])


def test_png_kinds_keep_alpha_grey_and_palette_exactly(tmp_path):
    rgba, grey = images(1, 4)[0], images(2, 1)[0][..., 0]
    labels = (grey % 4).astype(np.uint8)
    palette = np.array([[255, 255, 255], [0, 0, 255], [0, 255, 0], [255, 0, 0]], np.uint8)
    with FrameArchiveWriter(tmp_path / "a.zip", ".png") as writer:
        writer.add_image(0, rgba)
        writer.add_image(1, grey, rgb=False)
        writer.add_image(2, labels, palette=palette)
    archive = open_frames(tmp_path / "a.zip")
    np.testing.assert_array_equal(archive.read(0, cv2.IMREAD_UNCHANGED), rgba)
    np.testing.assert_array_equal(archive.read(1, cv2.IMREAD_UNCHANGED, rgb=False), grey)
    np.testing.assert_array_equal(archive.read(2, cv2.IMREAD_COLOR), palette[labels])


def test_sparse_archives_name_missing_frames(tmp_path):
    with FrameArchiveWriter(tmp_path / "parsing.zip", ".png") as writer:
        for index in (2, 3, 7):
            writer.add(index, encode_image(np.zeros((4, 4), np.uint8), ".png", rgb=False))
    archive = FrameArchive(tmp_path / "parsing.zip")
    assert 3 in archive and 4 not in archive and archive.indices.tolist() == [2, 3, 7]
    with pytest.raises(FrameError, match=r"parsing.zip: no frame 4 .*2\.\.7"):
        archive.read(4)
    with pytest.raises(FrameError, match=r"not numbered 0\.\.2 \(missing e\.g\. \[0, 1, 4, 5, 6\]"):
        archive.contiguous_count()


def test_a_failed_staged_block_leaves_none_of_its_frames(tmp_path):
    frames = images(5)
    with FrameArchiveWriter(tmp_path / "ori_imgs.zip", ".jpg") as writer:
        with writer.staged():
            writer.add_image(0, frames[0])
            writer.add_image(1, frames[1])
        with pytest.raises(RuntimeError, match="recording failed"), writer.staged():
            writer.add_image(2, frames[2])
            raise RuntimeError("recording failed")
        with writer.staged():
            writer.add_image(2, frames[3])
    archive = FrameArchive(tmp_path / "ori_imgs.zip")
    assert archive.indices.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(archive.read(2), cv2.imdecode(np.frombuffer(
        encode_image(frames[3], ".jpg"), np.uint8), cv2.IMREAD_COLOR)[..., ::-1])


def test_the_same_frames_give_the_same_archive_bytes(tmp_path):
    for name in ("a.zip", "b.zip"):
        with FrameArchiveWriter(tmp_path / name, ".jpg") as writer:
            for index, frame in enumerate(images(3)):
                writer.add_image(index, frame)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()  # DVC sees no change on a rerun


def test_bad_archives_are_refused_with_the_fix(tmp_path):
    with zipfile.ZipFile(tmp_path / "deflated.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("0.jpg", encode_image(images(1)[0], ".jpg"))
    with pytest.raises(FrameError, match="compressed.*re-run"):
        FrameArchive(tmp_path / "deflated.zip")
    with zipfile.ZipFile(tmp_path / "stray.zip", "w") as archive:
        archive.writestr("0.jpg", b"x")
        archive.writestr("notes.txt", b"x")
    with pytest.raises(FrameError, match="members must be <index>"):
        FrameArchive(tmp_path / "stray.zip")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(FrameError, match="broken.zip: not a readable frame archive"):
        FrameArchive(tmp_path / "broken.zip")
    with pytest.raises(FrameError, match="missing.zip: frame archive not found"):
        open_frames(tmp_path / "missing.zip")


def test_streaming_and_pickling_read_the_same_frames(tmp_path):
    frames = images(12)
    with FrameArchiveWriter(tmp_path / "ori_imgs.zip", ".jpg") as writer:
        for index, frame in enumerate(frames):
            writer.add_image(index, frame)
    archive = FrameArchive(tmp_path / "ori_imgs.zip")
    order = [5, 0, 11, 3, 3, 7]
    streamed = list(read_frames(archive, order, workers=3, lookahead=2))
    for index, image in zip(order, streamed):
        np.testing.assert_array_equal(image, archive.read(index))
    copy = pickle.loads(pickle.dumps(archive))  # a DataLoader worker reopens the memory map
    np.testing.assert_array_equal(copy.read(11), archive.read(11))
