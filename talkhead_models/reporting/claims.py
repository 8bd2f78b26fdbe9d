"""The papers' checkable claims, each a function of this run's records, curves and speed comparisons.

A claim says what a paper asserts and how this project measures it, and
returns a status with the numbers it compared:

* comparisons of two runs report the difference of their means with its 95%
  paired bootstrap interval (:mod:`talkhead_models.metrics.uncertainty`) over
  the unit the metric is measured on: test frames (PSNR, SSIM, LPIPS, LMD,
  ...), clips (Sync, LSE-C, LSE-D: SyncNet scores a clip) or alternated
  timing repetitions (FPS, from the speed stage); comparisons of two metrics
  of one run on the same frames (:func:`within_run`: JEAN's Exp-Diff against
  the expression source and against the audio source) likewise;
* ``holds`` only when the interval excludes zero (or the claimed margin) in
  the claimed direction, ``does not hold`` only when it excludes it in the
  other direction, else ``inconclusive`` (also with fewer than
  ``MIN_PAIRS`` pairs, or when seeds disagree: with several seeds every
  seed must agree);
* ``not yet measurable``: a run it needs has no records, its value is n/a,
  or its records lack what the check reads (per-frame values, the speed
  file) -- more runs would settle it;
* ``not measurable``: this project cannot check it as stated however many
  runs it makes, and the numbers say why (the proxy metric is the runs' own
  training loss, the budgets or validation sets differ).

Values measured with a substitute still count; the tables' footnotes say
which. Every verdict names the runs it compared, so the report can list
their demo aids beside it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np

from talkhead_models.metrics.base import MetricValue
from talkhead_models.metrics.uncertainty import MIN_PAIRS, Interval, paired_bootstrap
from talkhead_models.reporting.curves import Curve
from talkhead_models.reporting.papers import NEAREST_POSE, PAPER_METHOD, PAPERS, STATIC, Key
from talkhead_models.reporting.records import (CROSS_EXPRESSION, REFERENCE_FAMILIES, TRAINED_FAMILIES, Pairing,
                                               RecordSet, method_name)
from talkhead_models.reporting.speed import SpeedRecord

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"
NOT_MEASURABLE = "not yet measurable"
UNMEASURABLE = "not measurable"
STATUSES = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_MEASURABLE, UNMEASURABLE)

STATIC_MARGIN_DB = 3.0
"""How far (dB PSNR) every trained method must be above the static row."""
NEAREST_POSE_MARGIN_DB = 0.0
"""How far (dB PSNR) every trained method must be above the nearest-pose row."""
PERCEPTUAL = ("LPIPS", "SSIM")
"""Perceptual claims read LPIPS, else SSIM (LPIPS needs AlexNet weights) -- unless a compared run trains on
1 - SSIM, which makes SSIM its own loss (:func:`ssim_trained`)."""
FIT_TIME_HOURS = 0.01
"""S3D-NeRF's fit time for a new identity (< 0.01 h in its comparison with person-specific NeRFs)."""
BUDGET_KEY = "iterations"
"""The train.json key of a run's iteration budget (speed claims compare like budgets only)."""
JEAN_LMD_RATIO = 0.7
"""The most JEAN's self-driven M-LMD may be, as a fraction of the static row's (the JEAN issue's acceptance)."""
S3D_LMD_RATIO = 0.8
"""The most S3D-NeRF's M-LMD on the identity it never saw may be, as a fraction of that identity's static row's
(its source image; the S3D-NeRF issue's acceptance)."""
EXP_DIFF_AUDIO = "Exp-Diff to audio source"
"""The evaluation's Exp-Diff of cross-expression renders against the audio source's frames
(talkhead_models.evaluation.EXP_DIFF_AUDIO)."""
EMOTION_EXPRESSION = "Emotion of expression source"
EMOTION_AUDIO = "Emotion of audio source"
"""The emotion CNN's per-frame probabilities of the expression source's and the audio source's emotions in the
cross-expression setting (talkhead_models.evaluation.evaluate.EMOTION_EXPRESSION / EMOTION_AUDIO)."""


@dataclass(frozen=True)
class Evidence:
    """What claims are checked against."""

    records: RecordSet
    curves: list[Curve] = field(default_factory=list)
    speed: SpeedRecord | None = None
    """The speed stage's alternated FPS comparisons; None when it has not run."""


@dataclass(frozen=True)
class Verdict:
    status: str
    numbers: str
    """Our numbers as text: means, the difference with its interval, and what was left out."""
    runs: tuple[Key, ...] = ()
    """The (family, variant) runs compared; the report lists their demo aids."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown claim status {self.status!r}; use one of {STATUSES}")


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    paper: str
    """Family of the paper that makes the claim, or "project" for the pipeline's own expectation."""
    measured: str
    """How this project checks it."""
    check: Callable[[Evidence], Verdict]

    @property
    def paper_name(self) -> str:
        return PAPERS.get(self.paper, self.paper)


@dataclass(frozen=True)
class Outcome:
    claim: Claim
    verdict: Verdict
    aids: tuple[tuple[str, str], ...] = ()
    """(run, its demo aids as text) of every run the verdict compared that has records."""

    def aids_text(self) -> str:
        return "; ".join(f"{method}: {text}" for method, text in self.aids) or "–"


# ----------------------------------------------------------------------------------------- combining statuses


def agree(statuses: Iterable[str]) -> str:
    """One status from several seeds: what they all say, else inconclusive (the seeds disagree)."""
    statuses = list(statuses)
    return statuses[0] if statuses and all(s == statuses[0] for s in statuses) else INCONCLUSIVE


