"""Emotion pairs on MEAD-like data: the same sentence in two emotions, aligned by dynamic time warping.

JEAN learns expression transfer from pairs of renditions of one sentence in
two emotions (MEAD level 3 angry, happy, sad, and neutral). The renditions
differ in speaking rate, so their frames are aligned with DTW on per-frame
features that follow the speech and not the emotion:

* ``expression`` (default): the tracked expression coefficients, centred on
  the clip's median (removing the emotion's steady offset) and mapped through
  the model's expression basis onto the lip points, so that only mouth motion
  counts; with their temporal derivative, which pins the timing of openings
  and closures.
* ``landmarks``: inner/outer lip openings and mouth width from the FaceMesh
  points, in units of the outer-eye distance, centred and with derivatives.
* ``emotion``: per-frame emotion-recognition embeddings (``features/emotion.npy``,
  written where an emotion network's weights exist); without that file the
  expression features are used and a warning says so.

Training sequences: JEAN trains on longer runs than one MEAD sentence, so
clips of one emotion are concatenated (in sentence order) into sequences of
about ``sequence_frames`` frames, leaving out clips whose head pose or camera
distance is inconsistent with the identity's other clips (with a shared focal,
a different distance is what a different zoom looks like).
"""

from __future__ import annotations

import itertools
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Literal

import annotated_types
import numpy as np
import pandas as pd

from talkhead_models import face_topology as topo
from talkhead_models.config import NonNegativeFloat, PositiveFloat, PositiveInt
from talkhead_models.geometry import mean_rotation
from talkhead_models.preprocess.face_model import FaceModel
from talkhead_models.preprocess.splits import SplitConfig, held_out_sentences

log = logging.getLogger(__name__)

PairFeature = Literal["expression", "landmarks", "emotion"]
FEATURES = typing.get_args(PairFeature)

PAIR_COLUMNS = (
    "pair",                       # "<sentence>_<emotion_a>_<emotion_b>", unique per identity
    "identity", "sentence",
    "emotion_a", "level_a", "clip_a", "first_frame_a", "last_frame_a",
    "emotion_b", "level_b", "clip_b", "first_frame_b", "last_frame_b",
    "path",                       # key of the DTW path in the pair folder's aligned.npz: [L, 2] int32 frame indices
    "path_length", "dtw_cost",    # steps of the path; mean feature distance along it
    "feature", "split",           # features used; "train" or "val" (held-out sentences)
)

SEQUENCE_COLUMNS = (
    "sequence", "identity", "emotion", "level", "split",
    "clips", "first_frames", "last_frames",  # lists, in concatenation order
    "frames",
)


@dataclass(frozen=True)
class PairConfig:
    """Pairing renditions of a sentence across emotions (params.yaml ``pair``)."""

    feature: PairFeature = "expression"
    """Per-frame features DTW aligns: expression (default), landmarks, or emotion."""
    emotions: tuple[str, ...] = ("neutral", "angry", "happy", "sad")
    """Emotions paired (every two of them per sentence)."""
    level: Annotated[int, annotated_types.Interval(ge=1, le=3)] = 3
    """Intensity level of the non-neutral emotions (MEAD records neutral at level 1 only)."""
    derivative_weight: NonNegativeFloat = 1.0
    """Weight of the features' temporal derivative next to the features."""
    sequence_frames: PositiveInt = 250
    """Target length of a concatenated same-emotion training sequence (frames at 25 fps)."""
    pose_tolerance_deg: PositiveFloat = 10.0
    """Clips whose mean head rotation is further than this from the identity's median are left out of sequences."""
    depth_tolerance: PositiveFloat = 0.1
    """Clips whose median camera distance differs by more than this fraction from the identity's are left out."""
    split: SplitConfig = field(default_factory=SplitConfig)
    """Shared params section ``split``: held-out sentences become validation pairs."""


def _centred_with_derivative(values: np.ndarray, derivative_weight: float) -> np.ndarray:
    centred = values - np.median(values, axis=0)
    derivative = np.gradient(centred, axis=0) if len(centred) > 1 else np.zeros_like(centred)
    return np.hstack([centred, derivative_weight * derivative])


