"""The pretrain stages end to end on the tiny corpus: outputs, MLflow run, report."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import torch

from stages import pretrain_audio2motion, pretrain_report, pretrain_sync
from stages._stage import tracking_uri
from talkhead_models.pretrained.audio2motion import load_model
from talkhead_models.pretrained.sync_expert import load_expert


def test_pretrain_stages_write_models_metrics_and_the_report(processed_truth, tmp_path):
    params = {
        "profile": "paper",
        "pretrain": {"holdout_sentences": 1},
        "pretrain_sync": {"crop_height": 32, "crop_width": 64, "n_mels": 40, "channels": [8, 16, 32, 64],
                          "embedding_dim": 32, "steps": 12, "spans": 2, "anchors_per_span": 4, "eval_every": 6,
                          "threads": 1},
        "pretrain_audio2motion": {"hidden": 32, "audio_dim": 16, "identity_dim": 8, "steps": 12, "batch_size": 4,
                                  "sequence_frames": 16, "eval_every": 6, "threads": 1},
    }
    models = tmp_path / "data" / "models"
    sync = pretrain_sync.STAGE.execute(params, root=tmp_path,
                                       paths={"processed": processed_truth, "model": models / "sync_expert"})
    motion = pretrain_audio2motion.STAGE.execute(params, root=tmp_path,
                                                 paths={"processed": processed_truth, "model": models / "audio2motion"})
    report = pretrain_report.STAGE.execute(params, root=tmp_path)

    for folder in ("sync_expert", "audio2motion"):
        files = {p.name for p in (models / folder).iterdir()}
        assert {"model.pt", "config.json", "metrics.json", "curves.csv", "validation.csv", "scores.csv",
                "segments.csv", "data_audit.csv", "manifest.json"} <= files
        assert len(pd.read_csv(models / folder / "curves.csv")) == 12
    expert, _ = load_expert(models / "sync_expert" / "model.pt")
    model, config = load_model(models / "audio2motion" / "model.pt")
    assert config["feature_dim"] == 95 and isinstance(expert, torch.nn.Module)
    assert json.loads((models / "sync_expert" / "config.json").read_text())["holdout_identity"] == "S002"
    assert 0 <= sync.metrics["offset_within_1"] <= 1 and "other_lse_c" in sync.metrics
    assert motion.metrics["baseline_error"] > 0

    text = (tmp_path / "reports" / "pretrain.md").read_text()
    assert "## Targets" in text and "audio2motion" in text and "LSE-C" in text
    summary = json.loads((tmp_path / "reports" / "pretrain.json").read_text())
    # The data section: per identity its training, validation and test segments, and 0 test frames read out
    # of those the split tables name (counted here from the tables themselves).
    tables = [pd.read_parquet(processed_truth / name / "split" / "split.parquet") for name in ("S001", "S002")]
    self_frames = sum(int((t.last_frame - t.first_frame + 1)[t.role == "self"].sum()) for t in tables)
    data = summary["data"]
    assert data["test_frames"] == self_frames > 0 and data["same_segments"]
    assert data["test_frames_read_sync expert"] == 0 and data["test_frames_read_audio2motion"] == 0
    assert f"Test frames read by the models' training, validation, normalisers and per-face adaptations " \
           f"(counted by each training stage against the split tables): 0 of {self_frames}" in text
    by_identity = {row["identity"]: row for row in data["per_identity"]}
    assert by_identity["S002"]["role"].startswith("held out") and by_identity["S001"]["role"] == "training"
    assert by_identity["S001"]["test (excluded)"].startswith("sentence(s) 2: 2 clips")
    assert by_identity["S001"]["validation (corpus models)"].startswith("sentence(s) 1: 2 clips")
    assert "video frames" in by_identity["S002"]["validation (corpus models)"]
    audit = pd.read_csv(models / "audio2motion" / "data_audit.csv")
    assert (audit.filter(like="test_frames_in_").to_numpy() == 0).all() and (audit.train_frames_used > 0).any()
    assert sync.metrics["test_frames_used"] == 0 == motion.metrics["test_frames_used"]
    # Two audio2motion rows: the generic model and the model adapted to each face's training video.
    assert len(summary["targets"]) == 6 and report.metrics["targets"] == 6
    assert sum("audio2motion (adapted" in t["target"] for t in summary["targets"]) == 1
    assert 0 < motion.metrics["adapted_mouth_error_ratio"] and "ratio_adapted" in summary["audio2motion_by_emotion"][0]
    emotions = {row["emotion"] for row in summary["audio2motion_by_emotion"]}
    assert {"neutral", "sad"} <= emotions

    mlflow.set_tracking_uri(tracking_uri(tmp_path))
    runs = {r.data.tags["stage"]: r for r in mlflow.search_runs(experiment_names=["talkhead"], output_format="list")}
    assert {"pretrain_sync", "pretrain_audio2motion", "pretrain_report"} <= set(runs)
    run = runs["pretrain_sync"]
    assert run.info.status == "FINISHED" and "offset_within_1" in run.data.metrics
    assert run.data.params["pretrain.holdout_sentences"] == "1"
    artifacts = {a.path for a in mlflow.artifacts.list_artifacts(run_id=run.info.run_id)}
    assert {"model.pt", "curves.csv", "scores.csv"} <= artifacts
