"""Training and validation tensors for the corpus-level models, from processed identity folders.

Three kinds of frames (``segment_table``'s ``split``):

* **test** (``TEST``): the frames evaluation scores. The split stage writes
  them to every identity's ``split/split.parquet`` by the one rule of
  ``talkhead_models.preprocess.splits`` (held-out sentences of the MEAD-like
  clips in every emotion, the tail of the long video); the recordings other
  identities' tables name as cross-driven audio are test frames of their own
  identity too, and a clip named there is a test clip in every frame.
  ``evaluation_masks`` reads them; no corpus-level model trains, validates, fits a
  normaliser or a per-face adaptation on them, and ``load_identity`` leaves
  them out of the neutral shape and the pose fit that make the targets.
* **validation** (params ``pretrain``): one identity (default the last) is
  held out entirely (``HELDOUT_IDENTITY``: all its non-test frames), and of
  every other identity the highest ``holdout_sentences`` sentence numbers
  among its non-test clips (``HELDOUT_SENTENCE``);
* **training** (``TRAIN``): everything else of the training identities (their
  remaining clips and the long video up to its test start);
* **no face** (``NO_FACE``): the non-test frames the landmarks stage flagged
  unusable (``usable.npy``: recordings without a face, long gaps without one).
  Like the test frames they are in no model's training or validation data, nor
  in the neutral shape and pose fit; unlike them they are not scored either.
  A model reads the segments of ``USED`` only.

Each identity's recordings become *segments*: contiguous frame ranges (a
``clips.parquet`` row, or the part of it on one side of a test boundary) with
a global frame index ``start``..``stop`` (exclusive) into the arrays the
loaders concatenate over identities. The segments tile every frame, so a
recording-wise operation (smoothing, an utterance context) never mixes test
and non-test frames, nor frames with a face and frames without one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from talkhead_models.config import NonNegativeInt, validate_name
from talkhead_models.data.arrays import ArrayFileError, NonFiniteError, describe_frames
from talkhead_models.data.landmark_arrays import read_landmarks
from talkhead_models.data.processed import FPS, ProcessedIdentity
from talkhead_models.face_topology import to_68
from talkhead_models.geometry import Similarity
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
"""The corpus-level models' own validation splits."""
TEST = "test"
"""Test frames (split.parquet): in no corpus-level model's training or validation data."""
NO_FACE = "no_face"
"""Non-test frames without a face (the landmarks stage's usable.npy): in no model's training or validation data,
and not scored."""
USED = (TRAIN, *HELDOUT)
"""The splits a corpus-level model reads (trains, validates, fits a normaliser or an adaptation on): never
``TEST`` or ``NO_FACE``."""


class PretrainDataError(RuntimeError):
    """Processed data the corpus-level models cannot use; the message names the file and the fix."""


@dataclass(frozen=True)
class SplitConfig:
    """What the corpus-level models validate on (params.yaml ``pretrain``); the test frames of split.parquet are
    out of their training and validation data whatever this says."""

    holdout_identity: str = ""
    """Identity held out entirely (unseen voice and face; its non-test frames validate); empty = the last identity
    in sorted order."""
    holdout_sentences: NonNegativeInt = 1
    """How many of the highest sentence numbers among each training identity's non-test clips validate."""


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
    test: np.ndarray | None = None
    """[N] True for the test frames the neutral shape and the pose fit left out (``evaluation_masks``)."""
    usable: np.ndarray | None = None
    """[N] True for the frames with a face (the landmarks stage's usable.npy); the others are left out of the
    neutral shape, the pose fit and every model's data (their landmarks may be NaN). None: every frame."""


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


def split_table(processed: ProcessedIdentity) -> pd.DataFrame:
    """The identity's ``split.parquet`` (``preprocess.splits.SPLIT_COLUMNS``); an error naming the stage without it."""
    path = processed.path("split")
    if not path.is_file():
        raise PretrainDataError(f"{path}: split table not found; the corpus-level models leave every identity's "
                                f"test frames out and read them there: run `dvc repro split@{processed.identity}`")
    return pd.read_parquet(path)


def _clip_table(processed: ProcessedIdentity) -> pd.DataFrame:
    path = processed.path("clips")
    if not path.is_file():
        raise PretrainDataError(f"{path}: clip table not found; run the crop stage (`dvc repro crop`)")
    return read_clips(path, int(pd.read_parquet(path, columns=["last_frame"]).last_frame.max()) + 1)


