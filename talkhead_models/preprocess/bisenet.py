"""face-parsing.PyTorch's BiSeNet (ResNet-18 context path), the face parser ER-NeRF uses.

The network is rebuilt here in plain torch (the original imports torchvision
and downloads ImageNet weights when constructed) with the same module names,
so its released state dict ``79999_iter.pth`` loads unchanged from
``$TALKHEAD_WEIGHTS``. Its 19 CelebAMask-HQ classes map onto ours as ER-NeRF
colours them: skin, brows, eyes, glasses, ears, earring, nose, mouth, lips,
hair and hat are head; neck and necklace are neck; cloth is torso.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkhead_models.data.synthetic.face import (
    LABEL_BACKGROUND, LABEL_HEAD, LABEL_LIPS, LABEL_MOUTH, LABEL_NECK, LABEL_TORSO,
)
from talkhead_models.preprocess.landmarks import resolve_device
from talkhead_models.weights import weights_dir

log = logging.getLogger(__name__)

WEIGHTS = "79999_iter.pth"
N_CLASSES = 19
INPUT_SIZE = 512  # ER-NeRF resizes every frame to 512 x 512 before parsing
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# CelebAMask-HQ class -> our label: 0 background, 1 skin, 2-3 brows, 4-5 eyes, 6 glasses, 7-8 ears,
# 9 earring, 10 nose, 11 mouth, 12-13 lips, 14 neck, 15 necklace, 16 cloth, 17 hair, 18 hat.
CLASS_TO_LABEL = np.array([LABEL_BACKGROUND] + [LABEL_HEAD] * 10 + [LABEL_MOUTH, LABEL_LIPS, LABEL_LIPS]
                          + [LABEL_NECK, LABEL_NECK, LABEL_TORSO, LABEL_HEAD, LABEL_HEAD], np.uint8)


class ConvBNReLU(nn.Module):
    def __init__(self, in_chan: int, out_chan: int, ks: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chan, out_chan, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, in_chan: int, out_chan: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chan, out_chan, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chan)
        self.conv2 = nn.Conv2d(out_chan, out_chan, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chan)
        self.downsample = None
        if in_chan != out_chan or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_chan, out_chan, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_chan))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class Resnet18(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

        def layer(in_chan: int, out_chan: int, stride: int) -> nn.Sequential:
            return nn.Sequential(BasicBlock(in_chan, out_chan, stride), BasicBlock(out_chan, out_chan, 1))

        self.layer1 = layer(64, 64, 1)
        self.layer2 = layer(64, 128, 2)
        self.layer3 = layer(128, 256, 2)
        self.layer4 = layer(256, 512, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinementModule(nn.Module):
    def __init__(self, in_chan: int, out_chan: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_chan, out_chan)
        self.conv_atten = nn.Conv2d(out_chan, out_chan, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_chan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        attention = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * attention


class ContextPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet = Resnet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        average = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))
        feat32_sum = self.arm32(feat32) + F.interpolate(average, feat32.shape[2:], mode="nearest")
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, feat16.shape[2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, feat8.shape[2:], mode="nearest"))
        return feat8, feat16_up, feat32_up


class FeatureFusionModule(nn.Module):
    def __init__(self, in_chan: int, out_chan: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_chan, out_chan, ks=1, padding=0)
        self.conv1 = nn.Conv2d(out_chan, out_chan // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_chan // 4, out_chan, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat * attention + feat


class BiSeNetOutput(nn.Module):
    def __init__(self, in_chan: int, mid_chan: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_chan, mid_chan)
        self.conv_out = nn.Conv2d(mid_chan, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """The released model: the ResNet's 1/8 features stand in for the spatial path.

    ``forward`` returns the main head's logits at the input size; the two
    auxiliary heads (``conv_out16``, ``conv_out32``) exist so the state dict
    loads, and are only used in training.
    """

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, feat_cp8, _ = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, feat_cp8))
        return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)


def load_bisenet(path: Path, device: str = "cpu") -> BiSeNet:
    """BiSeNet with the released weights; a missing file is an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(
            f"parse backend bisenet needs {path} (face-parsing.PyTorch's {WEIGHTS}); put it in $TALKHEAD_WEIGHTS "
            f"(now {path.parent}) or set parse.backend: geometry")
    net = BiSeNet()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.to(device).eval()


class BiSeNetParser:
    """Frames -> our labels through BiSeNet at 512 px, as ER-NeRF's face_parsing/test.py runs it."""

    def __init__(self, device: str = "auto") -> None:
        self.device = torch.device(resolve_device(device))
        self.net = load_bisenet(weights_dir() / WEIGHTS, str(self.device))
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        log.info("parsing: BiSeNet (%s) on %s", WEIGHTS, self.device)

    def __call__(self, frame: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        height, width = frame.shape[:2]
        resized = cv2.resize(frame, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        image = torch.from_numpy(resized).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            classes = self.net((image - self._mean) / self._std).argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
        labels = CLASS_TO_LABEL[classes]
        if (height, width) != labels.shape:
            labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
        return labels

    def close(self) -> None:
        """Nothing to release: the network is freed with the object."""
