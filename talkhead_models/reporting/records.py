"""The evaluation's metric records, loaded, averaged over identities and seeds, and paired frame by frame.

One record per (method, identity, seed), written by the evaluate stage as
``<metrics folder>/<method>/<identity>.json`` (a retrained seed k > 0 may
sit beside it as ``<identity>.seed<k>.json``)::

    {"method": "r2talker_maglo", "family": "r2talker", "variant": "maglo", "identity": "S001",
     "seed": 0, "profile": "demo", "hardware": "...", "demo_aids": ["a2m audio", ...],
     "settings": {"self":  {"frames": 120, "metrics": {"PSNR": <MetricValue.to_dict()>, ...}},
                  "cross": {"frames": 300, "metrics": {...}},
                  "cross_expression": {"frames": 100, "metrics": {...}}},
     "training": {<the trainer's train.json: seconds, iterations, hardware, ...>},
     "inputs_digest": "<sha256 hex>"}

``seed`` defaults to 0 (the pipeline's own run; reference rows have none);
``demo_aids`` absent means the record predates it (not "no aids").
``inputs_digest`` (:func:`talkhead_models.provenance.inputs_digest` of the
code, the config without its seed and the input data the record was made
from) may be absent or null in records written before it existed.

Seeds are averaged only when they were made from the same inputs: for each
(method, identity) the record of the lowest seed is the reference, and a
record of another seed is kept only when both carry an ``inputs_digest`` and
the two are equal. Any other is left out of every mean and comparison, and
:attr:`RecordSet.left_out` says which and why (the tables show it as a
footnote of the row); otherwise a seed retrained long ago would be averaged
with a seed 0 made by newer code, config or data.

Tables show one row per (family, variant): the mean over identities of the
values that exist. An identity whose value is n/a is left out of the mean
and named in a footnote, so a mean over fewer identities is never passed
off as the full one. With several seeds the cell is the mean over seeds of
those means, with their standard deviation.

:meth:`RecordSet.paired` lines up two runs' per-frame (or per-clip) values
for an interval: the self-driven test frames of an identity are the same
frames for every run (same split, same ``max_self_frames``), so they pair by
index; records whose counts differ are not paired.
:meth:`RecordSet.paired_within` lines up two metrics of one run on the same
frames (Exp-Diff against the expression source and against the audio source
in the cross-expression setting), for an interval within the run.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from talkhead_models.config import ConfigError, validate_name
from talkhead_models.methods.base import REFERENCE_FAMILIES
from talkhead_models.metrics.base import NOT_AVAILABLE, REFERENCE, MetricValue
from talkhead_models.runs import split_seed

log = logging.getLogger(__name__)

CROSS_EXPRESSION = "cross_expression"
SETTINGS = ("self", "cross", CROSS_EXPRESSION)
"""Self-driven (the identity's own held-out audio, ground-truth frames exist), cross-driven (another voice) and
cross-expression (JEAN's: the audio of one held-out clip, the expression of another clip of the same sentence in
another emotion; methods with an expression source and the reference rows only)."""
TRAINED_FAMILIES = ("r2talker", "gstalker", "jean", "s3dnerf")
Key = tuple[str, str]
"""(family, variant); variant "" is the full method."""
SPEED_FILE = "speed.json"
"""The speed stage's file in the metrics folder (not a metric record; reporting.speed reads it)."""


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
    clips: tuple[tuple[str, str, int], ...] | None = None
    """(clip, audio identity, frames) of each driving clip in order, when the record lists them: two runs'
    values pair frame by frame only over the same clips."""


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
    seed: int = 0
    """The training seed of the run (0: the pipeline's own run, and every reference row)."""
    demo_aids: tuple[str, ...] | None = None
    """Labels of the demo aids the run's config uses; None when the record does not say (written before aids were
    recorded)."""
    training: Mapping = field(default_factory=dict)
    """The trainer's summary (train.json): seconds, iterations, hardware, loss choices."""
    inputs_digest: str | None = None
    """The digest of the code, config (without the seed) and data the record was made from; None when the record
    does not say (written before records carried one)."""

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
        settings[setting] = SettingResult(frames=int(frames), metrics=metrics, clips=_clips(body.get("clips")))
    seed = data.get("seed", 0)
    if seed is None:
        seed = 0
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise RecordError(f"{path}: 'seed' should be a non-negative integer, got {seed!r}")
    aids = data.get("demo_aids")
    if aids is not None and (not isinstance(aids, list) or not all(isinstance(a, str) for a in aids)):
        raise RecordError(f"{path}: 'demo_aids' should be a list of labels, got {aids!r}")
    training = data.get("training") or {}
    if not isinstance(training, dict):
        raise RecordError(f"{path}: 'training' should be an object (the trainer's train.json), got {training!r}")
    digest = data.get("inputs_digest")
    if digest is not None and not isinstance(digest, str):
        raise RecordError(f"{path}: 'inputs_digest' should be a string (the digest of the record's code, config and "
                          f"data), got {digest!r}; re-run its evaluate stage")
    return MetricRecord(method=fields["method"], family=fields["family"], variant=fields["variant"],
                        identity=fields["identity"], profile=str(data.get("profile", "")),
                        hardware=str(data.get("hardware", "")), settings=settings, source=path, seed=seed,
                        demo_aids=None if aids is None else tuple(aids), training=training,
                        inputs_digest=digest)


def _clips(raw: object) -> tuple[tuple[str, str, int], ...] | None:
    if not isinstance(raw, list) or not all(isinstance(c, Mapping) and "clip" in c for c in raw):
        return None
    return tuple((str(c["clip"]), str(c.get("audio_identity", "")), int(c.get("frames", 0))) for c in raw)


def read_record(path: Path) -> MetricRecord:
    """One ``<method>/<identity>.json`` (or ``<identity>.seed<k>.json``); its folder and file names must match
    what it says inside."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RecordError(f"{path}: not valid JSON ({error}); re-run its evaluate stage") from None
    record = parse_record(data, path)
    identity, seed = split_seed(path.stem)
    if (record.method, record.identity) != (path.parent.name, identity):
        raise RecordError(f"{path}: says method {record.method!r}, identity {record.identity!r} but is stored as "
                          f"{path.parent.name}/{path.name}; the file must be <method>/<identity>.json")
    if seed is not None and record.seed != seed:
        raise RecordError(f"{path}: says seed {record.seed} but is stored as seed {seed}")
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
    seeds: tuple[int, ...] = (0,)
    """The seeds whose means the value averages."""
    spread: float | None = None
    """Sample standard deviation over ``seeds`` of each seed's mean; None with one seed."""

    def cell(self, digits: int = 3) -> str:
        """The table cell: the value, and ``± spread`` over seeds when there are several."""
        text = self.value.cell(digits)
        if self.spread is not None and self.value.available:
            text += f" ± {self.spread:.{digits}f}"
        return text

    def footnotes(self, method: str) -> list[str]:
        """The cell's footnotes: the value's own (n/a, substitute, hardware), the seeds, the identities left out."""
        notes = [text for text in (self.value.footnote(),) if text]
        if self.spread is not None and self.value.available:
            notes.append(f"{self.value.name} of {method}: mean ± standard deviation over seeds "
                         f"{', '.join(map(str, self.seeds))} (each seed's value is its mean over identities)")
        if self.missing and self.value.available:
            left_out = "; ".join(f"{identity}: {reason}" for identity, reason in self.missing)
            if len(self.seeds) > 1:
                notes.append(f"{self.value.name} of {method}: n/a on {left_out}; left out of that seed's mean")
            else:
                used = len(self.identities) - len(self.missing)
                notes.append(f"{self.value.name} of {method}: n/a on {left_out}; the cell is the mean over the "
                             f"other {used} of {len(self.identities)} identities")
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
                        higher_is_better=higher, hardware=" / ".join(_distinct(v.hardware for v in chosen)),
                        measured_with=" / ".join(_distinct(v.measured_with for v in chosen)))
    return Aggregate(value, identities, tuple(missing))


