"""Metric records: the contract's JSON back into MetricValues, averaged over identities."""

from __future__ import annotations

import json
import math

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
