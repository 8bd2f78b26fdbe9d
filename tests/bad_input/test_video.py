"""Video as it really comes, through the crop stage: variable frame rate, 29.97 fps, a rotated phone video, odd
sizes, audio starting late or early.

Each clip is generated here with PyAV at exactly known presentation times. Every frame shows its own index as
a 4x4 grid of black and white cells (with a fixed corner pattern, so a frame shown sideways or mirrored cannot
be read as another index), and the audio holds short clicks at known times. From the crop stage's output the
tests read back, independently of the code under test: which source frame each processed frame shows
(against a brute-force nearest-time search over the written timestamps) and where each click landed in
``aud.wav`` (against the time it was written at, on the video's clock).
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np
import pandas as pd
import pytest

from stages import crop
from talkhead_models.data import DataConfig
from talkhead_models.data.processed import FPS, SAMPLE_RATE
from talkhead_models.preprocess import video
from talkhead_models.preprocess.video import BadRecordingError, CropBox, CropConfig
from tests.frame_archives import read_member

IMAGE_SIZE = 64
GRID = 4
# Corner cells that never carry the index: top-left white, the other three corners black.
MARKER_CELLS = {(0, 0): 1, (0, GRID - 1): 0, (GRID - 1, 0): 0, (GRID - 1, GRID - 1): 0}
INDEX_CELLS = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in MARKER_CELLS]
CLICK_SAMPLES = 40  # 2.5 ms at 16 kHz
FRAME_S = 1 / FPS


def code_image(index: int, width: int, height: int) -> np.ndarray:
    """An upright RGB frame showing ``index`` in a 4x4 grid filling its central square."""
    image = np.full((height, width, 3), 96, np.uint8)
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    bits = {cell: (index >> i) & 1 for i, cell in enumerate(INDEX_CELLS)} | MARKER_CELLS
    for (row, col), bit in bits.items():
        top, bottom = y0 + row * side // GRID, y0 + (row + 1) * side // GRID
        left, right = x0 + col * side // GRID, x0 + (col + 1) * side // GRID
        image[top:bottom, left:right] = 255 if bit else 0
    return image


def read_code(image: np.ndarray, width: int, height: int, box: CropBox) -> int:
    """The index shown by a processed frame (BGR, ``IMAGE_SIZE`` px) cut from a ``width`` x ``height`` frame."""
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    bits = {}
    for row in range(GRID):
        for col in range(GRID):
            centre = np.array([x0 + (col + 0.5) * side / GRID, y0 + (row + 0.5) * side / GRID])
            x, y = np.round(box.to_processed(centre, IMAGE_SIZE)).astype(int)
            bits[row, col] = int(image[y - 2 : y + 3, x - 2 : x + 3].mean() > 128)
    marker = {cell: bits[cell] for cell in MARKER_CELLS}
    assert marker == MARKER_CELLS, f"orientation marker {marker}: the frame is not upright"
    return sum(bits[cell] << i for i, cell in enumerate(INDEX_CELLS))


@dataclass(frozen=True)
class Clip:
    """A generated recording: where its frames and clicks are on the file's clock."""

    path: Path
    width: int  # upright (displayed) size
    height: int
    times: list[Fraction]  # presentation time (s) of each frame, in display order
    end: Fraction  # when the last frame was meant to stop being shown (s; the muxer may store another guess)
    clicks: list[float]  # times (s) of the audio clicks


def write_clip(path: Path, times: Sequence[Fraction], end: Fraction, width: int, height: int, *,
               time_base: Fraction = Fraction(1, 1000), audio_start: float = 0.0, audio_seconds: float | None = None,
               clicks: Sequence[float] = (), rotation: int = 0, codec: str = "libx264",
               pix_fmt: str = "yuv420p") -> Clip:
    """An mp4 whose frame ``i`` (showing ``code_image(i)``) has presentation time ``times[i]``, with AAC audio
    whose first sample is at ``audio_start`` and clicks at ``clicks`` (all seconds on the file's clock).

    With ``rotation`` the frames are stored turned so that a player, applying the display matrix, shows them
    upright (display = stored turned ``rotation`` degrees counter-clockwise, as ffmpeg applies it; checked
    against ffmpeg in tests/test_media.py).
    """
    quarter_turns = (rotation // 90) % 4
    stored_width, stored_height = (height, width) if quarter_turns % 2 else (width, height)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec)
        stream.width, stream.height, stream.pix_fmt = stored_width, stored_height, pix_fmt
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        if codec == "libx264":
            stream.options = {"crf": "16", "preset": "veryfast"}
        if rotation:
            stream.set_display_rotation(rotation)
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for index, time in enumerate(times):
            pts = time / time_base
            assert pts.denominator == 1, f"{time} s is not a multiple of the time base {time_base}"
            stored = np.ascontiguousarray(np.rot90(code_image(index, width, height), -quarter_turns))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts, frame.time_base = int(pts), time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        seconds = audio_seconds if audio_seconds is not None else float(end)
        samples = np.zeros(int(round(seconds * SAMPLE_RATE)), np.float32)
        for click in clicks:
            first = int(round((click - audio_start) * SAMPLE_RATE))
            samples[first : first + CLICK_SAMPLES] = 0.8
        frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
        frame.sample_rate, frame.time_base = SAMPLE_RATE, Fraction(1, SAMPLE_RATE)
        frame.pts = int(round(audio_start * SAMPLE_RATE))
        for packet in sound.encode(frame):
            container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)
    return Clip(path, width, height, list(times), end, list(clicks))