@dataclass(frozen=True)
class Paired:
    """One metric of two runs on the same test frames (or clips) of one or more identities, for one seed."""

    seed_a: int
    seed_b: int
    a: np.ndarray
    b: np.ndarray
    groups: np.ndarray
    """The index (into ``identities``) of each pair: an interval resamples within each identity."""
    unit: str
    """What one pair is: "frame" or "clip"."""
    identities: tuple[str, ...]

    @property
    def seed_text(self) -> str:
        return f"seed {self.seed_a}" if self.seed_a == self.seed_b else f"seeds {self.seed_a}/{self.seed_b}"


@dataclass(frozen=True)
class Pairing:
    """:meth:`RecordSet.paired`'s answer: one :class:`Paired` per seed, and what was left out and why."""

    pairs: list[Paired]
    problems: list[str]


def _clip_problem(a: MetricRecord, b: MetricRecord, setting: str, name_a: str, name_b: str) -> str | None:
    """Why two records' test clips differ (then their frames are not the same frames), or None."""
    clips_a, clips_b = (record.settings[setting].clips if setting in record.settings else None for record in (a, b))
    if clips_a is None or clips_b is None or clips_a == clips_b:
        return None
    return (f"{a.identity}: {name_a} and {name_b} were scored on different {setting}-driven clips "
            f"({len(clips_a)} vs {len(clips_b)} clips, {sum(c[2] for c in clips_a)} vs "
            f"{sum(c[2] for c in clips_b)} frames), not paired")


