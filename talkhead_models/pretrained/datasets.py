"""Training and evaluation tensors for the corpus-level models, from processed identity folders.

The split (params ``pretrain``): one identity is held out entirely (default
the last one), and of every other identity the last sentence number(s) of its
MEAD-like clips are held out; everything else of the training identities
(their remaining clips and their long videos) is training data.

Each identity's recordings become *segments*: contiguous frame ranges
(``clips.parquet`` rows) with a global frame index ``start``..``stop``
(exclusive) into the arrays the loaders concatenate over identities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from talkhead_models.config import validate_name
from talkhead_models.data.processed import ProcessedIdentity
from talkhead_models.face_topology import to_68
from talkhead_models.preprocess.accuracy import recording_truths
from talkhead_models.preprocess.frames import read_clips
from talkhead_models.pretrained.canonical import (
    NeutralShape, canonical_landmarks, fit_similarity, neutral_shape, remove_pose_dependence,
)

log = logging.getLogger(__name__)

TRAIN = "train"
HELDOUT_SENTENCE = "heldout_sentence"
HELDOUT_IDENTITY = "heldout_identity"
HELDOUT = (HELDOUT_SENTENCE, HELDOUT_IDENTITY)


class PretrainDataError(RuntimeError):
    """Processed data the corpus-level models cannot use; the message names the file and the fix."""


@dataclass(frozen=True)
class SplitConfig:
    """What the corpus-level models hold out for validation (params.yaml ``pretrain``)."""

    holdout_identity: str = ""
    """Identity held out entirely (unseen voice and face); empty = the last identity in sorted order."""
    holdout_sentences: int = 1
    """How many of the highest sentence numbers of each training identity's clips are held out."""


@dataclass(frozen=True)
class IdentityLandmarks:
    """One identity's clip table and 68 landmarks in the image and in the canonical frame."""

    identity: str
    processed: ProcessedIdentity
    clips: pd.DataFrame
    image: np.ndarray  # [N, 68, 3] pixel x, y and pixel depth z
    canonical: np.ndarray  # [N, 68, 3] head pose removed (rigid fit, then its pose dependence), unit-radius frame
    neutral: NeutralShape
    rigid: np.ndarray  # [N, 68, 3] after the rigid fit alone (the canonical frame before the pose dependence went)
    truth: np.ndarray | None = None
    """[N, 68, 3] the source's true landmarks as displacements from their own neutral shape, in this canonical
    frame (``truth_displacement``); NaN where a recording has no truth; None without ground truth."""


