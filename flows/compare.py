"""Compare the methods on one identity from MLflow: the tables stage's all-results table, read from the runs.

Every evaluate stage execution is one MLflow run (experiment ``talkhead``,
tags ``stage=evaluate``, ``identity``, ``method``, ``seed``, ``profile``;
stages/_stage.py) that logs the headline metrics as ``<setting>_<metric>``
(``self_PSNR``, ``self_F_LMD``, ...; stages/evaluate.py) and attaches the
metric record it wrote (``<identity>.json``, ``<identity>.seed<k>.json``),
which holds every metric with its unit and, for an n/a value, the reason.

:func:`compare` takes the latest FINISHED evaluate run of each (method, seed)
of an identity, turns each into a metric record (the values the run logged;
the other metrics, units and n/a reasons from its record artifact; a run
without one has only what it logged, the rest n/a "not logged") and builds
the tables stage's table of all results from them, restricted to one
setting: the same columns, cells, footnotes and n/a handling as
``reports/tables/this_run_all.*`` (talkhead_models.reporting.tables), one
row per run (method, plus the seed where a method has another seed than 0),
never averaged::

    python -m flows.compare --identity S001 [--root .] [--profile demo] [--setting self|cross]
                            [--format markdown|csv] [--mlflow-url [--ui http://127.0.0.1:5000]]

``--mlflow-url`` saves the same comparison as a view of the MLflow UI's run
table (the runs, the columns) and prints its URL and that of the UI's
compare page for the runs; docs/COMPARE.md says what the UI shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import quote

import flows  # noqa: F401  (environment before the tools are imported)
from stages._stage import EXPERIMENT, configure_logging, tracking_uri
from talkhead_models.config import ConfigError, validate_name
from talkhead_models.runs import seed_suffix

if TYPE_CHECKING:
    import pandas
    from mlflow.entities import Run

    from talkhead_models.metrics.base import MetricValue
    from talkhead_models.reporting import MetricRecord, Table

log = logging.getLogger(__name__)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout/stderr carry the table and the log

SETTINGS = ("self", "cross", "cross_expression")
"""The driving settings (talkhead_models.reporting.records.SETTINGS; repeated here for argparse, checked equal in
:func:`collect`)."""
FORMATS = ("markdown", "csv")
TABLE_ID = "mlflow_compare"
VIEW_PREFIX = "mlflow.sharedViewState."
"""MLflow 3's UI keeps a saved view of the run table in an experiment tag of this prefix; ``?viewStateShareKey=<id>``
on the runs page opens it."""
VIEW_LIMIT = 20000
"""The longest saved view the UI writes (and MLflow's limit on an experiment tag's value)."""
DEFAULT_UI = "http://127.0.0.1:5000"


class NoRuns(LookupError):
    """Nothing to compare; the message says where it looked and what to run."""


@dataclass(frozen=True)
class Comparison:
    """The table, and the MLflow runs behind its rows (row i of ``table.rows`` is run ``run_ids[i]``)."""

    identity: str
    setting: str
    profile: str | None
    tracking_uri: str
    experiment_id: str
    table: "Table"
    run_ids: tuple[str, ...]
    runs: tuple["Run", ...]
    """Every run compared (one per method and seed), in table order."""


def record_file(identity: str, seed: int) -> str:
    """The record artifact of a run: the evaluate stage's output file name (``S001.json``, ``S001.seed1.json``)."""
    return f"{identity}{seed_suffix(seed)}.json"


def run_seed(run: "Run") -> int:
    """The run's ``seed`` tag (runs from before seeds were tagged are seed 0)."""
    text = run.data.tags.get("seed", "0")
    return int(text) if text.isdigit() else 0


def run_method(run: "Run") -> str:
    return run.data.tags.get("method", "")


def search_filter(identity: str, profile: str | None = None) -> str:
    """The MLflow search filter for an identity's finished evaluate runs (also what to type in the UI)."""
    text = f"tags.stage = 'evaluate' and tags.identity = '{identity}' and attributes.status = 'FINISHED'"
    return text + (f" and tags.profile = '{profile}'" if profile else "")


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    prefix = "sqlite:///"
    if uri.startswith(prefix) and not Path(uri[len(prefix):]).exists():
        # MLflow would create an empty database there.
        raise NoRuns(f"no MLflow database at {uri}; run the evaluate stages first (`dvc repro --glob 'evaluate@*'` "
                     "or the reproduce flow), or set TALKHEAD_MLFLOW_URI / --root")
    return MlflowClient(tracking_uri=uri)


