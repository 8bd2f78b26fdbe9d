"""The speed stage's like-with-like FPS comparisons (``reports/metrics/speed.json``), read for the claims.

The FPS in the metric records come from separate evaluate processes, run
minutes or hours apart on a shared machine, so their ratio says as much
about the machine's load as about the methods. The speed stage loads both
models of a pair into one process and times them alternately on the same
frames; this module reads its file::

    {"hardware": str, "threads": int,
     "pairs": [{"identity": "S001", "a": "<method>", "b": "<method>", "resolution": [H, W], "frames": int,
                "repetitions": int, "fps_a": [float per repetition], "fps_b": [...]}],
     "skipped": [{"a", "b", "reason"}]}    (optional)

Repetition i of ``a`` and of ``b`` ran back to back, so they pair by index.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from talkhead_models.config import ConfigError, validate_name

log = logging.getLogger(__name__)


class SpeedError(ValueError):
    """A speed file that does not follow the format above; the message names the file."""


@dataclass(frozen=True)
class SpeedPair:
    """Two methods timed alternately on one identity's frames."""

    identity: str
    a: str
    b: str
    resolution: tuple[int, int]
    frames: int
    repetitions: int
    fps_a: tuple[float, ...]
    fps_b: tuple[float, ...]

    def oriented(self, a: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(FPS of ``a``, FPS of the other method), whichever side ``a`` was timed on."""
        return (self.fps_a, self.fps_b) if a == self.a else (self.fps_b, self.fps_a)

    def describe(self) -> str:
        return (f"{self.identity}, {self.repetitions} alternated repetitions of {self.frames} frames at "
                f"{self.resolution[0]}x{self.resolution[1]}")


@dataclass(frozen=True)
class SpeedRecord:
    """The whole speed file."""

    hardware: str
    threads: int
    pairs: tuple[SpeedPair, ...]
    skipped: tuple[tuple[str, str, str], ...] = ()
    """(a, b, reason) of pairs the stage could not time."""
    source: Path | None = None

    def between(self, a: str, b: str) -> list[SpeedPair]:
        """The timed pairs of methods ``a`` and ``b`` (in either order), by identity."""
        return sorted((p for p in self.pairs if {p.a, p.b} == {a, b} and a != b), key=lambda p: p.identity)

    def skip_reason(self, a: str, b: str) -> str | None:
        return next((reason for x, y, reason in self.skipped if {x, y} == {a, b}), None)

    def describe(self) -> str:
        return f"{self.hardware}, {self.threads} threads"


def _field(data: Mapping, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise SpeedError(f"{where}: '{key}' is missing")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SpeedError(f"{where}: '{key}' should be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _fps(values: Any, count: int, where: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise SpeedError(f"{where}: should be a list of numbers, got {values!r}")
    if len(values) != count:
        raise SpeedError(f"{where}: {len(values)} values for {count} repetitions")
    return tuple(float(v) for v in values)


def parse_speed(data: Any, path: Path | None = None) -> SpeedRecord:
    """A :class:`SpeedRecord` from the file's JSON; format violations raise :class:`SpeedError` naming ``path``."""
    name = str(path) if path is not None else "speed record"
    if not isinstance(data, Mapping):
        raise SpeedError(f"{name}: expected a JSON object, got {type(data).__name__}")
    pairs = []
    for index, item in enumerate(_field(data, "pairs", list, name)):
        where = f"{name}: pairs[{index}]"
        if not isinstance(item, Mapping):
            raise SpeedError(f"{where}: expected an object")
        names = {key: _field(item, key, str, where) for key in ("identity", "a", "b")}
        try:
            for key, value in names.items():
                validate_name(value, key)
        except ConfigError as error:
            raise SpeedError(f"{where}: {error}") from None
        resolution = _field(item, "resolution", list, where)
        if len(resolution) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in resolution):
            raise SpeedError(f"{where}: 'resolution' should be [H, W], got {resolution!r}")
        repetitions = _field(item, "repetitions", int, where)
        pairs.append(SpeedPair(names["identity"], names["a"], names["b"], (resolution[0], resolution[1]),
                               _field(item, "frames", int, where), repetitions,
                               _fps(item.get("fps_a"), repetitions, f"{where}.fps_a"),
                               _fps(item.get("fps_b"), repetitions, f"{where}.fps_b")))
    skipped = tuple((str(s.get("a", "")), str(s.get("b", "")), str(s.get("reason", "")))
                    for s in data.get("skipped") or () if isinstance(s, Mapping))
    return SpeedRecord(str(_field(data, "hardware", str, name)), _field(data, "threads", int, name), tuple(pairs),
                       skipped, path)


def load_speed(path: str | Path | None) -> SpeedRecord | None:
    """The speed file, or None when there is none (the speed stage has not run)."""
    if path is None or not Path(path).is_file():
        return None
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SpeedError(f"{path}: not valid JSON ({error}); re-run the speed stage") from None
    record = parse_speed(data, path)
    log.info("read %d speed comparisons from %s", len(record.pairs), path)
    return record
