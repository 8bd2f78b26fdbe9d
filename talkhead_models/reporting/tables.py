"""The papers' tables with this run's rows beside theirs, as Markdown and CSV.

Each table keeps the paper's columns. Its rows: first the paper's own
("paper, their data", values as printed), then this run's ("this run,
this corpus"): Ground Truth, Static and Nearest pose, every (family,
variant) a paper row maps to, and, in comparison tables, the full method of
every family. A run without records is a "not run" row. Every cell whose
value is n/a, measured with a substitute, dependent on hardware, averaged
over fewer identities than were evaluated, or over several seeds (shown as
mean ± standard deviation) carries a numbered footnote
(:meth:`MetricValue.footnote` plus the identities left out); the method
cell of every run of a trained family carries the demo aids its config uses,
and the seeds left out of its means (made from other inputs than its lowest
seed: :attr:`RecordSet.left_out`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from talkhead_models.metrics.base import MetricValue
from talkhead_models.reporting.papers import PAPER_TABLES, REFERENCE_KEYS, Column, Key, PaperTable
from talkhead_models.reporting.records import REFERENCE_FAMILIES, SETTINGS, TRAINED_FAMILIES, RecordSet

PAPER_SOURCE = "paper"
OUR_SOURCE = "this run"
NOT_RUN = "not run"
BLANK = "–"
ALL_RESULTS_ID = "this_run_all"
LEADING_HEADERS = ("Source", "Method", "Matches", "Identities")
"""The columns before the paper's: where the row comes from, its name, its counterpart, what it averages."""

