"""Train / test splits: self-driven test frames and cross-driven audio sources.

One rule decides, per identity, which frames are **test frames**: the frames
evaluation scores, which nothing may train or validate on. The track stage
(``transforms_val.json``), the pair stage (validation pairs) and the split
stage (``split.parquet``, the table evaluation reads) apply it here; the
corpus-level models (``talkhead_models.pretrained.datasets``) read every
identity's ``split.parquet`` and leave its test frames, and every frame of a
test clip, out of both their training and their validation data. The rule is
``evaluation_ranges`` / ``evaluation_mask``; ER-NeRF and JEAN call these frames
"validation" (``transforms_val.json``), so ``validation_ranges`` /
``validation_mask`` are the same functions under that name:

* a **person-specific video** keeps its last ``val_fraction`` of frames for
  testing (the ER-NeRF / RAD-NeRF convention: ``int(N * 10 / 11)`` frames
  train, the rest are held out);
* **MEAD-like clips** hold out whole sentences, in every emotion: the
  ``val_sentence_fraction`` highest-numbered sentences (at least one when an
  identity has two or more), so no held-out sentence is ever seen in
  training, and the emotion pairs of those sentences are the validation pairs
  (JEAN uses 60 training and 24 validation pairs per identity: 24/84).

Cross-driven evaluation drives an identity with other identities' held-out
audio, so those recordings are test data of their own identity as well. Those
rows name the source recording and a time range, because the other
identity's processed frame numbers belong to its own pipeline run.

Test frames stay test frames whether or not they show a face: the landmarks
stage's ``usable.npy`` says which frames have one, and ``usable_self_rows``
(used by ``IdentityReader``) cuts the self-driven rows down to those, so a
frame without a face is neither trained on nor scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from talkhead_models.config import Fraction, NonNegativeInt
from talkhead_models.data.arrays import frame_runs
from talkhead_models.data.processed import FPS
from talkhead_models.data.sources import Recording

SPLIT_COLUMNS = (
    "identity",        # the identity whose model is evaluated
    "role",            # "self" (its own held-out frames) or "cross" (another identity's audio)
    "audio_identity",  # whose recording provides the driving audio
    "clip",            # that recording's clip name ("<emotion>/level_<k>/<NNN>" or "video")
    "kind", "emotion", "level", "sentence",
    "start_s", "end_s",  # the driving time range within the recording (seconds)
    "first_frame", "last_frame",  # self rows: inclusive processed frame range of `identity`; cross rows: -1
    "audio_source",    # the recording's path relative to the raw root
)


@dataclass(frozen=True)
class SplitConfig:
    """What is held out for validation (params.yaml ``split``)."""

    val_fraction: Fraction = 1.0 / 11.0
    """Last fraction of a person-specific video's frames used for validation (ER-NeRF: 1/11)."""
    val_sentence_fraction: Fraction = 24.0 / 84.0
    """Fraction of an identity's sentences held out in every emotion (JEAN: 24 of 84 pairs)."""
    cross_clips_per_identity: NonNegativeInt = 4
    """Held-out recordings of each other identity listed as cross-driven audio."""


def held_out_sentences(sentences: Iterable[int], fraction: float) -> set[int]:
    """The highest-numbered ``fraction`` of the sentences (at least one when there are two or more)."""
    ordered = sorted({int(s) for s in sentences})
    if len(ordered) < 2:
        return set()
    count = min(max(1, int(round(fraction * len(ordered)))), len(ordered) - 1)
    return set(ordered[-count:])


def video_validation_start(n_frames: int, fraction: float) -> int:
    """First validation frame (relative to the video) of a continuous video of ``n_frames``.

    ``int(N * (1 - fraction))`` as ER-NeRF computes it, with a tolerance so that
    floating point (275 * (1 - 1/11) = 249.99...) does not move the boundary.
    """
    return min(n_frames, max(1, int(n_frames * (1.0 - fraction) + 1e-9)))


def evaluation_mask(clips: pd.DataFrame, n_frames: int, cfg: SplitConfig) -> np.ndarray:
    """[n_frames] bool: True for the identity's test frames (its self-driven held-out frames)."""
    mask = np.zeros(n_frames, dtype=bool)
    for row in evaluation_ranges(clips, cfg).itertuples(index=False):
        mask[row.first_frame:row.last_frame + 1] = True
    return mask


