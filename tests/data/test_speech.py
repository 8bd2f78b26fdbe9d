"""Tests for the synthetic speech module: the corpus and the face renderer both depend on
its timing, pitch and mouth tracks being deterministic and mutually consistent."""

from __future__ import annotations

import time

import numpy as np
import pytest

from talkhead_models.data.synthetic import speech as S

SR = 16000


@pytest.fixture(scope="module")
def low_voice() -> S.Voice:
    rng = np.random.default_rng(0)
    while True:
        v = S.make_voice(rng)
        if v.register == "low":
            return v


@pytest.fixture(scope="module")
def high_voice() -> S.Voice:
    rng = np.random.default_rng(0)
    while True:
        v = S.make_voice(rng)
        if v.register == "high":
            return v


# Covers open vowels, rounded/spread vowels, bilabials, labiodentals, fricatives and a pause.
TEST_PHONES = ["m", "a", "p", "a", "sil", "b", "i", "f", "u", "sil", "s", "o", "m", "a", "v", "e", "k", "a"]


def _segments(utt: S.Utterance, phone_class: str | None = None, labels: set[str] | None = None):
    for s in utt.phones:
        if (phone_class and S.PHONES[s.phone].cls == phone_class) or (labels and s.phone in labels):
            yield s


def _rms(audio: np.ndarray, start: float, end: float) -> float:
    seg = audio[int(round(start * SR)):int(round(end * SR))].astype(float)
    return float(np.sqrt(np.mean(seg**2)))


def _mean_f0(utt: S.Utterance) -> float:
    import librosa

    hop = SR // 100
    f0 = librosa.yin(utt.audio.astype(float), fmin=60, fmax=700, sr=SR, frame_length=1024, hop_length=hop)
    t = np.arange(f0.size) * hop / SR
    mask = np.zeros(f0.size, dtype=bool)
    for s in _segments(utt, "vowel"):
        mask |= (t > s.start + 0.02) & (t < s.end - 0.02)
    assert mask.sum() > 20
    return float(np.mean(f0[mask]))


# --------------------------------------------------------------------------- sentences


def test_sentence_phones_deterministic_and_well_formed():
    a = S.sentence_phones(7, seed=3)
    assert a == S.sentence_phones(7, seed=3)
    assert a != S.sentence_phones(8, seed=3)
    assert a != S.sentence_phones(7, seed=4)
    for sid in range(30):
        ph = S.sentence_phones(sid)
        assert all(p in S.PHONES for p in ph)
        assert ph[0] != "sil" and ph[-1] != "sil"
        assert "sil" in ph  # word-boundary pauses
        assert all(not (x == y == "sil") for x, y in zip(ph, ph[1:]))
        assert 8 <= sum(S.PHONES[p].cls == "vowel" for p in ph) <= 12
    assert 3 <= sum(S.PHONES[p].cls == "vowel" for p in S.sentence_phones(0, n_syllables=(3, 3))) <= 3


def test_make_voice_gives_distinct_registers():
    rng = np.random.default_rng(5)
    voices = [S.make_voice(rng) for _ in range(40)]
    low = [v.f0 for v in voices if v.register == "low"]
    high = [v.f0 for v in voices if v.register == "high"]
    assert low and high and max(low) < min(high)
    assert max(v.vtl_factor for v in voices if v.register == "low") < min(
        v.vtl_factor for v in voices if v.register == "high")
    assert len({v.f0 for v in voices}) == len(voices)


# --------------------------------------------------------------------------- synthesis


def test_synthesis_is_bit_identical_for_same_seed(low_voice):
    ph = S.sentence_phones(2)
    a = S.synthesize(ph, "happy", low_voice, rng=np.random.default_rng(11))
    b = S.synthesize(ph, "happy", low_voice, rng=np.random.default_rng(11))
    c = S.synthesize(ph, "happy", low_voice, rng=np.random.default_rng(12))
    assert a.audio.dtype == np.float32
    assert np.array_equal(a.audio, b.audio) and a.phones == b.phones
    assert not np.array_equal(a.audio[: min(a.audio.size, c.audio.size)], c.audio[: min(a.audio.size, c.audio.size)])
    u1 = S.emotion_utterance(4, "sad", low_voice, seed=1)
    u2 = S.emotion_utterance(4, "sad", low_voice, seed=1)
    assert np.array_equal(u1.audio, u2.audio)


def test_phones_contiguous_and_cover_audio(high_voice):
    ph = S.sentence_phones(5)
    for emotion in S.EMOTIONS:
        u = S.synthesize(ph, emotion, high_voice, rng=np.random.default_rng(0))
        segs = u.phones
        assert segs[0].phone == "sil" and segs[-1].phone == "sil"
        assert segs[0].start == 0.0 and segs[-1].end == pytest.approx(u.duration, abs=1e-12)
        assert all(a.end == b.start for a, b in zip(segs, segs[1:]))
        assert all(s.end > s.start for s in segs)
        assert [s.phone for s in segs[1:-1]] == ph
        assert segs[0].end == pytest.approx(0.3, abs=1e-3) and segs[-1].end - segs[-1].start == pytest.approx(0.3, abs=1e-3)


