"""Per-frame semantic masks (head, neck, torso, background, lips, mouth interior) without downloaded weights.

The default ``geometry`` backend combines two models bundled with mediapipe:
SelfieSegmentation says which pixels are the person, FaceMesh's landmarks
say where the face is. The head is the face oval plus every person pixel on
the forehead's side of the line through the two jaw points at mouth level
(hair, ears, the top of the head); the neck is the person below the head,
above a collar line and within a band around the chin; the torso is the rest
of the person; lips and mouth interior come from FaceMesh's lip contours.
``backend: bisenet`` uses face-parsing.PyTorch's BiSeNet (``79999_iter.pth``),
as ER-NeRF does, when its weights are present.

ER-NeRF's files: ``parsing/<i>.png`` colours written as ER-NeRF's
face_parsing writes them, i.e. the array handed to ``cv2.imwrite`` holds
head (255, 0, 0), neck (0, 255, 0), torso (0, 0, 255), background white; cv2
stores that array as BGR, so viewed as RGB the head is *blue* and the torso
red. ER-NeRF reads the files back with ``cv2.imread`` and compares the same
triples, so the decoded values, not the viewer's colours, are what must match.
The files are indexed (palette) PNGs, which every PNG reader, cv2 included,
expands to those colours.
"""

from __future__ import annotations

import contextlib

import logging
import typing
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
from tqdm import tqdm

from talkhead_models import face_topology as topo
from talkhead_models.config import Device, Fraction, NonNegativeFloat, PositiveInt
from talkhead_models.data.synthetic.face import (
    LABEL_BACKGROUND, LABEL_HEAD, LABEL_LIPS, LABEL_MOUTH, LABEL_NECK, LABEL_TORSO,
)
from talkhead_models.preprocess.background import BackgroundEstimator
from talkhead_models.preprocess.frames import (
    BackgroundWriter, FrameArchiveWriter, FrameSource, encode_image, read_frames, write_image,
)

log = logging.getLogger(__name__)

ParseBackend = Literal["geometry", "bisenet"]
BACKENDS = typing.get_args(ParseBackend)
HEAD_LABELS = (LABEL_HEAD, LABEL_LIPS, LABEL_MOUTH)

# ER-NeRF's parsing colours by our label id, in the channel order cv2.imwrite receives (B, G, R).
PARSING_BGR = np.zeros((256, 3), np.uint8)
PARSING_BGR[[LABEL_BACKGROUND]] = (255, 255, 255)
PARSING_BGR[list(HEAD_LABELS)] = (255, 0, 0)
PARSING_BGR[[LABEL_NECK]] = (0, 255, 0)
PARSING_BGR[[LABEL_TORSO]] = (0, 0, 255)
PARSING_PALETTE = PARSING_BGR[: max(HEAD_LABELS + (LABEL_NECK, LABEL_TORSO)) + 1, ::-1]  # RGB, for indexed PNGs

HEAD_LUT = np.isin(np.arange(256), HEAD_LABELS).astype(np.uint8)

# The parse stage's per-frame archives and the suffix of their members.
PARSE_ARCHIVES = {"parsing": ".png", "semantic": ".png", "gt_imgs": ".jpg", "torso_imgs": ".png"}


def labels_from_colours(colours: np.ndarray) -> np.ndarray:
    """[H, W] label ids from ER-NeRF's parsing colours [H, W, 3] as cv2 reads them (BGR): head, neck, torso,
    background (its colours cannot tell lips or mouth interior from the head)."""
    labels = np.zeros(colours.shape[:2], np.uint8)
    for label in (LABEL_HEAD, LABEL_NECK, LABEL_TORSO):
        labels[np.all(colours == PARSING_BGR[label], axis=-1)] = label
    return labels

JAW_SIDES = (topo.FACE_OVAL[10], topo.FACE_OVAL[26])  # 361 and 132: the jaw's sides at mouth level
ER_NERF_SIZE = 512  # ER-NeRF's torso in-painting lengths are in pixels of a 512 px frame


class ParseError(RuntimeError):
    """Masks that cannot be produced; the message names the input and the fix."""


