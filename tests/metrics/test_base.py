"""MetricValue, frame conversion, weights lookup and the availability report."""

import math

import numpy as np
import pytest
import torch

from talkhead_models.metrics import (METRICS, MetricValue, MissingWeightsError, WeightsError, acd, as_frames,
                                     available_metrics, fid, footnotes, lpips, substitute)
from talkhead_models.metrics.base import load_state_dict, require_weights


def test_cells_and_footnotes_say_what_was_measured_and_how():
    measured = MetricValue("PSNR", 31.23456, unit="dB")
    missing = MetricValue.not_available("LPIPS", "alexnet-owt-7be5be79.pth not found", higher_is_better=False)
    stand_in = MetricValue("AUE", 2.5, reference=substitute("landmark-based AU estimate"), note="per AU: ...")
    timed = MetricValue("FPS", 25.0, hardware="CPU x86_64, 2 threads")
    assert measured.cell(2) == "31.23" and measured.footnote() is None
    assert MetricValue("PSNR", math.inf).cell() == "inf"
    assert missing.cell() == "n/a" and not missing.available and missing.value is None
    assert missing.footnote() == "LPIPS: n/a (alexnet-owt-7be5be79.pth not found)"
    assert stand_in.substituted and stand_in.footnote() == "AUE: substitute: landmark-based AU estimate; per AU: ..."
    assert timed.footnote() == "FPS: measured on CPU x86_64, 2 threads"
    assert footnotes([measured, missing, stand_in, missing]) == [missing.footnote(), stand_in.footnote()]
    assert missing.to_dict()["value"] is None and missing.to_dict()["reference"] == "n/a"


def test_uint8_video_frames_become_float_tensors():
    frames = np.zeros((2, 4, 5, 3), np.uint8)
    frames[1, 2, 3] = (255, 0, 51)
    tensor = as_frames(frames)
    assert tensor.shape == (2, 3, 4, 5) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[1, :, 2, 3], torch.tensor([1.0, 0.0, 0.2]))
    assert as_frames(torch.rand(3, 8, 8)).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="uint8 RGB"):
        as_frames(np.zeros((2, 4, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        as_frames(torch.rand(2, 1, 8, 8))


def test_missing_weights_give_n_a_with_the_file_name_and_a_footnote(tmp_path):
    frames = torch.rand(2, 3, 64, 64)
    values = [lpips(frames, frames, weights=tmp_path), fid(frames, frames, weights=tmp_path),
              acd(frames, frames, weights=tmp_path)]
    files = ["alexnet-owt-7be5be79.pth", "pt_inception-2015-12-05-6726825d.pth", "arcface_r50.pth"]
    for value, file in zip(values, files):
        assert value.value is None and value.reference == "n/a" and value.cell() == "n/a"
        assert file in value.note and "docs/WEIGHTS.md" in value.note
        assert value.footnote().startswith(f"{value.name}: n/a (") and file in value.footnote()
    assert len(footnotes(values)) == 3


def test_weights_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKHEAD_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=str(tmp_path)):
        require_weights(None, "arcface_r50.pth", "ArcFace")
    (tmp_path / "arcface_r50.pth").write_bytes(b"not a checkpoint")
    assert require_weights(None, "arcface_r50.pth", "ArcFace") == tmp_path / "arcface_r50.pth"
    with pytest.raises(WeightsError, match="arcface_r50.pth"):
        load_state_dict(tmp_path / "arcface_r50.pth")


def test_state_dict_containers_and_data_parallel_prefixes_are_unwrapped(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"module.layer.weight": torch.ones(2)}}, path)
    assert list(load_state_dict(path)) == ["layer.weight"]
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="state dict"):
        load_state_dict(path)


def test_availability_follows_the_weights_folder(tmp_path):
    empty = available_metrics(tmp_path)
    assert set(empty) == set(METRICS)
    assert empty["PSNR"] == empty["SSIM"] == empty["M-LMD"] == empty["CPBD"] == "reference"
    assert empty["LPIPS"].startswith("n/a: missing alexnet-owt-7be5be79.pth, lpips_alex_lin.pth")
    assert empty["FID"].startswith("n/a") and empty["ACD"].startswith("n/a")
    assert empty["AUE"] == "substitute: landmark-based AU estimate (OpenFace not available)"
    assert empty["LSE-C"].startswith("substitute: ")
    for name in ("alexnet-owt-7be5be79.pth", "lpips_alex_lin.pth", "pt_inception-2015-12-05-6726825d.pth",
                 "arcface_r50.pth", "syncnet_v2.model"):
        (tmp_path / name).touch()
    full = available_metrics(tmp_path)
    assert full["LPIPS"] == full["FID"] == full["ACD"] == full["Sync"] == full["LSE-D"] == "reference"
    assert full["AUE"].startswith("substitute: ")


def test_per_frame_values_travel_through_json_rounded_to_five_significant_digits():
    import json

    value = MetricValue("LSE-C", 0.5, per_frame=np.array([0.123456789, 1234567.0, -2.0, math.inf]),
                        sample_unit="clip")
    data = json.loads(json.dumps(value.to_dict()))
    assert data["per_frame"] == [0.12346, 1234600.0, -2.0, math.inf] and data["sample_unit"] == "clip"
    back = MetricValue.from_dict(data)
    assert back == value and back.sample_unit == "clip"
    np.testing.assert_array_equal(back.per_frame, [0.12346, 1234600.0, -2.0, math.inf])
    assert "per_frame" not in MetricValue("FPS", 3.0).to_dict()
    assert MetricValue.from_dict({"name": "PSNR", "value": 1.0}).per_frame is None
    with pytest.raises(ValueError, match="sample_unit"):
        MetricValue.from_dict({**data, "sample_unit": "second"})
    with pytest.raises(ValueError, match="per_frame"):
        MetricValue.from_dict({**data, "per_frame": ["1.0"]})
