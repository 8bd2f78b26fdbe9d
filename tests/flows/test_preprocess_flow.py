"""preprocess-identity and reproduce on a tiny synthetic corpus: the DAG's order, upstream stages brought up to
date first, independent stages, nothing run twice, one MLflow run per stage under its flow's run, dvc status clean;
mistaken params refused before any stage runs."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import TINY
from tests.flows.workspace import REPOSITORY, make_workspace

pytestmark = pytest.mark.slow


def _params() -> dict:
    params = yaml.safe_load((REPOSITORY / "params.yaml").read_text())
    tiny = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}
    params["profile"] = "test"
    params["data"] = {"source": "synthetic", "identities": ["S001", "S002"]}
    # two identities: neither the demo's held-out S003 nor its photo exist here
    params["pretrain"]["holdout_identity"] = ""
    params["synth"].pop("identity_photos", None)
    params["describe"] = {"detection_stride": 4}
    params["profiles"]["test"] = {**params["profiles"]["demo"], "synth": tiny, "crop": {"image_size": tiny["image_size"]}}
    params["runs"], params["ablation_runs"] = {}, {}
    return params


def test_preprocess_then_reproduce_run_each_stage_once_in_dag_order_and_leave_dvc_clean(prefect_server, tmp_path):
    from flows.dvc_state import dvc
    from flows.identity import preprocess_identity, reproduce
    from stages._stage import tracking_uri

    root = make_workspace(tmp_path / "ws", _params(), stages=("synth", "describe", "crop", "landmarks"))

    outcome = preprocess_identity(identity="S001", root=str(root))
    # synth is upstream of S001's crop; S002's stages and describe are not.
    assert outcome == {"synth": "ran", "crop@S001": "ran", "landmarks@S001": "ran"}
    assert (root / "data" / "processed" / "S001" / "landmarks" / "lms478.npy").is_file()
    assert not (root / "data" / "processed" / "S002").exists()

    outcome = reproduce(root=str(root))
    assert outcome == {"synth": "up to date", "crop@S001": "up to date", "landmarks@S001": "up to date",
                       "describe": "ran", "crop@S002": "ran", "landmarks@S002": "ran"}
    assert json.loads(dvc(root, "status", "--json").stdout) == {}
    assert json.loads((root / "reports" / "dataset.json").read_text())["detection_rate"] >= 0.99

    mlflow.set_tracking_uri(tracking_uri(root))
    runs = mlflow.search_runs(experiment_names=["talkhead"], output_format="list")
    parents = {r.info.run_id: r.data.tags["flow"] for r in runs if "flow" in r.data.tags}
    assert sorted(parents.values()) == ["preprocess-identity", "reproduce"]
    stage_runs = sorted((parents[r.data.tags["mlflow.parentRunId"]], r.data.tags["stage"], r.data.tags["identity"])
                        for r in runs if "stage" in r.data.tags)
    assert stage_runs == [("preprocess-identity", "crop", "S001"), ("preprocess-identity", "landmarks", "S001"),
                          ("preprocess-identity", "synth", ""), ("reproduce", "crop", "S002"),
                          ("reproduce", "describe", ""), ("reproduce", "landmarks", "S002")]
    assert all(r.info.status == "FINISHED" for r in runs)
    synth_run = next(r for r in runs if r.data.tags.get("stage") == "synth")
    assert synth_run.data.params["image_size"] == str(TINY["image_size"])
    describe_run = next(r for r in runs if r.data.tags.get("stage") == "describe")
    artifacts = mlflow.artifacts.list_artifacts(run_id=describe_run.info.run_id)
    assert {"dataset.md", "dataset_contact_sheet.png"} <= {Path(a.path).name for a in artifacts}


def test_the_flows_refuse_mistaken_params_before_any_stage_runs(tmp_path):
    from flows.identity import preprocess_identity, reproduce
    from talkhead_models.config import ConfigError

    params = _params()
    params["crpo"] = {"image_size": 128}
    params["profiles"]["test"]["landmarks"] = {"backend": "dlib"}
    root = make_workspace(tmp_path / "ws", params, stages=("synth", "crop", "landmarks"))
    for flow in (preprocess_identity, reproduce):
        with pytest.raises(ConfigError) as refused:
            flow.fn(root=str(root))  # the flow's body, without a Prefect server
        assert refused.value.problems == [
            "params.yaml: crpo: unknown params section: did you mean 'crop'?",
            "params.yaml: profiles.test.landmarks.backend: got 'dlib'; expected one of 'mediapipe', 'face_alignment'",
            "params.yaml: 2 problem(s); nothing was run",
        ]
    assert not (root / "data").exists() and not (root / "mlflow.db").exists()


def test_a_folder_that_is_not_a_dvc_repository_is_named_with_the_fix(tmp_path):
    from flows.dvc_state import dag

    with pytest.raises(FileNotFoundError, match="not a DVC repository.*dvc init"):
        dag(tmp_path)
