"""S3D-NeRF's adversarial discriminator, trained from scratch (Sec. 3.4: "a StyleGAN discriminator").

StyleGAN2's residual architecture: a 1x1 from-RGB layer, residual blocks
that halve the resolution (two 3x3 convolutions and a skip connection,
summed and divided by sqrt 2), the minibatch standard-deviation channel,
then a convolution and two linear layers to one logit. Losses are
StyleGAN2's: non-saturating logistic for both players and the R1 penalty
on real images, applied lazily (every ``interval`` steps, scaled by it).

The block activations double as the demo's perceptual features when no
ImageNet network is available (``perceptual_network:
discriminator_features``, pix2pixHD's feature matching).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LRELU = 0.2


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        h = F.leaky_relu(self.conv1(x), _LRELU)
        h = F.avg_pool2d(F.leaky_relu(self.conv2(h), _LRELU), 2)
        return (h + skip) / math.sqrt(2.0)


def minibatch_stddev(x: Tensor, group_size: int = 4) -> Tensor:
    """StyleGAN's extra channel: the standard deviation of each feature over a group of samples, averaged over
    features and positions, appended to every sample of the group."""
    batch, channels, height, width = x.shape
    group = min(group_size, batch)
    while batch % group:
        group -= 1
    grouped = x.reshape(group, batch // group, channels, height, width)
    std = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [B / group]
    channel = std.repeat(group)[:, None, None, None].expand(batch, 1, height, width)
    return torch.cat([x, channel], dim=1)


class Discriminator(nn.Module):
    """Images [B, 3, S, S] in [0, 1] -> (logits [B], the residual blocks' activations)."""

    def __init__(self, image_size: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        if image_size % (2 ** len(channels)):
            raise ValueError(f"a {image_size}-pixel image cannot be halved {len(channels)} times")
        self.from_rgb = nn.Conv2d(3, channels[0], 1)
        widths = (channels[0], *channels)
        self.blocks = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
        final = image_size // 2 ** len(channels)
        self.conv = nn.Conv2d(channels[-1] + 1, channels[-1], 3, padding=1)
        self.fc = nn.Linear(channels[-1] * final * final, channels[-1])
        self.out = nn.Linear(channels[-1], 1)

    def forward(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = F.leaky_relu(self.from_rgb(images * 2.0 - 1.0), _LRELU)
        activations = []
        for block in self.blocks:
            h = block(h)
            activations.append(h)
        h = F.leaky_relu(self.conv(minibatch_stddev(h)), _LRELU)
        h = F.leaky_relu(self.fc(h.flatten(1)), _LRELU)
        return self.out(h)[:, 0], activations


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating: -log sigmoid(D(G(z)))."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(discriminator: Discriminator, real: Tensor) -> Tensor:
    """Mean over the batch of |grad_x D(x)|^2 at real images (StyleGAN2's R1, before its gamma / 2)."""
    real = real.detach().requires_grad_(True)
    logits, _ = discriminator(real)
    (gradient,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return gradient.square().sum(dim=(1, 2, 3)).mean()


def feature_matching(fake_activations: list[Tensor], real_activations: list[Tensor]) -> Tensor:
    """pix2pixHD's feature-matching loss: mean L1 between the activations of each block, real detached."""
    return sum(F.l1_loss(fake, real.detach()) for fake, real in zip(fake_activations, real_activations)) / len(
        fake_activations)