def evaluation_ranges(clips: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """One row per test frame range: the clips.parquet columns with first/last_frame narrowed."""
    held = held_out_sentences(clips.loc[clips["kind"] == "clip", "sentence"], cfg.val_sentence_fraction)
    rows = []
    for row in clips.to_dict("records"):
        if row["kind"] == "video":
            length = row["last_frame"] - row["first_frame"] + 1
            start = video_validation_start(length, cfg.val_fraction)
            if start < length:
                rows.append({**row, "first_frame": row["first_frame"] + start})
        elif int(row["sentence"]) in held:
            rows.append(dict(row))
    return pd.DataFrame(rows, columns=clips.columns)


def self_rows(identity: str, clips: pd.DataFrame, cfg: SplitConfig) -> list[dict]:
    """split.parquet rows of an identity's own test frames."""
    starts = dict(zip(clips["clip"], clips["first_frame"]))
    rows = []
    for row in evaluation_ranges(clips, cfg).itertuples(index=False):
        offset = row.first_frame - starts[row.clip]
        rows.append(dict(
            identity=identity, role="self", audio_identity=identity, clip=row.clip, kind=row.kind,
            emotion=row.emotion, level=int(row.level), sentence=int(row.sentence),
            start_s=offset / FPS, end_s=(row.last_frame - starts[row.clip] + 1) / FPS,
            first_frame=int(row.first_frame), last_frame=int(row.last_frame), audio_source=row.source,
        ))
    return rows


def usable_self_rows(rows: pd.DataFrame, usable: np.ndarray) -> pd.DataFrame:
    """Self-driven split rows cut to the ``usable`` frames: one row per run of usable frames inside a row, with
    first/last_frame and start_s/end_s (the audio's time range) narrowed alike; rows without any are left out."""
    pieces = []
    for row in rows.to_dict("records"):
        first, last = int(row["first_frame"]), int(row["last_frame"])
        inside = first + np.flatnonzero(usable[first:last + 1])
        for run_first, run_last in frame_runs(inside):
            # An uncut end keeps its stored time exactly, so a row without faceless frames is returned unchanged.
            start_s = row["start_s"] if run_first == first else row["start_s"] + (run_first - first) / FPS
            end_s = row["end_s"] if run_last == last else row["start_s"] + (run_last - first + 1) / FPS
            pieces.append({**row, "first_frame": run_first, "last_frame": run_last, "start_s": start_s, "end_s": end_s})
    return pd.DataFrame(pieces, columns=rows.columns).astype(rows.dtypes.to_dict())


# ER-NeRF's name for the same frames (transforms_val.json); one rule, two names.
validation_mask = evaluation_mask
validation_ranges = evaluation_ranges


def cross_rows(identity: str, others: dict[str, Sequence[Recording]], duration_of: Callable[[Path], float],
               raw_root: Path, cfg: SplitConfig) -> list[dict]:
    """split.parquet rows driving ``identity`` with each other identity's held-out recordings.

    ``duration_of`` gives a recording's length in seconds (asked only for the
    chosen ones); per other identity, up to ``cross_clips_per_identity``
    held-out recordings: the continuous video's tail first, then clips of the
    held-out sentences taking one emotion after another.
    """
    rows = []
    for other, recordings in sorted(others.items()):
        held = held_out_sentences((r.sentence for r in recordings if r.kind == "clip"), cfg.val_sentence_fraction)
        videos = [r for r in recordings if r.kind == "video"]
        clips = sorted((r for r in recordings if r.kind == "clip" and r.sentence in held),
                       key=lambda r: (r.sentence, r.emotion))
        # Interleave emotions so a short list still covers several of them.
        by_emotion: dict[str, list[Recording]] = {}
        for recording in clips:
            by_emotion.setdefault(recording.emotion, []).append(recording)
        interleaved = [r for group in _round_robin(list(by_emotion.values())) for r in group]
        for recording in (videos + interleaved)[:cfg.cross_clips_per_identity]:
            duration = duration_of(recording.video)
            start = 0.0
            if recording.kind == "video":
                frames = int(round(duration * FPS))
                start = video_validation_start(frames, cfg.val_fraction) / FPS
            rows.append(dict(
                identity=identity, role="cross", audio_identity=other, clip=recording.clip, kind=recording.kind,
                emotion=recording.emotion, level=int(recording.level), sentence=int(recording.sentence),
                start_s=float(start), end_s=float(duration), first_frame=-1, last_frame=-1,
                audio_source=recording.video.relative_to(raw_root).as_posix(),
            ))
    return rows


def _round_robin(groups: list[list[Recording]]) -> list[list[Recording]]:
    """[[a1, a2], [b1]] -> [[a1, b1], [a2]]: one of each group per round."""
    rounds = []
    for index in range(max((len(g) for g in groups), default=0)):
        rounds.append([g[index] for g in groups if index < len(g)])
    return rounds


def split_table(rows: list[dict]) -> pd.DataFrame:
    """The split.parquet table (SPLIT_COLUMNS, fixed dtypes)."""
    table = pd.DataFrame(rows, columns=list(SPLIT_COLUMNS))
    return table.astype({"level": "int64", "sentence": "int64", "start_s": "float64", "end_s": "float64",
                         "first_frame": "int64", "last_frame": "int64"})
