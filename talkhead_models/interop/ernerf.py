"""ER-NeRF's data folder as an interchange format, both ways.

ER-NeRF, RAD-NeRF and TalkingGaussian train on one flat folder per speaker,
``data/<ID>/``, written by ER-NeRF's ``data_utils/process.py`` (its ``--task``
1-9) and OpenFace's FeatureExtraction (``au.csv``). :func:`import_ernerf`
turns such a folder into our staged identity ``data/processed/<ID>/``
(:mod:`talkhead_models.data.processed`), every subfolder written atomically
with its ``manifest.json``; :func:`export_ernerf` writes one of our
identities back out as such a folder. File by file (import; export is the
reverse)::

    ER-NeRF                            ours                              how
    ori_imgs/<i>.jpg                   crop/ori_imgs.zip                 the same bytes, one member each
    aud.wav                            crop/aud.wav                      copied
    (one video, <ID>.mp4)              crop/clips.parquet                one "video" row over all frames
    ori_imgs/<i>.lms                   landmarks/lms68.npy               float32 [N, 68, 2]
    -                                  landmarks/lms478.npy, detected    FaceMesh over the imported frames
    -                                  landmarks/usable.npy, report.json see "usable frames" below
    parsing/<i>.png                    parse/parsing.zip                 the same bytes
    -                                  parse/semantic.zip                labels from the colours, lips from .lms
    gt_imgs/, torso_imgs/, bc.jpg      parse/gt_imgs.zip, ...            the same bytes
    aud_<kind>.npy (ds, eo, hu, ...)   features/aud_<kind>.npy           copied (kinds ds, eo, hu ...)
    -                                  features/aud_mel.npy              ours from aud.wav (ImportConfig.audio_kinds)
    au.csv                             features/eye.npy, features/au.csv eye = 1 - clip(AU45_r, 0, 2) / 2; table kept
    track_params.pt, transforms_*.json track/                            copied as they are, any id/exp dimension
    transforms_val.json                split/split.parquet               one "self" row per run of val frames

Derived, and how:

* **478 FaceMesh points** (``lms478.npy``, ``detected.npy``): R2-Talker's
  landmark condition and face prior, the evaluation's landmark metrics and
  our tracker all read them, and ER-NeRF keeps only the 68 face-alignment
  points, so the importer runs the landmarks stage's detector
  (:func:`talkhead_models.preprocess.landmarks.detect`, mediapipe's model
  ships in its wheel) over the frames, gaps filled as that stage fills them.
  The 68 points stay ER-NeRF's (as with ``landmarks.backend:
  face_alignment``); frames without a ``.lms`` take FaceMesh's 68.
* **Eye openness** (``eye.npy``): ER-NeRF's provider conditions on
  ``clip(AU45_r, 0, 2) / 2`` (0 open, 1 closed). Ours is the open-eye ratio
  (1 open as usual, 0 closed), so ``eye = 1 - clip(AU45_r, 0, 2) / 2``:
  the same number, turned the way ours runs. Export writes ``AU45_r = 2 (1
  - clip(eye, 0, 1))``; AU45 values within [0, 2] come back exactly, larger
  ones (which ER-NeRF clips) as 2. Without ``au.csv`` the eye comes from the
  FaceMesh points as the audio stage computes it.
* **Semantic labels** (``semantic.zip``): head, neck, torso and background
  from ER-NeRF's parsing colours (TalkingGaussian's grey mouth (100, 100,
  100) as mouth interior); lips and mouth interior painted inside the head
  from the ``.lms`` outer (48-59) and inner (60-67) lip contours, as the
  parse stage paints them from FaceMesh's.
* **Split** (``split.parquet``): ``transforms_val.json``'s frames are the
  self-driven test frames (ER-NeRF's last 1/11); no cross-driven rows (a
  folder holds one speaker's audio; the split stage adds them for identities
  of our raw corpus).
* **Clip table**: one row (``clip`` "video", frames 0..N-1, 25 fps, the
  whole square frame as the crop, ``source`` the folder's ``.mp4`` if any).
* **Usable frames** (``usable.npy``): every frame, except those without a
  ``.lms``, without a camera in either transforms file, missing from
  ``parsing/``, ``gt_imgs/`` or ``torso_imgs/``, or inside a FaceMesh gap
  longer than ``landmarks.long_gap_frames``; ``report.json`` lists them.

Export writes ``<i>.lms`` where a frame is usable or FaceMesh found its face
(so an imported folder gets back exactly its ``.lms`` files), and
``au.csv``: the imported table unchanged when ``eye.npy`` still agrees with
it, else that table with ``AU45_r`` rewritten, else an OpenFace-style table
whose other intensities are 0 (not measured).
"""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from talkhead_models.atomic import atomic_dir
from talkhead_models.config import to_dict, validate_name
from talkhead_models.data.arrays import describe_frames, frame_runs, nonfinite_frames
from talkhead_models.data.landmark_arrays import DETECTED_FILE, POINTS68_FILE, POINTS478_FILE, USABLE_FILE
from talkhead_models.data.manifest import write_manifest
from talkhead_models.data.processed import CLIP_COLUMNS, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from talkhead_models.preprocess.frames import (FrameError, FrameFolder, count_frames, decode_image, encode_image,
                                               read_frames)
