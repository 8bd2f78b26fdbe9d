"""DVC stage ``pretrain_report``: reports/pretrain.md and reports/pretrain.json from the two corpus-level models
(their metrics, scores, configs, and the segments and test-frame audits their training stages wrote)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from stages._stage import Stage, StageResult
from talkhead_models.atomic import write_text
from talkhead_models.pretrained.report import render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainReportConfig:
    """The report has no settings of its own; it reads what the two training stages wrote."""


FILES = ("metrics.json", "scores.csv", "config.json", "segments.csv", "data_audit.csv")


def _read(folder: Path) -> tuple[dict, pd.DataFrame, dict, tuple[pd.DataFrame, pd.DataFrame]]:
    missing = [folder / name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{missing}: not written; re-run the stage that makes {folder} (`dvc repro`)")
    return (json.loads((folder / "metrics.json").read_text()), pd.read_csv(folder / "scores.csv"),
            json.loads((folder / "config.json").read_text()),
            (pd.read_csv(folder / "segments.csv"), pd.read_csv(folder / "data_audit.csv")))


def run(cfg: PretrainReportConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> StageResult:
    sync_metrics, sync_table, sync_config, sync_split = _read(inputs["sync_expert"])
    motion_metrics, motion_table, motion_config, motion_split = _read(inputs["audio2motion"])
    markdown, report = render(sync_metrics, sync_table, sync_config, motion_metrics, motion_table, motion_config,
                              sync_split, motion_split)
    write_text(outputs["report"], markdown)
    write_text(outputs["metrics"], json.dumps(report, indent=1, default=str) + "\n")
    met = sum(bool(check["met"]) for check in report["targets"])
    log.info("pretrain report: %d of %d targets met", met, len(report["targets"]))
    return StageResult(metrics={"targets_met": float(met), "targets": float(len(report["targets"])),
                                "test_frames_read": float(sum(v for k, v in report["data"].items()
                                                              if k.startswith("test_frames_read_")))},
                       artifacts=[outputs["report"]])


STAGE = Stage(
    name="pretrain_report",
    config=PretrainReportConfig,
    section="pretrain_report",
    run=run,
    inputs={"sync_expert": "data/models/sync_expert", "audio2motion": "data/models/audio2motion"},
    outputs={"report": "reports/pretrain.md", "metrics": "reports/pretrain.json"},
    description=__doc__,
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
