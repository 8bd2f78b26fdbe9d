"""Shared fixtures: a tiny synthetic corpus generated once per test session."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GLOG_minloglevel", "2")

from talkhead_models.data.synthetic.corpus import SynthConfig, generate  # noqa: E402


def _this_machine(address) -> bool:
    """Whether a socket address is this machine (loopback), where the Prefect and MLflow tests talk to servers."""
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return False
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def refuse_network():
    """Nothing may download at run time: in the test process a connection to any other machine fails the test
    that makes it (loopback stays open for the local Prefect and MLflow servers)."""
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _this_machine(address):
            raise OSError(f"the test suite refuses network connections (to {address!r}): nothing may download at "
                          "run time")

    def guarded_connect(sock, address):
        check(sock, address)
        return connect(sock, address)

    def guarded_connect_ex(sock, address):
        check(sock, address)
        return connect_ex(sock, address)

    socket.socket.connect, socket.socket.connect_ex = guarded_connect, guarded_connect_ex
    yield
    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex


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


# One tiny tracked and parsed identity and one untrained audio2motion model, shared by tests/methods and
# tests/bad_input: S001 of ``evaluation_root``, copied and completed with what the neural methods read besides
# (the parse stage's masks and background, the track stage's cameras through the face model stage, which needs
# both identities' landmarks). Built once per session: parsing and tracking are the slow part of a method test.
TRACKED_IDENTITY = "S001"
TRACKED_MODELS = "tracked_models"
"""Folder under pytest's base temporary directory holding the tracked identity's face model."""


@pytest.fixture(scope="session")
def tracked_root(tmp_path_factory, evaluation_root) -> Path:
    """A processed root whose S001 has crop, landmarks, features, split, parse and track (S002: no parse/track)."""
    from stages import face_model, parse, track
    from talkhead_models.preprocess.parsing import ParseConfig

    root = tmp_path_factory.mktemp("tracked_processed")
    for identity in ("S001", "S002"):
        shutil.copytree(evaluation_root / identity, root / identity)
    base = root / TRACKED_IDENTITY
    parse.run(ParseConfig(), {"crop": base / "crop", "landmarks": base / "landmarks"}, {"parse": base / "parse"},
              identity=TRACKED_IDENTITY)
    # Not numbered: tests that run later stages on this identity (JEAN's pair stage) find the face model there.
    models = tmp_path_factory.mktemp(TRACKED_MODELS, numbered=False)
    face_model.run(face_model.FaceModelStageConfig(), {"processed": root}, {"model": models / "face_model"})
    track.run(track.TrackStageConfig(), {"crop": base / "crop", "landmarks": base / "landmarks",
                                         "face_model": models / "face_model"}, {"track": base / "track"},
              identity=TRACKED_IDENTITY)
    return root


@pytest.fixture(scope="session")
def untrained_audio2motion(tmp_path_factory, tracked_root) -> Path:
    """An untrained audio-to-motion model folder for the identity's mel features: methods driven by it need its
    interface (load_model, predict_landmarks), not its accuracy."""
    import numpy as np
    import torch

    from talkhead_models.pretrained.audio2motion import Audio2Motion, Audio2MotionConfig, save_model

    torch.manual_seed(0)
    features = np.load(tracked_root / TRACKED_IDENTITY / "features" / "aud_mel.npy", mmap_mode="r")
    folder = tmp_path_factory.mktemp("audio2motion")
    save_model(Audio2Motion(features.shape[-1], hidden=32).eval(), Audio2MotionConfig(hidden=32), folder / "model.pt")
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``), as the train
    stage runs: on a shared 2-core machine the trainers' many small ops only spin-wait for a second thread."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
