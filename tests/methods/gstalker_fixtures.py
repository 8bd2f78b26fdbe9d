"""Fixtures of the GSTalker tests: a tiny tracked and parsed identity, and a tiny config.

The identity is S001 of the session's ``evaluation_root`` (crop, landmarks,
audio features and split of the tiny synthetic corpus), copied and completed
with what GSTalker reads besides: the parse stage's masks and background and
the track stage's cameras (through the face model stage, which needs both
identities' landmarks).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

IDENTITY = "S001"

# Small enough for a few iterations per second on one CPU core, with every mechanism still exercised:
# SH degree 1, densification, joint-stage windows of several frames, checkpoints and validation.
TINY = dict(
    num_gaussians=400, sh_degree=1, sh_degree_interval=2, static_iterations=3, iterations=4,
    triplane=dict(num_levels=2, base_resolution=8, desired_resolution=16, log2_hashmap_size=8),
    audio_dim=8, audio_heads=2, deform_hidden=16,
    densify=dict(start_iteration=1, interval=2, stop_iteration=100, opacity_reset_interval=100_000,
                 grad_threshold=0.002, prune_opacity=0.02),
    position_lr=1.6e-3, position_lr_final=1.6e-4, color_lr=0.025, scaling_lr=0.02, deform_lr=1e-3, hash_lr=0.05,
    perceptual="dssim", static_downscale=4, train_downscale=2, joint_crop=48, frames_per_step=2,
    checkpoint_every=2, validate_every=4, validation_frames=1, log_every=2, samples=1,
    device="cpu", raster_backend="torch", hashgrid_backend="torch",
)


@pytest.fixture(scope="session")
def gstalker_root(tmp_path_factory, evaluation_root) -> Path:
    """A processed root whose S001 has crop, landmarks, features, split, parse and track."""
    from stages import face_model, parse, track
    from talkhead_models.preprocess.parsing import ParseConfig

    root = tmp_path_factory.mktemp("gstalker_processed")
    for identity in ("S001", "S002"):
        shutil.copytree(evaluation_root / identity, root / identity)
    base = root / IDENTITY
    parse.run(ParseConfig(), {"crop": base / "crop", "landmarks": base / "landmarks"}, {"parse": base / "parse"},
              identity=IDENTITY)
    models = tmp_path_factory.mktemp("gstalker_models")
    face_model.run(face_model.FaceModelStageConfig(), {"processed": root}, {"model": models / "face_model"})
    track.run(track.TrackStageConfig(), {"crop": base / "crop", "landmarks": base / "landmarks",
                                         "face_model": models / "face_model"}, {"track": base / "track"},
              identity=IDENTITY)
    return root


@pytest.fixture(scope="session")
def gstalker_audio2motion(tmp_path_factory, gstalker_root) -> Path:
    """An untrained audio-to-motion model folder for the identity's mel features: the a2m feature path needs its
    interface (load_model, predict_landmarks), not its accuracy."""
    import numpy as np
    import torch

    from talkhead_models.pretrained.audio2motion import Audio2Motion, Audio2MotionConfig, save_model

    torch.manual_seed(0)
    features = np.load(gstalker_root / IDENTITY / "features" / "aud_mel.npy", mmap_mode="r")
    folder = tmp_path_factory.mktemp("gstalker_audio2motion")
    save_model(Audio2Motion(features.shape[-1], hidden=32).eval(), Audio2MotionConfig(hidden=32), folder / "model.pt")
    return folder
