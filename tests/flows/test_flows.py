"""The flows against a real Prefect server, in a repository-shaped workspace: the stages they run, what DVC then
says about them, the MLflow runs they leave, and a training killed midway resuming from its checkpoint on retry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.flows.workspace import REPOSITORY, make_workspace
from tests.methods.r2talker_fixtures import TINY as R2TALKER_TINY

pytestmark = pytest.mark.slow


def _params(runs: dict, profile: dict) -> dict:
    """The repository's params.yaml with a ``test`` profile on top of the demo one and only ``runs``."""
    params = yaml.safe_load((REPOSITORY / "params.yaml").read_text())
    params["profile"] = "test"
    params["data"] = {"source": "synthetic", "identities": ["S001", "S002"]}
    # two identities: neither the demo's held-out S003 nor its photo exist here
    params["pretrain"]["holdout_identity"] = ""
    params["synth"].pop("identity_photos", None)
    params["profiles"]["test"] = {**params["profiles"]["demo"], **profile}
    params["runs"], params["ablation_runs"] = runs, {}
    params["seeds"] = [0]
    return params


def _untrained_sync_expert(folder: Path) -> None:
    """A sync expert with the interface evaluation needs (its scores are not looked at here)."""
    import torch

    from talkhead_models.pretrained.sync_expert import SyncExpert, SyncExpertConfig, save_expert

    torch.manual_seed(0)
    cfg = SyncExpertConfig(channels=(4, 4, 4, 4), embedding_dim=8)
    folder.mkdir(parents=True)
    save_expert(SyncExpert(cfg.crop_height, cfg.crop_width, cfg.n_mels, cfg.channels, cfg.embedding_dim).eval(),
                cfg, folder / "model.pt")


def _jean_corpus_models(models: Path, processed: Path) -> None:
    """JEAN's corpus-level outputs that dvc.yaml's train and evaluate stages depend on: an untrained contrastive
    audio encoder and an emotion-features folder (no identity's features: no JEAN run here reads them)."""
    import numpy as np
    import torch

    from talkhead_models.pretrained.audio_contrastive import (AudioContrastiveConfig, ContrastiveAudioNet,
                                                              save_audio_encoder)
    from talkhead_models.pretrained.emotion import EMOTION_SOURCE_SUBSTITUTE, FEATURES_DIR, FEATURES_INFO

    torch.manual_seed(0)
    width = np.load(processed / "S001" / "features" / "aud_mel.npy", mmap_mode="r").shape[-1]
    (models / "audio_contrastive").mkdir(parents=True)
    save_audio_encoder(ContrastiveAudioNet(width), AudioContrastiveConfig(audio_feature="mel"),
                       models / "audio_contrastive" / "model.pt")
    (models / "emotion" / FEATURES_DIR).mkdir(parents=True)
    (models / "emotion" / FEATURES_INFO).write_text(json.dumps({"source": EMOTION_SOURCE_SUBSTITUTE, "frames": {}}))


def _workspace(tmp_path: Path, params: dict, processed: Path, corpus: Path, audio2motion: Path) -> Path:
    """The workspace of the train and evaluate stages: S001 processed, the corpus, untrained corpus-level models
    (dvc.yaml's train stage depends on their weights), no face model."""
    root = make_workspace(tmp_path / "ws", params, stages=("train", "evaluate"))
    shutil.copytree(processed / "S001", root / "data" / "processed" / "S001")
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "synthetic").symlink_to(corpus)
    shutil.copytree(audio2motion, root / "data" / "models" / "audio2motion")
    _untrained_sync_expert(root / "data" / "models" / "sync_expert")
    _jean_corpus_models(root / "data" / "models", processed)
    (root / "data" / "models" / "face_model").mkdir()
    return root


def _dvc_status(root: Path, *names: str) -> dict:
    from flows.dvc_state import dvc

    return json.loads(dvc(root, "status", "--json", *names).stdout or "{}")


def _runs(root: Path) -> list:
    from stages._stage import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(root))
    return mlflow.search_runs(experiment_names=["talkhead"], output_format="list")