class CentredFace:
    """Stands in for mediapipe's detector: a face in the middle of every frame, sized so that the crop box is
    the frame's central square (margin 2.8, shift_down 0.25 undone), whatever the picture shows."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        pass

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        size = min(width, height) / CropConfig.margin
        centre_y = height / 2 - CropConfig.shift_down * size
        return np.array([[width / 2 - size / 2, centre_y - size / 2, size, size, 1.0]])

    def __enter__(self) -> "CentredFace":
        return self

    def __exit__(self, *exc) -> None:
        pass


@pytest.fixture
def centred_face(monkeypatch):
    monkeypatch.setattr(video, "FaceDetector", CentredFace)


def run_crop(clip: Clip, out: Path) -> pd.Series:
    raw = clip.path.parent
    assert clip.path.name == "S001.mp4"
    cfg = CropConfig(image_size=IMAGE_SIZE, detection_stride=10, data=DataConfig(source="videos"))
    crop.run(cfg, {"raw": raw}, {"crop": out}, identity="S001")
    clips = pd.read_parquet(out / "clips.parquet")
    assert len(clips) == 1
    return clips.iloc[0]


def expected_sources(times: Sequence[Fraction], count: int) -> list[int]:
    """Brute force: for each processed frame k, the written frame nearest to k / 25 s after the first one
    (a tie goes to the later frame, as the crop stage documents)."""
    start = times[0]
    return [min(range(len(times)), key=lambda i: (abs(times[i] - start - Fraction(k) / Fraction(FPS)), -i))
            for k in range(count)]


def click_onsets(path: Path) -> np.ndarray:
    """Times (s) at which clicks start in a 16 kHz PCM-16 wav: the first sample of each loud burst."""
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == SAMPLE_RATE
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(samples) > 0.3)
    if len(loud) == 0:
        return np.zeros(0)
    starts = loud[np.concatenate([[True], np.diff(loud) > SAMPLE_RATE // 10])]
    return starts / SAMPLE_RATE


def check_alignment(clip: Clip, out: Path, row: pd.Series) -> None:
    """Frame count, the source frame behind every processed frame, and the clicks' offsets (module docstring)."""
    count = row.last_frame - row.first_frame + 1
    duration = float(clip.end - clip.times[0])
    assert abs(count - duration * FPS) <= 1, (count, duration)
    box = CropBox(int(row.crop_x0), int(row.crop_y0), int(row.crop_size))
    shown = [read_code(read_member(out / "ori_imgs.zip", row.first_frame + k, cv2.IMREAD_COLOR), clip.width, clip.height,
                       box) for k in range(count)]
    expected = expected_sources(clip.times, count)
    wrong = [(k, shown[k], expected[k]) for k in range(count) if shown[k] != expected[k]]
    assert not wrong, f"{len(wrong)} of {count} processed frames show the wrong source frame: {wrong[:5]}"
    # the audio's time axis is the video's: t = 0 at the first frame's presentation time
    onsets = click_onsets(out / "aud.wav")
    written = np.array(clip.clicks) - float(clip.times[0])
    assert len(onsets) == len(written), (onsets, written)
    offsets = onsets - written
    assert np.abs(offsets).max() <= FRAME_S, f"audio/video offsets {offsets} s exceed one frame"


def test_variable_frame_rate_clip_keeps_its_duration_and_sync(centred_face, tmp_path):
    """The issue's phone clip: 187 frames in 10 s at irregular intervals came out as 330 frames (13.2 s)."""
    rng = np.random.default_rng(18)
    gaps = rng.uniform(0.5, 1.5, 187)
    gaps_ms = np.round(gaps / gaps.sum() * 10_000).astype(int)
    gaps_ms[-1] += 10_000 - gaps_ms.sum()
    times = [Fraction(int(t), 1000) for t in np.concatenate([[0], np.cumsum(gaps_ms[:-1])])]
    (tmp_path / "raw").mkdir()
    clip = write_clip(tmp_path / "raw" / "S001.mp4", times, Fraction(10), 96, 96,
                      clicks=[1.0, 2.5, 4.0, 5.5, 7.0, 8.5])
    row = run_crop(clip, tmp_path / "crop")
    # 250 +- 1: the mp4 muxer gives the last frame its own guess of a duration
    assert 249 <= row.last_frame + 1 <= 251
    check_alignment(clip, tmp_path / "crop", row)


