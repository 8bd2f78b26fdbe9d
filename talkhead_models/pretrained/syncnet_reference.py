"""The reference SyncNet (syncnet_python's model ``S``) and the choice of lip-sync scorer.

When ``syncnet_v2.model`` (syncnet_python's published weights) is in the
weights folder (``$TALKHEAD_WEIGHTS``, default ``./weights``), lip sync is
scored as the papers score it (Wav2Lip's evaluation runs syncnet_python):

* video: a face crop per frame, syncnet_python's ``crop_video`` (box
  side = largest side of the face box, median-filtered over 13 frames; a
  square of 2.8 half-sides starting one half-side above the box centre,
  grey-padded with 110), resized to 224x224, BGR, 0-255 floats; 5
  consecutive frames per window. syncnet_python detects faces with S3FD; here
  the box is the 68 landmarks' bounding box, as S3FD's is unavailable;
* audio: python_speech_features' MFCC (13 coefficients, 100 Hz, 25 ms
  rectangular windows, 26 filters, pre-emphasis 0.97, lifter 22, c0 = log
  frame energy) of the 16-bit integer samples; 20 MFCC frames per window;
* scores: ``lse.sync_score`` over offsets -15..15.

Without the file, the project's sync expert trained on the corpus
(``sync_expert.py``) is the scorer, and the values say so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from talkhead_models.data.processed import SAMPLE_RATE, SAMPLES_PER_FRAME
from talkhead_models.metrics.base import REFERENCE
from talkhead_models.pretrained.lse import SyncScore, sync_score
from talkhead_models.pretrained.sync_expert import (
    MEL_PER_FRAME, ExpertScorer, load_expert,
)

log = logging.getLogger(__name__)

SYNCNET_FILE = "syncnet_v2.model"
FACE_SIZE = 224
CROP_SCALE = 0.40  # syncnet_python run_pipeline --crop_scale
PAD_VALUE = 110
SMOOTH_KERNEL = 13
WINDOW_FRAMES = 5
MFCC_WINDOW = 20


def weights_dir() -> Path:
    """``$TALKHEAD_WEIGHTS``, or ``./weights`` when unset."""
    return Path(os.environ.get("TALKHEAD_WEIGHTS", "weights"))


def _conv2d(a: int, b: int, pool: tuple[tuple[int, int], tuple[int, int]] | None) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(a, b, kernel_size=(3, 3), padding=(1, 1)), nn.BatchNorm2d(b),
                               nn.ReLU(inplace=True)]
    if pool is not None:
        layers.append(nn.MaxPool2d(kernel_size=pool[0], stride=pool[1]))
    return layers


def _conv3d(a: int, b: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1),
            padding: tuple[int, int, int] = (0, 0, 0)) -> list[nn.Module]:
    return [nn.Conv3d(a, b, kernel_size=kernel, stride=stride, padding=padding), nn.BatchNorm3d(b),
            nn.ReLU(inplace=True)]


class SyncNetS(nn.Module):
    """syncnet_python's ``S``: MFCC [B, 1, 13, 20] and face windows [B, 3, 5, 224, 224] -> 1024-d embeddings.

    Module names and order match the published state dict (netcnnaud,
    netfcaud, netcnnlip, netfclip).
    """

    def __init__(self, embedding_dim: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv2d(1, 64, ((1, 1), (1, 1))),
            *_conv2d(64, 192, ((3, 3), (1, 2))),
            *_conv2d(192, 384, None),
            *_conv2d(384, 256, None),
            *_conv2d(256, 256, ((3, 3), (2, 2))),
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)), nn.BatchNorm2d(512), nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, embedding_dim))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, embedding_dim))
        self.netcnnlip = nn.Sequential(
            *_conv3d(3, 96, (5, 7, 7), (1, 2, 2)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv3d(256, 512, (1, 6, 6)),
        )

    def forward_aud(self, mfcc: Tensor) -> Tensor:
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, faces: Tensor) -> Tensor:
        return self.netfclip(self.netcnnlip(faces).flatten(1))


def reference_mfcc(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[13, T] MFCC exactly as ``python_speech_features.mfcc(int16 samples, 16000)`` with its defaults."""
    from scipy.fft import dct

    signal = np.round(np.clip(np.asarray(audio, np.float64), -1.0, 1.0) * 32767.0)  # scipy wavfile.read int16
    signal = np.append(signal[0], signal[1:] - 0.97 * signal[:-1])
    frame_length, frame_step, nfft = int(0.025 * sample_rate), int(0.01 * sample_rate), 512
    count = 1 if len(signal) <= frame_length else 1 + int(np.ceil((len(signal) - frame_length) / frame_step))
    padded = np.concatenate([signal, np.zeros((count - 1) * frame_step + frame_length - len(signal))])
    frames = padded[np.arange(frame_length)[None] + frame_step * np.arange(count)[:, None]]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    bank = np.dot(power, _filterbank(26, nfft, sample_rate).T)
    bank = np.where(bank == 0, np.finfo(float).eps, bank)
    cepstra = dct(np.log(bank), type=2, axis=1, norm="ortho")[:, :13]
    cepstra *= 1 + 11.0 * np.sin(np.pi * np.arange(13) / 22)
    cepstra[:, 0] = np.log(energy)
    return cepstra.T.astype(np.float32)


