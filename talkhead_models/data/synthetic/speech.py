"""Synthetic speech for the MEAD-like corpus: phones, prosody, audio and mouth parameters.

No speech corpus can be downloaded, yet every talking-head method we reproduce needs
audio whose spectro-temporal structure (voiced harmonics under formants, frication
noise, closures and pauses) is *causally tied* to what the mouth does.  This module
therefore derives both the waveform and the per-frame viseme parameters from one
shared phone table and one shared phone timing, so the lips follow the audio by
construction and an audio-visual sync model can learn the offset between them.

Design choices, and why:

* Source-filter synthesis (Klatt-style, simplified): a glottal pulse train with an f0
  contour shaped by emotion and identity, plus aspiration and frication noise, is
  shaped by smoothly interpolated formant resonances.  That is what makes a
  mel-spectrogram encoder see "speech" (harmonics, formant bands, fricative noise).
* Filtering is done in the short-time Fourier domain, one analytic spectral envelope
  per 8 ms frame, because a time-varying resonator cascade would need a per-sample
  recursion in Python; the STFT route is fully vectorised (a 3 s utterance takes a
  few milliseconds).
* Emotions change rate, pitch level/range, loudness, pauses and voice quality through
  :data:`PROSODY`, so per-emotion differences (duration, mean f0) are measurable and
  the same sentence in two emotions has a known, exact time warp (:func:`time_warp`)
  for scoring DTW alignment later.
* Everything random comes from an explicit :class:`numpy.random.Generator` or seed:
  the same inputs give bit-identical audio, which the data pipeline relies on for
  cached, reproducible corpora.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

EMOTIONS: tuple[str, ...] = ("neutral", "angry", "happy", "sad")
"""The four corpus emotions (a subset of MEAD's eight), in canonical order."""

SILENCE = "sil"
"""Label of pause / leading / trailing silence segments."""

VISEME_KEYS: tuple[str, ...] = ("jaw_open", "lip_round", "lip_spread", "lip_close", "lip_bite")
"""Keys of the dictionary returned by :func:`viseme_track` (the renderer's mouth controls)."""


# ---------------------------------------------------------------------------------------
# Voices and prosody
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """Speaker-specific voice parameters: one per corpus identity.

    Identities must sound different (an audio encoder may otherwise ignore identity
    entirely), so the voice carries the usual source and vocal-tract knobs of a
    formant synthesiser.
    """

    f0: float
    """Mean fundamental frequency (Hz) of this speaker's *neutral* speech."""
    vtl_factor: float
    """Vocal-tract length factor: every formant (and fricative band) is multiplied by it.
    1.0 is an adult-male-like tract (~17.5 cm); ~1.15-1.2 is female-like (shorter tract)."""
    breathiness: float
    """Aspiration-noise level mixed into voiced phones, 0 (pressed) .. ~0.3 (breathy)."""
    open_quotient: float
    """Fraction of each glottal cycle the glottis is open (0.4-0.75). Larger values give a
    softer, steeper-sloped source spectrum."""
    jitter: float
    """Relative standard deviation of fast f0 perturbation (cycle-to-cycle irregularity)."""
    shimmer: float
    """Relative standard deviation of per-cycle amplitude perturbation."""
    rate: float
    """Personal speaking-rate factor; multiplies the emotion's rate (1.0 = average)."""
    f0_range: float
    """Personal intonation-excursion factor; multiplies the emotion's pitch range."""
    register: str
    """"low" (male-like) or "high" (female-like): the range the voice was drawn from."""

    def __post_init__(self) -> None:
        if not 40.0 <= self.f0 <= 500.0:
            raise ValueError(f"f0 {self.f0} Hz outside the speech range 40-500 Hz")
        if not 0.7 <= self.vtl_factor <= 1.5:
            raise ValueError(f"vtl_factor {self.vtl_factor} outside 0.7-1.5")
        if not 0.3 <= self.open_quotient <= 0.85:
            raise ValueError(f"open_quotient {self.open_quotient} outside 0.3-0.85")
        if self.rate <= 0 or self.f0_range < 0 or self.breathiness < 0:
            raise ValueError("rate must be > 0; f0_range and breathiness must be >= 0")


def make_voice(rng: np.random.Generator) -> Voice:
    """Draw a random speaker voice, male-like or female-like with equal probability.

    The two registers use non-overlapping f0 and vocal-tract ranges so that identities
    are clearly distinguishable by ear and by an audio encoder.
    """
    if rng.random() < 0.5:
        register = "low"
        f0 = rng.uniform(95.0, 140.0)
        vtl = rng.uniform(0.95, 1.06)
        breath = rng.uniform(0.02, 0.12)
        oq = rng.uniform(0.48, 0.6)
    else:
        register = "high"
        f0 = rng.uniform(175.0, 245.0)
        vtl = rng.uniform(1.12, 1.22)
        breath = rng.uniform(0.08, 0.22)
        oq = rng.uniform(0.58, 0.7)
    return Voice(
        f0=float(f0),
        vtl_factor=float(vtl),
        breathiness=float(breath),
        open_quotient=float(oq),
        jitter=float(rng.uniform(0.004, 0.012)),
        shimmer=float(rng.uniform(0.02, 0.06)),
        rate=float(rng.uniform(0.92, 1.08)),
        f0_range=float(rng.uniform(0.8, 1.25)),
        register=register,
    )


@dataclass(frozen=True)
class Prosody:
    """How an emotion changes timing, pitch, loudness and voice quality.

    Values follow the direction of the acoustic-emotion literature (e.g. Scherer 2003;
    Banse & Scherer 1996): anger and joy are faster, louder and higher with wider pitch
    range; sadness is slower, softer, lower and flatter.
    """

    rate: float
    """Speaking-rate factor: intrinsic phone durations are divided by it."""
    f0_scale: float
    """Mean f0 relative to the voice's neutral f0."""
    f0_range: float
    """Scale of intonation excursions (declination, pitch accents, final movement)."""
    f0_variability: float
    """Randomness of pitch (semitone std of accent heights and slow drift), per unit."""
    final_rise: float
    """Pitch movement (semitones) over the utterance-final syllable; > 0 rises."""
    energy: float
    """Loudness relative to neutral (multiplies the target RMS of voiced speech)."""
    pause: float
    """Multiplies inter-word pause durations, on top of :attr:`rate`."""
    tilt_db: float
    """Change of source spectral tilt in dB/octave above 1 kHz: tense (angry) voices are
    brighter (> 0), lax (sad) voices darker (< 0)."""
    breathiness: float
    """Aspiration added to the voice's own breathiness."""
    open_quotient_scale: float
    """Multiplies the voice's glottal open quotient (pressed voice < 1, lax voice > 1)."""


PROSODY: dict[str, Prosody] = {
    "neutral": Prosody(
        rate=1.0, f0_scale=1.0, f0_range=1.0, f0_variability=0.3, final_rise=-2.0,
        energy=1.0, pause=1.0, tilt_db=0.0, breathiness=0.0, open_quotient_scale=1.0,
    ),
    "angry": Prosody(
        rate=1.15, f0_scale=1.3, f0_range=1.6, f0_variability=0.9, final_rise=-3.0,
        energy=1.7, pause=0.7, tilt_db=3.0, breathiness=0.0, open_quotient_scale=0.85,
    ),
    "happy": Prosody(
        rate=1.08, f0_scale=1.18, f0_range=1.4, f0_variability=0.5, final_rise=3.0,
        energy=1.3, pause=0.8, tilt_db=1.5, breathiness=0.0, open_quotient_scale=0.95,
    ),
    "sad": Prosody(
        rate=0.77, f0_scale=0.88, f0_range=0.45, f0_variability=0.15, final_rise=-1.0,
        energy=0.65, pause=1.5, tilt_db=-3.0, breathiness=0.12, open_quotient_scale=1.12,
    ),
}
"""Prosody per emotion in :data:`EMOTIONS`."""


def target_mean_f0(voice: Voice, emotion: str) -> float:
    """Mean f0 (Hz) that :func:`synthesize` gives voiced speech for this voice and emotion.

    The synthesiser normalises its contour to exactly this (geometric) mean over voiced
    phones, so tests and analyses have a ground truth to compare pitch trackers with.
    """
    return voice.f0 * _prosody(emotion).f0_scale


def _prosody(emotion: str) -> Prosody:
    try:
        return PROSODY[emotion]
    except KeyError:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {EMOTIONS}") from None


# ---------------------------------------------------------------------------------------
# Phone inventory
# ---------------------------------------------------------------------------------------

_NAN = float("nan")


@dataclass(frozen=True)
class PhoneSpec:
    """Acoustic and visual targets of one phone; the single source of truth for both the
    audio and the mouth, which is what keeps them in sync."""

    cls: str
    """"vowel", "plosive", "nasal", "fricative", "approximant" or "silence"."""
    voiced: bool
    """Whether the vocal folds vibrate (for plosives: during the closure, as a voice bar)."""
    duration: float
    """Intrinsic duration (s) at speaking-rate 1.0 (before stress, lengthening and jitter)."""
    formants: tuple[float, float, float]
    """F1-F3 (Hz) for a vtl_factor-1.0 tract; for consonants the locus that formant
    transitions head towards."""
    bandwidths: tuple[float, float, float]
    """Bandwidths (Hz) of F1-F3; nasals have wide ones (damped murmur)."""
    voice_gain: float
    """Glottal source level in the voiced part of the phone (vowels 1.0)."""
    fric_gain: float
    """Frication (or, for plosives, burst) noise level."""
    fric_band: tuple[float, float] | None
    """(centre Hz, width in octaves) of the frication / burst noise band, None if none."""
    nasal: float
    """Nasal coupling 0..1: applies the nasal anti-resonance to the spectrum."""
    antiformant: float
    """Frequency (Hz) of the nasal zero (labial ~1000 Hz, alveolar ~1700 Hz)."""
    jaw_open: float
    """Viseme target for jaw opening, 0..1."""
    lip_round: float
    """Viseme target for lip rounding 0..1; NaN = unconstrained (taken from neighbours)."""
    lip_spread: float
    """Viseme target for lip spreading -1..1; NaN = unconstrained (taken from neighbours)."""
    lip_close: float
    """Viseme target for lip closure (bilabial press) 0..1."""
    lip_bite: float
    """Viseme target for lower lip to upper teeth (labiodental) 0..1."""


def _vowel(f: tuple[float, float, float], dur: float, jaw: float, rnd: float, spr: float) -> PhoneSpec:
    return PhoneSpec("vowel", True, dur, f, (70.0, 100.0, 140.0), 1.0, 0.0, None, 0.0, 0.0,
                     jaw, rnd, spr, 0.0, 0.0)


def _plosive(voiced: bool, locus: tuple[float, float, float], band: tuple[float, float],
             burst: float, jaw: float, close: float) -> PhoneSpec:
    return PhoneSpec("plosive", voiced, 0.065 if voiced else 0.078, locus, (90.0, 120.0, 160.0),
                     0.7 if voiced else 0.0, burst, band, 0.0, 0.0,
                     jaw, _NAN, _NAN, close, 0.0)


def _fricative(voiced: bool, locus: tuple[float, float, float], band: tuple[float, float],
               gain: float, dur: float, jaw: float, rnd: float, spr: float, bite: float) -> PhoneSpec:
    return PhoneSpec("fricative", voiced, dur, locus, (90.0, 120.0, 160.0), 0.4 if voiced else 0.0,
                     gain, band, 0.0, 0.0, jaw, rnd, spr, 0.0, bite)


_LABIAL = (250.0, 900.0, 2200.0)
_ALVEOLAR = (300.0, 1700.0, 2600.0)
_VELAR = (300.0, 2000.0, 2300.0)

PHONES: dict[str, PhoneSpec] = {
    # Vowels: Peterson & Barney (1952) adult-male formant means.
    "a": _vowel((730.0, 1090.0, 2440.0), 0.130, jaw=0.9, rnd=0.0, spr=0.1),
    "e": _vowel((530.0, 1840.0, 2480.0), 0.115, jaw=0.5, rnd=0.0, spr=0.55),
    "i": _vowel((270.0, 2290.0, 3010.0), 0.100, jaw=0.22, rnd=0.0, spr=0.85),
    "o": _vowel((570.0, 840.0, 2410.0), 0.125, jaw=0.6, rnd=0.75, spr=-0.5),
    "u": _vowel((300.0, 870.0, 2240.0), 0.110, jaw=0.28, rnd=0.95, spr=-0.7),
    # Plosives: closure + burst (+ aspiration when voiceless).  Burst bands by place:
    # labial diffuse-low, alveolar high, velar compact mid.
    "p": _plosive(False, _LABIAL, (900.0, 1.6), 1.0, jaw=0.02, close=1.0),
    "b": _plosive(True, _LABIAL, (900.0, 1.6), 0.6, jaw=0.02, close=1.0),
    "t": _plosive(False, _ALVEOLAR, (4500.0, 0.8), 1.2, jaw=0.15, close=0.0),
    "d": _plosive(True, _ALVEOLAR, (4500.0, 0.8), 0.7, jaw=0.15, close=0.0),
    "k": _plosive(False, _VELAR, (2000.0, 0.5), 1.2, jaw=0.25, close=0.0),
    "g": _plosive(True, _VELAR, (2000.0, 0.5), 0.7, jaw=0.25, close=0.0),
    # Nasals: murmur (low F1, wide damped upper formants) with an anti-resonance.
    "m": PhoneSpec("nasal", True, 0.075, (250.0, 1100.0, 2300.0), (100.0, 300.0, 300.0), 0.75, 0.0,
                   None, 1.0, 1000.0, 0.02, _NAN, _NAN, 1.0, 0.0),
    "n": PhoneSpec("nasal", True, 0.070, (250.0, 1500.0, 2500.0), (100.0, 300.0, 300.0), 0.75, 0.0,
                   None, 1.0, 1700.0, 0.15, _NAN, _NAN, 0.0, 0.0),
    # Fricatives: s high band, sh lower and broader, f/v weak and flat (labiodental).
    "s": _fricative(False, _ALVEOLAR, (5500.0, 0.45), 1.0, 0.105, jaw=0.08, rnd=_NAN, spr=0.35, bite=0.0),
    "z": _fricative(True, _ALVEOLAR, (5500.0, 0.45), 0.6, 0.085, jaw=0.08, rnd=_NAN, spr=0.35, bite=0.0),
    "sh": _fricative(False, (300.0, 1900.0, 2500.0), (3000.0, 0.6), 1.0, 0.110, jaw=0.12, rnd=0.55,
                     spr=-0.3, bite=0.0),
    "f": _fricative(False, (300.0, 1100.0, 2300.0), (4000.0, 1.6), 0.2, 0.095, jaw=0.1, rnd=0.0, spr=0.1,
                    bite=1.0),
    "v": _fricative(True, (300.0, 1100.0, 2300.0), (4000.0, 1.6), 0.15, 0.080, jaw=0.1, rnd=0.0, spr=0.1,
                    bite=1.0),
    # Approximants.
    "l": PhoneSpec("approximant", True, 0.065, (360.0, 1200.0, 2700.0), (80.0, 150.0, 200.0), 0.8, 0.0,
                   None, 0.0, 0.0, 0.3, _NAN, _NAN, 0.0, 0.0),
    "r": PhoneSpec("approximant", True, 0.070, (350.0, 1100.0, 1600.0), (80.0, 120.0, 150.0), 0.8, 0.0,
                   None, 0.0, 0.0, 0.2, 0.4, -0.2, 0.0, 0.0),
    "w": PhoneSpec("approximant", True, 0.065, (300.0, 650.0, 2200.0), (80.0, 120.0, 180.0), 0.8, 0.0,
                   None, 0.0, 0.0, 0.15, 1.0, -0.8, 0.0, 0.0),
    "j": PhoneSpec("approximant", True, 0.060, (260.0, 2200.0, 3000.0), (70.0, 120.0, 180.0), 0.8, 0.0,
                   None, 0.0, 0.0, 0.15, 0.0, 0.6, 0.0, 0.0),
    SILENCE: PhoneSpec("silence", False, 0.080, (500.0, 1500.0, 2500.0), (100.0, 150.0, 200.0), 0.0, 0.0,
                       None, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
}
"""Phone inventory: class, formant targets, source levels, viseme targets, intrinsic duration."""

VOWELS: tuple[str, ...] = tuple(p for p, s in PHONES.items() if s.cls == "vowel")
_ONSETS: tuple[str, ...] = ("p", "b", "t", "d", "k", "g", "m", "n", "s", "z", "sh", "f", "v", "l", "r", "w", "j")
_ONSET_WEIGHTS = np.array([8, 7, 9, 7, 7, 4, 8, 7, 8, 3, 4, 5, 4, 6, 6, 4, 3], dtype=float)
_CODAS: tuple[str, ...] = ("m", "n", "s", "t", "k", "l", "r", "p")
_VOWEL_WEIGHTS = np.array([6, 5, 4, 5, 3], dtype=float)  # a e i o u


# ---------------------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------------------


def sentence_phones(sentence_id: int, seed: int = 0, n_syllables: tuple[int, int] = (8, 12)) -> list[str]:
    """Deterministic pseudo-sentence: words of CV / CVC syllables separated by "sil".

    Real sentences are not needed (intelligibility is not evaluated), but a fixed phone
    sequence per sentence id is: the same sentence is spoken by every identity in every
    emotion, which is what MEAD-style cross-emotion alignment and DTW scoring rely on.
    Leading and trailing silence are added by :func:`synthesize`, not here.

    Args:
        sentence_id: non-negative sentence index.
        seed: corpus seed; together with ``sentence_id`` it fully determines the phones.
        n_syllables: inclusive (min, max) number of syllables.
    """
    if sentence_id < 0 or seed < 0:
        raise ValueError("sentence_id and seed must be non-negative")
    lo, hi = n_syllables
    if not 1 <= lo <= hi:
        raise ValueError(f"bad n_syllables range {n_syllables}")
    rng = np.random.default_rng([seed, sentence_id, 0x5E17])
    n = int(rng.integers(lo, hi + 1))
    word_sizes: list[int] = []
    while sum(word_sizes) < n:
        word_sizes.append(min(int(rng.choice([1, 2, 3], p=[0.2, 0.5, 0.3])), n - sum(word_sizes)))
    onset_p = _ONSET_WEIGHTS / _ONSET_WEIGHTS.sum()
    vowel_p = _VOWEL_WEIGHTS / _VOWEL_WEIGHTS.sum()
    phones: list[str] = []
    for w, size in enumerate(word_sizes):
        if w > 0:
            phones.append(SILENCE)
        for _ in range(size):
            onset = _ONSETS[int(rng.choice(len(_ONSETS), p=onset_p))]
            if phones and phones[-1] == onset:  # avoid geminates, they read as one long phone
                onset = _ONSETS[(_ONSETS.index(onset) + 3) % len(_ONSETS)]
            phones.append(onset)
            phones.append(VOWELS[int(rng.choice(len(VOWELS), p=vowel_p))])
            if rng.random() < 0.3:
                phones.append(_CODAS[int(rng.integers(len(_CODAS)))])
    return phones


# ---------------------------------------------------------------------------------------
# Utterances
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhoneSegment:
    """One phone with its time span in the audio (seconds, end exclusive)."""

    phone: str
    """Phone label, a key of :data:`PHONES`."""
    start: float
    """Start time (s)."""
    end: float
    """End time (s); equals the next segment's start."""


@dataclass(frozen=True)
class Utterance:
    """Synthesised audio with its exact phone alignment."""

    audio: np.ndarray
    """float32 mono waveform in [-1, 1]."""
    sample_rate: int
    """Samples per second of :attr:`audio`."""
    phones: list[PhoneSegment]
    """Contiguous segments covering [0, duration], starting and ending with "sil"."""

    def __post_init__(self) -> None:
        if self.audio.ndim != 1:
            raise ValueError("audio must be mono (1-D)")

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return self.audio.shape[0] / self.sample_rate


_CTRL_DT = 0.001  # control-track time step (s): fine enough for 5 ms ramps and bursts
_FRAME_DT = 0.008  # STFT hop (s) for the spectral envelopes (a quarter of the 32 ms window)
_TARGET_RMS = 0.05  # RMS of neutral voiced speech; leaves headroom for angry (x1.7) peaks
_FRIC_SCALE = 1.2  # frication level relative to the voice (calibrated: s ~ -10 dB re /a/)
_ASP_SCALE = 0.35  # aspiration noise level through the vocal tract
_HIGH_FORMANTS = ((3500.0, 250.0), (4500.0, 300.0), (5500.0, 450.0))  # F4-F6 (Hz, bandwidth Hz)
_NOISE_FLOOR = 2e-4  # std of the room-noise floor (keeps log-mel features finite in pauses)


def synthesize(
    phones: Sequence[str],
    emotion: str,
    voice: Voice,
    sample_rate: int = 16000,
    rng: np.random.Generator | None = None,
    lead_silence: float = 0.3,
    tail_silence: float = 0.3,
) -> Utterance:
    """Render a phone sequence as speech with the given emotion and voice.

    Phone durations are the intrinsic class durations divided by the emotion and
    speaker rate, lengthened for stress and phrase-final position and jittered with
    ``rng``.  The waveform is a source-filter synthesis: a Rosenberg glottal pulse train
    (f0 contour from declination, pitch accents, final movement, drift and jitter, with
    shimmer) plus aspiration and frication noise, shaped frame by frame by formant
    resonances interpolated smoothly between phone targets, with short amplitude ramps
    so there are no clicks.  Inputs "sil" at the ends are absorbed into the lead/tail
    silence and consecutive "sil" are merged.

    Args:
        phones: phone labels (keys of :data:`PHONES`), e.g. from :func:`sentence_phones`.
        emotion: one of :data:`EMOTIONS`.
        voice: the speaker.
        sample_rate: output rate in Hz (>= 8000).
        rng: source of all randomness; ``None`` means a fixed generator (seed 0), so the
            call is deterministic either way.
        lead_silence: seconds of silence before the first phone.
        tail_silence: seconds of silence after the last phone.
    """
    prosody = _prosody(emotion)
    if sample_rate < 8000:
        raise ValueError("sample_rate must be >= 8000 Hz")
    if lead_silence < 0 or tail_silence < 0:
        raise ValueError("silences must be non-negative")
    unknown = sorted({p for p in phones if p not in PHONES})
    if unknown:
        raise ValueError(f"unknown phones {unknown}; inventory: {sorted(PHONES)}")
    rng = np.random.default_rng(0) if rng is None else rng

    segments, stress = _time_phones(phones, prosody, voice, rng, sample_rate, lead_silence, tail_silence)
    n_samples = int(round(segments[-1].end * sample_rate))
    audio = _render(segments, stress, prosody, target_mean_f0(voice, emotion), voice, rng, sample_rate, n_samples)
    logger.debug("synthesised %d phones, %.2f s, emotion=%s", len(segments), n_samples / sample_rate, emotion)
    return Utterance(audio=audio, sample_rate=sample_rate, phones=segments)


def emotion_utterance(
    sentence_id: int, emotion: str, voice: Voice, seed: int = 0, sample_rate: int = 16000
) -> Utterance:
    """Convenience: sentence ``sentence_id`` spoken by ``voice`` in ``emotion``.

    The jitter generator is seeded from (seed, sentence id, emotion), so every
    (sentence, emotion, voice) triple is reproducible independently of corpus order.
    """
    _prosody(emotion)  # validate before seeding from the emotion's index
    phones = sentence_phones(sentence_id, seed)
    rng = np.random.default_rng([seed, sentence_id, EMOTIONS.index(emotion), 0xA0D])
    return synthesize(phones, emotion, voice, sample_rate=sample_rate, rng=rng)


def _time_phones(
    phones: Sequence[str],
    prosody: Prosody,
    voice: Voice,
    rng: np.random.Generator,
    sr: int,
    lead: float,
    tail: float,
) -> tuple[list[PhoneSegment], np.ndarray]:
    """Segment timing (quantised to samples) and a per-segment stress weight.

    Boundaries fall on sample positions so that phone times and audio samples agree
    exactly, also after :func:`concatenate`.
    """
    core = list(phones)
    while core and core[0] == SILENCE:
        core.pop(0)
    while core and core[-1] == SILENCE:
        core.pop()
    merged: list[str] = []
    for p in core:
        if not (p == SILENCE and merged and merged[-1] == SILENCE):
            merged.append(p)
    rate = prosody.rate * voice.rate
    n = len(merged)
    durations = np.empty(n)
    stress = np.zeros(n)
    word_start = True
    vowel_idx = [i for i, p in enumerate(merged) if PHONES[p].cls == "vowel"]
    for i, p in enumerate(merged):
        spec = PHONES[p]
        if p == SILENCE:
            durations[i] = spec.duration * prosody.pause / rate
            word_start = True
            continue
        durations[i] = spec.duration / rate
        if spec.cls == "vowel":
            if word_start:
                stress[i] = 1.0
                durations[i] *= 1.15
                word_start = False
            nxt = merged[i + 1:]
            nxt_sil = nxt.index(SILENCE) if SILENCE in nxt else len(nxt)
            if not any(PHONES[q].cls == "vowel" for q in nxt[:nxt_sil]):
                durations[i] *= 1.45 if i == vowel_idx[-1] else 1.25  # phrase-final lengthening
    durations *= np.exp(np.clip(rng.normal(0.0, 0.1, size=n), -0.25, 0.25))
    durations = np.maximum(durations, 0.025)

    labels = ([SILENCE] if lead > 0 else []) + merged + ([SILENCE] if tail > 0 else [])
    all_d = np.concatenate([[lead] if lead > 0 else [], durations, [tail] if tail > 0 else []])
    all_s = np.concatenate([[0.0] if lead > 0 else [], stress, [0.0] if tail > 0 else []])
    if not merged:  # nothing to say: a single silence segment
        labels, all_d, all_s = [SILENCE], np.array([max(lead + tail, 0.1)]), np.zeros(1)
    bounds = np.round(np.concatenate([[0.0], np.cumsum(all_d)]) * sr).astype(np.int64)
    for k in range(1, bounds.size):
        if bounds[k] <= bounds[k - 1]:
            bounds[k] = bounds[k - 1] + 1
    segs = [PhoneSegment(lab, bounds[k] / sr, bounds[k + 1] / sr) for k, lab in enumerate(labels)]
    return segs, all_s


def _hann_kernel(width: int) -> np.ndarray:
    width = max(int(width), 1)
    if width == 1:
        return np.ones(1)
    k = np.hanning(width + 2)[1:-1]
    return k / k.sum()


def _smooth(x: np.ndarray, width: int, shift: int = 0) -> np.ndarray:
    """Edge-padded Hann smoothing along the last axis; ``shift`` > 0 looks ahead.

    Edge padding (not zero padding) keeps formant-like tracks from being dragged to 0 at
    the ends; the look-ahead implements anticipatory coarticulation.
    """
    k = _hann_kernel(width)
    half = k.size // 2
    pad = half + abs(shift)
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="edge")
    if x.ndim == 1:
        y = np.convolve(xp, k, mode="same")
    else:
        y = np.stack([np.convolve(row, k, mode="same") for row in xp])
    start = pad + shift
    return y[..., start:start + x.shape[-1]]


def _fill_nan(y: np.ndarray, default: float) -> np.ndarray:
    """Fill NaN (unconstrained targets) by linear interpolation between constrained ones."""
    ok = ~np.isnan(y)
    if not ok.any():
        return np.full_like(y, default)
    if ok.all():
        return y
    idx = np.arange(y.size)
    return np.interp(idx, idx[ok], y[ok])


def _spec_table(labels: Sequence[str], field: str) -> np.ndarray:
    """Per-label values of a :class:`PhoneSpec` field as an array (NaN allowed)."""
    return np.array([getattr(PHONES[p], field) for p in labels], dtype=float)


def _render(
    segs: list[PhoneSegment],
    stress: np.ndarray,
    prosody: Prosody,
    target_f0: float,
    voice: Voice,
    rng: np.random.Generator,
    sr: int,
    n: int,
) -> np.ndarray:
    """Waveform for a timed phone sequence (see :func:`synthesize` for the model)."""
    labels = [s.phone for s in segs]
    starts = np.array([s.start for s in segs])
    ends = np.array([s.end for s in segs])
    cls = np.array([PHONES[p].cls for p in labels])
    dur_total = n / sr

    # ---- control-rate (1 ms) tracks --------------------------------------------------
    t_c = np.arange(int(math.ceil(dur_total / _CTRL_DT)) + 2) * _CTRL_DT
    seg = np.clip(np.searchsorted(ends, t_c, side="right"), 0, len(segs) - 1)
    rel = (t_c - starts[seg]) / np.maximum(ends[seg] - starts[seg], 1e-9)
    c_cls = cls[seg]
    voiced_spec = _spec_table(labels, "voiced")[seg] > 0
    vg = _spec_table(labels, "voice_gain")[seg]
    fg = _spec_table(labels, "fric_gain")[seg]
    is_plo = c_cls == "plosive"
    # Plosives: closure (silence or a weak voice bar) then burst, then aspiration / voicing onset.
    closure = is_plo & (rel < _release_fraction(cls, labels)[seg])
    after = is_plo & ~closure
    vg = np.where(closure, np.where(voiced_spec, 0.12, 0.0), vg)
    vg = np.where(after & voiced_spec, 0.6, vg)
    asp = np.where(after & ~voiced_spec, 1.0, 0.0)
    fric = np.where(is_plo, 0.0, fg)
    vg = vg * np.where(c_cls == "vowel", 0.8 + 0.2 * stress[seg], 1.0)
    ramp = int(round(0.006 / _CTRL_DT))
    vg = _smooth(vg, ramp)
    fric = _smooth(fric, ramp)
    asp = _smooth(asp, 3)
    burst_t = starts + _release_fraction(cls, labels) * (ends - starts)
    tb = t_c - burst_t[seg]
    burst = np.where(is_plo & (tb >= 0), np.exp(-np.maximum(tb, 0) / 0.004), 0.0) * fg * 2.5
    fric = fric + burst
    asp = asp * np.exp(-np.maximum(tb, 0) / 0.03) * is_plo

    # Formants, bandwidths, nasality, frication band: piecewise targets, smoothed (coarticulation).
    f_tab = np.array([PHONES[p].formants for p in labels])
    b_tab = np.array([PHONES[p].bandwidths for p in labels])
    sil_c = c_cls == "silence"
    form = f_tab[seg].T.copy()  # (3, T)
    form[:, sil_c] = np.nan
    form = np.stack([_fill_nan(np.log(row), math.log(1500.0)) for row in form])
    form = np.exp(_smooth(form, int(round(0.04 / _CTRL_DT)))) * voice.vtl_factor
    bw = _smooth(b_tab[seg].T, int(round(0.03 / _CTRL_DT)))
    nas = _smooth(_spec_table(labels, "nasal")[seg], int(round(0.02 / _CTRL_DT)))
    anti = _spec_table(labels, "antiformant")[seg]
    anti = _fill_nan(np.where(anti > 0, anti, np.nan), 1000.0) * voice.vtl_factor
    band_c = np.array([PHONES[p].fric_band[0] if PHONES[p].fric_band else np.nan for p in labels])[seg]
    band_w = np.array([PHONES[p].fric_band[1] if PHONES[p].fric_band else np.nan for p in labels])[seg]
    band_c = np.exp(_smooth(np.log(_fill_nan(band_c, 4000.0)), 8)) * voice.vtl_factor ** 0.5
    band_w = _smooth(_fill_nan(band_w, 1.0), 8)

    f0_c = _f0_contour(t_c, segs, stress, vg, prosody, target_f0, voice, rng)

    # ---- sample-rate source ------------------------------------------------------------
    t_s = np.arange(n) / sr
    f0_s = np.interp(t_s, t_c, f0_c)
    vg_s = np.interp(t_s, t_c, vg)
    fric_s = np.interp(t_s, t_c, fric)
    asp_s = np.interp(t_s, t_c, asp)
    phase = np.cumsum(f0_s / sr)
    frac = phase - np.floor(phase)
    oq = float(np.clip(voice.open_quotient * prosody.open_quotient_scale, 0.3, 0.85))
    opening = 0.65 * oq  # Rosenberg: rising part of the open phase
    flow = np.where(
        frac < opening,
        0.5 * (1.0 - np.cos(np.pi * frac / opening)),
        np.where(frac < oq, np.cos(0.5 * np.pi * (frac - opening) / (oq - opening)), 0.0),
    )
    src = np.diff(flow, prepend=flow[0])  # flow derivative: glottal source incl. lip radiation
    period = np.floor(phase).astype(np.int64)
    shimmer = np.clip(1.0 + voice.shimmer * rng.standard_normal(int(period[-1]) + 2), 0.5, 1.5)
    src *= shimmer[period]
    src /= max(float(np.std(src)), 1e-9)
    breath = voice.breathiness + prosody.breathiness
    glottal_open = (frac < oq).astype(float)
    noise_a = rng.standard_normal(n)
    noise_f = rng.standard_normal(n)
    oral_exc = vg_s * (src + breath * 1.5 * (0.3 + 0.7 * glottal_open) * noise_a) + _ASP_SCALE * asp_s * noise_a
    fric_exc = _FRIC_SCALE * fric_s * noise_f

    # ---- frame-wise spectral shaping ---------------------------------------------------
    y = _shape(oral_exc, fric_exc, sr, t_c, form, bw, nas, anti, band_c, band_w, prosody.tilt_db, voice.vtl_factor)

    # Gate pauses (removes envelope smear into silence) and set the level.
    speech = _smooth((~sil_c).astype(float), ramp)
    y *= np.interp(t_s, t_c, speech)
    vowel_s = np.interp(t_s, t_c, (c_cls == "vowel").astype(float)) > 0.5
    ref = float(np.sqrt(np.mean(y[vowel_s] ** 2))) if vowel_s.any() else float(np.sqrt(np.mean(y**2)) + 1e-12)
    y *= _TARGET_RMS * prosody.energy / max(ref, 1e-12)
    peak = float(np.max(np.abs(y)))
    if peak > 0.95:
        y *= 0.95 / peak
    edge = min(int(0.005 * sr), n // 2)  # fade the very ends: no click when lead/tail silence is 0
    if edge:
        fade = np.linspace(0.0, 1.0, edge, endpoint=False)
        y[:edge] *= fade
        y[n - edge:] *= fade[::-1]
    y += _NOISE_FLOOR * rng.standard_normal(n)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def _release_fraction(cls: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Fraction of each segment at which a plosive releases (0 for non-plosives)."""
    voiced = _spec_table(labels, "voiced") > 0
    return np.where(cls == "plosive", np.where(voiced, 0.75, 0.62), 0.0)


def _f0_contour(
    t_c: np.ndarray,
    segs: list[PhoneSegment],
    stress: np.ndarray,
    vg: np.ndarray,
    prosody: Prosody,
    target_f0: float,
    voice: Voice,
    rng: np.random.Generator,
) -> np.ndarray:
    """f0 (Hz) at control rate: declination + accents + final movement + drift + jitter.

    Built in semitones and finally shifted so that the geometric mean over voiced
    control points equals :func:`target_mean_f0`; emotion thus sets the mean exactly and
    the range through the excursions.
    """
    rng_st = prosody.f0_range * voice.f0_range
    speech = [s for s in segs if s.phone != SILENCE]
    t0 = speech[0].start if speech else 0.0
    t1 = speech[-1].end if speech else t_c[-1]
    span = max(t1 - t0, 1e-3)
    st = 1.5 * rng_st * (1.0 - 2.0 * np.clip((t_c - t0) / span, 0.0, 1.0))  # declination
    for k in np.flatnonzero(stress > 0):
        centre = 0.5 * (segs[k].start + segs[k].end) + 0.02
        height = max(rng_st * (2.0 + 2.0 * prosody.f0_variability * rng.standard_normal()), 0.0)
        st = st + height * np.exp(-0.5 * ((t_c - centre) / 0.07) ** 2)
    vowels = [s for s in segs if PHONES[s.phone].cls == "vowel"]
    if vowels:
        last = vowels[-1]
        prog = np.clip((t_c - last.start) / max(last.end - last.start, 1e-3), 0.0, 1.0)
        st = st + prosody.final_rise * voice.f0_range * prog
    drift = _smooth(rng.standard_normal(t_c.size), int(0.2 / _CTRL_DT))
    drift *= prosody.f0_variability * 0.6 / max(float(np.std(drift)), 1e-9)
    st = st + drift
    st = st + 17.3 * voice.jitter * rng.standard_normal(t_c.size)  # 1 % f0 ~ 0.173 st
    voiced = vg > 0.3
    mean_st = float(np.mean(st[voiced])) if voiced.any() else float(np.mean(st))
    return target_f0 * 2.0 ** ((st - mean_st) / 12.0)


def _shape(
    oral: np.ndarray,
    fric: np.ndarray,
    sr: int,
    t_c: np.ndarray,
    form: np.ndarray,
    bw: np.ndarray,
    nas: np.ndarray,
    anti: np.ndarray,
    band_c: np.ndarray,
    band_w: np.ndarray,
    tilt_db: float,
    vtl: float,
) -> np.ndarray:
    """Filter the oral and frication excitations with per-frame analytic envelopes.

    Hann-windowed frames (32 ms, 8 ms hop), multiplied in the rFFT domain by the
    magnitude response of a unity-DC-gain resonator cascade (F1-F6; formant levels then
    fall off naturally), a nasal zero weighted by nasality, an emotion spectral tilt,
    and, for frication, a log-Gaussian band; resynthesised by weighted overlap-add.
    """
    n = oral.size
    n_fft = 1 << int(math.ceil(math.log2(0.032 * sr)))
    r_ov = 1 << max(int(round(math.log2(n_fft / (_FRAME_DT * sr)))), 1)  # hop must divide n_fft
    hop = n_fft // r_ov
    win = np.hanning(n_fft + 1)[:-1]
    half = n_fft // 2
    n_frames = int(math.ceil(n / hop)) + r_ov  # full window coverage up to the last sample
    total = (n_frames - 1) * hop + n_fft
    mix = np.stack([oral, fric])
    padded = np.zeros((2, total + hop))
    padded[:, half:half + n] = mix
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, : (n_frames - 1) * hop + 1 : hop]
    spec = np.fft.rfft(frames * win, axis=-1)  # (2, F, K)

    t_f = np.arange(n_frames) * hop / sr
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    w = 2.0 * np.pi * freqs / sr
    cos1, sin1, cos2, sin2 = np.cos(w), np.sin(w), np.cos(2 * w), np.sin(2 * w)
    nyq = 0.5 * sr

    def pole_pair_power(f_hz: np.ndarray, b_hz: np.ndarray | float) -> np.ndarray:
        # |A(e^jw)|^2 / A(1)^2 for A(z) = 1 - c z^-1 + r^2 z^-2 (real arithmetic: no complex
        # temporaries, which dominated the cost).
        f_hz = np.minimum(f_hz, 0.95 * nyq)[:, None]
        r = np.exp(-np.pi * np.asarray(b_hz, dtype=float).reshape(-1, 1) / sr)
        c = 2.0 * r * np.cos(2.0 * np.pi * f_hz / sr)
        r2 = r * r
        re = 1.0 - c * cos1 + r2 * cos2
        im = c * sin1 - r2 * sin2
        return (re * re + im * im) / (1.0 - c + r2) ** 2

    fr = [np.interp(t_f, t_c, form[i]) for i in range(3)]
    bws = [np.interp(t_f, t_c, bw[i]) for i in range(3)]
    for f_hi, b_hi in _HIGH_FORMANTS:  # fixed upper formants keep energy up to ~6 kHz
        if f_hi * vtl < 0.9 * nyq:
            fr.append(np.full(n_frames, f_hi * vtl))
            bws.append(b_hi)
    den = pole_pair_power(fr[0], bws[0])
    for f_k, b_k in zip(fr[1:], bws[1:]):
        den *= pole_pair_power(f_k, b_k)
    env = 1.0 / np.sqrt(den)  # unity-DC-gain resonator cascade
    nas_f = np.interp(t_f, t_c, nas)
    nasal = np.flatnonzero(nas_f > 0.01)
    if nasal.size:
        zero = pole_pair_power(np.interp(t_f[nasal], t_c, anti), 150.0)
        env[nasal] *= zero ** (0.5 * nas_f[nasal, None])
    if tilt_db:
        env *= (np.maximum(freqs, 1000.0) / 1000.0) ** (tilt_db / 6.02)
    bc = np.log2(np.interp(t_f, t_c, band_c))[:, None]
    bwid = np.interp(t_f, t_c, band_w)[:, None]
    fenv = np.exp(-0.5 * ((np.log2(np.maximum(freqs, 50.0))[None, :] - bc) / bwid) ** 2)

    out_frames = np.fft.irfft(spec[0] * env + spec[1] * fenv, n=n_fft, axis=-1) * win  # (F, N)
    chunks = out_frames.reshape(n_frames, r_ov, hop)
    ola = np.zeros((n_frames + r_ov - 1, hop))
    for j in range(r_ov):
        ola[j:j + n_frames] += chunks[:, j, :]
    norm = np.sum(win.reshape(r_ov, hop) ** 2, axis=0)  # constant for Hann at hop = N / r
    y = ola.reshape(-1) / np.tile(norm, ola.shape[0])
    return y[half:half + n]


# ---------------------------------------------------------------------------------------
# Visemes, alignment, concatenation
# ---------------------------------------------------------------------------------------

_VIS_DT = 0.002  # fine time step (s) of the viseme target tracks
_VIS_LEAD = 0.015  # lips anticipate the acoustics by this much (s)
_VIS_KERNEL = {"jaw_open": 0.04, "lip_round": 0.05, "lip_spread": 0.05, "lip_close": 0.02, "lip_bite": 0.02}
"""Smoothing kernel width (s) per key: closures are critical articulations and are kept
crisp; jaw and lip shape co-articulate over a wider window."""
_VIS_RANGE = {"jaw_open": (0.0, 1.0), "lip_round": (0.0, 1.0), "lip_spread": (-1.0, 1.0),
              "lip_close": (0.0, 1.0), "lip_bite": (0.0, 1.0)}


def viseme_track(phones: Sequence[PhoneSegment], fps: float, n_frames: int) -> dict[str, np.ndarray]:
    """Per-video-frame mouth parameters (frame i at time i / fps) from a phone alignment.

    Per-phone targets from :data:`PHONES` are laid out on a 2 ms grid; targets a phone
    leaves unconstrained (e.g. rounding during /t/) are interpolated from its neighbours
    (look-ahead coarticulation: /t/ before /u/ is already rounded); each track is then
    Hann-smoothed (~40-50 ms, 20 ms for closures) and read ``_VIS_LEAD`` seconds ahead, since
    lips move before the sound they shape.  Silence has rest targets (all 0), as do
    frames beyond the last phone.

    Returns:
        float32 arrays of length ``n_frames`` for each key of :data:`VISEME_KEYS`.
    """
    if fps <= 0 or n_frames < 0:
        raise ValueError("fps must be > 0 and n_frames >= 0")
    t_frames = np.arange(n_frames) / fps
    if not phones:
        return {k: np.zeros(n_frames, dtype=np.float32) for k in VISEME_KEYS}
    labels = [s.phone for s in phones]
    unknown = sorted({p for p in labels if p not in PHONES})
    if unknown:
        raise ValueError(f"unknown phones {unknown}")
    ends = np.array([s.end for s in phones])
    t_end = float(ends[-1])
    t_fine = np.arange(int(math.ceil(t_end / _VIS_DT)) + 1) * _VIS_DT
    seg = np.clip(np.searchsorted(ends, t_fine, side="right"), 0, len(phones) - 1)
    out: dict[str, np.ndarray] = {}
    shift = int(round(_VIS_LEAD / _VIS_DT))
    for key in VISEME_KEYS:
        target = _fill_nan(_spec_table(labels, key)[seg], 0.0)
        sm = _smooth(target, int(round(_VIS_KERNEL[key] / _VIS_DT)), shift=shift)
        vals = np.interp(t_frames, t_fine, sm, right=0.0)
        lo, hi = _VIS_RANGE[key]
        out[key] = np.clip(vals, lo, hi).astype(np.float32)
    return out


def time_warp(
    phones_a: Sequence[PhoneSegment], phones_b: Sequence[PhoneSegment], times_a: np.ndarray
) -> np.ndarray:
    """Map times in rendition a to the corresponding times in rendition b.

    Two renditions of the same phone sequence (e.g. one sentence in two emotions) are
    aligned piecewise-linearly between matching phone boundaries; this is the ground
    truth against which DTW alignments are scored.  Times outside rendition a are
    extrapolated with the slope of the first / last segment.
    """
    la = [s.phone for s in phones_a]
    lb = [s.phone for s in phones_b]
    if la != lb:
        raise ValueError("time_warp needs the same phone sequence in both renditions")
    if not la:
        raise ValueError("empty phone sequences")
    ba = np.array([phones_a[0].start] + [s.end for s in phones_a], dtype=float)
    bb = np.array([phones_b[0].start] + [s.end for s in phones_b], dtype=float)
    t = np.asarray(times_a, dtype=float)
    out = np.interp(t, ba, bb)
    s0 = (bb[1] - bb[0]) / (ba[1] - ba[0])
    s1 = (bb[-1] - bb[-2]) / (ba[-1] - ba[-2])
    out = np.where(t < ba[0], bb[0] + (t - ba[0]) * s0, out)
    out = np.where(t > ba[-1], bb[-1] + (t - ba[-1]) * s1, out)
    return out


def concatenate(utterances: Sequence[Utterance], gap: float = 0.25) -> Utterance:
    """Join utterances into one long continuous talk with ``gap`` seconds between them.

    Used for long talk videos; the gap is digital silence, and the trailing "sil" of one
    utterance, the gap and the leading "sil" of the next become one "sil" segment, so
    phones stay contiguous and aligned with the audio (offsets are whole samples).
    """
    if not utterances:
        raise ValueError("nothing to concatenate")
    sr = utterances[0].sample_rate
    if any(u.sample_rate != sr for u in utterances):
        raise ValueError("all utterances must share a sample rate")
    if gap < 0:
        raise ValueError("gap must be non-negative")
    gap_n = int(round(gap * sr))
    pieces: list[np.ndarray] = []
    segs: list[PhoneSegment] = []
    offset = 0
    for i, u in enumerate(utterances):
        if i > 0 and gap_n:
            pieces.append(np.zeros(gap_n, dtype=np.float32))
            _append_segment(segs, PhoneSegment(SILENCE, offset / sr, (offset + gap_n) / sr))
            offset += gap_n
        pieces.append(np.asarray(u.audio, dtype=np.float32))
        for s in u.phones:  # via whole samples, so boundaries stay exactly on the audio grid
            a, b = round(s.start * sr) + offset, round(s.end * sr) + offset
            _append_segment(segs, PhoneSegment(s.phone, a / sr, b / sr))
        offset += u.audio.shape[0]
    return Utterance(audio=np.concatenate(pieces), sample_rate=sr, phones=segs)


def _append_segment(segs: list[PhoneSegment], s: PhoneSegment) -> None:
    if segs and segs[-1].phone == SILENCE and s.phone == SILENCE:
        segs[-1] = PhoneSegment(SILENCE, segs[-1].start, s.end)
    else:
        segs.append(s)
