"""Fixtures every method's tests share: one tiny tracked and parsed identity, one untrained audio2motion model.

The identity is S001 of the session's ``evaluation_root`` (crop, landmarks,
audio features and split of the tiny synthetic corpus), copied and completed
with what the neural methods read besides: the parse stage's masks and
background and the track stage's cameras (through the face model stage,
which needs both identities' landmarks). Built once per session: parsing and
tracking are the slow part of a method test's setup.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

IDENTITY = "S001"


@pytest.fixture(scope="session")
def tracked_root(tmp_path_factory, evaluation_root) -> Path:
    """A processed root whose S001 has crop, landmarks, features, split, parse and track (S002: no parse/track)."""
    from stages import face_model, parse, track
    from talkhead_models.preprocess.parsing import ParseConfig

    root = tmp_path_factory.mktemp("tracked_processed")
    for identity in ("S001", "S002"):
        shutil.copytree(evaluation_root / identity, root / identity)
    base = root / IDENTITY
    parse.run(ParseConfig(), {"crop": base / "crop", "landmarks": base / "landmarks"}, {"parse": base / "parse"},
              identity=IDENTITY)
    models = tmp_path_factory.mktemp("tracked_models")
    face_model.run(face_model.FaceModelStageConfig(), {"processed": root}, {"model": models / "face_model"})
    track.run(track.TrackStageConfig(), {"crop": base / "crop", "landmarks": base / "landmarks",
                                         "face_model": models / "face_model"}, {"track": base / "track"},
              identity=IDENTITY)
    return root


@pytest.fixture(scope="session")
def untrained_audio2motion(tmp_path_factory, tracked_root) -> Path:
    """An untrained audio-to-motion model folder for the identity's mel features: methods driven by it need its
    interface (load_model, predict_landmarks), not its accuracy."""
    import numpy as np
    import torch

    from talkhead_models.pretrained.audio2motion import Audio2Motion, Audio2MotionConfig, save_model

    torch.manual_seed(0)
    features = np.load(tracked_root / IDENTITY / "features" / "aud_mel.npy", mmap_mode="r")
    folder = tmp_path_factory.mktemp("audio2motion")
    save_model(Audio2Motion(features.shape[-1], hidden=32).eval(), Audio2MotionConfig(hidden=32), folder / "model.pt")
    return folder