def every(statuses: Iterable[str]) -> str:
    """A claim about every part (every run, every rival): one part against it decides; all must hold."""
    statuses = set(statuses)
    for status in (DOES_NOT_HOLD, INCONCLUSIVE, UNMEASURABLE, NOT_MEASURABLE):
        if status in statuses:
            return status
    return HOLDS if statuses else NOT_MEASURABLE


def decide(interval: Interval | None, claimed: int, threshold: float = 0.0) -> str:
    """The status of one interval for a claimed direction (+1: above ``threshold``, -1: below)."""
    if interval is None or not interval.enough:
        return INCONCLUSIVE
    side = interval.side_of(threshold)
    return HOLDS if side == claimed else DOES_NOT_HOLD if side == -claimed else INCONCLUSIVE


def _interval(a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None) -> Interval | None:
    """The paired interval, or None with fewer than two finite pairs (nothing to resample)."""
    try:
        return paired_bootstrap(a, b, groups)
    except ValueError:
        return None


def _interval_text(interval: Interval | None, unit: str, count: int, what: str, digits: int = 3) -> str:
    measure = f" {unit}" if unit else ""
    if interval is None:
        return f"{count} {what}{'s' if count != 1 else ''}: too few for an interval (needs >= {MIN_PAIRS})"
    text = f"{interval.text(digits)}{measure} over {interval.samples} {what}s"
    if interval.dropped:
        text += f" ({interval.dropped} non-finite left out)"
    if not interval.enough:
        text += f", too few for an interval (needs >= {MIN_PAIRS})"
    return text


# ------------------------------------------------------------------------------------------------- helpers


def _label(records: RecordSet, key: Key) -> str:
    return records.method(key)


def _fmt(value: MetricValue, digits: int = 3) -> str:
    unit = f" {value.unit}" if value.unit else ""
    return f"{value.cell(digits)}{unit}"


def _missing(records: RecordSet, keys: list[Key], metric: str, setting: str) -> str:
    parts = []
    for key in keys:
        if not records.has(key):
            parts.append(f"{_label(records, key)} not run")
        elif records.value(key, metric, setting) is None:
            parts.append(f"{metric} of {_label(records, key)} n/a")
    return "; ".join(parts)


@dataclass(frozen=True)
class Difference:
    """One comparison of two runs on one metric: its status and the text that backs it."""

    status: str
    text: str


def difference(records: RecordSet, better: Key, worse: Key, metric: str, setting: str = "self",
               margin: float = 0.0, lower_is_better: bool | None = None, factor: float = 1.0) -> Difference:
    """Whether ``better``'s ``metric`` beats ``worse``'s by more than ``margin``, per seed, with intervals.

    The direction comes from the value unless given. The interval is of ``better - worse`` over paired frames
    (or clips), resampled within each identity; with several seeds each seed is decided on its own and all must
    agree. ``factor`` scales ``worse``'s values first: ``better`` below 0.7 x ``worse`` is ``factor=0.7`` with
    lower is better (the interval of ``better - 0.7 worse``, the ratio of the means against 0.7).
    """
    # The means shown (and their ratio) are over the identities both runs have, the ones the interval pairs: a
    # static row on S001 and S003 against S3D-NeRF's S003 alone compares S003 with S003.
    theirs = records.identities(worse)
    shared = [identity for identity in records.identities(better) if identity in theirs]
    a = records.value(better, metric, setting, only=shared or None)
    b = records.value(worse, metric, setting, only=shared or None)
    if a is None or b is None:
        return Difference(NOT_MEASURABLE, _missing(records, [better, worse], metric, setting))
    lower = (not a.higher_is_better) if lower_is_better is None else lower_is_better
    claimed = -1 if lower else 1
    name_a, name_b = _label(records, better), _label(records, worse)
    means = f"{metric} {_fmt(a)} ({name_a}) vs {_fmt(b)} ({name_b}), {'lower' if lower else 'higher'} is better"
    scaled = name_b
    if factor != 1.0:
        ratio = f"{a.value / b.value:.3f}" if b.value else "undefined"
        means += f"; ratio of the means {ratio} (claimed {'below' if lower else 'above'} {factor:g})"
        scaled = f"{factor:g} x {name_b}"
    pairing = records.paired(better, worse, metric, setting)
    if factor != 1.0:
        pairing = Pairing([replace(paired, b=paired.b * factor) for paired in pairing.pairs], pairing.problems)
    return _paired_difference(pairing, claimed, claimed * margin, a.unit, means,
                              f"difference {name_a} - {scaled}", bool(margin))


def _paired_difference(pairing: Pairing, claimed: int, threshold: float, unit: str, means: str, what: str,
                       show_target: bool) -> Difference:
    """The status and text of ``pairing``'s ``a - b``, one interval per seed (every seed must agree)."""
    left_out = f"; left out: {'; '.join(pairing.problems)}" if pairing.problems else ""
    if not pairing.pairs:
        return Difference(NOT_MEASURABLE, f"{means}; no paired values{left_out}")
    statuses, parts, estimates = [], [], []
    for paired in pairing.pairs:
        interval = _interval(paired.a, paired.b, paired.groups)
        statuses.append(decide(interval, claimed, threshold))
        identities = ", ".join(paired.identities)
        seed = f", {paired.seed_text}" if len(pairing.pairs) > 1 or paired.seed_a or paired.seed_b else ""
        parts.append(f"{_interval_text(interval, unit, len(paired.a), paired.unit)} ({identities}{seed})")
        if interval is not None:
            estimates.append(interval.estimate)
    target = f" (claimed {'above' if claimed > 0 else 'below'} {threshold:+g})" if show_target else ""
    text = f"{means}; {what}{target}: " + "; ".join(parts)
    if len(estimates) > 1:
        text += f"; over seeds the difference spans {min(estimates):+.3f} to {max(estimates):+.3f}"
    return Difference(agree(statuses), text + left_out)