def processed_identities(root: Path, wanted: Sequence[str] = ()) -> list[ProcessedIdentity]:
    """The identity folders under ``root`` (``data/processed``): ``wanted`` ones, or every one found."""
    root = Path(root)
    if wanted:
        found = [ProcessedIdentity(root / validate_name(name, "identity")) for name in wanted]
        missing = [p.root for p in found if not p.root.is_dir()]
        if missing:
            raise PretrainDataError(f"{missing}: processed identity folder(s) missing; run the preprocessing "
                                    "stages for them (`dvc repro`) or fix params.yaml data.identities")
        return found
    found = [ProcessedIdentity(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    found = [p for p in found if p.path("clips").is_file()]
    if len(found) < 2:
        raise PretrainDataError(f"{root}: the corpus-level models need at least 2 processed identities (one is "
                                f"held out), found {[p.identity for p in found]}; run the preprocessing stages")
    return found


def holdout_identity(names: Sequence[str], cfg: SplitConfig) -> str:
    """The identity held out entirely: ``cfg.holdout_identity`` or the last name."""
    if not cfg.holdout_identity:
        return sorted(names)[-1]
    if cfg.holdout_identity not in names:
        raise PretrainDataError(f"pretrain.holdout_identity {cfg.holdout_identity!r} is not among the processed "
                                f"identities {sorted(names)}; fix params.yaml")
    return cfg.holdout_identity


def load_identity(processed: ProcessedIdentity, raw_root: Path | None = None) -> IdentityLandmarks:
    """Read an identity's clip table and landmarks and canonicalise them against its neutral frames.

    With ``raw_root`` (the source corpus, ``data/raw/<source>``) the recordings whose clips.parquet row names
    a ground-truth file also get their true landmarks (``IdentityLandmarks.truth``).
    """
    path = processed.path("landmarks478")
    if not path.is_file():
        raise PretrainDataError(f"{path}: landmarks not found; run the landmarks stage (`dvc repro landmarks`)")
    points = np.load(path, mmap_mode="r")
    if points.ndim != 3 or points.shape[1:] != (478, 3):
        raise PretrainDataError(f"{path}: expected [N, 478, 3] landmarks, found {points.shape}; "
                                "re-run the landmarks stage")
    clips = read_clips(processed.path("clips"), len(points))
    image = np.ascontiguousarray(to_68(np.asarray(points, np.float32)))
    neutral_rows = clips[clips.emotion == "neutral"]
    if len(neutral_rows):
        neutral_frames = np.concatenate([np.arange(r.first_frame, r.last_frame + 1)
                                         for r in neutral_rows.itertuples()])
    else:
        log.warning("%s: no neutral recording; the neutral shape is the mean over all frames", processed.root)
        neutral_frames = np.arange(len(image))
    neutral = neutral_shape(image[neutral_frames])
    transform = fit_similarity(image, neutral.shape)
    rigid = transform.apply(image).astype(np.float32)
    canonical = remove_pose_dependence(rigid, transform.rotation, neutral_frames)
    truth = None
    if raw_root is not None:
        points = true_head_landmarks(clips, Path(raw_root), len(image))
        truth = None if points is None else truth_displacement(points, neutral_frames, neutral)
    return IdentityLandmarks(processed.identity, processed, clips, image, canonical, neutral, rigid, truth)


def true_head_landmarks(clips: pd.DataFrame, raw_root: Path, frames: int) -> np.ndarray | None:
    """[frames, 68, 3] the true 68 landmarks of each processed frame in the head's own frame (the renderer's
    camera-space ``landmarks_3d`` with its head ``rotation`` and ``translation`` undone), so pose and perspective
    are gone exactly; NaN where a recording has no truth, None where none has."""
    recordings = recording_truths(clips, raw_root)
    if not recordings:
        return None
    points = np.full((frames, 68, 3), np.nan, np.float32)
    for recording in recordings:
        with np.load(recording.truth) as truth:
            missing = {"landmarks_3d", "rotation", "translation"} - set(truth.files)
            if missing:
                raise PretrainDataError(f"{recording.truth}: ground truth without {sorted(missing)}; regenerate the "
                                        "corpus (`dvc repro synth`)")
            camera, rotation, translation = truth["landmarks_3d"], truth["rotation"], truth["translation"]
        source = np.minimum(recording.source_frames, len(camera) - 1)
        head = np.einsum("nkj,nji->nki", to_68(camera[source]).astype(np.float64) - translation[source][:, None],
                         rotation[source].astype(np.float64))
        points[recording.frames] = head
    return points


def truth_displacement(points: np.ndarray, neutral_frames: np.ndarray, neutral: NeutralShape) -> np.ndarray:
    """[N, 68, 3] true landmarks (NaN rows = unknown) as displacements from their own neutral shape, turned into
    the frame of ``neutral`` (the detector's canonical frame).

    The truth is canonicalised by the rigid fit alone (it has no detector artefact to remove; in the head
    frame the fit is the identity up to one global similarity) against the Procrustes mean of its own neutral
    frames; a similarity between the two neutral shapes (on the rigid anchors) carries its displacements into
    the detector's canonical axes and units, where the model predicts.
    """
    known = np.isfinite(points).all(axis=(1, 2))
    reference = neutral_frames[known[neutral_frames]]
    truth_neutral = neutral_shape(points[reference if len(reference) else np.flatnonzero(known)])
    moved = canonical_landmarks(points[known], truth_neutral.shape) - truth_neutral.shape
    to_detector = fit_similarity(truth_neutral.shape[None], neutral.shape)
    displacement = np.full(points.shape, np.nan, np.float32)
    displacement[known] = to_detector.scale[0] * moved @ to_detector.rotation[0].T
    return displacement


def segment_table(identities: Sequence[IdentityLandmarks], cfg: SplitConfig) -> pd.DataFrame:
    """One row per recording of every identity with its split and global frame range ``start``..``stop``."""
    held_identity = holdout_identity([i.identity for i in identities], cfg)
    tables, offset = [], 0
    for index, data in enumerate(identities):
        table = data.clips.copy()
        table.insert(0, "identity", data.identity)
        table["identity_index"] = index
        table["start"] = offset + table.first_frame
        table["stop"] = offset + table.last_frame + 1
        sentences = np.sort(table.loc[table.kind == "clip", "sentence"].unique())
        held_sentences = sentences[len(sentences) - min(max(cfg.holdout_sentences, 0), len(sentences)):]
        if data.identity == held_identity:
            table["split"] = HELDOUT_IDENTITY
        else:
            held = (table.kind == "clip") & table.sentence.isin(held_sentences)
            table["split"] = np.where(held, HELDOUT_SENTENCE, TRAIN)
        tables.append(table)
        offset += len(data.image)
    segments = pd.concat(tables, ignore_index=True)
    counts = segments.groupby("split").size().to_dict()
    if not counts.get(TRAIN):
        raise PretrainDataError("the split leaves no training recordings: lower pretrain.holdout_sentences or "
                                "add identities")
    log.info("split: held-out identity %s; recordings per split %s", held_identity, counts)
    return segments
