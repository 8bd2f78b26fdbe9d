"""DVC stage ``tables``: the papers' tables with this run's rows, the claims, and reports/index.html.

Reads every metric record the evaluate stages wrote
(``<metrics>/<method>/<identity>.json``, ``<identity>.seed<k>.json`` for
seed k > 0; first it checks that dvc.runs.yaml lists every run x seed of
params.yaml, stages/_runs.py), every training curve
(``<models>/<method>/<identity>/curve.csv``; the folder may not exist yet)
and the speed stage's alternated FPS timings (``<metrics>/speed.json``,
the speed stage's output; without it the FPS claims are not yet
measurable).
Writes ``<tables>/``: ``<table id>.md`` and ``.csv`` per paper table plus
``tables.md`` (all of them); ``claims.md``; ``index.html`` (one
self-contained page; sample frames and videos come from ``videos/`` beside
it, other reports beside it are linked); ``<plots>/psnr_vs_time.csv``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from stages._runs import check as check_stage_runs
from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir, write_text
from talkhead_models.config import NonNegativeInt, PositiveInt
from talkhead_models.reporting.records import SPEED_FILE
from talkhead_models.reporting import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_MEASURABLE, UNMEASURABLE, Evidence,
                                       build_tables, claims_markdown, collect_media, default_claims, evaluate_claims,
                                       load_curves, load_records, load_speed, psnr_vs_time_csv, render_index,
                                       tables_markdown, to_csv, to_markdown)

log = logging.getLogger(__name__)

LINKED_REPORTS = (("Dataset", "dataset.md"), ("Preprocessing accuracy", "preprocess_accuracy.md"),
                  ("Corpus-level models (pretraining)", "pretrain.md"))
"""Other reports that sit beside index.html, linked from it when they exist."""
VIDEOS_FOLDER = "videos"
"""Beside index.html: ``videos/<method>/<identity>/*.mp4|jpg`` from the evaluate stages."""


@dataclass(frozen=True)
class TablesConfig:
    """How the report is put together (no paper values: the papers' numbers live in the reporting package)."""

    static_margin_db: float = 3.0
    """Claim "every trained method beats the static row": the PSNR margin in dB."""
    nearest_pose_margin_db: float = 0.0
    """Claim "every trained method beats the nearest-pose row": the PSNR margin in dB."""
    frames_per_result: NonNegativeInt = 6
    """Sample frames embedded in index.html per (method, identity) (0: none)."""
    frame_width: PositiveInt = 256
    """Embedded frames are downscaled to this width (keeps index.html small)."""


def run(cfg: TablesConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path],
        params: Mapping[str, Any] | None = None, root: Path | None = None) -> StageResult:
    if params is not None and root is not None:
        # Tables built while dvc.yaml lacks some run x seed the params ask for would pass off fewer seeds as all.
        check_stage_runs(root, params)
    records = load_records(inputs["metrics"])
    curves = load_curves(inputs.get("models"))
    # Optional (the FPS claims wait for it), so not a declared input: those must exist before a stage runs.
    speed = load_speed(Path(inputs["metrics"]) / SPEED_FILE)
    tables = build_tables(records)
    outcomes = evaluate_claims(Evidence(records, curves, speed),
                               default_claims(cfg.static_margin_db, cfg.nearest_pose_margin_db))

    with atomic_dir(outputs["tables"]) as folder:
        for table in tables:
            (folder / f"{table.id}.md").write_text(to_markdown(table))
            (folder / f"{table.id}.csv").write_text(to_csv(table))
        (folder / "tables.md").write_text(tables_markdown(tables))
    write_text(outputs["claims"], claims_markdown(outcomes, context=f"This run: {records.describe()}."))
    with atomic_dir(outputs["plots"]) as folder:
        (folder / "psnr_vs_time.csv").write_text(psnr_vs_time_csv(curves))

    page = Path(outputs["index"])
    media = collect_media(page.parent / VIDEOS_FOLDER, page.parent, cfg.frames_per_result, cfg.frame_width)
    links = [(title, page.parent / name) for title, name in LINKED_REPORTS]
    links += [("Claims (Markdown)", Path(outputs["claims"])),
              ("All tables (Markdown)", Path(outputs["tables"]) / "tables.md")]
    write_text(page, render_index(tables, outcomes, records, curves, page, media, links))

    counts = {status: sum(o.verdict.status == status for o in outcomes)
              for status in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_MEASURABLE, UNMEASURABLE)}
    run_rows = [row for table in tables for row in table.our_rows()]
    log.info("tables: %d tables from %d records; claims: %d hold, %d do not, %d inconclusive, %d not yet "
             "measurable, %d not measurable", len(tables), len(records), counts[HOLDS], counts[DOES_NOT_HOLD],
             counts[INCONCLUSIVE], counts[NOT_MEASURABLE], counts[UNMEASURABLE])
    return StageResult(
        metrics={"tables": float(len(tables)), "records": float(len(records)), "curves": float(len(curves)),
                 "speed_pairs": float(len(speed.pairs)) if speed is not None else 0.0,
                 "claims": float(len(outcomes)), "claims_hold": float(counts[HOLDS]),
                 "claims_do_not_hold": float(counts[DOES_NOT_HOLD]),
                 "claims_inconclusive": float(counts[INCONCLUSIVE]),
                 "claims_not_yet_measurable": float(counts[NOT_MEASURABLE]),
                 "claims_not_measurable": float(counts[UNMEASURABLE]),
                 "rows_not_run": float(sum(row.not_run for row in run_rows))},
        artifacts=[Path(outputs["claims"]), Path(outputs["tables"]) / "tables.md"],
    )


STAGE = Stage(
    name="tables",
    config=TablesConfig,
    section="tables",
    run=run,
    inputs={"metrics": "reports/metrics", "models": "data/models"},
    outputs={"tables": "reports/tables", "claims": "reports/claims.md", "index": "reports/index.html",
             "plots": "reports/plots"},
    description=__doc__,
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
