"""Test helpers that edit frame archives with zipfile and cv2 only (not the code under test)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np


def read_member(archive: Path, index: int, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Frame ``index`` of ``archive`` as cv2 decodes it (BGR order)."""
    with zipfile.ZipFile(archive) as frames:
        name = next(n for n in frames.namelist() if n.split(".")[0] == str(index))
        return cv2.imdecode(np.frombuffer(frames.read(name), np.uint8), flags)


def replace_frames(archive: Path, images: Mapping[int, np.ndarray]) -> None:
    """Rewrite ``archive`` with frames ``images`` (cv2 BGR order) re-encoded in place of the stored ones."""
    archive = Path(archive)
    with zipfile.ZipFile(archive) as frames:
        stored = [(name, frames.read(name)) for name in frames.namelist()]
    rewritten = archive.with_suffix(".tmp")
    with zipfile.ZipFile(rewritten, "w", zipfile.ZIP_STORED) as frames:
        for name, data in stored:
            index, suffix = name.split(".")
            if int(index) in images:
                data = cv2.imencode(f".{suffix}", images[int(index)])[1].tobytes()
            frames.writestr(name, data)
    rewritten.replace(archive)
