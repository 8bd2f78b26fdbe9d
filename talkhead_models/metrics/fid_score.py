"""FID: the Fréchet distance between Gaussians fitted to Inception pool features of two frame sets.

The feature extractor is pytorch-fid's "FID Inception" (TensorFlow's 2015
Inception-v3 as used by the original FID code) written out in torch without
torchvision: torchvision's Inception3 layer names, so
``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's weights) loads
unchanged, with pytorch-fid's three patches: average pools that ignore the
zero padding in the A, C and first E blocks, and a max pool in the last E
block. Frames are resized to 299x299 (bilinear), mapped to [-1, 1], and the
2048-d global average pool is the feature.

Without the weights file FID is n/a. :func:`fid` also takes any other
feature extractor, and then labels the value as a substitute.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkhead_models.metrics.base import (REFERENCE, MetricValue, MissingWeightsError, as_frames, batches, load_into,
                                          load_state_dict, require_weights, substitute, weights_dir, with_batch_axis)

log = logging.getLogger(__name__)

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
INCEPTION_CLASSES = 1008
"""The 2015 TensorFlow graph has 1008 outputs; its fc layer is in the weights file, unused for FID."""


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, TensorFlow's), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: Tensor) -> Tensor:
    # TensorFlow's 3x3 average pool does not count the zero padding.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(_avg_pool_same(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), branch3x3dbl, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(_avg_pool_same(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """The E block; ``max_pool`` is the FID graph's quirk in its last E block (Mixed_7c)."""

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_same(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


class FidInceptionV3(nn.Module):
    """pytorch-fid's FID Inception: frames [B, 3, H, W] in [0, 1] -> [B, 2048] pool features."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, INCEPTION_CLASSES)

    def forward(self, frames: Tensor) -> Tensor:
        x = F.interpolate(frames, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))


def load_fid_inception(weights: str | Path | None = None) -> FidInceptionV3:
    """The FID Inception with pytorch-fid's weights (eval mode, frozen); :class:`MissingWeightsError` without them."""
    return _load_fid_inception(str(weights_dir(weights).resolve()))


@functools.lru_cache(maxsize=1)
def _load_fid_inception(folder: str) -> FidInceptionV3:
    path = require_weights(folder, INCEPTION_FILE, "pytorch-fid's FID Inception-v3 weights")
    with torch.device("meta"):  # every tensor comes from the file: skip the random initialisation
        network = FidInceptionV3()
    load_into(network, load_state_dict(path), path)
    log.info("FID Inception loaded from %s", path)
    return network.float().eval().requires_grad_(False)


@torch.no_grad()
def extract_features(frames: Tensor | np.ndarray, extractor: Callable[[Tensor], Tensor],
                     batch_size: int = 32, device: str | torch.device | None = None) -> np.ndarray:
    """[N, D] float64 features of frames, batch by batch (the frames may stay on the CPU)."""
    frames = with_batch_axis(frames)
    if device is not None and isinstance(extractor, nn.Module):
        extractor = extractor.to(device)
    parts = []
    for part in batches(len(frames), batch_size):
        batch = as_frames(frames[part])
        parts.append(extractor(batch.to(device) if device is not None else batch).double().cpu())
    return torch.cat(parts).numpy()


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, as pytorch-fid's ``np.cov(rowvar=False)``) of [N, D] features."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"FID needs at least two feature vectors [N, D], got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of
    S1^(1/2) S2 S1^(1/2), a symmetric PSD matrix with the same spectrum as
    S1 S2; two symmetric eigen-decompositions are faster and better
    conditioned than scipy's general ``sqrtm`` (which pytorch-fid uses) on
    the singular covariances of small frame sets, and agree with it where
    both are accurate.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: means {mu1.shape}, {mu2.shape}; covariances {sigma1.shape}, "
                         f"{sigma2.shape}")
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(values.clip(min=0.0))) @ vectors.T
    product = root1 @ sigma2 @ root1
    trace_root = np.sqrt(np.linalg.eigvalsh((product + product.T) / 2.0).clip(min=0.0)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def fid(generated: Tensor | np.ndarray, real: Tensor | np.ndarray, weights: str | Path | None = None,
        extractor: Callable[[Tensor], Tensor] | None = None, extractor_name: str = "",
        batch_size: int = 32, device: str | torch.device | None = None) -> MetricValue:
    """FID between two frame sets (lower is better).

    With ``extractor`` None, the FID Inception from the weights folder
    (n/a when missing); otherwise ``extractor`` (frames -> [B, D]) labelled
    ``substitute: <extractor_name>``, since such values are not comparable
    with published FIDs.
    """
    if extractor is None:
        try:
            network: Callable[[Tensor], Tensor] = load_fid_inception(weights)
        except MissingWeightsError as error:
            log.warning("FID not measured: %s", error)
            return MetricValue.not_available("FID", str(error), higher_is_better=False)
        reference = REFERENCE
    else:
        network = extractor
        reference = substitute(f"Fréchet distance on {extractor_name or type(extractor).__name__} features")
    generated_features = extract_features(generated, network, batch_size, device)
    real_features = extract_features(real, network, batch_size, device)
    value = frechet_distance(*feature_statistics(generated_features), *feature_statistics(real_features))
    count = f"{len(generated_features)} generated vs {len(real_features)} real frames"
    return MetricValue("FID", value, reference=reference, note=count, higher_is_better=False)