def _filterbank(count: int, nfft: int, sample_rate: int) -> np.ndarray:
    """python_speech_features' triangular mel filters on FFT bins (its bin rounding included)."""
    high = 2595 * np.log10(1 + (sample_rate / 2) / 700.0)
    hertz = 700 * (10 ** (np.linspace(0, high, count + 2) / 2595.0) - 1)
    bins = np.floor((nfft + 1) * hertz / sample_rate)
    index = np.arange(nfft // 2 + 1)[None]
    left, centre, right = bins[:-2, None], bins[1:-1, None], bins[2:, None]
    rising = np.where((index >= left) & (index < centre), (index - left) / np.maximum(centre - left, 1), 0)
    falling = np.where((index >= centre) & (index < right), (right - index) / np.maximum(right - centre, 1), 0)
    return rising + falling


def face_crops(frames: np.ndarray, lms68_xy: np.ndarray) -> np.ndarray:
    """[n, 224, 224, 3] BGR uint8 face crops of RGB frames [n, H, W, 3], as syncnet_python's crop_video."""
    import cv2
    from scipy.signal import medfilt

    points = np.asarray(lms68_xy, np.float64)[..., :2]
    low, high = points.min(axis=1), points.max(axis=1)
    kernel = min(SMOOTH_KERNEL, len(points) - (1 - len(points) % 2))  # medfilt needs an odd kernel <= length
    half = medfilt(np.max(high - low, axis=1) / 2, kernel)
    centre_x = medfilt((low[:, 0] + high[:, 0]) / 2, kernel)
    centre_y = medfilt((low[:, 1] + high[:, 1]) / 2, kernel)
    crops = np.empty((len(frames), FACE_SIZE, FACE_SIZE, 3), np.uint8)
    for index, frame in enumerate(frames):
        size = half[index]
        pad = int(size * (1 + 2 * CROP_SCALE))
        padded = np.pad(frame[..., ::-1], ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_VALUE)
        my, mx = centre_y[index] + pad, centre_x[index] + pad
        face = padded[int(my - size):int(my + size * (1 + 2 * CROP_SCALE)),
                      int(mx - size * (1 + CROP_SCALE)):int(mx + size * (1 + CROP_SCALE))]
        crops[index] = cv2.resize(face, (FACE_SIZE, FACE_SIZE))
    return crops


def reference_embeddings(model: SyncNetS, faces: np.ndarray, audio: np.ndarray,
                         batch_size: int = 20) -> tuple[Tensor, Tensor]:
    """Window embeddings as ``SyncNetInstance.evaluate``: faces [n, 224, 224, 3] BGR, 16 kHz waveform."""
    device = next(model.parameters()).device
    length = min(len(faces), len(audio) // SAMPLES_PER_FRAME)  # its min_length
    video = torch.from_numpy(np.ascontiguousarray(faces.transpose(3, 0, 1, 2))).float()  # [3, n, 224, 224]
    cepstra = torch.from_numpy(reference_mfcc(audio)).float()
    lip, sound = [], []
    with torch.no_grad():
        for start in range(0, length - WINDOW_FRAMES, batch_size):
            starts = range(start, min(length - WINDOW_FRAMES, start + batch_size))
            lip.append(model.forward_lip(torch.stack([video[:, s:s + WINDOW_FRAMES] for s in starts]).to(device)))
            sound.append(model.forward_aud(torch.stack(
                [cepstra[None, :, MEL_PER_FRAME * s:MEL_PER_FRAME * s + MFCC_WINDOW] for s in starts]).to(device)))
    if not lip:
        raise ValueError(f"a video of {length} frames is too short for syncnet_python's {WINDOW_FRAMES}-frame windows")
    return torch.cat(lip).cpu(), torch.cat(sound).cpu()


class ReferenceScorer:
    """Lip-sync scores with syncnet_python's SyncNet and its published weights."""

    reference = REFERENCE

    def __init__(self, model: SyncNetS) -> None:
        self.model = model.eval()

    def score(self, frames_or_mouths: Any, audio: np.ndarray) -> SyncScore:
        """``frames_or_mouths``: (RGB frames [n, H, W, 3], 68 landmarks [n, 68, >= 2]) or face crops
        [n, 224, 224, 3] BGR; ``audio``: the 16 kHz waveform of the same span."""
        if isinstance(frames_or_mouths, tuple):
            faces = face_crops(*frames_or_mouths)
        else:
            faces = np.asarray(frames_or_mouths)
        return sync_score(*reference_embeddings(self.model, faces, np.asarray(audio, np.float32)))


def load_reference_syncnet(folder: Path | None = None, device: str = "cpu") -> SyncNetS | None:
    """SyncNet with ``syncnet_v2.model`` from the weights folder, or None (logged) when the file is absent."""
    path = Path(folder or weights_dir()) / SYNCNET_FILE
    if not path.is_file():
        log.info("%s not found: lip sync is scored with the project's sync expert instead of SyncNet", path)
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model = SyncNetS()
    # The published file predates BatchNorm's num_batches_tracked; syncnet_python copies the keys it has.
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a key with the wrong shape
        missing, unexpected = [str(error)], []
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"{path}: not syncnet_python's syncnet_v2.model (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]}); replace it with the published weights or remove it to use the "
                           "sync expert")
    log.info("lip sync scored with SyncNet (%s)", path)
    return model.to(device).eval()


def load_sync_scorer(expert_checkpoint: Path, folder: Path | None = None,
                     device: str = "cpu") -> ReferenceScorer | ExpertScorer:
    """SyncNet when its weights are in the weights folder, else the corpus-trained sync expert."""
    model = load_reference_syncnet(folder, device)
    if model is not None:
        return ReferenceScorer(model)
    expert, config = load_expert(expert_checkpoint, device)
    return ExpertScorer(expert, config)

