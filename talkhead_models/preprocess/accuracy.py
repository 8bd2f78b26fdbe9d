"""Accuracy of the preprocessing against the synthetic corpus's ground truth.

Processed frame k of a recording shows source time k / 25 s, i.e. source
frame ``round(k / 25 * source_fps)``; its pixels are the source's crop box
``(crop_x0, crop_y0, crop_size)`` scaled to ``image_size`` (clips.parquet).
Through that mapping the truth of each source frame (``.npz`` beside the
raw recording) is compared with what the stages wrote.

The report is a list of sections. A section measures one identity into
per-frame arrays (so identities pool into an overall row by concatenation)
and summarises arrays into numbers; a later stage adds its own section
(e.g. head rotation and focal error of the tracker) by appending a
``Section`` to the list it passes to ``build_report``.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import pandas as pd

from talkhead_models import face_topology as topo
from talkhead_models.data.processed import FPS, ProcessedIdentity
from talkhead_models.data.synthetic.face import LABEL_BACKGROUND, LABEL_NECK, LABEL_TORSO
from talkhead_models.preprocess.frames import read_clips
from talkhead_models.preprocess.parsing import HEAD_LABELS

log = logging.getLogger(__name__)

INNER_51 = topo.IBUG_INNER_51
OUTER_EYE_CORNERS = (36, 45)  # inter-ocular normalisation of the 300W NME


@dataclass(frozen=True)
class RecordingTruth:
    """How one recording's processed frames map onto its ground truth."""

    clip: str
    frames: np.ndarray  # [K] processed frame indices
    source_frames: np.ndarray  # [K] truth frame indices
    truth: Path
    crop_x0: float
    crop_y0: float
    crop_size: float
    image_size: int

    def to_processed(self, points: np.ndarray) -> np.ndarray:
        """Source pixel coordinates [..., 2] -> processed-frame pixels."""
        return (points - np.array([self.crop_x0, self.crop_y0], np.float32)) * (self.image_size / self.crop_size)

    def labels(self, source: np.ndarray) -> np.ndarray:
        """A source label map [H, W] cropped and resized like the frames (outside the source: background)."""
        x0, y0, size = int(round(self.crop_x0)), int(round(self.crop_y0)), int(round(self.crop_size))
        height, width = source.shape
        box = np.full((size, size), LABEL_BACKGROUND, np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + size, width), min(y0 + size, height)
        if sx1 > sx0 and sy1 > sy0:
            box[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = source[sy0:sy1, sx0:sx1]
        if size == self.image_size:
            return box
        return cv2.resize(box, (self.image_size, self.image_size), interpolation=cv2.INTER_NEAREST)


def recording_truths(clips: pd.DataFrame, raw_root: Path, stride: int = 1) -> list[RecordingTruth]:
    """Recordings of ``clips`` that have ground truth, every ``stride``-th processed frame."""
    found = []
    for clip in clips.itertuples():
        if not isinstance(clip.truth, str) or not clip.truth:
            continue
        truth = Path(raw_root) / clip.truth
        if not truth.is_file():
            raise FileNotFoundError(f"{truth}: ground truth named in clips.parquet is missing; regenerate the "
                                    "corpus (`dvc repro synth`) or re-run the crop stage")
        k = np.arange(0, clip.last_frame - clip.first_frame + 1, max(1, stride))
        found.append(RecordingTruth(
            clip=clip.clip, frames=clip.first_frame + k,
            source_frames=np.round(k / FPS * float(clip.source_fps)).astype(np.int64),
            truth=truth, crop_x0=float(clip.crop_x0), crop_y0=float(clip.crop_y0),
            crop_size=float(clip.crop_size), image_size=int(clip.image_size)))
    return found


def iter_npz_frames(path: Path, key: str, indices: Sequence[int]) -> Iterator[np.ndarray]:
    """Frames ``indices`` (non-decreasing) of array ``key`` [T, ...] in an ``.npz``, read without loading it all.

    ``np.load`` decompresses a whole member; a 5-minute 512 px label track is
    about 2 GB, so the member is streamed and only the wanted frames kept.
    Indices past the end repeat the last frame.
    """
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(member)
        if fortran:
            raise ValueError(f"{path}: {key} is stored in Fortran order; expected C order")
        frame_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        start = member.tell()
        position, current = -1, None
        for index in indices:
            index = min(int(index), shape[0] - 1)
            if index != position:
                member.seek(start + index * frame_bytes)
                current = np.frombuffer(member.read(frame_bytes), dtype).reshape(shape[1:])
                position = index
            yield current


@dataclass(frozen=True)
class IdentityData:
    """What a section gets: the processed identity and its recordings with ground truth."""

    identity: str
    processed: ProcessedIdentity
    recordings: list[RecordingTruth]
    n_frames: int


@dataclass(frozen=True)
class Target:
    metric: str
    bound: float
    at_least: bool

    def met(self, value: float) -> bool:
        return bool(value >= self.bound) if self.at_least else bool(value <= self.bound)

    def describe(self) -> str:
        return f"{self.metric} {'>=' if self.at_least else '<='} {self.bound:g}"


@dataclass(frozen=True)
class Section:
    """One part of the report: per-frame measurement, a summary, and how to print it."""

    title: str
    description: str
    measure: Callable[[IdentityData], dict[str, np.ndarray] | None]
    """Per-frame (or per-event) arrays of one identity; None when its inputs are absent."""
    summarise: Callable[[dict[str, np.ndarray]], dict[str, float]]
    columns: dict[str, str]
    """metric -> printed format ("pct", "3f", "int")."""
    targets: tuple[Target, ...] = ()


def _landmark_arrays(data: IdentityData) -> dict[str, np.ndarray] | None:
    folder = data.processed.root / "landmarks"
    if not (folder / "lms68.npy").is_file():
        return None
    report = json.loads((folder / "report.json").read_text()) if (folder / "report.json").is_file() else {}
    detected = np.load(folder / "detected.npy")
    arrays = {
        "detected": detected.astype(np.float64),
        "gap_lengths": np.array([g["frames"] for g in report.get("gap_list", [])], np.float64),
        "long_gap_lengths": np.array([g["frames"] for g in report.get("long_gap_list", [])], np.float64),
    }
    if not data.recordings:
        return arrays
    predicted = np.load(folder / "lms68.npy", mmap_mode="r")
    nme68, nme51 = [], []
    for recording in data.recordings:
        expected = true_landmarks(recording)
        found = np.asarray(predicted[recording.frames], np.float64)
        valid = np.isfinite(found).all(axis=(1, 2))
        error = point_errors(found, expected)
        nme68.append(error[valid].mean(axis=1))
        nme51.append(error[valid][:, INNER_51].mean(axis=1))
    arrays.update(nme68=np.concatenate(nme68), nme51=np.concatenate(nme51))
    return arrays


def true_landmarks(recording: RecordingTruth) -> np.ndarray:
    """[K, 68, 2] the renderer's iBUG-68 points of the recording's frames, in processed-frame pixels."""
    with np.load(recording.truth) as truth:
        source = truth["landmarks_2d_68"]
    return recording.to_processed(source[np.minimum(recording.source_frames, len(source) - 1)])


def point_errors(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """[K, 68] each point's distance to the truth over the outer-eye-corner distance (the 300W NME's terms)."""
    ocular = np.linalg.norm(expected[:, OUTER_EYE_CORNERS[0]] - expected[:, OUTER_EYE_CORNERS[1]], axis=1)
    return np.linalg.norm(found - expected, axis=2) / ocular[:, None]


def _landmark_summary(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    summary = {
        "frames": float(len(arrays["detected"])),
        "detection_rate": float(arrays["detected"].mean()) if len(arrays["detected"]) else float("nan"),
        "gaps": float(len(arrays["gap_lengths"])),
        "long_gaps": float(len(arrays["long_gap_lengths"])),
        "longest_gap": float(arrays["gap_lengths"].max()) if len(arrays["gap_lengths"]) else 0.0,
    }
    if "nme68" in arrays:
        summary.update(nme68=float(arrays["nme68"].mean()), nme51=float(arrays["nme51"].mean()),
                       nme68_p95=float(np.percentile(arrays["nme68"], 95)))
    return summary


def _parsing_arrays(data: IdentityData) -> dict[str, np.ndarray] | None:
    if not data.processed.has("semantic"):
        return None
    semantic = data.processed.frames("semantic")
    if not data.recordings:
        return {}
    classes = {"head": HEAD_LABELS, "neck": (LABEL_NECK,), "torso": (LABEL_TORSO,),
               "person": tuple(set(HEAD_LABELS) | {LABEL_NECK, LABEL_TORSO})}
    sums = {f"{name}_{kind}": [] for name in classes for kind in ("intersection", "union")}
    for recording in data.recordings:
        sources = iter_npz_frames(recording.truth, "labels", recording.source_frames)
        for index, source in zip(recording.frames, sources):
            if index not in semantic:  # a frame the parse stage skipped (dropped recording)
                continue
            predicted = semantic.read(index, cv2.IMREAD_GRAYSCALE, rgb=False)
            expected = recording.labels(source)
            for name, labels in classes.items():
                a, b = np.isin(predicted, labels), np.isin(expected, labels)
                sums[f"{name}_intersection"].append(np.count_nonzero(a & b))
                sums[f"{name}_union"].append(np.count_nonzero(a | b))
    return {key: np.asarray(values, np.float64) for key, values in sums.items()}


def _parsing_summary(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    if not arrays or not len(arrays["head_union"]):
        return {}
    summary = {"frames": float(len(arrays["head_union"]))}
    for name in ("head", "neck", "torso", "person"):
        intersection, union = arrays[f"{name}_intersection"], arrays[f"{name}_union"]
        summary[f"{name}_iou"] = float(intersection.sum() / max(union.sum(), 1.0))
    per_frame = arrays["head_intersection"] / np.maximum(arrays["head_union"], 1.0)
    summary["head_iou_min"] = float(per_frame.min())
    return summary


LANDMARKS_SECTION = Section(
    title="Landmarks",
    description=("68-point NME: mean point-to-point error over the iBUG-68 points divided by the distance between "
                 "the outer eye corners (points 36 and 45), per frame, averaged; inner-51 leaves out the jaw line. "
                 "Detection: frames in which FaceMesh found a face (the rest are interpolated). Gaps: runs of "
                 "frames without a face; long gaps exceed the landmarks stage's `long_gap_frames`."),
    measure=_landmark_arrays,
    summarise=_landmark_summary,
    columns={"frames": "int", "detection_rate": "pct", "nme68": "pct", "nme51": "pct", "nme68_p95": "pct",
             "gaps": "int", "long_gaps": "int", "longest_gap": "int"},
    targets=(Target("nme68", 0.05, at_least=False), Target("detection_rate", 0.99, at_least=True)),
)

PARSING_SECTION = Section(
    title="Semantic parsing",
    description=("Intersection over union of the parse stage's masks (`parse/semantic/`) and the rendered labels, "
                 "pooled over frames. Head = head, lips and mouth interior; person = everything not background. "
                 "`head_iou_min` is the worst single frame."),
    measure=_parsing_arrays,
    summarise=_parsing_summary,
    columns={"frames": "int", "head_iou": "3f", "head_iou_min": "3f", "neck_iou": "3f", "torso_iou": "3f",
             "person_iou": "3f"},
    targets=(Target("head_iou", 0.9, at_least=True),),
)

SECTIONS: tuple[Section, ...] = (LANDMARKS_SECTION, PARSING_SECTION)


def load_identity(processed_root: Path, identity: str, raw_root: Path, stride: int = 1) -> IdentityData:
    processed = ProcessedIdentity(Path(processed_root) / identity)
    n_frames = processed.frames("frames").contiguous_count()
    clips = read_clips(processed.path("clips"), n_frames)
    return IdentityData(identity, processed, recording_truths(clips, raw_root, stride), n_frames)


@dataclass
class Report:
    """Numbers per section, identity and overall; rendered as markdown and JSON."""

    sections: Sequence[Section]
    identities: list[str] = field(default_factory=list)
    values: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # section -> row -> metric
    notes: dict[str, dict[str, str]] = field(default_factory=dict)  # section -> row -> why no numbers
    with_truth: dict[str, bool] = field(default_factory=dict)

    def targets(self) -> list[dict]:
        rows = []
        for section in self.sections:
            overall = self.values.get(section.title, {}).get("overall", {})
            for target in section.targets:
                if target.metric in overall:
                    value = overall[target.metric]
                    rows.append({"section": section.title, "target": target.describe(), "value": value,
                                 "met": target.met(value)})
        return rows

    def to_json(self) -> dict:
        return {"identities": self.identities, "ground_truth": self.with_truth, "sections": self.values,
                "notes": self.notes, "targets": self.targets()}

    def to_markdown(self) -> str:
        lines = ["# Preprocessing accuracy", "",
                 "Measured against the synthetic corpus's ground truth by `stages.preprocess_report`. "
                 "Identities without ground truth (MEAD, person-specific videos) show only what needs none.", ""]
        targets = self.targets()
        if targets:
            lines += ["## Targets", "", "| section | target | value | met |", "|---|---|---|---|"]
            lines += [f"| {t['section']} | {t['target']} | {t['value']:.4g} | {'yes' if t['met'] else '**no**'} |"
                      for t in targets]
            lines.append("")
        for section in self.sections:
            lines += [f"## {section.title}", "", section.description, ""]
            header = ["identity", *section.columns]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            rows = self.values.get(section.title, {})
            for name in [*self.identities, "overall"]:
                note = self.notes.get(section.title, {}).get(name)
                values = rows.get(name, {})
                cells = [_format(values.get(metric), kind) for metric, kind in section.columns.items()]
                if note:
                    cells = [note if cell == "-" else cell for cell in cells]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
        return "\n".join(lines)


def _format(value: float | None, kind: str) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{int(round(value))}"
    return f"{value:.3f}"


def build_report(processed_root: Path, raw_root: Path, identities: Sequence[str],
                 sections: Sequence[Section] = SECTIONS, stride: int = 1) -> Report:
    """Measure every section on every identity, and overall (all identities' frames pooled)."""
    report = Report(sections=sections, identities=list(identities))
    pooled: dict[str, dict[str, list[np.ndarray]]] = {s.title: {} for s in sections}
    for identity in identities:
        data = load_identity(processed_root, identity, raw_root, stride)
        report.with_truth[identity] = bool(data.recordings)
        if not data.recordings:
            log.info("%s: no ground truth (its source has none); only truth-free numbers are reported", identity)
        for section in sections:
            rows = report.values.setdefault(section.title, {})
            notes = report.notes.setdefault(section.title, {})
            arrays = section.measure(data)
            if arrays is None:
                notes[identity] = "not run"
                continue
            rows[identity] = section.summarise(arrays)
            if not data.recordings:
                notes[identity] = "no ground truth"
            for key, values in arrays.items():
                pooled[section.title].setdefault(key, []).append(values)
    for section in sections:
        arrays = {key: np.concatenate(parts) for key, parts in pooled[section.title].items()}
        if arrays:
            report.values[section.title]["overall"] = section.summarise(arrays)
    return report
