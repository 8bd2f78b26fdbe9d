"""Fixtures of the R2-Talker tests: a tiny tracked identity, a tiny audio-to-landmark model, a tiny config.

The identity is S001 of the session's ``evaluation_root`` (crop, landmarks,
audio features and split of the tiny synthetic corpus), copied and completed
with what R2-Talker reads besides: the parse stage's masks and background
and the track stage's cameras (through the face model stage, which needs
both identities' landmarks).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

IDENTITY = "S001"

# A model small enough to train a few dozen iterations in seconds on one CPU core; every switch of the ladder
# is still exercised (the full method's values are set per test).
TINY = dict(
    position_levels=4, position_level_dim=2, position_base_resolution=8, position_log2_hashmap_size=10,
    position_desired_resolution=64, sigma_hidden=16, geo_feat_dim=8, color_hidden=8,
    landmark_levels=2, landmark_level_dim=2, landmark_base_resolution=8, landmark_log2_hashmap_size=10,
    landmark_desired_resolution=32, bypass_hidden=16, condition_dim=8, audio_dim=8,
    torso_levels=2, torso_base_resolution=8, torso_log2_hashmap_size=10, torso_desired_resolution=32,
    torso_hidden=8, torso_deform_hidden=8,
    march_steps=24, max_samples=8, min_transmittance=0.01, occupancy_resolution=12, occupancy_update_every=8,
    occupancy_conditions=1, density_threshold=3.0, rays_per_step=192, torso_rays_per_step=256,
    frames_per_step=2, head_ray_fraction=0.3, lips_ray_fraction=0.2, opacity_weight=0.1, distortion_weight=0.01,
    shape_prior_steps=5, iterations=30, torso_iterations=6, validate_every=1000, validation_frames=1,
    log_every=5, checkpoint_every=10, device="cpu", backend="torch", lips_loss="dssim", network_learning_rate=1e-2,
)


@pytest.fixture(scope="session")
def r2talker_root(tmp_path_factory, evaluation_root) -> Path:
    """A processed root whose S001 has crop, landmarks, features, split, parse and track."""
    from stages import face_model, parse, track
    from talkhead_models.preprocess.parsing import ParseConfig

    root = tmp_path_factory.mktemp("r2talker_processed")
    for identity in ("S001", "S002"):
        shutil.copytree(evaluation_root / identity, root / identity)
    base = root / IDENTITY
    parse.run(ParseConfig(), {"crop": base / "crop", "landmarks": base / "landmarks"}, {"parse": base / "parse"},
              identity=IDENTITY)
    models = tmp_path_factory.mktemp("r2talker_models")
    face_model.run(face_model.FaceModelStageConfig(), {"processed": root}, {"model": models / "face_model"})
    track.run(track.TrackStageConfig(), {"crop": base / "crop", "landmarks": base / "landmarks",
                                         "face_model": models / "face_model"}, {"track": base / "track"},
              identity=IDENTITY)
    return root


@pytest.fixture(scope="session")
def tiny_audio2motion(tmp_path_factory, r2talker_root) -> Path:
    """An (untrained) audio-to-landmark model folder for the identity's feature size: rendering only needs its
    interface (load_model, predict_landmarks), not its accuracy."""
    import numpy as np
    import torch

    from talkhead_models.pretrained.audio2motion import Audio2Motion, Audio2MotionConfig, save_model

    torch.manual_seed(0)
    features = np.load(r2talker_root / IDENTITY / "features" / "aud_mel.npy", mmap_mode="r")
    folder = tmp_path_factory.mktemp("audio2motion")
    save_model(Audio2Motion(features.shape[-1]).eval(), Audio2MotionConfig(), folder / "model.pt")
    return folder
