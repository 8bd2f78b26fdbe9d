"""Speed of head-pose / expression tracking on a 512 px synthetic video's FaceMesh landmarks.

Usage: ``python -m benchmarks.bench_tracking [--cores 2] [--seconds 30] [--long-seconds 300]
[--workdir DIR] [--output reports/bench/tracking.json]``.

A one-identity corpus (one neutral sentence and a ``--seconds`` long video,
512 px) is generated and its frames go through FaceMesh, in a fresh temporary
folder removed at the end, or once under ``--workdir`` (cached there for the
next runs given the same folder). The corpus face model is built from those landmarks,
then the whole tracking of the identity (focal search and full fit, what
``track@<ID>`` does) is timed in a process pinned to ``--cores`` CPU cores
(the tracker itself runs torch on ``TrackConfig.threads`` threads). The
``--long-seconds`` run repeats the landmarks (each copy its own recording, so
no smoothing across the joins) to time a 5-minute video; tracking time
depends on the number of frames, not on what they show.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as ``python -m`` does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("benchmarks.bench_tracking")

IDENTITY = "S001"
FPS_TARGET = 100.0
IMAGE_SIZE = 512


def generate_corpus(workdir: Path, seconds: float) -> Path:
    """The benchmark corpus, generated once per length."""
    from talkhead_models.data.synthetic.corpus import SynthConfig, generate

    corpus = workdir / f"corpus_{seconds:g}s"
    if not (corpus / "corpus.json").is_file():
        corpus.mkdir(parents=True, exist_ok=True)
        logger.info("generating a %g s %d px synthetic video under %s", seconds, IMAGE_SIZE, corpus)
        generate(SynthConfig(image_size=IMAGE_SIZE, n_identities=1, n_sentences=1, emotions=("neutral",),
                             video_seconds=seconds), corpus)
    return corpus


def corpus_landmarks(corpus: Path):
    """FaceMesh points [N, 478, 3], detection flags [N] and recording labels [N] of every frame (cached)."""
    import numpy as np

    from talkhead_models.data.sources import recordings
    from talkhead_models.media import iter_frames
    from talkhead_models.preprocess.facemesh import FaceMesh

    cache = corpus / "bench_landmarks.npz"
    if not cache.is_file():
        points, labels = [], []
        with FaceMesh(static=False) as mesh:
            for number, recording in enumerate(recordings("synthetic", corpus, IDENTITY)):
                for frame in iter_frames(recording.video, IMAGE_SIZE, IMAGE_SIZE):
                    found = mesh(frame)
                    points.append(np.full((478, 3), np.nan, np.float32) if found is None else found)
                    labels.append(number)
        points = np.stack(points)
        np.savez(cache, points=points, detected=np.isfinite(points).all(axis=(1, 2)), labels=np.array(labels))
    with np.load(cache) as data:
        return data["points"], data["detected"], data["labels"]


def machine(cores: list[int]) -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "cores_used": cores, "torch": torch.__version__,
            "load_average_at_start": list(os.getloadavg())}


def timed_track(model, points, detected, labels, cfg) -> tuple[float, object]:
    from talkhead_models.preprocess.tracking import track

    started = time.perf_counter()
    result = track(model, points, detected, labels, IMAGE_SIZE, cfg, IDENTITY)
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=2, help="CPU cores the process may use (default 2)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the synthetic video")
    parser.add_argument("--long-seconds", type=float, default=300.0, help="length of the repeated long run (0: skip)")
    parser.add_argument("--workdir", default=None,
                        help="corpus and cache folder kept for later runs (default: a fresh temporary folder)")
    parser.add_argument("--output", default="reports/bench/tracking.json", help="result JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workdir is not None:
        return benchmark(args, Path(args.workdir))
    with tempfile.TemporaryDirectory(prefix="bench_tracking_") as workdir:
        return benchmark(args, Path(workdir))


def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    """Time the tracking with the corpus and caches in ``workdir``; write ``args.output``."""
    import numpy as np
    import torch

    from talkhead_models.atomic import write_text
    from talkhead_models.preprocess.face_model import FaceModelConfig, IdentityLandmarks, build_face_model
    from talkhead_models.preprocess.tracking import TrackConfig

    cores = sorted(os.sched_getaffinity(0))[:args.cores]
    os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))
    info = machine(cores)
    corpus = generate_corpus(workdir, args.seconds)
    points, detected, labels = corpus_landmarks(corpus)
    started = time.perf_counter()
    built = build_face_model([IdentityLandmarks(IDENTITY, points, detected, IMAGE_SIZE)], FaceModelConfig(),
                             workdir / "no-weights")
    model_seconds = time.perf_counter() - started
    cfg = TrackConfig()
    seconds, result = timed_track(built.model, points, detected, labels, cfg)
    runs = {"video": {"frames": int(len(points)), "seconds": seconds, "frames_per_second": len(points) / seconds,
                      "focal_px": result.focal, "focal_status": result.focal_status,
                      "residual_median_px": float(np.median(result.residual_px))}}
    if args.long_seconds > 0:
        copies = max(1, int(np.ceil(args.long_seconds * 25.0 / len(points))))
        long_labels = np.concatenate([labels + copy * (labels.max() + 1) for copy in range(copies)])
        seconds, _ = timed_track(built.model, np.tile(points, (copies, 1, 1)), np.tile(detected, copies),
                                 long_labels, cfg)
        frames = len(long_labels)
        runs["long"] = {"frames": frames, "video_seconds": frames / 25.0, "seconds": seconds,
                        "frames_per_second": frames / seconds}
    info["load_average_at_end"] = list(os.getloadavg())
    slowest = min(run["frames_per_second"] for run in runs.values())
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "image_size": IMAGE_SIZE,
        "face_model_seconds": model_seconds,
        "face_model": {"source": built.model.source, "points": built.model.n_points, "exp": built.model.n_exp},
        "tracker": {"tracked_points": cfg.max_points, "torch_threads": cfg.threads, "iterations": cfg.iterations,
                    "focal_candidates": cfg.focal_grid + cfg.focal_refine_steps},
        "runs": runs,
        "frames_per_second": slowest,
        "target_frames_per_second": FPS_TARGET,
        "target_met": slowest >= FPS_TARGET,
    }
    write_text(args.output, json.dumps(report, indent=2) + "\n")
    logger.info("tracking: %s", json.dumps({k: round(v["frames_per_second"], 1) for k, v in runs.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