def test_train_and_evaluate_flows_run_the_dags_stages_record_them_in_dvc_and_nest_their_mlflow_runs(
        prefect_server, tracked_root, tiny_corpus, untrained_audio2motion, tmp_path):
    from flows.identity import evaluate_identity, train_identity

    params = _params({"static-S001": {"method": "static", "family": "static", "identity": "S001"}},
                     {"evaluate": {"max_self_frames": 30, "max_cross_frames": 30, "min_clip_frames": 20,
                                   "videos": False}})
    root = _workspace(tmp_path, params, tracked_root, tiny_corpus, untrained_audio2motion)
    assert _dvc_status(root, "train@static-S001-s0")  # never ran

    assert train_identity(method="static", identity="S001", root=str(root)) == {"train@static-S001-s0": "ran"}
    assert (root / "data" / "models" / "static" / "S001" / "train.json").is_file()
    assert _dvc_status(root, "train@static-S001-s0") == {}
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"train@static-S001-s0"}

    # Up to date now: a second launch runs nothing.
    assert train_identity(method="static", identity="S001", root=str(root)) == {"train@static-S001-s0": "up to date"}
    assert evaluate_identity(method="static", identity="S001", root=str(root)) == {
        "train@static-S001-s0": "up to date", "evaluate@static-S001-s0": "ran"}
    assert _dvc_status(root) == {}
    assert json.loads((root / "reports" / "metrics" / "static" / "S001.json").read_text())["method"] == "static"

    runs = _runs(root)
    parents = {r.info.run_id: r for r in runs if "flow" in r.data.tags}
    assert sorted(r.data.tags["flow"] for r in parents.values()) == ["evaluate-identity", "train-identity",
                                                                    "train-identity"]
    assert all(r.info.status == "FINISHED" for r in runs)
    stage_runs = [r for r in runs if "stage" in r.data.tags]
    assert sorted(r.data.tags["stage"] for r in stage_runs) == ["evaluate", "train"]  # nothing ran twice
    for run in stage_runs:
        parent = parents[run.data.tags["mlflow.parentRunId"]]
        assert parent.data.tags["flow"] == f"{run.data.tags['stage']}-identity"
        assert run.data.tags["family"] == "static" and run.data.tags["identity"] == "S001"
        assert run.data.tags["seed"] == "0" and run.data.tags["profile"] == "test"
        assert run.data.tags["demo_aids"] and run.data.tags["git_commit"] == parent.data.tags["git_commit"]

    # With overrides it is an experiment: its own params file and model folder, dvc.lock untouched.
    outcome = train_identity(method="static", identity="S001", overrides={"static": {"frame": 3}}, root=str(root))
    (experiment,) = outcome  # this workspace's dvc.yaml has no preprocessing stages to bring up to date first
    assert experiment.startswith("train@static-S001-s0:") and outcome[experiment] == "ran"
    (folder,) = (root / "experiments" / "static" / "S001").iterdir()
    assert yaml.safe_load((folder / "params.yaml").read_text())["profiles"]["test"]["static"] == {"frame": 3}
    assert json.loads((folder / "model" / "model.json").read_text())["frame"] == 3
    assert _dvc_status(root) == {}


def test_a_bad_method_identity_or_override_is_refused_before_any_work(prefect_server, tracked_root, tiny_corpus,
                                                                      untrained_audio2motion, tmp_path):
    from flows.identity import train_identity
    from talkhead_models.config import ConfigError

    params = _params({"static-S001": {"method": "static", "family": "static", "identity": "S001"}}, {})
    root = _workspace(tmp_path, params, tracked_root, tiny_corpus, untrained_audio2motion)
    with pytest.raises(ConfigError, match="S009"):
        train_identity.fn(method="static", identity="S009", root=str(root))
    with pytest.raises(ConfigError, match="unknown method"):
        train_identity.fn(method="nerf_from_the_future", identity="S001", root=str(root))
    with pytest.raises(ConfigError, match="frme"):
        train_identity.fn(method="static", identity="S001", overrides={"static": {"frme": 3}}, root=str(root))
    assert not (root / "data" / "models" / "static").exists() and not (root / "mlflow.db").exists()


def _children(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found if int(pid) != os.getpid()]


def test_a_training_killed_midway_resumes_from_its_checkpoint_when_the_task_retries(
        prefect_server, tracked_root, tiny_corpus, untrained_audio2motion, tmp_path):
    from flows.identity import train_identity

    tiny = {**R2TALKER_TINY, "iterations": 400, "checkpoint_every": 20, "log_every": 10}
    params = _params({"r2talker-S001": {"method": "r2talker", "family": "r2talker", "identity": "S001"}},
                     {"r2talker": tiny})
    root = _workspace(tmp_path, params, tracked_root, tiny_corpus, untrained_audio2motion)
    checkpoint = root / "data" / "models" / "r2talker" / ".S001.partial" / "checkpoint.pt"
    killed: list[int] = []

    def kill_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not checkpoint.is_file():
            time.sleep(0.2)
        for pid in _children("stages.train --method r2talker"):
            if Path(f"/proc/{pid}/cwd").resolve() == root.resolve():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    outcome = train_identity(method="r2talker", identity="S001", root=str(root))
    killer.join()
    assert killed, "the training finished before it could be killed"
    assert outcome == {"train@r2talker-S001-s0": "ran"}
    assert _dvc_status(root, "train@r2talker-S001-s0") == {}

    train_runs = [r for r in _runs(root) if r.data.tags.get("stage") == "train"]
    assert sorted(r.info.status for r in train_runs) == ["FINISHED", "KILLED"]
    finished = next(r for r in train_runs if r.info.status == "FINISHED")
    killed_run = next(r for r in train_runs if r.info.status == "KILLED")
    client = mlflow.MlflowClient()
    # The curve's loss is logged every log_every (10) iterations: the killed run's rows start at the beginning,
    # the retry's where its checkpoint left off (a multiple of checkpoint_every, 20), not at the beginning again.
    first = {run.info.status: min(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
             for run in (finished, killed_run)}
    assert first["KILLED"] <= 10 and first["FINISHED"] >= 20, first
    assert max(m.step for m in client.get_metric_history(finished.info.run_id, "train_loss")) >= 390