_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass
class Footnotes:
    """Numbered, de-duplicated footnotes of one table."""

    texts: list[str] = field(default_factory=list)

    def add(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1


@dataclass
class Cell:
    """A table cell: its text and the numbers of its footnotes."""

    text: str
    marks: tuple[int, ...] = ()
    value: MetricValue | None = None
    """This run's value behind the text (None for paper cells and blanks)."""


@dataclass
class Row:
    source: str
    """"paper" or "this run"."""
    method: Cell
    matches: str
    """The counterpart: our method name for a paper row, the paper's row label for ours."""
    identities: str
    cells: list[Cell]
    key: Key | None = None
    not_run: bool = False


@dataclass
class Table:
    """A built table, ready to render."""

    id: str
    title: str
    columns: tuple[Column, ...]
    rows: list[Row]
    footnotes: list[str]
    notes: list[str]

    @property
    def headers(self) -> list[str]:
        return [*LEADING_HEADERS, *(column.header for column in self.columns)]

    def paper_rows(self) -> list[Row]:
        return [row for row in self.rows if row.source == PAPER_SOURCE]

    def our_rows(self) -> list[Row]:
        return [row for row in self.rows if row.source == OUR_SOURCE]

    def our_row(self, method: str) -> Row | None:
        return next((row for row in self.our_rows() if row.method.text == method), None)

    def cell(self, method: str, header: str) -> Cell:
        """Our row ``method``'s cell under ``header`` (KeyError when either is unknown)."""
        row = self.our_row(method)
        if row is None:
            raise KeyError(f"{self.id}: no row {method!r}")
        return row.cells[[c.header for c in self.columns].index(header)]


def _our_keys(spec: PaperTable) -> list[Key]:
    keys = list(REFERENCE_KEYS)
    mapped = [row.ours for row in spec.rows if row.ours]
    comparison = [(family, "") for family in TRAINED_FAMILIES] if spec.kind == "comparison" else []
    for key in (*mapped, *spec.extra_ours, *comparison):
        if key not in keys:
            keys.append(key)
    return keys


def _config_cell(text: str | None) -> str:
    """A configuration (tick) column copies the paper row this run stands for."""
    return text or BLANK


def _our_rows(key: Key, columns: tuple[Column, ...], records: RecordSet, matches: str,
              config: tuple[str | None, ...], notes: Footnotes) -> list[Row]:
    """``key``'s row; a reference row evaluated on several identities gets one row per identity, since the runs
    it is read against are each on their own identity (S3D-NeRF on the one it never saw, the others on S001)."""
    identities = records.identities(key)
    if key[0] in REFERENCE_FAMILIES and len(identities) > 1:
        return [_our_row(key, columns, records, matches, config, notes, only=(identity,)) for identity in identities]
    return [_our_row(key, columns, records, matches, config, notes)]


def _our_row(key: Key, columns: tuple[Column, ...], records: RecordSet, matches: str,
             config: tuple[str | None, ...], notes: Footnotes, only: tuple[str, ...] | None = None) -> Row:
    """``key``'s row, averaged over its identities (``only`` these, when given)."""
    method = records.method(key)
    if not records.has(key):
        mark = notes.add(f"{method}: not run (no metric records for family {key[0]!r}, variant {key[1]!r}; "
                         "`make demo` trains the comparison tables' rows, `make tables-full` the ablation variants "
                         "too: docs/BUDGET.md)")
        cells = [Cell(_config_cell(config[i]) if not column.is_metric else NOT_RUN if column.setting else BLANK)
                 for i, column in enumerate(columns)]
        return Row(OUR_SOURCE, Cell(method, (mark,)), matches, "", cells, key, not_run=True)
    cells = []
    for i, column in enumerate(columns):
        if not column.is_metric:
            cells.append(Cell(_config_cell(config[i])))
            continue
        if column.setting is None:
            cells.append(Cell(BLANK))
            continue
        aggregate = records.aggregate(key, column.setting, column.metric, only)
        marks = tuple(notes.add(text) for text in aggregate.footnotes(method))
        cells.append(Cell(aggregate.cell(column.digits), marks, aggregate.value))
    aids = records.aids(key)
    # Reference rows train nothing, so "no demo aids" would say nothing about them.
    method_marks = () if key[0] in REFERENCE_FAMILIES and not aids else (
        notes.add(f"{method}: {records.aids_text(key)}"),)
    method_marks += tuple(notes.add(text) for text in records.left_out_of(key))
    return Row(OUR_SOURCE, Cell(method, method_marks), matches, ", ".join(only or records.identities(key)), cells,
               key)


def _notes(columns: tuple[Column, ...], rows: list[Row], records: RecordSet) -> list[str]:
    notes = []
    renamed = [f"{c.label} = this project's {c.metric}" for c in columns
               if c.is_metric and c.metric != c.label and c.setting]
    if renamed:
        notes.append("Columns: " + "; ".join(dict.fromkeys(renamed)) + ".")
    units: dict[str, str] = {}
    for row in rows:
        for column, cell in zip(columns, row.cells):
            if cell.value is not None and cell.value.unit:
                units.setdefault(column.metric, cell.value.unit)
    if units:
        notes.append("Units of this run's cells: " + "; ".join(f"{k} {v}" for k, v in units.items()) + ".")
    settings = sorted({c.setting for c in columns if c.is_metric and c.setting}, key=SETTINGS.index)
    if settings:
        notes.append(f"This run: {records.describe()}; columns from the {' and '.join(settings)}-driven setting.")
    return notes


def build_table(spec: PaperTable, records: RecordSet) -> Table:
    """``spec``'s paper rows and this run's rows in ``spec``'s columns, with footnotes and notes."""
    notes = Footnotes()
    rows = [Row(PAPER_SOURCE, Cell(row.label), records.method(row.ours) if row.ours else "", "",
                [Cell(value if value is not None else BLANK) for value in row.values], row.ours)
            for row in spec.rows]
    for key in _our_keys(spec):
        paper_row = spec.paper_row_for(key)
        matches = paper_row.label if paper_row else ("reference" if key in REFERENCE_KEYS else "")
        config = paper_row.values if paper_row else (None,) * len(spec.columns)
        rows.extend(_our_rows(key, spec.columns, records, matches, config, notes))
    title = f"{spec.paper_name} {spec.number}: {spec.title}"
    return Table(spec.id, title, spec.columns, rows, notes.texts, [*spec.notes, *_notes(spec.columns, rows, records)])


def build_all_results(records: RecordSet) -> Table:
    """Every metric of every run, in both settings: nothing the paper tables leave out is lost."""
    columns = []
    for setting in SETTINGS:
        for name in records.metric_names(setting):
            example = next(r.metric(setting, name) for r in records.records if r.metric(setting, name) is not None)
            columns.append(Column(name, name, example.higher_is_better, setting=setting, group=setting))
    columns = tuple(columns)
    notes = Footnotes()
    rows = [row for key in records.keys() for row in _our_rows(key, columns, records, "", (None,) * len(columns),
                                                                notes)]
    return Table(ALL_RESULTS_ID, "This run: every metric of every method, self- and cross-driven", columns, rows,
                 notes.texts, _notes(columns, rows, records))


def build_tables(records: RecordSet) -> list[Table]:
    """Every paper table, then the table of all results."""
    return [*(build_table(spec, records) for spec in PAPER_TABLES), build_all_results(records)]


def marks_text(marks: tuple[int, ...]) -> str:
    """Footnote numbers as superscripts: (1, 3) -> "¹˒³"."""
    return "˒".join(str(mark).translate(_SUPERSCRIPTS) for mark in marks)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_cell(cell: Cell) -> str:
    return _md(cell.text + (" " + marks_text(cell.marks) if cell.marks else ""))


def to_markdown(table: Table) -> str:
    """The table as a Markdown section: title, the table, footnotes, notes."""
    lines = [f"## {table.title}", "", f"`{table.id}`", ""]
    lines.append("| " + " | ".join(_md(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    for row in table.rows:
        cells = [row.source, _md_cell(row.method), _md(row.matches), _md(row.identities),
                 *(_md_cell(cell) for cell in row.cells)]
        lines.append("| " + " | ".join(cells) + " |")
    if table.footnotes:
        lines.append("")
        lines.extend(f"{str(i).translate(_SUPERSCRIPTS)} {_md(text)}  " for i, text in enumerate(table.footnotes, 1))
    if table.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in table.notes)
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """The table as CSV: clean cells (no footnote marks) and each row's footnotes in a last column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*table.headers, "Footnotes"])
    for row in table.rows:
        marks = sorted({m for cell in (row.method, *row.cells) for m in cell.marks})
        writer.writerow([row.source, row.method.text, row.matches, row.identities,
                         *(cell.text for cell in row.cells), "; ".join(table.footnotes[m - 1] for m in marks)])
    return buffer.getvalue()


def tables_markdown(tables: list[Table], header: str = "# Paper tables: the papers' numbers and this run's") -> str:
    """All tables in one Markdown document."""
    intro = ("Rows marked `paper` are the papers' own numbers on their data, as printed; rows marked `this run` "
             "are this pipeline's on this corpus, averaged over identities. Numbers in different rows of one "
             "table come from different data and hardware: compare trends, not digits.")
    return "\n".join([header, "", intro, "", *(to_markdown(table) for table in tables)])