def test_ntsc_rate_clip_is_resampled_by_time(centred_face, tmp_path):
    """29.97 fps (30000/1001): 90 frames last 3.003 s, 75 processed frames."""
    times = [Fraction(1001 * i, 30000) for i in range(90)]
    (tmp_path / "raw").mkdir()
    clip = write_clip(tmp_path / "raw" / "S001.mp4", times, Fraction(1001 * 90, 30000), 96, 96,
                      time_base=Fraction(1, 30000), clicks=[0.5, 1.7, 2.6])
    row = run_crop(clip, tmp_path / "crop")
    # the average rate as the file gives it (its muxer guesses the last frame's duration)
    assert row.source_fps == pytest.approx(30000 / 1001, abs=0.1)
    check_alignment(clip, tmp_path / "crop", row)


@pytest.mark.parametrize("rotation", [90, -90])
def test_rotated_phone_clip_is_cropped_upright(centred_face, tmp_path, rotation):
    """Stored 64x96 (portrait sensor rows) with a display rotation: shown and cropped as the 96x64 picture."""
    times = [Fraction(i, 25) for i in range(40)]
    (tmp_path / "raw").mkdir()
    clip = write_clip(tmp_path / "raw" / "S001.mp4", times, Fraction(40, 25), 96, 64, rotation=rotation,
                      clicks=[0.6])
    row = run_crop(clip, tmp_path / "crop")
    assert (row.crop_x0, row.crop_y0, row.crop_size) == (16, 0, 64)
    check_alignment(clip, tmp_path / "crop", row)


def test_odd_sized_clip_is_cropped(centred_face, tmp_path):
    """97x75 px (odd width and height, 4:2:0 chroma): MPEG-4 part 2 stores such sizes."""
    times = [Fraction(i, 25) for i in range(40)]
    (tmp_path / "raw").mkdir()
    clip = write_clip(tmp_path / "raw" / "S001.mp4", times, Fraction(40, 25), 97, 75, codec="mpeg4",
                      clicks=[0.6])
    row = run_crop(clip, tmp_path / "crop")
    assert row.crop_size == 75
    check_alignment(clip, tmp_path / "crop", row)


def test_audio_starting_late_is_preceded_by_silence(centred_face, tmp_path):
    """The audio stream's first sample is 0.5 s after the first frame: the clicks stay where they were."""
    times = [Fraction(i, 25) for i in range(75)]
    (tmp_path / "raw").mkdir()
    clip = write_clip(tmp_path / "raw" / "S001.mp4", times, Fraction(3), 96, 96, audio_start=0.5,
                      audio_seconds=2.5, clicks=[1.0, 2.2])
    row = run_crop(clip, tmp_path / "crop")
    check_alignment(clip, tmp_path / "crop", row)


def test_audio_starting_early_is_cut_to_the_first_frame(centred_face, tmp_path):
    """The first frame is shown 0.5 s after the audio starts: t = 0 is the first frame, the clicks move up."""
    times = [Fraction(500 + 40 * i, 1000) for i in range(75)]
    (tmp_path / "raw").mkdir()
    clip = write_clip(tmp_path / "raw" / "S001.mp4", times, Fraction(35, 10), 96, 96, audio_seconds=3.5,
                      clicks=[0.2, 1.0, 2.2])
    row = run_crop(clip, tmp_path / "crop")
    clip = Clip(clip.path, clip.width, clip.height, clip.times, clip.end, clicks=[1.0, 2.2])  # 0.2 s is cut
    check_alignment(clip, tmp_path / "crop", row)


def test_display_rotation_that_is_not_a_quarter_turn_is_an_error_with_the_fix(tmp_path):
    (tmp_path / "raw").mkdir()
    clip = write_clip(tmp_path / "raw" / "S001.mp4", [Fraction(i, 25) for i in range(30)], Fraction(30, 25), 96, 96)
    tilted = tmp_path / "raw" / "tilted.mp4"
    with av.open(str(clip.path)) as source, av.open(str(tilted), "w", format="mp4") as target:
        streams = {s.index: target.add_stream_from_template(s) for s in source.streams}
        streams[source.streams.video[0].index].set_display_rotation(45)
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                target.mux(packet)
    tilted.replace(clip.path)
    out = tmp_path / "crop"
    with pytest.raises(BadRecordingError, match=r"S001.mp4: its display matrix turns the picture by 45.0 degrees.*"
                                                r"re-encode it upright"):
        run_crop(clip, out)
    assert not out.exists() and not list(tmp_path.glob(".crop*"))
