"""train@<method>-<identity>-s<seed> and evaluate@<method>-<identity>-s<seed> through the stage machinery
(CLI paths, seeds, MLflow)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import mlflow
import pytest
import yaml

from stages import evaluate, train
from stages._stage import StageResult, tracking_uri
from talkhead_models.config import ConfigError


def _repository(root: Path, processed: Path, corpus: Path) -> dict:
    """A repository-shaped folder: processed S001, the corpus, empty corpus-level model folders, params."""
    shutil.copytree(processed / "S001", root / "data" / "processed" / "S001")
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "synthetic").symlink_to(corpus)
    for name in ("audio2motion", "sync_expert", "face_model", "audio_contrastive", "emotion"):
        (root / "data" / "models" / name).mkdir(parents=True)
    params = {"profile": "test", "data": {"source": "synthetic", "identities": ["S001", "S002"]},
              "static": {"frame": -1},
              "profiles": {"test": {"evaluate": {"max_self_frames": 40, "max_cross_frames": 40,
                                                 "min_clip_frames": 20, "videos": False}}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def test_static_trains_and_evaluates_into_the_declared_paths_with_one_mlflow_run_each(
        evaluation_root, tiny_corpus, tmp_path, monkeypatch):
    params = _repository(tmp_path, evaluation_root, tiny_corpus)
    monkeypatch.chdir(tmp_path)
    train.STAGE.execute(params, root=tmp_path, identity="S001", method="static")
    model = tmp_path / "data" / "models" / "static" / "S001"
    summary = json.loads((model / "train.json").read_text())
    assert summary["method"] == "static" and summary["seconds"] >= 0 and "hardware" in summary
    assert not (model.parent / ".S001.partial").exists()  # renamed into place on success

    evaluate.STAGE.execute(params, root=tmp_path, identity="S001", method="static")
    record = json.loads((tmp_path / "reports" / "metrics" / "static" / "S001.json").read_text())
    assert record["method"] == "static" and record["family"] == "static" and record["profile"] == "test"
    assert 0 < record["settings"]["self"]["frames"] <= 40
    assert record["settings"]["self"]["metrics"]["Training time"]["value"] is not None
    # No sync expert checkpoint and no face model in this repository: n/a with the stage to run, not a number.
    assert "sync expert" in record["settings"]["self"]["metrics"]["LSE-C"]["note"]
    assert "face_model" in record["settings"]["self"]["metrics"]["Exp-Diff"]["note"]

    mlflow.set_tracking_uri(tracking_uri(tmp_path))
    runs = mlflow.search_runs(experiment_names=["talkhead"], output_format="list")
    assert sorted((r.data.tags["stage"], r.data.tags["method"]) for r in runs) == [("evaluate", "static"),
                                                                                  ("train", "static")]
    evaluate_run = next(r for r in runs if r.data.tags["stage"] == "evaluate")
    assert "self_PSNR" in evaluate_run.data.metrics and evaluate_run.data.params["static.frame"] == "-1"


def test_per_method_stage_needs_a_known_method(evaluation_root, tiny_corpus, tmp_path):
    params = _repository(tmp_path, evaluation_root, tiny_corpus)
    with pytest.raises(KeyError, match="unknown method"):
        train.STAGE.execute(params, root=tmp_path, identity="S001", method="nerf_from_the_future")
    with pytest.raises(ValueError, match="per method"):
        train.STAGE.execute(params, root=tmp_path, identity="S001")


def test_a_seed_replaces_the_method_configs_seed_and_suffixes_every_per_run_path(tmp_path):
    seen = {}

    def run(cfg, inputs, outputs, identity, method, method_config):
        seen.update(seed=method_config.seed, paths={**inputs, **outputs})
        return StageResult()

    for stage in (train.STAGE, evaluate.STAGE):
        stage = dataclasses.replace(stage, run=run, inputs={})
        stage.execute({"profile": "paper"}, root=tmp_path, identity="S001", method="r2talker", seed=2)
        assert seen["seed"] == 2
        per_run = {name: path for name, path in seen["paths"].items() if "/r2talker/" in path.as_posix()}
        assert per_run and all(path.name.startswith("S001.seed2") for path in per_run.values()), per_run
    stage = dataclasses.replace(train.STAGE, run=run, inputs={})
    stage.execute({"profile": "paper"}, root=tmp_path, identity="S001", method="r2talker")
    assert seen == {"seed": 0, "paths": {"model": tmp_path / "data" / "models" / "r2talker" / "S001"}}


def test_a_reference_row_has_no_seed_to_change(tmp_path):
    stage = dataclasses.replace(train.STAGE, inputs={})
    with pytest.raises(ConfigError, match="no training seed"):
        stage.execute({"profile": "paper"}, root=tmp_path, identity="S001", method="static", seed=1)


def test_a_record_digest_changes_with_its_own_identitys_budget_only(tmp_path):
    """Another identity's self-driven budget does not make a record stale (seeds are averaged only when their
    digests agree); its own does, as its frames do."""
    (tmp_path / "processed").mkdir()
    (tmp_path / "processed" / "frames.txt").write_text("S001")
    inputs = {"processed": tmp_path / "processed"}

    def digest(**budget) -> str:
        cfg = evaluate.EvaluateStageConfig(max_self_frames=100, **budget)
        return evaluate.run_digest(cfg, inputs, None, "demo", "S001")

    plain = digest()
    assert digest(self_frames_per_identity={"S003": 250}) == plain
    assert digest(self_frames_per_identity={"S001": 100}) == plain  # the same budget, however it is written
    assert digest(self_frames_per_identity={"S001": 250}) != plain