def _search(client: Any, experiment_id: str, filter_string: str) -> list["Run"]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def latest_runs(client: Any, experiment_id: str, identity: str, profile: str | None = None) -> list["Run"]:
    """The latest FINISHED evaluate run of each (method, seed) of ``identity`` (of ``profile``, when given)."""
    latest: dict[tuple[str, int], Run] = {}
    for run in _search(client, experiment_id, search_filter(identity, profile)):
        key = (run_method(run), run_seed(run))
        if key[0] and key not in latest:  # newest first
            latest[key] = run
    return [latest[key] for key in sorted(latest)]


def _no_runs_message(client: Any, experiment_id: str | None, uri: str, identity: str, profile: str | None) -> str:
    found = ""
    if experiment_id is not None:
        runs = _search(client, experiment_id, "tags.stage = 'evaluate' and attributes.status = 'FINISHED'")
        identities = sorted({run.data.tags.get("identity", "") for run in runs} - {""})
        profiles = sorted({run.data.tags.get("profile", "") for run in runs
                           if run.data.tags.get("identity") == identity} - {""})
        found = (f"; identities with finished evaluate runs there: {', '.join(identities) or 'none'}"
                 + (f"; profiles of {identity}'s: {', '.join(profiles)}" if profile and profiles else ""))
    where = f"experiment {EXPERIMENT!r} of {uri}"
    what = f"no FINISHED evaluate run of identity {identity!r}" + (f" with profile {profile!r}" if profile else "")
    return (f"{what} in {where}{found}. Evaluate it first: `dvc repro --glob 'evaluate@*-{identity}-s*'` "
            f"(or the evaluate-identity flow), then run this again")


def _read_record(client: Any, run: "Run", folder: Path) -> "MetricRecord | None":
    """The metric record the run attached, or None (with a warning when it is there but unreadable)."""
    from talkhead_models.reporting import RecordError, parse_record

    identity, seed = run.data.tags.get("identity", ""), run_seed(run)
    name = record_file(identity, seed)
    if name not in {info.path for info in client.list_artifacts(run.info.run_id)}:
        return None
    where = Path(f"mlflow-run-{run.info.run_id}") / name
    try:
        path = Path(client.download_artifacts(run.info.run_id, name, str(folder / run.info.run_id)))
        record = parse_record(json.loads(path.read_text()), where)
    except (OSError, ValueError, RecordError) as error:
        log.warning("run %s: record artifact %s unreadable (%s); using its logged metrics only",
                    run.info.run_id, name, error)
        return None
    if (record.method, record.identity, record.seed) != (run_method(run), identity, seed):
        log.warning("run %s: its artifact %s is a record of %s on %s, seed %d, not of the run; using its logged "
                    "metrics only", run.info.run_id, name, record.method, record.identity, record.seed)
        return None
    return record


def _logged_names(run: "Run", names: set[str]) -> dict[str, dict[str, float]]:
    """setting -> metric name -> the value the run logged, for the metric names in ``names``."""
    from talkhead_models.evaluation import metric_key
    from talkhead_models.reporting.records import SETTINGS as RECORD_SETTINGS

    by_key = {metric_key(setting, name): (setting, name) for setting in RECORD_SETTINGS for name in names}
    logged: dict[str, dict[str, float]] = {}
    for key, value in run.data.metrics.items():
        if key in by_key:
            setting, name = by_key[key]
            logged.setdefault(setting, {})[name] = value
    return logged


def _unrecorded(name: str, value: float | None, examples: Mapping[str, "MetricValue"],
                reason: str = "") -> "MetricValue":
    """A value of a run without a record artifact, with the unit and direction ``examples`` give ``name`` (the
    tables stage takes a column's arrow from the first record that has the metric)."""
    from talkhead_models.metrics.base import MetricValue

    example = examples.get(name)
    unit, higher = (example.unit, example.higher_is_better) if example is not None else ("", True)
    if value is None:
        return MetricValue.not_available(name, reason, unit=unit, higher_is_better=higher)
    return MetricValue(name, value, unit=unit, higher_is_better=higher)


