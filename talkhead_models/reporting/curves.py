"""Training curves: validation PSNR against wall-clock seconds, per (method, identity).

Training stages write ``<models folder>/<method>/<identity>/curve.csv`` with
columns ``step, seconds, loss, val_psnr`` (``val_psnr`` empty on steps
without validation). The report gathers the rows with a validation PSNR
into one long table, the data of the "PSNR vs wall time" plot.

Two curves measure the same thing only when they were validated on the same
frames at the same resolution. The trainer says which in the ``train.json``
beside the curve: ``validation_frames`` (frame indices) and
``validation_resolution`` ([H, W]); a curve without them is not comparable
with another method's (:meth:`Curve.comparable_with`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from talkhead_models.checkpoints import CURVE_COLUMNS, CURVE_FILE
from talkhead_models.config import NAME_PATTERN
from talkhead_models.runs import split_seed
from talkhead_models.training_summary import TRAINING_SUMMARY

log = logging.getLogger(__name__)

SUMMARY_FILE = TRAINING_SUMMARY
"""The train stage's summary beside the curve."""
VALIDATION_KEYS = ("validation_frames", "validation_resolution")
"""train.json keys that say what a curve's validation PSNR was measured on."""
PLOT_COLUMNS = ("method", "identity", "seconds", "val_psnr")


@dataclass(frozen=True)
class Curve:
    """Validation PSNR over training wall time for one (method, identity)."""

    method: str
    identity: str
    seconds: tuple[float, ...]
    val_psnr: tuple[float, ...]
    validation_frames: tuple[int, ...] | None = None
    """The frames the validation PSNR averages (train.json); None when the trainer did not record them."""
    validation_resolution: tuple[int, int] | None = None
    """[H, W] the validation frames were rendered at (train.json); None when not recorded."""

    def validation_text(self) -> str:
        if self.validation_frames is None or self.validation_resolution is None:
            missing = [key for key, value in zip(VALIDATION_KEYS, (self.validation_frames,
                                                                  self.validation_resolution)) if value is None]
            return f"{self.method}'s train.json records no {' or '.join(missing)}"
        height, width = self.validation_resolution
        return f"{self.method}: {len(self.validation_frames)} validation frames at {height}x{width}"

    def comparable_with(self, other: "Curve") -> bool:
        """Both curves validated on the same frames at the same resolution (and both say so)."""
        known = None not in (self.validation_frames, self.validation_resolution, other.validation_frames,
                             other.validation_resolution)
        return known and (self.validation_frames, self.validation_resolution) == (other.validation_frames,
                                                                                  other.validation_resolution)

    def best(self) -> float | None:
        return max(self.val_psnr) if self.val_psnr else None

    def first_reaching(self, psnr: float) -> float | None:
        """Seconds at the first validation with PSNR >= ``psnr``; None if it never gets there."""
        return next((s for s, p in zip(self.seconds, self.val_psnr) if p >= psnr), None)


def _number(text: str, path: Path, line: int, column: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: {column} {text!r} is not a number; re-run the training stage that "
                         "wrote it") from None


def read_curve(path: Path, method: str, identity: str) -> Curve:
    """One curve.csv; rows without ``val_psnr`` are skipped, bad numbers raise naming the file and line."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("seconds", "val_psnr") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {', '.join(CURVE_COLUMNS)}")
        points = []
        for line, row in enumerate(reader, start=2):
            psnr = _number(row["val_psnr"], path, line, "val_psnr")
            seconds = _number(row["seconds"], path, line, "seconds")
            if psnr is not None and seconds is not None and not math.isnan(psnr):
                points.append((seconds, psnr))
    points.sort()
    frames, resolution = _validation_setup(path.parent / SUMMARY_FILE)
    return Curve(method, identity, tuple(s for s, _ in points), tuple(p for _, p in points), frames, resolution)


def _validation_setup(path: Path) -> tuple[tuple[int, ...] | None, tuple[int, int] | None]:
    """(validation frames, [H, W]) from a train.json, each None when absent or malformed (logged)."""
    if not path.is_file():
        return None, None
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        log.warning("%s: not valid JSON (%s); its curve counts as not comparable", path, error)
        return None, None
    frames, resolution = summary.get(VALIDATION_KEYS[0]), summary.get(VALIDATION_KEYS[1])
    if not (isinstance(frames, list) and all(isinstance(f, int) for f in frames)):
        frames = None
    if not (isinstance(resolution, list) and len(resolution) == 2 and all(isinstance(v, int) for v in resolution)):
        resolution = None
    return (None if frames is None else tuple(frames)), (None if resolution is None else tuple(resolution))


def load_curves(folder: str | Path | None) -> list[Curve]:
    """Every ``<method>/<identity>/curve.csv`` under ``folder`` (seed 0's; ``<identity>.seed<k>/`` folders are
    skipped); none (or no folder) is an empty list."""
    if folder is None or not Path(folder).is_dir():
        return []
    curves = []
    for path in sorted(Path(folder).glob(f"*/*/{CURVE_FILE}")):
        method, identity = path.parent.parent.name, path.parent.name
        if split_seed(identity)[1] is not None:
            # Another seed of a run (talkhead_models.runs): the plot and the curve claims follow seed 0.
            log.debug("%s: seed k > 0, not plotted", path)
            continue
        if not (NAME_PATTERN.fullmatch(method) and NAME_PATTERN.fullmatch(identity)):
            log.warning("%s: skipped (method and identity folders must match [A-Za-z0-9_-]+)", path)
            continue
        curves.append(read_curve(path, method, identity))
    log.info("read %d training curves from %s", len(curves), folder)
    return curves


def psnr_vs_time_csv(curves: list[Curve]) -> str:
    """The long table ``method, identity, seconds, val_psnr`` (only the header when there are no curves)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PLOT_COLUMNS)
    for curve in curves:
        for seconds, psnr in zip(curve.seconds, curve.val_psnr):
            writer.writerow((curve.method, curve.identity, f"{seconds:.3f}", f"{psnr:.4f}"))
    return buffer.getvalue()