def evaluation_masks(processed: Sequence[ProcessedIdentity]) -> dict[str, np.ndarray]:
    """Per identity of ``processed``, [N] True for its test frames, from every one's ``split.parquet``.

    A row's recording belongs to its ``audio_identity``: self rows give their frame range; cross rows (another
    identity driven with this one's audio) their time range, mapped to processed frames (frame k of a recording
    shows time k / FPS) rounded outwards; a clip named by any row is a test clip in every frame. Rows naming an
    identity outside ``processed`` are not data here and are skipped.
    """
    clips = {p.identity: _clip_table(p) for p in processed}
    masks = {name: np.zeros(int(table.last_frame.max()) + 1, bool) for name, table in clips.items()}
    for source in processed:
        for row in split_table(source).itertuples(index=False):
            if row.audio_identity not in clips:
                continue
            recordings = clips[row.audio_identity]
            match = recordings[recordings["clip"] == row.clip]
            if match.empty:
                raise PretrainDataError(f"{source.path('split')}: names recording {row.clip!r} of "
                                        f"{row.audio_identity}, which its clips.parquet lacks; re-run "
                                        f"`dvc repro split@{source.identity}`")
            first, last = int(match.first_frame.iloc[0]), int(match.last_frame.iloc[0])
            if row.kind == "clip":
                begin, end = first, last + 1
            elif row.role == "self":
                begin, end = int(row.first_frame), int(row.last_frame) + 1
            else:
                begin = first + int(math.floor(row.start_s * FPS + 1e-6))
                end = first + int(math.ceil(row.end_s * FPS - 1e-6))
            masks[row.audio_identity][max(begin, first):min(end, last + 1)] = True
    return masks


def _beside(processed: ProcessedIdentity) -> list[ProcessedIdentity]:
    """The identity and the identity folders beside it that have a clip and a split table."""
    others = [ProcessedIdentity(p) for p in sorted(processed.root.parent.iterdir())
              if p.is_dir() and p != processed.root and not p.name.startswith(".")]
    return [processed] + [p for p in others if p.path("clips").is_file() and p.path("split").is_file()]


def load_identity(processed: ProcessedIdentity, raw_root: Path | None = None,
                  test: np.ndarray | None = None) -> IdentityLandmarks:
    """Read an identity's clip table and landmarks and canonicalise them against its neutral frames.

    ``test`` ([N] bool, default ``evaluation_masks`` over the identity and the processed identities beside it)
    marks the test frames: the neutral shape and the pose fit leave them out, so the targets of the other frames do
    not depend on them. An identity without a split table (a folder from other tools) gets no test frames,
    with a warning. With ``raw_root`` (the source corpus, ``data/raw/<source>``) the recordings whose
    clips.parquet row names a ground-truth file also get their true landmarks (``IdentityLandmarks.truth``).
    """
    path = processed.path("landmarks478")
    if not path.is_file():
        raise PretrainDataError(f"{path}: landmarks not found; run the landmarks stage (`dvc repro landmarks`)")
    try:  # NaN/inf in a frame with a face is refused naming the file and frames (NonFiniteError)
        stored = read_landmarks(path.parent, producer=processed.producer("landmarks478"))
    except NonFiniteError:
        raise
    except (ArrayFileError, FileNotFoundError) as error:
        raise PretrainDataError(str(error)) from error
    points, usable = stored.points478, stored.usable
    clips = read_clips(processed.path("clips"), len(points))
    if test is None:
        if processed.path("split").is_file():
            test = evaluation_masks(_beside(processed))[processed.identity]
        else:
            log.warning("%s: no split table; no frame is left out of the canonical frame's fit (run the split "
                        "stage)", processed.root)
            test = np.zeros(len(points), bool)
    test = np.asarray(test, bool)
    if test.shape != (len(points),):
        raise PretrainDataError(f"{processed.root}: test mask of {test.shape} for {len(points)} frames")
    image = np.ascontiguousarray(to_68(np.asarray(points, np.float32)))
    if not usable.all():
        log.info("%s: %s have no face (usable.npy): left out of the canonical frame's fit and of the models' data",
                 processed.root, describe_frames(np.flatnonzero(~usable)))
    fit = np.flatnonzero(~test & usable)
    if not len(fit) and (~test).any():
        raise PretrainDataError(f"{processed.root}: no non-test frame has a face ({processed.path('usable')}); see "
                                "the landmarks stage's report.json")
    neutral_rows = clips[clips.emotion == "neutral"]
    neutral_frames = np.zeros(0, np.int64)
    if len(neutral_rows):
        neutral_frames = np.concatenate([np.arange(r.first_frame, r.last_frame + 1)
                                         for r in neutral_rows.itertuples()])
        neutral_frames = neutral_frames[~test[neutral_frames] & usable[neutral_frames]]
    if not len(neutral_frames):
        log.warning("%s: no neutral non-test frame; the neutral shape is the mean over the non-test frames",
                    processed.root)
        neutral_frames = fit
    neutral = neutral_shape(image[neutral_frames])
    transform = _fit_where_finite(image, neutral.shape)
    rigid = transform.apply(image).astype(np.float32)
    canonical = remove_pose_dependence(rigid, transform.rotation, neutral_frames, fit)
    truth = None
    if raw_root is not None:
        points = true_head_landmarks(clips, Path(raw_root), len(image))
        truth = None if points is None else truth_displacement(points, neutral_frames, neutral)
    return IdentityLandmarks(processed.identity, processed, clips, image, canonical, neutral, rigid, truth, test,
                             usable)


