"""The crop stage's library: validate source recordings, find a stable face box, resample to 25 fps, crop.

One recording (a MEAD clip or a person-specific video) becomes a run of
processed frames:

1. **Validation** (``check_recording``), from the container's metadata
   (``talkhead_models.media.probe``), before any heavy work: a video stream,
   a frame rate, an audio stream (the separate audio file if the recording
   has one, else the video's own), a duration of at least
   ``min_duration_s``. Broken files raise ``BadRecordingError`` naming
   the file and the fix; a recording that is fine but too short raises
   ``RecordingSkipped`` and is dropped with a warning.
2. **Face scan** (``scan_faces``): every frame is decoded once, upright and
   with its presentation timestamp (``talkhead_models.media``; this counts
   the decodable frames and catches truncated files), and every
   ``detection_stride``-th frame goes through mediapipe's short-range face
   detector (1 ms a frame), falling back to the full-range one (small faces,
   9 ms) on frames where the first finds nothing. With several faces, the one
   followed is the largest, most central detection of the recording, and in
   every frame the detection nearest to it (a warning says so).
3. **Crop box** (``crop_box``): the robust median of the face boxes (outliers
   more than half a face away from the median centre are dropped), scaled by
   ``margin`` and moved down by ``shift_down`` face sizes so that head and
   shoulders fit as in the ER-NeRF/AD-NeRF videos, and at least
   ``image_size`` where the image is that large (no needless enlargement).
   The box is constant for the whole recording (static camera). It never
   leaves the image: its side is capped at the shorter image side and the
   square is shifted inside the frame, so no pixel is invented (no padding).
   On the synthetic corpus, whose frames are already head-and-shoulders
   squares, it is the full frame.
4. **Resampling by time** (``time_schedule``). The time axis of a
   recording's processed frames and audio starts at the presentation time
   ``t0`` of its first decoded video frame: processed frame ``k`` shows time
   ``k / 25`` s after ``t0``, taken as the source frame whose timestamp is
   *nearest* to ``t0 + k / 25`` (a tie goes to the later frame; no blending,
   so every processed frame is a real frame and its ground truth is the
   source frame's). The video lasts from ``t0`` to the end of its last frame
   (its timestamp plus its duration), and a recording of ``D`` seconds gives
   ``round(25 D)`` processed frames, so its duration is kept whatever
   the frame rate: variable (phones), 29.97 (``30000/1001``), 12.5, ... On a
   constant rate ``fps`` this is source frame ``floor(k * fps / 25 + 1/2)``
   and ``round(n / fps * 25)`` frames (half to even) for ``n`` source frames
   (``frame_schedule``); at 25 fps, every source frame once. Timestamps are
   exact fractions of a second, so no rounding moves a frame across a tie.
5. **Crop pass** (``write_frames``): the video is decoded a second time
   (the same frames in the same order); each needed frame is cropped, resized
   (area filter when shrinking, cubic when enlarging) and written as JPEG by a
   thread pool, a bounded number of frames in flight.
6. **Audio** (``aligned_audio``): 16 kHz mono on the same axis: its first
   sample is at ``t0`` (audio before the first video frame is dropped, an
   audio stream starting after it is preceded by silence; a separate audio
   file's timestamps are read on the video's clock, both files starting at
   the recording's start), then cut or padded with silence at the end to
   exactly ``frames / 25`` s, so processed frame ``i`` covers
   ``[i / 25, (i + 1) / 25)`` s of ``aud.wav``, within one audio sample.

Bad input, and what happens (every message names the file):

* corrupt, empty or truncated file; no video stream; no audio stream (and no
  separate audio file); an unreadable separate audio file; a source so small
  that the crop would be enlarged more than ``max_upscale``: error with the
  fix (a previous output stays as it was); with ``skip_unreadable`` the
  recording is dropped with a warning instead;
* shorter than ``min_duration_s`` (including a one-frame clip), or no face in
  any frame examined: the recording is dropped with a warning and listed in
  the stage's ``report.json``; if no recording is left, an error lists why
  each was dropped;
* frames without a face: the box comes from the frames with one; the frames
  are kept (the landmarks stage interpolates them);
* several faces: the largest, most central face is followed, with a warning;
* any frame rate (variable, 29.97, 12.5, ...), any aspect ratio, odd widths
  and heights, audio starting before or after the video: handled as
  described above; a display rotation (a phone held upright): frames are
  decoded upright (a rotation that is not a quarter turn is an error with
  the fix); a timestamp going backwards: the frame takes its predecessor's
  time (and, the later of the two, is the one shown), with a warning.
"""

