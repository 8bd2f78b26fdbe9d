"""The processed identity: one class that names every file of ``data/processed/<ID>``.

Each preprocessing stage owns one subfolder (DVC forbids two stages writing
into one output), so our layout is *staged*::

    <ID>/crop/ori_imgs.zip            cropped RGB frames <i>.jpg, numbered from 0 across recordings, 25 fps
    <ID>/crop/aud.wav                 16 kHz mono; frame i covers [i/25, (i+1)/25) s
    <ID>/crop/clips.parquet           one row per recording (CLIP_COLUMNS)
    <ID>/landmarks/lms478.npy         [N, 478, 3] FaceMesh points in pixels
    <ID>/landmarks/detected.npy       [N] bool, False where a frame was interpolated
    <ID>/landmarks/lms68.npy          [N, 68, 2] the iBUG-68 subset
    <ID>/landmarks/usable.npy         [N] bool, False for frames nothing trains on or is scored on: recordings
                                      without any face, and gaps without a face longer than
                                      landmarks.long_gap_frames (the landmarks stage's report.json counts them)
    <ID>/parse/parsing.zip            <i>.png: ER-NeRF's colour array (head [255,0,0], neck [0,255,0], torso
                                      [0,0,255], background white) as cv2 writes it, i.e. BGR on disk
    <ID>/parse/semantic.zip           <i>.png: label ids 0 bg, 1 head, 2 neck, 3 torso, 4 lips, 5 mouth interior
    <ID>/parse/bc.jpg                 static background
    <ID>/parse/gt_imgs.zip            <i>.jpg: frame with the background replaced by bc.jpg
    <ID>/parse/torso_imgs.zip         <i>.png: RGBA torso, neck inpainted
                                      (the parse archives hold the usable frames only)
    <ID>/features/aud_<kind>.npy      [N, 16, D] audio features
    <ID>/features/eye.npy             [N] open-eye area ratio
    <ID>/features/au.csv              OpenFace's table, only in an identity imported from ER-NeRF's layout
    <ID>/track/track_params.pt        {id, exp, euler, trans, focal}
    <ID>/track/transforms_train.json  focal_len, cx, cy, frames[{img_id, aud_id, transform_matrix}]
    <ID>/track/transforms_val.json
    <ID>/split/split.parquet          validation frame ranges and cross-driven audio (SPLIT_COLUMNS)
    <ID>/<stage>/manifest.json        each file's shape and dtype, and the params that made it

A ``.zip`` is a frame archive (talkhead_models.preprocess.frames): the images
ER-NeRF keeps one file each, packed uncompressed, so an identity is a few
dozen files whatever its length. ``unzip`` gives back ER-NeRF's folders;
``python -m stages.export_ernerf`` writes its whole layout.

The ER-NeRF / RAD-NeRF tools use one *flat* folder (``ori_imgs/``,
``aud.wav``, ``parsing/``, ``bc.jpg``, ...). ``ProcessedIdentity`` reads
either, so data prepared by their tools is a processed identity here too.
An identity written by our earlier per-frame layout (``crop/ori_imgs/``
folders) is refused with the stage to re-run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from talkhead_models.preprocess.frames import FrameSource

FPS = 25.0
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = int(round(SAMPLE_RATE / FPS))
"""640: frame i's audio is samples [640 i, 640 (i + 1)) of ``aud.wav``."""

# clips.parquet: the recording each frame range came from and how it was cropped,
# so any stage can map a processed frame back to the source and its ground truth.
CLIP_COLUMNS = (
    "clip",          # "<emotion>/level_<k>/<NNN>" or "video"
    "kind",          # "clip" (MEAD-like) or "video" (person-specific)
    "emotion", "level", "sentence",
    "first_frame",   # first processed frame index (inclusive)
    "last_frame",    # last processed frame index (inclusive)
    "source",        # source video path, relative to the raw root
    "truth",         # ground-truth path relative to the raw root, or None
    "source_fps",    # the source's frame rate; processed frame k of the clip shows source time k / 25
    "crop_x0", "crop_y0", "crop_size",  # the square crop in source pixels (constant per clip)
    "image_size",    # side of the processed frames
)

