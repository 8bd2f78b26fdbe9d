"""Side-by-side videos of an evaluation: rendered | ground truth, with the driving audio muxed in.

In the cross-expression setting: audio source | expression source | rendered, the real frames of the clip whose
audio drives the lips, of the clip whose expression the render should take, and the render.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from talkhead_models.data.processed import FPS, SAMPLE_RATE
from talkhead_models.media import VideoWriter, write_audio
from talkhead_models.methods.base import Driving

log = logging.getLogger(__name__)


def labelled(frame: np.ndarray, text: str) -> np.ndarray:
    """The frame with a small caption in its top-left corner (white on a dark box, readable on any background)."""
    out = np.ascontiguousarray(frame).copy()
    scale = max(out.shape[0] / 512.0, 0.35)
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (width + 8, height + 10), (0, 0, 0), thickness=-1)
    cv2.putText(out, text, (4, height + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _short(clip: str) -> str:
    """``sad/level_3/005`` -> ``sad/005``: a caption that fits a tile as narrow as the frames."""
    parts = clip.split("/")
    return f"{parts[0]}/{parts[-1]}" if len(parts) == 3 else clip


class SideBySide:
    """One mp4 per role: every driving clip in order, rendered beside its ground truth (when there is one).

    The audio of all clips is known before rendering starts, so it is written
    once and muxed while frames stream in; nothing accumulates in memory.
    A middle frame of the first clip is kept as a JPEG sample.

    With ``expression_source`` (a reader of the identity's real frames by index) each tile is the audio source's
    real frame (the ground truth the sink is handed), the expression source's (``Driving.expression_frames``) and
    the render, in that order: the cross-expression setting, which has no single ground truth.
    """

    def __init__(self, path: Path, drivings: list[Driving], image_size: int, method: str, with_truth: bool,
                 expression_source: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.path, self.method, self.with_truth = Path(path), method, with_truth
        self.expression_source = expression_source
        self._tmp = tempfile.TemporaryDirectory(prefix="talkhead-video-")
        audio_path = Path(self._tmp.name) / "audio.wav"
        audio = np.concatenate([d.audio for d in drivings]) if drivings else np.zeros(0, np.float32)
        write_audio(audio_path, audio, SAMPLE_RATE)
        width = image_size * (3 if expression_source is not None else 2 if with_truth else 1)
        self.writer = VideoWriter(self.path, width, image_size, FPS, audio_path=audio_path)
        self.sample: np.ndarray | None = None

    def __call__(self, driving: Driving, rendered: np.ndarray, truth: np.ndarray | None) -> None:
        if self.expression_source is not None:
            self._three_way(driving, rendered, truth)
            return
        caption = f"{self.method} ({driving.audio_identity} {driving.clip})"
        for index, frame in enumerate(rendered):
            tile = labelled(frame, caption)
            if self.with_truth and truth is not None:
                tile = np.concatenate([tile, labelled(truth[index], "ground truth")], axis=1)
            if self.sample is None and index == len(rendered) // 2:
                self.sample = tile
            self.writer.write(tile)

    def _three_way(self, driving: Driving, rendered: np.ndarray, audio_source: np.ndarray | None) -> None:
        if audio_source is None or driving.expression_frames is None:
            raise ValueError(f"{self.path.name}: a cross-expression tile needs the audio source's frames and the "
                             f"driving's expression_frames ({driving.clip})")
        expression_source = self.expression_source(driving.expression_frames)
        captions = (f"audio: {_short(driving.clip)}", f"expression: {_short(driving.expression_clip)}", self.method)
        for index, frame in enumerate(rendered):
            tile = np.concatenate([labelled(image, caption) for image, caption in
                                   zip((audio_source[index], expression_source[index], frame), captions)], axis=1)
            if self.sample is None and index == len(rendered) // 2:
                self.sample = tile
            self.writer.write(tile)

    def close(self, sample_path: Path | None = None) -> None:
        """Finish the mp4 (or remove it when nothing was rendered) and write the sample frame."""
        try:
            if self.writer.frames_written == 0:
                self.writer.__exit__(RuntimeError, None, None)  # kill ffmpeg; an empty video is no output
                self.path.unlink(missing_ok=True)
            else:
                self.writer.close()
                if sample_path is not None and self.sample is not None:
                    cv2.imwrite(str(sample_path), cv2.cvtColor(self.sample, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 90])
        finally:
            self._tmp.cleanup()