def within_run(records: RecordSet, key: Key, metric_a: str, metric_b: str, setting: str = "self",
               lower: bool = True) -> Difference:
    """Whether run ``key``'s ``metric_a`` is below (``lower``) or above its ``metric_b`` on the same frames.

    Both metrics must be on one scale (Exp-Diff against two targets); the interval is of ``metric_a - metric_b``
    over the run's paired frames, resampled within each identity, one per seed, and every seed must agree.
    """
    name = _label(records, key)
    a, b = records.value(key, metric_a, setting), records.value(key, metric_b, setting)
    if a is None or b is None:
        if not records.has(key):
            return Difference(NOT_MEASURABLE, f"{name} not run")
        missing = [metric for metric, value in ((metric_a, a), (metric_b, b)) if value is None]
        return Difference(NOT_MEASURABLE, f"{' and '.join(missing)} of {name} n/a in the {setting} setting")
    means = (f"{name}, {setting}: {metric_a} {_fmt(a)} vs {metric_b} {_fmt(b)}, claimed "
             f"{'lower' if lower else 'higher'}")
    return _paired_difference(records.paired_within(key, metric_a, metric_b, setting), -1 if lower else 1, 0.0,
                              a.unit, means, f"difference {metric_a} - {metric_b}", False)


def compare(better: Key, worse: Key, metric: str, setting: str = "self",
            lower_is_better: bool | None = None) -> Callable[[Evidence], Verdict]:
    """Holds when ``better``'s ``metric`` beats ``worse``'s with an interval that excludes zero."""

    def check(evidence: Evidence) -> Verdict:
        result = difference(evidence.records, better, worse, metric, setting, lower_is_better=lower_is_better)
        return Verdict(result.status, result.text, (better, worse))

    return check


def _first_available(records: RecordSet, better: Key, worse: Key, metrics: tuple[str, ...],
                     setting: str) -> str | None:
    for metric in metrics:
        if records.value(better, metric, setting) is not None and records.value(worse, metric, setting) is not None:
            return metric
    return None


def ssim_trained(training: dict) -> str | None:
    """Why a run's training loss contains 1 - SSIM (LPIPS's weight-free substitute), from its train.json; None
    when it does not say so.

    ``perceptual_loss`` ("lpips", "dssim", "none") is read when the trainer writes it; otherwise R2-Talker's
    ``lip_loss_lpips`` and GSTalker's ``perceptual_lpips`` flags, 0 when the term ran as 1 - SSIM because
    LPIPS's weights were absent (their ``auto`` setting).
    """
    declared = training.get("perceptual_loss")
    if isinstance(declared, str):
        return "its perceptual loss is 1 - SSIM (train.json perceptual_loss = dssim)" if declared == "dssim" \
            else None
    if training.get("lip_loss_lpips") == 0:
        return "its lip-patch loss ran as 1 - SSIM for lack of LPIPS's weights (train.json lip_loss_lpips = 0)"
    if training.get("perceptual_lpips") == 0:
        return "its perceptual loss ran as 1 - SSIM for lack of LPIPS's weights (train.json perceptual_lpips = 0)"
    return None


def compare_first(better: Key, worse: Key, metrics: tuple[str, ...],
                  setting: str = "self") -> Callable[[Evidence], Verdict]:
    """:func:`compare` on the first of ``metrics`` both runs have (e.g. Exp-Diff, else M-LMD); a fallback says
    which metric it stands in for. SSIM standing in for LPIPS is refused (not measurable) when a compared run
    trains on 1 - SSIM: the claim would then check the runs' own training loss."""

    def check(evidence: Evidence) -> Verdict:
        records = evidence.records
        metric = _first_available(records, better, worse, metrics, setting)
        if metric is None:
            return Verdict(NOT_MEASURABLE, _missing(records, [better, worse], metrics[0], setting), (better, worse))
        result = difference(records, better, worse, metric, setting)
        if metric == metrics[0]:
            return Verdict(result.status, result.text, (better, worse))
        if metric == "SSIM":
            trained = [(key, reason) for key in (better, worse) for record in records.of(key)[:1]
                       if (reason := ssim_trained(dict(record.training)))]
            if trained:
                why = "; ".join(f"{_label(records, key)}: {reason}" for key, reason in trained)
                return Verdict(UNMEASURABLE, f"{metrics[0]} n/a, and SSIM in its place would score the runs by "
                                             f"their own training loss ({why}); for the record: {result.text}",
                               (better, worse))
        return Verdict(result.status, f"{metrics[0]} n/a, {metric} instead: {result.text}", (better, worse))

    return check


# ------------------------------------------------------------------------------------------- floors


def _trained_keys(records: RecordSet, family: str | None = None) -> list[Key]:
    return [key for key in records.keys() if key[0] not in REFERENCE_FAMILIES and (family is None
                                                                                 or key[0] == family)]


