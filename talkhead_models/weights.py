"""The local weights folder: pretrained files the papers use, never downloaded (docs/WEIGHTS.md)."""

from __future__ import annotations

import os
from pathlib import Path


def weights_dir(path: str | Path | None = None) -> Path:
    """``path`` when given, else ``$TALKHEAD_WEIGHTS``, else ``./weights``."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("TALKHEAD_WEIGHTS", "weights"))