def run_record(run: "Run", record: "MetricRecord | None", examples: Mapping[str, "MetricValue"]) -> "MetricRecord":
    """The run as a metric record: the values it logged to MLflow, the rest (and units, n/a reasons) from
    ``record``, its record artifact; without one, only the metrics it logged (``examples``: a value of each metric
    name known, from the records or the metric registry)."""
    from talkhead_models.evaluation import metric_key
    from talkhead_models.reporting.records import MetricRecord, SettingResult

    logged = _logged_names(run, set(examples))
    tags = run.data.tags
    aids_tag = tags.get("demo_aids")
    tag_aids = None if aids_tag is None else tuple(
        label.strip() for label in aids_tag.split(";") if label.strip() and label.strip() != "none")
    if record is None:
        settings = {}
        for setting, values in logged.items():
            # In the records' order of metrics (the tables stage's column order), not MLflow's.
            metrics = {name: _unrecorded(name, values[name], examples) for name in examples if name in values}
            frames = run.data.metrics.get(f"{setting}_frames", 0.0)
            settings[setting] = SettingResult(frames=int(frames), metrics=metrics)
        method = run_method(run)
        family = tags.get("family") or method
        variant = method[len(family) + 1:] if method.startswith(f"{family}_") else ""
        return MetricRecord(method=method, family=family, variant=variant, identity=tags.get("identity", ""),
                            profile=tags.get("profile", ""), hardware="", settings=settings,
                            source=Path(f"mlflow-run-{run.info.run_id}"), seed=run_seed(run), demo_aids=tag_aids)
    settings = {}
    for setting, result in record.settings.items():
        metrics = dict(result.metrics)
        for name, value in logged.get(setting, {}).items():
            kept = metrics.get(name)
            if kept is None:
                continue
            if kept.value is None or not math.isclose(kept.value, value, rel_tol=1e-6, abs_tol=1e-9):
                log.warning("run %s: %s is %s in its record artifact but %s in MLflow; showing MLflow's",
                            run.info.run_id, metric_key(setting, name), kept.value, value)
            metrics[name] = dataclasses.replace(kept, value=value)
        settings[setting] = dataclasses.replace(result, metrics=metrics)
    aids = record.demo_aids if record.demo_aids is not None else tag_aids
    return dataclasses.replace(record, settings=settings, demo_aids=aids)


def _fill_unlogged(record: "MetricRecord", setting: str, names: list[str], run_id: str,
                   examples: Mapping[str, "MetricValue"]) -> "MetricRecord":
    """A run without a record artifact: the metrics other runs have and it did not log are n/a, saying so."""
    from talkhead_models.reporting.records import SettingResult

    result = record.settings.get(setting) or SettingResult(frames=0, metrics={})
    reason = f"not logged to MLflow run {run_id}, which has no record artifact"
    metrics = {**result.metrics, **{name: _unrecorded(name, None, examples, reason)
                                    for name in names if name not in result.metrics}}
    return dataclasses.replace(record, settings={**record.settings, setting: dataclasses.replace(
        result, metrics=metrics)})


def _one_row_each(records: list["MetricRecord"]) -> list["MetricRecord"]:
    """Records relabelled so that the tables stage's all-results table gives each (method, seed) its own row.

    That table has one row per (family, variant), the mean over its seeds; a method with another seed than 0 gets
    one (family, variant) per seed here, named ``<method> (seed <k>)``. The variant label only groups: it sorts
    like the real variant (``#`` before any name character), seeds in order, and is shown nowhere.
    """
    seeds: dict[tuple[str, str], set[int]] = {}
    for record in records:
        seeds.setdefault(record.key, set()).add(record.seed)
    return [dataclasses.replace(record, method=f"{record.method} (seed {record.seed})",
                                variant=f"{record.variant}#{record.seed:09d}")
            if seeds[record.key] != {0} else record for record in records]


