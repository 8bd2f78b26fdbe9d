"""Bad input to the crop stage: each case is a clear error naming the file, or a documented recovery;
never a half-written output."""

from __future__ import annotations

import logging
import shutil
import subprocess
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages import crop
from talkhead_models.config import ConfigError
from talkhead_models.data import DataConfig
from talkhead_models.data.processed import FPS, SAMPLE_RATE
from talkhead_models.media import ffmpeg_exe, iter_frames, read_audio
from talkhead_models.preprocess import video
from talkhead_models.preprocess.video import BadRecordingError, CropConfig

IMAGE_SIZE = 128


def ffmpeg(*args: str | Path) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


def config(source: str = "videos", **overrides) -> CropConfig:
    return CropConfig(image_size=IMAGE_SIZE, data=DataConfig(source=source), **overrides)


def run_crop(raw: Path, out: Path, source: str = "videos", **overrides) -> pd.DataFrame:
    crop.run(config(source, **overrides), {"raw": raw}, {"crop": out}, identity="S001")
    return pd.read_parquet(out / "clips.parquet")


def assert_no_output(out: Path) -> None:
    """Neither the output folder nor a temporary one beside it."""
    assert not out.exists()
    if out.parent.exists():
        assert not list(out.parent.glob(f".{out.name}.*"))


@pytest.fixture
def long_video(tiny_corpus) -> Path:
    return tiny_corpus / "videos" / "S001.mp4"


@pytest.fixture
def raw(tmp_path) -> Path:
    """A ``videos`` source root (``<ID>.mp4``) to put one bad file in."""
    root = tmp_path / "raw"
    root.mkdir()
    return root


@pytest.fixture
def mead(tiny_corpus, tmp_path) -> Path:
    """A ``mead`` source root with S001's two neutral clips (video and separate audio)."""
    root = tmp_path / "mead"
    for part in ("video/front/neutral", "audio/neutral"):
        shutil.copytree(tiny_corpus / "S001" / part, root / "S001" / part)
    return root


MEAD_CLIP = Path("S001/video/front/neutral/level_1/002.mp4")


