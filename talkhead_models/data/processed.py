"""The processed identity: one class that names every file of ``data/processed/<ID>``.

Each preprocessing stage owns one subfolder (DVC forbids two stages writing
into one output), so our layout is *staged*::

    <ID>/crop/ori_imgs/<i>.jpg        cropped RGB frames, numbered from 0 across recordings, 25 fps
    <ID>/crop/aud.wav                 16 kHz mono; frame i covers [i/25, (i+1)/25) s
    <ID>/crop/clips.parquet           one row per recording (CLIP_COLUMNS)
    <ID>/landmarks/lms/<i>.lms        68 x 2 text, as ER-NeRF writes ori_imgs/<i>.lms
    <ID>/landmarks/lms478.npy         [N, 478, 3] FaceMesh points in pixels
    <ID>/landmarks/detected.npy       [N] bool, False where a frame was interpolated
    <ID>/landmarks/lms68.npy          [N, 68, 2] the iBUG-68 subset
    <ID>/landmarks/usable.npy         [N] bool, False for frames nothing trains on or is scored on: recordings
                                      without any face, and gaps without a face longer than
                                      landmarks.long_gap_frames (the landmarks stage's report.json counts them)
    <ID>/parse/parsing/<i>.png        ER-NeRF's colour array (head [255,0,0], neck [0,255,0], torso
                                      [0,0,255], background white) as cv2 writes it, i.e. BGR on disk
    <ID>/parse/semantic/<i>.png       label ids: 0 bg, 1 head, 2 neck, 3 torso, 4 lips, 5 mouth interior
    <ID>/parse/bc.jpg                 static background
    <ID>/parse/gt_imgs/<i>.jpg        frame with the background replaced by bc.jpg
    <ID>/parse/torso_imgs/<i>.png     RGBA torso, neck inpainted
    <ID>/features/aud_<kind>.npy      [N, 16, D] audio features
    <ID>/features/eye.npy             [N] open-eye area ratio
    <ID>/track/track_params.pt        {id, exp, euler, trans, focal}
    <ID>/track/transforms_train.json  focal_len, cx, cy, frames[{img_id, aud_id, transform_matrix}]
    <ID>/track/transforms_val.json
    <ID>/split/split.parquet          validation frame ranges and cross-driven audio (SPLIT_COLUMNS)
    <ID>/<stage>/manifest.json        each file's shape and dtype, and the params that made it

The ER-NeRF / RAD-NeRF tools use one *flat* folder (``ori_imgs/``,
``aud.wav``, ``parsing/``, ``bc.jpg``, ...). ``ProcessedIdentity`` reads
either, so data prepared by their tools is a processed identity here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

# file or folder -> (staged path, flat ER-NeRF path)
_LAYOUT = {
    "frames": ("crop/ori_imgs", "ori_imgs"),
    "audio": ("crop/aud.wav", "aud.wav"),
    "clips": ("crop/clips.parquet", "clips.parquet"),
    "lms_dir": ("landmarks/lms", "ori_imgs"),
    "landmarks478": ("landmarks/lms478.npy", "lms478.npy"),
    "detected": ("landmarks/detected.npy", "detected.npy"),
    "landmarks68": ("landmarks/lms68.npy", "lms68.npy"),
    "usable": ("landmarks/usable.npy", "usable.npy"),
    "semantic_dir": ("parse/semantic", "semantic"),
    "parsing_dir": ("parse/parsing", "parsing"),
    "background": ("parse/bc.jpg", "bc.jpg"),
    "gt_dir": ("parse/gt_imgs", "gt_imgs"),
    "torso_dir": ("parse/torso_imgs", "torso_imgs"),
    "features_dir": ("features", "."),
    "eye": ("features/eye.npy", "eye.npy"),
    "track_params": ("track/track_params.pt", "track_params.pt"),
    "transforms_train": ("track/transforms_train.json", "transforms_train.json"),
    "transforms_val": ("track/transforms_val.json", "transforms_val.json"),
    "split": ("split/split.parquet", "split.parquet"),
}

# The DVC stage writing each staged subfolder, where it is not the folder's own name.
_STAGE_OF_FOLDER = {"features": "audio"}


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
        return self.root / (flat if self.flat else staged)

    def producer(self, name: str) -> str:
        """What writes file ``name``, for an error's fix ("re-run ..."): the DVC stage (ours), or the tools that
        wrote a flat folder."""
        if self.flat:
            return "the ER-NeRF/RAD-NeRF preprocessing that wrote it"
        folder = _LAYOUT[name][0].split("/")[0]
        stage = _STAGE_OF_FOLDER.get(folder, folder)
        return f"the {stage} stage (`dvc repro {stage}@{self.identity}`)"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def frame(self, index: int) -> Path:
        return self.path("frames") / f"{index}.jpg"

    def lms(self, index: int) -> Path:
        return self.path("lms_dir") / f"{index}.lms"

    def parsing(self, index: int) -> Path:
        return self.path("parsing_dir") / f"{index}.png"

    def gt_image(self, index: int) -> Path:
        return self.path("gt_dir") / f"{index}.jpg"

    def torso_image(self, index: int) -> Path:
        return self.path("torso_dir") / f"{index}.png"

    def audio_features(self, kind: str) -> Path:
        return self.path("features_dir") / f"aud_{kind}.npy"

    def num_frames(self) -> int:
        return sum(1 for _ in self.path("frames").glob("*.jpg"))
