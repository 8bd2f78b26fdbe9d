"""DVC stage ``synth``: generate the synthetic MEAD-like corpus with ground truth."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.data.synthetic.corpus import SynthConfig, generate

log = logging.getLogger(__name__)


def run(cfg: SynthConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> StageResult:
    with atomic_dir(outputs["corpus"]) as tmp:
        rows = generate(cfg, tmp)
    clips = [r for r in rows if r["kind"] == "clip"]
    videos = [r for r in rows if r["kind"] == "video"]
    metrics = {
        "identities": float(len(cfg.identity_names())),  # the small ones too
        "clips": float(len(clips)),
        "clip_frames": float(sum(r["frames"] for r in clips)),
        "video_frames": float(sum(r["frames"] for r in videos)),
        "clip_seconds": float(sum(r["duration_s"] for r in clips)),
        "video_seconds": float(sum(r["duration_s"] for r in videos)),
    }
    log.info("corpus at %s: %s", outputs["corpus"], json.dumps(metrics))
    return StageResult(metrics=metrics)


STAGE = Stage(
    name="synth",
    config=SynthConfig,
    section="synth",
    run=run,
    outputs={"corpus": "data/raw/synthetic"},
    description=__doc__,
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
