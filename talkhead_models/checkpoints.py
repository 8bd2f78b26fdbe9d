"""Checkpoints, resume and training curves shared by every trainer.

:class:`Checkpoints` owns a model folder's ``checkpoint.pt``:

* **when**: :meth:`Checkpoints.due` at every ``every``-th iteration and at least every ``seconds`` of wall
  clock, so a killed run loses at most that much work whatever the iteration count;
* **how**: written to a temporary file, flushed to disk and renamed into place, so a kill leaves the old
  checkpoint or the new one, never half of one; the one it replaces stays as ``checkpoint.previous.pt``;
* **resume**: :meth:`Checkpoints.load` reads the newest readable one. A file ``torch.load`` cannot read (a
  disk that filled up, a copy cut short) is named in a warning, moved aside to
  ``checkpoint.pt.bad-<time>`` and the previous one is tried, then none (training starts over). A
  readable checkpoint the trainer cannot continue (another architecture) is ignored with a warning, as
  before; the next save replaces it.
* :meth:`Checkpoints.finish`, once the model is complete, removes the previous and the moved-aside files, so
  the finished model folder holds one checkpoint.

``curve.csv`` (``step, seconds, loss, val_psnr``) is written and read back by :func:`write_curve` and
:func:`read_curve`: a resumed run keeps the rows up to its checkpoint and drops those written after it.

Everything a resumed run needs to continue exactly as an uninterrupted one (model, optimisers, RNG states, the
losses averaged into the next curve row) goes into the trainer's record; a checkpoint is written between
iterations and changes nothing in the training itself.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import torch

from talkhead_models.atomic import atomic_file, write_text

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_FILE = "checkpoint.previous.pt"
BAD_SUFFIX = ".bad-"
CURVE_FILE = "curve.csv"
"""A trainer's training curve in its model folder; the train stage logs it, the tables stage plots it."""
CURVE_COLUMNS = ("step", "seconds", "loss", "val_psnr")


class UnreadableCheckpoint(ValueError):
    """A checkpoint file that cannot be read or is not what its trainer writes."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``, any failure raised as :class:`UnreadableCheckpoint` naming it."""
    path = Path(path)
    try:
        record = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise UnreadableCheckpoint(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(record, dict):
        raise UnreadableCheckpoint(f"{path}: not a checkpoint (a {type(record).__name__}, not a dict)")
    return record


class LoadedCheckpoint(NamedTuple):
    path: Path
    record: dict[str, Any]


class Checkpoints:
    """The checkpoints of one model folder: when to save, atomic saves, resume with fallback (module docstring).

    ``clock`` (seconds, monotonic) is injectable so tests can move time without sleeping.
    """

    def __init__(self, folder: str | Path, every: int, seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = Path(folder)
        self.every, self.seconds, self.clock = max(int(every), 1), float(seconds), clock
        self._last_save = clock()

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    @property
    def previous(self) -> Path:
        return self.folder / PREVIOUS_FILE

    def due(self, iteration: int) -> bool:
        """Whether to save after ``iteration``: a multiple of ``every``, or ``seconds`` since the last save."""
        return iteration % self.every == 0 or self.clock() - self._last_save >= self.seconds

    def save(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` atomically; the checkpoint it replaces becomes the previous one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.path) as tmp:
            torch.save(dict(record), tmp)
            # Renamed before its data reaches the disk, a power cut could leave a complete name on empty data.
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            if self.path.exists():
                os.replace(self.path, self.previous)
        self._last_save = self.clock()

    def load(self, map_location: str | torch.device = "cpu",
             validate: Callable[[Mapping[str, Any]], None] | None = None,
             incompatible: Callable[[Mapping[str, Any]], str | None] | None = None) -> LoadedCheckpoint | None:
        """The newest checkpoint to resume from, or None to start over.

        ``validate(record)`` raises (KeyError, ValueError, TypeError) for a record that is not one this trainer
        writes: it counts as unreadable and is moved aside. ``incompatible(record)`` says why a readable
        checkpoint cannot be continued (e.g. "was made with another architecture"): it is left in place and
        training starts over.
        """
        candidates = [path for path in (self.path, self.previous) if path.is_file()]
        for number, path in enumerate(candidates):
            try:
                record = read_checkpoint(path, map_location)
                if validate is not None:
                    try:
                        validate(record)
                    except (KeyError, ValueError, TypeError) as error:
                        raise UnreadableCheckpoint(f"{path}: not a checkpoint of this trainer ({error})") from error
            except UnreadableCheckpoint as error:
                aside = self._move_aside(path)
                fallback = candidates[number + 1] if number + 1 < len(candidates) else None
                log.warning("%s; moved it to %s and %s", error, aside.name,
                            f"resuming from {fallback}" if fallback else "training from the start")
                continue
            reason = incompatible(record) if incompatible is not None else None
            if reason:
                log.warning("%s %s; training from the start", path, reason)
                return None
            return LoadedCheckpoint(path, record)
        return None

    def _move_aside(self, path: Path) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = path.with_name(f"{path.name}{BAD_SUFFIX}{stamp}")
        number = 1
        while aside.exists():
            number += 1
            aside = path.with_name(f"{path.name}{BAD_SUFFIX}{stamp}-{number}")
        os.replace(path, aside)
        return aside

    def finish(self) -> None:
        """The model is complete: drop the previous checkpoint and those moved aside."""
        for path in [self.previous, *self.folder.glob(f"*{BAD_SUFFIX}*")]:
            if path.is_file():
                path.unlink()
                log.debug("removed %s", path)


# --------------------------------------------------------------------------- curve.csv


@dataclass
class CurveRow:
    """One row of ``curve.csv``: mean training loss since the previous row and, when validated, the PSNR."""

    step: int
    seconds: float
    loss: float
    val_psnr: float | None = None

    def as_list(self) -> list[float]:
        """Plain numbers for a weights-only checkpoint (no PSNR: NaN)."""
        return [float(self.step), self.seconds, self.loss, math.nan if self.val_psnr is None else self.val_psnr]

    @classmethod
    def from_list(cls, values: Iterable[float]) -> "CurveRow":
        step, seconds, loss, psnr = values
        psnr = None if psnr is None or math.isnan(float(psnr)) else float(psnr)
        return cls(int(step), float(seconds), float(loss), psnr)

    def as_csv(self) -> list[str]:
        return [str(self.step), f"{self.seconds:.3f}", f"{self.loss:.6g}",
                "" if self.val_psnr is None else f"{self.val_psnr:.4f}"]


def write_curve(path: str | Path, rows: Iterable[CurveRow]) -> None:
    """Atomically write ``curve.csv``."""
    lines = [",".join(CURVE_COLUMNS)] + [",".join(row.as_csv()) for row in rows]
    write_text(path, "\n".join(lines) + "\n")


def read_curve(path: str | Path, until_step: int) -> list[CurveRow]:
    """The rows of an earlier run up to the checkpoint it resumes from (later rows were not saved with it)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as handle:
        for line, record in enumerate(csv.DictReader(handle), start=2):
            try:
                step = int(record["step"])
                if step <= until_step:
                    psnr = record.get("val_psnr") or ""
                    rows.append(CurveRow(step, float(record["seconds"]), float(record["loss"]),
                                         float(psnr) if psnr else None))
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}:{line}: not a {','.join(CURVE_COLUMNS)} row ({error}); delete "
                                 "the file to start the curve again") from error
    return rows
