"""Crop folders built from the tiny synthetic corpus, and the landmark and parse stages run on them once.

The crop box is the whole source frame (crop_x0 = crop_y0 = 0, crop_size =
image_size) and the corpus runs at 25 fps, so processed frame i of a recording
is source frame i and the ground truth applies pixel for pixel.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd
import pytest

from talkhead_models.data.processed import CLIP_COLUMNS
from talkhead_models.data.sources import recordings
from talkhead_models.media import iter_frames

FrameEdit = Callable[[int, int, np.ndarray], np.ndarray]
"""(recording index, frame index within the recording, RGB frame) -> the frame to store."""


def build_crop_folder(corpus: Path, identity: str, out: Path, edit: FrameEdit | None = None) -> pd.DataFrame:
    """Write ``out/ori_imgs.zip`` and ``out/clips.parquet`` for ``identity``, as the crop stage would."""
    out.mkdir(parents=True)
    rows, index = [], 0
    archive = zipfile.ZipFile(out / "ori_imgs.zip", "w", zipfile.ZIP_STORED)  # the format, written without our code
    for number, recording in enumerate(recordings("synthetic", corpus, identity)):
        first = index
        for k, frame in enumerate(iter_frames(recording.video)):
            source_size = frame.shape[0]
            if edit is not None:
                frame = edit(number, k, frame)
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            archive.writestr(f"{index}.jpg", data.tobytes())
            index += 1
        rows.append({
            "clip": recording.clip, "kind": recording.kind, "emotion": recording.emotion,
            "level": recording.level, "sentence": recording.sentence, "first_frame": first,
            "last_frame": index - 1, "source": recording.video.relative_to(corpus).as_posix(),
            "truth": recording.truth.relative_to(corpus).as_posix(), "source_fps": 25.0,
            "crop_x0": 0, "crop_y0": 0, "crop_size": source_size, "image_size": frame.shape[0],
        })
    archive.close()
    clips = pd.DataFrame(rows, columns=list(CLIP_COLUMNS))
    clips.to_parquet(out / "clips.parquet", index=False)
    return clips


@pytest.fixture(scope="session")
def processed_root(tmp_path_factory, tiny_corpus) -> Path:
    """``data/processed``-like root with ``<ID>/crop`` for both tiny identities."""
    root = tmp_path_factory.mktemp("processed")
    for identity in ("S001", "S002"):
        build_crop_folder(tiny_corpus, identity, root / identity / "crop")
    return root


@pytest.fixture(scope="session")
def landmarks_done(processed_root) -> dict[str, dict[str, float]]:
    """Run the landmarks stage on every identity; returns its metrics per identity."""
    from stages import landmarks
    from talkhead_models.preprocess.landmarks import LandmarksConfig

    metrics = {}
    for identity in ("S001", "S002"):
        base = processed_root / identity
        result = landmarks.run(LandmarksConfig(), {"crop": base / "crop"}, {"landmarks": base / "landmarks"},
                               identity=identity)
        metrics[identity] = result.metrics
    return metrics


@pytest.fixture(scope="session")
def parse_done(processed_root, landmarks_done) -> dict[str, dict[str, float]]:
    """Run the parse stage on every identity after the landmarks; returns its metrics per identity."""
    from stages import parse
    from talkhead_models.preprocess.parsing import ParseConfig

    metrics = {}
    for identity in ("S001", "S002"):
        base = processed_root / identity
        result = parse.run(ParseConfig(), {"crop": base / "crop", "landmarks": base / "landmarks"},
                           {"parse": base / "parse"}, identity=identity)
        metrics[identity] = result.metrics
    return metrics


GREY = 128
DROPPED_RECORDING = 2  # the recording of S002 blanked entirely in ``dropped_recording``


def blank(frame: np.ndarray) -> np.ndarray:
    """A flat grey frame: no face in it."""
    return np.full_like(frame, GREY)


@pytest.fixture(scope="session")
def dropped_recording(tmp_path_factory, tiny_corpus) -> Path:
    """S002 with one recording showing no face at all, through the landmarks stage; returns the identity folder."""
    from stages import landmarks
    from talkhead_models.preprocess.landmarks import LandmarksConfig

    base = tmp_path_factory.mktemp("dropped") / "S002"
    build_crop_folder(tiny_corpus, "S002", base / "crop",
                      edit=lambda recording, k, frame: blank(frame) if recording == DROPPED_RECORDING else frame)
    landmarks.run(LandmarksConfig(), {"crop": base / "crop"}, {"landmarks": base / "landmarks"}, identity="S002")
    return base