def _pair_problem(metric: str, identity: str, a: tuple[str, MetricValue | None],
                  b: tuple[str, MetricValue | None]) -> str | None:
    """Why two values cannot be paired frame by frame, or None when they can."""
    for name, value in (a, b):
        if value is None or not value.available:
            return f"{metric} of {name} n/a on {identity}"
    for name, value in (a, b):
        if value.per_frame is None:
            return (f"{name}'s record of {identity} keeps no per-frame (or per-clip) {metric} values (re-run its "
                    "evaluate stage)")
    (name_a, va), (name_b, vb) = a, b
    if va.sample_unit != vb.sample_unit:
        return f"{identity}: {metric} of {name_a} is per {va.sample_unit}, of {name_b} per {vb.sample_unit}"
    if len(va.per_frame) != len(vb.per_frame):
        return (f"{identity}: {metric} of {name_a} has {len(va.per_frame)} {va.sample_unit}s, of {name_b} "
                f"{len(vb.per_frame)}: not the same test {va.sample_unit}s, not paired")
    return None


def _within_problem(name: str, identity: str, a: tuple[str, MetricValue | None],
                    b: tuple[str, MetricValue | None]) -> str | None:
    """Why two metrics of one record cannot be paired frame by frame, or None when they can."""
    for metric, value in (a, b):
        if value is None or not value.available:
            return f"{metric} of {name} n/a on {identity}"
        if value.per_frame is None:
            return (f"{name}'s record of {identity} keeps no per-frame {metric} values (re-run its evaluate "
                    "stage)")
    (metric_a, va), (metric_b, vb) = a, b
    if va.sample_unit != vb.sample_unit or len(va.per_frame) != len(vb.per_frame):
        return (f"{identity}: {metric_a} of {name} has {len(va.per_frame)} {va.sample_unit}s, {metric_b} "
                f"{len(vb.per_frame)} {vb.sample_unit}s: not the same test {va.sample_unit}s, not paired")
    return None