def beats_floor(floor: Key, metric: str = "PSNR", margin: float = 0.0) -> Callable[[Evidence], Verdict]:
    """Every trained run's ``metric`` beats the ``floor`` row's by more than ``margin`` (interval per run)."""

    def check(evidence: Evidence) -> Verdict:
        records = evidence.records
        floor_value = records.value(floor, metric)
        trained = _trained_keys(records)
        if floor_value is None:
            what = f"{_label(records, floor)} {'not run' if not records.has(floor) else f'{metric} n/a'}"
            return Verdict(NOT_MEASURABLE, what, (floor, *trained))
        measured = [key for key in trained if records.value(key, metric) is not None]
        if not measured:
            return Verdict(NOT_MEASURABLE, f"no trained method has a {metric} yet", (floor, *trained))
        statuses, parts = [], []
        for key in measured:
            result = difference(records, key, floor, metric, margin=margin)
            statuses.append(result.status)
            parts.append(f"{_label(records, key)} [{result.status}]: {_after_means(result.text)}")
        # per identity: each run is compared with the floor of its own identity
        per_identity = {identity: records.value(floor, metric, only=[identity])
                        for identity in records.identities(floor)}
        floors = ", ".join(f"{_fmt(value, 2)} ({identity})" for identity, value in per_identity.items()
                           if value is not None)
        text = f"{_label(records, floor)} {floors}; " + " | ".join(parts)
        unmeasured = [_label(records, k) for k in trained if k not in measured]
        if unmeasured:
            text += f" | {metric} n/a: {', '.join(unmeasured)}"
        return Verdict(every(statuses), text, (floor, *trained))

    return check


def disentangles(run: Key, baseline: Key = STATIC) -> Callable[[Evidence], Verdict]:
    """JEAN's disentanglement in the cross-expression setting: ``run``'s expression follows the expression source
    (B), not the audio source (A) -- the emotion CNN gives its frames B's emotion more than A's, paired over
    frames -- and its lips still follow A's audio -- Sync above ``baseline``'s, paired over clips. Both must hold.

    The paper's Exp-Diff (to B below to A) is reported beside them but does not decide: the tracker's
    coefficients are dominated by the mouth, which follows A by design, and on the synthetic corpus a perfectly
    disentangled render fails it (benchmarks/jean_disentanglement_oracle.py, docs/HISTORY.md)."""

    def check(evidence: Evidence) -> Verdict:
        records = evidence.records
        expression = within_run(records, run, EMOTION_EXPRESSION, EMOTION_AUDIO, CROSS_EXPRESSION, lower=False)
        lips = difference(records, run, baseline, "Sync", CROSS_EXPRESSION)
        paper = within_run(records, run, "Exp-Diff", EXP_DIFF_AUDIO, CROSS_EXPRESSION)
        text = (f"expression follows B [{expression.status}]: {expression.text} | lips follow A's audio "
                f"[{lips.status}]: {lips.text} | the paper's Exp-Diff, not decisive here [{paper.status}]: "
                f"{paper.text}")
        return Verdict(every((expression.status, lips.status)), text, (run, baseline))

    return check


def beats_by(better: Key, worse: Key, metric: str, margin: float = 0.0, factor: float = 1.0,
             setting: str = "self") -> Callable[[Evidence], Verdict]:
    """``better``'s ``metric`` beats ``worse``'s by more than ``margin`` (or ``factor`` x ``worse``'s), with its
    interval (:func:`difference`)."""

    def check(evidence: Evidence) -> Verdict:
        result = difference(evidence.records, better, worse, metric, setting, margin=margin, factor=factor)
        return Verdict(result.status, result.text, (better, worse))

    return check


def _after_means(text: str) -> str:
    """The part of :func:`difference`'s text after the means (shorter inside a list of runs)."""
    head, _, tail = text.partition("; ")
    return tail or head


def beats_nearest_pose_in_motion(family: str) -> Callable[[Evidence], Verdict]:
    """Every run of ``family`` has lower M-LMD and higher Sync than the nearest-pose row (intervals per run)."""

    def check(evidence: Evidence) -> Verdict:
        records = evidence.records
        runs = _trained_keys(records, family)
        if not records.has(NEAREST_POSE):
            return Verdict(NOT_MEASURABLE, f"{_label(records, NEAREST_POSE)} not run", (NEAREST_POSE, *runs))
        if not runs:
            return Verdict(NOT_MEASURABLE, f"no {family} run evaluated", (NEAREST_POSE,))
        statuses, parts = [], []
        for key in runs:
            results = [(metric, difference(records, key, NEAREST_POSE, metric)) for metric in ("M-LMD", "Sync")]
            status = every(result.status for _, result in results)
            statuses.append(status)
            details = "; ".join(f"{metric} {result.status}: {_after_means(result.text)}" for metric, result in results)
            parts.append(f"{_label(records, key)} [{status}]: {details}")
        return Verdict(every(statuses), " | ".join(parts), (NEAREST_POSE, *runs))

    return check


# -------------------------------------------------------------------------------------------- speed


def trains_faster(fast: Key, rivals: tuple[Key, ...]) -> Callable[[Evidence], Verdict]:
    """``fast``'s training time is below each rival's, compared only at equal iteration budgets and hardware."""

    def check(evidence: Evidence) -> Verdict:
        records = evidence.records
        runs = (fast, *rivals)
        if not records.has(fast):
            return Verdict(NOT_MEASURABLE, f"{_label(records, fast)} not run", runs)
        statuses, parts = [], []
        for rival in rivals:
            if not records.has(rival):
                parts.append(f"{_label(records, rival)} not run")
                continue
            status, text = _training_comparison(records, fast, rival)
            statuses.append(status)
            parts.append(f"vs {_label(records, rival)} [{status}]: {text}")
        if not statuses:
            return Verdict(NOT_MEASURABLE, "; ".join(parts), runs)
        return Verdict(every(statuses), "; ".join(parts), runs)

    return check


