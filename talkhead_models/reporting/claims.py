"""The papers' checkable claims, each a function of this run's records and curves.

A claim says what a paper asserts, how this project measures it, and
returns a status: "holds", "does not hold", or "not yet measurable" (a
run it needs has no records, or its value is n/a), with the numbers it
compared, so claims.md shows the evidence beside the verdict. Values
measured with a substitute still count; the tables' footnotes say which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from talkhead_models.metrics.base import MetricValue
from talkhead_models.reporting.curves import Curve
from talkhead_models.reporting.papers import PAPERS, STATIC, Key
from talkhead_models.reporting.records import REFERENCE_FAMILIES, RecordSet

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
NOT_MEASURABLE = "not yet measurable"
STATUSES = (HOLDS, DOES_NOT_HOLD, NOT_MEASURABLE)

STATIC_MARGIN_DB = 3.0
"""How far (dB PSNR) every trained method must be above the static row."""
PERCEPTUAL = ("LPIPS", "SSIM")
"""Perceptual claims read LPIPS, else SSIM (LPIPS needs AlexNet weights; SSIM is what the methods' substitute
perceptual loss, 1 - SSIM, optimises)."""
FIT_TIME_HOURS = 0.01
"""S3D-NeRF's fit time for a new identity (< 0.01 h in its comparison with person-specific NeRFs)."""


@dataclass(frozen=True)
class Evidence:
    """What claims are checked against."""

    records: RecordSet
    curves: list[Curve] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    status: str
    numbers: str
    """Our numbers as text, e.g. "M-LMD 2.31 (r2talker_landmark_encoding) vs 2.89 (r2talker_audio_baseline)"."""

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


def compare(better: Key, worse: Key, metric: str, setting: str = "self",
            lower_is_better: bool | None = None) -> Callable[[Evidence], Verdict]:
    """Holds when ``better``'s ``metric`` beats ``worse``'s (direction from the value unless given)."""

    def check(evidence: Evidence) -> Verdict:
        records = evidence.records
        a, b = records.value(better, metric, setting), records.value(worse, metric, setting)
        if a is None or b is None:
            return Verdict(NOT_MEASURABLE, _missing(records, [better, worse], metric, setting))
        lower = (not a.higher_is_better) if lower_is_better is None else lower_is_better
        holds = a.value < b.value if lower else a.value > b.value
        text = (f"{metric} {_fmt(a)} ({_label(records, better)}) vs {_fmt(b)} ({_label(records, worse)}), "
                f"{'lower' if lower else 'higher'} is better")
        return Verdict(HOLDS if holds else DOES_NOT_HOLD, text)

    return check


def _first_available(records: RecordSet, better: Key, worse: Key, metrics: tuple[str, ...],
                     setting: str) -> str | None:
    for metric in metrics:
        if records.value(better, metric, setting) is not None and records.value(worse, metric, setting) is not None:
            return metric
    return None


def compare_first(better: Key, worse: Key, metrics: tuple[str, ...],
                  setting: str = "self") -> Callable[[Evidence], Verdict]:
    """:func:`compare` on the first of ``metrics`` both runs have (e.g. Exp-Diff, else M-LMD); a fallback says
    which metric it stands in for."""

    def check(evidence: Evidence) -> Verdict:
        metric = _first_available(evidence.records, better, worse, metrics, setting)
        if metric is None:
            return Verdict(NOT_MEASURABLE, _missing(evidence.records, [better, worse], metrics[0], setting))
        verdict = compare(better, worse, metric, setting)(evidence)
        if metric == metrics[0]:
            return verdict
        return Verdict(verdict.status, f"{metrics[0]} n/a, {metric} instead: {verdict.numbers}")

    return check


def faster_than_nerfs(evidence: Evidence) -> Verdict:
    """GSTalker: lower training time than the per-identity NeRFs and higher FPS than every NeRF method."""
    records = evidence.records
    gs = ("gstalker", "")
    comparisons = [("Training time", [("r2talker", ""), ("jean", "")]),
                   ("FPS", [("r2talker", ""), ("jean", ""), ("s3dnerf", "")])]
    texts, outcomes = [], []
    for metric, rivals in comparisons:
        ours = records.value(gs, metric)
        measured = [(key, records.value(key, metric)) for key in rivals if records.value(key, metric) is not None]
        if ours is None or not measured:
            return Verdict(NOT_MEASURABLE, _missing(records, [gs, *rivals], metric, "self")
                           or f"{metric}: no NeRF method measured")
        for key, value in measured:
            outcomes.append(ours.value < value.value if metric == "Training time" else ours.value > value.value)
        texts.append(f"{metric} {_fmt(ours, 3)} (gstalker) vs "
                     + ", ".join(f"{_fmt(v, 3)} ({_label(records, k)})" for k, v in measured))
    hardware = {v.hardware for key in (gs, ("r2talker", ""), ("jean", ""), ("s3dnerf", ""))
                for metric in ("FPS", "Training time") for v in [records.value(key, metric)] if v and v.hardware}
    if len(hardware) > 1:
        texts.append("measured on different hardware: " + " / ".join(sorted(hardware)))
    return Verdict(HOLDS if all(outcomes) else DOES_NOT_HOLD, "; ".join(texts))


