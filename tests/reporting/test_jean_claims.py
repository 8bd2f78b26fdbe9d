"""JEAN's claims: disentanglement in the cross-expression setting, and the project's bars against the static row."""

from __future__ import annotations

import numpy as np
import pytest

from talkhead_models.reporting.claims import (CLAIMS, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_MEASURABLE, Evidence,
                                              evaluate_claims, within_run)
from talkhead_models.reporting.papers import table
from talkhead_models.reporting.records import CROSS_EXPRESSION, SETTINGS, RecordSet, load_records
from talkhead_models.reporting.tables import build_table
from tests.reporting.records_fixture import write_record

AUDIO = "Exp-Diff to audio source"
EMOTION_B, EMOTION_A = "Emotion of expression source", "Emotion of audio source"
JEAN, STATIC = ("jean", "jean", ""), ("static", "static", "")
DISENTANGLED = "jean_disentangles_expression_and_lips"


def _verdict(metrics, claim_id):
    outcomes = evaluate_claims(Evidence(load_records(metrics)), CLAIMS)
    return next(o.verdict for o in outcomes if o.claim.id == claim_id)


def _exp_diffs(shift: float, frames: int = 150, seed: int = 0) -> tuple[list[float], list[float]]:
    """Two per-frame metrics on the same frames (against B and against A): a difficulty both share, noise of their
    own, and the one against B ``shift`` above the one against A (Exp-Diff: negative means closer to B; the
    emotion probabilities: positive means more of B's emotion)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.02, 0.06, frames)
    to_a = difficulty + 0.03 + rng.normal(0.0, 0.004, frames)
    to_b = difficulty + 0.03 + shift + rng.normal(0.0, 0.004, frames)
    if shift == 0.0:
        to_b += to_a.mean() - to_b.mean()
    return to_b.tolist(), to_a.tolist()


SYNC_UP = [6.0, 6.3, 5.8, 6.1, 6.4, 5.9]
SYNC_STATIC = [1.0, 1.2, 0.9, 1.1, 1.3, 0.8]


def _write(metrics, emotion_shift: float | None, jean_sync=SYNC_UP, static_sync=SYNC_STATIC, identity="S001",
           exp_shift: float = 0.01):
    """JEAN's cross-expression record; by default its Exp-Diff is nearer to A's (as a perfectly disentangled
    render's is on the synthetic corpus), which must not decide the claim."""
    to_b, to_a = _exp_diffs(exp_shift, seed=1)
    jean_values = {"Sync": jean_sync, "Exp-Diff": to_b, AUDIO: to_a}
    if emotion_shift is not None:
        to_b, to_a = _exp_diffs(emotion_shift, seed=2)
        jean_values.update({EMOTION_B: to_b, EMOTION_A: to_a})
    write_record(metrics, *JEAN, identity, {"PSNR": 25.0}, cross_expression_values=jean_values)
    if static_sync is not None:
        write_record(metrics, *STATIC, identity, {"PSNR": 20.0}, cross_expression_values={"Sync": static_sync})


@pytest.mark.parametrize("shift, expected", [(0.01, HOLDS), (0.0, INCONCLUSIVE), (-0.01, DOES_NOT_HOLD)])
def test_disentanglement_follows_the_emotion_networks_within_run_interval(tmp_path, shift, expected):
    metrics = tmp_path / "metrics"
    _write(metrics, shift)
    verdict = _verdict(metrics, DISENTANGLED)
    assert verdict.status == expected, verdict.numbers
    assert f"difference {EMOTION_B} - {EMOTION_A}" in verdict.numbers and "over 150 frames" in verdict.numbers
    assert "over 6 clips" in verdict.numbers and "difference jean - static" in verdict.numbers
    # The paper's Exp-Diff is shown, its own verdict named, and does not decide.
    assert "the paper's Exp-Diff, not decisive here [does not hold]" in verdict.numbers
    assert verdict.runs == (JEAN[1:], STATIC[1:])


def test_disentanglement_needs_the_lips_to_follow_the_audio_too(tmp_path):
    metrics = tmp_path / "metrics"
    _write(metrics, 0.01, jean_sync=[s - 0.05 for s in SYNC_STATIC])   # expression from B, lips no better than still
    verdict = _verdict(metrics, DISENTANGLED)
    assert verdict.status == DOES_NOT_HOLD and "lips follow A's audio [does not hold]" in verdict.numbers
    assert "expression follows B [holds]" in verdict.numbers
    metrics = tmp_path / "close"
    _write(metrics, 0.01, jean_sync=[s + 0.01 * (-1) ** i for i, s in enumerate(SYNC_STATIC)])
    assert _verdict(metrics, DISENTANGLED).status == INCONCLUSIVE


def test_disentanglement_is_not_yet_measurable_without_its_records(tmp_path):
    metrics = tmp_path / "metrics"
    write_record(metrics, *STATIC, "S001", {"PSNR": 20.0})   # no jean, and no cross-expression setting at all
    verdict = _verdict(metrics, DISENTANGLED)
    assert verdict.status == NOT_MEASURABLE and "jean not run" in verdict.numbers
    metrics = tmp_path / "no_static"
    _write(metrics, 0.01, static_sync=None)
    verdict = _verdict(metrics, DISENTANGLED)
    assert verdict.status == NOT_MEASURABLE and "static not run" in verdict.numbers
    metrics = tmp_path / "no_emotion_network"
    _write(metrics, None)   # no emotion network: the expression half cannot be measured
    verdict = _verdict(metrics, DISENTANGLED)
    assert verdict.status == NOT_MEASURABLE and f"{EMOTION_B} and {EMOTION_A} of jean n/a" in verdict.numbers


def test_within_run_pairs_two_metrics_of_one_run_per_seed_and_names_what_it_left_out(tmp_path):
    metrics = tmp_path / "metrics"
    for seed, shift in ((0, -0.01), (1, -0.012)):
        to_b, to_a = _exp_diffs(shift, seed=seed)
        write_record(metrics, *JEAN, "S001", {"PSNR": 25.0}, seed=seed,
                     cross_expression_values={"Exp-Diff": to_b, AUDIO: to_a})
    to_b, to_a = _exp_diffs(-0.01, seed=5)
    write_record(metrics, *JEAN, "S002", {"PSNR": 25.0}, cross_expression_values={"Exp-Diff": to_b, AUDIO: to_a[:-1]})
    records = load_records(metrics)
    pairing = records.paired_within(JEAN[1:], "Exp-Diff", AUDIO, CROSS_EXPRESSION)
    assert [p.seed_a for p in pairing.pairs] == [0, 1] and pairing.pairs[0].identities == ("S001",)
    assert any("S002" in problem and "not paired" in problem for problem in pairing.problems)
    result = within_run(records, JEAN[1:], "Exp-Diff", AUDIO, CROSS_EXPRESSION)
    assert result.status == HOLDS and "seed 0" in result.text and "seed 1" in result.text
    assert "left out: S002" in result.text
    assert within_run(records, JEAN[1:], "Exp-Diff", AUDIO, CROSS_EXPRESSION, lower=False).status == DOES_NOT_HOLD
    # No per-frame values: nothing to pair.
    bare = tmp_path / "bare"
    write_record(bare, *JEAN, "S001", {"PSNR": 25.0}, with_samples=False,
                 cross_expression_values={"Exp-Diff": 0.03, AUDIO: 0.05})
    result = within_run(load_records(bare), JEAN[1:], "Exp-Diff", AUDIO, CROSS_EXPRESSION)
    assert result.status == NOT_MEASURABLE and "keeps no per-frame" in result.text


@pytest.mark.parametrize("jean_psnr, expected", [(25.0, HOLDS), (23.0, INCONCLUSIVE), (21.5, DOES_NOT_HOLD)])
def test_jean_psnr_must_clear_the_static_row_by_three_db(tmp_path, jean_psnr, expected):
    metrics = tmp_path / "metrics"
    write_record(metrics, *STATIC, "S001", {"PSNR": 20.0, "M-LMD": 3.0})
    write_record(metrics, *JEAN, "S001", {"PSNR": jean_psnr, "M-LMD": 2.0})
    verdict = _verdict(metrics, "jean_beats_static_psnr")
    assert verdict.status == expected, verdict.numbers
    assert f"PSNR {jean_psnr:.3f} dB (jean) vs 20.000 dB (static)" in verdict.numbers
    assert "difference jean - static (claimed above +3)" in verdict.numbers and "over 120 frames" in verdict.numbers


@pytest.mark.parametrize("jean_lmd, expected", [(1.8, HOLDS), (2.1, INCONCLUSIVE), (2.4, DOES_NOT_HOLD)])
def test_jean_mouth_lmd_must_be_at_most_seven_tenths_of_the_static_row(tmp_path, jean_lmd, expected):
    metrics = tmp_path / "metrics"
    write_record(metrics, *STATIC, "S001", {"PSNR": 20.0, "M-LMD": 3.0})
    write_record(metrics, *JEAN, "S001", {"PSNR": 25.0, "M-LMD": jean_lmd})
    verdict = _verdict(metrics, "jean_lmd_below_static")
    assert verdict.status == expected, verdict.numbers
    assert f"ratio of the means {jean_lmd / 3.0:.3f} (claimed below 0.7)" in verdict.numbers
    assert "difference jean - 0.7 x static" in verdict.numbers


def test_jean_project_claims_are_not_yet_measurable_without_jean(tmp_path):
    metrics = tmp_path / "metrics"
    write_record(metrics, *STATIC, "S001", {"PSNR": 20.0, "M-LMD": 3.0})
    for claim in ("jean_beats_static_psnr", "jean_lmd_below_static"):
        verdict = _verdict(metrics, claim)
        assert verdict.status == NOT_MEASURABLE and "jean not run" in verdict.numbers


def test_jean_table1_reads_exp_diff_from_the_cross_expression_setting(tmp_path):
    assert CROSS_EXPRESSION in SETTINGS
    metrics = tmp_path / "metrics"
    write_record(metrics, *JEAN, "S001", {"PSNR": 21.0, "Exp-Diff": 0.5, "LSE-C": 4.0},
                 cross_expression_values={"Exp-Diff": 0.04, AUDIO: 0.09, "LSE-C": 3.0})
    records = load_records(metrics)
    for table_id in ("jean_table1", "jean_table2"):
        spec = table(table_id)
        assert [c.setting for c in spec.columns if c.metric == "Exp-Diff"] == [CROSS_EXPRESSION]
        assert all(c.setting == "self" for c in spec.columns if c.is_metric and c.metric != "Exp-Diff")
        result = build_table(spec, records)
        assert result.cell("jean", "Exp-Diff ↓").text == "0.040" and result.cell("jean", "LSE-C ↑").text == "4.000"
    assert "cross-expression setting" in " ".join(table("jean_table1").notes)
    assert "cross_expression-driven 120 frames per identity" in records.describe()


def test_records_without_the_new_setting_still_read(tmp_path):
    metrics = tmp_path / "metrics"
    write_record(metrics, "r2talker", "r2talker", "", "S001", {"PSNR": 25.0}, {"Sync": 4.0})
    records = load_records(metrics)
    assert records.value(("r2talker", ""), "Exp-Diff", CROSS_EXPRESSION) is None
    assert isinstance(records, RecordSet) and records.metric_names(CROSS_EXPRESSION) == []