def _training_comparison(records: RecordSet, fast: Key, rival: Key) -> tuple[str, str]:
    name_a, name_b = _label(records, fast), _label(records, rival)
    seed_pairs, _ = records.seed_pairs(fast, rival)
    times_a, times_b, budgets, hardware = [], [], set(), set()
    for seed_a, seed_b in seed_pairs:
        theirs = {r.identity: r for r in records.of(rival, seed_b)}
        for mine in records.of(fast, seed_a):
            other = theirs.get(mine.identity)
            if other is None:
                continue
            ta, tb = mine.metric("self", "Training time"), other.metric("self", "Training time")
            if ta is None or tb is None or not ta.available or not tb.available:
                continue
            budgets.add((mine.training.get(BUDGET_KEY), other.training.get(BUDGET_KEY)))
            hardware.add((ta.hardware, tb.hardware))
            times_a.append(ta.value)
            times_b.append(tb.value)
    if not times_a:
        return NOT_MEASURABLE, f"no identity has the Training time of both {name_a} and {name_b}"
    unequal = sorted({(x, y) for x, y in budgets if x is None or y is None or x != y}, key=str)
    if unequal:
        spelled = ", ".join(f"{name_a} {_budget(x)} vs {name_b} {_budget(y)}" for x, y in unequal)
        return UNMEASURABLE, (f"different training budgets ({spelled}): a shorter time for fewer iterations says "
                              "nothing of speed; compare at equal iterations or by quality reached per wall "
                              "time")
    different = sorted({(x, y) for x, y in hardware if x != y})
    if different:
        return UNMEASURABLE, "trained on different hardware: " + ", ".join(f"{x} vs {y}" for x, y in different)
    interval = _interval(np.array(times_a), np.array(times_b))
    mean_a, mean_b = float(np.mean(times_a)), float(np.mean(times_b))
    text = (f"Training time {mean_a:.3f} h vs {mean_b:.3f} h at {_budget(next(iter(budgets))[0])}; difference "
            f"{_interval_text(interval, 'h', len(times_a), 'training')}")
    return decide(interval, -1), text


def _budget(iterations: object) -> str:
    return f"{iterations} iterations" if iterations is not None else "an unrecorded number of iterations"


NO_SPEED = ("no like-with-like FPS comparison yet (reports/metrics/speed.json from the speed stage); the FPS in "
            "the metric records come from separate evaluation processes run at different times and are not "
            "comparable")


def renders_faster(fast: Key, rivals: tuple[Key, ...]) -> Callable[[Evidence], Verdict]:
    """``fast`` renders more frames per second than each rival in the speed stage's alternated timings."""

    def check(evidence: Evidence) -> Verdict:
        records, speed = evidence.records, evidence.speed
        runs = (fast, *rivals)
        if speed is None:
            return Verdict(NOT_MEASURABLE, NO_SPEED, runs)
        name = method_name(*fast)
        statuses, parts = [], []
        for rival in rivals:
            other = method_name(*rival)
            pairs = speed.between(name, other)
            if not pairs:
                if records.has(rival) and records.has(fast):
                    reason = speed.skip_reason(name, other) or "not among its pairs"
                    statuses.append(NOT_MEASURABLE)
                    parts.append(f"vs {other}: no alternated timing in speed.json ({reason})")
                else:
                    parts.append(f"vs {other}: {other if records.has(fast) else name} not run")
                continue
            status, text = _speed_comparison(pairs, name)
            statuses.append(status)
            parts.append(f"vs {other} [{status}]: {text}")
        text = "; ".join(parts) + f"; timed on {speed.describe()}"
        return Verdict(every(statuses) if statuses else NOT_MEASURABLE, text, runs)

    return check


def _speed_comparison(pairs: list, name: str) -> tuple[str, str]:
    fps_a, fps_b, groups = [], [], []
    for index, pair in enumerate(pairs):
        a, b = pair.oriented(name)
        fps_a += a
        fps_b += b
        groups += [index] * len(a)
    interval = _interval(np.array(fps_a), np.array(fps_b), np.array(groups))
    where = "; ".join(pair.describe() for pair in pairs)
    text = (f"FPS {np.mean(fps_a):.2f} vs {np.mean(fps_b):.2f} frames/s, difference "
            f"{_interval_text(interval, 'frames/s', len(fps_a), 'repetition', 2)} ({where})")
    return decide(interval, 1), text


