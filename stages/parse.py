"""DVC stage ``parse@<ID>``: semantic masks, the static background, gt and torso images.

Writes ``data/processed/<ID>/parse/``: the frame archives ``parsing.zip``
(``<i>.png``, ER-NeRF's colours and bytes), ``semantic.zip`` (label ids: 0
background, 1 head, 2 neck, 3 torso, 4 lips, 5 mouth interior),
``gt_imgs.zip`` (``<i>.jpg``) and ``torso_imgs.zip`` (RGBA, neck in-painted),
plus ``bc.jpg`` and ``manifest.json``. Frames the landmarks stage flagged
unusable (recordings without a face, long gaps without one) are not in the
archives.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.config import to_dict
from talkhead_models.data.manifest import write_manifest
from talkhead_models.data.landmark_arrays import read_landmarks
from talkhead_models.preprocess.frames import open_frames, retain_freed_memory
from talkhead_models.preprocess.parsing import ParseConfig, parse_frames

log = logging.getLogger(__name__)


def run(cfg: ParseConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
        identity: str | None = None) -> StageResult:
    retain_freed_memory()
    frames = open_frames(inputs["crop"] / "ori_imgs.zip")
    landmarks = read_landmarks(inputs["landmarks"], frames.contiguous_count())
    with atomic_dir(outputs["parse"]) as tmp:
        summary = parse_frames(frames, landmarks.points478, landmarks.usable, cfg, tmp)
        write_manifest(tmp, to_dict(cfg), stage="parse")
    metrics = summary.metrics()
    log.info("parse of %s: %d of %d frames, head %.1f%% of the pixels, background %.1f%% seen",
             identity, summary.parsed, summary.frames, 100 * summary.head_fraction, 100 * summary.background_seen)
    return StageResult(metrics=metrics, artifacts=[outputs["parse"] / "bc.jpg"])


STAGE = Stage(
    name="parse",
    config=ParseConfig,
    section="parse",
    run=run,
    inputs={"crop": "data/processed/{identity}/crop", "landmarks": "data/processed/{identity}/landmarks"},
    outputs={"parse": "data/processed/{identity}/parse"},
    description=__doc__,
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
