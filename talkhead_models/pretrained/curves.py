"""What every pretrain stage writes beside its model: training curves (DVC plots, MLflow artifacts), config,
metrics, the segments it trained on, its data audit and the manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from talkhead_models.config import to_dict
from talkhead_models.data.manifest import write_manifest
from talkhead_models.pretrained.datasets import SEGMENT_COLUMNS, holdout_identity

CURVES_FILE = "curves.csv"
"""Per-step training rows."""
VALIDATION_FILE = "validation.csv"
"""Per-pass validation rows."""


def write_curves(folder: Path, history: list[dict], validation: list[dict]) -> None:
    """``history`` into ``folder``/curves.csv and ``validation`` into ``folder``/validation.csv."""
    pd.DataFrame(history).to_csv(Path(folder) / CURVES_FILE, index=False)
    pd.DataFrame(validation).to_csv(Path(folder) / VALIDATION_FILE, index=False)


def write_model_folder(folder: Path, cfg: Any, stage: str, identities: Sequence[str], metrics: Mapping[str, Any],
                       history: list[dict], validation: list[dict], segments: pd.DataFrame, audit: pd.DataFrame,
                       extra_config: Mapping[str, Any] | None = None) -> None:
    """The files common to every pretrain stage's model folder: ``config.json`` (the stage's config, the corpus's
    identities, the held-out one and ``extra_config``), ``metrics.json``, the curves, ``segments.csv``,
    ``data_audit.csv`` and, last, the manifest of everything in ``folder`` (write the stage's own files first)."""
    folder = Path(folder)
    names = list(identities)
    (folder / "config.json").write_text(json.dumps({**to_dict(cfg), "identities": names,
                                                    "holdout_identity": holdout_identity(names, cfg.pretrain),
                                                    **(extra_config or {})}, indent=1))
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    write_curves(folder, history, validation)
    segments[list(SEGMENT_COLUMNS)].to_csv(folder / "segments.csv", index=False)
    audit.to_csv(folder / "data_audit.csv", index=False)
    write_manifest(folder, to_dict(cfg), stage)