@pytest.mark.parametrize("damage, message", [
    ("random", "corrupt or truncated"),
    ("empty", "corrupt or truncated"),
    ("truncated", "truncated or corrupt: decoded"),
])
def test_corrupt_or_truncated_file_is_an_error_naming_it(long_video, raw, tmp_path, damage, message):
    target = raw / "S001.mp4"
    data = long_video.read_bytes()
    target.write_bytes({"random": np.random.default_rng(0).bytes(20000), "empty": b"",
                        "truncated": data[: len(data) // 2]}[damage])
    out = tmp_path / "out" / "crop"
    with pytest.raises(BadRecordingError, match=message) as error:
        run_crop(raw, out)
    assert str(target) in str(error.value) and "re-" in str(error.value)
    assert_no_output(out)


def test_no_audio_stream_is_an_error_naming_the_file(long_video, raw, tmp_path):
    ffmpeg("-i", long_video, "-c", "copy", "-an", raw / "S001.mp4")
    with pytest.raises(BadRecordingError, match="S001.mp4: no audio stream.*mux it in"):
        run_crop(raw, tmp_path / "crop")
    assert_no_output(tmp_path / "crop")


def test_no_video_stream_is_an_error_naming_the_file(long_video, raw, tmp_path):
    ffmpeg("-i", long_video, "-c", "copy", "-vn", raw / "S001.mp4")
    with pytest.raises(BadRecordingError, match="S001.mp4: no video stream"):
        run_crop(raw, tmp_path / "crop")
    assert_no_output(tmp_path / "crop")


def test_zero_length_recording_is_an_error_naming_the_file(long_video, raw, tmp_path):
    ffmpeg("-i", long_video, "-t", "0", raw / "S001.mp4")
    with pytest.raises(BadRecordingError, match="S001.mp4: no audio or video stream at all"):
        run_crop(raw, tmp_path / "crop")
    assert_no_output(tmp_path / "crop")


def test_unreadable_separate_audio_file_is_an_error_naming_it(mead, tmp_path):
    audio = mead / "S001/audio/neutral/level_1/002.m4a"
    audio.write_bytes(b"not audio at all")
    with pytest.raises(BadRecordingError, match="002.m4a: not a readable media file"):
        run_crop(mead, tmp_path / "crop", source="mead")
    assert_no_output(tmp_path / "crop")


def test_unreadable_recording_is_dropped_when_asked(mead, tmp_path, caplog):
    (mead / MEAD_CLIP).write_bytes(b"\x00" * 1000)
    with caplog.at_level(logging.WARNING):
        clips = run_crop(mead, tmp_path / "crop", source="mead", skip_unreadable=True)
    assert clips["clip"].tolist() == ["neutral/level_1/001"]
    assert "dropping recording neutral/level_1/002" in caplog.text and "skip_unreadable" in caplog.text


def test_too_short_clip_is_dropped_with_a_warning(mead, tmp_path, caplog):
    clip = mead / MEAD_CLIP
    short = tmp_path / "short.mp4"
    ffmpeg("-i", clip, "-t", "0.5", "-c:v", "libx264", "-c:a", "aac", short)
    shutil.move(short, clip)
    with caplog.at_level(logging.WARNING):
        clips = run_crop(mead, tmp_path / "crop", source="mead")
    assert clips["clip"].tolist() == ["neutral/level_1/001"]
    assert "shorter than crop.min_duration_s" in caplog.text and "002.mp4" in caplog.text
    report = (tmp_path / "crop" / "report.json").read_text()
    assert "002.mp4" in report


def no_face_video(path: Path) -> None:
    """Two seconds of a grey frame with a tone."""
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=192x192:r=25",
           "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000", "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", path)


def test_clip_without_any_face_is_dropped_with_a_warning(mead, tmp_path, caplog):
    no_face_video(mead / MEAD_CLIP)
    with caplog.at_level(logging.WARNING):
        clips = run_crop(mead, tmp_path / "crop", source="mead")
    assert clips["clip"].tolist() == ["neutral/level_1/001"]
    assert "no face in any of the" in caplog.text


def test_identity_without_any_face_is_an_error(raw, tmp_path):
    no_face_video(raw / "S001.mp4")
    with pytest.raises(BadRecordingError, match="no usable recording of identity 'S001'.*no face"):
        run_crop(raw, tmp_path / "crop")
    assert_no_output(tmp_path / "crop")


def test_frames_without_a_face_take_the_box_of_the_others(long_video, raw, tmp_path):
    ffmpeg("-i", long_video, "-vf", "drawbox=enable='between(t,0.8,2.0)':x=0:y=0:w=iw:h=ih:color=gray:t=fill",
           "-c:v", "libx264", "-c:a", "copy", raw / "S001.mp4")
    clips = run_crop(raw, tmp_path / "crop")
    n_source = sum(1 for _ in iter_frames(raw / "S001.mp4"))
    row = clips.iloc[0]
    assert row.last_frame + 1 == n_source  # every frame kept: the landmarks stage interpolates the gap
    assert row.crop_size >= 0.95 * 192


def test_two_faces_follow_the_largest_most_central_one(tiny_corpus, raw, tmp_path, caplog):
    other = tiny_corpus / "videos" / "S002.mp4"
    ffmpeg("-i", tiny_corpus / "videos" / "S001.mp4", "-i", other, "-filter_complex", "[0:v][1:v]hstack=shortest=1",
           "-map", "0:a", "-c:v", "libx264", "-c:a", "copy", "-shortest", raw / "S001.mp4")
    with caplog.at_level(logging.WARNING):
        clips = run_crop(raw, tmp_path / "crop")
    assert "show several faces" in caplog.text
    row = clips.iloc[0]
    inside_left = row.crop_x0 + row.crop_size <= 192 + 4
    inside_right = row.crop_x0 >= 192 - 4
    assert inside_left or inside_right, row  # one face, not the gap between the two
    assert row.crop_size <= 192


@pytest.mark.parametrize("rate", ["30000/1001", "12.5"])
def test_odd_frame_rates_are_resampled_to_25(long_video, raw, tmp_path, rate):
    ffmpeg("-i", long_video, "-vf", f"fps={rate}", "-c:v", "libx264", "-c:a", "copy", raw / "S001.mp4")
    clips = run_crop(raw, tmp_path / "crop")
    n_source = sum(1 for _ in iter_frames(raw / "S001.mp4"))
    fps = float(Fraction(rate))
    row = clips.iloc[0]
    assert row.source_fps == pytest.approx(fps, abs=0.01)
    assert row.last_frame + 1 == round(n_source / row.source_fps * FPS)
    assert len(read_audio(tmp_path / "crop" / "aud.wav", SAMPLE_RATE)) == (row.last_frame + 1) * SAMPLE_RATE // FPS


def test_rotated_video_is_decoded_upright_and_cropped_square(long_video, raw, tmp_path):
    wide = tmp_path / "wide.mp4"
    ffmpeg("-i", long_video, "-vf", "pad=320:192:64:0:gray,transpose=2", "-c:v", "libx264", "-c:a", "copy", wide)
    # stored as a 192x320 portrait with a display rotation: shown (and decoded) upright, 320x192
    ffmpeg("-display_rotation", "-90", "-i", wide, "-c", "copy", raw / "S001.mp4")
    clips = run_crop(raw, tmp_path / "crop")
    row = clips.iloc[0]
    assert row.crop_size <= 192 and row.crop_x0 + row.crop_size <= 320 and row.crop_y0 + row.crop_size <= 192
    assert 40 <= row.crop_x0 <= 90  # the face sits in the middle of the padded frame


def test_tiny_resolution_is_an_error_with_the_fix(long_video, raw, tmp_path):
    ffmpeg("-i", long_video, "-vf", "scale=47:33", "-c:v", "mpeg4", "-c:a", "copy", raw / "S001.mp4")
    with pytest.raises(BadRecordingError, match=r"S001.mp4: 47x33 px is too small.*smaller crop.image_size"):
        run_crop(raw, tmp_path / "crop")
    assert_no_output(tmp_path / "crop")


def test_identity_name_with_a_path_separator_is_refused(raw, long_video, tmp_path):
    shutil.copy(long_video, raw / "S001.mp4")
    with pytest.raises(ConfigError, match="invalid identity"):
        crop.run(config(), {"raw": raw}, {"crop": tmp_path / "crop"}, identity="../S001")
    with pytest.raises(ConfigError, match="invalid identity"):
        crop.STAGE.execute({"profile": "paper", "data": {"source": "videos"}}, root=tmp_path, identity="x/../S001")
    assert not (tmp_path / "crop").exists() and not (tmp_path / "data").exists()


def test_a_failed_rerun_keeps_the_previous_output(long_video, raw, tmp_path):
    shutil.copy(long_video, raw / "S001.mp4")
    out = tmp_path / "crop"
    before = run_crop(raw, out)
    manifest = (out / "manifest.json").read_text()
    (raw / "S001.mp4").write_bytes(b"broken")
    with pytest.raises(BadRecordingError):
        run_crop(raw, out)
    assert (out / "manifest.json").read_text() == manifest
    pd.testing.assert_frame_equal(pd.read_parquet(out / "clips.parquet"), before)
    assert len(zipfile.ZipFile(out / "ori_imgs.zip").namelist()) == before.last_frame.iloc[-1] + 1


def test_a_stage_killed_while_writing_frames_leaves_no_output(long_video, raw, tmp_path, monkeypatch):
    shutil.copy(long_video, raw / "S001.mp4")
    real = video.write_frames

    def killed(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(video, "write_frames", killed)
    out = tmp_path / "crop"
    with pytest.raises(KeyboardInterrupt):
        run_crop(raw, out)
    assert_no_output(out)
