"""Claims decide from intervals, not single numbers, and say which numbers and runs they compared."""

from __future__ import annotations

import json

import numpy as np
import pytest

from talkhead_models.reporting.claims import (CLAIMS, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_MEASURABLE, STATUSES,
                                              UNMEASURABLE, Evidence, claims_markdown, default_claims,
                                              evaluate_claims)
from talkhead_models.reporting.curves import load_curves
from talkhead_models.reporting.records import load_records
from talkhead_models.reporting.speed import SpeedError, load_speed, parse_speed
from tests.reporting.records_fixture import write_corpus, write_curve, write_record

BASE, LANDMARKS = ("r2talker_audio_baseline", "r2talker", "audio_baseline"), \
    ("r2talker_landmark_encoding", "r2talker", "landmark_encoding")


def _verdict(metrics, claim_id, curves=(), claims=CLAIMS, speed=None):
    outcomes = evaluate_claims(Evidence(load_records(metrics), list(curves), speed), claims)
    return next(o.verdict for o in outcomes if o.claim.id == claim_id)


def _outcome(metrics, claim_id, speed=None):
    return next(o for o in evaluate_claims(Evidence(load_records(metrics), [], speed)) if o.claim.id == claim_id)


def test_registry_covers_the_briefs_claims_and_each_names_a_paper():
    ids = {claim.id for claim in CLAIMS}
    assert {"gstalker_trains_faster_than_nerfs", "gstalker_renders_faster_than_nerfs", "r2talker_landmarks_lower_lmd",
            "r2talker_maglo_lowers_lpips", "gstalker_reaches_r2talker_psnr_sooner", "gstalker_static_init_raises_sync",
            "s3dnerf_no_per_identity_training", "jean_joint_expression_lowers_exp_diff", "trained_beat_static",
            "trained_beat_nearest_pose", "r2talker_beats_nearest_pose_motion",
            "gstalker_beats_nearest_pose_motion"} <= ids
    assert len(ids) == len(CLAIMS)
    assert all(claim.paper_name and claim.measured for claim in CLAIMS)


def _pair(metrics, lmd_landmarks, lmd_baseline, sync_landmarks=None, sync_baseline=None):
    """The first two rungs of R2-Talker's ladder on S001 with the given per-frame (per-clip) values."""
    write_record(metrics, *BASE, "S001", {"M-LMD": lmd_baseline, **({"Sync": sync_baseline} if sync_baseline else {})})
    write_record(metrics, *LANDMARKS, "S001",
                 {"M-LMD": lmd_landmarks, **({"Sync": sync_landmarks} if sync_landmarks else {})})


@pytest.mark.parametrize("shift, expected", [(-0.3, HOLDS), (0.0, INCONCLUSIVE), (0.3, DOES_NOT_HOLD)])
def test_status_follows_the_interval_of_a_known_shift(tmp_path, shift, expected):
    # Per-frame LMD with a frame difficulty both runs share and noise of their own: the landmark run is the
    # baseline shifted by ``shift`` px. 0.3 px over 200 frames with 0.2 px noise is ~20 standard errors away
    # from zero; no shift is pure noise and must not be called either way.
    rng = np.random.default_rng(7)
    difficulty = rng.uniform(1.0, 3.0, 200)
    baseline = difficulty + rng.normal(0.0, 0.2, 200)
    landmarks = difficulty + shift + rng.normal(0.0, 0.2, 200)
    if shift == 0.0:
        landmarks += baseline.mean() - landmarks.mean()  # exactly no difference in the means
    metrics = tmp_path / "metrics"
    _pair(metrics, landmarks.tolist(), baseline.tolist())
    verdict = _verdict(metrics, "r2talker_landmarks_lower_lmd")
    assert verdict.status == expected, verdict.numbers
    assert "over 200 frames" in verdict.numbers and "r2talker_landmark_encoding - r2talker_audio_baseline" in \
        verdict.numbers


