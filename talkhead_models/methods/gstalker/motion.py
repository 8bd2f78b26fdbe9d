"""Audio-derived mouth motion as GSTalker's per-frame audio feature (``audio_feature: a2m``).

GSTalker's Table 5 swaps the audio encoder under the same deformation field
(DeepSpeech, wav2vec, HuBERT). Without those weights the only strong,
weight-free-at-run-time signal is the corpus-trained audio-to-motion network
(``data/models/audio2motion``): it maps the same ``mel`` windows to 68x3
canonical landmark displacements. Its mouth points (48-67), normalised by
the identity's training statistics and windowed over neighbouring frames,
are what the paper's temporal smoother (1D convolutions + self-attention)
reads here instead of raw audio features.

The feature is derived from audio alone, so training frames (from the
identity's own recordings) and rendered frames (from a driving recording,
own or another speaker's) get it the same way; tracked landmarks are never
used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from talkhead_models.metrics.landmarks import MOUTH  # iBUG-68 lips: the points whose displacements are the feature

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"


def centred_windows(per_frame: np.ndarray, window: int, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """[n, D] per-frame vectors -> [n, window, D]: frames ``i - window // 2 ..`` clipped to each frame's
    recording ``[first[i], last[i]]`` (a window never reaches into another recording)."""
    offsets = np.arange(window) - window // 2
    index = np.arange(len(per_frame))[:, None] + offsets[None]
    index = np.clip(index, first[:, None], last[:, None])
    return per_frame[index]


@dataclass
class MotionFeatures:
    """The audio-to-motion network and one identity's normalisation of its mouth displacements."""

    network: Any
    """``Audio2Motion`` (or its ensemble) in eval mode."""
    network_config: dict
    """The network's saved config (``feature_kind``, ``pitch_column``)."""
    neutral: np.ndarray
    """[68, 3] the identity's neutral canonical shape (the network's identity input)."""
    own_mean: Tensor
    """[D] the identity's speaker mean of the network's audio features (for its own voice)."""
    centre: np.ndarray
    """[60] mean mouth displacement over the identity's training frames."""
    scale: float
    """Standard deviation of the centred mouth displacements over the training frames (one number for all 60
    values: keeps the points' relative motion)."""
    window: int
    """Frames per feature window (centred on the frame)."""

    @property
    def kind(self) -> str:
        """The audio feature kind the network reads."""
        return str(self.network_config.get("feature_kind", "mel"))

    @property
    def dim(self) -> int:
        return 3 * len(MOUTH)

    def displacements(self, features: np.ndarray, own_voice: bool) -> np.ndarray:
        """[n, 60] raw mouth displacements predicted from one recording's [n, 16, D] audio windows."""
        from talkhead_models.pretrained.audio2motion import predict_landmarks, speaker_mean

        features = np.array(features, np.float32)  # a writable copy (features are often memory-mapped)
        mean = (self.own_mean if own_voice
                else speaker_mean(features, self.network_config.get("pitch_column", -1)))
        landmarks = predict_landmarks(self.network, features, mean, self.neutral)
        return (landmarks - self.neutral[None])[:, MOUTH].reshape(len(features), -1).astype(np.float32)

    def normalise(self, displacements: np.ndarray) -> np.ndarray:
        return ((displacements - self.centre[None]) / self.scale).astype(np.float32)

    def recording(self, features: np.ndarray, own_voice: bool) -> np.ndarray:
        """[n, window, 60] features of one whole recording's frames."""
        per_frame = self.normalise(self.displacements(features, own_voice))
        n = len(per_frame)
        return centred_windows(per_frame, self.window, np.zeros(n, np.int64), np.full(n, n - 1, np.int64))

    def state(self) -> dict[str, Any]:
        """Plain tensors and numbers for a weights-only checkpoint (the network itself is not copied)."""
        return {"neutral": torch.from_numpy(self.neutral.astype(np.float32)), "own_mean": self.own_mean.cpu(),
                "centre": torch.from_numpy(self.centre.astype(np.float32)), "scale": float(self.scale),
                "window": int(self.window)}


def load_network(pretrained: Mapping[str, Path], device: torch.device) -> tuple[Any, dict]:
    """The audio-to-motion network from ``pretrained["audio2motion"]``; a clear error when it is absent."""
    from talkhead_models.pretrained.audio2motion import load_model

    if "audio2motion" not in pretrained:
        raise FileNotFoundError("gstalker.audio_feature=a2m reads the audio-to-motion model, but no audio2motion "
                                "folder was given; run `dvc repro pretrain_audio2motion` (or set "
                                "gstalker.audio_feature: mel)")
    return load_model(Path(pretrained["audio2motion"]) / MODEL_FILE, device=str(device))


def training_features(identity_root: Path, pretrained: Mapping[str, Path], window: int,
                      device: torch.device) -> tuple[MotionFeatures, np.ndarray]:
    """The identity's motion features (every frame, recording by recording, from its own audio) [N, window, 60]
    and the normaliser fitted on its training frames."""
    from talkhead_models.data.identity_reader import IdentityReader
    from talkhead_models.pretrained.audio2motion import speaker_mean
    from talkhead_models.pretrained.datasets import load_identity

    network, network_config = load_network(pretrained, device)
    reader = IdentityReader(identity_root)
    kind = str(network_config.get("feature_kind", "mel"))
    audio = np.asarray(reader.audio_features(kind), np.float32)
    neutral = load_identity(reader.layout).neutral.shape.astype(np.float32)
    training = reader.training_frames()
    training = training[training < len(audio)]
    # The voice's mean over the training frames only: the test audio stays unseen until it drives the head.
    own_mean = speaker_mean(audio[training], network_config.get("pitch_column", -1))
    motion = MotionFeatures(network, network_config, neutral, own_mean,
                            np.zeros(3 * len(MOUTH), np.float32), 1.0, window)
    clips = reader.clips()
    raw = np.zeros((len(audio), motion.dim), np.float32)
    # Frames outside every recording (none in a staged identity) form windows of their own.
    first, last = np.arange(len(audio)), np.arange(len(audio))
    for row in clips.itertuples(index=False):
        start, stop = int(row.first_frame), min(int(row.last_frame) + 1, len(audio))
        if stop <= start:
            continue
        raw[start:stop] = motion.displacements(audio[start:stop], own_voice=True)
        first[start:stop], last[start:stop] = start, stop - 1
    motion.centre = raw[training].mean(0)
    motion.scale = float(max((raw[training] - motion.centre).std(), 1e-6))
    log.info("gstalker: audio-to-motion mouth features of %d frames (%s), std %.4g canonical units",
             len(raw), kind, motion.scale)
    return motion, centred_windows(motion.normalise(raw), window, first, last)


def motion_from_state(state: Mapping[str, Any], pretrained: Mapping[str, Path],
                      device: torch.device) -> MotionFeatures:
    """The motion features a checkpoint was trained with (the network read again from ``pretrained``)."""
    network, network_config = load_network(pretrained, device)
    return MotionFeatures(network, network_config, np.asarray(state["neutral"], np.float32),
                          torch.as_tensor(state["own_mean"]), np.asarray(state["centre"], np.float32),
                          float(state["scale"]), int(state["window"]))
