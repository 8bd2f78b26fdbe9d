"""Lip-sync scores as Wav2Lip's evaluation computes them with syncnet_python.

For each video window i (embedding ``video[i]``) the distances to the audio
windows i - vshift .. i + vshift are taken, the audio sequence zero-padded by
``vshift`` at both ends (so a shift past the ends compares with a zero
vector, as ``calc_pdist`` does); the distances are averaged over the video
windows for each shift. Then

* best offset = vshift - argmin (a video whose audio is delayed by k frames
  scores offset -k);
* LSE-D = the minimum mean distance (lower is better);
* LSE-C = median of the mean distances minus the minimum (higher is better).

Wav2Lip evaluates with vshift = 15 and reports both averaged over videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

WAV2LIP_VSHIFT = 15


@dataclass(frozen=True)
class SyncScore:
    """One video's sync scores."""

    offset: int  # best audio-video offset in frames
    distance: float  # LSE-D
    confidence: float  # LSE-C
    mean_distances: np.ndarray  # [2 vshift + 1] mean distance per shift, shift -vshift first


def offset_distances(video: Tensor, audio: Tensor, vshift: int = WAV2LIP_VSHIFT) -> Tensor:
    """[W, 2 vshift + 1] distances of video window i to audio windows i - vshift .. i + vshift (zero-padded)."""
    if video.dim() != 2 or audio.dim() != 2 or video.shape[1] != audio.shape[1]:
        raise ValueError(f"expected [W, E] embeddings, got video {tuple(video.shape)} and audio {tuple(audio.shape)}")
    length = min(len(video), len(audio))
    video, audio = video[:length].float(), audio[:length].float()
    padded = F.pad(audio, (0, 0, vshift, vshift))
    shifts = torch.arange(2 * vshift + 1, device=video.device)
    candidates = padded[torch.arange(length, device=video.device)[:, None] + shifts]  # [W, S, E]
    # pairwise_distance adds eps to the difference, as syncnet_python's calc_pdist computes it.
    return F.pairwise_distance(video[:, None].expand_as(candidates), candidates, eps=1e-6)


def sync_score(video: Tensor, audio: Tensor, vshift: int = WAV2LIP_VSHIFT) -> SyncScore:
    """Best offset, LSE-D and LSE-C of one video from its window embeddings."""
    mean_distances = offset_distances(video, audio, vshift).mean(dim=0)
    minimum, index = torch.min(mean_distances, 0)
    return SyncScore(offset=int(vshift - index), distance=float(minimum),
                     confidence=float(torch.median(mean_distances) - minimum),
                     mean_distances=mean_distances.cpu().numpy())
