"""benchmarks.seed_spread: the seed goes only into the family's seed field; spreads and verdicts per seed."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.seed_spread import report_lines, seeded_config, summarise
from talkhead_models.reporting import DOES_NOT_HOLD, HOLDS
from tests.reporting.records_fixture import write_record


def test_only_the_seed_changes_and_reference_rows_have_none():
    params = {"profile": "demo", "r2talker": {"iterations": 77},
              "profiles": {"demo": {"r2talker": {"march_steps": 33}}}}
    cfg, has_seed = seeded_config("r2talker_maglo", params, 5)
    base, _ = seeded_config("r2talker_maglo", params, 0)
    assert has_seed and cfg.seed == 5 and base.seed == 0
    assert (cfg.iterations, cfg.march_steps, cfg.maglo, cfg.progressive) == (77, 33, True, False)
    assert dataclasses.replace(cfg, seed=0) == base
    assert seeded_config("static", params, 5)[1] is False


def _ladder(folder, baseline_lmd: float, landmark_lmd: float, maglo_ssim: float):
    write_record(folder, "static", "static", "", "S001", {"PSNR": 18.0, "M-LMD": 1.6, "SSIM": 0.6})
    write_record(folder, "r2talker_audio_baseline", "r2talker", "audio_baseline", "S001",
                 {"PSNR": 25.0, "M-LMD": baseline_lmd, "SSIM": 0.79, "LPIPS": None})
    write_record(folder, "r2talker_landmark_encoding", "r2talker", "landmark_encoding", "S001",
                 {"PSNR": 24.5, "M-LMD": landmark_lmd, "SSIM": 0.78, "LPIPS": None})
    write_record(folder, "r2talker_maglo", "r2talker", "maglo", "S001",
                 {"PSNR": 24.9, "M-LMD": 0.9, "SSIM": maglo_ssim, "LPIPS": None})
    return folder


def test_spreads_and_verdict_counts_over_seeds(tmp_path):
    folders = {0: _ladder(tmp_path / "s0", 1.24, 1.45, 0.79),   # landmark encoding worse, M-AGLO better
               1: _ladder(tmp_path / "s1", 1.30, 1.10, 0.77),   # landmark encoding better, M-AGLO worse
               2: _ladder(tmp_path / "s2", 1.20, 1.00, 0.80)}
    result = summarise(folders, {})
    assert result["seeds"] == [0, 1, 2]
    lmd = result["metrics"]["r2talker_landmark_encoding@S001"]["self"]["M-LMD"]
    assert lmd["values"] == [1.45, 1.10, 1.00]
    assert lmd["mean"] == pytest.approx(3.55 / 3) and lmd["std"] == pytest.approx(0.2363, abs=1e-4)
    assert (lmd["min"], lmd["max"]) == (1.00, 1.45)
    assert "LPIPS" not in result["metrics"]["r2talker_maglo@S001"]["self"]  # n/a values are no spread
    claims = {claim["id"]: claim for claim in result["claims"]}
    landmarks = claims["r2talker_landmarks_lower_lmd"]
    assert landmarks["counts"] == {DOES_NOT_HOLD: 1, HOLDS: 2}
    assert [landmarks["per_seed"][s]["status"] for s in ("0", "1", "2")] == [DOES_NOT_HOLD, HOLDS, HOLDS]
    assert "1.450" in landmarks["per_seed"]["0"]["numbers"]
    assert claims["r2talker_maglo_lowers_lpips"]["counts"] == {HOLDS: 2, DOES_NOT_HOLD: 1}  # SSIM stands in
    # Claims no seed could measure (GSTalker's, JEAN's, ...) are left out, not reported as three "not measurable".
    assert "gstalker_hash_grid_lowers_lmd" not in claims and "r2talker_progressive_raises_psnr" not in claims
    lines = report_lines(result)
    assert any(line.startswith("r2talker_landmark_encoding@S001: ") and "M-LMD 1.183 +- 0.236" in line
               for line in lines)
    assert any("Landmark encoding lowers LMD" in line and "holds 2" in line for line in lines)
