"""The corpus-level models' training curves as the pretrain stages write them (DVC plots, MLflow artifacts)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

CURVES_FILE = "curves.csv"
"""Per-step training rows."""
VALIDATION_FILE = "validation.csv"
"""Per-pass validation rows."""


def write_curves(folder: Path, history: list[dict], validation: list[dict]) -> None:
    """``history`` into ``folder``/curves.csv and ``validation`` into ``folder``/validation.csv."""
    pd.DataFrame(history).to_csv(Path(folder) / CURVES_FILE, index=False)
    pd.DataFrame(validation).to_csv(Path(folder) / VALIDATION_FILE, index=False)