def test_durations_ordered_by_emotion_rate(low_voice):
    by_rate = sorted(S.EMOTIONS, key=lambda e: S.PROSODY[e].rate)  # slowest (longest) first
    assert by_rate[0] == "sad" and by_rate[-1] == "angry"
    for sid in range(3):
        ph = S.sentence_phones(sid)
        dur = {e: S.synthesize(ph, e, low_voice, rng=np.random.default_rng(sid)).duration for e in S.EMOTIONS}
        assert [dur[e] for e in by_rate] == sorted(dur.values(), reverse=True)
        # Independently jittered renditions still differ clearly.
        ind = {e: S.emotion_utterance(sid, e, low_voice).duration for e in S.EMOTIONS}
        assert ind["sad"] > 1.1 * ind["angry"] and ind["sad"] > 1.1 * ind["happy"]
        assert ind["sad"] > ind["neutral"] > max(ind["angry"], ind["happy"])


def test_audio_finite_loud_in_vowels_quiet_in_silence(low_voice, high_voice):
    for voice in (low_voice, high_voice):
        for emotion in S.EMOTIONS:
            u = S.synthesize(TEST_PHONES, emotion, voice, rng=np.random.default_rng(3))
            a = u.audio
            assert np.all(np.isfinite(a)) and np.max(np.abs(a)) <= 1.0
            vowel_rms = [_rms(a, s.start + 0.01, s.end - 0.01) for s in _segments(u, "vowel")]
            assert min(vowel_rms) > 0.01
            for s in _segments(u, labels={"sil"}):
                if s.end - s.start > 0.06:
                    assert _rms(a, s.start + 0.02, s.end - 0.02) < 0.01 * np.mean(vowel_rms)
            for s in _segments(u, labels={"s"}):  # frication is audible, below the vowels
                assert 0.03 * np.mean(vowel_rms) < _rms(a, s.start + 0.01, s.end - 0.01) < np.mean(vowel_rms)


def test_louder_when_angry_than_sad(low_voice):
    ph = S.sentence_phones(1)
    rms = {}
    for e in ("angry", "sad"):
        u = S.synthesize(ph, e, low_voice, rng=np.random.default_rng(0))
        rms[e] = np.mean([_rms(u.audio, s.start, s.end) for s in _segments(u, "vowel")])
    assert rms["angry"] > 1.5 * rms["sad"]


def test_mean_f0_matches_target_and_orders_emotions(low_voice, high_voice):
    for voice in (low_voice, high_voice):
        u = S.emotion_utterance(0, "neutral", voice)
        target = S.target_mean_f0(voice, "neutral")
        assert target == voice.f0
        assert abs(_mean_f0(u) - target) < 0.1 * target
        f0 = {e: _mean_f0(S.emotion_utterance(0, e, voice)) for e in ("angry", "sad")}
        assert f0["angry"] > 1.2 * f0["sad"]


def test_vocal_tract_factor_raises_spectral_centroid(low_voice):
    import dataclasses

    ph = ["a", "e", "i", "o", "u"] * 3
    short = dataclasses.replace(low_voice, vtl_factor=1.2)
    cents = []
    for v in (low_voice, short):
        u = S.synthesize(ph, "neutral", v, rng=np.random.default_rng(0))
        spec = np.abs(np.fft.rfft(u.audio.astype(float)))
        freqs = np.fft.rfftfreq(u.audio.size, 1 / SR)
        cents.append(np.sum(freqs * spec) / np.sum(spec))
    assert cents[1] > 1.05 * cents[0]


def test_synthesis_is_fast(low_voice):
    ph = S.sentence_phones(0)
    S.synthesize(ph, "neutral", low_voice)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        u = S.synthesize(ph, "neutral", low_voice)
        times.append((time.perf_counter() - t0) / u.duration * 3.0)
    assert min(times) < 0.1  # a 3 s utterance; typically ~15 ms, generous for loaded CI machines


def test_rejects_unknown_inputs(low_voice):
    with pytest.raises(ValueError):
        S.synthesize(["a", "xx"], "neutral", low_voice)
    with pytest.raises(ValueError):
        S.synthesize(["a"], "bored", low_voice)


# --------------------------------------------------------------------------- visemes


def _at(track: np.ndarray, t: float, fps: float) -> float:
    return float(track[int(round(t * fps))])