def collect(identity: str, tracking_uri: str, *, profile: str | None = None, setting: str = "self") -> Comparison:
    """The comparison of :func:`compare`, with the runs behind it; :class:`NoRuns` when there is nothing to compare."""
    from talkhead_models.metrics import METRICS
    from talkhead_models.metrics.base import MetricValue
    from talkhead_models.reporting import RecordSet, build_all_results
    from talkhead_models.reporting.records import SETTINGS as RECORD_SETTINGS
    from talkhead_models.reporting.records import _same_inputs  # private: the tables stage's seed check, not copied

    assert SETTINGS == RECORD_SETTINGS, "flows.compare.SETTINGS must follow talkhead_models.reporting.records"
    validate_name(identity, "identity")
    if profile is not None:
        validate_name(profile, "profile")
    if setting not in SETTINGS:
        raise ConfigError(f"setting {setting!r}: use one of {list(SETTINGS)}")
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = latest_runs(client, experiment.experiment_id, identity, profile) if experiment is not None else []
    if not runs:
        raise NoRuns(_no_runs_message(client, experiment.experiment_id if experiment else None, tracking_uri,
                                      identity, profile))
    with tempfile.TemporaryDirectory(prefix="talkhead-compare-") as folder:
        attached = [_read_record(client, run, Path(folder)) for run in runs]
    examples: dict[str, MetricValue] = {}
    for record in attached:
        for result in (record.settings.values() if record is not None else ()):
            for name, value in result.metrics.items():
                examples.setdefault(name, value)
    for name, spec in METRICS.items():
        examples.setdefault(name, MetricValue(name, None, higher_is_better=spec.higher_is_better))
    records = [run_record(run, record, examples) for run, record in zip(runs, attached)]
    # One setting only: the all-results table then has exactly the tables stage's columns of that setting.
    records = [dataclasses.replace(r, settings={s: v for s, v in r.settings.items() if s == setting})
               for r in records]
    columns = RecordSet(records).metric_names(setting)
    records = [_fill_unlogged(record, setting, columns, run.info.run_id, examples) if found is None else record
               for record, run, found in zip(records, runs, attached)]
    profiles = sorted({record.profile for record in records})
    if len(profiles) > 1:
        log.warning("%s's runs come from profiles %s; pass --profile to compare one", identity, ", ".join(profiles))
    # A seed the tables stage leaves out of its means (made from other inputs than the lowest seed's) keeps its row
    # here, its method cell footnoted with the tables stage's note.
    _, dropped, why = _same_inputs(records)
    left_out = {id(record): note for record, note in zip(dropped, why)}
    labelled = _one_row_each(records)
    flagged = [(new, left_out[id(old)]) for old, new in zip(records, labelled) if id(old) in left_out]
    run_of = {record.key: run for record, run in zip(labelled, runs)}
    table = build_all_results(RecordSet(labelled, [note for _, note in flagged], [record for record, _ in flagged]))
    order = [run_of[row.key] for row in table.rows]
    title = (f"MLflow: {identity}, every method's latest finished evaluate run"
             + (f" of profile {profile}" if profile else "") + f", {setting}-driven")
    notes = [*table.notes, f"Runs: the latest FINISHED evaluate run of each method and seed in {tracking_uri} "
             f"(filter `{search_filter(identity, profile)}`); values as the runs logged them to MLflow, the metrics "
             "they did not log from their record artifact; one row per run, not averaged over seeds (a run the "
             "tables stage leaves out of its means is footnoted so)."]
    table = dataclasses.replace(table, id=TABLE_ID, title=title, notes=notes)
    return Comparison(identity, setting, profile, tracking_uri, experiment.experiment_id, table,
                      tuple(run.info.run_id for run in order), tuple(order))


def frame(comparison: Comparison) -> "pandas.DataFrame":
    """The table as the tables stage writes it to CSV (its headers, clean cells, a last ``Footnotes`` column),
    indexed by MLflow run id."""
    import pandas

    from talkhead_models.reporting import to_csv

    data = pandas.read_csv(io.StringIO(to_csv(comparison.table)), dtype=str, keep_default_na=False)
    data.index = pandas.Index(comparison.run_ids, name="run_id")
    return data


def compare(identity: str, tracking_uri: str, *, profile: str | None = None,
            setting: str = "self") -> "pandas.DataFrame":
    """The latest FINISHED evaluate run of each (method, seed) of ``identity`` (of ``profile``), one row each, in
    the columns of the tables stage's all-results table for ``setting`` (cells as text, as the tables stage
    prints them: n/a where a metric is missing, its reason in the row's ``Footnotes``).

    Raises :class:`NoRuns` (the message says what to run) when there is none.
    """
    return frame(collect(identity, tracking_uri, profile=profile, setting=setting))


