"""Training curves: validation PSNR against wall-clock seconds, per (method, identity).

Training stages write ``<models folder>/<method>/<identity>/curve.csv`` with
columns ``step, seconds, loss, val_psnr`` (``val_psnr`` empty on steps
without validation). The report gathers the rows with a validation PSNR
into one long table, the data of the "PSNR vs wall time" plot.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from talkhead_models.config import NAME_PATTERN

log = logging.getLogger(__name__)

CURVE_FILE = "curve.csv"
CURVE_COLUMNS = ("step", "seconds", "loss", "val_psnr")
PLOT_COLUMNS = ("method", "identity", "seconds", "val_psnr")


@dataclass(frozen=True)
class Curve:
    """Validation PSNR over training wall time for one (method, identity)."""

    method: str
    identity: str
    seconds: tuple[float, ...]
    val_psnr: tuple[float, ...]

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
    return Curve(method, identity, tuple(s for s, _ in points), tuple(p for _, p in points))


def load_curves(folder: str | Path | None) -> list[Curve]:
    """Every ``<method>/<identity>/curve.csv`` under ``folder``; none (or no folder) is an empty list."""
    if folder is None or not Path(folder).is_dir():
        return []
    curves = []
    for path in sorted(Path(folder).glob(f"*/*/{CURVE_FILE}")):
        method, identity = path.parent.parent.name, path.parent.name
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
