"""Two processed identities of the tiny corpus (crop, landmarks, audio features, split) for evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

IDENTITIES = ("S001", "S002")


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
    for identity in IDENTITIES:
        base = root / identity
        crop.run(CropConfig(image_size=192, data=DataConfig(source="synthetic")), {"raw": tiny_corpus},
                 {"crop": base / "crop"}, identity=identity)
        landmarks.run(LandmarksConfig(), {"crop": base / "crop"}, {"landmarks": base / "landmarks"},
                      identity=identity)
        audio.run(AudioConfig(), {"crop": base / "crop", "landmarks": base / "landmarks"},
                  {"features": base / "features"}, identity=identity)
        split.run(SplitStageConfig(data=DataConfig(source="synthetic", identities=IDENTITIES)),
                  {"crop": base / "crop", "corpus": tiny_corpus}, {"split": base / "split"}, identity=identity)
    return root
