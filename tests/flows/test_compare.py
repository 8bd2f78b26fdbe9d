"""flows.compare against a tiny MLflow store whose runs and expected table are written out by hand here."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas
import pytest

from flows import compare as cmp
from talkhead_models.metrics.base import MetricValue
from talkhead_models.reporting.tables import LEADING_HEADERS

EXPERIMENT = "talkhead"
DIGEST = "d" * 64


def _value(name: str, value: float | None, unit: str = "", higher: bool = True, note: str = "") -> dict:
    if value is None:
        return MetricValue.not_available(name, note, unit=unit, higher_is_better=higher).to_dict()
    return MetricValue(name, value, unit=unit, higher_is_better=higher).to_dict()


def _record(method: str, family: str, identity: str, seed: int, psnr: float, ssim: float, lpips: float | None,
            lse_c: float, *, profile: str = "demo", aids: list[str] | None = None, digest: str = DIGEST) -> dict:
    """A metric record as the evaluate stage writes it (self: PSNR, SSIM, LPIPS; cross: LSE-C, PSNR n/a)."""
    variant = method[len(family) + 1:] if method.startswith(family + "_") else ""
    return {
        "method": method, "family": family, "variant": variant, "identity": identity, "seed": seed,
        "profile": profile, "hardware": "test", "demo_aids": aids or [], "inputs_digest": digest,
        "settings": {
            "self": {"frames": 10, "metrics": {
                "PSNR": _value("PSNR", psnr, "dB"), "SSIM": _value("SSIM", ssim),
                "LPIPS": _value("LPIPS", lpips, higher=False, note="missing alexnet weights")}},
            "cross": {"frames": 20, "metrics": {
                "LSE-C": _value("LSE-C", lse_c),
                "PSNR": _value("PSNR", None, "dB", note="no ground-truth frames for cross-driven audio")}},
        },
    }


def _logged(record: dict) -> dict[str, float]:
    """What the evaluate stage logs of a record: its headline metrics (not LPIPS), finite ones only."""
    return {"self_PSNR": record["settings"]["self"]["metrics"]["PSNR"]["value"],
            "self_SSIM": record["settings"]["self"]["metrics"]["SSIM"]["value"],
            "cross_LSE_C": record["settings"]["cross"]["metrics"]["LSE-C"]["value"], "self_frames": 10.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """``<root>/mlflow.db`` with evaluate runs: S001 x {r2talker, gstalker} x seeds {0, 1}, static (profile paper),
    an older r2talker seed 0, a newer FAILED one, and S002's r2talker; gstalker seed 1 logged metrics only."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("compare_root")
    folder = tmp_path_factory.mktemp("records")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.create_experiment(EXPERIMENT, artifact_location=(root / "mlruns").as_uri())
    records: dict[str, dict] = {}

    def run(name: str, method: str, identity: str, seed: int, start: int, record: dict | None,
            metrics: dict[str, float], status: str = "FINISHED", profile: str = "demo", **tags: str) -> str:
        created = client.create_run(experiment, start_time=1_700_000_000_000 + start * 1000,
                                    run_name=f"evaluate@{method}-{identity}-s{seed}",
                                    tags={"stage": "evaluate", "identity": identity, "method": method,
                                          "seed": str(seed), "profile": profile, **tags})
        run_id = created.info.run_id
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        if record is not None:
            path = folder / name / f"{identity}{'' if seed == 0 else f'.seed{seed}'}.json"
            path.parent.mkdir()
            path.write_text(json.dumps(record))
            client.log_artifact(run_id, str(path))
            records[name] = record
        client.set_terminated(run_id, status=status, end_time=1_700_000_000_000 + start * 1000 + 500)
        return run_id

    old = _record("r2talker", "r2talker", "S001", 0, 20.0, 0.7, None, 0.4)
    r2_0 = _record("r2talker", "r2talker", "S001", 0, 25.1234, 0.8, None, 0.5, aids=["a2m audio"])
    failed = _record("r2talker", "r2talker", "S001", 0, 99.0, 0.99, None, 0.9)
    r2_1 = _record("r2talker", "r2talker", "S001", 1, 26.0, 0.81, None, 0.6, aids=["a2m audio"], digest="e" * 64)
    gs_0 = _record("gstalker", "gstalker", "S001", 0, 24.5, 0.78, 0.1234, 0.3)
    other = _record("r2talker", "r2talker", "S002", 0, 30.0, 0.9, None, 0.7)
    static = _record("static", "static", "S001", 0, 18.0, 0.5, None, 0.1, profile="paper")
    s3_r2 = _record("r2talker", "r2talker", "S003", 0, 22.0, 0.6, 0.2, 0.3)
    ids = {
        "old": run("old", "r2talker", "S001", 0, 1, old, _logged(old)),
        "r2_0": run("r2_0", "r2talker", "S001", 0, 2, r2_0, _logged(r2_0)),
        "failed": run("failed", "r2talker", "S001", 0, 3, failed, _logged(failed), status="FAILED"),
        "r2_1": run("r2_1", "r2talker", "S001", 1, 2, r2_1, _logged(r2_1)),
        "gs_0": run("gs_0", "gstalker", "S001", 0, 2, gs_0, _logged(gs_0)),
        # No record artifact: only what it logged (and the newer stage's family and demo_aids tags).
        "gs_1": run("gs_1", "gstalker", "S001", 1, 2, None,
                    {"self_PSNR": 24.25, "self_SSIM": 0.7654, "cross_LSE_C": 0.2}, family="gstalker",
                    demo_aids="none"),
        "other": run("other", "r2talker", "S002", 0, 2, other, _logged(other)),
        "static": run("static", "static", "S001", 0, 2, static, _logged(static), profile="paper"),
        # S003: the first run in method order has no record artifact; the other's record gives LPIPS its arrow.
        "s3_gs": run("s3_gs", "gstalker", "S003", 0, 2, None, {"self_SSIM": 0.75, "self_PSNR": 23.0}),
        "s3_r2": run("s3_r2", "r2talker", "S003", 0, 2, s3_r2, _logged(s3_r2)),
    }
    return {"root": root, "uri": f"sqlite:///{root / 'mlflow.db'}", "ids": ids, "records": records,
            "client": client, "experiment": experiment}