@dataclass
class RecordSet:
    """All records of a run, grouped by (family, variant) in first-seen order."""

    records: list[MetricRecord] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    """Why each record in ``dropped`` was left out of the means (same order), one sentence each."""
    dropped: list[MetricRecord] = field(default_factory=list)
    """Records of a seed made from other inputs than the lowest seed's (see the module docstring): not in
    ``records``."""

    def __len__(self) -> int:
        return len(self.records)

    def keys(self) -> list[Key]:
        """The (family, variant) pairs with results: reference rows first, then by family and variant."""
        found = {record.key for record in self.records}
        family_order = {family: i for i, family in enumerate((*REFERENCE_FAMILIES, *TRAINED_FAMILIES))}
        return sorted(found, key=lambda key: (family_order.get(key[0], len(family_order)), key[0], key[1] != "",
                                              key[1]))

    def of(self, key: Key, seed: int | None = None) -> list[MetricRecord]:
        """The records of ``key`` (of one ``seed``, or of every seed), by identity and seed."""
        return sorted((r for r in self.records if r.key == key and (seed is None or r.seed == seed)),
                      key=lambda r: (r.identity, r.seed))

    def seeds(self, key: Key) -> tuple[int, ...]:
        return tuple(sorted({record.seed for record in self.records if record.key == key}))

    def aids(self, key: Key) -> tuple[str, ...] | None:
        """The demo aids of ``key``'s records (their union); None when no record says."""
        said = [record.demo_aids for record in self.of(key) if record.demo_aids is not None]
        return None if not said else tuple(_distinct(label for aids in said for label in aids))

    def aids_text(self, key: Key) -> str:
        """``demo aids: a2m audio, mouth-motion prior`` / ``no demo aids`` / ``demo aids not recorded``."""
        aids = self.aids(key)
        if aids is None:
            return "demo aids not recorded (re-run its evaluate stage)"
        return "demo aids: " + ", ".join(aids) if aids else "no demo aids"

    def left_out_of(self, key: Key) -> list[str]:
        """The notes of ``key``'s records left out of the means."""
        return [note for record, note in zip(self.dropped, self.left_out) if record.key == key]

    def seeds_left_out(self, key: Key) -> list[str]:
        """``r2talker S001 seeds 1, 2``: per identity, the seeds of ``key`` left out of the means."""
        by_identity: dict[str, list[int]] = {}
        for record in self.dropped:
            if record.key == key:
                by_identity.setdefault(record.identity, []).append(record.seed)
        return [f"{self.method(key)} {identity} seed{'s' * (len(seeds) > 1)} {', '.join(map(str, sorted(seeds)))}"
                for identity, seeds in sorted(by_identity.items())]

    def has(self, key: Key) -> bool:
        return any(record.key == key for record in self.records)

    def method(self, key: Key) -> str:
        """The registered method name of ``key`` as the records give it (the convention when not run)."""
        names = _distinct(record.method for record in self.of(key))
        return " / ".join(names) if names else method_name(*key)

    def identities(self, key: Key) -> tuple[str, ...]:
        return tuple(_distinct(record.identity for record in self.of(key)))

    def aggregate(self, key: Key, setting: str, metric: str, only: Sequence[str] | None = None) -> Aggregate | None:
        """``metric`` of ``key`` in ``setting`` averaged over identities (``only`` these, when given; then over
        seeds); None when not run."""
        seeds = self.seeds(key)
        if not seeds:
            return None
        wanted = (lambda identity: True) if only is None else (lambda identity: identity in only)
        if len(seeds) == 1:
            values = {r.identity: r.metric(setting, metric) for r in self.of(key, seeds[0]) if wanted(r.identity)}
            return replace(average(metric, values), seeds=seeds)
        # An identity a seed has no record of (never run, or left out) is named as missing from that seed's
        # mean, so a seed averaged over fewer identities is not passed off as the full one.
        identities = tuple(i for i in self.identities(key) if wanted(i))
        per_seed = {}
        for seed in seeds:
            mine = {r.identity: r for r in self.of(key, seed)}
            per_seed[seed] = average(metric, {identity: mine[identity].metric(setting, metric)
                                              if identity in mine else None for identity in identities})
        usable = {seed: a for seed, a in per_seed.items() if a.value.available and not math.isnan(a.value.value)}
        missing = tuple((f"{identity} seed {seed}", reason) for seed, a in per_seed.items()
                        for identity, reason in a.missing)
        if not usable:
            first = next(iter(per_seed.values()))
            return Aggregate(first.value, identities, missing, seeds)
        means = [a.value.value for a in usable.values()]
        finite = all(math.isfinite(m) for m in means)
        value = replace(next(iter(usable.values())).value, value=float(np.mean(means)), per_frame=None)
        spread = statistics.stdev(means) if len(means) > 1 and finite else None
        return Aggregate(value, identities, missing, tuple(usable), spread)

    def value(self, key: Key, metric: str, setting: str = "self", only: Sequence[str] | None = None
              ) -> MetricValue | None:
        """The averaged value (over ``only`` these identities, when given) when it exists (not run or n/a ->
        None)."""
        aggregate = self.aggregate(key, setting, metric, only)
        return aggregate.value if aggregate is not None and aggregate.value.available else None

    def seed_pairs(self, a: Key, b: Key) -> tuple[list[tuple[int, int]], list[str]]:
        """Which seed of ``a`` is compared with which of ``b``, and the seeds left out.

        A reference row (no training, so no seed) pairs with every seed of the other run; two trained runs pair
        seed by seed.
        """
        seeds_a, seeds_b = self.seeds(a), self.seeds(b)
        if not seeds_a or not seeds_b:
            return [], []
        if a[0] in REFERENCE_FAMILIES:
            return [(seeds_a[0], seed) for seed in seeds_b], []
        if b[0] in REFERENCE_FAMILIES:
            return [(seed, seeds_b[0]) for seed in seeds_a], []
        problems = [f"seed {seed} of {self.method(key)} has no counterpart in {self.method(other)}"
                    for key, other, mine, theirs in ((a, b, seeds_a, seeds_b), (b, a, seeds_b, seeds_a))
                    for seed in mine if seed not in theirs]
        return [(seed, seed) for seed in seeds_a if seed in seeds_b], problems

    def paired(self, a: Key, b: Key, metric: str, setting: str = "self") -> "Pairing":
        """``metric``'s per-frame (or per-clip) values of ``a`` and ``b`` on the same test frames, per seed.

        Identities are paired where both runs have the metric with its values and the same number of them;
        every identity or seed left out is named in ``problems``.
        """
        seed_pairs, problems = self.seed_pairs(a, b)
        name_a, name_b = self.method(a), self.method(b)
        pairs = []
        for seed_a, seed_b in seed_pairs:
            theirs = {record.identity: record for record in self.of(b, seed_b)}
            values_a, values_b, groups, identities, units = [], [], [], [], set()
            for record in self.of(a, seed_a):
                other = theirs.get(record.identity)
                if other is None:
                    problems.append(f"{record.identity}: {name_b} not evaluated")
                    continue
                va, vb = record.metric(setting, metric), other.metric(setting, metric)
                problem = _pair_problem(metric, record.identity, (name_a, va), (name_b, vb)) or \
                    _clip_problem(record, other, setting, name_a, name_b)
                if problem:
                    problems.append(problem)
                    continue
                values_a.append(va.per_frame)
                values_b.append(vb.per_frame)
                groups.append(np.full(len(va.per_frame), len(identities)))
                identities.append(record.identity)
                units.add(va.sample_unit)
            if identities:
                pairs.append(Paired(seed_a, seed_b, np.concatenate(values_a), np.concatenate(values_b),
                                    np.concatenate(groups), units.pop() if len(units) == 1 else "mixed",
                                    tuple(identities)))
        return Pairing(pairs, _distinct(problems))

    def paired_within(self, key: Key, metric_a: str, metric_b: str, setting: str = "self") -> Pairing:
        """Two metrics of one run on the same frames (or clips), per seed: ``a`` is ``metric_a``'s per-frame
        values, ``b`` ``metric_b``'s, grouped by identity. An identity where either is n/a, has no per-frame
        values or a different count of them is left out and named in ``problems``."""
        name = self.method(key)
        pairs, problems = [], []
        for seed in self.seeds(key):
            values_a, values_b, groups, identities, units = [], [], [], [], set()
            for record in self.of(key, seed):
                va, vb = record.metric(setting, metric_a), record.metric(setting, metric_b)
                problem = _within_problem(name, record.identity, (metric_a, va), (metric_b, vb))
                if problem:
                    problems.append(problem)
                    continue
                values_a.append(va.per_frame)
                values_b.append(vb.per_frame)
                groups.append(np.full(len(va.per_frame), len(identities)))
                identities.append(record.identity)
                units.add(va.sample_unit)
            if identities:
                pairs.append(Paired(seed, seed, np.concatenate(values_a), np.concatenate(values_b),
                                    np.concatenate(groups), units.pop() if len(units) == 1 else "mixed",
                                    tuple(identities)))
        return Pairing(pairs, _distinct(problems))

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
    stray = sorted(p.name for p in folder.glob("*.json") if p.name != SPEED_FILE)
    if stray:
        log.warning("%s: ignoring %s (records live in <method>/<identity>.json)", folder, stray)
    records = [read_record(path) for path in sorted(folder.glob("*/*.json"))]
    seen: dict[tuple[str, str, int], Path | None] = {}
    for record in records:
        where = (record.method, record.identity, record.seed)
        if where in seen:
            raise RecordError(f"{record.source}: a second record of {record.method} on {record.identity}, seed "
                              f"{record.seed} (the other: {seen[where]}); keep one")
        seen[where] = record.source
    kept, dropped, notes = _same_inputs(records)
    for note in notes:
        log.warning("%s", note)
    log.info("read %d metric records from %s", len(records), folder)
    return RecordSet(kept, notes, dropped)


