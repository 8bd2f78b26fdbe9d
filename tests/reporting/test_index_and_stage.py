"""reports/index.html is self-contained; the tables stage writes every output and logs its counts to MLflow."""

from __future__ import annotations

import base64
import csv
import json
import re

import mlflow
import numpy as np
import pytest
from PIL import Image

from stages import tables as tables_stage
from stages._stage import tracking_uri
from talkhead_models.reporting.papers import PAPER_TABLES
from tests.reporting.records_fixture import write_corpus, write_curve

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _paths(root):
    return ({"metrics": root / "reports" / "metrics", "models": root / "data" / "models"},
            {"tables": root / "reports" / "tables", "claims": root / "reports" / "claims.md",
             "index": root / "reports" / "index.html", "plots": root / "reports" / "plots"})


def _reports(root, with_media=True):
    write_corpus(root / "reports" / "metrics")
    (root / "reports" / "pretrain.md").write_text("# pretrain\n")
    if with_media:
        folder = root / "reports" / "videos" / "r2talker" / "S001"
        folder.mkdir(parents=True)
        frame = np.zeros((64, 128, 3), np.uint8)
        frame[:, 64:] = 200
        Image.fromarray(frame).save(folder / "side_by_side_0000.jpg")
        (folder / "side_by_side.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")


def test_run_writes_tables_claims_plots_and_a_self_contained_page(tmp_path):
    _reports(tmp_path)
    inputs, outputs = _paths(tmp_path)
    result = tables_stage.run(tables_stage.TablesConfig(), inputs, outputs)   # data/models absent: no curves

    for spec in PAPER_TABLES:
        assert (outputs["tables"] / f"{spec.id}.md").is_file() and (outputs["tables"] / f"{spec.id}.csv").is_file()
    assert "R2-Talker Table 4" in (outputs["tables"] / "tables.md").read_text()
    claims = outputs["claims"].read_text()
    assert "| Claim | Paper | How measured | Our numbers | Demo aids of the runs compared | Status |" in claims
    assert "separate evaluation processes" in claims   # no speed.json: the FPS claims wait for the speed stage
    with (outputs["plots"] / "psnr_vs_time.csv").open() as handle:
        assert list(csv.reader(handle)) == [["method", "identity", "seconds", "val_psnr"]]

    page = outputs["index"].read_text()
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "http://" not in page and "https://" not in page
    for spec in PAPER_TABLES:
        assert f'id="{spec.id}"' in page
    assert "26.5861" in page and "r2talker_landmark_encoding" in page and "not run" in page
    # the demo aids beside the rows (table footnotes) and beside the claims
    assert page.count("r2talker_audio_baseline: demo aids: a2m audio, landmark grid 4/16 levels") >= 2
    assert "<th>Demo aids of the runs compared</th>" in page
    assert 'src="videos/r2talker/S001/side_by_side.mp4"' in page
    assert 'href="pretrain.md"' in page and "dataset.md" not in page   # only reports that exist are linked
    frame = re.search(r'src="data:image/jpeg;base64,([^"]+)"', page)
    assert frame and base64.b64decode(frame.group(1))[:2] == b"\xff\xd8"
    assert page.count("data:image/png;base64,") == 1   # the metric bars; no curves yet

    assert result.metrics["tables"] == len(PAPER_TABLES) + 1
    assert result.metrics["claims"] == sum(result.metrics[f"claims_{status}"] for status in (
        "hold", "do_not_hold", "inconclusive", "not_yet_measurable", "not_measurable"))
    assert result.metrics["speed_pairs"] == 0
    assert result.metrics["records"] == 8 and result.metrics["rows_not_run"] > 0


def test_curves_become_the_dvc_plot_and_a_page_plot(tmp_path):
    _reports(tmp_path, with_media=False)
    inputs, outputs = _paths(tmp_path)
    write_curve(inputs["models"], "r2talker", "S001", [(0, 0.0, 1.0, None), (100, 12.5, 0.5, 24.0)])
    write_curve(inputs["models"], "gstalker", "S001", [(50, 5.0, 0.5, 25.0)])
    result = tables_stage.run(tables_stage.TablesConfig(), inputs, outputs)
    with (outputs["plots"] / "psnr_vs_time.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["method"], r["seconds"], r["val_psnr"]) for r in rows] == [("gstalker", "5.000", "25.0000"),
                                                                          ("r2talker", "12.500", "24.0000")]
    assert outputs["index"].read_text().count("data:image/png;base64,") == 2
    assert result.metrics["curves"] == 2


@pytest.mark.slow
def test_stage_execute_logs_the_counts_to_mlflow(tmp_path, monkeypatch):
    monkeypatch.delenv("TALKHEAD_MLFLOW_URI", raising=False)
    _reports(tmp_path, with_media=False)
    (tmp_path / "data" / "models").mkdir(parents=True)
    result = tables_stage.STAGE.execute({"profile": "paper"}, root=tmp_path)
    mlflow.set_tracking_uri(tracking_uri(tmp_path))
    runs = mlflow.search_runs(experiment_names=["talkhead"], output_format="list")
    assert len(runs) == 1 and runs[0].data.tags["stage"] == "tables"
    assert runs[0].data.metrics["tables"] == result.metrics["tables"] == len(PAPER_TABLES) + 1
    assert runs[0].data.metrics["claims"] == result.metrics["claims"]
    assert (tmp_path / "reports" / "index.html").is_file()


def test_the_speed_file_decides_the_fps_claims(tmp_path):
    _reports(tmp_path, with_media=False)
    inputs, outputs = _paths(tmp_path)
    (inputs["metrics"] / "speed.json").write_text(json.dumps({"hardware": "CPU x86_64", "threads": 2, "pairs": [
        {"identity": "S001", "a": "r2talker", "b": "r2talker_audio_baseline", "resolution": [64, 64], "frames": 20,
         "repetitions": 6, "fps_a": [30.1, 29.8, 30.4, 30.0, 29.9, 30.2],
         "fps_b": [20.2, 19.9, 20.1, 20.0, 20.3, 19.8]}]}))
    result = tables_stage.run(tables_stage.TablesConfig(), inputs, outputs)
    row = next(line for line in outputs["claims"].read_text().splitlines() if "RAD-NeRF's audio-spatial" in line)
    assert row.endswith("**holds** |") and "over 6 repetitions" in row
    assert result.metrics["speed_pairs"] == 1
