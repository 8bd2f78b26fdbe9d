"""The evaluation's metric records, loaded and averaged over identities.

One record per (method, identity), written by the evaluate stage as
``<metrics folder>/<method>/<identity>.json``::

    {"method": "r2talker_maglo", "family": "r2talker", "variant": "maglo", "identity": "S001",
     "profile": "demo", "hardware": "...",
     "settings": {"self":  {"frames": 120, "metrics": {"PSNR": <MetricValue.to_dict()>, ...}},
                  "cross": {"frames": 300, "metrics": {...}}}}

Tables show one row per (family, variant): the mean over identities of the
values that exist. An identity whose value is n/a is left out of the mean
and named in a footnote, so a mean over fewer identities is never passed
off as the full one.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from talkhead_models.config import ConfigError, validate_name
from talkhead_models.metrics.base import NOT_AVAILABLE, REFERENCE, MetricValue

log = logging.getLogger(__name__)

SETTINGS = ("self", "cross")
"""Self-driven (the identity's own held-out audio, ground-truth frames exist) and cross-driven (another voice)."""
REFERENCE_FAMILIES = ("ground_truth", "static")
"""Rows every table carries: the real frames (upper bound) and a still frame (what doing nothing scores)."""
TRAINED_FAMILIES = ("r2talker", "gstalker", "jean", "s3dnerf")
Key = tuple[str, str]
"""(family, variant); variant "" is the full method."""


class RecordError(ValueError):
    """A metric record that does not follow the contract; the message names the file."""


def method_name(family: str, variant: str) -> str:
    """The registered name a (family, variant) has by convention: ``r2talker`` or ``r2talker_maglo``."""
    return f"{family}_{variant}" if variant else family


@dataclass(frozen=True)
class SettingResult:
    """One driving setting of one record: how many frames were scored and the metric values."""

    frames: int
    metrics: Mapping[str, MetricValue]


@dataclass(frozen=True)
class MetricRecord:
    """The evaluation of one method on one identity."""

    method: str
    family: str
    variant: str
    identity: str
    profile: str
    hardware: str
    settings: Mapping[str, SettingResult]
    source: Path | None = None
    """The file it was read from (for error messages)."""

    @property
    def key(self) -> Key:
        return self.family, self.variant

    def metric(self, setting: str, name: str) -> MetricValue | None:
        """The value of ``name`` in ``setting``, or None when the record does not have it."""
        result = self.settings.get(setting)
        return None if result is None else result.metrics.get(name)


def _require(data: Mapping, key: str, kind: type | tuple[type, ...], path: Path, where: str = "") -> object:
    if key not in data:
        raise RecordError(f"{path}: {where}'{key}' is missing; re-run its evaluate stage (the record must follow "
                          "the contract in talkhead_models/reporting/records.py)")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise RecordError(f"{path}: {where}'{key}' should be {getattr(kind, '__name__', kind)}, got {value!r}; "
                          "re-run its evaluate stage")
    return value


def parse_record(data: Mapping, path: Path) -> MetricRecord:
    """A record from its JSON object; contract violations raise :class:`RecordError` naming ``path``."""
    if not isinstance(data, Mapping):
        raise RecordError(f"{path}: expected a JSON object, got {type(data).__name__}")
    fields = {key: _require(data, key, str, path) for key in ("method", "family", "variant", "identity")}
    try:
        for key in ("method", "family", "identity"):
            validate_name(fields[key], key)
        if fields["variant"]:
            validate_name(fields["variant"], "variant")
    except ConfigError as error:
        raise RecordError(f"{path}: {error}") from None
    raw_settings = _require(data, "settings", dict, path)
    unknown = sorted(set(raw_settings) - set(SETTINGS))
    if unknown:
        raise RecordError(f"{path}: unknown setting(s) {unknown}; use {list(SETTINGS)}")
    settings = {}
    for setting, body in raw_settings.items():
        where = f"settings.{setting}."
        if not isinstance(body, dict):
            raise RecordError(f"{path}: {where[:-1]} should be an object with 'frames' and 'metrics'")
        frames = _require(body, "frames", int, path, where)
        metrics = {}
        for name, metric in _require(body, "metrics", dict, path, where).items():
            try:
                value = MetricValue.from_dict(metric)
            except ValueError as error:
                raise RecordError(f"{path}: {where}metrics.{name}: {error}") from None
            if value.name != name:
                raise RecordError(f"{path}: {where}metrics.{name} holds a value named {value.name!r}")
            metrics[name] = value
        settings[setting] = SettingResult(frames=int(frames), metrics=metrics)
    return MetricRecord(method=fields["method"], family=fields["family"], variant=fields["variant"],
                        identity=fields["identity"], profile=str(data.get("profile", "")),
                        hardware=str(data.get("hardware", "")), settings=settings, source=path)


def read_record(path: Path) -> MetricRecord:
    """One ``<method>/<identity>.json``; its folder and file names must match what it says inside."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RecordError(f"{path}: not valid JSON ({error}); re-run its evaluate stage") from None
    record = parse_record(data, path)
    if (record.method, record.identity) != (path.parent.name, path.stem):
        raise RecordError(f"{path}: says method {record.method!r}, identity {record.identity!r} but is stored as "
                          f"{path.parent.name}/{path.name}; the file must be <method>/<identity>.json")
    return record


@dataclass(frozen=True)
class Aggregate:
    """One table cell of this run: a metric of one (family, variant) in one setting, over its identities."""

    value: MetricValue
    """The mean of the available values (reference label, notes and hardware merged); n/a when none exist."""
    identities: tuple[str, ...]
    """Every identity the (family, variant) was evaluated on."""
    missing: tuple[tuple[str, str], ...] = ()
    """(identity, reason) of the identities left out of the mean."""

    def footnotes(self, method: str) -> list[str]:
        """The cell's footnotes: the value's own (n/a, substitute, hardware), then the identities left out."""
        notes = [text for text in (self.value.footnote(),) if text]
        if self.missing and self.value.available:
            left_out = "; ".join(f"{identity}: {reason}" for identity, reason in self.missing)
            used = len(self.identities) - len(self.missing)
            notes.append(f"{self.value.name} of {method}: n/a on {left_out}; the cell is the mean over the other "
                         f"{used} of {len(self.identities)} identities")
        return notes


def _distinct(texts: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for text in texts:
        if text and text not in seen:
            seen.append(text)
    return seen


def average(name: str, values: Mapping[str, MetricValue | None]) -> Aggregate:
    """The mean over identities of ``values`` (identity -> value, None when the record lacks the metric)."""
    identities = tuple(values)
    present = [v for v in values.values() if v is not None]
    usable = {identity: v for identity, v in values.items()
              if v is not None and v.available and not math.isnan(v.value)}
    missing = []
    for identity, v in values.items():
        if identity in usable:
            continue
        if v is None:
            missing.append((identity, "not recorded"))
        elif v.available:
            missing.append((identity, "NaN"))
        else:
            missing.append((identity, v.note or NOT_AVAILABLE))
    first = present[0] if present else None
    unit = first.unit if first else ""
    higher = first.higher_is_better if first else True
    if not usable:
        reasons = "; ".join(_distinct(reason for _, reason in missing)) or "not measured"
        return Aggregate(MetricValue.not_available(name, reasons, unit=unit, higher_is_better=higher),
                         identities, tuple(missing))
    chosen = list(usable.values())
    substitutes = _distinct(v.reference for v in chosen if v.substituted)
    notes = _distinct(v.note for v in chosen if v.substituted)
    value = MetricValue(name=name, value=float(np.mean([v.value for v in chosen])), unit=unit,
                        reference=substitutes[0] if substitutes else REFERENCE, note="; ".join(notes),
                        higher_is_better=higher, hardware=" / ".join(_distinct(v.hardware for v in chosen)))
    return Aggregate(value, identities, tuple(missing))


@dataclass
class RecordSet:
    """All records of a run, grouped by (family, variant) in first-seen order."""

    records: list[MetricRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def keys(self) -> list[Key]:
        """The (family, variant) pairs with results: reference rows first, then by family and variant."""
        found = {record.key for record in self.records}
        family_order = {family: i for i, family in enumerate((*REFERENCE_FAMILIES, *TRAINED_FAMILIES))}
        return sorted(found, key=lambda key: (family_order.get(key[0], len(family_order)), key[0], key[1] != "",
                                              key[1]))

    def of(self, key: Key) -> list[MetricRecord]:
        return sorted((r for r in self.records if r.key == key), key=lambda r: r.identity)

    def has(self, key: Key) -> bool:
        return any(record.key == key for record in self.records)

    def method(self, key: Key) -> str:
        """The registered method name of ``key`` as the records give it (the convention when not run)."""
        names = _distinct(record.method for record in self.of(key))
        return " / ".join(names) if names else method_name(*key)

    def identities(self, key: Key) -> tuple[str, ...]:
        return tuple(record.identity for record in self.of(key))

    def aggregate(self, key: Key, setting: str, metric: str) -> Aggregate | None:
        """``metric`` of ``key`` in ``setting`` averaged over identities; None when ``key`` was not run."""
        records = self.of(key)
        if not records:
            return None
        return average(metric, {record.identity: record.metric(setting, metric) for record in records})

    def value(self, key: Key, metric: str, setting: str = "self") -> MetricValue | None:
        """The averaged value when it exists (not run or n/a -> None)."""
        aggregate = self.aggregate(key, setting, metric)
        return aggregate.value if aggregate is not None and aggregate.value.available else None

    def metric_names(self, setting: str) -> list[str]:
        """Every metric any record has in ``setting``, in first-seen order."""
        return _distinct(name for record in self.records if setting in record.settings
                         for name in record.settings[setting].metrics)

    def describe(self) -> str:
        """One line on what the run covers: profiles, identities and frames per setting."""
        if not self.records:
            return "no metric records yet"
        profiles = ", ".join(_distinct(record.profile for record in self.records)) or "unknown"
        identities = ", ".join(sorted({record.identity for record in self.records}))
        frames = []
        for setting in SETTINGS:
            counts = sorted({record.settings[setting].frames for record in self.records if setting in record.settings})
            if counts:
                span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
                frames.append(f"{setting}-driven {span} frames per identity")
        return f"profile {profiles}; identities {identities}; " + ", ".join(frames)


def load_records(folder: str | Path) -> RecordSet:
    """Every ``<method>/<identity>.json`` under ``folder`` (the evaluate stages' outputs)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: metrics folder not found; run the evaluate stages first")
    stray = sorted(p.name for p in folder.glob("*.json"))
    if stray:
        log.warning("%s: ignoring %s (records live in <method>/<identity>.json)", folder, stray)
    records = [read_record(path) for path in sorted(folder.glob("*/*.json"))]
    log.info("read %d metric records from %s", len(records), folder)
    return RecordSet(records)
