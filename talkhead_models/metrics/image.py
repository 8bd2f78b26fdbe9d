"""PSNR and SSIM between generated and ground-truth frames.

Both are computed per frame on RGB in [0, 1] and averaged over frames, as
the NeRF talking-head papers report them. SSIM is Wang et al. (2004) as
scikit-image computes it with ``gaussian_weights=True, sigma=1.5,
use_sample_covariance=False``: an 11x11 Gaussian window, constants
K1 = 0.01 and K2 = 0.03, the map averaged away from a 5-pixel border (where
the window would leave the image), then averaged over the three channels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from talkhead_models.metrics.base import MetricValue, frame_batches, frame_pair

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
"""scikit-image's truncation of the Gaussian: radius int(3.5 * 1.5 + 0.5) = 5, an 11-tap window."""
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr_per_frame(generated: Tensor, target: Tensor) -> Tensor:
    """[B] PSNR in dB of frames in [0, 1]; +inf where a frame equals its target."""
    generated, target = frame_pair(generated, target)
    mse = (generated.double() - target.double()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse)  # 1/0 -> inf -> inf dB for identical frames


def psnr(generated: Tensor | np.ndarray, target: Tensor | np.ndarray, batch_size: int = 64) -> MetricValue:
    """Mean per-frame PSNR (dB); +inf when every frame equals its target."""
    per_frame = torch.cat([psnr_per_frame(*pair) for pair in frame_batches(generated, target, batch_size)])
    per_frame = per_frame.cpu().numpy()
    return MetricValue("PSNR", float(per_frame.mean()), unit="dB", per_frame=per_frame)


def _gaussian_window(device: torch.device, dtype: torch.dtype) -> Tensor:
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    window = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return window / window.sum()


def _blur_valid(images: Tensor, window: Tensor) -> Tensor:
    """Separable Gaussian filter without padding: only the positions where the whole window lies inside."""
    channels = images.shape[1]
    horizontal = window.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = window.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(images, horizontal, groups=channels), vertical, groups=channels)


def ssim_per_frame(generated: Tensor, target: Tensor) -> Tensor:
    """[B] SSIM of frames in [0, 1] (data range 1), mean over the valid map and the channels."""
    # Float32 (or the frames' own precision): PyTorch's float64 depthwise convolution is some 7x slower
    # on the CPU, and float32 moments keep SSIM within about 1e-5 of scikit-image's float64 result.
    x, y = frame_pair(generated, target)
    window = _gaussian_window(x.device, x.dtype)
    if min(x.shape[-2:]) < window.numel():
        raise ValueError(f"SSIM needs frames of at least {window.numel()} pixels per side, got {tuple(x.shape[-2:])}")
    # Five filtered images in one call: means, second moments and the cross moment.
    moments = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)
    mu_x, mu_y, xx, yy, xy = moments.chunk(5, dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)


def ssim(generated: Tensor | np.ndarray, target: Tensor | np.ndarray, batch_size: int = 16) -> MetricValue:
    """Mean per-frame SSIM (1 for identical frames); ``batch_size`` frames at a time bound the memory."""
    per_frame = torch.cat([ssim_per_frame(*pair) for pair in frame_batches(generated, target, batch_size)])
    per_frame = per_frame.cpu().numpy()
    return MetricValue("SSIM", float(per_frame.mean()), per_frame=per_frame)
