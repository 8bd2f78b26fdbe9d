"""The report: the papers' tables beside this run's numbers, the papers' claims checked, one HTML page.

=============  ==============================================================
module         what it holds
=============  ==============================================================
records        the evaluate stage's metric records, averaged over identities
curves         training curves (validation PSNR vs wall time)
papers         each paper's tables as data: columns, numbers, row mapping
tables         paper rows + this run's rows, footnotes; Markdown and CSV
claims         the papers' checkable claims: intervals and verdicts
speed          the speed stage's alternated FPS comparisons
html           the self-contained index.html
=============  ==============================================================

A pure library: it reads and writes the paths it is given and knows
nothing of dvc.yaml.
"""

from talkhead_models.reporting.claims import (CLAIMS, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_MEASURABLE, STATUSES,
                                              UNMEASURABLE, Claim, Evidence, Outcome, Verdict, claims_markdown,
                                              default_claims, evaluate_claims)
from talkhead_models.reporting.curves import Curve, load_curves, psnr_vs_time_csv
from talkhead_models.reporting.html import collect_media, render_index
from talkhead_models.reporting.papers import PAPER_TABLES, PAPERS, Column, PaperRow, PaperTable, mapped_variants
from talkhead_models.reporting.records import (Aggregate, MetricRecord, RecordError, RecordSet, average, load_records,
                                               parse_record)
from talkhead_models.reporting.speed import SpeedError, SpeedRecord, load_speed
from talkhead_models.reporting.tables import (NOT_RUN, Table, build_all_results, build_table, build_tables, to_csv,
                                              to_markdown, tables_markdown)

__all__ = [
    "Aggregate", "CLAIMS", "Claim", "Column", "Curve", "DOES_NOT_HOLD", "Evidence", "HOLDS", "INCONCLUSIVE",
    "MetricRecord", "NOT_MEASURABLE", "NOT_RUN", "Outcome", "PAPERS", "PAPER_TABLES", "PaperRow", "PaperTable",
    "RecordError", "RecordSet", "STATUSES", "SpeedError", "SpeedRecord", "Table", "UNMEASURABLE", "Verdict",
    "average", "build_all_results", "build_table", "build_tables", "claims_markdown", "collect_media",
    "default_claims", "evaluate_claims", "load_curves", "load_records", "load_speed", "mapped_variants",
    "parse_record", "psnr_vs_time_csv", "render_index", "tables_markdown", "to_csv", "to_markdown",
]
