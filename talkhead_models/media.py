"""Video and audio I/O: decoding with PyAV, encoding and audio extraction through an ffmpeg binary.

**Video decoding** (:func:`iter_timed_frames`, :func:`iter_frames`, :func:`probe`) uses PyAV, which
gives each frame with its presentation timestamp (PTS). Frames come out as the file stores them: once
each, in display order, never duplicated or dropped to reach a constant rate (ffmpeg's command line does
that when it writes raw video, which stretched a variable-frame-rate phone clip of 187 frames in 10 s to
13.2 s), as RGB uint8, and upright: the display matrix of a rotated phone video (90, 180, 270 degrees,
possibly mirrored) is applied as players and ffmpeg apply it (another turn is an error naming the file).
On even-sized 4:2:0 input the pixels are exactly those ffmpeg's command line gives (the same libswscale
conversion), so constant-frame-rate input such as the synthetic corpus decodes to the very same frames as
when it was piped from ffmpeg; at odd sizes ffmpeg's own build rounds the chroma edge a little differently.

**Time.** A frame's ``time`` is its PTS in seconds on the file's own clock, as an exact fraction (no
rounding can move a frame across a tie); ``duration`` is the time up to the next frame (for the last one,
the duration the file gives it, else one frame at the stream's average rate). A frame without a timestamp is given its predecessor's time plus one nominal
frame interval, and one whose timestamp goes backwards its predecessor's time (a warning says how many),
so times never decrease. How processed frames are resampled from these times:
``talkhead_models/preprocess/video.py``.

**Audio** is decoded by ffmpeg's command line (:func:`read_audio`), which starts at the first decoded
audio sample; :func:`audio_start` is that sample's time on the file's clock (PyAV decodes the same way),
so ``read_audio(path, start=t)`` returns audio whose sample 0 is at time ``t`` of the file's clock: the
audio before ``t`` is dropped, and an audio stream that starts after ``t`` is preceded by silence.
Encoding (:class:`VideoWriter`, :func:`write_audio`) also goes through the binary. A system ffmpeg on PATH
is preferred (it is usually newer and faster); imageio-ffmpeg's bundled one is the fallback, so a pip-only
install works.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

log = logging.getLogger(__name__)

# A display matrix entry this close to 0 or +-1 (relative to the matrix's scale) counts as exactly that.
_AXIS_TOLERANCE = 1e-3


class MediaError(RuntimeError):
    """A media file that cannot be read or written; the message names the file."""


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: a system one on PATH, else imageio-ffmpeg's."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class StreamInfo:
    """What a media file's container and first video frame say about it."""

    duration: float | None
    """Length of the container in seconds (the longest stream)."""
    width: int | None
    height: int | None
    fps: float | None
    """Average frame rate of the video stream (frames over its duration; the nominal rate where it is unknown)."""
    has_video: bool
    has_audio: bool
    audio_sample_rate: int | None
    rotation: float = 0.0
    """Display rotation in degrees; ``width``/``height`` are already those of the decoded (upright) frames."""


@dataclass(frozen=True)
class TimedFrame:
    """One decoded video frame and when it is shown (see the module docstring)."""

    time: Fraction
    """Presentation time in seconds on the file's clock."""
    duration: Fraction
    """Seconds until the next frame is shown (for the last frame: its duration in the file, else 1 / fps)."""
    image: np.ndarray
    """[H, W, 3] RGB uint8, upright."""


