"""Streaming I/O of numbered frame folders (``ori_imgs/0.jpg``, ``1.jpg``, ...).

JPEG/PNG decoding and encoding release the GIL inside OpenCV, so a small
thread pool overlaps them with the per-frame work of a stage. Both directions
keep a bounded number of frames in flight: memory does not grow with the
length of the video.
"""

from __future__ import annotations

import collections
import ctypes
import struct
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import pandas as pd

from talkhead_models.data.processed import CLIP_COLUMNS

JPEG_QUALITY = 95  # what cv2.imwrite uses by default, and so what ER-NeRF's gt_imgs have
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA); 3 is palette


GLIBC_M_TRIM_THRESHOLD, GLIBC_M_MMAP_THRESHOLD = -1, -3


class FrameError(RuntimeError):
    """A frame folder or frame file that cannot be used; the message names it and the fix."""


def retain_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> None:
    """Ask glibc to keep freed image buffers for reuse instead of handing them back to the kernel.

    Every frame allocates and frees a few megabytes of images. With glibc's
    defaults many of those blocks are mapped and unmapped each time, and the
    page faults of touching fresh pages cost about 3 ms of CPU per 512 px
    frame in the parse stage (1,200 faults a frame; 30 after this call). The
    process keeps up to ``trim_threshold`` bytes of free heap. A no-op where
    the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(GLIBC_M_MMAP_THRESHOLD, mmap_threshold)
    libc.mallopt(GLIBC_M_TRIM_THRESHOLD, trim_threshold)


def count_frames(folder: Path, suffix: str = ".jpg") -> int:
    """Number of frames ``0<suffix> .. N-1<suffix>`` in ``folder``; gaps or stray names are an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FrameError(f"{folder}: frame folder not found; run the stage that writes it")
    stems = [p.stem for p in folder.glob(f"*{suffix}")]
    indices = np.array(sorted(int(s) for s in stems if s.isdigit()), dtype=np.int64)
    if len(indices) != len(stems):
        stray = sorted(s for s in stems if not s.isdigit())[:3]
        raise FrameError(f"{folder}: frame names must be integers (found {stray}); remove the stray files")
    if len(indices) == 0:
        raise FrameError(f"{folder}: no *{suffix} frames; re-run the stage that writes this folder")
    if not np.array_equal(indices, np.arange(len(indices))):
        missing = np.setdiff1d(np.arange(indices[-1] + 1), indices)[:5]
        raise FrameError(f"{folder}: frames are not numbered 0..{len(indices) - 1} (missing e.g. {missing.tolist()}); "
                         "re-run the stage that writes this folder")
    return len(indices)


def read_clips(path: Path, n_frames: int) -> pd.DataFrame:
    """``clips.parquet`` sorted by first frame, checked to cover frames 0..n_frames-1 exactly once."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: clip table not found; run the crop stage (`dvc repro crop`)")
    clips = pd.read_parquet(path)
    missing = [c for c in CLIP_COLUMNS if c not in clips.columns]
    if missing:
        raise FrameError(f"{path}: columns {missing} missing; re-run the crop stage that writes it")
    clips = clips.sort_values("first_frame").reset_index(drop=True)
    first = clips.first_frame.to_numpy(np.int64)
    last = clips.last_frame.to_numpy(np.int64)
    starts_expected = np.concatenate([[0], last[:-1] + 1])
    if len(clips) == 0 or np.any(first != starts_expected) or np.any(last < first) or last[-1] != n_frames - 1:
        raise FrameError(f"{path}: recordings must cover frames 0..{n_frames - 1} contiguously, one after "
                         f"another (found ranges {list(zip(first.tolist(), last.tolist()))[:4]}...); "
                         "the clip table and ori_imgs/ disagree: re-run the crop stage")
    return clips


def frame_paths(folder: Path, indices: Sequence[int] | range, suffix: str = ".jpg") -> list[Path]:
    return [Path(folder) / f"{i}{suffix}" for i in indices]


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR, rgb: bool = True) -> np.ndarray:
    """One image as stored (cv2 order) or converted to RGB; an unreadable file is an error naming it."""
    image = cv2.imread(str(path), flags)
    if image is None:
        raise FrameError(f"{path}: missing or not a readable image; re-run the stage that writes it")
    if rgb and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return image


def read_frames(paths: Sequence[Path], workers: int = 2, lookahead: int = 8,
                flags: int = cv2.IMREAD_COLOR, rgb: bool = True) -> Iterator[np.ndarray]:
    """Yield the images at ``paths`` in order, decoded ``lookahead`` frames ahead by ``workers`` threads."""
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="frame-read") as pool:
        queue: collections.deque[Future] = collections.deque()
        remaining = iter(paths)
        try:
            for path in remaining:
                queue.append(pool.submit(read_image, path, flags, rgb))
                if len(queue) >= lookahead:
                    break
            while queue:
                image = queue.popleft().result()
                following = next(remaining, None)
                if following is not None:
                    queue.append(pool.submit(read_image, following, flags, rgb))
                yield image
        finally:
            for future in queue:
                future.cancel()


def encode_png(image: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """PNG bytes of a uint8 image: grey [H, W], RGB [H, W, 3], RGBA [H, W, 4], or palette indices [H, W]
    with a [K, 3] RGB ``palette``.

    OpenCV's libpng path tries every row filter on every row: 7-10 ms for a
    512 px RGBA frame, the slowest step of the parse stage. Here every row
    uses the "Sub" filter (difference to the pixel on the left), which turns
    the flat areas of masks and cut-outs into runs of zeros, and zlib's
    run-length strategy: same size, about half the time; a label map stored
    as palette indices takes a twentieth of the time of its colour image.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"encode_png: expected a uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    if palette is not None and channels != 1:
        raise ValueError("encode_png: a palette image must be a 2D array of indices")
    colour_type = 3 if palette is not None else PNG_COLOUR_TYPES[channels]
    rows = np.ascontiguousarray(image).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = 1  # filter type Sub
    filtered[:, 1:1 + channels] = rows[:, :channels]
    np.subtract(rows[:, channels:], rows[:, :-channels], out=filtered[:, 1 + channels:])
    compressor = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = compressor.compress(filtered) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    colours = b"" if palette is None else chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes())
    return PNG_SIGNATURE + chunk(b"IHDR", header) + colours + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def write_image(path: Path, image: np.ndarray, rgb: bool = True, palette: np.ndarray | None = None) -> None:
    """Write an image: RGB/RGBA when ``rgb``, else in cv2's BGR/BGRA order; one channel as grey, or as
    indices into ``palette`` (PNG only)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        if not rgb and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
        try:
            path.write_bytes(encode_png(image, palette))
        except OSError as error:
            raise FrameError(f"{path}: could not be written ({error})") from error
        return
    if rgb and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), image, params):
        raise FrameError(f"{path}: could not be written (disk full or folder missing?)")


class BackgroundWriter:
    """Run write jobs on a thread pool, at most ``max_pending`` queued; the first failure is re-raised.

    Use as a context manager: leaving the block waits for every job, so the
    caller can rename its temporary output folder into place afterwards.
    """

    def __init__(self, workers: int = 2, max_pending: int = 16) -> None:
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="frame-write")
        self._pending: collections.deque[Future] = collections.deque()
        self._max_pending = max(1, max_pending)

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        while len(self._pending) >= self._max_pending:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(job, *args))

    def image(self, path: Path, image: np.ndarray, rgb: bool = True) -> None:
        """Queue ``write_image``; the array must not be modified afterwards."""
        self.submit(write_image, path, image, rgb)

    def wait(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)