from talkhead_models.preprocess.landmarks import LandmarkError, LandmarksConfig, detect, fill_gaps, write_lms

log = logging.getLogger(__name__)

STAGE = "import_ernerf"
"""The name our manifests give as the writer of an imported identity's files."""
PROCESS = "ER-NeRF's `python data_utils/process.py data/<ID>/<ID>.mp4 --task {task}`"
"""The fix for a file ER-NeRF's preprocessing writes (its task number)."""
PARSE_FOLDERS = {"parsing": ".png", "gt_imgs": ".jpg", "torso_imgs": ".png"}
"""ER-NeRF's per-frame folders the parse stage's archives correspond to (the archive is ``<folder>.zip``)."""
TRACK_FILES = ("track_params.pt", "transforms_train.json", "transforms_val.json")
ERNERF_AUDIO = {"ds": "DeepSpeech [N, 16, 29]", "eo": "wav2vec2 Esperanto [N, 16, 44]", "hu": "HuBERT [N, 2, 1024]"}
"""The audio feature files ER-NeRF's loader opens (``--asr_model`` deepspeech, esperanto, hubert), by kind."""
OPENFACE_INTENSITIES = ("AU01_r", "AU02_r", "AU04_r", "AU05_r", "AU06_r", "AU07_r", "AU09_r", "AU10_r", "AU12_r",
                        "AU14_r", "AU15_r", "AU17_r", "AU20_r", "AU23_r", "AU25_r", "AU26_r", "AU45_r")
"""OpenFace FeatureExtraction's action-unit intensity columns (TalkingGaussian reads AU01-AU07, AU25, AU45)."""
OPENFACE_LEADING = ("frame", "face_id", "timestamp", "confidence", "success")
AU45 = "AU45_r"
AU45_CLOSED = 2.0
"""ER-NeRF's provider reads ``clip(AU45_r, 0, 2) / 2``: an AU45 intensity of 2 or more is a closed eye."""
MOUTH_GREY = 100
"""TalkingGaussian's face parser paints the mouth interior (100, 100, 100)."""
LIPS_OUTER, LIPS_INNER = np.arange(48, 60), np.arange(60, 68)
README = "README_talkhead.txt"


class ErnerfError(ValueError):
    """A folder or identity that cannot be converted; the message names the file and the fix."""


# ---------------------------------------------------------------------------------------------------------------
# The conversions themselves


def eye_from_au45(au45: np.ndarray) -> np.ndarray:
    """Our open-eye ratio (1 open, 0 closed) from OpenFace's AU45 blink intensity: ``1 - clip(AU45, 0, 2) / 2``,
    i.e. one minus what ER-NeRF's provider feeds its network."""
    return (1.0 - np.clip(np.asarray(au45, np.float64), 0.0, AU45_CLOSED) / AU45_CLOSED).astype(np.float32)


def au45_from_eye(eye: np.ndarray) -> np.ndarray:
    """The inverse of :func:`eye_from_au45`: ``AU45 = 2 (1 - clip(eye, 0, 1))`` (an eye opened wider than usual,
    ratio above 1, is open: AU45 0)."""
    return AU45_CLOSED * (1.0 - np.clip(np.asarray(eye, np.float64), 0.0, 1.0))


def read_openface(path: Path) -> pd.DataFrame:
    """OpenFace's ``au.csv`` with the leading spaces of its column names removed (pandas keeps them:
    ER-NeRF reads ``' AU45_r'``)."""
    try:
        table = pd.read_csv(path, skipinitialspace=True)
    except (OSError, ValueError) as error:
        raise ErnerfError(f"{path}: not a readable CSV table ({error}); re-run OpenFace's FeatureExtraction "
                          "(`FeatureExtraction -f <ID>.mp4 -aus`) and save its output as au.csv") from None
    table.columns = [str(name).strip() for name in table.columns]
    return table