from __future__ import annotations

import logging
import subprocess
import time
import wave
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Sequence

import annotated_types
import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from talkhead_models.config import Fraction as UnitInterval
from talkhead_models.config import NonNegativeFloat, PositiveFloat, PositiveInt, validate_name
from talkhead_models.data import DataConfig
from talkhead_models.data.processed import CLIP_COLUMNS, FPS, SAMPLE_RATE
from talkhead_models.data.sources import Recording, recordings
from talkhead_models.media import MediaError, StreamInfo, ffmpeg_exe, iter_frames, iter_timed_frames, probe, read_audio
from talkhead_models.preprocess.frames import BackgroundWriter, FrameArchiveWriter, encode_image

log = logging.getLogger(__name__)

SAMPLES_PER_FRAME = int(round(SAMPLE_RATE / FPS))  # 640
# A stream decoding to fewer frames than its header promises by more than this is checked for errors.
_SHORTFALL_FRAMES = 2
# ffmpeg messages that mean the data itself is damaged (not merely a shorter video than audio stream).
_DAMAGE_MARKERS = ("partial file", "error while decoding", "Invalid NAL", "corrupt", "Invalid data", "missing picture",
                   "concealing", "decode_slice")


@dataclass(frozen=True)
class CropConfig:
    """The crop stage: face-centred square crops at 25 fps and the aligned 16 kHz audio."""

    image_size: PositiveInt = 512
    """Side of the processed frames in pixels (512 in ER-NeRF/GSTalker; the demo profile uses 256)."""
    detection_stride: PositiveInt = 5
    """Run the face detector on every n-th source frame; the box is the median over those frames."""
    min_confidence: UnitInterval = 0.5
    """mediapipe face detection score below which a detection is ignored."""
    margin: PositiveFloat = 2.8
    """Side of the square crop as a multiple of the median face box side, so head, hair and shoulders fit
    as in the ER-NeRF/AD-NeRF videos (the synthetic corpus's frames, framed that way, have a face box of
    0.37 of the frame side: 2.8 x 0.37 > 1 keeps their full frame)."""
    shift_down: float = 0.25
    """The crop centre sits this many face box sides below the face centre (room for the shoulders)."""
    jpeg_quality: Annotated[int, annotated_types.Interval(ge=1, le=100)] = 95
    """JPEG quality of the frames in ori_imgs.zip."""
    min_duration_s: NonNegativeFloat = 1.0
    """Recordings shorter than this are dropped with a warning (too short to learn or evaluate from)."""
    max_upscale: PositiveFloat = 2.0
    """Refuse a recording whose crop would have to be enlarged more than this to reach image_size."""
    skip_unreadable: bool = False
    """Drop recordings that cannot be read (corrupt, truncated, no audio or video stream) with a warning
    instead of stopping the stage (useful on large downloaded datasets with a few broken files)."""
    workers: PositiveInt = 2
    """Threads encoding JPEGs while ffmpeg decodes."""
    data: DataConfig = field(default_factory=DataConfig)
    """Which raw source the recordings come from (params.yaml ``data``)."""


class BadRecordingError(MediaError):
    """A source file that cannot be used as it is; the message names the file and the fix."""


class RecordingSkipped(Exception):
    """A readable recording without usable content (too short, no face): dropped with a warning."""


@dataclass(frozen=True)
class SourceInfo:
    """A validated recording: its video stream and the file its audio comes from."""

    video: Path
    audio: Path
    width: int
    height: int
    fps: float
    duration: float | None


