"""DVC stage ``crop@<ID>``: face-centred square frames at 25 fps and the aligned 16 kHz audio.

Writes ``data/processed/<ID>/crop/``: ``ori_imgs.zip`` (frame archive of ``<i>.jpg``, numbered from 0
across the identity's recordings, in ``talkhead_models.data.sources.recordings``
order), ``aud.wav`` (16 kHz mono; frame i covers [i/25, (i+1)/25) s),
``clips.parquet`` (one row per recording: frame range, source, crop box) and
``manifest.json``. Each recording is resampled by presentation time, its
time 0 being its first video frame's, so variable-rate, 29.97 fps and
rotated phone videos and audio that starts early or late stay in sync. How
recordings are validated, resampled and cropped, and which ones are
dropped: ``talkhead_models/preprocess/video.py``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.config import to_dict, validate_name
from talkhead_models.data.manifest import write_manifest
from talkhead_models.preprocess.video import CropConfig, crop_identity

log = logging.getLogger(__name__)


def run(cfg: CropConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
        identity: str | None = None) -> StageResult:
    validate_name(identity, "identity")
    with atomic_dir(outputs["crop"]) as tmp:
        summary = crop_identity(cfg, inputs["raw"], identity, tmp)
        report = {"dropped": [{"file": name, "reason": why} for name, why in summary.dropped],
                  "several_faces": summary.several_faces, **summary.metrics()}
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        write_manifest(tmp, {"identity": identity, **to_dict(cfg)}, stage="crop")
    return StageResult(metrics=summary.metrics(), artifacts=[outputs["crop"] / "report.json"])


STAGE = Stage(
    name="crop",
    config=CropConfig,
    section="crop",
    run=run,
    inputs={"raw": "data/raw/{source}"},
    outputs={"crop": "data/processed/{identity}/crop"},
    description=__doc__,
    shared_sections=("data",),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