@dataclass(frozen=True)
class ParseConfig:
    """The parse stage. Lengths are fractions of the frame side unless said otherwise."""

    backend: ParseBackend = "geometry"
    """geometry (SelfieSegmentation + FaceMesh, no downloads) or bisenet (needs 79999_iter.pth)."""
    person_threshold: Fraction = 0.5
    """SelfieSegmentation probability above which a pixel is the person."""
    segmentation_size: PositiveInt = 256
    """Larger frames are shrunk to this side before SelfieSegmentation and its mask is scaled back: the
    model itself sees 256 x 256, so a 512 px frame only costs more to convert (half the parse time)."""
    face_margin: NonNegativeFloat = 0.006
    """Person pixels this close to the face oval count as head (ears, cheek edges)."""
    neck_half_width: NonNegativeFloat = 0.75
    """Half width of the neck band around the chin, as a fraction of half the jaw width."""
    collar_drop: NonNegativeFloat = 0.3
    """Collar line below the chin, in face heights (forehead to chin); the torso starts there."""
    background_stride: PositiveInt = 20
    """Every n-th usable frame feeds the background estimate (ER-NeRF uses every 20th)."""
    background_margin: NonNegativeFloat = 0.01
    """A pixel is background evidence only if this far from the person in some frame (ER-NeRF: 5 px at 512)."""
    workers: PositiveInt = 2
    """Threads decoding and encoding frames."""
    device: Device = "auto"
    """Torch device of the bisenet backend: auto (CUDA when available), cpu or cuda."""


class Parser(Protocol):
    def __call__(self, frame: np.ndarray, points: np.ndarray) -> np.ndarray:
        """[S, S] uint8 labels from an RGB frame and its [478, 2+] FaceMesh points."""

    def close(self) -> None: ...