@dataclass(frozen=True)
class CropBox:
    """A square in source pixels: columns x0..x0+size-1, rows y0..y0+size-1."""

    x0: int
    y0: int
    size: int

    def to_processed(self, points: np.ndarray, image_size: int) -> np.ndarray:
        """Map [..., 2+] source pixel coordinates (x, y, ...) into processed-frame pixels."""
        points = np.asarray(points, dtype=np.float64)
        scale = image_size / self.size
        mapped = points.copy()
        mapped[..., 0] = (points[..., 0] - self.x0) * scale
        mapped[..., 1] = (points[..., 1] - self.y0) * scale
        if points.shape[-1] > 2:
            mapped[..., 2:] = points[..., 2:] * scale
        return mapped


@dataclass
class FaceScan:
    """What the first pass over a recording found."""

    n_frames: int  # frames decoded
    sampled: int  # frames given to the detector
    boxes: np.ndarray  # [M, 4] x0, y0, w, h in source pixels of the followed face, frames with a face
    several_faces: int  # sampled frames showing more than one face
    times: list[Fraction] = field(default_factory=list)  # presentation time (s) of each decoded frame
    end: Fraction = Fraction(0)  # when the last decoded frame stops being shown (s)

    @property
    def duration(self) -> Fraction:
        """Seconds from the first frame's timestamp to the end of the last frame."""
        return self.end - self.times[0] if self.times else Fraction(0)


def check_recording(video: Path, audio: Path | None, min_duration_s: float) -> SourceInfo:
    """Validate a recording from its stream metadata; see the module docstring for what is checked."""
    video = Path(video)
    try:
        info = probe(video)
    except MediaError as error:
        raise BadRecordingError(str(error)) from None
    if not info.has_video and not info.has_audio:
        raise BadRecordingError(f"{video}: no audio or video stream at all (an empty, zero-length recording); "
                                "re-export it or remove it from the dataset")
    if not info.has_video:
        raise BadRecordingError(
            f"{video}: no video stream (an audio-only file?); replace it with the video recording or remove it")
    if not info.fps or info.fps <= 0 or not info.width or not info.height:
        raise BadRecordingError(
            f"{video}: the video stream has no readable frame rate or size; re-encode it, e.g. "
            f"`ffmpeg -i {video.name} -r 25 -c:v libx264 fixed.mp4`")
    audio_source = _audio_source(video, info, audio)
    if info.duration is not None and info.duration < min_duration_s:
        raise RecordingSkipped(f"{video}: {info.duration:.2f} s long, shorter than crop.min_duration_s "
                               f"= {min_duration_s:g} s")
    return SourceInfo(video, audio_source, int(info.width), int(info.height), float(info.fps), info.duration)


def _audio_source(video: Path, info: StreamInfo, audio: Path | None) -> Path:
    if audio is not None:
        try:
            audio_info = probe(audio)
        except MediaError as error:
            raise BadRecordingError(f"{error} (the audio of {video})") from None
        if not audio_info.has_audio:
            raise BadRecordingError(f"{audio}: no audio stream; replace it with the recording's audio "
                                    f"(talking-head training needs the speech of {video.name})")
        return Path(audio)
    if not info.has_audio:
        raise BadRecordingError(
            f"{video}: no audio stream and no separate audio file; talking-head training needs the speech: "
            "mux it in (`ffmpeg -i video.mp4 -i speech.wav -c:v copy -c:a aac out.mp4`) or, for MEAD, "
            "put audio/<emotion>/level_<k>/<NNN>.m4a beside video/")
    return video


