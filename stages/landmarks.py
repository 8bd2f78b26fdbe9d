"""DVC stage ``landmarks@<ID>``: FaceMesh 478 points and iBUG-68 landmarks for every cropped frame.

Writes ``data/processed/<ID>/landmarks/``: ``lms478.npy`` [N, 478, 3] and
``lms68.npy`` [N, 68, 2] in pixels (``python -m stages.export_ernerf`` writes
them as ER-NeRF's ``<i>.lms`` text), ``lms68_dlib.npy`` [N, 68, 2] (dlib's
68-point predictor on FaceMesh's face box, ``landmarks.dlib_points``; absent
without dlib), ``detected.npy`` [N] (False where a frame
was interpolated), ``usable.npy`` [N] (False for the frames left out of
training and evaluation: recordings without any face, and gaps without a face
longer than ``long_gap_frames``), ``report.json`` (gaps,
dropped recordings, several-face recordings, excluded frames by reason) and
``manifest.json``.
"""

from __future__ import annotations

import json
import logging
from contextlib import closing
from pathlib import Path
from typing import Mapping

import numpy as np

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.config import to_dict
from talkhead_models.data.manifest import write_manifest
from talkhead_models.preprocess.frames import open_frames, read_clips, read_frames, retain_freed_memory
from talkhead_models.data.landmark_arrays import DETECTED_FILE, DLIB68_FILE, POINTS68_FILE, POINTS478_FILE, USABLE_FILE
from talkhead_models.preprocess import dlib_face
from talkhead_models.preprocess.landmarks import LandmarksConfig, detect, fill_gaps, smooth

log = logging.getLogger(__name__)


def run(cfg: LandmarksConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
        identity: str | None = None) -> StageResult:
    retain_freed_memory()
    crop = inputs["crop"]
    frame_archive = open_frames(crop / "ori_imgs.zip")
    n_frames = frame_archive.contiguous_count()
    clips = read_clips(crop / "clips.parquet", n_frames)
    with atomic_dir(outputs["landmarks"]) as tmp:
        points478 = np.lib.format.open_memmap(tmp / POINTS478_FILE, mode="w+", dtype=np.float32,
                                              shape=(n_frames, 478, 3))
        points68 = np.lib.format.open_memmap(tmp / POINTS68_FILE, mode="w+", dtype=np.float32,
                                             shape=(n_frames, 68, 2))
        with closing(read_frames(frame_archive, range(n_frames), workers=cfg.workers)) as frames:
            detected, summary = detect(frames, clips, cfg, points478, points68)
        usable = fill_gaps([points478, points68], detected, clips, cfg, summary)
        smooth([points478, points68], usable, clips, cfg.smooth_sigma)
        with_dlib = cfg.dlib_points and not dlib_face.unavailable()
        if with_dlib:
            dlib68 = np.lib.format.open_memmap(tmp / DLIB68_FILE, mode="w+", dtype=np.float32, shape=(n_frames, 68, 2))
            with closing(read_frames(frame_archive, range(n_frames), workers=cfg.workers)) as frames:
                dlib_face.points_around(frames, points68, usable, dlib68)
            dlib68.flush()
            del dlib68
        elif cfg.dlib_points:
            log.warning("%s: no %s (%s): the tracker fits FaceMesh's points alone", identity, DLIB68_FILE,
                        dlib_face.unavailable())
        points478.flush()
        points68.flush()
        np.save(tmp / DETECTED_FILE, detected)
        np.save(tmp / USABLE_FILE, usable)
        del points478, points68
        (tmp / "report.json").write_text(json.dumps(summary.to_json(), indent=1))
        write_manifest(tmp, to_dict(cfg), stage="landmarks")
    metrics = {**summary.metrics(), "dlib_points": float(with_dlib)}
    log.info("landmarks of %s: %d frames, %.2f%% with a face, %d gaps (%d long), %d recordings dropped",
             identity, n_frames, 100 * metrics["detection_rate"], len(summary.gaps), len(summary.long_gaps),
             len(summary.dropped_clips))
    if summary.excluded_frames:
        log.warning("%s: %d of %d frames left out of training and evaluation (usable.npy): %d in %d gaps longer than "
                    "long_gap_frames=%d, %d in %d recordings without any face; report.json lists them", identity,
                    summary.excluded_frames, n_frames, summary.long_gap_frames, len(summary.long_gaps),
                    cfg.long_gap_frames, summary.dropped_frames, len(summary.dropped_clips))
    return StageResult(metrics=metrics, artifacts=[outputs["landmarks"] / "report.json"])


STAGE = Stage(
    name="landmarks",
    config=LandmarksConfig,
    section="landmarks",
    run=run,
    inputs={"crop": "data/processed/{identity}/crop"},
    outputs={"landmarks": "data/processed/{identity}/landmarks"},
    description=__doc__,
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