def face_labels(person: np.ndarray, points: np.ndarray, cfg: ParseConfig) -> np.ndarray:
    """Labels from a person mask [S, S] bool and FaceMesh points [478, 2+] in pixels."""
    height, width = person.shape
    points = points[:, :2].astype(np.float64)
    face = np.zeros((height, width), np.uint8)
    cv2.fillPoly(face, [np.round(points[topo.FACE_OVAL] * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    radius = max(1, int(round(cfg.face_margin * width)))
    near_face = cv2.dilate(face, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)) > 0

    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    (ax, ay), (bx, by) = points[JAW_SIDES[0]], points[JAW_SIDES[1]]
    forehead, chin = points[topo.FOREHEAD], points[topo.CHIN]
    orientation = np.sign((bx - ax) * (forehead[1] - ay) - (by - ay) * (forehead[0] - ax)) or 1.0
    above_jaw = orientation * (np.float32(bx - ax) * (rows - np.float32(ay))
                               - np.float32(by - ay) * (cols - np.float32(ax))) > 0
    head = person & (above_jaw | near_face)

    face_height = np.linalg.norm(chin - forehead)
    half_jaw = 0.5 * np.ptp(points[topo.FACE_OVAL, 0])
    collar = chin[1] + cfg.collar_drop * face_height
    band = np.abs(cols - np.float32(chin[0])) < cfg.neck_half_width * half_jaw
    neck = person & ~head & (rows < collar) & band

    labels = np.where(person, np.uint8(LABEL_TORSO), np.uint8(LABEL_BACKGROUND))
    labels[neck] = LABEL_NECK
    labels[head] = LABEL_HEAD
    _paint_mouth(labels, points)
    return labels


def _paint_mouth(labels: np.ndarray, points: np.ndarray) -> None:
    """Lips (outer contour, where the head is) and mouth interior (inner contour), in the mouth's box only."""
    outer = points[topo.outer_mouth_polygon()]
    height, width = labels.shape
    x0, y0 = np.maximum(np.floor(outer.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(outer.max(axis=0)).astype(int) + 2, (width, height))
    if x1 <= x0 or y1 <= y0:
        return
    box = labels[y0:y1, x0:x1]
    offset = np.array([x0, y0])

    def polygon(indices: list[int]) -> np.ndarray:
        mask = np.zeros(box.shape, np.uint8)
        cv2.fillPoly(mask, [np.round((points[indices] - offset) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
        return mask > 0

    box[polygon(topo.outer_mouth_polygon()) & (box == LABEL_HEAD)] = LABEL_LIPS
    box[polygon(topo.inner_mouth_polygon())] = LABEL_MOUTH


class GeometryParser:
    """SelfieSegmentation for the person, FaceMesh geometry for its parts."""

    def __init__(self, cfg: ParseConfig) -> None:
        import mediapipe as mp

        self._cfg = cfg
        self._segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __call__(self, frame: np.ndarray, points: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        side = self._cfg.segmentation_size
        if max(height, width) > side:
            scale = side / max(height, width)
            small = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
            probability = self._segmenter.process(small).segmentation_mask
            probability = cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR)
        else:
            probability = self._segmenter.process(np.ascontiguousarray(frame)).segmentation_mask
        return face_labels(probability > self._cfg.person_threshold, points, self._cfg)

    def close(self) -> None:
        self._segmenter.close()


def make_parser(cfg: ParseConfig) -> Parser:
    if cfg.backend == "geometry":
        log.info("parsing: SelfieSegmentation + FaceMesh geometry (BiSeNet backend not selected)")
        return GeometryParser(cfg)
    if cfg.backend == "bisenet":
        from talkhead_models.preprocess.bisenet import BiSeNetParser

        return BiSeNetParser(cfg.device)
    raise ParseError(f"unknown parse backend {cfg.backend!r}; use one of {BACKENDS}")


def compose_gt(frame: np.ndarray, labels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The frame with its background pixels replaced by the static background (ER-NeRF's gt_imgs)."""
    return cv2.copyTo(background, (labels == LABEL_BACKGROUND).view(np.uint8), frame.copy())


def torso_rgba(gt: np.ndarray, labels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """ER-NeRF's torso image: the head replaced by background, the neck extended up under it, RGBA.

    Port of ER-NeRF's ``extract_torso_and_gt``: the top pixel of every torso
    and neck column that touches the head is repeated upwards, darkening 2%
    per pixel (9 and 53 pixels at 512 px), and the neck fill is blurred, so
    the torso model never sees a hole where the head was.
    """
    scale = gt.shape[0] / ER_NERF_SIZE
    head = cv2.LUT(labels, HEAD_LUT)
    torso = labels == LABEL_TORSO
    neck = cv2.dilate((labels == LABEL_NECK).view(np.uint8), np.ones((3, 1), np.uint8), iterations=3) > 0
    image = cv2.copyTo(background, head, gt.copy())
    torso_fill = _extend_upward(image, gt, torso, head > 0, int(round(8 * scale)) + 1, 0)
    push_down = int(round(4 * scale))
    neck_fill = _extend_upward(image, gt, neck, head > 0, int(round(48 * scale)) + push_down + 1, push_down)
    cv2.copyTo(cv2.GaussianBlur(image, (5, 5), 0), neck_fill.view(np.uint8), image)
    alpha = (neck | torso | neck_fill | torso_fill).view(np.uint8) * np.uint8(255)
    rgba = cv2.merge([*cv2.split(image), alpha])
    return cv2.bitwise_and(rgba, rgba, mask=alpha)


def _extend_upward(image: np.ndarray, colours: np.ndarray, part: np.ndarray, head: np.ndarray, length: int,
                   push_down: int) -> np.ndarray:
    """Repeat each column's top ``part`` pixel upwards where the head sits right above it; returns the mask."""
    filled = np.zeros(part.shape, bool)
    columns = np.flatnonzero(part.any(axis=0))
    top = part.argmax(axis=0)[columns]
    keep = (top > 0) & head[np.maximum(top - 1, 0), columns]
    columns, top = columns[keep], top[keep]
    if len(columns) == 0:
        return filled
    top = top + np.minimum(part.sum(axis=0)[columns] - 1, push_down)
    steps = np.arange(length)
    rows = top[None, :] - steps[:, None]  # [L, m]
    cols = np.broadcast_to(columns[None, :], rows.shape)
    shade = (0.98 ** steps).astype(np.float32)[:, None, None]
    values = colours[top, columns].astype(np.float32)[None] * shade  # [L, m, 3]
    inside = rows >= 0
    image[rows[inside], cols[inside]] = values[inside].astype(np.uint8)
    filled[rows[inside], cols[inside]] = True
    return filled


@dataclass
class ParseSummary:
    frames: int = 0
    parsed: int = 0
    head_fraction: float = 0.0
    background_seen: float = 0.0
    background_frames: int = 0

    def metrics(self) -> dict[str, float]:
        return {
            "frames": float(self.frames),
            "parsed_frames": float(self.parsed),
            "skipped_frames": float(self.frames - self.parsed),
            "head_fraction": self.head_fraction,
            "background_seen": self.background_seen,
            "background_frames": float(self.background_frames),
        }


def _encode_outputs(index: int, frame: np.ndarray, labels: np.ndarray,
                    background: np.ndarray) -> tuple[int, dict[str, bytes]]:
    """All per-frame products of one frame, encoded (runs on a writer thread)."""
    gt = compose_gt(frame, labels, background)
    return index, {
        "parsing": encode_image(labels, ".png", palette=PARSING_PALETTE),
        "semantic": encode_image(labels, ".png", rgb=False),
        "gt_imgs": encode_image(gt, ".jpg"),
        "torso_imgs": encode_image(torso_rgba(gt, labels, background), ".png"),
    }


def parse_frames(frames: FrameSource, points: np.ndarray, usable: np.ndarray, cfg: ParseConfig,
                 out: Path) -> ParseSummary:
    """Write ``bc.jpg`` and the usable frames' ``parsing.zip``, ``semantic.zip``, ``gt_imgs.zip`` and
    ``torso_imgs.zip`` (frame archives, PARSE_ARCHIVES).

    Two streaming passes: every ``background_stride``-th usable frame for the
    background, then every usable frame. Frames the landmarks stage flagged
    unusable (recordings without a face, long gaps without one) are left out;
    ``points`` must be finite in the usable ones (``read_landmarks`` checks).
    """
    indices = np.flatnonzero(usable)
    summary = ParseSummary(frames=len(usable), parsed=len(indices))
    if len(indices) == 0:
        raise ParseError(f"no usable frame in {frames.path}: the landmarks stage found no face; see its report.json")
    parser = make_parser(cfg)
    try:
        sample = indices[:: max(1, cfg.background_stride)]
        estimator: BackgroundEstimator | None = None
        with closing(read_frames(frames, sample, workers=cfg.workers)) as stream:
            for index, frame in zip(sample, stream):
                labels = parser(frame, points[index])
                if estimator is None:
                    estimator = BackgroundEstimator(frame.shape[:2], cfg.background_margin * frame.shape[1])
                estimator.add(frame, labels != LABEL_BACKGROUND)
        try:
            background = estimator.result()
        except ValueError as error:
            raise ParseError(f"{frames.path}: {error}") from error
        summary.background_seen = estimator.seen_fraction
        summary.background_frames = len(sample)
        write_image(out / "bc.jpg", background)

        head_pixels = 0
        with contextlib.ExitStack() as archives:
            writers = {name: archives.enter_context(FrameArchiveWriter(out / f"{name}.zip", suffix))
                       for name, suffix in PARSE_ARCHIVES.items()}

            def store(result: tuple[int, dict[str, bytes]]) -> None:
                index, encoded = result
                for name, data in encoded.items():
                    writers[name].add(index, data)

            with BackgroundWriter(workers=cfg.workers, max_pending=2 * cfg.workers, consume=store) as writer, \
                    closing(read_frames(frames, indices, workers=cfg.workers)) as stream:
                for index, frame in tqdm(zip(indices, stream), total=len(indices), desc="parse", unit="frame",
                                         mininterval=2.0):
                    labels = parser(frame, points[index])
                    head_pixels += cv2.countNonZero(cv2.LUT(labels, HEAD_LUT))
                    writer.submit(_encode_outputs, int(index), frame, labels, background)
        summary.head_fraction = head_pixels / (len(indices) * background.shape[0] * background.shape[1])
    finally:
        parser.close()
    return summary