class FaceDetector:
    """mediapipe face detection: short range first, full range where it finds nothing.

    Returns [K, 5] arrays (x0, y0, w, h in pixels, score) per frame. Both
    models ship inside the mediapipe wheel; nothing is downloaded.
    """

    def __init__(self, min_confidence: float = 0.5) -> None:
        import mediapipe as mp

        self._solution = mp.solutions.face_detection
        self._min_confidence = min_confidence
        self._short = self._solution.FaceDetection(model_selection=0, min_detection_confidence=min_confidence)
        self._full = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = np.ascontiguousarray(frame)
        found = self._detect(self._short, frame)
        if len(found) == 0:
            if self._full is None:
                self._full = self._solution.FaceDetection(model_selection=1,
                                                          min_detection_confidence=self._min_confidence)
            found = self._detect(self._full, frame)
        return found

    @staticmethod
    def _detect(model, frame: np.ndarray) -> np.ndarray:
        result = model.process(frame)
        if not result.detections:
            return np.zeros((0, 5), np.float64)
        height, width = frame.shape[:2]
        rows = []
        for detection in result.detections:
            box = detection.location_data.relative_bounding_box
            rows.append([box.xmin * width, box.ymin * height, box.width * width, box.height * height,
                         detection.score[0]])
        return np.array(rows, np.float64)

    def close(self) -> None:
        self._short.close()
        if self._full is not None:
            self._full.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def scan_faces(source: SourceInfo, detector: FaceDetector, stride: int) -> FaceScan:
    """First pass: time every decodable frame and detect faces on every ``stride``-th one."""
    per_frame: list[np.ndarray] = []
    times: list[Fraction] = []
    end = Fraction(0)
    try:
        for index, frame in enumerate(iter_timed_frames(source.video, source.width, source.height)):
            times.append(frame.time)
            end = frame.time + frame.duration
            if index % max(1, stride) == 0:
                per_frame.append(detector(frame.image))
    except MediaError as error:
        raise BadRecordingError(str(error)) from None
    _check_decoded(source, len(times))
    several = sum(len(d) > 1 for d in per_frame)
    return FaceScan(len(times), len(per_frame), follow_one_face(per_frame, source.width, source.height), several,
                    times, end)


def _check_decoded(source: SourceInfo, n_frames: int) -> None:
    if n_frames == 0:
        raise BadRecordingError(f"{source.video}: no frame could be decoded (corrupt file); "
                                "re-export or re-download it")
    if source.duration is None:
        return
    promised = source.duration * source.fps
    if n_frames < promised - _SHORTFALL_FRAMES:
        # A video stream somewhat shorter than the container (whose duration includes the audio)
        # is normal; damage shows as decoder errors, so only those make it an error.
        errors = decoder_errors(source.video)
        if errors:
            raise BadRecordingError(
                f"{source.video}: truncated or corrupt: decoded {n_frames} of the {promised:.0f} frames its "
                f"header promises (ffmpeg: {errors}); re-export or re-download it")
        log.debug("%s: video stream %d frames, container %.2f s", source.video, n_frames, source.duration)