def _fit_where_finite(image: np.ndarray, reference: np.ndarray) -> Similarity:
    """``fit_similarity`` of every frame of ``image`` with finite landmarks; the identity where they are NaN (a
    recording without a face), whose landmarks then stay NaN."""
    finite = np.isfinite(image).all(axis=(1, 2))
    if finite.all():
        return fit_similarity(image, reference)
    fitted = fit_similarity(image[finite], reference)
    scale, rotation = np.ones(len(image)), np.tile(np.eye(3), (len(image), 1, 1))
    translation = np.zeros((len(image), 3))
    scale[finite], rotation[finite], translation[finite] = fitted.scale, fitted.rotation, fitted.translation
    return Similarity(scale, rotation, translation)


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
    """One row per segment of every identity: its recording's clips.parquet columns with ``first_frame`` /
    ``last_frame`` narrowed to the segment, ``split`` (TRAIN, HELDOUT_SENTENCE, HELDOUT_IDENTITY, TEST or NO_FACE)
    and the global frame range ``start``..``stop``.

    The test frames are those of every identity's split.parquet (``evaluation_masks``), read again here, so no
    caller can hand in fewer; an identity loaded with fewer test frames than these (its canonical frame fitted on some)
    is an error. Non-test frames without a face (``IdentityLandmarks.usable``) are NO_FACE segments of their own.
    """
    held_identity = holdout_identity([i.identity for i in identities], cfg)
    corpus = evaluation_masks([i.processed for i in identities])
    tables, offset = [], 0
    for index, data in enumerate(identities):
        test = corpus[data.identity]
        if len(test) != len(data.image):
            raise PretrainDataError(f"{data.processed.path('clips')}: {len(test)} frames, the landmarks "
                                    f"{len(data.image)}; re-run the preprocessing stages")
        if data.test is None or (test & ~data.test).any():
            raise PretrainDataError(f"{data.identity}: loaded without all its test frames (its canonical frame was "
                                    "fitted on some); load it with load_identity(..., "
                                    "test=evaluation_masks(...)[identity])")
        face = np.ones(len(test), bool) if data.usable is None else np.asarray(data.usable, bool)
        if face.shape != test.shape:
            raise PretrainDataError(f"{data.identity}: {len(face)} usable flags for {len(test)} frames; reload it "
                                    "with load_identity")
        pieces = []
        for row in data.clips.to_dict("records"):
            flags = test[row["first_frame"]:row["last_frame"] + 1]
            with_face = face[row["first_frame"]:row["last_frame"] + 1]
            # Test frames stay one piece whatever their faces; other frames are cut where the face comes or goes.
            kinds = np.where(flags, 2, with_face).astype(np.int8)
            cuts = np.flatnonzero(np.diff(kinds)) + 1
            for begin, end in zip(np.r_[0, cuts], np.r_[cuts, len(flags)]):
                pieces.append({**row, "first_frame": row["first_frame"] + int(begin),
                               "last_frame": row["first_frame"] + int(end) - 1, "test": bool(flags[begin]),
                               "face": bool(with_face[begin])})
        table = pd.DataFrame(pieces)
        table.insert(0, "identity", data.identity)
        table["identity_index"] = index
        table["start"] = offset + table.first_frame
        table["stop"] = offset + table.last_frame + 1
        candidates = (table.kind == "clip") & ~table.test & table.face
        sentences = np.sort(table.loc[candidates, "sentence"].unique())
        validating = sentences[len(sentences) - min(max(cfg.holdout_sentences, 0), len(sentences)):]
        if data.identity == held_identity:
            split = np.full(len(table), HELDOUT_IDENTITY, dtype=object)
        else:
            split = np.where(candidates & table.sentence.isin(validating), HELDOUT_SENTENCE, TRAIN).astype(object)
        split[~table.face.to_numpy()] = NO_FACE
        split[table.test.to_numpy()] = TEST
        table["split"] = split
        tables.append(table.drop(columns=["test", "face"]))
        offset += len(data.image)
    segments = pd.concat(tables, ignore_index=True)
    counts = segments.groupby("split").size().to_dict()
    if not counts.get(TRAIN):
        raise PretrainDataError("the split leaves no training recordings: lower pretrain.holdout_sentences or "
                                "add identities")
    no_face = int((segments.stop - segments.start)[segments.split == NO_FACE].sum())
    log.info("split: held-out identity %s; segments per split %s (test frames: %d%s)", held_identity, counts,
             int(sum(m.sum() for m in corpus.values())),
             f"; other frames without a face, read by no model: {no_face}" if no_face else "")
    return segments