def reaches_psnr_sooner(evidence: Evidence) -> Verdict:
    """GSTalker gets to R2-Talker's best validation PSNR sooner than R2-Talker, on curves validated alike."""
    records = evidence.records
    gs_key, r2_key = PAPER_METHOD["gstalker"], PAPER_METHOD["r2talker"]
    runs = (gs_key, r2_key)
    gs_name, r2_name = _label(records, gs_key), _label(records, r2_key)
    gs = {c.identity: c for c in evidence.curves if c.method == gs_name and c.val_psnr}
    r2 = {c.identity: c for c in evidence.curves if c.method == r2_name and c.val_psnr}
    shared = sorted(set(gs) & set(r2))
    if not shared:
        return Verdict(NOT_MEASURABLE, f"no identity has validation-PSNR curves of both {gs_name} "
                                       f"({len(gs)} curves) and {r2_name} ({len(r2)} curves)", runs)
    apart = [identity for identity in shared if not gs[identity].comparable_with(r2[identity])]
    if apart:
        details = "; ".join(f"{identity}: {gs[identity].validation_text()}, {r2[identity].validation_text()}"
                            for identity in apart)
        return Verdict(UNMEASURABLE, "the curves are not comparable: a PSNR validated on other frames or at "
                                     f"another resolution is another number ({details})", runs)
    texts, gs_times, r2_times = [], [], []
    for identity in shared:
        target = r2[identity].best()
        r2_time, gs_time = r2[identity].first_reaching(target), gs[identity].first_reaching(target)
        reached = f"{gs_time:.0f} s" if gs_time is not None else f"never (best {gs[identity].best():.2f} dB)"
        texts.append(f"{identity}: {r2_name} best {target:.2f} dB at {r2_time:.0f} s, {gs_name} reaches it: "
                     f"{reached}")
        gs_times.append(math.inf if gs_time is None else gs_time)
        r2_times.append(r2_time)
    if all(math.isinf(t) for t in gs_times):
        return Verdict(DOES_NOT_HOLD, "; ".join(texts), runs)
    interval = _interval(np.array(gs_times), np.array(r2_times))
    texts.append(f"difference {_interval_text(interval, 's', len(gs_times), 'curve pair', 0)}")
    return Verdict(decide(interval, -1), "; ".join(texts), runs)


def no_per_identity_training(evidence: Evidence) -> Verdict:
    """S3D-NeRF's per-identity Training time (fit time on a new identity) is below 0.01 h on every identity: the
    bootstrap interval of each run's mean over its timed repetitions lies below it (``holds``), above it (``does
    not hold``), or straddles it, or the run kept too few repetitions (``inconclusive``)."""
    records = evidence.records
    key = ("s3dnerf", "")
    runs = records.of(key)
    if not runs:
        return Verdict(NOT_MEASURABLE, f"{_label(records, key)} not run", (key,))
    times = {f"{r.identity}" + (f" seed {r.seed}" if r.seed else ""): r.metric("self", "Training time")
             for r in runs}
    known = {i: v for i, v in times.items() if v is not None and v.available}
    if not known:
        return Verdict(NOT_MEASURABLE, "Training time n/a on every identity", (key,))
    texts, statuses = [], []
    for name, value in known.items():
        repetitions = value.per_frame if value.per_frame is not None else np.array([value.value])
        interval = _interval(repetitions, np.zeros_like(repetitions))
        statuses.append(decide(interval, -1, FIT_TIME_HOURS))
        mean = "" if interval is not None else f"{value.value:.5f} h, "  # an interval states its own estimate
        texts.append(f"{name}: {mean}{_interval_text(interval, 'h', len(repetitions), 'timed fit', 5)}")
    return Verdict(every(statuses), f"fit time per identity {'; '.join(texts)} (paper: < {FIT_TIME_HOURS} h)",
                   (key,))