def render(comparison: Comparison, fmt: str = "markdown") -> str:
    """The table as the tables stage renders it: Markdown (title, table, numbered footnotes, notes) or CSV."""
    from talkhead_models.reporting import to_csv, to_markdown

    return to_markdown(comparison.table) if fmt == "markdown" else to_csv(comparison.table)


def view_state(comparison: Comparison) -> dict[str, Any]:
    """The MLflow UI run-table state showing the comparison: its runs, and as columns the method, seed, profile and
    demo-aids tags and the logged metrics behind the table's columns, in the table's order."""
    from talkhead_models.evaluation import metric_key

    runs = comparison.runs
    metrics = [metric_key(comparison.setting, column.metric) for column in comparison.table.columns
               if column.is_metric]
    logged = [key for key in metrics if any(key in run.data.metrics for run in runs)]
    tags = ["method", "seed", "profile", "demo_aids"]
    tags = [tag for tag in tags if any(tag in run.data.tags for run in runs)]
    ids = ", ".join(f"'{run.info.run_id}'" for run in runs)
    return {
        "searchFilter": f"attributes.run_id IN ({ids})",
        "orderByKey": "tags.`mlflow.runName`",
        "orderByAsc": True,
        "selectedColumns": [f"tags.`{tag}`" for tag in tags] + [f"metrics.`{key}`" for key in logged],
        "runsHiddenMode": "SHOW_ALL",
    }


def save_view(comparison: Comparison, ui: str = DEFAULT_UI) -> tuple[str, str]:
    """Save the comparison as a view of the MLflow UI's run table (experiment tag ``mlflow.sharedViewState.<id>``,
    as the UI's "Save view" writes it; saved again, it is replaced) and return its URL and that of the UI's compare
    page for the same runs."""
    client = _client(comparison.tracking_uri)
    view_id = "-".join(["talkhead-compare", comparison.identity, comparison.setting, comparison.profile or "any"])
    name = (f"compare {comparison.identity} {comparison.setting}-driven"
            + (f" ({comparison.profile})" if comparison.profile else ""))
    now = int(time.time() * 1000)
    state = view_state(comparison)
    envelope = json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)})
    if len(envelope) > VIEW_LIMIT:
        log.warning("too many runs to name in a saved view (%d); it filters by identity instead, so older runs of "
                    "a method and seed show too", len(comparison.runs))
        state["searchFilter"] = search_filter(comparison.identity, comparison.profile)
        envelope = json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)})
    client.set_experiment_tag(comparison.experiment_id, VIEW_PREFIX + view_id, envelope)
    log.info("saved the MLflow UI view %r (experiment %s tag %s%s)", name, comparison.experiment_id, VIEW_PREFIX,
             view_id)
    base = ui.rstrip("/")
    table_url = f"{base}/#/experiments/{comparison.experiment_id}/runs?viewStateShareKey={view_id}"
    runs = quote(json.dumps(list(comparison.run_ids), separators=(",", ":")))
    experiments = quote(json.dumps([comparison.experiment_id], separators=(",", ":")))
    return table_url, f"{base}/#/compare-runs?runs={runs}&experiments={experiments}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identity", required=True, help="identity to compare the methods on (e.g. S001)")
    parser.add_argument("--root", default=".", help="repository root: its mlflow.db (default: .; "
                                                    "TALKHEAD_MLFLOW_URI overrides the tracking URI)")
    parser.add_argument("--profile", default=None, help="only runs of this params profile (default: any)")
    parser.add_argument("--setting", choices=SETTINGS, default="self", help="self- or cross-driven (default: self)")
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="table format (default: markdown)")
    parser.add_argument("--mlflow-url", action="store_true",
                        help="save the comparison as a view of the MLflow UI's run table and print its URL (and the "
                             "compare page's) instead of the table")
    parser.add_argument("--ui", default=DEFAULT_UI, help=f"where `mlflow ui` serves (default: {DEFAULT_UI})")
    args = parser.parse_args(argv)
    configure_logging()
    uri = tracking_uri(Path(args.root).resolve())
    try:
        comparison = collect(args.identity, uri, profile=args.profile, setting=args.setting)
    except (NoRuns, ConfigError) as error:
        log.error("%s", error)
        return 1
    if args.mlflow_url:
        for url in save_view(comparison, args.ui):
            sys.stdout.write(url + "\n")
        return 0
    sys.stdout.write(render(comparison, args.format))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
