"""Shared fixtures: a tiny synthetic corpus generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GLOG_minloglevel", "2")

from talkhead_models.data.synthetic.corpus import SynthConfig, generate  # noqa: E402

# Small enough for CI, large enough that FaceMesh sees the faces.
TINY = dict(n_identities=2, image_size=192, fps=25.0, n_sentences=2, emotions=("neutral", "sad"),
            video_seconds=3.0, workers=2)


@pytest.fixture(scope="session")
def tiny_config() -> SynthConfig:
    return SynthConfig(**TINY)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, tiny_config) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    generate(tiny_config, root)
    return root