def default_claims(static_margin_db: float = STATIC_MARGIN_DB,
                   nearest_pose_margin_db: float = NEAREST_POSE_MARGIN_DB) -> tuple[Claim, ...]:
    """The registry: every claim the report checks."""
    r2, gs, jean, s3d = "r2talker", "gstalker", "jean", "s3dnerf"
    nerfs = (PAPER_METHOD[r2], PAPER_METHOD[jean], PAPER_METHOD[s3d])
    # The claims about GSTalker as a whole are the paper's, so they are judged on the paper's method (its own
    # audio encoder), not on the a2m-aided run whose variants the ablation claims compare.
    paper_gs = PAPER_METHOD[gs]
    paper_gs_name = method_name(*paper_gs)
    claims = (
        Claim("gstalker_trains_faster_than_nerfs", "GSTalker trains faster than the per-identity NeRF methods", gs,
              f"Training time of {paper_gs_name} below r2talker's and jean's, compared only where the iteration "
              "budgets (train.json iterations) and the hardware are equal; interval over (identity, seed) pairs",
              trains_faster(paper_gs, (PAPER_METHOD[r2], PAPER_METHOD[jean]))),
        Claim("gstalker_renders_faster_than_nerfs", "GSTalker renders faster than the NeRF methods", gs,
              f"FPS of {paper_gs_name} above r2talker's, jean's and s3dnerf's, from the speed stage's alternated "
              "timings in one process (reports/metrics/speed.json); interval over repetitions",
              renders_faster(paper_gs, nerfs)),
        Claim("gstalker_reaches_r2talker_psnr_sooner", "GSTalker reaches R2-Talker's PSNR in less wall time", gs,
              "training curves validated on the same frames at the same resolution (train.json validation_frames, "
              f"validation_resolution): seconds until {paper_gs_name}'s validation PSNR first reaches R2-Talker's "
              "best, against R2-Talker's, per identity", reaches_psnr_sooner),
        Claim("r2talker_landmarks_lower_lmd", "Landmark encoding lowers LMD against audio conditioning", r2,
              "M-LMD of r2talker_landmark_encoding below r2talker_audio_baseline (Table 4, rungs 1-2)",
              compare((r2, "landmark_encoding"), (r2, "audio_baseline"), "M-LMD")),
        Claim("r2talker_maglo_lowers_lpips", "M-AGLO lowers LPIPS", r2,
              "LPIPS of r2talker_maglo below r2talker_landmark_encoding (Table 4, rungs 2-3); SSIM above it when "
              "LPIPS's weights are absent, unless the runs train on 1 - SSIM",
              compare_first((r2, "maglo"), (r2, "landmark_encoding"), PERCEPTUAL)),
        Claim("r2talker_progressive_raises_psnr", "Progressive optimisation raises PSNR", r2,
              "PSNR of r2talker above r2talker_maglo (Table 4, rungs 3-4)",
              compare((r2, ""), (r2, "maglo"), "PSNR")),
        Claim("r2talker_renders_faster_than_baseline", "Global landmark conditioning renders faster than RAD-NeRF's "
              "audio-spatial conditioning", r2, "FPS of r2talker above r2talker_audio_baseline (Table 1), from the "
              "speed stage's alternated timings in one process; interval over repetitions",
              renders_faster((r2, ""), ((r2, "audio_baseline"),))),
        Claim("gstalker_static_init_raises_sync", "Static initialisation raises Sync", gs,
              "Sync of gstalker above gstalker_no_static_init (Table 4); interval over clips",
              compare((gs, ""), (gs, "no_static_init"), "Sync")),
        Claim("gstalker_lpips_loss_lowers_lpips", "The LPIPS loss lowers LPIPS", gs,
              "LPIPS of gstalker below gstalker_no_perceptual (Table 4); SSIM above it when LPIPS's weights are "
              "absent, unless the runs train on 1 - SSIM",
              compare_first((gs, ""), (gs, "no_perceptual"), PERCEPTUAL)),
        Claim("gstalker_hash_grid_lowers_lmd", "The hash-grid deformation field lowers LMD", gs,
              "M-LMD of gstalker below gstalker_no_hash_grid (Table 4)",
              compare((gs, ""), (gs, "no_hash_grid"), "M-LMD")),
        Claim("gstalker_hubert_raises_sync", "Self-supervised audio features (HuBERT) give higher Sync than "
              "DeepSpeech", gs, "Sync of gstalker_audio_hubert above gstalker_audio_deepspeech (Table 5); interval "
              "over clips", compare((gs, "audio_hubert"), (gs, "audio_deepspeech"), "Sync")),
        Claim("gstalker_whisper_raises_sync", "Pretrained speech features (Whisper tiny.en's encoder) give higher "
              "Sync than mel features", "project", "Sync of gstalker_audio_whisper above gstalker_paper_audio (the "
              "question of Table 5, on the speech features computed offline); the comparison tables' GSTalker row "
              "moves to Whisper only when this holds; interval over clips",
              compare((gs, "audio_whisper"), (gs, "paper_audio"), "Sync")),
        Claim("jean_joint_expression_lowers_exp_diff", "JEAN's joint expression lowers Exp-Diff / LMD vs audio-only",
              jean, "Exp-Diff of jean below jean_audio_only (Table 1, AD-NeRF); M-LMD when Exp-Diff is n/a",
              compare_first((jean, ""), (jean, "audio_only"), ("Exp-Diff", "M-LMD"))),
        Claim("jean_disentangles_expression_and_lips", "Expression and lip motion are disentangled: the expression "
              "follows the expression source, the lips the audio source", jean,
              "cross-expression setting (audio, cameras and landmarks of held-out clip A; expression frames of clip B, "
              "the same sentence in another emotion, index-aligned): the corpus emotion CNN's probability of B's "
              "emotion on jean's frames above its probability of A's (paired interval over frames), and jean's Sync "
              "with A's audio above the static row's (interval over clips); both must hold. The paper's Exp-Diff "
              "(to B below to A) is shown but does not decide: the tracker's expression is dominated by the mouth, "
              "and a perfectly disentangled render of this corpus fails it "
              "(benchmarks/jean_disentanglement_oracle.py)",
              disentangles((jean, ""))),
        Claim("jean_beats_static_psnr", f"JEAN's self-driven PSNR is >= {static_margin_db:g} dB above the static "
              "row's", "project", f"self-driven PSNR of jean minus the static row's, interval above "
              f"{static_margin_db:g} dB (interval over frames)", beats_by((jean, ""), STATIC, "PSNR",
                                                                          margin=static_margin_db)),
        Claim("jean_lmd_below_static", f"JEAN's self-driven M-LMD is at most {JEAN_LMD_RATIO:g}x the static row's",
              "project", f"self-driven M-LMD of jean minus {JEAN_LMD_RATIO:g} x the static row's, interval below 0 "
              "(interval over frames; the ratio of the means is given)",
              beats_by((jean, ""), STATIC, "M-LMD", factor=JEAN_LMD_RATIO)),
        Claim("jean_full_raises_lse_c", "The self-supervised audio encoder with the expression transformer raises "
              "LSE-C over raw emotion features", jean, "LSE-C of jean above jean_emotion_features (Table 2, (a)); "
              "interval over clips", compare((jean, ""), (jean, "emotion_features"), "LSE-C")),
        Claim("s3dnerf_no_per_identity_training", "S3D-NeRF needs no per-identity training", s3d,
              f"per-identity Training time (fit time on the identity) of s3dnerf below {FIT_TIME_HOURS} h on every "
              "identity", no_per_identity_training),
        Claim("s3dnerf_ssim_above_static", "S3D-NeRF's SSIM on an identity it never saw is above the static row's "
              "(its source image)", "project", "self-driven SSIM of s3dnerf minus the static row's of the same "
              "identity, interval above 0 (interval over frames)", beats_by((s3d, ""), STATIC, "SSIM")),
        Claim("s3dnerf_lmd_below_static", f"S3D-NeRF's M-LMD on an identity it never saw is at most "
              f"{S3D_LMD_RATIO:g}x the static row's", "project", f"self-driven M-LMD of s3dnerf minus "
              f"{S3D_LMD_RATIO:g} x the static row's of the same identity, interval below 0 (interval over frames; "
              "the ratio of the means is given)", beats_by((s3d, ""), STATIC, "M-LMD", factor=S3D_LMD_RATIO)),
        Claim("s3dnerf_lse_c_above_static", "S3D-NeRF's LSE-C on an identity it never saw is above the static "
              "row's", "project", "self-driven LSE-C of s3dnerf minus the static row's of the same identity, "
              "interval above 0 (interval over clips)", beats_by((s3d, ""), STATIC, "LSE-C")),
        Claim("s3dnerf_lip_sync_raises_sync", "The lip-sync discriminator raises Sync", s3d,
              "Sync of s3dnerf above s3dnerf_no_lip_sync (ablation); interval over clips",
              compare((s3d, ""), (s3d, "no_lip_sync"), "Sync")),
        Claim("s3dnerf_cross_attention_beats_concat", "Cross-modal (attention) deformation beats feature "
              "concatenation in Sync", s3d, "Sync of s3dnerf above s3dnerf_concat_deform (ablation); interval over "
              "clips", compare((s3d, ""), (s3d, "concat_deform"), "Sync")),
        Claim("trained_beat_static", f"Every trained method beats the static row by >= {static_margin_db:g} dB PSNR",
              "project", f"self-driven PSNR of every trained (family, variant) minus the static row's, interval "
              f"above {static_margin_db:g} dB", beats_floor(STATIC, "PSNR", static_margin_db)),
        Claim("trained_beat_nearest_pose", "Every trained method beats the nearest-pose row in PSNR"
              + (f" by >= {nearest_pose_margin_db:g} dB" if nearest_pose_margin_db else ""), "project",
              "self-driven PSNR of every trained (family, variant) minus the nearest_pose row's (each test frame "
              f"replaced by the training frame of the nearest head pose), interval above "
              f"{nearest_pose_margin_db:g} dB", beats_floor(NEAREST_POSE, "PSNR", nearest_pose_margin_db)),
    )
    motion = tuple(
        Claim(f"{family}_beats_nearest_pose_motion", f"{PAPERS[family]} moves the mouth with the audio better than "
              "the nearest-pose row", "project", f"every {family} run: M-LMD below and Sync above the nearest_pose "
              "row's (retrieval by head pose, blind to the audio), intervals over frames and clips",
              beats_nearest_pose_in_motion(family))
        for family in TRAINED_FAMILIES)
    return claims + motion


