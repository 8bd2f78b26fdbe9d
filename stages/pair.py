"""DVC stage ``pair@<ID>``: same sentence in two emotions, aligned by DTW; same-emotion training sequences.

Writes ``pairs.parquet`` (talkhead_models.preprocess.pairing.PAIR_COLUMNS),
``aligned.npz`` (per pair, its ``path`` key: [L, 2] int32 processed frame indices, clip a and clip b)
and ``sequences.parquet`` (SEQUENCE_COLUMNS). An identity without MEAD-like
clips (a person-specific video) gets empty tables and a log line.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from stages._stage import Stage, StageResult
from talkhead_models.atomic import atomic_dir
from talkhead_models.config import ConfigError, to_dict
from talkhead_models.data.arrays import require_finite, require_finite_entries
from talkhead_models.data.manifest import write_manifest
from talkhead_models.data.processed import ProcessedIdentity
from talkhead_models.preprocess.cameras import euler_to_rotation
from talkhead_models.preprocess.face_model import FaceModel
from talkhead_models.preprocess.landmark_inputs import read_landmark_inputs
from talkhead_models.preprocess.pairing import (
    FEATURES, PAIR_COLUMNS, SEQUENCE_COLUMNS, PairConfig, build_sequences, eligible_clips, expression_features,
    landmark_features, pair_clips, write_alignments,
)

log = logging.getLogger(__name__)

EMOTION_FEATURES = "emotion.npy"


def feature_function(cfg: PairConfig, identity_root: Path, model: FaceModel, exp: np.ndarray,
                     points: np.ndarray, identity: str):
    """(name actually used, function(first, last) -> [T, F] features of a clip)."""
    if cfg.feature not in FEATURES:
        raise ConfigError(f"pair.feature {cfg.feature!r} unknown; use one of {FEATURES}")
    feature = cfg.feature
    if feature == "emotion":
        path = ProcessedIdentity(identity_root).path("features_dir") / EMOTION_FEATURES
        if path.is_file():
            embeddings = np.load(path)
            if len(embeddings) != len(exp):
                raise ValueError(f"{path}: {len(embeddings)} rows for {len(exp)} frames; re-run the stage that "
                                 "writes it")
            return feature, lambda first, last: _with_derivative(embeddings[first:last + 1], cfg)
        log.warning("%s: %s not found (no emotion-recognition weights); pairing on expression features instead",
                    identity, path)
        feature = "expression"
    if feature == "landmarks":
        return feature, lambda first, last: landmark_features(points[first:last + 1], cfg.derivative_weight)
    return feature, lambda first, last: expression_features(exp[first:last + 1], model, cfg.derivative_weight)


def _with_derivative(values: np.ndarray, cfg: PairConfig) -> np.ndarray:
    centred = values - np.median(values, axis=0)
    return np.hstack([centred, cfg.derivative_weight * np.gradient(centred, axis=0)])


def run(cfg: PairConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path], identity: str) -> StageResult:
    landmarks = read_landmark_inputs(inputs["crop"], inputs["landmarks"], identity)
    clips, points = landmarks.clips, landmarks.points
    tracker = f"the track stage (`dvc repro track@{identity}`)"
    exp = require_finite(np.load(inputs["track"] / "exp.npy"), inputs["track"] / "exp.npy", tracker)
    params = torch.load(inputs["track"] / "track_params.pt", weights_only=True)
    require_finite_entries(params, inputs["track"] / "track_params.pt", tracker, ("euler", "trans"))
    if len(exp) != len(points) or params["euler"].shape[0] != len(points):
        raise ValueError(f"{identity}: track outputs cover {len(exp)} frames, landmarks {len(points)}; "
                         f"re-run `dvc repro track@{identity}`")
    model = FaceModel.load(inputs["face_model"] / "face_model.npz")
    if eligible_clips(clips, cfg).empty:
        log.info("%s: no MEAD-like clips of %s at level %d; writing empty pair tables", identity,
                 list(cfg.emotions), cfg.level)
        pairs = pd.DataFrame(columns=list(PAIR_COLUMNS))
        paths: dict[str, np.ndarray] = {}
        sequences = pd.DataFrame(columns=list(SEQUENCE_COLUMNS))
        feature = cfg.feature
    else:
        feature, features = feature_function(cfg, inputs["crop"].parent, model, exp, points, identity)
        result = pair_clips(identity, clips, features, feature, cfg)
        pairs, paths = result.pairs, result.paths
        rotations = euler_to_rotation(params["euler"].double().numpy())
        depth = -params["trans"][:, 2].double().numpy()
        sequences = build_sequences(identity, clips, rotations, depth, cfg)
    with atomic_dir(outputs["pair"]) as tmp:
        write_alignments(tmp, paths)
        pairs.to_parquet(tmp / "pairs.parquet", index=False)
        sequences.to_parquet(tmp / "sequences.parquet", index=False)
        write_manifest(tmp, {**to_dict(replace(cfg, feature=feature))}, "pair")
    metrics = {
        "pairs": float(len(pairs)),
        "val_pairs": float((pairs["split"] == "val").sum()) if len(pairs) else 0.0,
        "sequences": float(len(sequences)),
        "mean_dtw_cost": float(pairs["dtw_cost"].mean()) if len(pairs) else 0.0,
    }
    log.info("%s: %d pairs (%d validation), %d training sequences", identity, len(pairs), metrics["val_pairs"],
             len(sequences))
    return StageResult(metrics=metrics)


STAGE = Stage(
    name="pair",
    config=PairConfig,
    section="pair",
    run=run,
    inputs={"crop": "data/processed/{identity}/crop", "landmarks": "data/processed/{identity}/landmarks",
            "track": "data/processed/{identity}/track", "face_model": "data/models/face_model"},
    outputs={"pair": "data/processed/{identity}/pair"},
    description=__doc__,
    shared_sections=("split",),
)

if __name__ == "__main__":
    raise SystemExit(STAGE.main())
