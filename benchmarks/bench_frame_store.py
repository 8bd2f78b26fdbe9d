"""How to store an identity's per-frame images: size, file count and random-access read speed, measured.

The candidates hold the same frames (an identity's ``crop/ori_imgs.zip``):

* ``jpeg_folder``: ER-NeRF's ``ori_imgs/<i>.jpg``, one file per frame (our layout before v2);
* ``zip_archive``: the same JPEG bytes in one uncompressed zip, read from a memory map (our layout since v2);
* ``raw_npy``: decoded uint8 pixels in one ``.npy``, memory-mapped (no decoding at all);
* ``ffv1_video``: the decoded pixels as a lossless all-intra FFV1 video (PyAV), one seek per frame.

Training reads frames in random order, so the timed read is ``--frames`` random frame indices decoded to RGB
after one warm-up pass (page cache and memory maps touched, as in a training run), ``--repetitions`` rounds
with the stores taking turns (median and spread, 1 thread); opening a store (what each stage and trainer pays
once, e.g. listing a folder) is timed separately. Writes reports/bench/frame_store.json::

    python -m benchmarks.bench_frame_store [--archive data/processed/S001/crop/ori_imgs.zip]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from benchmarks.bench_components import MIN_REPETITIONS, machine_info, summary
from stages._stage import git_commit
from talkhead_models.atomic import write_text
from talkhead_models.preprocess.frames import FrameArchive, FrameFolder

logger = logging.getLogger("benchmarks.bench_frame_store")


def build_stores(archive: FrameArchive, folder: Path) -> dict[str, Path]:
    """Every candidate store of ``archive``'s frames under ``folder``."""
    jpegs = folder / "ori_imgs"
    jpegs.mkdir()
    first = archive.read(0)
    pixels = np.lib.format.open_memmap(folder / "frames.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(archive), *first.shape))
    for index in range(len(archive)):
        (jpegs / f"{index}.jpg").write_bytes(bytes(archive.encoded(index)))
        pixels[index] = archive.read(index)
    pixels.flush()
    del pixels
    video = folder / "frames.mkv"
    _write_ffv1(archive, video)
    return {"jpeg_folder": jpegs, "zip_archive": archive.path, "raw_npy": folder / "frames.npy", "ffv1_video": video}


def _write_ffv1(archive: FrameArchive, path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(25))
        first = archive.read(0)
        stream.width, stream.height, stream.pix_fmt = first.shape[1], first.shape[0], "bgr0"
        stream.options = {"g": "1"}  # every frame a key frame: random access without decoding neighbours
        for index in range(len(archive)):
            frame = av.VideoFrame.from_ndarray(archive.read(index), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def openers(stores: dict[str, Path]) -> dict[str, Callable[[], Callable[[int], np.ndarray]]]:
    """Per store: a function that opens it and returns a frame reader (index -> RGB uint8)."""

    def folder() -> Callable[[int], np.ndarray]:
        return FrameFolder(stores["jpeg_folder"], ".jpg").read

    def archive() -> Callable[[int], np.ndarray]:
        return FrameArchive(stores["zip_archive"]).read

    def raw() -> Callable[[int], np.ndarray]:
        pixels = np.load(stores["raw_npy"], mmap_mode="r")
        return lambda index: np.array(pixels[index])

    def video() -> Callable[[int], np.ndarray]:
        import av

        container = av.open(str(stores["ffv1_video"]))
        stream = container.streams.video[0]
        step = int(round(1 / (25 * stream.time_base)))

        def read(index: int) -> np.ndarray:
            container.seek(index * step, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts >= index * step:
                    return frame.to_ndarray(format="rgb24")
            raise IndexError(index)

        return read

    return {"jpeg_folder": folder, "zip_archive": archive, "raw_npy": raw, "ffv1_video": video}


def size_of(path: Path) -> tuple[int, int]:
    """(bytes, files) of a file or a folder."""
    if path.is_file():
        return path.stat().st_size, 1
    files = [p for p in path.iterdir() if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def run(archive_path: Path, n_frames: int, repetitions: int, seed: int = 0) -> dict:
    cv2.setNumThreads(1)
    archive = FrameArchive(archive_path)
    rng = np.random.default_rng(seed)
    order = rng.integers(0, len(archive), n_frames)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="frame_store_") as scratch:
        stores = build_stores(archive, Path(scratch))
        reference = {int(i): archive.read(int(i)) for i in order[:8]}
        readers, open_times, read_times = {}, {}, {}
        for name, opener in openers(stores).items():
            open_times[name] = []
            for _ in range(repetitions):
                start = time.perf_counter()
                opener()
                open_times[name].append(time.perf_counter() - start)
            readers[name] = opener()
            for index in order:  # warm-up: page cache and memory map touched, as in a training run
                readers[name](int(index))
            read_times[name] = []
        for _ in range(repetitions):  # round robin, so a slow spell of the machine lands on every store
            for name, read in readers.items():
                start = time.perf_counter()
                for index in order:
                    read(int(index))
                read_times[name].append((time.perf_counter() - start) / n_frames)
        for name, read in readers.items():
            nbytes, files = size_of(stores[name])
            exact = all(np.array_equal(read(i), frame) for i, frame in reference.items())
            results[name] = {"bytes": nbytes, "files": files, "bytes_per_frame": nbytes / len(archive),
                             "pixels_equal_to_the_jpeg_decode": exact, "open": summary(open_times[name]),
                             "random_read_per_frame": summary(read_times[name])}
            logger.info("%s: %.1f MB in %d files, open %.1f ms, random read %.3f ms/frame", name, nbytes / 1e6,
                        files, 1e3 * results[name]["open"]["median_s"],
                        1e3 * results[name]["random_read_per_frame"]["median_s"])
        shutil.rmtree(stores["jpeg_folder"])
    first = archive.read(0)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(Path(__file__).resolve().parents[1]),
        "machine": machine_info(),
        "threads": 1,
        "method": __doc__.split("\n\n")[1].strip(),
        "frames": len(archive), "frame_shape": list(first.shape), "source": str(archive_path),
        "random_frames_per_repetition": n_frames, "repetitions": repetitions, "seed": seed,
        "stores": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=Path("data/processed/S001/crop/ori_imgs.zip"))
    parser.add_argument("--frames", type=int, default=300, help="random frames read per repetition")
    parser.add_argument("--repetitions", type=int, default=MIN_REPETITIONS)
    parser.add_argument("--output", type=Path, default=Path("reports/bench/frame_store.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = run(args.archive, args.frames, args.repetitions)
    write_text(args.output, json.dumps(results, indent=2) + "\n")
    logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
