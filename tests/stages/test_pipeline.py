"""The stages end to end on a tiny corpus: through the CLI entry, through Prefect, into MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import TINY
from stages import describe, synth
from stages._stage import tracking_uri
from talkhead_models.config import ConfigError

pytestmark = pytest.mark.slow


def _write_params(root: Path) -> None:
    tiny = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}
    params = {"profile": "test", "data": {"source": "synthetic", "identities": ["S001"]},
              "synth": {"seed": 0}, "describe": {"detection_stride": 4},
              "profiles": {"test": {"synth": tiny, "crop": {"image_size": tiny["image_size"]}}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def _runs(root: Path):
    mlflow.set_tracking_uri(tracking_uri(root))
    return mlflow.search_runs(experiment_names=["talkhead"], output_format="list")


def test_prefect_flow_runs_the_dag_and_logs_one_mlflow_run_per_stage(tmp_path):
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import PIPELINE, pipeline

    _write_params(tmp_path)
    # A loaded CI machine can take longer than the default 30 s to boot the ephemeral server.
    with prefect_test_harness(server_startup_timeout=180):
        results = pipeline(params_path="params.yaml", root=str(tmp_path),
                           stages=["synth", "describe", "crop", "landmarks"])
    assert [s.name for s in PIPELINE][:4] == ["synth", "describe", "crop", "landmarks"]
    assert results["describe"]["detection_rate"] >= 0.99
    assert results["landmarks@S001"]["detection_rate"] >= 0.99
    assert (tmp_path / "data" / "processed" / "S001" / "landmarks" / "lms478.npy").is_file()
    report = (tmp_path / "reports" / "dataset.md").read_text()
    assert "detection" in report and (tmp_path / "reports" / "dataset_contact_sheet.png").stat().st_size > 1000
    assert json.loads((tmp_path / "reports" / "dataset.json").read_text())["detection_rate"] >= 0.99

    runs = _runs(tmp_path)
    assert sorted((r.data.tags["stage"], r.data.tags["identity"]) for r in runs) == [
        ("crop", "S001"), ("describe", ""), ("landmarks", "S001"), ("synth", "")]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"stage", "identity", "method", "git_commit", "profile"} <= set(run.data.tags)
        assert run.data.tags["profile"] == "test"
        assert "stage_seconds" in run.data.metrics
    synth_run = next(r for r in runs if r.data.tags["stage"] == "synth")
    assert synth_run.data.params["image_size"] == str(TINY["image_size"])
    describe_run = next(r for r in runs if r.data.tags["stage"] == "describe")
    artifacts = mlflow.artifacts.list_artifacts(run_id=describe_run.info.run_id)
    assert {"dataset.md", "dataset_contact_sheet.png"} <= {Path(a.path).name for a in artifacts}
    assert Path(tmp_path / "mlflow.db").is_file()


def test_the_flow_refuses_mistaken_params_before_any_stage_runs(tmp_path):
    from flows.pipeline import pipeline

    _write_params(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["crpo"] = {"image_size": 128}
    params["profiles"]["test"]["landmarks"] = {"backend": "dlib"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError) as refused:
        pipeline.fn(params_path="params.yaml", root=str(tmp_path))  # the flow's body, without a Prefect server
    assert refused.value.problems == [
        "params.yaml: crpo: unknown params section: did you mean 'crop'?",
        "params.yaml: profiles.test.landmarks.backend: got 'dlib'; expected one of 'mediapipe', 'face_alignment'",
        "params.yaml: 2 problem(s); nothing was run",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_cli_refuses_a_missing_input_with_the_fix(tmp_path, monkeypatch):
    _write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="dvc repro describe"):
        describe.STAGE.main(["--corpus", "nowhere"])
    assert not (tmp_path / "reports").exists()


def test_failed_stage_leaves_no_output_and_a_failed_run(tmp_path, monkeypatch):
    def half_written(cfg, root: Path) -> list:
        (root / "S001").mkdir()
        (root / "S001" / "part.mp4").write_bytes(b"\0" * 16)
        raise ValueError("rendering failed half-way")

    monkeypatch.setattr(synth, "generate", half_written)
    params = {"profile": "paper", "synth": {"n_identities": 1}}
    with pytest.raises(ValueError, match="rendering failed half-way"):
        synth.STAGE.execute(params, root=tmp_path)
    assert not (tmp_path / "data" / "raw" / "synthetic").exists()
    assert [p.name for p in (tmp_path / "data" / "raw").iterdir()] == []
    assert [r.info.status for r in _runs(tmp_path)] == ["FAILED"]


def test_a_refused_config_starts_no_run_and_writes_nothing(tmp_path):
    params = {"profile": "paper", "synth": {"emotions": ["bored"], "n_identities": 1}}
    with pytest.raises(ConfigError, match=r"^synth\.emotions: got \['bored'\]; expected a list, each item one of"):
        synth.STAGE.execute(params, root=tmp_path)
    assert list(tmp_path.iterdir()) == []
