"""Streaming I/O of numbered frames: frame archives (ours) and numbered frame folders (ER-NeRF's).

A processed identity keeps each kind of per-frame image (``ori_imgs``,
``gt_imgs``, ``parsing`` ...) in one *frame archive*: an uncompressed zip whose
members are ``<i>.jpg`` / ``<i>.png``, the exact bytes ER-NeRF's folders hold.
The number of files no longer grows with the frame count (DVC hashes and
stats a handful of files instead of tens of thousands), a frame is one slice
of a memory map (no open/close per frame), and ``unzip ori_imgs.zip -d
ori_imgs`` gives back ER-NeRF's folder. ``open_frames`` reads either kind.

JPEG/PNG decoding and encoding release the GIL inside OpenCV, so a small
thread pool overlaps them with the per-frame work of a stage. Both directions
keep a bounded number of frames in flight: memory does not grow with the
length of the video.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import mmap
import struct
import tempfile
import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

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


def resized(image: np.ndarray, size: int) -> np.ndarray:
    """A square image at ``size`` px (area averaging when shrinking)."""
    if image.shape[0] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def decode_image(data: Any, flags: int = cv2.IMREAD_COLOR, rgb: bool = True, name: object = "image") -> np.ndarray:
    """Encoded JPEG/PNG bytes (any buffer) as stored (cv2 order) or converted to RGB; ``name`` is for the error."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise FrameError(f"{name}: not a readable image; re-run the stage that writes it")
    return _to_rgb(image) if rgb else image


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return image


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR, rgb: bool = True) -> np.ndarray:
    """One image file as stored (cv2 order) or converted to RGB; an unreadable file is an error naming it."""
    image = cv2.imread(str(path), flags)
    if image is None:
        raise FrameError(f"{path}: missing or not a readable image; re-run the stage that writes it")
    return _to_rgb(image) if rgb else image


ARCHIVE_SUFFIX = ".zip"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header: 30 bytes, name and extra lengths last
_LOCAL_SIGNATURE = b"PK\x03\x04"


