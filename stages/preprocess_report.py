"""DVC stage ``preprocess_report``: reports/preprocess_accuracy.md and .json, preprocessing against ground truth.

Landmark NME (68 and inner 51 points), detection rate and gaps, dlib's
68-point detector beside FaceMesh on a sample of frames, and mask IoU of
every processed identity, and overall; then head rotation, focal and
reprojection errors of the tracker and the DTW warp error of the emotion
pairs (talkhead_models.preprocess.tracking_accuracy, with the corpus face
model of ``--face-model``). Identities whose source has no ground truth are
listed with the numbers that need none; the tracking section leaves out
identities not tracked yet.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from stages._stage import Stage, StageResult
from talkhead_models.atomic import write_text
from talkhead_models.config import NonNegativeInt, PositiveInt
from talkhead_models.data import DataConfig
from talkhead_models.preprocess import tracking_accuracy
from talkhead_models.preprocess.accuracy import SECTIONS, Report, build_report
from talkhead_models.preprocess.landmark_comparison import dlib_landmark_section

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessReportConfig:
    """What the accuracy report measures."""

    data: DataConfig = field(default_factory=DataConfig)
    """The identities (``data.identities``; empty = every processed identity) and the source."""
    frame_stride: PositiveInt = 1
    """Compare every n-th processed frame (1 = all)."""
    dlib_frame_stride: NonNegativeInt = 25
    """Run dlib's 68-point detector beside FaceMesh on every n-th frame with ground truth (0 = not at all); it takes
    about 0.013 s a 256 px frame, so 25 measures about 440 frames of the demo corpus in 6 s."""


def processed_identities(processed: Path, wanted: tuple[str, ...]) -> list[str]:
    """``wanted``, or every identity folder under ``processed`` that has landmarks."""
    if wanted:
        missing = [name for name in wanted if not (processed / name).is_dir()]
        if missing:
            raise FileNotFoundError(f"{processed}: no processed identity {missing}; run the preprocessing stages "
                                    "(`dvc repro parse`) or fix data.identities in params.yaml")
        return list(wanted)
    found = sorted(p.name for p in processed.iterdir() if (p / "landmarks").is_dir())
    if not found:
        raise FileNotFoundError(f"{processed}: no identity has a landmarks/ folder; run `dvc repro parse` first")
    return found


@dataclass
class ReportWithTracking(Report):
    """The per-frame sections' report plus the tracking and pairing section, whose bars join the target table."""

    tracking: dict = field(default_factory=dict)
    tracking_markdown: str = ""

    @classmethod
    def extend(cls, report: Report, tracking: dict, markdown: str) -> "ReportWithTracking":
        return cls(**{f.name: getattr(report, f.name) for f in fields(Report)}, tracking=tracking,
                   tracking_markdown=markdown)

    def targets(self) -> list[dict]:
        return super().targets() + tracking_accuracy.targets(self.tracking)

    def to_json(self) -> dict:
        return {**super().to_json(), "tracking": self.tracking}

    def to_markdown(self) -> str:
        return super().to_markdown() + "\n" + self.tracking_markdown


def run(cfg: PreprocessReportConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> StageResult:
    identities = processed_identities(inputs["processed"], tuple(cfg.data.identities))
    sections = SECTIONS + ((dlib_landmark_section(cfg.dlib_frame_stride),) if cfg.dlib_frame_stride else ())
    report = build_report(inputs["processed"], inputs["raw"], identities, sections, cfg.frame_stride)
    if "face_model" in inputs:
        tracking, markdown = tracking_accuracy.report(inputs["processed"], inputs["raw"], inputs["face_model"],
                                                      identities)
        report = ReportWithTracking.extend(report, tracking, markdown)
    write_text(outputs["report"], report.to_markdown())
    write_text(outputs["metrics"], json.dumps(report.to_json(), indent=1) + "\n")
    metrics = {}
    for section, rows in report.values.items():
        for name, value in rows.get("overall", {}).items():
            metrics[f"{section.lower().replace(' ', '_')}.{name}"] = value
    if isinstance(report, ReportWithTracking):
        for name, value in report.tracking.get("all", {}).items():
            metrics[f"tracking.{name}"] = value
    for target in report.targets():
        level = logging.INFO if target["met"] else logging.WARNING
        log.log(level, "%s: %s -> %.4g (%s)", target["section"], target["target"], target["value"],
                "met" if target["met"] else "NOT met")
    return StageResult(metrics=metrics, artifacts=[outputs["report"], outputs["metrics"]])


STAGE = Stage(
    name="preprocess_report",
    config=PreprocessReportConfig,
    section="preprocess_report",
    run=run,
    inputs={"raw": "data/raw/{source}", "processed": "data/processed", "face_model": "data/models/face_model"},
    outputs={"report": "reports/preprocess_accuracy.md", "metrics": "reports/preprocess_accuracy.json"},
    description=__doc__,
    shared_sections=("data",),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
