"""LPIPS (Zhang et al. 2018), the ``lpips`` package's v0.1 network re-implemented without torchvision.

Frames in [0, 1] are mapped to [-1, 1], shifted and scaled per channel
(``ScalingLayer``), passed through AlexNet's or VGG16's convolutional
features (torchvision's layer layout, so torchvision's state dicts load
unchanged), and tapped after five ReLUs. Each tap is unit-normalised over
channels, the squared difference of the two images is weighted per channel
by the learned 1x1 ``lin`` layers, averaged over space, and the five layers
are summed.

Weights, from the weights folder (docs/WEIGHTS.md):

* backbone: ``alexnet-owt-7be5be79.pth`` or ``vgg16-397923af.pth``
  (torchvision's ImageNet state dicts; only ``features.*`` is used);
* linear layers: ``lpips_alex_lin.pth`` or ``lpips_vgg_lin.pth`` (the lpips
  package's ``weights/v0.1/alex.pth`` / ``vgg.pth``, keys
  ``lin<k>.model.1.weight``).

Without them the metric is n/a; no stand-in network could give numbers
comparable with the papers'.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from talkhead_models.metrics.base import (MetricValue, MissingWeightsError, WeightsError, frame_batches, load_into,
                                          load_state_dict, require_weights, weights_dir)

log = logging.getLogger(__name__)

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
LINEAR_FILES = {"alex": "lpips_alex_lin.pth", "vgg": "lpips_vgg_lin.pth"}
BACKBONE_NAMES = {"alex": "torchvision AlexNet", "vgg": "torchvision VGG16"}

# lpips' ScalingLayer: the [-1, 1] input is shifted and scaled to ImageNet statistics.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORMALISE_EPS = 1e-10

_LINEAR_KEY = re.compile(r"^lin(\d)\.model\.\d+\.weight$")


def _alexnet_features() -> tuple[nn.Sequential, tuple[int, ...], tuple[int, ...]]:
    """torchvision's ``alexnet().features`` up to relu5; taps after relu1..relu5."""
    layers = [
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),  # 0, 1
        nn.MaxPool2d(3, stride=2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),  # 2, 3, 4
        nn.MaxPool2d(3, stride=2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),  # 5, 6, 7
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),  # 8, 9
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),  # 10, 11
    ]
    return nn.Sequential(*layers), (1, 4, 7, 9, 11), (64, 192, 384, 256, 256)


def _vgg16_features() -> tuple[nn.Sequential, tuple[int, ...], tuple[int, ...]]:
    """torchvision's ``vgg16().features`` up to relu5_3; taps after relu1_2, 2_2, 3_3, 4_3, 5_3."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if item == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(item), 3, padding=1), nn.ReLU()]
            in_channels = int(item)
    return nn.Sequential(*layers), (3, 8, 15, 22, 29), (64, 128, 256, 512, 512)


class LpipsNetwork(nn.Module):
    """LPIPS v0.1 with the 'lin' calibration: two image batches in [0, 1] -> [B] distances."""

    def __init__(self, backbone: str = "alex") -> None:
        super().__init__()
        if backbone not in BACKBONE_FILES:
            raise ValueError(f"LPIPS backbone must be one of {sorted(BACKBONE_FILES)}, got {backbone!r}")
        self.backbone = backbone
        self.features, self.taps, channels = _alexnet_features() if backbone == "alex" else _vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def _taps(self, images: Tensor) -> list[Tensor]:
        x = ((2.0 * images - 1.0) - self.shift) / self.scale
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + NORMALISE_EPS))
            if index == self.taps[-1]:
                break
        return outputs

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        count = first.shape[0]
        # One pass over both batches: the backbone is the expensive part.
        taps = self._taps(torch.cat([first, second]))
        distance = first.new_zeros(count)
        for lin, tap in zip(self.lins, taps):
            distance = distance + lin((tap[:count] - tap[count:]).pow(2)).mean(dim=(1, 2, 3))
        return distance

    def load_backbone(self, state: dict[str, Tensor], path: Path) -> None:
        features = {key.removeprefix("features."): value for key, value in state.items()
                    if key.startswith("features.")}
        if not features:
            raise WeightsError(f"{path}: no 'features.*' keys; expected torchvision's "
                               f"{BACKBONE_NAMES[self.backbone]} state dict")
        load_into(self.features, features, path)

    def load_linear(self, state: dict[str, Tensor], path: Path) -> None:
        linear = {}
        for key, value in state.items():
            match = _LINEAR_KEY.match(key)
            if match:
                linear[f"{match.group(1)}.weight"] = value
        load_into(self.lins, linear, path)


def load_lpips(backbone: str = "alex", weights: str | Path | None = None) -> LpipsNetwork:
    """The LPIPS network with its backbone and linear weights from the weights folder (eval mode, frozen).

    Raises :class:`MissingWeightsError` naming the first missing file.
    """
    if backbone not in BACKBONE_FILES:
        raise ValueError(f"LPIPS backbone must be one of {sorted(BACKBONE_FILES)}, got {backbone!r}")
    return _load_lpips(backbone, str(weights_dir(weights).resolve()))


@functools.lru_cache(maxsize=2)
def _load_lpips(backbone: str, folder: str) -> LpipsNetwork:
    backbone_path = require_weights(folder, BACKBONE_FILES[backbone], f"{BACKBONE_NAMES[backbone]} for LPIPS")
    linear_path = require_weights(folder, LINEAR_FILES[backbone],
                                  f"LPIPS v0.1 linear layers for {backbone}, lpips' weights/v0.1/{backbone}.pth")
    network = LpipsNetwork(backbone)
    network.load_backbone(load_state_dict(backbone_path), backbone_path)
    network.load_linear(load_state_dict(linear_path), linear_path)
    log.info("LPIPS-%s loaded from %s and %s", backbone, backbone_path, linear_path)
    return network.float().eval().requires_grad_(False)


@torch.no_grad()
def lpips(generated: Tensor | np.ndarray, target: Tensor | np.ndarray, backbone: str = "alex",
          weights: str | Path | None = None, batch_size: int = 16) -> MetricValue:
    """Mean per-frame LPIPS (lower is better); n/a with the reason when its weights are missing."""
    name = "LPIPS" if backbone == "alex" else f"LPIPS-{backbone}"
    try:
        network = load_lpips(backbone, weights)
    except MissingWeightsError as error:
        log.warning("%s not measured: %s", name, error)
        return MetricValue.not_available(name, str(error), higher_is_better=False)
    distances = []
    for first, second in frame_batches(generated, target, batch_size):
        distances.append(network.to(first.device)(first, second).cpu())
    per_frame = torch.cat(distances).numpy()
    return MetricValue(name, float(per_frame.mean()), higher_is_better=False, per_frame=per_frame,
                       note=f"{BACKBONE_NAMES[backbone]} backbone")
