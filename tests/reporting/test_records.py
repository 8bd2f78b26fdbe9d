"""Metric records: the contract's JSON back into MetricValues, averaged over identities."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from talkhead_models.metrics.base import MetricValue
from talkhead_models.reporting.records import RecordError, average, load_records
from tests.reporting.records_fixture import LPIPS_MISSING, SYNC_SUBSTITUTE, metric, write_corpus, write_record


def test_from_dict_inverts_to_dict_through_json_including_infinity_and_na():
    for value in (metric("PSNR", float("inf")), metric("Sync", 6.25), metric("LPIPS", None), metric("FPS", 31.0)):
        back = MetricValue.from_dict(json.loads(json.dumps(value.to_dict())))
        assert back == value
    assert "Infinity" in json.dumps(metric("PSNR", float("inf")).to_dict())
    assert MetricValue.from_dict(json.loads('{"name": "PSNR", "value": Infinity}')).cell() == "inf"


def test_from_dict_rejects_a_value_that_is_not_a_number():
    with pytest.raises(ValueError, match="PSNR"):
        MetricValue.from_dict({"name": "PSNR", "value": "31.2"})


def test_records_load_and_average_over_identities(tmp_path):
    records = load_records(write_corpus(tmp_path / "metrics"))
    assert len(records) == 8
    assert records.keys()[:2] == [("ground_truth", ""), ("static", "")]
    baseline = records.aggregate(("r2talker", "audio_baseline"), "self", "PSNR")
    assert baseline.value.value == pytest.approx(26.0) and baseline.value.unit == "dB"
    assert baseline.identities == ("S001", "S002") and baseline.missing == ()
    assert math.isinf(records.aggregate(("ground_truth", ""), "self", "PSNR").value.value)
    assert records.aggregate(("r2talker", "maglo"), "self", "PSNR") is None


def test_an_identity_without_the_value_is_left_out_of_the_mean_and_named():
    values = {"S001": metric("Sync", 5.0), "S002": metric("Sync", None), "S003": metric("Sync", 7.0)}
    result = average("Sync", values)
    assert result.value.value == pytest.approx(6.0)
    assert result.value.reference == SYNC_SUBSTITUTE
    notes = result.footnotes("r2talker")
    assert any("S002" in note and "2 of 3" in note for note in notes)
    everything_missing = average("LPIPS", {"S001": metric("LPIPS", None), "S002": None})
    assert everything_missing.value.cell() == "n/a"
    assert LPIPS_MISSING in everything_missing.value.footnote()


def test_a_record_breaking_the_contract_names_its_file(tmp_path):
    path = write_record(tmp_path, "static", "static", "", "S001", {"PSNR": 20.0})
    data = json.loads(path.read_text())
    del data["settings"]
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"static/S001\.json.*'settings' is missing"):
        load_records(tmp_path)


def test_a_record_stored_under_another_name_is_refused(tmp_path):
    path = write_record(tmp_path, "static", "static", "", "S001", {"PSNR": 20.0})
    path.rename(path.with_name("S009.json"))
    with pytest.raises(RecordError, match="<method>/<identity>.json"):
        load_records(tmp_path)


def test_missing_metrics_folder_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="evaluate"):
        load_records(tmp_path / "absent")


def test_per_frame_values_seed_aids_and_training_round_trip_through_the_record(tmp_path):
    sync = [0.42, 0.51, 0.38, 0.47, 0.44, 0.40]
    path = write_record(tmp_path, "gstalker", "gstalker", "", "S001", {"PSNR": 24.123456789, "Sync": sync},
                        seed=2, demo_aids=["a2m audio", "mouth-motion prior"], training={"iterations": 600})
    assert path.name == "S001.seed2.json"
    assert '"per_frame": [' in path.read_text() and path.read_text().count("\n") < 60   # one line per list
    record = load_records(tmp_path).records[0]
    assert (record.seed, record.demo_aids, record.training) == (2, ("a2m audio", "mouth-motion prior"),
                                                                {"iterations": 600})
    psnr, lip = record.metric("self", "PSNR"), record.metric("self", "Sync")
    assert lip.sample_unit == "clip" and lip.per_frame.tolist() == sync
    assert psnr.sample_unit == "frame" and len(psnr.per_frame) == 120
    # rounded to 5 significant digits, so the mean of the stored values is the value to about 1e-5 relative
    assert psnr.per_frame.mean() == pytest.approx(24.123456789, rel=2e-5)


def test_a_record_without_seed_or_aids_is_seed_0_with_aids_unknown(tmp_path):
    write_record(tmp_path, "static", "static", "", "S001", {"PSNR": 20.0})
    record = load_records(tmp_path).records[0]
    assert record.seed == 0 and record.demo_aids is None and record.training == {}


def test_a_seed_file_must_hold_its_seed_and_a_seed_is_recorded_once(tmp_path):
    write_record(tmp_path, "static", "static", "", "S001", {"PSNR": 20.0})
    path = write_record(tmp_path, "static", "static", "", "S001", {"PSNR": 20.0}, seed=1)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "seed": 0}))
    with pytest.raises(RecordError, match="stored as seed 1"):
        load_records(tmp_path)
    path.rename(path.with_name("S001.seed0.json"))   # seed 0 again, beside S001.json (seed 0 by default)
    with pytest.raises(RecordError, match="a second record of static on S001, seed 0"):
        load_records(tmp_path)


def test_several_seeds_average_to_a_mean_with_their_spread(tmp_path):
    for seed, psnr in ((0, 24.0), (1, 25.0), (2, 26.5)):
        for identity, offset in (("S001", 0.0), ("S002", 1.0)):
            write_record(tmp_path, "r2talker", "r2talker", "", identity, {"PSNR": psnr + offset}, seed=seed)
    records = load_records(tmp_path)
    result = records.aggregate(("r2talker", ""), "self", "PSNR")
    per_seed = [24.5, 25.5, 27.0]    # each seed's mean over the two identities
    assert result.seeds == (0, 1, 2) and result.identities == ("S001", "S002")
    assert result.value.value == pytest.approx(np.mean(per_seed))
    assert result.spread == pytest.approx(np.std(per_seed, ddof=1))
    assert result.cell(2) == f"{np.mean(per_seed):.2f} ± {np.std(per_seed, ddof=1):.2f}"
    assert any("over seeds 0, 1, 2" in note for note in result.footnotes("r2talker"))


def test_pairs_line_up_by_frame_and_refuse_different_counts(tmp_path):
    write_record(tmp_path, "static", "static", "", "S001", {"M-LMD": [3.0, 3.1, 2.9]})
    write_record(tmp_path, "r2talker", "r2talker", "", "S001", {"M-LMD": [1.0, 1.2, 0.8]}, seed=0)
    write_record(tmp_path, "r2talker", "r2talker", "", "S001", {"M-LMD": [1.1, 1.3, 0.9]}, seed=1)
    records = load_records(tmp_path)
    pairing = records.paired(("r2talker", ""), ("static", ""), "M-LMD")
    # the reference row has no seed: it pairs with every seed of the trained run
    assert [(p.seed_a, p.seed_b) for p in pairing.pairs] == [(0, 0), (1, 0)] and not pairing.problems
    np.testing.assert_array_equal(pairing.pairs[1].a - pairing.pairs[1].b, [-1.9, -1.8, -2.0])
    write_record(tmp_path, "static", "static", "", "S001", {"M-LMD": [3.0, 3.1]})
    pairing = load_records(tmp_path).paired(("r2talker", ""), ("static", ""), "M-LMD")
    assert not pairing.pairs and "has 3 frames, of static 2" in pairing.problems[0]


def test_records_scored_on_other_clips_are_not_paired(tmp_path):
    for method, clips in (("static", ["a/001", "a/002"]), ("r2talker", ["a/001", "a/003"])):
        path = write_record(tmp_path, method, method, "", "S001", {"M-LMD": [1.0, 2.0, 3.0, 4.0]})
        data = json.loads(path.read_text())
        data["settings"]["self"]["clips"] = [{"clip": clip, "audio_identity": "S001", "frames": 2} for clip in clips]
        path.write_text(json.dumps(data))
    pairing = load_records(tmp_path).paired(("r2talker", ""), ("static", ""), "M-LMD")
    assert not pairing.pairs and "different self-driven clips" in pairing.problems[0]


def test_a_record_carries_its_inputs_digest_and_a_wrong_type_names_the_file(tmp_path):
    write_record(tmp_path, "r2talker", "r2talker", "", "S001", {"PSNR": 24.0}, inputs_digest="ab" * 32)
    path = write_record(tmp_path, "r2talker", "r2talker", "", "S002", {"PSNR": 24.0}, inputs_digest=None)
    assert [r.inputs_digest for r in load_records(tmp_path).records] == ["ab" * 32, None]
    path.write_text(json.dumps({**json.loads(path.read_text()), "inputs_digest": 12}))
    with pytest.raises(RecordError, match=r"S002\.json: 'inputs_digest' should be a string"):
        load_records(tmp_path)


A, B = "a" * 64, "b" * 64


def _seeds(folder, runs, method=("r2talker", "r2talker", "")):
    """``runs``: (seed, identity, PSNR, inputs_digest)."""
    for seed, identity, psnr, digest in runs:
        write_record(folder, *method, identity, {"PSNR": psnr}, seed=seed, inputs_digest=digest, with_samples=False)
    return load_records(folder)


def test_seeds_made_from_the_same_inputs_are_averaged(tmp_path):
    records = _seeds(tmp_path, [(0, "S001", 24.0, A), (0, "S002", 25.0, A), (1, "S001", 25.5, A),
                                (1, "S002", 26.5, A)])
    result = records.aggregate(("r2talker", ""), "self", "PSNR")
    # seed means 24.5 and 26.0: mean 25.25, sample standard deviation 1.5 / sqrt(2)
    assert result.seeds == (0, 1) and not records.left_out and not records.dropped
    assert result.value.value == pytest.approx(25.25, abs=1e-12)
    assert result.spread == pytest.approx(1.0606601717798212, abs=1e-12)


def test_a_seed_made_from_other_inputs_is_left_out_and_said_so(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="talkhead_models.reporting.records"):
        records = _seeds(tmp_path, [(0, "S001", 24.0, A), (1, "S001", 26.0, A), (2, "S001", 40.0, B)],
                         method=("r2talker_maglo", "r2talker", "maglo"))
    result = records.aggregate(("r2talker", "maglo"), "self", "PSNR")
    assert result.seeds == (0, 1) and result.value.value == pytest.approx(25.0, abs=1e-12)
    assert result.spread == pytest.approx(2 ** 0.5, abs=1e-12)
    note = ("r2talker_maglo S001 seed 2: left out of the mean; its record was made from other code, config or data "
            "than seed 0's (inputs_digest differs); retrain it: set `seeds: [0, 1, 2]` in params.yaml and run "
            "`make demo`")
    assert records.left_out == [note] and [r.seed for r in records.dropped] == [2]
    assert records.left_out_of(("r2talker", "maglo")) == [note] and not records.left_out_of(("r2talker", ""))
    assert records.seeds(("r2talker", "maglo")) == (0, 1)   # nor compared: claims pair only the seeds kept
    assert records.seeds_left_out(("r2talker", "maglo")) == ["r2talker_maglo S001 seed 2"]
    assert records.seeds_left_out(("r2talker", "")) == []
    assert [r.message for r in caplog.records if r.levelname == "WARNING"] == [note]


def test_a_seed_without_a_digest_is_left_out_whichever_side_lacks_it(tmp_path):
    records = _seeds(tmp_path / "other", [(0, "S001", 24.0, A), (1, "S001", 26.0, None)])
    assert records.seeds(("r2talker", "")) == (0,)
    assert records.left_out == ["r2talker S001 seed 1: left out of the mean; its record has no inputs_digest (made "
                                "before records carried one); retrain it: set `seeds: [0, 1]` in params.yaml and "
                                "run `make demo`"]
    records = _seeds(tmp_path / "reference", [(0, "S001", 24.0, None), (1, "S001", 26.0, A)])
    assert records.seeds(("r2talker", "")) == (0,)
    assert "seed 1: left out of the mean; its record cannot be matched with seed 0's, which has no inputs_digest" \
        in records.left_out[0]
    # two records from before digests existed are not assumed to match either
    assert _seeds(tmp_path / "neither", [(0, "S001", 24.0, None), (1, "S001", 26.0, None)]).seeds(
        ("r2talker", "")) == (0,)


def test_the_lowest_seed_is_the_reference_even_when_it_is_not_0(tmp_path):
    # seeds 5 and 7 agree with each other, not with seed 3: the lowest seed decides, not the majority
    records = _seeds(tmp_path, [(3, "S001", 24.0, A), (5, "S001", 30.0, B), (7, "S001", 31.0, B),
                                (5, "S002", 28.0, B), (9, "S002", 29.0, B)])
    assert [(r.identity, r.seed) for r in records.dropped] == [("S001", 5), ("S001", 7)]
    assert all("than seed 3's" in note and "`seeds: [3, 5, 7]`" in note for note in records.left_out)
    # S002's lowest seed is 5, so its seed 9 stays; seed 5 of S001 is named missing from seed 5's mean
    assert [(r.identity, r.seed) for r in records.of(("r2talker", ""))] == [("S001", 3), ("S002", 5), ("S002", 9)]
    result = records.aggregate(("r2talker", ""), "self", "PSNR")
    assert result.seeds == (3, 5, 9) and result.value.value == pytest.approx((24.0 + 28.0 + 29.0) / 3, abs=1e-12)
    assert ("S001 seed 5", "not recorded") in result.missing and ("S001 seed 9", "not recorded") in result.missing


def test_reference_rows_are_not_checked_for_seeds(tmp_path):
    records = _seeds(tmp_path, [(0, "S001", 20.0, A), (1, "S001", 20.0, None)], method=("static", "static", ""))
    assert records.seeds(("static", "")) == (0, 1) and not records.left_out