CLAIMS = default_claims()


def evaluate_claims(evidence: Evidence, claims: tuple[Claim, ...] = CLAIMS) -> list[Outcome]:
    """Each claim's verdict on ``evidence``, with the demo aids of the runs it compared."""
    outcomes = []
    for claim in claims:
        verdict = claim.check(evidence)
        aids = tuple((evidence.records.method(key), evidence.records.aids_text(key))
                     for key in dict.fromkeys(verdict.runs) if evidence.records.has(key)
                     and (key[0] not in REFERENCE_FAMILIES or evidence.records.aids(key)))
        stale = [text for key in dict.fromkeys(verdict.runs) for text in evidence.records.seeds_left_out(key)]
        if stale:
            # A claim decided on fewer seeds than were trained says so: the others' records are stale.
            verdict = dataclasses.replace(verdict, numbers=(
                f"{verdict.numbers}; left out (records made from other code, config or data than the lowest "
                f"seed's): {'; '.join(stale)}"))
        outcomes.append(Outcome(claim, verdict, aids))
    return outcomes


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


STATUS_NOTE = (
    "Each comparison gives the difference of the two runs' means with its 95% paired bootstrap interval over the "
    "unit the metric is measured on (test frames; clips for Sync, LSE-C and LSE-D; alternated repetitions for "
    "FPS), resampled within each identity. **holds**: the interval excludes zero (or the claimed margin) in the "
    "claimed direction; **does not hold**: it excludes it in the other direction; **inconclusive**: it does not, "
    f"fewer than {MIN_PAIRS} pairs were measured, or seeds disagree (every seed must agree); **not yet "
    "measurable**: a run or a measurement it needs is missing; **not measurable**: this project cannot check it "
    "as stated, for the reason given.")


def claims_markdown(outcomes: list[Outcome], context: str = "") -> str:
    """reports/claims.md: claim | paper | how measured | our numbers | demo aids | status, then a count per
    status."""
    lines = ["# The papers' claims, checked on this run", ""]
    if context:
        lines += [context, ""]
    lines += [STATUS_NOTE, ""]
    lines += ["| Claim | Paper | How measured | Our numbers | Demo aids of the runs compared | Status |",
              "|---|---|---|---|---|---|"]
    for outcome in outcomes:
        claim, verdict = outcome.claim, outcome.verdict
        lines.append(f"| {_md(claim.text)} | {_md(claim.paper_name)} | {_md(claim.measured)} | "
                     f"{_md(verdict.numbers)} | {_md(outcome.aids_text())} | **{verdict.status}** |")
    counts = {status: sum(o.verdict.status == status for o in outcomes) for status in STATUSES}
    lines += ["", "; ".join(f"{status}: {count}" for status, count in counts.items()) + "."]
    return "\n".join(lines) + "\n"
