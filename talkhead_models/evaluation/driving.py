"""The driving signals of an evaluation: one :class:`Driving` per row of the identity's ``split.parquet``.

* **self-driven** rows are the identity's own held-out frame ranges, cut to
  the frames with a face (``IdentityReader.self_driven_rows``): its audio,
  audio features, eye openness, landmarks and expression at those frames,
  rendered from those frames' cameras, and compared with them;
* **cross-driven** rows are another identity's held-out recording: its audio
  (features computed with the identity's own audio settings), rendered from
  a stretch of the identity's own validation cameras (scored held-out frames,
  looped back and forth when the audio is longer) with the identity's own
  blinks;
* **cross-expression** drivings (JEAN's setting: lips from one clip, the
  expression from another) are self-driven rows A, each given a partner B:
  a held-out clip of the same identity with the same sentence in another
  emotion. A's audio, audio features, eye openness, cameras and landmarks
  drive the frames; ``expression_frames`` are B's frames index-aligned with
  A's (no DTW at inference, as JEAN's paper says), walked back and forth
  when B is the shorter clip.

The drivings of every setting carry ``expression_frames``: the driving
frames themselves when self-driven, the identity's own frames whose cameras
a cross-driven clip uses, B's frames in the cross-expression setting.

A frame budget per role (``max_frames``) keeps CPU evaluation short: every
row gets an equal share (at least ``min_clip_frames``, the length the
lip-sync search needs), rows are taken in the split table's order (which
interleaves emotions) until the budget is spent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.data.processed import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from talkhead_models.media import read_audio
from talkhead_models.methods.base import Driving, Role
from talkhead_models.preprocess.audio_features import AudioConfig, for_kind, kinds, waveform_features

log = logging.getLogger(__name__)


CROSS_EXPRESSION = "cross_expression"
"""The setting whose lips follow one held-out clip's audio and whose expression follows another clip of the same
sentence in another emotion (``Driving.role``; ``methods.base.Role`` lists "self" and "cross" only)."""
SETTINGS = ("self", "cross", CROSS_EXPRESSION)
"""Every driving setting an evaluation can render, in record order."""


class SplitError(FileNotFoundError):
    """The identity has no split table, or it has nothing to evaluate; the message names the stage to run."""


@dataclass(frozen=True)
class FrameBudget:
    """How many frames of each role are rendered."""

    max_frames: int = 0
    """Frames rendered per setting (self, cross, cross_expression); 0 = every frame of every row."""
    min_clip_frames: int = 50
    """Fewest frames a row is cut to (2 s: the lip-sync offset search spans +-15 frames)."""

    def allot(self, lengths: list[int]) -> list[int]:
        """Frames taken from each row (0 = row skipped), in order, within the budget."""
        if self.max_frames <= 0:
            return list(lengths)
        share = max(self.min_clip_frames, self.max_frames // max(len(lengths), 1))
        taken, left = [], self.max_frames
        for length in lengths:
            count = min(length, share, left) if left > 0 else 0
            taken.append(count)
            left -= count
        return taken


@dataclass(frozen=True)
class _OwnSignals:
    """The identity's own per-frame signals, read once for all its self-driven rows."""

    waveform: np.ndarray
    features: Mapping[str, np.ndarray]
    eye: np.ndarray
    landmarks: np.ndarray


def _own_signals(reader: IdentityReader, audio_kinds: tuple[str, ...]) -> _OwnSignals:
    return _OwnSignals(waveform=reader.audio(), features={kind: reader.audio_features(kind) for kind in audio_kinds},
                       eye=reader.eye(), landmarks=reader.landmarks().points68)


def _own_driving(reader: IdentityReader, own: _OwnSignals, row, frames: np.ndarray, role: str,
                 expression: np.ndarray | None) -> Driving:
    """The driving of ``frames`` (a stretch of ``row``) from the identity's own recording: its audio and signals."""
    count = len(frames)
    audio = own.waveform[frames[0] * SAMPLES_PER_FRAME:(frames[-1] + 1) * SAMPLES_PER_FRAME]
    audio = np.pad(audio, (0, max(0, count * SAMPLES_PER_FRAME - len(audio))))
    return Driving(
        identity=reader.root.name, role=role, audio=audio,
        audio_features={k: np.asarray(v[np.minimum(frames, len(v) - 1)]) for k, v in own.features.items()},
        eye=np.asarray(own.eye[frames], np.float32), frame_indices=frames, audio_identity=reader.root.name,
        clip=str(row.clip), emotion=str(row.emotion), landmarks=np.asarray(own.landmarks[frames], np.float32),
        expression=None if expression is None else np.asarray(expression[frames], np.float32),
        expression_frames=frames,
    )


