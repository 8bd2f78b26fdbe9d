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
from talkhead_models.preprocess.frames import read_clips
from talkhead_models.pretrained.canonical import NeutralShape, canonical_landmarks, neutral_shape

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
    canonical: np.ndarray  # [N, 68, 3] head pose removed, unit-radius neutral frame
    neutral: NeutralShape


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


def load_identity(processed: ProcessedIdentity) -> IdentityLandmarks:
    """Read an identity's clip table and landmarks and canonicalise them against its neutral frames."""
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
    canonical = canonical_landmarks(image, neutral.shape)
    return IdentityLandmarks(processed.identity, processed, clips, image, canonical, neutral)


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