class FrameArchive:
    """Numbered images ``<i><suffix>`` packed in one uncompressed zip, read by frame index from a memory map.

    The members need not be contiguous (the parse stage writes only the
    frames with a face); ``indices`` lists them. Safe to share between threads.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with zipfile.ZipFile(self.path) as archive:
                members = archive.infolist()
        except (OSError, zipfile.BadZipFile) as error:
            raise FrameError(f"{self.path}: not a readable frame archive ({error}); re-run the stage that "
                             "writes it") from None
        suffixes = {Path(m.filename).suffix for m in members}
        stems = [Path(m.filename).stem for m in members]
        if len(suffixes) > 1 or not all(stem.isdigit() for stem in stems):
            raise FrameError(f"{self.path}: members must be <index>.jpg or <index>.png, one kind per archive (found "
                             f"{sorted(m.filename for m in members)[:3]}); re-run the stage that writes it")
        compressed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
        if compressed:
            raise FrameError(f"{self.path}: {compressed[:3]} are compressed; frame archives store images as they "
                             "are (zip -0); re-run the stage that writes it")
        self.suffix = suffixes.pop() if suffixes else ""
        order = np.argsort([int(stem) for stem in stems], kind="stable")
        self.indices = np.array([int(stems[i]) for i in order], np.int64)
        self._map = self._open_map()
        self._spans = np.array([self._data_span(members[i]) for i in order], np.int64).reshape(-1, 2)
        self._row = {int(index): row for row, index in enumerate(self.indices)}

    def _open_map(self) -> mmap.mmap | bytes:
        with open(self.path, "rb") as handle:
            if handle.seek(0, 2) == 0:
                return b""
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)

    def _data_span(self, member: zipfile.ZipInfo) -> tuple[int, int]:
        offset = member.header_offset
        header = _LOCAL_HEADER.unpack_from(self._map, offset)
        if header[0] != _LOCAL_SIGNATURE:
            raise FrameError(f"{self.path}: damaged at {member.filename}; re-run the stage that writes it")
        start = offset + _LOCAL_HEADER.size + header[-2] + header[-1]
        return start, start + member.file_size

    def __len__(self) -> int:
        return len(self.indices)

    def __contains__(self, index: object) -> bool:
        return index in self._row

    def __getstate__(self) -> dict:  # a memory map does not pickle: reopen in the other process
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def encoded(self, index: int) -> memoryview:
        """The stored bytes of frame ``index`` (no copy)."""
        row = self._row.get(int(index))
        if row is None:
            raise FrameError(f"{self.path}: no frame {index} (it holds {len(self)} frames, "
                             f"{_describe_range(self.indices)}); re-run the stage that writes it")
        start, end = self._spans[row]
        return memoryview(self._map)[start:end]

    def read(self, index: int, flags: int = cv2.IMREAD_COLOR, rgb: bool = True) -> np.ndarray:
        """Frame ``index`` decoded, RGB(A) when ``rgb`` else as stored (cv2's BGR order)."""
        return decode_image(self.encoded(index), flags, rgb, name=f"{self.path}: frame {index}")

    def contiguous_count(self) -> int:
        """N when the archive holds exactly frames 0..N-1; otherwise an error naming the gap."""
        if len(self.indices) == 0:
            raise FrameError(f"{self.path}: no frames; re-run the stage that writes it")
        if self.indices[-1] != len(self.indices) - 1:
            missing = np.setdiff1d(np.arange(self.indices[-1] + 1), self.indices)[:5]
            raise FrameError(f"{self.path}: frames are not numbered 0..{len(self.indices) - 1} (missing e.g. "
                             f"{missing.tolist()}); re-run the stage that writes it")
        return len(self.indices)


class FrameFolder:
    """A folder of numbered images ``<i><suffix>`` (ER-NeRF's ``ori_imgs/``, ``parsing/`` ...), read like an archive."""

    def __init__(self, path: str | Path, suffix: str) -> None:
        self.path = Path(path)
        self.suffix = suffix
        if not self.path.is_dir():
            raise FrameError(f"{self.path}: frame folder not found; run the stage that writes it")
        stems = [p.stem for p in self.path.glob(f"*{suffix}")]
        if not all(stem.isdigit() for stem in stems):
            stray = sorted(stem for stem in stems if not stem.isdigit())[:3]
            raise FrameError(f"{self.path}: frame names must be integers (found {stray}); remove the stray files")
        self.indices = np.array(sorted(int(stem) for stem in stems), np.int64)
        self._present = set(self.indices.tolist())

    def __len__(self) -> int:
        return len(self.indices)

    def __contains__(self, index: object) -> bool:
        return index in self._present

    def member(self, index: int) -> Path:
        return self.path / f"{int(index)}{self.suffix}"

    def encoded(self, index: int) -> bytes:
        try:
            return self.member(index).read_bytes()
        except OSError:
            raise FrameError(f"{self.member(index)}: missing or unreadable; re-run the stage that writes it") from None

    def read(self, index: int, flags: int = cv2.IMREAD_COLOR, rgb: bool = True) -> np.ndarray:
        return read_image(self.member(index), flags, rgb)

    def contiguous_count(self) -> int:
        return count_frames(self.path, self.suffix)


FrameSource = Union[FrameArchive, FrameFolder]


def open_frames(path: str | Path, suffix: str = ".jpg") -> FrameSource:
    """A frame archive (``<kind>.zip``) or a numbered frame folder (``suffix`` names its images)."""
    path = Path(path)
    if path.suffix == ARCHIVE_SUFFIX:
        if not path.is_file():
            raise FrameError(f"{path}: frame archive not found; run the stage that writes it")
        return FrameArchive(path)
    return FrameFolder(path, suffix)


def _describe_range(indices: np.ndarray) -> str:
    return f"{indices[0]}..{indices[-1]}" if len(indices) else "none"


def read_frames(source: FrameSource, indices: Sequence[int] | np.ndarray | range, workers: int = 2,
                lookahead: int = 8, flags: int = cv2.IMREAD_COLOR, rgb: bool = True) -> Iterator[np.ndarray]:
    """Yield frames ``indices`` of ``source`` in order, decoded ``lookahead`` frames ahead by ``workers`` threads."""
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="frame-read") as pool:
        queue: collections.deque[Future] = collections.deque()
        remaining = iter(indices)
        try:
            for index in remaining:
                queue.append(pool.submit(source.read, int(index), flags, rgb))
                if len(queue) >= lookahead:
                    break
            while queue:
                image = queue.popleft().result()
                following = next(remaining, None)
                if following is not None:
                    queue.append(pool.submit(source.read, int(following), flags, rgb))
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