@pytest.mark.parametrize("emotion", ["neutral", "angry", "sad"])
def test_viseme_targets(low_voice, emotion):
    u = S.synthesize(TEST_PHONES, emotion, low_voice, rng=np.random.default_rng(1))
    fps = 100.0
    n = int(u.duration * fps) + 5
    vt = S.viseme_track(u.phones, fps, n)
    assert set(vt) == set(S.VISEME_KEYS)
    for key, arr in vt.items():
        assert arr.shape == (n,) and arr.dtype == np.float32 and np.all(np.isfinite(arr))
    assert vt["jaw_open"].min() >= 0 and vt["jaw_open"].max() <= 1
    assert vt["lip_spread"].min() >= -1 and vt["lip_spread"].max() <= 1
    mid = {id(s): 0.5 * (s.start + s.end) for s in u.phones}
    for s in _segments(u, labels={"a"}):
        assert _at(vt["jaw_open"], mid[id(s)], fps) > 0.6
        assert _at(vt["lip_close"], mid[id(s)], fps) < 0.05
    for s in _segments(u, labels={"p", "b", "m"}):
        assert _at(vt["lip_close"], mid[id(s)], fps) > 0.9
        assert _at(vt["jaw_open"], mid[id(s)], fps) < 0.1
    for s in _segments(u, labels={"f", "v"}):
        assert _at(vt["lip_bite"], mid[id(s)], fps) > 0.8
    for s in _segments(u, labels={"u", "o"}):
        assert _at(vt["lip_round"], mid[id(s)], fps) > 0.5
        assert _at(vt["lip_spread"], mid[id(s)], fps) < 0
    for s in _segments(u, labels={"i"}):
        assert _at(vt["lip_spread"], mid[id(s)], fps) > 0.5
    lead, tail = u.phones[0], u.phones[-1]
    for key in S.VISEME_KEYS:  # rest in silence and beyond the end
        assert np.all(np.abs(vt[key][: int((lead.end - 0.06) * fps)]) < 0.02)
        assert np.all(np.abs(vt[key][int((tail.start + 0.06) * fps):]) < 0.02)


def test_viseme_track_at_video_rate_and_sync_with_audio(high_voice):
    u = S.emotion_utterance(3, "neutral", high_voice)
    vt25 = S.viseme_track(u.phones, 25.0, 97)
    assert all(a.shape == (97,) for a in vt25.values())
    # The jaw follows the acoustic energy: their cross-correlation peaks at (near) zero lag.
    fps = 100.0
    n = int(u.duration * fps)
    jaw = S.viseme_track(u.phones, fps, n)["jaw_open"].astype(float)
    hop = SR // 100
    frames = u.audio[: n * hop].astype(float).reshape(n, hop)
    energy = np.log(np.mean(frames**2, axis=1) + 1e-8)
    jaw, energy = jaw - jaw.mean(), energy - energy.mean()
    lags = range(-10, 11)
    xc = [np.sum(jaw[max(0, -k):n - max(0, k)] * energy[max(0, k):n - max(0, -k)]) for k in lags]
    best = list(lags)[int(np.argmax(xc))]
    assert abs(best) <= 3
    assert np.corrcoef(jaw, energy)[0, 1] > 0.5


# --------------------------------------------------------------------------- warp / concat


def test_time_warp_maps_boundaries_and_is_monotonic(low_voice):
    ph = S.sentence_phones(6)
    a = S.emotion_utterance(6, "angry", low_voice)
    b = S.emotion_utterance(6, "sad", low_voice)
    assert [s.phone for s in a.phones] == [s.phone for s in b.phones] == ["sil", *ph, "sil"]
    ba = np.array([a.phones[0].start] + [s.end for s in a.phones])
    bb = np.array([b.phones[0].start] + [s.end for s in b.phones])
    assert np.allclose(S.time_warp(a.phones, b.phones, ba), bb, rtol=0, atol=1e-12)
    t = np.linspace(-0.5, a.duration + 0.5, 5000)
    w = S.time_warp(a.phones, b.phones, t)
    assert np.all(np.diff(w) > 0)
    assert np.allclose(S.time_warp(a.phones, a.phones, t), t)
    with pytest.raises(ValueError):
        S.time_warp(a.phones, a.phones[:-1], t)


def test_concatenate_keeps_phones_aligned(low_voice, high_voice):
    parts = [S.emotion_utterance(i, e, v) for i, (e, v) in enumerate(
        [("neutral", low_voice), ("happy", high_voice), ("sad", low_voice)])]
    long = S.concatenate(parts, gap=0.25)
    assert long.duration == pytest.approx(sum(p.duration for p in parts) + 2 * 0.25, abs=1e-9)
    segs = long.phones
    assert segs[0].start == 0.0 and segs[-1].end == pytest.approx(long.duration, abs=1e-12)
    assert all(x.end == y.start for x, y in zip(segs, segs[1:]))
    assert all(not (x.phone == y.phone == "sil") for x, y in zip(segs, segs[1:]))
    speech = [s for s in segs if s.phone != "sil"]
    orig = [(p, s) for p in parts for s in p.phones if s.phone != "sil"]
    assert [s.phone for s in speech] == [s.phone for _, s in orig]
    offset = 0.0
    offsets = []
    for p in parts:
        offsets.append(offset)
        offset += p.duration + 0.25
    k = 0
    for i, p in enumerate(parts):
        for s in (s for s in p.phones if s.phone != "sil"):
            c = speech[k]
            k += 1
            assert c.start == pytest.approx(s.start + offsets[i], abs=1e-9)
            i0, i1 = round(c.start * SR), round(c.end * SR)
            j0, j1 = round(s.start * SR), round(s.end * SR)
            assert np.array_equal(long.audio[i0:i1], p.audio[j0:j1])
