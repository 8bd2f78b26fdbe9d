"""talkhead_models.media's PyAV decoding against ffmpeg's command line (an independent decoder) and against clips
whose timestamps are known: the same pixels on constant-rate input, the same upright picture for every display
matrix, each frame once with the timestamp it was written with, audio placed on the file's clock."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import av
import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from talkhead_models.media import (VideoWriter, audio_start, ffmpeg_exe, iter_frames, iter_timed_frames, probe,
                                    read_audio)
from tests.bad_input.test_video import CLICK_SAMPLES, code_image, write_clip

SAMPLE_RATE = 16000


def ffmpeg(*args: str | Path) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


def ffmpeg_frames(path: Path, width: int, height: int) -> np.ndarray:
    """[N, H, W, 3] RGB frames as ffmpeg's command line decodes them (rotation applied, its own conversion)."""
    raw = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "pipe:1"], capture_output=True, check=True).stdout
    assert len(raw) % (width * height * 3) == 0, "ffmpeg's frames are not of the expected size"
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def textured_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """Smooth colour noise that moves: every chroma sample matters, no two frames alike."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (height // 4 + 2, width // 4 + 2, 3)).astype(np.float32)
    frames = []
    for i in range(count):
        shifted = np.roll(base, i, axis=1)
        frames.append(np.clip(np.kron(shifted, np.ones((4, 4, 1)))[:height, :width] + 2 * i, 0, 255).astype(np.uint8))
    return frames


def test_constant_rate_video_decodes_to_exactly_the_frames_ffmpeg_gives(tmp_path):
    """The synthetic corpus's kind of file (25 fps H.264 from VideoWriter, 256 px): the same pixels, no frame
    more or less, and frame i at i / 25 s."""
    path = tmp_path / "cfr.mp4"
    with VideoWriter(path, 256, 256, 25.0) as writer:
        for frame in textured_frames(30, 256, 256):
            writer.write(frame)
    reference = [np.frombuffer(raw, np.uint8).reshape(256, 256, 3) for raw in
                 list(imageio_ffmpeg.read_frames(str(path)))[1:]]  # first item: metadata
    decoded = list(iter_timed_frames(path))
    assert len(decoded) == len(reference) == 30
    for timed, expected in zip(decoded, reference):
        np.testing.assert_array_equal(timed.image, expected)
    assert [f.time for f in decoded] == [Fraction(i, 25) for i in range(30)]
    assert {f.duration for f in decoded} == {Fraction(1, 25)}
    info = probe(path)
    assert (info.width, info.height, info.fps, info.rotation) == (256, 256, 25.0, 0.0)


def smooth_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """Smoothly varying colour, as camera pictures are (no chroma edge sharper than the 4:2:0 grid keeps)."""
    base = np.random.default_rng(3).integers(40, 216, (5, 6, 3)).astype(np.float32)
    return [np.clip(cv2.resize(np.roll(base, i, axis=1), (width, height), interpolation=cv2.INTER_CUBIC), 0, 255)
            .astype(np.uint8) for i in range(count)]


@pytest.mark.parametrize("width, height", [(97, 76), (96, 75), (97, 75)])
def test_odd_sized_video_decodes_to_its_pictures(tmp_path, width, height):
    """Odd widths and heights in 4:2:0 (MPEG-4 part 2 stores them): every frame at its size, as faithful to the
    written pictures as ffmpeg's command line. ffmpeg's own build interpolates the odd-height chroma edge a
    little differently (a different libswscale), so the two agree closely rather than bit for bit."""
    pictures = smooth_frames(6, width, height)
    path = tmp_path / "odd.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        stream.options = {"qscale": "2"}
        for index, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    decoded = np.stack(list(iter_frames(path))).astype(np.float32)
    assert decoded.shape == (6, height, width, 3)
    reference = ffmpeg_frames(path, width, height).astype(np.float32)
    written = np.stack(pictures).astype(np.float32)
    assert np.abs(decoded - written).mean() < np.abs(reference - written).mean() + 0.5 < 6.0
    assert np.abs(decoded - reference).mean() < 2.0
    assert (probe(path).width, probe(path).height) == (width, height)


@pytest.mark.parametrize("rotation, hflip", [(90, False), (-90, False), (180, False), (0, True), (90, True)])
def test_display_matrix_is_applied_as_ffmpeg_applies_it(tmp_path, rotation, hflip):
    """A clip stored 48x32 and given a display matrix by ffmpeg itself: the same upright picture as ffmpeg's
    own decoding shows (which converts colour after turning, so pixels agree to rounding)."""
    stored = tmp_path / "stored.mp4"
    with VideoWriter(stored, 48, 32, 25.0) as writer:
        for index in range(5):
            writer.write(code_image(index, 48, 32))
    turned = tmp_path / "turned.mp4"
    ffmpeg("-display_rotation", str(rotation), *(["-display_hflip"] if hflip else []), "-i", stored, "-c", "copy",
           turned)
    width, height = (32, 48) if rotation % 180 else (48, 32)
    decoded = np.stack(list(iter_frames(turned))).astype(np.float32)
    assert decoded.shape == (5, height, width, 3)
    reference = ffmpeg_frames(turned, width, height).astype(np.float32)
    assert np.abs(decoded - reference).mean() < 1.0
    # a wrong orientation of the same frames is far off (the code grid is asymmetric)
    assert np.abs(decoded[:, ::-1] - reference).mean() > 20 and np.abs(decoded[:, :, ::-1] - reference).mean() > 20
    info = probe(turned)
    assert (info.width, info.height) == (width, height)


def test_variable_rate_frames_keep_the_timestamps_they_were_written_with(tmp_path):
    times = [Fraction(t, 1000) for t in (0, 30, 95, 100, 180, 330, 345, 400, 520, 560)]
    clip = write_clip(tmp_path / "vfr.mp4", times, Fraction(600, 1000), 64, 64)
    decoded = list(iter_timed_frames(clip.path))
    assert [f.time for f in decoded] == times
    assert [f.duration for f in decoded[:-1]] == [b - a for a, b in zip(times, times[1:])]
    assert decoded[-1].duration > 0
    for index, timed in enumerate(decoded):  # each written frame once, in order
        assert np.abs(timed.image.astype(np.float32) - code_image(index, 64, 64)).mean() < 8


def click_onset(audio: np.ndarray) -> float:
    return float(np.flatnonzero(np.abs(audio) > 0.3)[0]) / SAMPLE_RATE


@pytest.mark.parametrize("audio_late_by", [0.5, -0.3])
def test_read_audio_from_a_start_time_on_the_file_clock(tmp_path, audio_late_by):
    """Video from 0.3 s (or 0), audio from 0.5 s later (or 0.3 s earlier), a click at 1.2 s of the file clock."""
    video_from = max(0.0, -audio_late_by)
    times = [Fraction(round(1000 * video_from) + 40 * i, 1000) for i in range(50)]
    audio_from = video_from + audio_late_by
    clip = write_clip(tmp_path / "clip.mp4", times, times[-1] + Fraction(1, 25), 64, 64, audio_start=audio_from,
                      audio_seconds=1.5, clicks=[1.2])
    first = audio_start(clip.path)
    # AAC's encoder delay: the stream's first decoded sample is up to one AAC frame before the first written one
    assert audio_from - 1024 / SAMPLE_RATE - 1e-9 <= first <= audio_from + 1e-9
    plain = read_audio(clip.path, SAMPLE_RATE)
    assert click_onset(plain) == pytest.approx(1.2 - float(first), abs=2 * CLICK_SAMPLES / SAMPLE_RATE)
    for start in (0.0, video_from, 1.0):
        shifted = read_audio(clip.path, SAMPLE_RATE, start=start)
        assert click_onset(shifted) == pytest.approx(1.2 - start, abs=2 * CLICK_SAMPLES / SAMPLE_RATE)
        assert len(shifted) == pytest.approx(len(plain) + (float(first) - start) * SAMPLE_RATE, abs=1)