@dataclass(frozen=True)
class Orientation:
    """How a stored frame becomes the upright one: a transpose, then flips of rows and of columns."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.transpose:
            image = image.transpose(1, 0, 2)
        if self.flip_rows:
            image = image[::-1]
        if self.flip_cols:
            image = image[:, ::-1]
        return np.ascontiguousarray(image)


def display_orientation(matrix: np.ndarray | None, path: Path) -> Orientation:
    """The :class:`Orientation` of a libavutil display matrix (9 int32, 16.16 fixed point, or None).

    The matrix maps a stored pixel (x, y) to the displayed one at (a x + c y, b x + d y) (libavutil's
    display.h, a = m[0], b = m[1], c = m[3], d = m[4]), y pointing down. Only quarter turns and mirrors are
    supported: a sensor records in one of those four orientations.
    """
    if matrix is None:
        return Orientation()
    a, b, c, d = (float(v) for v in np.asarray(matrix, np.float64)[[0, 1, 3, 4]])
    scale = max(abs(a), abs(b), abs(c), abs(d))
    if scale == 0:
        return Orientation()
    a, b, c, d = (v / scale for v in (a, b, c, d))

    def near(value: float, target: float) -> bool:
        return abs(value - target) < _AXIS_TOLERANCE

    if near(b, 0) and near(c, 0) and near(abs(a), 1) and near(abs(d), 1):
        return Orientation(transpose=False, flip_rows=d < 0, flip_cols=a < 0)
    if near(a, 0) and near(d, 0) and near(abs(b), 1) and near(abs(c), 1):
        # displayed column = c * stored row, displayed row = b * stored column
        return Orientation(transpose=True, flip_rows=b < 0, flip_cols=c < 0)
    angle = -np.degrees(np.arctan2(b, a))  # counter-clockwise, as av_display_rotation_get and ffmpeg report it
    raise MediaError(f"{path}: its display matrix turns the picture by {angle:.1f} degrees, not a multiple of 90; "
                     f"re-encode it upright (`ffmpeg -i {path.name} -c:a copy upright.mp4` applies the rotation)")


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        return av.open(str(path))
    except PermissionError:
        raise MediaError(f"{path}: permission denied; make the file readable (chmod a+r)") from None
    except av.error.FFmpegError as error:
        log.debug("%s: %s", path, error)
        raise MediaError(f"{path}: not a readable media file (corrupt or truncated); re-export or re-download "
                         "it") from None


def _decode(container: av.container.InputContainer, stream: av.stream.Stream, path: Path) -> Iterator[av.Frame]:
    """The stream's frames; a damaged packet is skipped and a read error ends the stream, as ffmpeg does.

    Damage is diagnosed elsewhere (the crop stage compares the frame count with the header's promise).
    """
    packets = container.demux(stream)
    skipped = 0
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError as error:
            log.debug("%s: reading stopped: %s", path, error)
            try:  # frames still inside the decoder (B-frames, frame threads) are good ones
                yield from stream.codec_context.decode(None)
            except av.error.FFmpegError:
                pass
            break
        try:
            yield from packet.decode()
        except av.error.FFmpegError as error:
            skipped += 1
            log.debug("%s: packet at %s not decodable: %s", path, packet.pts, error)
    if skipped:
        log.debug("%s: %d damaged packets skipped", path, skipped)


def _frame_orientation(frame: av.VideoFrame, path: Path) -> Orientation:
    side_data = frame.side_data.get("DISPLAYMATRIX")
    matrix = np.frombuffer(bytes(side_data), np.int32) if side_data is not None else None
    return display_orientation(matrix, path)


def probe(path: str | Path) -> StreamInfo:
    """Stream metadata, and the first video frame's display matrix (so sizes are those of upright frames)."""
    path = Path(path)
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = container.duration / av.time_base if container.duration else None
        width = height = fps = None
        rotation = 0.0
        if video is not None:
            width, height = video.codec_context.width or None, video.codec_context.height or None
            rate = video.average_rate or video.base_rate
            fps = float(rate) if rate else None
            with contextlib.closing(_decode(container, video, path)) as frames:
                first = next(frames, None)
            if first is not None and width and height:
                if _frame_orientation(first, path).transpose:
                    width, height = height, width
                rotation = float(first.rotation)
        return StreamInfo(
            duration=duration, width=width, height=height, fps=fps, has_video=video is not None,
            has_audio=audio is not None, audio_sample_rate=audio.codec_context.sample_rate if audio else None,
            rotation=rotation)


def iter_timed_frames(path: str | Path, width: int | None = None,
                      height: int | None = None) -> Iterator[TimedFrame]:
    """Yield a video's frames once each, upright, with their presentation times (see the module docstring).

    ``width``/``height`` are the expected upright size (by default the first frame's): a frame of another
    size (a stream that changes resolution mid-way) is an error naming the file.
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.base_rate
        nominal = 1 / Fraction(rate) if rate else Fraction(1, 25)
        # One converter for the whole stream: PyAV's frame.to_ndarray(format=...) sets up libswscale afresh for
        # every frame, 20 to 50 times the cost of the conversion itself.
        to_rgb = VideoReformatter()
        orientation: Orientation | None = None
        previous: tuple[Fraction, np.ndarray] | None = None
        backwards = 0
        last_duration = Fraction(0)
        with contextlib.closing(_decode(container, stream, path)) as frames:
            for frame in frames:
                if orientation is None:
                    orientation = _frame_orientation(frame, path)
                image = orientation.apply(to_rgb.reformat(frame, format="rgb24").to_ndarray())
                if width is None or height is None:
                    height, width = image.shape[:2]
                if image.shape[:2] != (height, width):
                    raise MediaError(f"{path}: a frame of {image.shape[1]}x{image.shape[0]} px after frames of "
                                     f"{width}x{height}: the stream changes size mid-way; re-encode it at one size "
                                     f"(`ffmpeg -i {path.name} -vf scale={width}:{height} -c:a copy fixed.mp4`)")
                if frame.pts is None:
                    time = previous[0] + nominal if previous is not None else Fraction(0)
                else:
                    time = Fraction(frame.pts) * frame.time_base
                if previous is not None and time < previous[0]:
                    backwards += 1
                    time = previous[0]
                if previous is not None:
                    yield TimedFrame(previous[0], time - previous[0], previous[1])
                previous = (time, image)
                last_duration = Fraction(frame.duration) * frame.time_base if frame.duration else nominal
        if previous is not None:
            yield TimedFrame(previous[0], last_duration, previous[1])
        if backwards:
            log.warning("%s: %d frames have timestamps going backwards; each was given its predecessor's time",
                        path, backwards)


def iter_frames(path: str | Path, width: int | None = None, height: int | None = None) -> Iterator[np.ndarray]:
    """Yield a video's frames as upright RGB uint8 arrays, once each, decoded one at a time."""
    for timed in iter_timed_frames(path, width, height):
        yield timed.image


def audio_start(path: str | Path) -> Fraction | None:
    """Time in seconds, on the file's clock, of the first decoded sample of its first audio stream.

    None where the file has no audio stream or none of it decodes.
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            return None
        with contextlib.closing(_decode(container, container.streams.audio[0], path)) as frames:
            first = next(frames, None)
        if first is None or first.pts is None:
            return None
        return Fraction(first.pts) * first.time_base


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as .wav (PCM 16) or .m4a (AAC), chosen by suffix."""
    path = Path(path)
    codec = {".wav": ["-c:a", "pcm_s16le"], ".m4a": ["-c:a", "aac", "-b:a", "128k"]}.get(path.suffix)
    if codec is None:
        raise MediaError(f"{path}: unsupported audio suffix (use .wav or .m4a)")
    samples = np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)
    _run_ffmpeg(
        ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0", *codec, str(path)],
        stdin=samples.tobytes(),
        target=path,
    )


