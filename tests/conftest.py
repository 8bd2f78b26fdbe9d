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


# Processed identities of the tiny corpus with everything evaluation and training read (crop, landmarks, audio
# features, split; no parse or track), shared by tests/evaluation, tests/stages and tests/methods.
EVALUATION_IDENTITIES = ("S001", "S002")


@pytest.fixture(scope="session")
def evaluation_root(tmp_path_factory, tiny_corpus) -> Path:
    """``data/processed``-like root whose identities have everything the evaluation reads (no track)."""
    from stages import audio, crop, landmarks, split
    from stages.split import SplitStageConfig
    from talkhead_models.data import DataConfig
    from talkhead_models.preprocess.audio_features import AudioConfig
    from talkhead_models.preprocess.landmarks import LandmarksConfig
    from talkhead_models.preprocess.video import CropConfig

    root = tmp_path_factory.mktemp("processed_eval")
    for identity in EVALUATION_IDENTITIES:
        base = root / identity
        crop.run(CropConfig(image_size=192, data=DataConfig(source="synthetic")), {"raw": tiny_corpus},
                 {"crop": base / "crop"}, identity=identity)
        landmarks.run(LandmarksConfig(), {"crop": base / "crop"}, {"landmarks": base / "landmarks"},
                      identity=identity)
        audio.run(AudioConfig(), {"crop": base / "crop", "landmarks": base / "landmarks"},
                  {"features": base / "features"}, identity=identity)
        split.run(SplitStageConfig(data=DataConfig(source="synthetic", identities=EVALUATION_IDENTITIES)),
                  {"crop": base / "crop", "corpus": tiny_corpus}, {"split": base / "split"}, identity=identity)
    return root