def expression_features(exp: np.ndarray, model: FaceModel, derivative_weight: float) -> np.ndarray:
    """[T, F] lip-point displacements (head frame, cm) driven by the clip's expression coefficients."""
    position = {int(v): i for i, v in enumerate(model.landmarks)}
    rows = [position[v] for v in topo.lips_indices() if v in position]
    if not rows:
        rows = list(range(model.n_points))
    centred = exp - np.median(exp, axis=0)
    displacement = np.einsum("tk,kpi->tpi", centred, model.exp_basis[:, rows]).reshape(len(exp), -1) * 10.0
    return _centred_with_derivative(displacement, derivative_weight)


def landmark_features(points: np.ndarray, derivative_weight: float) -> np.ndarray:
    """[T, F] lip openings and mouth widths from FaceMesh points [T, 478, 3], per outer-eye distance."""
    xy = points[..., :2]
    eye = np.linalg.norm(xy[:, 263] - xy[:, 33], axis=-1)[:, None]
    pairs = ([13, 14], [82, 87], [312, 317], [0, 17], [37, 84], [267, 314], [61, 291], [78, 308])
    distances = np.stack([np.linalg.norm(xy[:, a] - xy[:, b], axis=-1) for a, b in pairs], axis=1)
    return _centred_with_derivative(distances / np.maximum(eye, 1e-6), derivative_weight)


def dtw_path(features_a: np.ndarray, features_b: np.ndarray) -> tuple[np.ndarray, float]:
    """Monotone alignment [L, 2] (frame of a, frame of b), from (0, 0) to the two last frames, and its mean cost."""
    import librosa

    cost = np.sqrt(((features_a[:, None, :] - features_b[None, :, :]) ** 2).sum(axis=-1))
    accumulated, path = librosa.sequence.dtw(C=cost)
    path = path[::-1].astype(np.int64)
    return path, float(accumulated[-1, -1] / len(path))


def matched_frames(path: np.ndarray, n_a: int) -> np.ndarray:
    """[n_a] the mean frame of b that the path matches with each frame of a."""
    totals = np.bincount(path[:, 0], weights=path[:, 1], minlength=n_a)
    counts = np.bincount(path[:, 0], minlength=n_a)
    return totals / np.maximum(counts, 1)


def eligible_clips(clips: pd.DataFrame, cfg: PairConfig) -> pd.DataFrame:
    """MEAD-like clips of the paired emotions at the paired level (neutral at any level)."""
    chosen = clips[(clips["kind"] == "clip") & clips["emotion"].isin(cfg.emotions)]
    return chosen[(chosen["emotion"] == "neutral") | (chosen["level"] == cfg.level)]


@dataclass
class PairingResult:
    pairs: pd.DataFrame
    paths: dict[str, np.ndarray]
    """pair name -> [L, 2] int32 absolute processed frame indices (frame of clip a, frame of clip b)."""
    unpaired_sentences: list[int]


def pair_clips(identity: str, clips: pd.DataFrame, features: Callable[[int, int], np.ndarray], feature: str,
               cfg: PairConfig) -> PairingResult:
    """Align every two emotions of each sentence. ``features(first, last)`` gives a clip's [T, F] features."""
    chosen = eligible_clips(clips, cfg)
    held = held_out_sentences(chosen["sentence"], cfg.split.val_sentence_fraction)
    order = {emotion: i for i, emotion in enumerate(cfg.emotions)}
    rows, paths, unpaired = [], {}, []
    for sentence, group in chosen.groupby("sentence"):
        group = group.sort_values("emotion", key=lambda s: s.map(order)).drop_duplicates("emotion")
        if len(group) < 2:
            unpaired.append(int(sentence))
            continue
        for a, b in itertools.combinations(group.itertuples(index=False), 2):
            path, cost = dtw_path(features(a.first_frame, a.last_frame), features(b.first_frame, b.last_frame))
            name = f"{int(sentence):03d}_{a.emotion}_{b.emotion}"
            paths[name] = (path + [a.first_frame, b.first_frame]).astype(np.int32)
            rows.append(dict(
                pair=name, identity=identity, sentence=int(sentence),
                emotion_a=a.emotion, level_a=int(a.level), clip_a=a.clip,
                first_frame_a=int(a.first_frame), last_frame_a=int(a.last_frame),
                emotion_b=b.emotion, level_b=int(b.level), clip_b=b.clip,
                first_frame_b=int(b.first_frame), last_frame_b=int(b.last_frame),
                path=name, path_length=len(path), dtw_cost=cost, feature=feature,
                split="val" if int(sentence) in held else "train",
            ))
    if unpaired:
        log.warning("%s: sentence(s) %s have no partner emotion among %s; skipped", identity, unpaired,
                    list(cfg.emotions))
    return PairingResult(pd.DataFrame(rows, columns=list(PAIR_COLUMNS)), paths, unpaired)