def encode_image(image: np.ndarray, suffix: str, rgb: bool = True, palette: np.ndarray | None = None,
                 quality: int = JPEG_QUALITY) -> bytes:
    """JPEG or PNG bytes of an image: RGB/RGBA when ``rgb``, else in cv2's BGR/BGRA order; one channel as grey,
    or as indices into ``palette`` (PNG only). JPEG bytes are what ``cv2.imwrite`` writes at ``quality``."""
    suffix = suffix.lower()
    if suffix == ".png":
        if not rgb and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
        return encode_png(image, palette)
    if rgb and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(suffix, image, params)
    if not ok:
        raise FrameError(f"{suffix} encoding of a {image.dtype} {image.shape} image failed")
    return data.tobytes()


def write_image(path: Path, image: np.ndarray, rgb: bool = True, palette: np.ndarray | None = None) -> None:
    """Write one image file (see ``encode_image``)."""
    path = Path(path)
    data = encode_image(image, path.suffix, rgb, palette)
    try:
        path.write_bytes(data)
    except OSError as error:
        raise FrameError(f"{path}: could not be written ({error})") from error


class BackgroundWriter:
    """Run write jobs on a thread pool, at most ``max_pending`` queued; the first failure is re-raised.

    ``consume``, when given, receives each job's result in submission order,
    on the thread that submits (a zip archive is written by one thread while
    the pool encodes). Use as a context manager: leaving the block waits for
    every job, so the caller can rename its temporary output into place.
    """

    def __init__(self, workers: int = 2, max_pending: int = 16,
                 consume: Callable[[Any], None] | None = None) -> None:
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="frame-write")
        self._pending: collections.deque[Future] = collections.deque()
        self._max_pending = max(1, max_pending)
        self._consume = consume

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        while len(self._pending) >= self._max_pending:
            self._finish_oldest()
        self._pending.append(self._pool.submit(job, *args))

    def _finish_oldest(self) -> None:
        result = self._pending.popleft().result()
        if self._consume is not None:
            self._consume(result)

    def image(self, path: Path, image: np.ndarray, rgb: bool = True) -> None:
        """Queue ``write_image``; the array must not be modified afterwards."""
        self.submit(write_image, path, image, rgb)

    def wait(self) -> None:
        while self._pending:
            self._finish_oldest()

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


class FrameArchiveWriter:
    """Write a new frame archive: ``add(index, encoded bytes)`` from one thread, in any index order.

    ``staged()`` holds what is added inside it in a spool file and appends it
    to the archive only when the block ends without an error, so a recording
    that fails half-way leaves none of its frames behind. Use as a context
    manager; the archive is complete (its central directory written) on exit.
    """

    def __init__(self, path: str | Path, suffix: str) -> None:
        self.path = Path(path)
        if self.path.suffix != ARCHIVE_SUFFIX:
            raise ValueError(f"{self.path}: a frame archive is named <kind>{ARCHIVE_SUFFIX}")
        self.suffix = suffix
        self._zip = zipfile.ZipFile(self.path, "x", zipfile.ZIP_STORED, allowZip64=True)
        self._spool: Any = None
        self._spooled: list[tuple[int, int]] = []
        self.count = 0

    def add(self, index: int, data: bytes) -> None:
        if self._spool is not None:
            self._spool.write(data)
            self._spooled.append((int(index), len(data)))
            return
        # A fixed timestamp: the same frames give the same archive bytes, so DVC sees an unchanged output.
        info = zipfile.ZipInfo(f"{int(index)}{self.suffix}", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        self._zip.writestr(info, data)
        self.count += 1

    def add_image(self, index: int, image: np.ndarray, rgb: bool = True, palette: np.ndarray | None = None) -> None:
        self.add(index, encode_image(image, self.suffix, rgb, palette))

    @contextlib.contextmanager
    def staged(self) -> Iterator[None]:
        if self._spool is not None:
            raise RuntimeError("FrameArchiveWriter.staged() does not nest")
        with tempfile.TemporaryFile(dir=self.path.parent) as spool:
            self._spool, self._spooled = spool, []
            try:
                yield
            except BaseException:
                self._spool = None
                raise
            self._spool = None
            spool.seek(0)
            for index, size in self._spooled:
                self.add(index, spool.read(size))

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "FrameArchiveWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
