"""The evaluation on the two reference methods: what the metrics must give the real frames and a still frame."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from talkhead_models.evaluation import EvaluationConfig, EvaluationInputs, evaluate_method
from talkhead_models.evaluation.driving import FrameBudget, driving_kinds, drivings, ping_pong
from talkhead_models.evaluation.evaluate import combine
from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.media import probe
from talkhead_models.methods import Driving, get_method, method_names
from talkhead_models.metrics import MetricValue
from talkhead_models.preprocess.audio_features import AudioConfig


class FramesCountingScorer:
    """A stand-in sync scorer whose confidence is the clip length / 100: averages are checkable by hand."""

    reference = "substitute: test scorer"

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def score(self, frames_or_mouths, audio):
        frames, landmarks = frames_or_mouths
        assert len(audio) == 640 * len(frames) and landmarks.shape == (len(frames), 68, 2)
        self.lengths.append(len(frames))
        return len(frames) / 100.0, 1.0, 0


def _evaluate(name: str, root: Path, corpus: Path, tmp_path: Path, monkeypatch, scorer=None, **budget) -> dict:
    spec = get_method(name)
    cfg = spec.resolve_config({})
    model = tmp_path / "models" / name
    model.mkdir(parents=True)
    spec.train(cfg, root / "S001", {}, model)
    (model / "train.json").write_text(json.dumps({"seconds": 7.2, "hardware": "test CPU"}))
    videos = tmp_path / "videos" / name
    videos.mkdir(parents=True)
    monkeypatch.setattr("talkhead_models.evaluation._sync_scorer", lambda inputs: scorer)
    inputs = EvaluationInputs(identity_root=root / "S001", model_dir=model, raw_root=corpus, sync_expert=None,
                              face_model=None, pretrained={}, weights=tmp_path / "no_weights")
    return evaluate_method(spec, cfg, EvaluationConfig(**budget), AudioConfig(), inputs, videos, profile="test")


def _value(record: dict, role: str, name: str):
    return record["settings"][role]["metrics"][name]["value"]


def test_reference_methods_are_registered():
    assert {"ground_truth", "static"} <= set(method_names())
    with pytest.raises(KeyError, match="registered"):
        get_method("no_such_method")


def test_ground_truth_row_is_perfect_self_driven_and_not_available_cross_driven(evaluation_root, tiny_corpus,
                                                                                 tmp_path, monkeypatch):
    scorer = FramesCountingScorer()
    record = _evaluate("ground_truth", evaluation_root, tiny_corpus, tmp_path, monkeypatch, scorer=scorer,
                       max_cross_expression_frames=60)
    assert math.isinf(_value(record, "self", "PSNR")) and _value(record, "self", "PSNR") > 0
    assert _value(record, "self", "SSIM") == pytest.approx(1.0, abs=1e-6)
    assert _value(record, "self", "M-LMD") == 0.0 and _value(record, "self", "F-LMD") == 0.0
    # Lip sync is averaged over clips (Wav2Lip averages over videos), not over frames.
    self_clips = len(record["settings"]["self"]["clips"])  # the scorer also saw the other settings' clips
    assert _value(record, "self", "LSE-C") == pytest.approx(np.mean(scorer.lengths[:self_clips]) / 100.0)
    reader = IdentityReader(evaluation_root / "S001")
    assert record["settings"]["self"]["frames"] == int(reader.validation_mask().sum())
    cross = record["settings"]["cross"]["metrics"]
    assert cross["PSNR"]["value"] is None and "no frames" in cross["PSNR"]["note"]
    # Missing weights: n/a with the file named, never a number.
    lpips = record["settings"]["self"]["metrics"]["LPIPS"]
    assert lpips["value"] is None and lpips["reference"] == "n/a" and "alexnet" in lpips["note"]
    assert MetricValue.from_dict(lpips).footnote().startswith("LPIPS: n/a")
    assert record["settings"]["self"]["metrics"]["Training time"]["value"] == pytest.approx(7.2 / 3600)
    # The values behind each mean stay in the record: per frame, and per clip for the lip-sync scores.
    frames = record["settings"]["self"]["frames"]
    metrics = record["settings"]["self"]["metrics"]
    for name in ("PSNR", "SSIM", "M-LMD", "F-LMD", "AUE", "CPBD"):
        assert metrics[name]["sample_unit"] == "frame" and len(metrics[name]["per_frame"]) == frames, name
    assert metrics["PSNR"]["per_frame"] == [math.inf] * frames and metrics["M-LMD"]["per_frame"] == [0.0] * frames
    assert metrics["LSE-C"]["sample_unit"] == "clip"
    assert metrics["LSE-C"]["per_frame"] == pytest.approx([n / 100.0 for n in scorer.lengths[:len(
        record["settings"]["self"]["clips"])]])
    assert "per_frame" not in metrics["LPIPS"] and "per_frame" not in metrics["Training time"]
    assert record["demo_aids"] == [] and "seed" not in record   # a reference row: no aids, no training seed
    # Cross-expression: the ground truth shows the audio source's own frames, so its lips are A's exactly.
    crossed = record["settings"]["cross_expression"]
    assert crossed["frames"] > 0 and crossed["metrics"]["M-LMD"]["value"] == 0.0
    assert crossed["metrics"]["M-LMD"]["per_frame"] == [0.0] * crossed["frames"]
    assert "PSNR" not in crossed["metrics"] and crossed["metrics"]["Sync"]["sample_unit"] == "clip"


def test_static_row_is_finite_and_worse_than_the_truth(evaluation_root, tiny_corpus, tmp_path, monkeypatch):
    record = _evaluate("static", evaluation_root, tiny_corpus, tmp_path, monkeypatch, scorer=None,
                       max_self_frames=60, max_cross_frames=60, max_cross_expression_frames=60, min_clip_frames=30)
    psnr = _value(record, "self", "PSNR")
    assert math.isfinite(psnr) and 10.0 < psnr < 60.0
    stored = record["settings"]["self"]["metrics"]["PSNR"]["per_frame"]
    assert len(stored) == record["settings"]["self"]["frames"] and np.mean(stored) == pytest.approx(psnr, rel=1e-5)
    cpbd_cross = record["settings"]["cross"]["metrics"]["CPBD"]
    assert len(cpbd_cross["per_frame"]) == record["settings"]["cross"]["frames"]
    assert _value(record, "self", "M-LMD") > 0.0
    assert record["settings"]["self"]["frames"] <= 60 and 0 < record["settings"]["cross"]["frames"] <= 60
    # Without any sync scorer the lip-sync columns are n/a with the reason.
    sync = record["settings"]["cross"]["metrics"]["LSE-C"]
    assert sync["value"] is None and "sync" in sync["note"]
    assert _value(record, "cross", "CPBD") > 0.0
    videos = tmp_path / "videos" / "static"
    self_video = probe(videos / "self.mp4")
    assert self_video.width == 2 * self_video.height  # rendered | ground truth
    assert self_video.has_audio and (videos / "self.jpg").is_file() and (videos / "cross.mp4").is_file()
    crossed = probe(videos / "cross_expression.mp4")
    assert crossed.width == 3 * crossed.height  # audio source | expression source | rendered


def test_an_identity_of_its_own_budget_renders_that_many_self_driven_frames(evaluation_root, tiny_corpus, tmp_path,
                                                                             monkeypatch):
    budget = dict(max_self_frames=30, max_cross_frames=30, min_clip_frames=30, videos=False)
    plain = _evaluate("static", evaluation_root, tiny_corpus, tmp_path / "plain", monkeypatch, **budget)
    own = _evaluate("static", evaluation_root, tiny_corpus, tmp_path / "own", monkeypatch,
                    self_frames_per_identity={"S001": 60}, **budget)
    other = _evaluate("static", evaluation_root, tiny_corpus, tmp_path / "other", monkeypatch,
                      self_frames_per_identity={"S002": 60}, **budget)
    assert plain["settings"]["self"]["frames"] == other["settings"]["self"]["frames"] == 30
    assert own["settings"]["self"]["frames"] == 60
    # the same budget's first frames are the same frames: the 60 begin with the 30
    first = plain["settings"]["self"]["metrics"]["PSNR"]["per_frame"]
    assert own["settings"]["self"]["metrics"]["PSNR"]["per_frame"][:30] == pytest.approx(first)
    assert own["settings"]["cross"]["frames"] == 30


def test_frame_budget_shares_frames_between_clips():
    budget = FrameBudget(max_frames=100, min_clip_frames=30)
    assert budget.allot([80, 80, 80]) == [33, 33, 33]
    assert budget.allot([80, 10, 80, 80, 80]) == [30, 10, 30, 30, 0]
    assert FrameBudget(max_frames=0).allot([5, 7]) == [5, 7]


def test_ping_pong_never_jumps():
    walk = ping_pong(np.array([3, 4, 5]), 9)
    assert walk.tolist() == [3, 4, 5, 4, 3, 4, 5, 4, 3]
    assert np.abs(np.diff(walk)).max() == 1


def test_cross_drivings_use_the_other_identity_audio_and_own_cameras(evaluation_root, tiny_corpus):
    reader = IdentityReader(evaluation_root / "S001")
    cross = drivings(reader, "cross", FrameBudget(max_frames=40, min_clip_frames=20), tiny_corpus, AudioConfig(),
                     ("mel",))
    assert cross and all(d.audio_identity == "S002" and d.identity == "S001" for d in cross)
    validation = set(np.flatnonzero(reader.validation_mask()).tolist())
    for driving in cross:
        assert set(driving.frame_indices.tolist()) <= validation
        assert driving.audio_features["mel"].shape == (driving.num_frames, 16, 95)
        assert len(driving.audio) == 640 * driving.num_frames and driving.landmarks is None


def test_drivings_carry_the_extra_kinds_the_audio_stage_wrote(evaluation_root, tiny_corpus, tmp_path):
    import shutil

    # The shared identity has mel only: an extra kind never written (its package missing) is left out.
    reader = IdentityReader(evaluation_root / "S001")
    audio_cfg = AudioConfig(extra_kinds=("wav2vec2",))
    assert driving_kinds(reader, audio_cfg) == ("mel",)
    # Written, it rides along: self-driven from its file, cross-driven computed from the other identity's audio.
    copy = tmp_path / "S001"
    shutil.copytree(evaluation_root / "S001", copy)
    mel = np.load(copy / "features" / "aud_mel.npy")
    np.save(copy / "features" / "aud_wav2vec2.npy", mel[..., :44] * 2)
    reader = IdentityReader(copy)
    assert driving_kinds(reader, audio_cfg) == ("mel", "wav2vec2")
    own = drivings(reader, "self", FrameBudget(max_frames=10), tiny_corpus, audio_cfg, driving_kinds(reader, audio_cfg))
    np.testing.assert_array_equal(own[0].audio_features["wav2vec2"], 2 * own[0].audio_features["mel"][..., :44])
    with pytest.raises(Exception, match="wav2vec2-large-xlsr-53-esperanto"):
        drivings(reader, "cross", FrameBudget(max_frames=10), tiny_corpus, audio_cfg, ("mel", "wav2vec2"),
                 weights=tmp_path / "no_weights")


def test_driving_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="eye values"):
        Driving(identity="S001", role="self", audio=np.zeros(640 * 3), audio_features={},
                eye=np.zeros(2), frame_indices=np.arange(3))


def test_record_json_keeps_number_lists_on_one_line_and_reads_back():
    from talkhead_models.evaluation import record_json

    record = {"settings": {"self": {"metrics": {"PSNR": MetricValue(
        "PSNR", 20.0, unit="dB", per_frame=np.array([19.123456789, math.inf, 20.5])).to_dict()}}}}
    text = record_json(record)
    assert '"per_frame": [19.123, Infinity, 20.5]' in text
    assert json.loads(text) == json.loads(json.dumps(record))


def test_demo_aids_of_the_run_config_go_into_the_record(evaluation_root, tiny_corpus, tmp_path, monkeypatch):
    from talkhead_models.config import demo_aid

    @dataclasses.dataclass(frozen=True)
    class AidedConfig:
        seed: int = 0
        levels: int = demo_aid(16, "landmark grid {value}/{default} levels")

    spec = get_method("static")
    aided = dataclasses.replace(spec, load=lambda cfg, *args: spec.load(spec.resolve_config({}), *args))
    monkeypatch.setattr("talkhead_models.evaluation._sync_scorer", lambda inputs: None)
    model = tmp_path / "model"
    model.mkdir()
    spec.train(spec.resolve_config({}), evaluation_root / "S001", {}, model)
    inputs = EvaluationInputs(identity_root=evaluation_root / "S001", model_dir=model, raw_root=tiny_corpus,
                              sync_expert=None, face_model=None, pretrained={}, weights=tmp_path / "no_weights")
    record = evaluate_method(aided, AidedConfig(seed=3, levels=4), EvaluationConfig(
        max_self_frames=30, max_cross_frames=30, max_cross_expression_frames=30, min_clip_frames=30, videos=False),
        AudioConfig(), inputs, None)
    assert record["demo_aids"] == ["landmark grid 4/16 levels"] and record["seed"] == 3


def test_combine_weights_by_frames_and_keeps_not_available():
    a = MetricValue("PSNR", 20.0, unit="dB")
    b = MetricValue("PSNR", 30.0, unit="dB")
    assert combine("PSNR", [(a, 1), (b, 3)]).value == pytest.approx(27.5)
    missing = MetricValue.not_available("PSNR", "no weights")
    assert combine("PSNR", [(a, 1), (missing, 1)]).value is None
    assert math.isinf(combine("PSNR", [(MetricValue("PSNR", math.inf), 2)] * 2).value)
    with_frames = combine("PSNR", [(MetricValue("PSNR", 1.5, per_frame=np.array([1.0, 2.0])), 2),
                                   (MetricValue("PSNR", 3.0, per_frame=np.array([3.0])), 1)])
    assert with_frames.per_frame.tolist() == [1.0, 2.0, 3.0] and with_frames.value == pytest.approx(2.0)
    # a part without its frames: no samples at all, rather than samples that no longer line up with the frames
    assert combine("PSNR", [(MetricValue("PSNR", 1.5, per_frame=np.array([1.0, 2.0])), 2), (b, 3)]).per_frame is None


class TimedHead:
    """Wraps a head and reports per-module times as R2-Talker does: ms per frame, a different value per clip."""

    def __init__(self, head) -> None:
        self.head, self.image_size, self.timings, self.clip_times = head, head.image_size, {}, []

    def render(self, driving):
        yield from self.head.render(driving)
        per_frame = float(len(self.clip_times) + 1)  # 1 ms for the first clip, 2 ms for the second, ...
        self.clip_times.append((per_frame, driving.num_frames, driving.role))
        self.timings = {"frames": float(driving.num_frames), "rendering_ms": per_frame, "total_ms": 2 * per_frame}


def test_module_timings_are_reported_frame_weighted_when_a_head_has_them(evaluation_root, tiny_corpus, tmp_path,
                                                                        monkeypatch):
    spec = get_method("static")
    heads = []

    def load(*args):
        heads.append(TimedHead(spec.load(*args)))
        return heads[-1]

    timed = dataclasses.replace(spec, load=load)
    monkeypatch.setattr("talkhead_models.evaluation._sync_scorer", lambda inputs: None)
    cfg = timed.resolve_config({})
    model = tmp_path / "model"
    model.mkdir()
    timed.train(cfg, evaluation_root / "S001", {}, model)
    inputs = EvaluationInputs(identity_root=evaluation_root / "S001", model_dir=model, raw_root=tiny_corpus,
                              sync_expert=None, face_model=None, pretrained={}, weights=tmp_path / "no_weights")
    record = evaluate_method(timed, cfg, EvaluationConfig(max_self_frames=60, max_cross_frames=60,
                                                          max_cross_expression_frames=40, min_clip_frames=20,
                                                          videos=False),
                             AudioConfig(), inputs, tmp_path / "videos", profile="test")
    times = [t for head in heads for t in head.clip_times]
    for role in ("self", "cross"):
        reported = record["settings"][role]["module_timings_ms"]
        assert set(reported) == {"rendering_ms", "total_ms"}  # only the *_ms keys
        assert reported["total_ms"] == pytest.approx(2 * reported["rendering_ms"])
    for role in ("self", "cross"):
        clips = [(ms, n) for ms, n, clip_role in times if clip_role == role]
        assert len({ms for ms, _ in clips}) >= 2 or role == "cross"  # several self clips exercise the weighting
        expected = sum(ms * n for ms, n in clips) / sum(n for _, n in clips)
        assert record["settings"][role]["module_timings_ms"]["rendering_ms"] == pytest.approx(expected)


def test_training_time_keeps_each_timed_repetition_in_hours_and_reads_back():
    from talkhead_models.evaluation.evaluate import training_metric

    metric = training_metric({"seconds": 0.2, "repetition_seconds": [0.1, 0.3], "hardware": "2-core CPU"})
    assert metric.value == pytest.approx(0.2 / 3600) and metric.sample_unit == "repetition"
    np.testing.assert_allclose(metric.per_frame, [0.1 / 3600, 0.3 / 3600])
    again = MetricValue.from_dict(json.loads(json.dumps(metric.to_dict())))
    np.testing.assert_allclose(again.per_frame, metric.per_frame, rtol=1e-4)  # records keep 5 digits
    assert again.sample_unit == "repetition"
    assert training_metric({"seconds": 36.0}).per_frame is None
