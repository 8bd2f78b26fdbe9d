"""Side-by-side videos of an evaluation: rendered | ground truth, with the driving audio muxed in."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

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


class SideBySide:
    """One mp4 per role: every driving clip in order, rendered beside its ground truth (when there is one).

    The audio of all clips is known before rendering starts, so it is written
    once and muxed while frames stream in; nothing accumulates in memory.
    A middle frame of the first clip is kept as a JPEG sample.
    """

    def __init__(self, path: Path, drivings: list[Driving], image_size: int, method: str, with_truth: bool) -> None:
        self.path, self.method, self.with_truth = Path(path), method, with_truth
        self._tmp = tempfile.TemporaryDirectory(prefix="talkhead-video-")
        audio_path = Path(self._tmp.name) / "audio.wav"
        audio = np.concatenate([d.audio for d in drivings]) if drivings else np.zeros(0, np.float32)
        write_audio(audio_path, audio, SAMPLE_RATE)
        width = image_size * (2 if with_truth else 1)
        self.writer = VideoWriter(self.path, width, image_size, FPS, audio_path=audio_path)
        self.sample: np.ndarray | None = None

    def __call__(self, driving: Driving, rendered: np.ndarray, truth: np.ndarray | None) -> None:
        caption = f"{self.method} ({driving.audio_identity} {driving.clip})"
        for index, frame in enumerate(rendered):
            tile = labelled(frame, caption)
            if self.with_truth and truth is not None:
                tile = np.concatenate([tile, labelled(truth[index], "ground truth")], axis=1)
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