def reaches_psnr_sooner(evidence: Evidence) -> Verdict:
    """Per identity with both curves: GSTalker gets to R2-Talker's best validation PSNR sooner than R2-Talker."""
    records = evidence.records
    gs_name, r2_name = _label(records, ("gstalker", "")), _label(records, ("r2talker", ""))
    gs = {c.identity: c for c in evidence.curves if c.method == gs_name and c.val_psnr}
    r2 = {c.identity: c for c in evidence.curves if c.method == r2_name and c.val_psnr}
    shared = sorted(set(gs) & set(r2))
    if not shared:
        return Verdict(NOT_MEASURABLE, f"no identity has validation-PSNR curves of both {gs_name} "
                                       f"({len(gs)} curves) and {r2_name} ({len(r2)} curves)")
    texts, outcomes = [], []
    for identity in shared:
        target = r2[identity].best()
        r2_time, gs_time = r2[identity].first_reaching(target), gs[identity].first_reaching(target)
        outcomes.append(gs_time is not None and gs_time < r2_time)
        reached = f"{gs_time:.0f} s" if gs_time is not None else f"never (best {gs[identity].best():.2f} dB)"
        texts.append(f"{identity}: {r2_name} best {target:.2f} dB at {r2_time:.0f} s, {gs_name} reaches it: {reached}")
    return Verdict(HOLDS if all(outcomes) else DOES_NOT_HOLD, "; ".join(texts))


def beats_static(margin_db: float) -> Callable[[Evidence], Verdict]:
    """Every trained run's self-driven PSNR is at least ``margin_db`` above the static row's."""

    def check(evidence: Evidence) -> Verdict:
        records = evidence.records
        static = records.value(STATIC, "PSNR")
        trained = [(key, records.value(key, "PSNR")) for key in records.keys() if key[0] not in REFERENCE_FAMILIES]
        measured = [(key, value) for key, value in trained if value is not None]
        if static is None or not measured:
            what = "static PSNR n/a or not run" if static is None else "no trained method has a PSNR yet"
            return Verdict(NOT_MEASURABLE, what)
        short = [(key, value) for key, value in measured if value.value - static.value < margin_db]
        gaps = ", ".join(f"{_label(records, k)} {v.value - static.value:+.2f}" for k, v in measured)
        text = f"static {_fmt(static, 2)}; gain over it (dB): {gaps}"
        unmeasured = [_label(records, k) for k, v in trained if v is None]
        if unmeasured:
            text += f"; PSNR n/a: {', '.join(unmeasured)}"
        return Verdict(DOES_NOT_HOLD if short else HOLDS, text)

    return check


def no_per_identity_training(evidence: Evidence) -> Verdict:
    """S3D-NeRF's per-identity Training time (fit time on a new identity) is below 0.01 h on every identity."""
    records = evidence.records
    key = ("s3dnerf", "")
    runs = records.of(key)
    if not runs:
        return Verdict(NOT_MEASURABLE, f"{_label(records, key)} not run")
    times = {r.identity: r.metric("self", "Training time") for r in runs}
    known = {i: v for i, v in times.items() if v is not None and v.available}
    if not known:
        return Verdict(NOT_MEASURABLE, "Training time n/a on every identity")
    text = ", ".join(f"{i}: {v.value:.4f} h" for i, v in known.items())
    fits = all(v.value < FIT_TIME_HOURS for v in known.values())
    return Verdict(HOLDS if fits else DOES_NOT_HOLD, f"fit time per identity {text} (paper: < {FIT_TIME_HOURS} h)")