def read_au45(path: Path, n_frames: int) -> np.ndarray:
    """[n_frames] AU45 intensities of ``au.csv`` (rows beyond the frames dropped, a short table padded with its
    last row, both with a warning)."""
    table = read_openface(path)
    if AU45 not in table.columns:
        raise ErnerfError(f"{path}: no {AU45} column (found {list(table.columns)[:8]}...); ER-NeRF reads OpenFace's "
                          f"blink intensity from it: run OpenFace with -aus, or remove au.csv to derive the eye "
                          "openness from the landmarks")
    values = pd.to_numeric(table[AU45], errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise ErnerfError(f"{path}: {AU45} is not a finite number in rows {bad[:5].tolist()}; the table is damaged: "
                          "re-run OpenFace's FeatureExtraction")
    if len(values) == 0:
        raise ErnerfError(f"{path}: no rows; re-run OpenFace's FeatureExtraction on the video")
    if len(values) != n_frames:
        log.warning("%s: %d rows for %d frames; %s", path, len(values), n_frames,
                    "the extra rows are ignored" if len(values) > n_frames else "the last row is repeated")
        values = np.concatenate([values, np.repeat(values[-1:], max(0, n_frames - len(values)))])[:n_frames]
    return values


def openface_text(table: pd.DataFrame) -> str:
    """``table`` as OpenFace writes it: comma + space between fields, so pandas names the columns ``' AU45_r'``."""
    integers = {"frame", "face_id", "success"}
    lines = [", ".join(table.columns)]
    columns = [table[name].to_numpy() for name in table.columns]
    for row in range(len(table)):
        fields = []
        for name, values in zip(table.columns, columns):
            value = values[row]
            if name in integers:
                fields.append(str(int(value)))
            elif isinstance(value, (float, np.floating, int, np.integer)):
                fields.append(f"{float(value):.3f}" if name == "timestamp" else f"{float(value):.6g}")
            else:
                fields.append(str(value))
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def openface_table(eye: np.ndarray, usable: np.ndarray) -> pd.DataFrame:
    """An OpenFace-style table of our eye openness: ``AU45_r`` from ``eye``, the other intensities 0 (not
    measured), confidence and success 1 for usable frames and 0 for the others."""
    n = len(eye)
    table = pd.DataFrame({"frame": np.arange(1, n + 1), "face_id": np.zeros(n, int),
                          "timestamp": np.arange(n) / FPS, "confidence": usable.astype(float),
                          "success": usable.astype(int)})
    for name in OPENFACE_INTENSITIES:
        table[name] = au45_from_eye(eye) if name == AU45 else np.zeros(n)
    return table


def semantic_from_parsing(colours: np.ndarray, points68: np.ndarray | None = None) -> np.ndarray:
    """[H, W] label ids (0 bg, 1 head, 2 neck, 3 torso, 4 lips, 5 mouth interior) from ER-NeRF's parsing colours
    as cv2 reads them (BGR); with the frame's 68 landmarks, lips and mouth interior are painted inside the head
    from their outer and inner lip contours."""
    from talkhead_models.data.synthetic.face import LABEL_HEAD, LABEL_LIPS, LABEL_MOUTH
    from talkhead_models.preprocess.parsing import labels_from_colours

    labels = labels_from_colours(colours)
    labels[np.all(colours == MOUTH_GREY, axis=-1)] = LABEL_MOUTH
    if points68 is None or not np.isfinite(points68).all():
        return labels
    inside = np.isin(labels, (LABEL_HEAD, LABEL_LIPS, LABEL_MOUTH))
    outer = _polygon_mask(labels.shape, points68[LIPS_OUTER])
    inner = _polygon_mask(labels.shape, points68[LIPS_INNER])
    labels[outer & inside & (labels == LABEL_HEAD)] = LABEL_LIPS
    labels[inner & inside] = LABEL_MOUTH
    return labels


def _polygon_mask(shape: tuple[int, ...], points: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(points, np.float64) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask > 0


def clip_row(n_frames: int, size: int, source: str) -> dict[str, Any]:
    """The one clips.parquet row of a folder: one person-specific video covering every frame."""
    return {"clip": "video", "kind": "video", "emotion": "neutral", "level": 1, "sentence": 0,
            "first_frame": 0, "last_frame": n_frames - 1, "source": source, "truth": None, "source_fps": FPS,
            "crop_x0": 0, "crop_y0": 0, "crop_size": size, "image_size": size}


def split_rows(identity: str, val_ids: np.ndarray, source: str) -> list[dict[str, Any]]:
    """split.parquet's self-driven rows: one per run of consecutive ``transforms_val.json`` frames (SPLIT_COLUMNS;
    frame i's audio is [i / 25, (i + 1) / 25) s of the one video)."""
    rows = []
    for first, last in frame_runs(np.unique(np.asarray(val_ids, np.int64))):
        rows.append(dict(identity=identity, role="self", audio_identity=identity, clip="video", kind="video",
                         emotion="neutral", level=1, sentence=0, start_s=first / FPS, end_s=(last + 1) / FPS,
                         first_frame=first, last_frame=last, audio_source=source))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Reading a folder in ER-NeRF's layout


@dataclass
class ErnerfFolder:
    """What an ER-NeRF data folder holds, checked: the essentials present, the frames numbered 0..N-1 and square."""

    root: Path
    n_frames: int
    size: int
    frames: FrameFolder
    transforms: dict[str, dict[str, Any]]
    parse: dict[str, FrameFolder] = field(default_factory=dict)
    """ER-NeRF's parsing/, gt_imgs/, torso_imgs/ (all three or none)."""
    features: dict[str, Path] = field(default_factory=dict)
    """kind -> aud_<kind>.npy."""

    def path(self, name: str) -> Path:
        return self.root / name

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    @property
    def source_video(self) -> str:
        """The name of the folder's video (ER-NeRF keeps ``<ID>.mp4`` beside the frames), or ""."""
        videos = sorted(self.root.glob("*.mp4"))
        preferred = [v for v in videos if v.stem == self.root.name]
        return (preferred or videos or [Path("")]).pop(0).name

    def camera_frames(self) -> np.ndarray:
        """[N] True for frames with a camera in transforms_train.json or transforms_val.json."""
        tracked = np.zeros(self.n_frames, bool)
        for content in self.transforms.values():
            tracked[[int(f["img_id"]) for f in content["frames"]]] = True
        return tracked


def open_ernerf(folder: str | Path) -> ErnerfFolder:
    """Check a folder in ER-NeRF's layout; a missing essential is an :class:`ErnerfError` naming the file and the
    ER-NeRF task that writes it."""
    root = Path(folder)
    if not root.is_dir():
        raise ErnerfError(f"{root}: folder not found; give ER-NeRF's data/<ID> folder (the one with ori_imgs/)")
    try:
        n_frames = count_frames(root / "ori_imgs", ".jpg")
    except FrameError as error:
        raise ErnerfError(f"{error} (ER-NeRF's frames are ori_imgs/<i>.jpg from 0: {PROCESS.format(task=3)})") from None
    frames = FrameFolder(root / "ori_imgs", ".jpg")
    if not any((root / "ori_imgs").glob("*.lms")):
        raise ErnerfError(f"{root / 'ori_imgs'}: no <i>.lms landmark files; run {PROCESS.format(task=7)} "
                          "(face-alignment's 68 points)")
    if not (root / "aud.wav").is_file():
        raise ErnerfError(f"{root / 'aud.wav'} not found; run {PROCESS.format(task=1)} (16 kHz audio of the video)")
    first = frames.read(0)
    height, width = first.shape[:2]
    if height != width:
        raise ErnerfError(f"{frames.member(0)}: frames are {width}x{height}; our methods render square frames: crop "
                          "the folder's images to a square (and move cx, cy in transforms_*.json alike) first")
    transforms = {}
    for split in ("train", "val"):
        path = root / f"transforms_{split}.json"
        if not path.is_file():
            raise ErnerfError(f"{path} not found; run {PROCESS.format(task=8)} (face tracking) and "
                              f"{PROCESS.format(task=9)} (transforms)")
        transforms[split] = _checked_transforms(path, n_frames, width)
    present = {name: (root / name).is_dir() for name in PARSE_FOLDERS}
    parse: dict[str, FrameFolder] = {}
    if any(present.values()) or (root / "bc.jpg").is_file():
        tasks = {"parsing": 4, "gt_imgs": 6, "torso_imgs": 6}
        for name, suffix in PARSE_FOLDERS.items():
            if not present[name]:
                raise ErnerfError(f"{root / name}/ not found (the folder has the other parse outputs); run "
                                  f"{PROCESS.format(task=tasks[name])}")
            try:
                parse[name] = FrameFolder(root / name, suffix)
            except FrameError as error:
                raise ErnerfError(f"{error} (ER-NeRF's {name}/<i>{suffix}: {PROCESS.format(task=tasks[name])})") \
                    from None
            beyond = parse[name].indices[parse[name].indices >= n_frames]
            if len(beyond):
                log.warning("%s: %d images numbered past the last frame (%d) are ignored", root / name, len(beyond),
                            n_frames - 1)
        if not (root / "bc.jpg").is_file():
            raise ErnerfError(f"{root / 'bc.jpg'} not found; run {PROCESS.format(task=5)} (the static background)")
    features = {}
    for path in sorted(root.glob("aud_*.npy")):
        features[path.stem[len("aud_"):]] = path
    known = {"ori_imgs", "aud.wav", "bc.jpg", "au.csv", *PARSE_FOLDERS, *TRACK_FILES,
             *(path.name for path in features.values())}
    ignored = sorted(p.name + "/" * p.is_dir() for p in root.iterdir()
                     if p.name not in known and p.suffix != ".mp4" and p.name != "aud.npy")
    if ignored:
        log.info("%s: not imported (no place in our layout): %s", root, ", ".join(ignored))
    if (root / "aud.npy").is_file():
        log.warning("%s: aud.npy does not say which model made it; left out (rename it aud_<kind>.npy, e.g. aud_ds.npy "
                    "for AD-NeRF's DeepSpeech features, to import it)", root / "aud.npy")
    return ErnerfFolder(root, n_frames, width, frames, transforms, parse, features)


def _checked_transforms(path: Path, n_frames: int, width: int) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
        focal, cx, cy = float(content["focal_len"]), float(content["cx"]), float(content["cy"])
        frames = content["frames"]
        ids = np.array([int(f["img_id"]) for f in frames], np.int64)
        matrices = np.asarray([f["transform_matrix"] for f in frames], np.float64).reshape(len(frames), 4, 4)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ErnerfError(f"{path}: not ER-NeRF's transforms file ({type(error).__name__}: {error}); it needs "
                          f"focal_len, cx, cy and frames[{{img_id, transform_matrix}}]: re-run "
                          f"{PROCESS.format(task=9)}") from None
    if not np.isfinite([focal, cx, cy]).all() or len(nonfinite_frames(matrices)):
        raise ErnerfError(f"{path}: NaN or inf in the intrinsics or a transform_matrix; re-run "
                          f"{PROCESS.format(task=9)}")
    outside = ids[(ids < 0) | (ids >= n_frames)]
    if len(outside):
        raise ErnerfError(f"{path} names frame {int(outside[0])} but ori_imgs/ has {n_frames} frames; the frames and "
                          f"the tracking disagree: re-extract the frames ({PROCESS.format(task=3)}) or re-track")
    if abs(2 * cx - width) > 1:
        log.warning("%s: cx %.1f is not the centre of the %d px frames (ER-NeRF takes the width as 2 cx)", path, cx,
                    width)
    return content


def _read_lms(source: ErnerfFolder) -> tuple[np.ndarray, np.ndarray]:
    """[N, 68, 2] float32 landmarks of the ``.lms`` files (NaN where missing) and [N] their presence."""
    points = np.full((source.n_frames, 68, 2), np.nan, np.float32)
    present = np.zeros(source.n_frames, bool)
    for index in range(source.n_frames):
        path = source.root / "ori_imgs" / f"{index}.lms"
        if not path.is_file():
            continue
        try:
            values = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as error:
            raise ErnerfError(f"{path}: not 68 lines 'x y' ({error}); re-run {PROCESS.format(task=7)}") from None
        if values.shape != (68, 2):
            raise ErnerfError(f"{path}: {values.shape[0]} lines of {values.shape[1]} numbers, expected 68 lines 'x y'; "
                              f"re-run {PROCESS.format(task=7)}")
        if not np.isfinite(values).all():
            raise ErnerfError(f"{path}: NaN or inf in the landmarks; the file is damaged: re-run "
                              f"{PROCESS.format(task=7)}")
        points[index], present[index] = values, True
    return points, present


# ---------------------------------------------------------------------------------------------------------------
# Import


@dataclass(frozen=True)
class ImportConfig:
    """What the importer derives beyond ER-NeRF's files."""

    audio_kinds: tuple[str, ...] = ("mel",)
    """Our audio features computed from aud.wav besides the folder's own aud_<kind>.npy (mel needs no weights;
    hubert and wav2vec2 need docs/WEIGHTS.md files); our methods' default is mel."""
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)
    """The FaceMesh pass that derives the 478 points (and which gaps make frames unusable)."""


@dataclass
class ImportSummary:
    """What an import wrote and derived (also in the subfolders' manifests and landmarks/report.json)."""

    identity: str
    frames: int
    usable: int
    detected: int
    self_frames: int
    features: list[str]
    computed_features: list[str]
    eye_source: str
    parse: bool
    track_params: bool
    excluded: dict[str, list[int]]


def import_ernerf(folder: str | Path, identity_root: str | Path, cfg: ImportConfig = ImportConfig(),
                  replace: bool = False) -> ImportSummary:
    """Write ER-NeRF's data ``folder`` as our staged identity ``identity_root`` (``data/processed/<ID>``).

    The whole identity is written into a temporary folder and renamed into
    place at the end, each subfolder atomically within it, so a failure
    leaves the previous identity (or none). An existing identity is refused
    unless ``replace``.
    """
    source = open_ernerf(folder)
    identity_root = Path(identity_root)
    identity = validate_name(identity_root.name, "identity")
    if identity_root.exists() and any(identity_root.iterdir()) and not replace:
        raise ErnerfError(f"{identity_root} exists; import under another --identity, or pass --force to replace it")
    if identity_root.resolve() == source.root.resolve():
        raise ErnerfError(f"{identity_root}: the identity cannot replace the folder it is imported from")
    n, origin = source.n_frames, str(source.root.resolve())
    points68, has_lms = _read_lms(source)
    clips = pd.DataFrame([clip_row(n, source.size, source.source_video)], columns=list(CLIP_COLUMNS))
    excluded = {"no_lms": np.flatnonzero(~has_lms).tolist(),
                "no_camera": np.flatnonzero(~source.camera_frames()).tolist()}
    if source.parse:
        parsed = np.ones(n, bool)
        for frames in source.parse.values():
            parsed &= np.isin(np.arange(n), frames.indices)
        excluded["no_parse"] = np.flatnonzero(~parsed).tolist()
    else:
        log.warning("%s: no parsing/, gt_imgs/, torso_imgs/ or bc.jpg; imported without parse/ (the neural methods "
                    "need it: run `python -m stages.parse --identity %s`, or ER-NeRF's --task 4, 5 and 6, first)",
                    source.root, identity)
    with atomic_dir(identity_root) as tmp:
        with atomic_dir(tmp / "crop") as out:
            _import_crop(source, out, clips, origin)
        with atomic_dir(tmp / "landmarks") as out:
            points478, usable, detected = _import_landmarks(source, out, clips, points68, has_lms, excluded, cfg,
                                                            origin)
        if source.parse:
            with atomic_dir(tmp / "parse") as out:
                _import_parse(source, out, points68, has_lms, origin)
        with atomic_dir(tmp / "features") as out:
            features, computed, eye_source = _import_features(source, out, identity, points478, usable, cfg, origin)
        with atomic_dir(tmp / "track") as out:
            for name in TRACK_FILES:
                if source.has(name):
                    shutil.copyfile(source.path(name), out / name)
            track_params = _describe_track_params(source)
            write_manifest(out, {"source_folder": origin, "track_params": track_params}, STAGE)
        with atomic_dir(tmp / "split") as out:
            self_frames = _import_split(source, out, identity, origin)
    summary = ImportSummary(identity=identity, frames=n, usable=int(usable.sum()), detected=int(detected.sum()),
                            self_frames=self_frames, features=features, computed_features=computed,
                            eye_source=eye_source, parse=bool(source.parse),
                            track_params=source.has("track_params.pt"), excluded=excluded)
    log.info("imported %s as %s: %d frames (%d usable, FaceMesh found %d), features %s, eye from %s, %d self-driven "
             "test frames", source.root, identity_root, n, summary.usable, summary.detected, features, eye_source,
             self_frames)
    return summary


def _import_crop(source: ErnerfFolder, out: Path, clips: pd.DataFrame, origin: str) -> None:
    from talkhead_models.preprocess.frames import FrameArchiveWriter

    with FrameArchiveWriter(out / "ori_imgs.zip", ".jpg") as archive:
        for index in range(source.n_frames):
            archive.add(index, source.frames.encoded(index))
    shutil.copyfile(source.path("aud.wav"), out / "aud.wav")
    clips.to_parquet(out / "clips.parquet", index=False)
    write_manifest(out, {"source_folder": origin, "frames": source.n_frames, "image_size": source.size}, STAGE)


def _import_landmarks(source: ErnerfFolder, out: Path, clips: pd.DataFrame, points68: np.ndarray,
                      has_lms: np.ndarray, excluded: dict[str, list[int]], cfg: ImportConfig,
                      origin: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = source.n_frames
    points478 = np.lib.format.open_memmap(out / POINTS478_FILE, mode="w+", dtype=np.float32, shape=(n, 478, 3))
    facemesh68 = np.zeros((n, 68, 2), np.float32)
    with closing(read_frames(source.frames, range(n), workers=cfg.landmarks.workers)) as frames:
        found, summary = detect(frames, clips, cfg.landmarks, points478, facemesh68)
    try:
        facemesh_usable = fill_gaps([points478, facemesh68], found, clips, cfg.landmarks, summary)
    except LandmarkError as error:
        raise ErnerfError(f"{source.root / 'ori_imgs'}: FaceMesh found no face in any of the {n} frames, so the 478 "
                          "points R2-Talker and the evaluation read cannot be derived; the faces may be too small "
                          f"(the frames are {source.size} px) or not frontal ({error})") from None
    excluded["facemesh_long_gaps"] = np.flatnonzero(~facemesh_usable).tolist()
    usable = np.ones(n, bool)
    for frames in excluded.values():
        usable[np.asarray(frames, np.int64)] = False
    if not usable.any():
        reasons = {reason: len(frames) for reason, frames in excluded.items() if frames}
        raise ErnerfError(f"{source.root}: no frame is usable (frames left out by reason: {reasons}); check that "
                          "ori_imgs/ has its .lms files and the transforms files name the frames")
    for reason, frames in excluded.items():
        if frames:
            log.warning("%s: %s left out of training and evaluation (%s)", source.root,
                        describe_frames(np.asarray(frames)), reason.replace("_", " "))
    lms68 = np.where(has_lms[:, None, None], points68, facemesh68).astype(np.float32)
    np.save(out / POINTS68_FILE, lms68)
    np.save(out / DETECTED_FILE, found & has_lms)
    np.save(out / USABLE_FILE, usable)
    points478.flush()
    result = np.asarray(points478).copy()
    del points478
    report = {**summary.to_json(), "source_folder": origin, "lms68": "ori_imgs/<i>.lms (ER-NeRF's face-alignment "
              "points); FaceMesh's 68 where a frame has none", "excluded_by_reason": excluded}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    write_manifest(out, {"source_folder": origin, **to_dict(cfg.landmarks)}, STAGE)
    return result, usable, found & has_lms


def _import_parse(source: ErnerfFolder, out: Path, points68: np.ndarray, has_lms: np.ndarray, origin: str) -> None:
    from talkhead_models.preprocess.frames import FrameArchiveWriter

    for name, suffix in PARSE_FOLDERS.items():
        frames = source.parse[name]
        with FrameArchiveWriter(out / f"{name}.zip", suffix) as archive:
            for index in frames.indices[frames.indices < source.n_frames]:
                archive.add(int(index), frames.encoded(int(index)))
    parsing = source.parse["parsing"]
    with FrameArchiveWriter(out / "semantic.zip", ".png") as archive:
        for index in parsing.indices[parsing.indices < source.n_frames].tolist():
            colours = decode_image(parsing.encoded(index), cv2.IMREAD_COLOR, rgb=False, name=parsing.member(index))
            labels = semantic_from_parsing(colours, points68[index] if has_lms[index] else None)
            archive.add(index, encode_image(labels, ".png", rgb=False))
    shutil.copyfile(source.path("bc.jpg"), out / "bc.jpg")
    write_manifest(out, {"source_folder": origin, "semantic": "parsing colours; lips and mouth interior from the "
                         ".lms lip contours"}, STAGE)


def _import_features(source: ErnerfFolder, out: Path, identity: str, points478: np.ndarray, usable: np.ndarray,
                     cfg: ImportConfig, origin: str) -> tuple[list[str], list[str], str]:
    from talkhead_models.media import read_audio
    from talkhead_models.preprocess.audio_features import AudioConfig, compute_features, feature_dim
    from talkhead_models.preprocess.eye import eye_openness

    n = source.n_frames
    for kind, path in source.features.items():
        array = np.load(path, mmap_mode="r")
        if array.ndim != 3:
            log.warning("%s: shape %s, not [N, window, D]; copied all the same (our methods read [N, window, D])",
                        path, list(array.shape))
        elif len(array) != n:
            log.warning("%s: %d rows for %d frames (readers index min(i, len - 1), as ER-NeRF does)", path,
                        len(array), n)
        shutil.copyfile(path, out / f"aud_{kind}.npy")
    computed = []
    audio_cfg = AudioConfig()
    kinds = [kind for kind in cfg.audio_kinds if kind not in source.features]
    if kinds:
        audio = read_audio(source.path("aud.wav"), SAMPLE_RATE)
        if abs(len(audio) - n * SAMPLES_PER_FRAME) > SAMPLES_PER_FRAME:
            log.warning("%s: %.2f s of audio for %d frames (%.2f s)", source.path("aud.wav"), len(audio) / SAMPLE_RATE,
                        n, n / FPS)
        for kind in kinds:
            audio_cfg = AudioConfig(kind=kind)
            features = np.lib.format.open_memmap(out / f"aud_{kind}.npy", mode="w+", dtype=np.float32,
                                                 shape=(n, audio_cfg.window, feature_dim(audio_cfg)))
            compute_features(lambda start, stop: audio[start:stop], [(0, n - 1)], audio_cfg, features)
            features.flush()
            del features
            computed.append(kind)
    if source.has("au.csv"):
        np.save(out / "eye.npy", eye_from_au45(read_au45(source.path("au.csv"), n)))
        shutil.copyfile(source.path("au.csv"), out / "au.csv")
        eye_source = f"au.csv {AU45}: 1 - clip(AU45, 0, 2) / 2"
    else:
        log.warning("%s: no au.csv (OpenFace's AU45); the eye openness comes from the FaceMesh points, as the audio "
                    "stage computes it", source.root)
        np.save(out / "eye.npy", eye_openness(points478, usable))
        eye_source = "FaceMesh eye-lid area (no au.csv)"
    features = sorted({*source.features, *computed})
    if not features:
        log.warning("%s: no audio features (aud_<kind>.npy) and none computed; methods need one (ImportConfig."
                    "audio_kinds, --audio-kinds mel)", source.root)
    write_manifest(out, {"identity": identity, "source_folder": origin, **to_dict(audio_cfg),
                         "imported_kinds": sorted(source.features), "computed_kinds": computed, "eye": eye_source},
                   STAGE)
    return features, computed, eye_source


def _describe_track_params(source: ErnerfFolder) -> dict[str, Any] | None:
    """Shapes of track_params.pt's tensors (ER-NeRF's BFM: id [1, 100], exp [N, 79]), or None when absent."""
    if not source.has("track_params.pt"):
        log.warning("%s: no track_params.pt; the cameras come from transforms_*.json, but Exp-Diff's tracker needs the "
                    "focal from it (it is n/a without)", source.root)
        return None
    import torch

    try:
        params = torch.load(source.path("track_params.pt"), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same refusal
        raise ErnerfError(f"{source.path('track_params.pt')}: not a readable torch file ({error}); re-run "
                          f"{PROCESS.format(task=8)}") from None
    if not isinstance(params, dict):
        raise ErnerfError(f"{source.path('track_params.pt')}: expected a dict of tensors (id, exp, euler, trans, "
                          f"focal); re-run {PROCESS.format(task=8)}")
    return {str(k): list(getattr(v, "shape", ())) for k, v in params.items()}


def _import_split(source: ErnerfFolder, out: Path, identity: str, origin: str) -> int:
    from talkhead_models.preprocess.splits import split_table

    val_ids = np.array([int(f["img_id"]) for f in source.transforms["val"]["frames"]], np.int64)
    table = split_table(split_rows(identity, val_ids, source.source_video))
    if table.empty:
        log.warning("%s: transforms_val.json names no frame; the identity has no self-driven test frames",
                    source.root)
    log.info("%s: no cross-driven rows (the folder holds one speaker's audio; the split stage adds other identities' "
             "held-out recordings for identities of the raw corpus)", identity)
    table.to_parquet(out / "split.parquet", index=False)
    write_manifest(out, {"source_folder": origin, "self": "transforms_val.json's frames", "cross": "none"}, STAGE)
    return int((table["last_frame"] - table["first_frame"] + 1).sum()) if len(table) else 0


# ---------------------------------------------------------------------------------------------------------------
# Export


@dataclass
class ExportSummary:
    """What an export wrote."""

    frames: int
    lms: int
    parse: dict[str, int]
    features: list[str]
    au_csv: str
    track: list[str]
    notes: list[str]


def export_ernerf(identity_root: str | Path, folder: str | Path, replace: bool = False) -> ExportSummary:
    """Write our identity ``identity_root`` as a folder in ER-NeRF's layout (see the module docstring).

    The folder is written under a temporary name and renamed at the end; an
    existing non-empty folder is refused unless ``replace``.
    """
    from talkhead_models.data.identity_reader import IdentityError, IdentityReader

    try:
        reader = IdentityReader(identity_root)
    except IdentityError as error:
        raise ErnerfError(str(error)) from None
    if reader.flat:
        raise ErnerfError(f"{reader.root} is already in ER-NeRF's layout; copy it instead")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not replace:
        raise ErnerfError(f"{folder} exists and is not empty; choose a new folder, or pass --force to replace it")
    if folder.resolve() == reader.root.resolve() or reader.root.resolve() in folder.resolve().parents:
        raise ErnerfError(f"{folder}: export outside the identity {reader.root}")
    layout, n = reader.layout, reader.num_frames
    notes: list[str] = []
    with atomic_dir(folder) as tmp:
        images = tmp / "ori_imgs"
        images.mkdir()
        frames = reader.frames("frames")
        for index in range(n):
            (images / f"{index}.jpg").write_bytes(frames.encoded(index))
        lms = _export_lms(reader, images, notes)
        parse = {}
        for kind, name in (("parsing", "parsing"), ("gt", "gt_imgs"), ("torso", "torso_imgs")):
            if not layout.has(kind):
                notes.append(f"no {layout.path(kind).name}: ER-NeRF's {name}/ is missing; run the parse stage "
                             f"(`python -m stages.parse --identity {reader.root.name}`) and export again")
                continue
            archive = reader.frames(kind)
            (tmp / name).mkdir()
            for index in archive.indices:
                (tmp / name / f"{int(index)}{archive.suffix}").write_bytes(archive.encoded(int(index)))
            parse[name] = len(archive)
        for name, path in (("bc.jpg", layout.path("background")), ("aud.wav", layout.path("audio"))):
            if path.is_file():
                shutil.copyfile(path, tmp / name)
            else:
                notes.append(f"no {path}: ER-NeRF's {name} is missing")
        features = reader.feature_kinds()
        for kind in features:
            shutil.copyfile(layout.audio_features(kind), tmp / f"aud_{kind}.npy")
        ours = [kind for kind in features if kind not in ERNERF_AUDIO]
        if ours:
            notes.append(f"aud_{{{','.join(ours)}}}.npy are our features; ER-NeRF's loader opens aud_ds.npy "
                         f"({ERNERF_AUDIO['ds']}), aud_eo.npy ({ERNERF_AUDIO['eo']}) or aud_hu.npy "
                         f"({ERNERF_AUDIO['hu']}) by --asr_model, and its network is sized for those")
        au_csv = _export_au(reader, tmp / "au.csv", notes)
        track = []
        for name in TRACK_FILES:
            path = layout.path(name.removesuffix(".json").removesuffix(".pt"))
            if path.is_file():
                shutil.copyfile(path, tmp / name)
                track.append(name)
            else:
                notes.append(f"no {path}: ER-NeRF's {name} is missing (run the track stage)")
        for note in notes:
            log.warning("%s: %s", folder, note)
        (tmp / README).write_text("\n".join([
            f"ER-NeRF data folder exported from {reader.root} by talkhead (python -m stages.export_ernerf).",
            "Frames, parsing, gt_imgs, torso_imgs, bc.jpg, aud.wav, track_params.pt and transforms_*.json are the "
            "identity's own files; <i>.lms are its 68 landmarks; au.csv's AU45_r = 2 (1 - clip(eye, 0, 1)).",
            *notes, ""]))
    log.info("exported %s to %s: %d frames, %d .lms, parse %s, features %s, au.csv %s, track %s", reader.root, folder,
             n, lms, parse, features, au_csv, track)
    return ExportSummary(frames=n, lms=lms, parse=parse, features=features, au_csv=au_csv, track=track, notes=notes)


def _export_lms(reader, images: Path, notes: list[str]) -> int:
    """``<i>.lms`` for the frames that are usable or had their face found (an imported folder's own .lms)."""
    path = reader.layout.path("landmarks68")
    if not path.is_file():
        notes.append(f"no {path}: no <i>.lms written; ER-NeRF's loader reads them (run the landmarks stage)")
        return 0
    points68 = np.load(path, mmap_mode="r")
    usable = reader.usable_mask()
    detected_path = reader.layout.path("detected")
    detected = np.load(detected_path).astype(bool) if detected_path.is_file() else np.zeros(len(usable), bool)
    written = 0
    for index in np.flatnonzero(usable | detected):
        points = np.asarray(points68[index], np.float64)
        if np.isfinite(points).all():
            write_lms(images / f"{int(index)}.lms", points)
            written += 1
    return written


def _export_au(reader, path: Path, notes: list[str]) -> str:
    """Write ``au.csv``; returns how: "kept" (the imported table, unchanged), "rewritten" (its AU45_r replaced from
    eye.npy), "generated" (an OpenFace-style table from eye.npy), or "none"."""
    eye_path = reader.layout.path("eye")
    if not eye_path.is_file():
        notes.append(f"no {eye_path}: no au.csv written (ER-NeRF's loader reads its ' AU45_r'); run the audio stage")
        return "none"
    eye = np.asarray(reader.eye(), np.float64)
    stored = reader.layout.path("features_dir") / "au.csv"
    if stored.is_file():
        table = read_openface(stored)
        if AU45 in table.columns and len(table) == len(eye):
            au45 = pd.to_numeric(table[AU45], errors="coerce").to_numpy(np.float64)
            if np.allclose(eye_from_au45(au45), eye, atol=1e-6):
                shutil.copyfile(stored, path)
                return "kept"
            table[AU45] = np.where(np.isclose(eye_from_au45(au45), eye, atol=1e-6), au45, au45_from_eye(eye))
            path.write_text(openface_text(table))
            return "rewritten"
        problems = ([f"no {AU45} column"] if AU45 not in table.columns else []) + \
            ([f"{len(table)} rows for {len(eye)} frames"] if len(table) != len(eye) else [])
        notes.append(f"{stored}: {' and '.join(problems)}; au.csv generated from eye.npy instead")
    path.write_text(openface_text(openface_table(eye, reader.usable_mask())))
    notes.append("au.csv: AU45_r from eye.npy; the other action units are 0 (not measured): TalkingGaussian "
                 "conditions on AU01-AU07 and AU25, so run OpenFace's FeatureExtraction -aus on the video for those")
    return "generated"