def split_frames(segments: pd.DataFrame, splits: Sequence[str]) -> np.ndarray:
    """Sorted global frame indices of the segments of ``splits``."""
    rows = segments[segments.split.isin(splits)]
    if rows.empty:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(a, b) for a, b in zip(rows.start, rows.stop)])


def data_audit(segments: pd.DataFrame, used: Mapping[str, np.ndarray],
               test: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Per identity: the frames of each split, the test frames of ``test`` (``evaluation_masks``, read from the split
    tables) and how many of them are among the frames a model's loaders ``used`` (global indices per role, e.g.
    train and validation): 0 when none reached it."""
    rows = []
    for (name, index), group in segments.groupby(["identity", "identity_index"], sort=True):
        start, stop = int(group.start.min()), int(group.stop.max())
        mask = np.asarray(test[name], bool)
        row = {"identity": name, "frames": stop - start, "test_frames": int(mask.sum())}
        for split in (TRAIN, *HELDOUT, TEST, NO_FACE):
            row[f"{split}_frames"] = int((group.stop - group.start)[group.split == split].sum())
        for role, frames in used.items():
            local = np.unique(frames[(frames >= start) & (frames < stop)]) - start
            row[f"{role}_frames_used"] = int(len(local))
            row[f"test_frames_in_{role}"] = int(mask[local].sum())
        rows.append(row)
    return pd.DataFrame(rows)


SEGMENT_COLUMNS = ("identity", "clip", "kind", "emotion", "level", "sentence", "first_frame", "last_frame", "split",
                   "start", "stop")
"""What a model folder's ``segments.csv`` keeps of ``segment_table`` (first/last_frame: the identity's frames)."""


def load_corpus(root: Path, wanted: Sequence[str] = (), raw_root: Path | None = None) -> list[IdentityLandmarks]:
    """Every identity of ``processed_identities(root, wanted)``, each canonicalised without the test frames of
    any of their split tables (``evaluation_masks`` over all of them)."""
    folders = processed_identities(root, wanted)
    masks = evaluation_masks(folders)
    return [load_identity(p, raw_root, masks[p.identity]) for p in folders]


def checked_audit(identities: Sequence[IdentityLandmarks], segments: pd.DataFrame,
                  used: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """``data_audit`` of the frames a model's loaders read (``used``) against the split tables, read afresh; an
    error listing it when any test frame is among them."""
    audit = data_audit(segments, used, evaluation_masks([d.processed for d in identities]))
    leaked = int(audit.filter(like="test_frames_in_").to_numpy().sum())
    if leaked:
        raise PretrainDataError(f"{leaked} test frame(s) among the frames a corpus-level model reads:\n"
                                f"{audit.to_string(index=False)}")
    faceless = split_frames(segments, [NO_FACE])
    for role, frames in used.items():
        read = np.intersect1d(faceless, frames)
        if len(read):
            raise PretrainDataError(f"{len(read)} frame(s) without a face among the frames a corpus-level model "
                                    f"reads for {role} (global {describe_frames(read)})")
    return audit


def audit_totals(audit: pd.DataFrame) -> dict[str, float]:
    """The audit's totals as metrics: test frames left out, and test frames read (0 when the audit passed)."""
    return {"test_frames": float(audit.test_frames.sum()),
            "test_frames_used": float(audit.filter(like="test_frames_in_").to_numpy().sum())}