def default_claims(static_margin_db: float = STATIC_MARGIN_DB) -> tuple[Claim, ...]:
    """The registry: every claim the report checks."""
    r2, gs, jean, s3d = "r2talker", "gstalker", "jean", "s3dnerf"
    return (
        Claim("gstalker_faster_than_nerfs", "GSTalker trains faster and renders faster than the NeRF methods", gs,
              "Training time below R2-Talker's and JEAN's, FPS above R2-Talker's, JEAN's and S3D-NeRF's "
              "(full methods, self-driven records)", faster_than_nerfs),
        Claim("gstalker_reaches_r2talker_psnr_sooner", "GSTalker reaches R2-Talker's PSNR in less wall time", gs,
              "training curves: seconds until GSTalker's validation PSNR first reaches R2-Talker's best, against "
              "the seconds R2-Talker took to reach it, per identity", reaches_psnr_sooner),
        Claim("r2talker_landmarks_lower_lmd", "Landmark encoding lowers LMD against audio conditioning", r2,
              "M-LMD of r2talker_landmark_encoding below r2talker_audio_baseline (Table 4, rungs 1-2)",
              compare((r2, "landmark_encoding"), (r2, "audio_baseline"), "M-LMD")),
        Claim("r2talker_maglo_lowers_lpips", "M-AGLO lowers LPIPS", r2,
              "LPIPS of r2talker_maglo below r2talker_landmark_encoding (Table 4, rungs 2-3); SSIM above it when "
              "LPIPS's weights are absent", compare_first((r2, "maglo"), (r2, "landmark_encoding"), PERCEPTUAL)),
        Claim("r2talker_progressive_raises_psnr", "Progressive optimisation raises PSNR", r2,
              "PSNR of r2talker above r2talker_maglo (Table 4, rungs 3-4)",
              compare((r2, ""), (r2, "maglo"), "PSNR")),
        Claim("r2talker_renders_faster_than_baseline", "Global landmark conditioning renders faster than RAD-NeRF's "
              "audio-spatial conditioning", r2, "FPS of r2talker above r2talker_audio_baseline (Table 1)",
              compare((r2, ""), (r2, "audio_baseline"), "FPS")),
        Claim("gstalker_static_init_raises_sync", "Static initialisation raises Sync", gs,
              "Sync of gstalker above gstalker_no_static_init (Table 4)",
              compare((gs, ""), (gs, "no_static_init"), "Sync")),
        Claim("gstalker_lpips_loss_lowers_lpips", "The LPIPS loss lowers LPIPS", gs,
              "LPIPS of gstalker below gstalker_no_perceptual (Table 4); SSIM above it when LPIPS's weights are "
              "absent", compare_first((gs, ""), (gs, "no_perceptual"), PERCEPTUAL)),
        Claim("gstalker_hash_grid_lowers_lmd", "The hash-grid deformation field lowers LMD", gs,
              "M-LMD of gstalker below gstalker_no_hash_grid (Table 4)",
              compare((gs, ""), (gs, "no_hash_grid"), "M-LMD")),
        Claim("gstalker_hubert_raises_sync", "Self-supervised audio features (HuBERT) give higher Sync than "
              "DeepSpeech", gs, "Sync of gstalker_audio_hubert above gstalker_audio_deepspeech (Table 5)",
              compare((gs, "audio_hubert"), (gs, "audio_deepspeech"), "Sync")),
        Claim("jean_joint_expression_lowers_exp_diff", "JEAN's joint expression lowers Exp-Diff / LMD vs audio-only",
              jean, "Exp-Diff of jean below jean_audio_only (Table 1, AD-NeRF); M-LMD when Exp-Diff is n/a",
              compare_first((jean, ""), (jean, "audio_only"), ("Exp-Diff", "M-LMD"))),
        Claim("jean_full_raises_lse_c", "The self-supervised audio encoder with the expression transformer raises "
              "LSE-C over raw emotion features", jean, "LSE-C of jean above jean_emotion_features (Table 2, (a))",
              compare((jean, ""), (jean, "emotion_features"), "LSE-C")),
        Claim("s3dnerf_no_per_identity_training", "S3D-NeRF needs no per-identity training", s3d,
              f"per-identity Training time (fit time on the identity) of s3dnerf below {FIT_TIME_HOURS} h on every "
              "identity", no_per_identity_training),
        Claim("s3dnerf_lip_sync_raises_sync", "The lip-sync discriminator raises Sync", s3d,
              "Sync of s3dnerf above s3dnerf_no_lip_sync (ablation)", compare((s3d, ""), (s3d, "no_lip_sync"), "Sync")),
        Claim("s3dnerf_cross_attention_beats_concat", "Cross-modal (attention) deformation beats feature "
              "concatenation in Sync", s3d, "Sync of s3dnerf above s3dnerf_concat_deform (ablation)",
              compare((s3d, ""), (s3d, "concat_deform"), "Sync")),
        Claim("trained_beat_static", f"Every trained method beats the static row by >= {static_margin_db:g} dB PSNR",
              "project", f"self-driven PSNR of every trained (family, variant) minus the static row's, >= "
              f"{static_margin_db:g} dB", beats_static(static_margin_db)),
    )


CLAIMS = default_claims()


def evaluate_claims(evidence: Evidence, claims: tuple[Claim, ...] = CLAIMS) -> list[Outcome]:
    """Each claim's verdict on ``evidence``."""
    return [Outcome(claim, claim.check(evidence)) for claim in claims]


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def claims_markdown(outcomes: list[Outcome], context: str = "") -> str:
    """reports/claims.md: claim | paper | how measured | our numbers | status, then a count per status."""
    lines = ["# The papers' claims, checked on this run", ""]
    if context:
        lines += [context, ""]
    lines += ["| Claim | Paper | How measured | Our numbers | Status |", "|---|---|---|---|---|"]
    for outcome in outcomes:
        claim, verdict = outcome.claim, outcome.verdict
        lines.append(f"| {_md(claim.text)} | {_md(claim.paper_name)} | {_md(claim.measured)} | "
                     f"{_md(verdict.numbers)} | **{verdict.status}** |")
    counts = {status: sum(o.verdict.status == status for o in outcomes) for status in STATUSES}
    lines += ["", "; ".join(f"{status}: {count}" for status, count in counts.items()) + "."]
    return "\n".join(lines) + "\n"
