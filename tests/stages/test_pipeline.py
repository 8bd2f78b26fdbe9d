"""The stages end to end on a tiny corpus: through the CLI entry, into MLflow (through Prefect: tests/flows)."""

from __future__ import annotations

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