def self_drivings(reader: IdentityReader, budget: FrameBudget, audio_kinds: tuple[str, ...],
                  expression: np.ndarray | None) -> list[Driving]:
    """One driving per self-driven row with a face: the identity's own held-out frames."""
    rows = reader.self_driven_rows()
    lengths = (rows["last_frame"] - rows["first_frame"] + 1).astype(int).tolist()
    own = _own_signals(reader, audio_kinds)
    drivings = []
    for row, count in zip(rows.itertuples(index=False), budget.allot(lengths)):
        if count == 0:
            continue
        frames = np.arange(int(row.first_frame), int(row.first_frame) + count)
        drivings.append(_own_driving(reader, own, row, frames, "self", expression))
    return drivings


def expression_partners(rows: pd.DataFrame) -> dict[str, str]:
    """Clip A -> clip B of the self-driven ``rows``: the same sentence in the next emotion of that sentence.

    The emotions a sentence is held out in are taken in alphabetical order, cyclically (angry -> happy ->
    neutral -> sad -> angry), so when every clip is rendered every emotion is an expression source once per
    sentence; within an emotion the first clip by name is the partner. A sentence held out in one emotion only,
    and the continuous video's rows (sentence 0), have no partner.
    """
    clips = rows.loc[(rows["kind"] == "clip") & (rows["sentence"] > 0), ["clip", "emotion", "sentence"]]
    clips = clips.drop_duplicates("clip").sort_values(["sentence", "emotion", "clip"])
    partners = {}
    for _, group in clips.groupby("sentence", sort=True):
        emotions = list(dict.fromkeys(group["emotion"]))
        if len(emotions) < 2:
            continue
        first_clip = {emotion: str(group.loc[group["emotion"] == emotion, "clip"].iloc[0]) for emotion in emotions}
        for clip, emotion in zip(group["clip"], group["emotion"]):
            partners[str(clip)] = first_clip[emotions[(emotions.index(emotion) + 1) % len(emotions)]]
    return partners


def cross_expression_drivings(reader: IdentityReader, table: pd.DataFrame, budget: FrameBudget,
                              audio_kinds: tuple[str, ...]) -> list[Driving]:
    """One driving per self-driven row A whose clip has a partner B (:func:`expression_partners`): A's audio,
    signals and cameras, B's frames as the expression source, index-aligned from the start of both clips."""
    usable = reader.self_driven_rows()
    partners = expression_partners(usable)
    rows = usable.loc[usable["clip"].isin(list(partners))].reset_index(drop=True)
    # A row cut around faceless frames starts inside its clip: its offset keeps it aligned with B's frames.
    own_rows = table.loc[table["role"] == "self"]
    clip_start = own_rows.groupby("clip")["first_frame"].min().astype(int).to_dict()
    source_frames = {clip: np.concatenate([np.arange(int(r.first_frame), int(r.last_frame) + 1)
                                           for r in usable.loc[usable["clip"] == clip].itertuples(index=False)])
                     for clip in set(partners.values())}
    emotion_of = dict(zip(usable["clip"].astype(str), usable["emotion"].astype(str)))
    lengths = (rows["last_frame"] - rows["first_frame"] + 1).astype(int).tolist()
    own = _own_signals(reader, audio_kinds)
    drivings = []
    for row, count in zip(rows.itertuples(index=False), budget.allot(lengths)):
        if count == 0:
            continue
        frames = np.arange(int(row.first_frame), int(row.first_frame) + count)
        source = partners[str(row.clip)]
        offset = int(row.first_frame) - clip_start.get(str(row.clip), int(row.first_frame))
        expression_frames = ping_pong(source_frames[source], offset + count)[offset:]
        driving = _own_driving(reader, own, row, frames, CROSS_EXPRESSION, None)
        drivings.append(replace(driving, expression_frames=expression_frames, expression_clip=source,
                                emotion=emotion_of[source]))
    return drivings