# Hand-computed: the rows (method cell, PSNR, SSIM, LPIPS) of the self-driven table, in the tables stage's order
# (reference rows first, then r2talker, then gstalker; seeds in order), 3 decimals, n/a where there is no value.
EXPECTED_SELF = [
    ("static", "static", "18.000", "0.500", "n/a"),
    ("r2_0", "r2talker (seed 0)", "25.123", "0.800", "n/a"),
    ("r2_1", "r2talker (seed 1)", "26.000", "0.810", "n/a"),
    ("gs_0", "gstalker (seed 0)", "24.500", "0.780", "0.123"),
    ("gs_1", "gstalker (seed 1)", "24.250", "0.765", "n/a"),
]
SELF_HEADERS = ["self PSNR ↑", "self SSIM ↑", "self LPIPS ↓"]


def tables_stage_headers(tmp_path: Path, records: list[dict]) -> list[str]:
    """The header row of reports/tables/this_run_all.csv as the tables stage writes it from these records."""
    from stages.tables import TablesConfig, run

    metrics = tmp_path / "metrics"
    for record in records:
        suffix = "" if record["seed"] == 0 else f".seed{record['seed']}"
        path = metrics / record["method"] / f"{record['identity']}{suffix}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    out = tmp_path / "reports"
    run(TablesConfig(frames_per_result=0), {"metrics": metrics, "models": tmp_path / "no_models"},
        {"tables": out / "tables", "claims": out / "claims.md", "index": out / "index.html", "plots": out / "plots"})
    return (out / "tables" / "this_run_all.csv").read_text().splitlines()[0].split(",")


def test_table_rows_values_and_columns(store, tmp_path):
    table = cmp.compare("S001", store["uri"])
    ids = store["ids"]
    assert list(table.index) == [ids[name] for name, *_ in EXPECTED_SELF]
    assert list(table.columns) == [*LEADING_HEADERS, *SELF_HEADERS, "Footnotes"]
    got = [(row["Method"], *(row[header] for header in SELF_HEADERS)) for _, row in table.iterrows()]
    assert got == [expected[1:] for expected in EXPECTED_SELF]
    assert set(table["Source"]) == {"this run"} and set(table["Identities"]) == {"S001"}
    # The older duplicate, the newer FAILED run and the other identity's run are not there.
    assert not {ids["old"], ids["failed"], ids["other"]} & set(table.index)
    # The same columns as the tables stage's all-results table, its self-driven ones.
    stage = tables_stage_headers(tmp_path, [store["records"][name] for name in ("static", "r2_0", "r2_1", "gs_0")])
    assert list(table.columns) == [h for h in stage if not h.startswith("cross ")]


def test_missing_metrics_are_na_with_their_reason(store):
    table = cmp.compare("S001", store["uri"])
    notes = dict(zip(table.index, table["Footnotes"]))
    ids = store["ids"]
    assert "LPIPS: n/a (missing alexnet weights)" in notes[ids["r2_0"]]
    assert f"LPIPS: n/a (not logged to MLflow run {ids['gs_1']}, which has no record artifact)" in notes[ids["gs_1"]]
    assert "r2talker (seed 0): demo aids: a2m audio" in notes[ids["r2_0"]]
    assert "gstalker (seed 1): no demo aids" in notes[ids["gs_1"]]  # from the demo_aids tag
    # The tables stage leaves seed 1 (other inputs_digest) out of its means: said, the row kept.
    assert "r2talker S001 seed 1: left out of the mean" in notes[ids["r2_1"]]
    assert "left out" not in notes[ids["r2_0"]]