def decoder_errors(path: Path) -> str:
    """The last damage message ffmpeg prints while decoding ``path`` (empty when it decodes cleanly)."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
        capture_output=True, text=True, check=False)
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    damaged = [line for line in lines if any(marker.lower() in line.lower() for marker in _DAMAGE_MARKERS)]
    return damaged[-1][-200:] if damaged else ""


def follow_one_face(per_frame: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """One face box per frame that shows a face: the face nearest to the recording's main face.

    The main face is the detection with the best size-and-centrality score
    over all frames; following the detection nearest to it (instead of the
    best one of each frame) keeps two similar faces from alternating.
    """
    found = [d for d in per_frame if len(d)]
    if not found:
        return np.zeros((0, 4), np.float64)
    everything = np.concatenate(found)
    centres = everything[:, :2] + everything[:, 2:4] / 2
    offset = np.hypot((centres[:, 0] - width / 2) / width, (centres[:, 1] - height / 2) / height)
    score = everything[:, 2] * everything[:, 3] * np.exp(-4.0 * offset ** 2)
    main = centres[np.argmax(score)]
    chosen = []
    for detections in found:
        frame_centres = detections[:, :2] + detections[:, 2:4] / 2
        chosen.append(detections[np.argmin(np.hypot(*(frame_centres - main).T)), :4])
    return np.array(chosen)


def crop_box(boxes: np.ndarray, width: int, height: int, margin: float, shift_down: float,
             min_side: int = 0) -> CropBox:
    """The constant square crop of a recording from its face boxes [M, 4] (see the module docstring).

    The side is at least ``min_side`` (the output size) where the image allows, so frames are not enlarged
    just because the face is a little small.
    """
    if len(boxes) == 0:
        raise ValueError("crop_box needs at least one face box")
    centres = boxes[:, :2] + boxes[:, 2:4] / 2
    sizes = boxes[:, 2:4].max(axis=1)
    centre, size = np.median(centres, axis=0), np.median(sizes)
    inliers = np.hypot(*(centres - centre).T) <= 0.5 * size
    if inliers.any():
        centre, size = np.median(centres[inliers], axis=0), np.median(sizes[inliers])
    side = int(min(max(round(margin * size), min_side), width, height))
    side = max(side, 1)
    x0 = int(np.clip(round(centre[0] - side / 2), 0, width - side))
    y0 = int(np.clip(round(centre[1] + shift_down * size - side / 2), 0, height - side))
    return CropBox(x0, y0, side)


def time_schedule(times: Sequence[Fraction], end: Fraction) -> np.ndarray:
    """Source frame index shown by each processed frame: the nearest in time (see the module docstring).

    ``times`` are the source frames' presentation times in seconds, never decreasing; ``end`` is when the
    last one stops being shown.
    """
    if not len(times):
        return np.zeros(0, np.int64)
    rate = Fraction(FPS)
    start = times[0]
    count = round((end - start) * rate)  # exact, half to even as Python's round
    chosen = np.empty(count, np.int64)
    source = 0
    for k in range(count):
        target = start + k / rate
        # Times never decrease, so the distance to the target falls, then rises: move on while the next frame is
        # at least as near. A tie goes to the later frame (12.5 fps shows every source frame twice; of frames
        # with one timestamp, the last is shown).
        while source + 1 < len(times) and abs(times[source + 1] - target) <= abs(times[source] - target):
            source += 1
        chosen[k] = source
    return chosen


def frame_schedule(n_source: int, source_fps: float) -> np.ndarray:
    """``time_schedule`` of ``n_source`` frames at a constant ``source_fps`` (frame i at i / fps s)."""
    # 29.97 and 30000/1001 written as floats become the exact rates, so ties stay ties.
    rate = Fraction(source_fps).limit_denominator(1_000_000)
    return time_schedule([i / rate for i in range(n_source)], n_source / rate)


def crop_frame(frame: np.ndarray, box: CropBox, image_size: int) -> np.ndarray:
    """The box cut out of an RGB frame and resized to ``image_size``."""
    patch = frame[box.y0 : box.y0 + box.size, box.x0 : box.x0 + box.size]
    if box.size == image_size:
        return np.ascontiguousarray(patch)
    interpolation = cv2.INTER_AREA if box.size > image_size else cv2.INTER_CUBIC
    return cv2.resize(patch, (image_size, image_size), interpolation=interpolation)


def _encode(frame: np.ndarray, box: CropBox, image_size: int, quality: int, indices: range) -> tuple[range, bytes]:
    return indices, encode_image(crop_frame(frame, box, image_size), ".jpg", quality=quality)


def write_frames(source: SourceInfo, box: CropBox, schedule: np.ndarray, archive: FrameArchiveWriter,
                 first_index: int, image_size: int, quality: int, workers: int, progress=None) -> int:
    """Second pass: add processed frames ``first_index ..`` to ``archive`` as ``<i>.jpg``; returns how many."""
    repeats = np.bincount(schedule, minlength=int(schedule.max()) + 1 if len(schedule) else 0)
    written = 0

    def store(result: tuple[range, bytes]) -> None:
        indices, data = result
        for index in indices:  # a source frame shown for several output frames is stored once per frame
            archive.add(index, data)

    with BackgroundWriter(workers=workers, max_pending=4 * max(1, workers), consume=store) as writer:
        for index, frame in enumerate(iter_frames(source.video, source.width, source.height)):
            if index >= len(repeats):
                break
            count = int(repeats[index])
            if count == 0:
                continue
            start = first_index + written
            writer.submit(_encode, frame, box, image_size, quality, range(start, start + count))
            written += count
            if progress is not None:
                progress.update(count)
    if written != len(schedule):
        raise BadRecordingError(f"{source.video}: the second decoding pass gave fewer frames ({written}) than the "
                                f"first ({len(schedule)} needed); the file is unstable: re-export it")
    return written


def aligned_audio(source: SourceInfo, n_frames: int, start: Fraction | float = 0) -> np.ndarray:
    """The recording's audio at 16 kHz mono from ``start`` s (the first video frame's time) on, cut or padded
    with silence to exactly ``n_frames / 25`` s."""
    try:
        audio = read_audio(source.audio, SAMPLE_RATE, start=start)
    except MediaError as error:
        raise BadRecordingError(f"{error}; re-export the audio of {source.video.name}") from None
    needed = n_frames * SAMPLES_PER_FRAME
    if len(audio) < needed:
        missing = (needed - len(audio)) / SAMPLE_RATE
        if missing > 0.2:
            log.warning("%s: audio is %.2f s shorter than the video; padded with silence", source.audio, missing)
        audio = np.concatenate([audio, np.zeros(needed - len(audio), np.float32)])
    elif len(audio) - needed > SAMPLE_RATE:
        log.warning("%s: audio is %.2f s longer than the video; the end is cut", source.audio,
                    (len(audio) - needed) / SAMPLE_RATE)
    return audio[:needed]


class WavAppender:
    """Write 16 kHz mono PCM-16 ``aud.wav`` one recording at a time (never the whole identity in memory)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._wave = wave.open(str(self.path), "wb")
        self._wave.setnchannels(1)
        self._wave.setsampwidth(2)
        self._wave.setframerate(SAMPLE_RATE)
        self.samples = 0

    def append(self, audio: np.ndarray) -> None:
        pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
        self._wave.writeframes(pcm.tobytes())
        self.samples += len(pcm)

    def close(self) -> None:
        self._wave.close()

    def __enter__(self) -> "WavAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class CropSummary:
    """What ``crop_identity`` wrote and what it left out."""

    clips: pd.DataFrame  # one row per kept recording, CLIP_COLUMNS
    dropped: list[tuple[str, str]]  # (file, reason) of each recording left out
    several_faces: list[str]  # recordings in which more than one face was seen
    seconds: float = 0.0  # wall time of the crop

    @property
    def frames(self) -> int:
        return int(self.clips.last_frame.max() + 1) if len(self.clips) else 0

    def metrics(self) -> dict[str, float]:
        return {
            "frames": float(self.frames),
            "recordings": float(len(self.clips)),
            "recordings_dropped": float(len(self.dropped)),
            "recordings_several_faces": float(len(self.several_faces)),
            "crop_fps": self.frames / self.seconds if self.seconds > 0 else 0.0,
        }


