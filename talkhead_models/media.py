"""Video and audio I/O through an ffmpeg binary, without ffprobe.

imageio-ffmpeg ships a static ffmpeg but no ffprobe, so stream metadata is
read from the banner ``ffmpeg -i`` prints. A system ffmpeg on PATH is
preferred (it is usually newer and faster); the bundled one is the fallback,
so a pip-only install works.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)


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
    """What ``ffmpeg -i`` says about a file."""

    duration: float | None
    width: int | None
    height: int | None
    fps: float | None
    has_video: bool
    has_audio: bool
    audio_sample_rate: int | None
    rotation: float = 0.0
    """Display rotation in degrees; ``width``/``height`` are already those of the decoded (rotated) frames."""


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
# "WxH" followed by a separator, so codec tags such as "0x31637661" never match.
_VIDEO = re.compile(r"Stream #\S+.*?: Video: .*?(?<![\w])(\d+)x(\d+)(?=[\s,\[])")
_FPS = re.compile(r"(\d+(?:\.\d+)?)(k?) fps")
_TBR = re.compile(r"(\d+(?:\.\d+)?)(k?) tbr")
_ROTATION = re.compile(r"(?:rotation of|rotate\s*:)\s*(-?\d+(?:\.\d+)?)")
_AUDIO = re.compile(r"Stream #\S+.*?: Audio: .*?(\d+) Hz")
_UNREADABLE = ("Invalid data found", "moov atom not found", "Error opening input")


def probe(path: str | Path) -> StreamInfo:
    """Read stream metadata from ffmpeg's banner (no ffprobe needed)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, check=False
    )
    banner = proc.stderr
    if any(marker in banner for marker in _UNREADABLE):
        raise MediaError(f"{path}: not a readable media file (corrupt or truncated); re-export or re-download it")
    duration = _DURATION.search(banner)
    video = _VIDEO.search(banner)
    audio = _AUDIO.search(banner)
    fps = None
    width = height = None
    rotation = 0.0
    if video:
        width, height = int(video.group(1)), int(video.group(2))
        video_line = banner[video.start() : banner.find("\n", video.start())]
        # The frame rate; some containers state only the base rate (tbr). "30k" means 30000.
        rate = _FPS.search(video_line) or _TBR.search(video_line)
        fps = float(rate.group(1)) * (1000.0 if rate.group(2) else 1.0) if rate else None
        # ffmpeg applies a display rotation while decoding, so a portrait phone video stored
        # as 1920x1080 with a 90 degree matrix decodes to 1080x1920 frames.
        next_stream = banner.find("Stream #", video.end())
        rotated = _ROTATION.search(banner[video.end() : next_stream if next_stream >= 0 else len(banner)])
        if rotated:
            rotation = float(rotated.group(1))
            if round(abs(rotation)) % 180 == 90:
                width, height = height, width
    return StreamInfo(
        duration=(int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3)))
        if duration
        else None,
        width=width,
        height=height,
        fps=fps,
        has_video=video is not None,
        has_audio=audio is not None,
        audio_sample_rate=int(audio.group(1)) if audio else None,
        rotation=rotation,
    )


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


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode any audio (or a video's audio stream) to mono float32 at ``sample_rate``."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    out = _run_ffmpeg(
        ["-i", str(path), "-vn", "-f", "f32le", "-ac", "1", "-ar", str(sample_rate), "pipe:1"], target=path
    )
    return np.frombuffer(out, dtype=np.float32).copy()


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


def iter_frames(path: str | Path, width: int | None = None, height: int | None = None) -> Iterator[np.ndarray]:
    """Yield a video's frames as RGB uint8 arrays, decoded one at a time."""
    path = Path(path)
    if width is None or height is None:
        info = probe(path)
        if not info.has_video:
            raise MediaError(f"{path}: no video stream")
        width, height = info.width, info.height
    proc = subprocess.Popen(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path),
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        # stderr is never read here: a pipe would fill up on a damaged file and stall the decoder.
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    frame_bytes = width * height * 3
    assert proc.stdout is not None
    try:
        while True:
            chunk = proc.stdout.read(frame_bytes)
            if len(chunk) < frame_bytes:
                break
            yield np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3)
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()


def _run_ffmpeg(args: list[str], target: Path, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
        input=stdin, capture_output=True, check=False,
    )
    if proc.returncode != 0:
        raise MediaError(f"{target}: ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    return proc.stdout
