"""What JEAN reads from a processed identity and the corpus-level models.

* **Training frames** (Sec. 4, "Dataset"): the pair stage's training
  sequences (clips of one emotion concatenated, those whose head pose or
  camera distance disagree with the others left out), narrowed to the
  identity's training frames (never a test frame) with a tracked camera; a
  single person-specific video without them trains on all its training frames.
* **Audio**: the audio stage's per-frame feature windows of the kind the
  pre-trained audio encoder was trained on.
* **Expression inputs** per frame: emotion-recognition features (the
  pretrain_emotion stage: EMOCA's, or its corpus-trained substitute) or the
  tracker's expression coefficients (``track/exp.npy``).
* **Expression pairs**: the pair stage's DTW-aligned training pairs (the same
  sentence in two emotions); pairs of held-out sentences are test frames
  and are refused here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from talkhead_models.data.identity_reader import IdentityError, IdentityReader
from talkhead_models.data.synthetic.face import LABEL_HEAD, LABEL_LIPS, LABEL_MOUTH, LABEL_NECK
from talkhead_models.methods.jean.config import JeanConfig

log = logging.getLogger(__name__)

HEAD_LABELS = (LABEL_HEAD, LABEL_NECK, LABEL_LIPS, LABEL_MOUTH)
"""Semantic labels the head NeRF renders: head (with hair), neck, lips, mouth interior (as R2-Talker's head)."""
LIP_LABELS = (LABEL_LIPS, LABEL_MOUTH)
BOX_FRAMES = 48
"""Training frames whose head masks bound the head box."""


def recording_bounds(reader: IdentityReader) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the first and last frame of its recording (clips.parquet)."""
    first = np.zeros(reader.num_frames, np.int64)
    last = np.zeros(reader.num_frames, np.int64)
    for row in reader.clips().itertuples(index=False):
        first[row.first_frame:row.last_frame + 1] = row.first_frame
        last[row.first_frame:row.last_frame + 1] = row.last_frame
    return first, last


def training_sequence_frames(reader: IdentityReader) -> np.ndarray:
    """The frames of the pair stage's training sequences that are training frames with a tracked camera."""
    path = reader.layout.stage_dir("pair") / "sequences.parquet"
    if path.is_file():
        sequences = pd.read_parquet(path)
        frames = []
        for row in sequences.loc[sequences["split"] == "train"].itertuples(index=False):
            for first, last in zip(row.first_frames, row.last_frames):
                frames.append(np.arange(int(first), int(last) + 1))
        if not frames:
            raise IdentityError(f"{path}: no training sequence; re-run the pair stage")
        candidates = np.unique(np.concatenate(frames))
    else:
        # A person-specific video (an imported ER-NeRF folder) has no emotions to sequence: all of it trains.
        log.warning("%s not found: JEAN trains on every training frame of %s (run the pair stage on MEAD-like "
                    "recordings for its same-emotion sequences)", path, reader.root.name)
        candidates = reader.training_frames()
    cameras = reader.cameras()
    allowed = np.zeros(reader.num_frames, bool)
    allowed[reader.training_frames()] = True
    chosen = np.array([i for i in candidates if allowed[i] and cameras.has(int(i))], np.int64)
    if len(chosen) == 0:
        raise IdentityError(f"{path}: none of the training sequences' frames is a tracked training frame")
    return chosen


def validation_frames(reader: IdentityReader, training: np.ndarray, count: int = 2) -> np.ndarray:
    """A few tracked training frames outside the sequences (the long recording), for a validation PSNR that
    reads no test frame; empty when there are none."""
    cameras = reader.cameras()
    rest = np.setdiff1d(reader.training_frames(), training)
    rest = np.array([i for i in rest if cameras.has(int(i))], np.int64)
    if len(rest) == 0:
        return rest
    return rest[np.linspace(0, len(rest) - 1, min(count, len(rest))).astype(int)]


def training_pairs(reader: IdentityReader) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, frames of A, frames of B) along each training pair's DTW path; a path through a test frame is an
    error (the pair stage marks held-out sentences "val", which are never read)."""
    from talkhead_models.preprocess.pairing import read_alignments

    pair_dir = reader.layout.stage_dir("pair")
    table_path = pair_dir / "pairs.parquet"
    if not table_path.is_file():
        raise IdentityError(f"{table_path} not found; run `dvc repro pair@{reader.root.name}`")
    table = pd.read_parquet(table_path)
    paths = read_alignments(pair_dir)
    held_out = reader.held_out_mask()
    pairs = []
    for row in table.loc[table["split"] == "train"].itertuples(index=False):
        path = np.asarray(paths[row.path], np.int64)
        if held_out[path].any():
            raise IdentityError(f"{table_path}: training pair {row.pair} runs through held-out (test) frames; "
                                "re-run the split and pair stages")
        pairs.append((str(row.pair), path[:, 0], path[:, 1]))
    if not pairs:
        raise IdentityError(f"{table_path}: no training pair (same sentence in two emotions); the expression "
                            "transformer needs some")
    return pairs


def expression_inputs(cfg: JeanConfig, reader: IdentityReader, pretrained: Mapping[str, Path]) -> np.ndarray:
    """[N, E] per-frame expression inputs of every frame of the identity (NaN rows where there is none)."""
    if cfg.expression_feature == "params":
        path = reader.layout.stage_dir("track") / "exp.npy"
        if not path.is_file():
            raise IdentityError(f"{path} not found; run `dvc repro track@{reader.root.name}`")
        return np.asarray(np.load(path), np.float32)
    from talkhead_models.pretrained.emotion import EMOTION_SOURCE_SUBSTITUTE, load_emotion_features

    if "emotion" not in pretrained:
        raise FileNotFoundError("JEAN's emotion features come from the pretrain_emotion stage "
                                "(`dvc repro pretrain_emotion`)")
    features, source = load_emotion_features(Path(pretrained["emotion"]), reader.root.name)
    substitute = source == EMOTION_SOURCE_SUBSTITUTE
    if substitute != (cfg.emotion_network == "corpus_cnn"):
        raise ValueError(f"jean.emotion_network is {cfg.emotion_network!r} but {pretrained['emotion']} holds "
                         f"{source!r} features; set jean.emotion_network to "
                         f"{'corpus_cnn' if substitute else 'emoca'} or re-run pretrain_emotion")
    return np.asarray(features, np.float32)


def backdrop(reader: IdentityReader, index: int, background: np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1]: frame ``index``'s torso over the background image (the head's backdrop)."""
    torso = reader.torso_rgba(index)
    alpha = torso[..., 3:].astype(np.float32) / 255.0
    return torso[..., :3].astype(np.float32) / 255.0 * alpha + background * (1.0 - alpha)