def test_run_without_record_first_keeps_the_records_columns(store):
    table = cmp.compare("S003", store["uri"])
    assert list(table.columns) == [*LEADING_HEADERS, *SELF_HEADERS, "Footnotes"]
    got = [(row["Method"], *(row[header] for header in SELF_HEADERS)) for _, row in table.iterrows()]
    assert got == [("r2talker", "22.000", "0.600", "0.200"), ("gstalker", "23.000", "0.750", "n/a")]


def test_profile_and_cross_setting(store):
    ids = store["ids"]
    demo = cmp.compare("S001", store["uri"], profile="demo")
    assert list(demo.index) == [ids[name] for name in ("r2_0", "r2_1", "gs_0", "gs_1")]
    cross = cmp.compare("S001", store["uri"], setting="cross")
    assert list(cross.columns) == [*LEADING_HEADERS, "cross LSE-C ↑", "cross PSNR ↑", "Footnotes"]
    got = {run_id: (row["cross LSE-C ↑"], row["cross PSNR ↑"]) for run_id, row in cross.iterrows()}
    assert got == {ids["static"]: ("0.100", "n/a"), ids["r2_0"]: ("0.500", "n/a"), ids["r2_1"]: ("0.600", "n/a"),
                   ids["gs_0"]: ("0.300", "n/a"), ids["gs_1"]: ("0.200", "n/a")}
    assert "PSNR: n/a (no ground-truth frames for cross-driven audio)" in cross.loc[ids["r2_0"], "Footnotes"]


def test_cli_prints_the_table(store, capsys, monkeypatch):
    monkeypatch.delenv("TALKHEAD_MLFLOW_URI", raising=False)
    assert cmp.main(["--identity", "S001", "--root", str(store["root"])]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("## MLflow: S001")
    lines = [line for line in markdown.splitlines() if line.startswith("| this run |")]
    assert [line.split(" | ")[1].split(" ")[0] for line in lines] == ["static", "r2talker", "r2talker", "gstalker",
                                                                        "gstalker"]
    assert "| 25.123 | 0.800 | n/a " in lines[1]
    assert cmp.main(["--identity", "S001", "--root", str(store["root"]), "--format", "csv"]) == 0
    printed = pandas.read_csv(io.StringIO(capsys.readouterr().out), dtype=str, keep_default_na=False)
    assert printed.values.tolist() == cmp.compare("S001", store["uri"]).values.tolist()


def test_cli_unknown_identity_exits_1_saying_what_to_run(store, capsys, caplog, monkeypatch):
    monkeypatch.delenv("TALKHEAD_MLFLOW_URI", raising=False)
    assert cmp.main(["--identity", "S999", "--root", str(store["root"])]) == 1
    assert capsys.readouterr().out == ""
    assert store["uri"] in caplog.text and "dvc repro --glob 'evaluate@*-S999-s*'" in caplog.text
    assert "identities with finished evaluate runs there: S001, S002, S003" in caplog.text
    with pytest.raises(cmp.NoRuns, match="no MLflow database"):
        cmp.compare("S001", f"sqlite:///{store['root'] / 'absent.db'}")
    assert not (store["root"] / "absent.db").exists()


def test_mlflow_url_saves_a_view_of_the_same_runs_and_columns(store, capsys, monkeypatch):
    monkeypatch.delenv("TALKHEAD_MLFLOW_URI", raising=False)
    assert cmp.main(["--identity", "S001", "--root", str(store["root"]), "--mlflow-url"]) == 0
    table_url, compare_url = capsys.readouterr().out.splitlines()
    experiment = store["experiment"]
    assert table_url == (f"http://127.0.0.1:5000/#/experiments/{experiment}/runs"
                         "?viewStateShareKey=talkhead-compare-S001-self-any")
    tags = store["client"].get_experiment(experiment).tags
    envelope = json.loads(tags[cmp.VIEW_PREFIX + "talkhead-compare-S001-self-any"])
    assert envelope["name"] == "compare S001 self-driven" and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    # Only the metrics the runs logged can be columns of the UI (LPIPS is in the records only).
    assert state["selectedColumns"] == ["tags.`method`", "tags.`seed`", "tags.`profile`", "tags.`demo_aids`",
                                        "metrics.`self_PSNR`", "metrics.`self_SSIM`"]
    shown = store["client"].search_runs([experiment], state["searchFilter"])
    assert {run.info.run_id for run in shown} == {store["ids"][name] for name, *_ in EXPECTED_SELF}
    assert all(store["ids"][name] in compare_url for name, *_ in EXPECTED_SELF)