def crop_identity(cfg: CropConfig, raw_root: Path, identity: str, out: Path) -> CropSummary:
    """Write ``out/ori_imgs.zip`` (frame archive of ``<i>.jpg``), ``out/aud.wav`` and ``out/clips.parquet``.

    ``out`` should be a fresh (temporary) folder: the caller renames it into
    place when this returns, so a failure leaves no partial output.
    """
    started = time.perf_counter()
    validate_name(identity, "identity")
    raw_root = Path(raw_root)
    found = recordings(cfg.data.source, raw_root, identity)
    dropped: list[tuple[str, str]] = []
    checked: list[tuple[Recording, SourceInfo]] = []
    for recording in found:  # every file is validated before any heavy work
        try:
            checked.append((recording, check_recording(recording.video, recording.audio, cfg.min_duration_s)))
        except (RecordingSkipped, BadRecordingError) as problem:
            _drop(problem, recording, dropped, cfg.skip_unreadable)

    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    several: list[str] = []
    expected = sum(int(round((s.duration or 0.0) * FPS)) for _, s in checked)
    next_index = 0
    with FaceDetector(cfg.min_confidence) as detector, WavAppender(out / "aud.wav") as wav, \
            FrameArchiveWriter(out / "ori_imgs.zip", ".jpg") as archive, \
            tqdm(total=expected, desc=f"crop {identity}", unit="frame") as progress:
        for recording, source in checked:
            try:
                with archive.staged():  # a recording that fails half-way leaves none of its frames
                    row, audio, scan = _crop_recording(cfg, recording, source, detector, archive, next_index,
                                                       progress)
            except (RecordingSkipped, BadRecordingError) as problem:
                _drop(problem, recording, dropped, cfg.skip_unreadable)
                continue
            wav.append(audio)
            row["source"] = _relative(recording.video, raw_root)
            row["truth"] = _relative(recording.truth, raw_root) if recording.truth is not None else None
            rows.append(row)
            next_index = row["last_frame"] + 1
            if scan.several_faces:
                several.append(row["source"])
    if not rows:
        reasons = "; ".join(why for _, why in dropped[:5])
        more = f"; and {len(dropped) - 5} more (see the warnings above)" if len(dropped) > 5 else ""
        raise BadRecordingError(f"no usable recording of identity {identity!r} in {raw_root}: {reasons}{more}")
    clips = pd.DataFrame(rows, columns=list(CLIP_COLUMNS))
    clips.to_parquet(out / "clips.parquet", index=False)
    summary = CropSummary(clips, dropped, several, time.perf_counter() - started)
    log.info("crop %s: %d recordings, %d frames (%.1f s), %d dropped, %.0f frames/s", identity, len(clips),
             summary.frames, summary.frames / FPS, len(dropped), summary.metrics()["crop_fps"])
    return summary