def read_audio(path: str | Path, sample_rate: int = 16000, start: Fraction | float | None = None) -> np.ndarray:
    """Decode a file's first audio stream (any audio, or a video's sound) to mono float32 at ``sample_rate``.

    With ``start``, sample 0 of the result is at ``start`` seconds of the file's clock (earlier audio is
    dropped, silence fills in before a stream that starts later); without it, at the first decoded sample.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    out = _run_ffmpeg(
        ["-i", str(path), "-map", "0:a:0", "-f", "f32le", "-ac", "1", "-ar", str(sample_rate), "pipe:1"],
        target=path)
    audio = np.frombuffer(out, dtype=np.float32).copy()
    if start is None:
        return audio
    first = audio_start(path)
    if first is None:
        return audio
    lead = int(round((first - Fraction(start)) * sample_rate))
    if lead:
        log.info("%s: the audio starts %.3f s %s the requested start (%.3f s); %s", path,
                 abs(lead) / sample_rate, "after" if lead > 0 else "before", float(start),
                 "silence fills the gap" if lead > 0 else "the audio before it is cut")
    if lead > 0:
        return np.concatenate([np.zeros(lead, np.float32), audio])
    return audio[-lead:]


class VideoWriter:
    """Stream RGB uint8 frames into an H.264 mp4, optionally muxing an audio file.

    Frames go through a pipe, so a long video never sits in memory.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        audio_path: str | Path | None = None,
        crf: int = 18,
    ) -> None:
        self.path = Path(path)
        self.shape = (height, width, 3)
        args = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps}", "-i", "pipe:0",
        ]
        if audio_path is not None:
            args += ["-i", str(audio_path), "-c:a", "aac", "-b:a", "128k"]
        args += [
            "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", "-f", "mp4", str(self.path),
        ]
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != self.shape or frame.dtype != np.uint8:
            raise MediaError(f"{self.path}: frame {frame.shape} {frame.dtype}, expected {self.shape} uint8")
        assert self._proc.stdin is not None
        self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        self.frames_written += 1

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        if self._proc.wait() != 0:
            raise MediaError(f"{self.path}: ffmpeg failed to encode: {stderr.strip()[-500:]}")

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._proc.kill()
            self._proc.wait()


def _run_ffmpeg(args: list[str], target: Path, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
        input=stdin, capture_output=True, check=False,
    )
    if proc.returncode != 0:
        raise MediaError(f"{target}: ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    return proc.stdout