def _same_inputs(records: list[MetricRecord]) -> tuple[list[MetricRecord], list[MetricRecord], list[str]]:
    """The records kept, those left out, and why: see the module docstring (seeds made from the same inputs)."""
    groups: dict[tuple[str, str], list[MetricRecord]] = {}
    for record in records:
        if record.family not in REFERENCE_FAMILIES:
            groups.setdefault((record.method, record.identity), []).append(record)
    dropped, notes = [], []
    for (method, identity), group in groups.items():
        group.sort(key=lambda r: r.seed)
        reference, *others = group
        seeds = ", ".join(str(r.seed) for r in group)
        for record in others:
            if record.inputs_digest is None:
                why = "has no inputs_digest (made before records carried one)"
            elif reference.inputs_digest is None:
                why = (f"cannot be matched with seed {reference.seed}'s, which has no inputs_digest (made before "
                       "records carried one)")
            elif record.inputs_digest != reference.inputs_digest:
                why = (f"was made from other code, config or data than seed {reference.seed}'s (inputs_digest "
                       "differs)")
            else:
                continue
            dropped.append(record)
            notes.append(f"{method} {identity} seed {record.seed}: left out of the mean; its record {why}; "
                         f"retrain it: set `seeds: [{seeds}]` in params.yaml and run `make demo`")
    left = {id(record) for record in dropped}
    return [record for record in records if id(record) not in left], dropped, notes
