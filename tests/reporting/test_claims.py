"""Claims flip with the numbers and say which numbers they compared."""

from __future__ import annotations

import pytest

from talkhead_models.reporting.claims import (CLAIMS, DOES_NOT_HOLD, HOLDS, NOT_MEASURABLE, Evidence,
                                              claims_markdown, default_claims, evaluate_claims)
from talkhead_models.reporting.curves import load_curves
from talkhead_models.reporting.records import load_records
from tests.reporting.records_fixture import write_corpus, write_curve, write_record


def _verdict(metrics, claim_id, curves=(), claims=CLAIMS):
    outcomes = evaluate_claims(Evidence(load_records(metrics), list(curves)), claims)
    return next(o.verdict for o in outcomes if o.claim.id == claim_id)


def test_registry_covers_the_briefs_claims_and_each_names_a_paper():
    ids = {claim.id for claim in CLAIMS}
    assert {"gstalker_faster_than_nerfs", "r2talker_landmarks_lower_lmd", "r2talker_maglo_lowers_lpips",
            "gstalker_reaches_r2talker_psnr_sooner", "gstalker_static_init_raises_sync",
            "s3dnerf_no_per_identity_training", "jean_joint_expression_lowers_exp_diff", "trained_beat_static"} <= ids
    assert len(ids) == len(CLAIMS)
    assert all(claim.paper_name and claim.measured for claim in CLAIMS)


def test_landmark_claim_flips_with_the_numbers(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")
    verdict = _verdict(metrics, "r2talker_landmarks_lower_lmd")
    assert verdict.status == HOLDS
    assert "2.300" in verdict.numbers and "2.800" in verdict.numbers
    write_record(metrics, "r2talker_landmark_encoding", "r2talker", "landmark_encoding", "S001",
                 {"PSNR": 27.5, "M-LMD": 3.4})
    verdict = _verdict(metrics, "r2talker_landmarks_lower_lmd")
    assert verdict.status == DOES_NOT_HOLD and "3.400" in verdict.numbers
    (metrics / "r2talker_landmark_encoding" / "S001.json").unlink()
    verdict = _verdict(metrics, "r2talker_landmarks_lower_lmd")
    assert verdict.status == NOT_MEASURABLE and "r2talker_landmark_encoding not run" in verdict.numbers


def test_na_values_make_a_claim_not_yet_measurable(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")
    write_record(metrics, "r2talker_maglo", "r2talker", "maglo", "S001", {"PSNR": 27.9, "LPIPS": None})
    verdict = _verdict(metrics, "r2talker_maglo_lowers_lpips")
    assert verdict.status == NOT_MEASURABLE and "LPIPS of r2talker_maglo n/a" in verdict.numbers


def test_perceptual_claims_fall_back_to_ssim_and_say_so(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")
    write_record(metrics, "r2talker_maglo", "r2talker", "maglo", "S001", {"PSNR": 27.9, "LPIPS": None, "SSIM": 0.74})
    write_record(metrics, "r2talker_landmark_encoding", "r2talker", "landmark_encoding", "S001",
                 {"PSNR": 27.5, "LPIPS": None, "SSIM": 0.71})
    verdict = _verdict(metrics, "r2talker_maglo_lowers_lpips")
    assert verdict.status == HOLDS and verdict.numbers.startswith("LPIPS n/a, SSIM instead: SSIM 0.740")
    write_record(metrics, "r2talker_maglo", "r2talker", "maglo", "S001", {"PSNR": 27.9, "LPIPS": 0.2, "SSIM": 0.70})
    write_record(metrics, "r2talker_landmark_encoding", "r2talker", "landmark_encoding", "S001",
                 {"PSNR": 27.5, "LPIPS": 0.1, "SSIM": 0.71})
    verdict = _verdict(metrics, "r2talker_maglo_lowers_lpips")  # LPIPS present: it decides, SSIM is not read
    assert verdict.status == DOES_NOT_HOLD and verdict.numbers.startswith("LPIPS 0.200")


def test_static_margin_is_checked_for_every_trained_run(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")   # static 21 dB, trained 26-28 dB
    assert _verdict(metrics, "trained_beat_static").status == HOLDS
    strict = default_claims(static_margin_db=6.0)
    verdict = _verdict(metrics, "trained_beat_static", claims=strict)
    assert verdict.status == DOES_NOT_HOLD and "r2talker_audio_baseline +5.00" in verdict.numbers


def test_gstalker_speed_claim_uses_training_time_and_fps(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")   # r2talker: 0.5 h, 30 FPS
    assert _verdict(metrics, "gstalker_faster_than_nerfs").status == NOT_MEASURABLE
    write_record(metrics, "gstalker", "gstalker", "", "S001", {"PSNR": 29.0, "FPS": 90.0, "Training time": 0.2})
    verdict = _verdict(metrics, "gstalker_faster_than_nerfs")
    assert verdict.status == HOLDS and "90.000" in verdict.numbers and "30.000" in verdict.numbers
    write_record(metrics, "gstalker", "gstalker", "", "S001", {"PSNR": 29.0, "FPS": 90.0, "Training time": 0.9})
    assert _verdict(metrics, "gstalker_faster_than_nerfs").status == DOES_NOT_HOLD


def test_psnr_in_less_wall_time_reads_the_curves(tmp_path):
    metrics, models = write_corpus(tmp_path / "metrics"), tmp_path / "models"
    write_record(metrics, "gstalker", "gstalker", "", "S001", {"PSNR": 29.0})
    write_curve(models, "r2talker", "S001", [(0, 0.0, 1.0, None), (100, 50.0, 0.5, 24.0), (200, 100.0, 0.4, 27.0)])
    write_curve(models, "gstalker", "S001", [(100, 20.0, 0.5, 26.0), (200, 40.0, 0.3, 27.5)])
    verdict = _verdict(metrics, "gstalker_reaches_r2talker_psnr_sooner", load_curves(models))
    assert verdict.status == HOLDS and "27.00 dB at 100 s" in verdict.numbers and "40 s" in verdict.numbers
    write_curve(models, "gstalker", "S001", [(100, 20.0, 0.5, 26.0), (200, 40.0, 0.3, 26.5)])
    verdict = _verdict(metrics, "gstalker_reaches_r2talker_psnr_sooner", load_curves(models))
    assert verdict.status == DOES_NOT_HOLD and "never" in verdict.numbers


def test_s3dnerf_fit_time_claim(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")
    write_record(metrics, "s3dnerf", "s3dnerf", "", "S002", {"PSNR": 24.0, "Training time": 0.0})
    assert _verdict(metrics, "s3dnerf_no_per_identity_training").status == HOLDS
    write_record(metrics, "s3dnerf", "s3dnerf", "", "S002", {"PSNR": 24.0, "Training time": 2.0})
    assert _verdict(metrics, "s3dnerf_no_per_identity_training").status == DOES_NOT_HOLD


def test_claims_markdown_is_one_row_per_claim(tmp_path):
    outcomes = evaluate_claims(Evidence(load_records(write_corpus(tmp_path / "metrics"))))
    markdown = claims_markdown(outcomes)
    assert "| Claim | Paper | How measured | Our numbers | Status |" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "**" in line]
    assert len(rows) == len(CLAIMS)
    assert f"holds: {sum(o.verdict.status == HOLDS for o in outcomes)}" in markdown


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_every_claim_is_not_yet_measurable_without_records(tmp_path, claim):
    (tmp_path / "metrics").mkdir()
    verdict = claim.check(Evidence(load_records(tmp_path / "metrics")))
    assert verdict.status == NOT_MEASURABLE and verdict.numbers