def cross_drivings(reader: IdentityReader, table: pd.DataFrame, budget: FrameBudget, raw_root: Path,
                   audio_cfg: AudioConfig, audio_kinds: tuple[str, ...],
                   weights: Path | None = None) -> list[Driving]:
    """One driving per cross-driven row: another identity's recording on this identity's cameras."""
    rows = table.loc[table["role"] == "cross"].reset_index(drop=True)
    lengths = [int(np.floor((row.end_s - row.start_s) * FPS)) for row in rows.itertuples(index=False)]
    own_frames = np.flatnonzero(reader.validation_mask())  # held out and with a face
    if len(own_frames) == 0:
        own_frames = reader.training_frames()
    eye = reader.eye()
    drivings = []
    for row, count in zip(rows.itertuples(index=False), budget.allot(lengths)):
        if count == 0:
            continue
        source = Path(raw_root) / str(row.audio_source)
        if not source.is_file():
            raise SplitError(f"{source}: cross-driven audio named by {reader.layout.path('split')} is missing; "
                             "re-run the synth (or data) stage, or the split stage if the corpus changed")
        waveform = read_audio(source, SAMPLE_RATE)
        start = int(round(row.start_s * SAMPLE_RATE))
        audio = waveform[start:start + count * SAMPLES_PER_FRAME]
        audio = np.pad(audio, (0, max(0, count * SAMPLES_PER_FRAME - len(audio))))
        features = {}
        for kind in audio_kinds:
            features[kind] = waveform_features(audio, count, for_kind(audio_cfg, kind), weights)
        frames = ping_pong(own_frames, count)
        drivings.append(Driving(
            identity=reader.root.name, role="cross", audio=audio, audio_features=features,
            eye=np.asarray(eye[frames], np.float32), frame_indices=frames,
            audio_identity=str(row.audio_identity), clip=str(row.clip), emotion=str(row.emotion),
            expression_frames=frames,
        ))
    return drivings


def driving_kinds(reader: IdentityReader, audio_cfg: AudioConfig) -> tuple[str, ...]:
    """The audio feature kinds drivings carry: ``audio.kind``, and each of ``audio.extra_kinds`` the audio stage
    wrote for this identity. An extra kind it could not compute (its package missing) is left out: only a run
    trained on it reads it, and that run's training already stopped saying what to install."""
    present = set(reader.feature_kinds())
    return tuple(kind for kind in kinds(audio_cfg) if kind == audio_cfg.kind or kind in present)


def ping_pong(frames: np.ndarray, count: int) -> np.ndarray:
    """``count`` indices walking ``frames`` forwards, then backwards, ... (no jump in head pose)."""
    if len(frames) == 1:
        return np.repeat(frames, count)
    cycle = np.concatenate([frames, frames[-2:0:-1]])
    return cycle[np.arange(count) % len(cycle)]


def drivings(reader: IdentityReader, role: Role | str, budget: FrameBudget, raw_root: Path, audio_cfg: AudioConfig,
             audio_kinds: tuple[str, ...], expression: np.ndarray | None = None,
             weights: Path | None = None) -> list[Driving]:
    """The drivings of one setting (:data:`SETTINGS`) for ``reader``'s identity, from its ``split.parquet``."""
    if role not in SETTINGS:
        raise ValueError(f"unknown driving setting {role!r}; use one of {list(SETTINGS)}")
    table = reader.split()
    if table is None:
        raise SplitError(f"{reader.layout.path('split')} not found; run `dvc repro split@{reader.root.name}`")
    if role == "self":
        result = self_drivings(reader, budget, audio_kinds, expression)
    elif role == CROSS_EXPRESSION:
        result = cross_expression_drivings(reader, table, budget, audio_kinds)
    else:
        result = cross_drivings(reader, table, budget, raw_root, audio_cfg, audio_kinds, weights)
    log.info("%s: %d %s-driven clips, %d frames", reader.root.name, len(result), role,
             sum(d.num_frames for d in result))
    return result
