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
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from talkhead_models.pretrained.audio2motion import MOUTH, MotionFeatures, centred_windows, load_pretrained

log = logging.getLogger(__name__)


def load_network(pretrained: Mapping[str, Path], device: torch.device) -> tuple[Any, dict]:
    """The audio-to-motion network from ``pretrained["audio2motion"]``; a clear error when it is absent."""
    return load_pretrained(pretrained, device, "gstalker.audio_feature=a2m", "gstalker.audio_feature: mel")


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
    return MotionFeatures.from_state(state, *load_network(pretrained, device))
