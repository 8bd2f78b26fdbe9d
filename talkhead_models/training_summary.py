"""The train stage's summary file, named in one light module: the train stage writes it, evaluation and the
reports read it, and none of them needs the others' imports for that."""

from __future__ import annotations

TRAINING_SUMMARY = "train.json"
"""Written into every model folder by the train stage: seconds, hardware, iterations (what the trainer returns)."""