def test_a_close_call_between_means_is_inconclusive_not_holds(tmp_path):
    # Sync 0.423 vs 0.418 over 6 clips that scatter by 0.05: the old report said "holds"; the interval says no.
    rng = np.random.default_rng(3)
    metrics = tmp_path / "metrics"
    write_record(metrics, "gstalker", "gstalker", "", "S001", {"Sync": (0.423 + rng.normal(0, 0.05, 6)).tolist()})
    write_record(metrics, "gstalker_no_static_init", "gstalker", "no_static_init", "S001",
                 {"Sync": (0.418 + rng.normal(0, 0.05, 6)).tolist()})
    verdict = _verdict(metrics, "gstalker_static_init_raises_sync")
    assert verdict.status == INCONCLUSIVE and "over 6 clips" in verdict.numbers


def test_too_few_clips_decide_nothing_even_when_they_agree(tmp_path):
    metrics = tmp_path / "metrics"
    write_record(metrics, "gstalker", "gstalker", "", "S001", {"Sync": [0.9, 1.0]})
    write_record(metrics, "gstalker_no_static_init", "gstalker", "no_static_init", "S001", {"Sync": [0.1, 0.2]})
    verdict = _verdict(metrics, "gstalker_static_init_raises_sync")
    assert verdict.status == INCONCLUSIVE and "too few for an interval" in verdict.numbers


