"""Speed and peak memory of the preprocessing stages (crop, landmarks, parse) on a 512 px synthetic video.

Usage: ``python -m benchmarks.bench_preprocess [--cores 2] [--seconds 30] [--long-seconds 300]
[--workdir DIR] [--output reports/bench/preprocess.json]``.

A one-identity corpus (one neutral sentence and a ``--seconds`` long video,
512 px) is generated in a fresh temporary folder, removed at the end, or once
under ``--workdir`` and reused by the next runs given the same folder. Each stage then runs with its
default (paper, 512 px) config in a fresh process pinned to ``--cores`` CPU
cores, so its peak RSS is its own; frames/s counts processed frames over the
stage's wall time, and "together" is frames over the summed times (the stages
run one after another). ``--long-seconds`` also runs landmarks and parse on
a long video made by repeating the crop stage's frames (hard links, no
extra disk), to show that memory does not grow with the video's length.
When ``stages/crop.py`` is absent the crop step is replaced by plain frame
extraction (no face detection) and the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as ``python -m`` does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from talkhead_models.preprocess.frames import FrameArchive, FrameArchiveWriter  # noqa: E402  (after the path)

logger = logging.getLogger("benchmarks.bench_preprocess")

IDENTITY = "S001"
LONG_IDENTITY = "S001long"
FPS_TARGET = 25.0
RSS_TARGET_MB = 2048.0


def generate_corpus(workdir: Path, seconds: float) -> Path:
    """The benchmark corpus, generated once per length."""
    from talkhead_models.data.synthetic.corpus import SynthConfig, generate

    corpus = workdir / f"corpus_{seconds:g}s"
    if not (corpus / "corpus.json").is_file():
        corpus.mkdir(parents=True, exist_ok=True)
        logger.info("generating a %g s 512 px synthetic video under %s", seconds, corpus)
        generate(SynthConfig(image_size=512, n_identities=1, n_sentences=1, emotions=("neutral",),
                             video_seconds=seconds), corpus)
    return corpus


def _run_stage(name: str, root: str, identity: str, cores: list[int], results) -> None:
    """Child process: one stage with its default config; reports wall time and peak RSS."""
    os.sched_setaffinity(0, cores)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import importlib

    from talkhead_models.config import from_dict

    root_path = Path(root)
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    started = time.perf_counter()
    stage = importlib.import_module(f"stages.{name}").STAGE
    inputs, outputs = stage.paths(root_path, identity=identity, source="synthetic")
    cfg = from_dict(stage.config, {})
    metrics = stage.run(cfg, inputs, outputs, identity=identity).metrics
    seconds = time.perf_counter() - started
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    results.put({
        "seconds": seconds,
        "cpu_seconds": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime - cpu_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    })


def run_stage(name: str, root: Path, identity: str, cores: list[int]) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_run_stage, args=(name, str(root), identity, cores, results))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"stage {name} failed in its benchmark process (exit code {process.exitcode})")
    result = results.get()
    frames = len(FrameArchive(root / "data" / "processed" / identity / "crop" / "ori_imgs.zip"))
    result.update(frames=frames, fps=frames / result["seconds"],
                  cpu_ms_per_frame=1000 * result["cpu_seconds"] / frames)
    logger.info("%s@%s: %d frames in %.1f s = %.1f frames/s (%.1f ms CPU a frame), peak RSS %.0f MB", name,
                identity, frames, result["seconds"], result["fps"], result["cpu_ms_per_frame"],
                result["peak_rss_mb"])
    return result


def make_long_identity(root: Path, seconds: float) -> int:
    """A crop folder repeating the benchmark identity's frames to ``seconds``, as one recording."""
    import pandas as pd

    source = root / "data" / "processed" / IDENTITY / "crop"
    target = root / "data" / "processed" / LONG_IDENTITY / "crop"
    target.mkdir(parents=True)
    frames = FrameArchive(source / "ori_imgs.zip")
    count = int(round(seconds * 25))
    with FrameArchiveWriter(target / "ori_imgs.zip", frames.suffix) as archive:
        for index in range(count):
            archive.add(index, bytes(frames.encoded(index % len(frames))))
    clips = pd.read_parquet(source / "clips.parquet")
    row = clips[clips.kind == "video"].iloc[0].to_dict()
    row.update(first_frame=0, last_frame=count - 1, truth=None)
    pd.DataFrame([row], columns=clips.columns).to_parquet(target / "clips.parquet", index=False)
    return count


def machine_info(cores: list[int]) -> dict:
    import cv2
    import mediapipe

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cores_used": cores,
        "load_average_at_start": list(os.getloadavg()),
        "opencv": cv2.__version__,
        "mediapipe": mediapipe.__version__,
    }


def run(cores: int, seconds: float, long_seconds: float, workdir: Path) -> dict:
    available = sorted(os.sched_getaffinity(0))
    pinned = available[:cores]
    corpus = generate_corpus(workdir, seconds)
    root = workdir / f"run_{os.getpid()}"
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "synthetic").symlink_to(corpus.resolve())
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(pinned),
        "image_size": 512,
        "video_seconds": seconds,
        "crop_stage": "stages.crop",
        "stages": {},
    }
    try:
        measure(results, root, pinned, long_seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def measure(results: dict, root: Path, pinned: list[int], long_seconds: float) -> None:
    for name in ("crop", "landmarks", "parse"):
        results["stages"][name] = run_stage(name, root, IDENTITY, pinned)
    stages = results["stages"]
    frames = stages["crop"]["frames"]
    total = sum(s["seconds"] for s in stages.values())
    peak = max(max(s["peak_rss_mb"], s["children_peak_rss_mb"]) for s in stages.values())
    cpu = sum(s["cpu_seconds"] for s in stages.values())
    results["together"] = {"frames": frames, "seconds": total, "fps": frames / total, "peak_rss_mb": peak,
                           "cpu_ms_per_frame": 1000 * cpu / frames}
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["targets"] = {"fps_at_least_25": frames / total >= FPS_TARGET, "rss_at_most_2GiB": peak <= RSS_TARGET_MB}
    if long_seconds > 0:
        count = make_long_identity(root, long_seconds)
        long = {name: run_stage(name, root, LONG_IDENTITY, pinned) for name in ("landmarks", "parse")}
        results["long_video"] = {"seconds_of_video": count / 25.0, "frames": count, "stages": long,
                                 "peak_rss_mb": max(s["peak_rss_mb"] for s in long.values())}
        results["targets"]["long_video_rss_at_most_2GiB"] = results["long_video"]["peak_rss_mb"] <= RSS_TARGET_MB
    logger.info("together: %.1f frames/s, peak RSS %.0f MB", frames / total, peak)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="CPU cores the stages may use (the target has 2)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the synthetic video")
    parser.add_argument("--long-seconds", type=float, default=0.0,
                        help="also run landmarks and parse on a video this long (repeated frames); 0 = skip")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the generated corpus here for later runs (default: a fresh temporary folder)")
    parser.add_argument("--output", type=Path, default=Path("reports/bench/preprocess.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as workdir:
            results = run(args.cores, args.seconds, args.long_seconds, Path(workdir))
    else:
        results = run(args.cores, args.seconds, args.long_seconds, args.workdir)
    from talkhead_models.atomic import write_text

    write_text(args.output, json.dumps(results, indent=2) + "\n")
    logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