def _crop_recording(cfg: CropConfig, recording: Recording, source: SourceInfo, detector: FaceDetector,
                    archive: FrameArchiveWriter, first_index: int, progress) -> tuple[dict, np.ndarray, FaceScan]:
    scan = scan_faces(source, detector, cfg.detection_stride)
    seconds = float(scan.duration)
    if seconds < cfg.min_duration_s:
        raise RecordingSkipped(f"{source.video}: {scan.n_frames} frames = {seconds:.2f} s, shorter than "
                               f"crop.min_duration_s = {cfg.min_duration_s:g} s")
    if len(scan.boxes) == 0:
        raise RecordingSkipped(f"{source.video}: no face in any of the {scan.sampled} frames examined")
    if len(scan.boxes) < scan.sampled:
        log.info("%s: a face in %d of %d frames examined; the crop box comes from those", source.video,
                 len(scan.boxes), scan.sampled)
    if scan.several_faces:
        log.warning("%s: %d of %d frames examined show several faces; following the largest, most central one",
                    source.video, scan.several_faces, scan.sampled)
    box = crop_box(scan.boxes, source.width, source.height, cfg.margin, cfg.shift_down, cfg.image_size)
    upscale = cfg.image_size / box.size
    if upscale > cfg.max_upscale:
        raise BadRecordingError(
            f"{source.video}: {source.width}x{source.height} px is too small: the face crop is {box.size} px and "
            f"would be enlarged {upscale:.1f}x to crop.image_size = {cfg.image_size} (crop.max_upscale = "
            f"{cfg.max_upscale:g}); use a higher-resolution recording or a smaller crop.image_size")
    if upscale > 1.0:
        log.warning("%s: %dx%d px gives a %d px crop, enlarged %.2fx to %d px; frames will look soft",
                    source.video, source.width, source.height, box.size, upscale, cfg.image_size)
    schedule = time_schedule(scan.times, scan.end)
    audio = aligned_audio(source, len(schedule), scan.times[0])
    write_frames(source, box, schedule, archive, first_index, cfg.image_size, cfg.jpeg_quality, cfg.workers,
                 progress)
    row = {
        "clip": recording.clip, "kind": recording.kind, "emotion": recording.emotion, "level": recording.level,
        "sentence": recording.sentence, "first_frame": first_index, "last_frame": first_index + len(schedule) - 1,
        "source_fps": source.fps, "crop_x0": box.x0, "crop_y0": box.y0, "crop_size": box.size,
        "image_size": cfg.image_size,
    }
    return row, audio, scan


def _drop(problem: Exception, recording: Recording, dropped: list[tuple[str, str]], skip_unreadable: bool) -> None:
    if isinstance(problem, BadRecordingError) and not skip_unreadable:
        raise problem
    hint = "" if isinstance(problem, RecordingSkipped) else " (crop.skip_unreadable is on)"
    log.warning("dropping recording %s: %s%s", recording.clip, problem, hint)
    dropped.append((str(recording.video), str(problem)))


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()