# file or folder -> (staged path, flat ER-NeRF path); None: that layout has no such file
_LAYOUT: dict[str, tuple[str | None, str | None]] = {
    "frames": ("crop/ori_imgs.zip", "ori_imgs"),
    "audio": ("crop/aud.wav", "aud.wav"),
    "clips": ("crop/clips.parquet", "clips.parquet"),
    "lms_dir": (None, "ori_imgs"),
    "landmarks478": ("landmarks/lms478.npy", "lms478.npy"),
    "detected": ("landmarks/detected.npy", "detected.npy"),
    "landmarks68": ("landmarks/lms68.npy", "lms68.npy"),
    "usable": ("landmarks/usable.npy", "usable.npy"),
    "semantic": ("parse/semantic.zip", "semantic"),
    "parsing": ("parse/parsing.zip", "parsing"),
    "background": ("parse/bc.jpg", "bc.jpg"),
    "gt": ("parse/gt_imgs.zip", "gt_imgs"),
    "torso": ("parse/torso_imgs.zip", "torso_imgs"),
    "features_dir": ("features", "."),
    "eye": ("features/eye.npy", "eye.npy"),
    "track_params": ("track/track_params.pt", "track_params.pt"),
    "transforms_train": ("track/transforms_train.json", "transforms_train.json"),
    "transforms_val": ("track/transforms_val.json", "transforms_val.json"),
    "split": ("split/split.parquet", "split.parquet"),
}

# The DVC stage writing each staged subfolder, where it is not the folder's own name.
_STAGE_OF_FOLDER = {"features": "audio"}

# Per-frame image kinds -> the suffix of their members (ER-NeRF's: JPEG for photographs, PNG for masks).
FRAME_KINDS = {"frames": ".jpg", "semantic": ".png", "parsing": ".png", "gt": ".jpg", "torso": ".png"}


def _imported_from(folder: Path) -> str | None:
    """The ER-NeRF folder a staged subfolder was imported from (its manifest says so), else None."""
    try:
        written = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(written, dict) or written.get("stage") != "import_ernerf":
        return None
    return str((written.get("params") or {}).get("source_folder", "<folder>"))


@dataclass(frozen=True)
class ProcessedIdentity:
    """Paths inside a processed identity folder, staged (ours) or flat (ER-NeRF's)."""

    root: Path

    @property
    def identity(self) -> str:
        return self.root.name

    @property
    def flat(self) -> bool:
        """True for a folder laid out by the ER-NeRF/RAD-NeRF tools."""
        return not (self.root / "crop").is_dir() and (self.root / "ori_imgs").is_dir()

    def path(self, name: str) -> Path:
        staged, flat = _LAYOUT[name]
        relative = flat if self.flat else staged
        if relative is None:
            raise KeyError(f"{name}: not part of the {'flat ER-NeRF' if self.flat else 'staged'} layout")
        return self.root / relative

    def has(self, name: str) -> bool:
        """True when this layout has ``name`` and it exists."""
        staged, flat = _LAYOUT[name]
        relative = flat if self.flat else staged
        return relative is not None and (self.root / relative).exists()

    def frames(self, kind: str) -> "FrameSource":
        """The frame archive (ours) or numbered folder (ER-NeRF's) of ``kind`` (``FRAME_KINDS``); a folder left by
        our earlier per-frame layout is refused with the stage to re-run."""
        from talkhead_models.preprocess.frames import FrameError, open_frames

        path = self.path(kind)
        if not self.flat and not path.exists() and path.with_suffix("").is_dir():
            raise FrameError(f"{path.with_suffix('')}/ was written by the earlier per-frame layout, which is no "
                             f"longer read; re-run {self.producer(kind)} (DVC re-runs what depends on it)")
        return open_frames(path, FRAME_KINDS[kind])

    def producer(self, name: str) -> str:
        """What writes file ``name``, for an error's fix ("re-run ..."): the DVC stage (ours), or the tools that
        wrote a flat folder."""
        if self.flat:
            return "the ER-NeRF/RAD-NeRF preprocessing that wrote it"
        folder = _LAYOUT[name][0].split("/")[0]
        imported = _imported_from(self.root / folder)
        if imported is not None:  # no raw data behind it: the import is what makes it again
            return (f"the ER-NeRF import (`python -m stages.import_ernerf {imported} --identity {self.identity} "
                    "--force`)")
        stage = _STAGE_OF_FOLDER.get(folder, folder)
        return f"the {stage} stage (`dvc repro {stage}@{self.identity}`)"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def lms(self, index: int) -> Path:
        """ER-NeRF's ``ori_imgs/<i>.lms`` (flat folders only; ours keeps ``landmarks/lms68.npy``)."""
        return self.path("lms_dir") / f"{index}.lms"

    def audio_features(self, kind: str) -> Path:
        return self.path("features_dir") / f"aud_{kind}.npy"
