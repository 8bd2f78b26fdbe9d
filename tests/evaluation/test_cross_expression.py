"""The cross-expression setting (JEAN's): lips from one held-out clip's audio, the expression from another clip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import talkhead_models.evaluation as evaluation
from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.evaluation import (CROSS_EXPRESSION, EXP_DIFF_AUDIO, EvaluationConfig, EvaluationInputs,
                                        evaluate_method, evaluated_settings)
from talkhead_models.evaluation.driving import FrameBudget, drivings, expression_partners
from talkhead_models.evaluation.evaluate import (CROSS_EXPRESSION_METRICS, EMOTION_AUDIO, EMOTION_EXPRESSION, ClipScorer,
                                                 LandmarkFinder, evaluate_role)
from talkhead_models.media import probe
from talkhead_models.methods import Driving, MethodSpec, UnsupportedDriving, get_method
from talkhead_models.preprocess.audio_features import AudioConfig
from talkhead_models.reporting.records import CROSS_EXPRESSION as RECORD_CROSS_EXPRESSION
from talkhead_models.reporting.records import SETTINGS as RECORD_SETTINGS

IMAGE_METRICS = ("PSNR", "SSIM", "LPIPS", "FID", "ACD", "CPBD", "F-LMD", "AUE")


def _split_rows(rows: list[tuple[str, int, int, int]], kind: str = "clip") -> pd.DataFrame:
    """Self-driven split rows (clip, sentence, first, last) as split.parquet spells them."""
    return pd.DataFrame([{"identity": "S001", "role": "self", "audio_identity": "S001", "clip": clip,
                          "kind": "video" if clip == "video" else kind, "emotion": clip.split("/")[0]
                          if clip != "video" else "neutral", "sentence": sentence, "first_frame": first,
                          "last_frame": last} for clip, sentence, first, last in rows])


def test_partners_are_the_same_sentence_in_the_next_emotion_and_every_emotion_is_a_source():
    # S001's held-out clips: sentences 5 and 6 in four emotions, and the continuous video's tail.
    rows = _split_rows([("angry/level_3/005", 5, 307, 400), ("angry/level_3/006", 6, 401, 465),
                        ("happy/level_3/005", 5, 794, 895), ("happy/level_3/006", 6, 896, 965),
                        ("neutral/level_1/005", 5, 1316, 1428), ("neutral/level_1/006", 6, 1429, 1506),
                        ("sad/level_3/005", 5, 1971, 2116), ("sad/level_3/006", 6, 2117, 2216),
                        ("video", 0, 3663, 3807), ("sad/level_3/007", 7, 2217, 2300)])
    partners = expression_partners(rows)
    assert partners["angry/level_3/005"] == "happy/level_3/005"
    assert partners["happy/level_3/005"] == "neutral/level_1/005"
    assert partners["neutral/level_1/005"] == "sad/level_3/005"
    assert partners["sad/level_3/005"] == "angry/level_3/005"
    for clip, source in partners.items():
        assert clip.split("/")[-1] == source.split("/")[-1] and clip.split("/")[0] != source.split("/")[0]
    for sentence in ("005", "006"):
        sources = [source for clip, source in partners.items() if clip.endswith(sentence)]
        assert sorted(source.split("/")[0] for source in sources) == ["angry", "happy", "neutral", "sad"]
    # The continuous video and a sentence held out in one emotion only have no partner: they are skipped.
    assert "video" not in partners and "sad/level_3/007" not in partners
    assert expression_partners(rows.iloc[:0]) == {}


def _by_clip(reader: IdentityReader) -> dict[str, pd.Series]:
    rows = reader.self_driven_rows()
    return {str(row["clip"]): row for _, row in rows.iterrows()}


def test_cross_expression_drivings_are_a_audio_with_b_frames_index_aligned(evaluation_root, tiny_corpus):
    reader = IdentityReader(evaluation_root / "S001")
    rows = _by_clip(reader)
    args = (FrameBudget(max_frames=0), tiny_corpus, AudioConfig(), ("mel",))
    crossed = drivings(reader, CROSS_EXPRESSION, *args)
    own = {d.clip: d for d in drivings(reader, "self", *args)}
    assert len(crossed) == 2  # the tiny corpus holds one sentence out in two emotions
    ping_ponged = 0
    for driving in crossed:
        a, b = rows[driving.clip], rows[driving.expression_clip]
        assert driving.role == CROSS_EXPRESSION and driving.identity == driving.audio_identity == "S001"
        assert b.sentence == a.sentence and b.emotion != a.emotion and driving.emotion == b.emotion
        assert driving.expression is None
        # Everything but the expression is A's: audio, features, blinks, cameras, landmarks.
        mine = own[driving.clip]
        np.testing.assert_array_equal(driving.frame_indices, mine.frame_indices)
        np.testing.assert_array_equal(driving.audio, mine.audio)
        np.testing.assert_array_equal(driving.audio_features["mel"], mine.audio_features["mel"])
        np.testing.assert_array_equal(driving.eye, mine.eye)
        np.testing.assert_array_equal(driving.landmarks, mine.landmarks)
        # Frame i of A takes frame first_b + i of B (no DTW), walking back through B when A is longer.
        length_b = int(b.last_frame - b.first_frame + 1)
        shared = min(driving.num_frames, length_b)
        np.testing.assert_array_equal(driving.expression_frames[:shared], b.first_frame + np.arange(shared))
        if driving.num_frames > length_b:
            ping_ponged += 1
            assert driving.expression_frames[length_b] == b.last_frame - 1
            assert np.abs(np.diff(driving.expression_frames)).max() == 1
            assert driving.expression_frames.min() >= b.first_frame
    assert ping_ponged == 1  # sad/002 (123 frames) takes its expression from neutral/002 (95 frames)


def test_self_and_cross_drivings_are_their_own_expression_source(evaluation_root, tiny_corpus):
    reader = IdentityReader(evaluation_root / "S001")
    for role in ("self", "cross"):
        for driving in drivings(reader, role, FrameBudget(max_frames=60, min_clip_frames=20), tiny_corpus,
                                AudioConfig(), ("mel",)):
            np.testing.assert_array_equal(driving.expression_frames, driving.frame_indices)
            assert driving.expression_clip == ""


def test_cross_expression_budget_and_rows_cut_inside_their_clip_stay_aligned(evaluation_root, tiny_corpus,
                                                                            monkeypatch):
    reader = IdentityReader(evaluation_root / "S001")
    budgeted = drivings(reader, CROSS_EXPRESSION, FrameBudget(max_frames=60, min_clip_frames=30), tiny_corpus,
                        AudioConfig(), ("mel",))
    assert [d.num_frames for d in budgeted] == [30, 30]
    # As if A's first 10 frames had no face: its row starts 10 frames into the clip, and so does B's stretch.
    rows = reader.self_driven_rows()
    partners = expression_partners(rows)
    clip_a = next(iter(partners))
    clip_b = partners[clip_a]
    cut = rows.copy()
    cut.loc[cut["clip"] == clip_a, "first_frame"] += 10
    monkeypatch.setattr(reader, "self_driven_rows", lambda: cut)
    driving = next(d for d in drivings(reader, CROSS_EXPRESSION, FrameBudget(max_frames=0), tiny_corpus,
                                       AudioConfig(), ("mel",)) if d.clip == clip_a)
    first_a = int(rows.loc[rows["clip"] == clip_a, "first_frame"].iloc[0])
    first_b = int(rows.loc[rows["clip"] == clip_b, "first_frame"].iloc[0])
    assert driving.frame_indices[0] == first_a + 10 and driving.expression_frames[0] == first_b + 10


def test_unknown_setting_is_refused(evaluation_root, tiny_corpus):
    with pytest.raises(ValueError, match="cross_expression"):
        drivings(IdentityReader(evaluation_root / "S001"), "crossed", FrameBudget(), tiny_corpus, AudioConfig(),
                 ("mel",))


def test_the_settings_agree_between_evaluation_and_reporting():
    assert CROSS_EXPRESSION == RECORD_CROSS_EXPRESSION and evaluation.SETTINGS == RECORD_SETTINGS
    from talkhead_models.reporting.claims import EXP_DIFF_AUDIO as CLAIMED
    assert CLAIMED == EXP_DIFF_AUDIO


# ------------------------------------------------------------------------------------- scoring, by hand


def _frames(indices: np.ndarray) -> np.ndarray:
    """Stand-in real frames: frame i is filled with i % 200, so which frame a render copied can be read back."""
    return np.stack([np.full((8, 8, 3), int(i) % 200, np.uint8) for i in indices])


SHAPE = np.random.default_rng(0).uniform(0.5, 1.5, (478, 3)).astype(np.float32)
SHAPE[0] = 1.0


class ValueLandmarks(LandmarkFinder):
    """One face shape scaled by the frame's fill value: frames of different values have different mouths (LMD
    centres each set, so a mere shift would not count), and the first point's x is the value itself. LMD reads
    these points mapped to the 68, as the evaluation does without dlib."""

    def __init__(self) -> None:
        self.dlib, self.detector, self._label = None, "test landmarks", {}

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = frames.reshape(len(frames), -1)[:, 0].astype(np.float32)
        return values[:, None, None] * SHAPE[None], np.ones(len(frames), bool)

    def close(self) -> None:
        pass


def value_expression(points: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """One coefficient per frame: the fill value."""
    return points[:, :1, 0].astype(np.float64)


class ClipLengthSync:
    reference = "substitute: test scorer"

    def score(self, frames_or_mouths, audio):
        frames, _ = frames_or_mouths
        return len(frames) / 100.0, 1.0, 0


class CopyHead:
    """Renders the real frames of one source: ``expression_frames`` (B) or ``frame_indices`` (A)."""

    image_size = 8

    def __init__(self, source: str) -> None:
        self.source = source

    def render(self, driving: Driving):
        if self.source == "unsupported":
            raise UnsupportedDriving("no expression source here")
        yield from _frames(getattr(driving, self.source))


def _crossed(first_a: int, first_b: int, count: int, clip: str) -> Driving:
    return Driving(identity="S001", role=CROSS_EXPRESSION, audio=np.zeros(640 * count, np.float32),
                   audio_features={}, eye=np.zeros(count), frame_indices=np.arange(first_a, first_a + count),
                   audio_identity="S001", clip=clip, emotion="sad", expression_frames=np.arange(first_b,
                                                                                               first_b + count),
                   expression_clip="sad/level_3/002")


def _scored(head, tmp_path, drivings_=None) -> dict:
    scorer = ClipScorer(sync_scorer=ClipLengthSync(), landmarks=ValueLandmarks(), expression=value_expression,
                        weights=tmp_path / "no_weights")
    crossed = drivings_ if drivings_ is not None else [_crossed(10, 110, 30, "neutral/level_1/002"),
                                                       _crossed(50, 150, 20, "neutral/level_1/003")]
    return evaluate_role(head, crossed, scorer, _frames, EvaluationConfig(), role=CROSS_EXPRESSION)


def test_cross_expression_scores_exp_diff_against_each_source_and_lips_against_a(tmp_path):
    copies_b = _scored(CopyHead("expression_frames"), tmp_path)
    copies_a = _scored(CopyHead("frame_indices"), tmp_path)
    for result in (copies_b, copies_a):
        assert set(result.metrics) == {*CROSS_EXPRESSION_METRICS, "FPS"}  # no image metric: no ground truth
        assert result.frames == 50 and [c["expression_clip"] for c in result.clips] == ["sad/level_3/002"] * 2
        for name in ("Exp-Diff", EXP_DIFF_AUDIO, "M-LMD"):
            value = result.metrics[name]
            assert len(value.per_frame) == 50 and value.sample_unit == "frame" and not value.higher_is_better
        assert result.metrics["Sync"].sample_unit == "clip" and len(result.metrics["Sync"].per_frame) == 2
    # Rendering B's frames: its expression is B's exactly, 100 levels away from A's (squared: 10,000).
    assert copies_b.metrics["Exp-Diff"].value == 0.0
    assert copies_b.metrics[EXP_DIFF_AUDIO].value == pytest.approx(100.0 ** 2)
    assert copies_b.metrics["M-LMD"].value > 0.0
    # Rendering A's frames (the ground-truth row): the lips are A's, the expression too.
    assert copies_a.metrics["M-LMD"].value == 0.0 and copies_a.metrics[EXP_DIFF_AUDIO].value == 0.0
    assert copies_a.metrics["Exp-Diff"].value == pytest.approx(100.0 ** 2)


class ValueEmotion:
    """An emotion network that calls a frame "sad" when its fill value is 100 or more (clip B's frames here) and
    "neutral" otherwise (clip A's), with certainty."""

    emotions = ("neutral", "sad")
    source = "substitute: test emotion network"
    path = "test"

    def __init__(self) -> None:
        self.landmark_shapes = []

    def probabilities(self, frames: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        self.landmark_shapes.append(landmarks68.shape)
        sad = (frames.reshape(len(frames), -1)[:, 0] >= 100).astype(np.float64)
        return np.stack([1.0 - sad, sad], axis=1)


def test_cross_expression_asks_the_emotion_network_for_each_sources_emotion(tmp_path):
    clip_emotions = {"neutral/level_1/002": "neutral", "neutral/level_1/003": "neutral"}
    results = {}
    for source in ("expression_frames", "frame_indices"):
        emotion = ValueEmotion()
        scorer = ClipScorer(sync_scorer=ClipLengthSync(), landmarks=ValueLandmarks(), expression=value_expression,
                            weights=tmp_path / "no_weights", emotion=emotion, clip_emotions=clip_emotions)
        results[source] = evaluate_role(CopyHead(source), [_crossed(10, 110, 30, "neutral/level_1/002"),
                                                           _crossed(50, 150, 20, "neutral/level_1/003")],
                                        scorer, _frames, EvaluationConfig(), role=CROSS_EXPRESSION).metrics
        assert emotion.landmark_shapes == [(30, 68, 2), (20, 68, 2)]  # each clip's rendered frames, 68 points
    # Rendering B's frames (the driving's emotion, "sad"): all of B's emotion, none of A's ("neutral").
    copies_b, copies_a = results["expression_frames"], results["frame_indices"]
    assert copies_b[EMOTION_EXPRESSION].value == 1.0 and copies_b[EMOTION_AUDIO].value == 0.0
    assert copies_a[EMOTION_EXPRESSION].value == 0.0 and copies_a[EMOTION_AUDIO].value == 1.0
    value = copies_b[EMOTION_EXPRESSION]
    assert len(value.per_frame) == 50 and value.higher_is_better and not copies_b[EMOTION_AUDIO].higher_is_better
    assert value.reference == "substitute: test emotion network" and "'sad'" in value.note
    # An audio clip the network cannot label, or no network at all: n/a with the reason.
    scorer = ClipScorer(sync_scorer=ClipLengthSync(), landmarks=ValueLandmarks(), expression=value_expression,
                        weights=tmp_path / "no_weights", emotion=ValueEmotion(), clip_emotions={})
    unlabelled = evaluate_role(CopyHead("expression_frames"), [_crossed(10, 110, 30, "neutral/level_1/002")],
                               scorer, _frames, EvaluationConfig(), role=CROSS_EXPRESSION).metrics
    assert not unlabelled[EMOTION_AUDIO].available and "no emotion label" in unlabelled[EMOTION_AUDIO].note
    no_network = _scored(CopyHead("expression_frames"), tmp_path).metrics[EMOTION_EXPRESSION]
    assert not no_network.available and "pretrain_emotion" in no_network.note


def test_cross_expression_without_a_partner_or_a_willing_head_is_not_available(tmp_path):
    refused = _scored(CopyHead("unsupported"), tmp_path)
    assert set(refused.metrics) == {*CROSS_EXPRESSION_METRICS, "FPS"} and refused.frames == 0
    assert all(not v.available and "no expression source" in v.note for v in refused.metrics.values())
    assert not refused.metrics[EXP_DIFF_AUDIO].higher_is_better
    empty = _scored(CopyHead("expression_frames"), tmp_path, drivings_=[])
    assert set(empty.metrics) == {*CROSS_EXPRESSION_METRICS, "FPS"}
    assert "another emotion" in empty.metrics["Exp-Diff"].note


# ------------------------------------------------------------------------------- which specs get the setting


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    pass


class OwnFramesHead:
    """A perfect expression copier: the identity's real frame of the expression source at every frame."""

    def __init__(self, reader: IdentityReader) -> None:
        self.reader, self.image_size = reader, int(reader.frame(0).shape[0])
        self.roles: list[str] = []

    def render(self, driving: Driving):
        self.roles.append(driving.role)
        for index in driving.expression_frames:
            yield self.reader.frame(int(index))


def _fake_spec(name: str, expression_source: bool, heads: list) -> MethodSpec:
    def load(cfg, identity_root, pretrained, model_dir):
        heads.append(OwnFramesHead(IdentityReader(identity_root)))
        return heads[-1]

    return MethodSpec(name=name, family="fake", config=FakeConfig, train=lambda *args, **kwargs: {}, load=load,
                      expression_source=expression_source)


def _inputs(root: Path, corpus: Path, tmp_path: Path, model: Path | None = None) -> EvaluationInputs:
    model = model or tmp_path / "model"
    model.mkdir(exist_ok=True)
    return EvaluationInputs(identity_root=root / "S001", model_dir=model, raw_root=corpus, sync_expert=None,
                            face_model=None, pretrained={}, weights=tmp_path / "no_weights")


def test_only_expression_source_and_reference_specs_get_the_setting(evaluation_root, tiny_corpus, tmp_path,
                                                                    monkeypatch):
    cfg = EvaluationConfig(max_self_frames=30, max_cross_frames=30, max_cross_expression_frames=60,
                           min_clip_frames=30, videos=True)
    heads: list = []
    plain, expressive = _fake_spec("fake_plain", False, heads), _fake_spec("fake_jean", True, heads)
    assert [s for s, _ in evaluated_settings(plain, cfg, "S001")] == ["self", "cross"]
    assert evaluated_settings(expressive, cfg, "S001")[-1] == (CROSS_EXPRESSION, 60)
    for name in ("ground_truth", "static", "nearest_pose"):
        assert evaluated_settings(get_method(name), cfg, "S001")[-1][0] == CROSS_EXPRESSION
    monkeypatch.setattr("talkhead_models.evaluation._sync_scorer", lambda inputs: None)

    record = evaluate_method(plain, FakeConfig(), dataclasses.replace(cfg, videos=False), AudioConfig(),
                             _inputs(evaluation_root, tiny_corpus, tmp_path), None)
    assert set(record["settings"]) == {"self", "cross"} and CROSS_EXPRESSION not in heads[-1].roles

    videos = tmp_path / "videos"
    videos.mkdir()
    record = evaluate_method(expressive, FakeConfig(), cfg, AudioConfig(),
                             _inputs(evaluation_root, tiny_corpus, tmp_path), videos)
    crossed = record["settings"][CROSS_EXPRESSION]
    assert crossed["frames"] == 60 and len(crossed["clips"]) == 2
    assert all(c["expression_clip"] and c["expression_clip"] != c["clip"] for c in crossed["clips"])
    assert {"Exp-Diff", EXP_DIFF_AUDIO, "M-LMD", "Sync", "LSE-C", "LSE-D"} <= set(crossed["metrics"])
    assert not set(IMAGE_METRICS) & set(crossed["metrics"])
    # A render that copies B's frames has B's mouth, not A's: M-LMD against A is measured and not zero.
    assert crossed["metrics"]["M-LMD"]["value"] > 0.0
    assert len(crossed["metrics"]["M-LMD"]["per_frame"]) == 60
    # No face model here: Exp-Diff is n/a with the reason, in both directions.
    assert crossed["metrics"]["Exp-Diff"]["value"] is None and "face model" in crossed["metrics"]["Exp-Diff"]["note"]
    assert crossed["metrics"][EXP_DIFF_AUDIO]["higher_is_better"] is False
    video = probe(videos / f"{CROSS_EXPRESSION}.mp4")
    assert video.width == 3 * video.height and video.has_audio  # audio source | expression source | render
    assert (videos / f"{CROSS_EXPRESSION}.jpg").is_file()


def test_reference_rows_self_and_cross_records_are_unchanged_by_the_new_setting(evaluation_root, tiny_corpus,
                                                                                tmp_path, monkeypatch):
    """The static row's self and cross records with the cross-expression setting rendered after them equal those of
    an evaluation that renders self and cross only, as every evaluation did before the setting existed."""
    spec = get_method("static")
    method_cfg = spec.resolve_config({})
    model = tmp_path / "static"
    model.mkdir()
    spec.train(method_cfg, evaluation_root / "S001", {}, model)
    (model / "train.json").write_text(json.dumps({"seconds": 3.6, "hardware": "test CPU"}))
    monkeypatch.setattr("talkhead_models.evaluation._sync_scorer", lambda inputs: ClipLengthSync())
    cfg = EvaluationConfig(max_self_frames=60, max_cross_frames=60, max_cross_expression_frames=60,
                           min_clip_frames=30, videos=False)
    inputs = _inputs(evaluation_root, tiny_corpus, tmp_path, model)
    now = evaluate_method(spec, method_cfg, cfg, AudioConfig(), inputs, None)
    monkeypatch.setattr("talkhead_models.evaluation.evaluated_settings",
                        lambda spec, cfg, identity: [("self", cfg.max_self_frames), ("cross", cfg.max_cross_frames)])
    before = evaluate_method(spec, method_cfg, cfg, AudioConfig(), inputs, None)
    assert set(now["settings"]) == {"self", "cross", CROSS_EXPRESSION} and set(before["settings"]) == {"self",
                                                                                                        "cross"}
    for setting in ("self", "cross"):
        assert json.dumps(now["settings"][setting], sort_keys=True) == \
            json.dumps(before["settings"][setting], sort_keys=True), setting
    # The static row is the claims' baseline: its cross-expression lips do not follow A (a still frame).
    crossed = now["settings"][CROSS_EXPRESSION]["metrics"]
    assert crossed["M-LMD"]["value"] > 0.0 and len(crossed["Sync"]["per_frame"]) == 2
