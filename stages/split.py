"""DVC stage ``split@<ID>``: the one table evaluation reads (``split.parquet``).

For the identity: its self-driven validation frame ranges (the last 1/11 of a
continuous video; held-out sentences of MEAD-like clips) and cross-driven
audio sources (other identities' held-out recordings, by raw path and time
range). Columns: talkhead_models.preprocess.splits.SPLIT_COLUMNS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pandas as pd

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.config import to_dict, validate_name
from talkhead_models.data import DataConfig
from talkhead_models.data.manifest import write_manifest
from talkhead_models.data.sources import identities as source_identities
from talkhead_models.data.sources import recordings
from talkhead_models.media import probe
from talkhead_models.preprocess.splits import SplitConfig, cross_rows, self_rows, split_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitStageConfig(SplitConfig):
    """The split rule plus the shared ``data`` section (source and identities for cross-driven audio)."""

    data: DataConfig = field(default_factory=DataConfig)
    """Shared params section ``data``."""


def recording_duration(path: Path) -> float:
    """Length of a recording in seconds, from the container's metadata (PyAV)."""
    duration = probe(path).duration
    if duration is None:
        raise ValueError(f"{path}: ffmpeg reports no duration; the file is damaged, re-export it")
    return duration


def run(cfg: SplitStageConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path], identity: str) -> StageResult:
    clips_path = inputs["crop"] / "clips.parquet"
    if not clips_path.is_file():
        raise FileNotFoundError(f"{clips_path} not found; run `dvc repro crop@{identity}`")
    clips = pd.read_parquet(clips_path)
    raw_root = inputs["corpus"]
    names = list(cfg.data.identities) or source_identities(cfg.data.source, raw_root)
    others = {validate_name(n, "identity"): recordings(cfg.data.source, raw_root, n) for n in names if n != identity}
    rows = self_rows(identity, clips, cfg) + cross_rows(identity, others, recording_duration, raw_root, cfg)
    table = split_table(rows)
    if not (table["role"] == "self").any():
        log.warning("%s: no self-driven validation frames (one sentence and no continuous video)", identity)
    if not others:
        log.warning("%s: no other identity in %s; no cross-driven audio", identity, raw_root)
    with atomic_dir(outputs["split"]) as tmp:
        table.to_parquet(tmp / "split.parquet", index=False)
        write_manifest(tmp, to_dict(cfg), "split")
    self_frames = table.loc[table["role"] == "self"].eval("last_frame - first_frame + 1").sum()
    metrics = {"self_rows": float((table["role"] == "self").sum()), "self_frames": float(self_frames),
               "cross_rows": float((table["role"] == "cross").sum())}
    log.info("%s: %d self-driven ranges (%d frames), %d cross-driven sources", identity, metrics["self_rows"],
             self_frames, metrics["cross_rows"])
    return StageResult(metrics=metrics)


STAGE = Stage(
    name="split",
    config=SplitStageConfig,
    section="split",
    run=run,
    inputs={"crop": "data/processed/{identity}/crop", "corpus": "data/raw/{source}"},
    outputs={"split": "data/processed/{identity}/split"},
    description=__doc__,
    shared_sections=("data",),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