def test_landmark_claim_flips_with_the_numbers(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")
    verdict = _verdict(metrics, "r2talker_landmarks_lower_lmd")
    assert verdict.status == HOLDS
    # The baseline ran on S001 (2.9) and S002 (2.7), the landmark encoding on S001 only: the means shown are those
    # of the frames compared, S001's, not the baseline's mean over both identities (2.8).
    assert "2.300" in verdict.numbers and "2.900" in verdict.numbers and "(S001)" in verdict.numbers
    assert "2.800" not in verdict.numbers
    write_record(metrics, *LANDMARKS, "S001", {"PSNR": 27.5, "M-LMD": 3.4})
    verdict = _verdict(metrics, "r2talker_landmarks_lower_lmd")
    assert verdict.status == DOES_NOT_HOLD and "3.400" in verdict.numbers
    (metrics / "r2talker_landmark_encoding" / "S001.json").unlink()
    verdict = _verdict(metrics, "r2talker_landmarks_lower_lmd")
    assert verdict.status == NOT_MEASURABLE and "r2talker_landmark_encoding not run" in verdict.numbers


def test_records_without_per_frame_values_are_not_yet_measurable(tmp_path):
    metrics = tmp_path / "metrics"
    write_record(metrics, *BASE, "S001", {"M-LMD": 2.9}, with_samples=False)
    write_record(metrics, *LANDMARKS, "S001", {"M-LMD": 2.3}, with_samples=False)
    verdict = _verdict(metrics, "r2talker_landmarks_lower_lmd")
    assert verdict.status == NOT_MEASURABLE and "keeps no per-frame (or per-clip) M-LMD values" in verdict.numbers


def test_records_of_different_frame_counts_are_not_paired(tmp_path):
    metrics = tmp_path / "metrics"
    _pair(metrics, [1.0] * 100, [2.0] * 80)
    verdict = _verdict(metrics, "r2talker_landmarks_lower_lmd")
    assert verdict.status == NOT_MEASURABLE and "100 frames" in verdict.numbers and "80" in verdict.numbers


def test_every_seed_must_agree_and_the_spread_is_reported(tmp_path):
    metrics = tmp_path / "metrics"
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(1.0, 3.0, 150)
    for seed, shift in ((0, -0.4), (1, -0.5), (2, -0.3)):
        write_record(metrics, *BASE, "S001", {"M-LMD": (difficulty + rng.normal(0, 0.1, 150)).tolist()}, seed=seed)
        write_record(metrics, *LANDMARKS, "S001", {"M-LMD": (difficulty + shift + rng.normal(0, 0.1, 150)).tolist()},
                     seed=seed)
    verdict = _verdict(metrics, "r2talker_landmarks_lower_lmd")
    assert verdict.status == HOLDS
    assert all(f"seed {seed}" in verdict.numbers for seed in (0, 1, 2)) and "over seeds the difference spans" in \
        verdict.numbers
    write_record(metrics, *LANDMARKS, "S001", {"M-LMD": (difficulty + 0.4 + rng.normal(0, 0.1, 150)).tolist()},
                 seed=2)
    assert _verdict(metrics, "r2talker_landmarks_lower_lmd").status == INCONCLUSIVE  # seed 2 says the opposite


def test_a_claim_decided_without_stale_seeds_names_them(tmp_path):
    metrics = tmp_path / "metrics"
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(1.0, 3.0, 150)
    for seed, digest in ((0, "a"), (1, "a"), (2, "b")):
        write_record(metrics, *BASE, "S001", {"M-LMD": (difficulty + rng.normal(0, 0.1, 150)).tolist()}, seed=seed,
                     inputs_digest=digest)
        write_record(metrics, *LANDMARKS, "S001", {"M-LMD": (difficulty - 0.4 + rng.normal(0, 0.1, 150)).tolist()},
                     seed=seed, inputs_digest=digest if seed < 2 else "a")
    verdict = _verdict(metrics, "r2talker_landmarks_lower_lmd")
    # Seed 2 of the baseline was made from other inputs: the claim pairs seeds 0 and 1 and says what it left out.
    assert verdict.status == HOLDS and "seed 2" not in verdict.numbers.split("; left out")[0]
    assert verdict.numbers.endswith("; left out (records made from other code, config or data than the lowest "
                                    "seed's): r2talker_audio_baseline S001 seed 2")


def test_na_values_make_a_claim_not_yet_measurable(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")
    write_record(metrics, "r2talker_maglo", "r2talker", "maglo", "S001", {"PSNR": 27.9, "LPIPS": None})
    verdict = _verdict(metrics, "r2talker_maglo_lowers_lpips")
    assert verdict.status == NOT_MEASURABLE and "LPIPS of r2talker_maglo n/a" in verdict.numbers


def test_perceptual_claims_fall_back_to_ssim_and_say_so(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")
    write_record(metrics, "r2talker_maglo", "r2talker", "maglo", "S001", {"PSNR": 27.9, "LPIPS": None, "SSIM": 0.79})
    write_record(metrics, *LANDMARKS, "S001", {"PSNR": 27.5, "LPIPS": None, "SSIM": 0.71})
    verdict = _verdict(metrics, "r2talker_maglo_lowers_lpips")
    assert verdict.status == HOLDS and verdict.numbers.startswith("LPIPS n/a, SSIM instead: SSIM 0.790")
    write_record(metrics, "r2talker_maglo", "r2talker", "maglo", "S001", {"PSNR": 27.9, "LPIPS": 0.2, "SSIM": 0.70})
    write_record(metrics, *LANDMARKS, "S001", {"PSNR": 27.5, "LPIPS": 0.1, "SSIM": 0.71})
    verdict = _verdict(metrics, "r2talker_maglo_lowers_lpips")  # LPIPS present: it decides, SSIM is not read
    assert verdict.status == DOES_NOT_HOLD and verdict.numbers.startswith("LPIPS 0.200")


def test_ssim_is_not_a_proxy_when_the_runs_train_on_one_minus_ssim(tmp_path):
    metrics = tmp_path / "metrics"
    # What GSTalker's trainer writes when LPIPS's weights are absent and perceptual: auto fell back to 1 - SSIM.
    write_record(metrics, "gstalker", "gstalker", "", "S001", {"LPIPS": None, "SSIM": 0.80},
                 training={"iterations": 600, "perceptual_lpips": 0.0})
    write_record(metrics, "gstalker_no_perceptual", "gstalker", "no_perceptual", "S001",
                 {"LPIPS": None, "SSIM": 0.70}, training={"iterations": 600, "perceptual_loss": "none"})
    verdict = _verdict(metrics, "gstalker_lpips_loss_lowers_lpips")
    assert verdict.status == UNMEASURABLE
    assert "gstalker: its perceptual loss ran as 1 - SSIM" in verdict.numbers
    assert "gstalker_no_perceptual: its" not in verdict.numbers   # it declares no perceptual term
    # With LPIPS's weights the trainer uses LPIPS: SSIM is a fair stand-in again.
    write_record(metrics, "gstalker", "gstalker", "", "S001", {"LPIPS": None, "SSIM": 0.80},
                 training={"iterations": 600, "perceptual_loss": "lpips"})
    assert _verdict(metrics, "gstalker_lpips_loss_lowers_lpips").status == HOLDS


def test_psnr_margins_against_both_floors(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")   # static 20/22 dB, trained +5 dB and more
    assert _verdict(metrics, "trained_beat_static").status == HOLDS
    strict = default_claims(static_margin_db=6.0)
    verdict = _verdict(metrics, "trained_beat_static", claims=strict)
    assert verdict.status == DOES_NOT_HOLD
    assert "r2talker_audio_baseline [does not hold]: difference r2talker_audio_baseline - static (claimed above " \
           "+6): +5.000" in verdict.numbers
    assert _verdict(metrics, "trained_beat_nearest_pose").status == NOT_MEASURABLE
    for identity, psnr in (("S001", 26.0), ("S002", 26.5)):
        write_record(metrics, "nearest_pose", "nearest_pose", "", identity, {"PSNR": psnr, "M-LMD": 2.5, "Sync": 2.0})
    verdict = _verdict(metrics, "trained_beat_nearest_pose")
    # r2talker_audio_baseline: 25 vs 26 on S001, 27 vs 26.5 on S002: -0.25 dB over the two identities
    assert verdict.status == DOES_NOT_HOLD and "r2talker_audio_baseline [does not hold]" in verdict.numbers
    assert "r2talker [holds]" in verdict.numbers and "nearest_pose 26.00 dB (S001), 26.50 dB (S002)" in verdict.numbers


def test_motion_against_nearest_pose_is_judged_per_run(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")
    assert _verdict(metrics, "r2talker_beats_nearest_pose_motion").status == NOT_MEASURABLE
    write_record(metrics, "nearest_pose", "nearest_pose", "", "S001", {"PSNR": 24.0, "M-LMD": 2.6, "Sync": 2.0})
    write_record(metrics, "nearest_pose", "nearest_pose", "", "S002", {"PSNR": 24.0, "M-LMD": 2.6, "Sync": 2.0})
    verdict = _verdict(metrics, "r2talker_beats_nearest_pose_motion")
    # the baseline's M-LMD (2.9 / 2.7 px) is worse than the nearest pose's 2.6 px: the family's claim fails
    assert verdict.status == DOES_NOT_HOLD
    assert "r2talker_audio_baseline [does not hold]" in verdict.numbers
    assert "r2talker_landmark_encoding [holds]" in verdict.numbers and "r2talker [holds]" in verdict.numbers
    assert _verdict(metrics, "gstalker_beats_nearest_pose_motion").status == NOT_MEASURABLE


def test_training_time_is_compared_only_at_equal_budgets(tmp_path):
    metrics = tmp_path / "metrics"
    # the claim is the paper's: the a2m-aided run (the ablation tables' "Ours") does not stand in for its method
    write_record(metrics, "gstalker", "gstalker", "", "S001", {"Training time": 0.01}, training={"iterations": 600})
    verdict = _verdict(metrics, "gstalker_trains_faster_than_nerfs")
    assert verdict.status == NOT_MEASURABLE and verdict.numbers == "gstalker_paper_audio not run"
    write_record(metrics, "gstalker_paper_audio", "gstalker", "paper_audio", "S001", {"Training time": 0.03},
                 training={"iterations": 600})
    write_record(metrics, "r2talker", "r2talker", "", "S001", {"Training time": 0.04},
                 training={"iterations": 2000})
    verdict = _verdict(metrics, "gstalker_trains_faster_than_nerfs")
    assert verdict.status == UNMEASURABLE
    assert "gstalker_paper_audio 600 iterations vs r2talker 2000 iterations" in verdict.numbers and "jean not run" in \
        verdict.numbers
    write_record(metrics, "r2talker", "r2talker", "", "S001", {"Training time": 0.04},
                 training={"iterations": 600})
    verdict = _verdict(metrics, "gstalker_trains_faster_than_nerfs")
    assert verdict.status == INCONCLUSIVE and "too few for an interval" in verdict.numbers  # one timing each


def _speed_file(path, fps_a, fps_b, a="gstalker_paper_audio", b="r2talker"):
    data = {"hardware": "CPU x86_64", "threads": 2,
            "pairs": [{"identity": "S001", "a": a, "b": b, "resolution": [450, 450], "frames": 20,
                       "repetitions": len(fps_a), "fps_a": fps_a, "fps_b": fps_b}]}
    path.write_text(json.dumps(data))
    return path


def test_fps_claims_need_the_speed_stage_and_use_its_repetitions(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")
    write_record(metrics, "gstalker_paper_audio", "gstalker", "paper_audio", "S001", {"PSNR": 29.0, "FPS": 90.0})
    verdict = _verdict(metrics, "gstalker_renders_faster_than_nerfs")
    assert verdict.status == NOT_MEASURABLE and "separate evaluation processes" in verdict.numbers
    speed = load_speed(_speed_file(metrics / "speed.json", [5.4, 5.5, 5.3, 5.6, 5.4, 5.5, 5.3],
                                   [1.8, 1.9, 1.8, 1.7, 1.8, 1.9, 1.8]))
    assert load_records(metrics).has(("gstalker", "paper_audio"))   # speed.json beside the records is not a record
    verdict = _verdict(metrics, "gstalker_renders_faster_than_nerfs", speed=speed)
    assert verdict.status == HOLDS and "over 7 repetitions" in verdict.numbers and "450x450" in verdict.numbers
    assert "vs jean: jean not run" in verdict.numbers
    # the pair stored the other way round reads the same
    speed = load_speed(_speed_file(metrics / "speed.json", [1.8, 1.9, 1.8, 1.7, 1.8, 1.9, 1.8],
                                   [5.4, 5.5, 5.3, 5.6, 5.4, 5.5, 5.3], a="r2talker", b="gstalker_paper_audio"))
    assert _verdict(metrics, "gstalker_renders_faster_than_nerfs", speed=speed).status == HOLDS
    # overlapping repetitions: no finding
    speed = load_speed(_speed_file(metrics / "speed.json", [1.8, 2.1, 1.7, 2.0, 1.9], [1.9, 1.8, 2.0, 1.9, 2.0],
                                   a="r2talker", b="r2talker_audio_baseline"))
    verdict = _verdict(metrics, "r2talker_renders_faster_than_baseline", speed=speed)
    assert verdict.status == INCONCLUSIVE and "over 5 repetitions" in verdict.numbers


def test_a_malformed_speed_file_names_itself(tmp_path):
    with pytest.raises(SpeedError, match="fps_b.*4 values for 5 repetitions"):
        parse_speed({"hardware": "x", "threads": 1, "pairs": [
            {"identity": "S001", "a": "x", "b": "y", "resolution": [4, 4], "frames": 3, "repetitions": 5,
             "fps_a": [1.0] * 5, "fps_b": [1.0] * 4}]})
    assert load_speed(tmp_path / "absent.json") is None


def test_psnr_in_less_wall_time_needs_curves_validated_alike(tmp_path):
    metrics, models = write_corpus(tmp_path / "metrics"), tmp_path / "models"
    write_record(metrics, "gstalker_paper_audio", "gstalker", "paper_audio", "S001", {"PSNR": 29.0})
    r2_rows = [(0, 0.0, 1.0, None), (100, 50.0, 0.5, 24.0), (200, 100.0, 0.4, 27.0)]
    write_curve(models, "r2talker", "S001", r2_rows)
    write_curve(models, "gstalker_paper_audio", "S001", [(100, 20.0, 0.5, 26.0), (200, 40.0, 0.3, 27.5)])
    verdict = _verdict(metrics, "gstalker_reaches_r2talker_psnr_sooner", load_curves(models))
    assert verdict.status == UNMEASURABLE and "records no validation_frames" in verdict.numbers
    write_curve(models, "r2talker", "S001", r2_rows, validation=([10, 20, 30], [225, 225]))
    write_curve(models, "gstalker_paper_audio", "S001", [(100, 20.0, 0.5, 26.0), (200, 40.0, 0.3, 27.5)],
                validation=([10, 20, 30, 40], [450, 450]))
    verdict = _verdict(metrics, "gstalker_reaches_r2talker_psnr_sooner", load_curves(models))
    assert verdict.status == UNMEASURABLE and "3 validation frames at 225x225" in verdict.numbers
    write_curve(models, "gstalker_paper_audio", "S001", [(100, 20.0, 0.5, 26.0), (200, 40.0, 0.3, 27.5)],
                validation=([10, 20, 30], [225, 225]))
    verdict = _verdict(metrics, "gstalker_reaches_r2talker_psnr_sooner", load_curves(models))
    # comparable, but one curve pair is one timing: no interval
    assert verdict.status == INCONCLUSIVE and "27.00 dB at 100 s" in verdict.numbers and "40 s" in verdict.numbers
    write_curve(models, "gstalker_paper_audio", "S001", [(100, 20.0, 0.5, 26.0), (200, 40.0, 0.3, 26.5)],
                validation=([10, 20, 30], [225, 225]))
    verdict = _verdict(metrics, "gstalker_reaches_r2talker_psnr_sooner", load_curves(models))
    assert verdict.status == DOES_NOT_HOLD and "never" in verdict.numbers


def test_s3dnerf_fit_time_claim_is_decided_by_the_interval_of_its_timed_repetitions(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")
    cases = [(0.0, INCONCLUSIVE),  # one timing: nothing to resample
             ([3e-5, 2e-5, 4e-5, 3e-5, 3e-5, 2e-5, 4e-5, 3e-5], HOLDS),
             ([0.005, 0.015] * 4, INCONCLUSIVE),  # mean 0.01 h: on the paper's threshold
             ([2.0, 2.1, 1.9, 2.0, 2.0, 2.1, 1.9, 2.0], DOES_NOT_HOLD)]
    for times, status in cases:
        write_record(metrics, "s3dnerf", "s3dnerf", "", "S002", {"PSNR": 24.0, "Training time": times})
        verdict = _verdict(metrics, "s3dnerf_no_per_identity_training")
        assert verdict.status == status, (times, verdict.numbers)
    assert "over 8 timed fits" in verdict.numbers and "0.01 h" in verdict.numbers


def test_every_claim_row_lists_the_demo_aids_of_the_runs_it_compares(tmp_path):
    metrics = write_corpus(tmp_path / "metrics")
    outcome = _outcome(metrics, "r2talker_landmarks_lower_lmd")
    assert outcome.aids == (("r2talker_landmark_encoding", "demo aids: a2m audio, landmark grid 4/16 levels"),
                            ("r2talker_audio_baseline", "demo aids: a2m audio, landmark grid 4/16 levels"))
    floors = _outcome(metrics, "trained_beat_static")
    assert ("r2talker", "no demo aids") in floors.aids and all(method != "static" for method, _ in floors.aids)
    write_record(metrics, "gstalker", "gstalker", "", "S001", {"Sync": 1.0})   # a record from before aids
    assert ("gstalker", "demo aids not recorded (re-run its evaluate stage)") in \
        _outcome(metrics, "gstalker_static_init_raises_sync").aids
    markdown = claims_markdown(evaluate_claims(Evidence(load_records(metrics))))
    assert "| Demo aids of the runs compared | Status |" in markdown
    assert "r2talker_audio_baseline: demo aids: a2m audio, landmark grid 4/16 levels" in markdown


def test_claims_markdown_is_one_row_per_claim(tmp_path):
    outcomes = evaluate_claims(Evidence(load_records(write_corpus(tmp_path / "metrics"))))
    markdown = claims_markdown(outcomes)
    assert "| Claim | Paper | How measured | Our numbers | Demo aids of the runs compared | Status |" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "**" in line]
    assert len(rows) == len(CLAIMS)
    for status in STATUSES:
        assert f"{status}: {sum(o.verdict.status == status for o in outcomes)}" in markdown


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_every_claim_is_not_yet_measurable_without_records(tmp_path, claim):
    (tmp_path / "metrics").mkdir()
    verdict = claim.check(Evidence(load_records(tmp_path / "metrics")))
    assert verdict.status == NOT_MEASURABLE and verdict.numbers