ALIGNED_FILE = "aligned.npz"


def write_alignments(pair_dir: Path, paths: dict[str, np.ndarray]) -> None:
    """Every pair's DTW path into ``pair_dir/aligned.npz`` (one file, whatever the number of pairs)."""
    np.savez(Path(pair_dir) / ALIGNED_FILE, **paths)


def read_alignments(pair_dir: Path) -> dict[str, np.ndarray]:
    """``aligned.npz``: pair name (``pairs.parquet``'s ``path``) -> [L, 2] int32 absolute frame indices."""
    path = Path(pair_dir) / ALIGNED_FILE
    if not path.is_file():
        stale = " (the earlier aligned/ folder is no longer read)" if (Path(pair_dir) / "aligned").is_dir() else ""
        raise FileNotFoundError(f"{path} not found{stale}; re-run the pair stage (`dvc repro pair@"
                                f"{Path(pair_dir).parent.name}`)")
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def consistent_clips(clips: pd.DataFrame, rotations: np.ndarray, depth: np.ndarray, cfg: PairConfig) -> pd.Series:
    """Per clip: True when its mean head rotation and median depth agree with the identity's medians.

    ``rotations`` [N, 3, 3] head-to-camera, ``depth`` [N] camera distance.
    """
    means = np.array([mean_rotation(rotations[row.first_frame:row.last_frame + 1])
                      for row in clips.itertuples(index=False)])
    u, _, vt = np.linalg.svd(np.median(means, axis=0))
    reference = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    cosine = (np.trace(means @ reference.T, axis1=1, axis2=2) - 1.0) / 2.0
    angle = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    clip_depth = np.array([np.median(depth[r.first_frame:r.last_frame + 1]) for r in clips.itertuples(index=False)])
    depth_ratio = clip_depth / np.median(clip_depth)
    keep = (angle <= cfg.pose_tolerance_deg) & (np.abs(depth_ratio - 1.0) <= cfg.depth_tolerance)
    return pd.Series(keep, index=clips.index)


def build_sequences(identity: str, clips: pd.DataFrame, rotations: np.ndarray, depth: np.ndarray,
                    cfg: PairConfig) -> pd.DataFrame:
    """Same-emotion clips concatenated into ~``sequence_frames`` sequences (train and val sentences apart)."""
    chosen = eligible_clips(clips, cfg)
    if chosen.empty:
        return pd.DataFrame(columns=list(SEQUENCE_COLUMNS))
    keep = consistent_clips(chosen, rotations, depth, cfg)
    dropped = chosen.loc[~keep, "clip"].tolist()
    if dropped:
        log.warning("%s: %d clip(s) left out of training sequences (pose or distance inconsistent): %s",
                    identity, len(dropped), dropped)
    held = held_out_sentences(chosen["sentence"], cfg.split.val_sentence_fraction)
    kept = chosen[keep].assign(split=lambda t: np.where(t["sentence"].isin(held), "val", "train"))
    rows = []
    for (emotion, level, split), group in kept.groupby(["emotion", "level", "split"], sort=True):
        chunks: list[list] = []
        current: list = []
        for row in group.sort_values("sentence").itertuples(index=False):
            current.append(row)
            if _frames(current) >= cfg.sequence_frames:
                chunks.append(current)
                current = []
        if current:
            # A short remainder joins the previous sequence rather than standing alone.
            if chunks and _frames(current) < cfg.sequence_frames // 2:
                chunks[-1] = chunks[-1] + current
            else:
                chunks.append(current)
        for number, members in enumerate(chunks):
            rows.append({
                "sequence": f"{emotion}_level{int(level)}_{split}_{number:03d}", "identity": identity,
                "emotion": emotion, "level": int(level), "split": split, "clips": [m.clip for m in members],
                "first_frames": [int(m.first_frame) for m in members],
                "last_frames": [int(m.last_frame) for m in members], "frames": _frames(members),
            })
    return pd.DataFrame(rows, columns=list(SEQUENCE_COLUMNS))


def _frames(members: list) -> int:
    return int(sum(m.last_frame - m.first_frame + 1 for m in members))
