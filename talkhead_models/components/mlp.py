"""Multi-layer perceptrons, plain and with R2-Talker's per-layer affine conditioning (M-AGLO)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

ActivationFactory = Callable[[], nn.Module]


class MLP(nn.Module):
    """``num_layers`` linear layers with an activation between them (torch-ngp's counting: 3 layers = 2 hidden).

    ``skips`` lists the layers whose input is concatenated with the network
    input, as NeRF / AD-NeRF do at layer 4 of 8.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_dim: int = 64,
        num_layers: int = 3,
        activation: ActivationFactory = nn.ReLU,
        output_activation: ActivationFactory | None = None,
        skips: tuple[int, ...] = (),
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if any(not 0 < skip < num_layers for skip in skips):
            raise ValueError(f"skip layers {skips} must lie in 1..{num_layers - 1}")
        self.skips = frozenset(skips)
        layers = []
        for index in range(num_layers):
            in_features = input_dim if index == 0 else hidden_dim + (input_dim if index in self.skips else 0)
            out_features = output_dim if index == num_layers - 1 else hidden_dim
            layers.append(nn.Linear(in_features, out_features, bias=bias))
        self.layers = nn.ModuleList(layers)
        self.activation = activation()
        self.output_activation = output_activation() if output_activation is not None else None

    def forward(self, inputs: Tensor, shared: Tensor | None = None) -> Tensor:
        """``inputs`` [..., D]; ``shared``: the network input's last features when many rows share them (a ray's
        condition over its samples, [..., 1, C] or [C], broadcast against ``inputs``). The result is that of
        the concatenated input [..., D + C], with the shared part of the input layers computed once per
        shared row instead of once per row."""
        hidden = inputs
        for index, layer in enumerate(self.layers):
            if shared is None:
                if index in self.skips:
                    hidden = torch.cat([hidden, inputs], dim=-1)
                hidden = layer(hidden)
            elif index == 0 or index in self.skips:
                own = torch.cat([hidden, inputs], dim=-1) if index else inputs
                width = own.shape[-1]
                hidden = nn.functional.linear(own, layer.weight[:, :width]) \
                    + nn.functional.linear(shared, layer.weight[:, width:], layer.bias)
            else:
                hidden = layer(hidden)
            if index < len(self.layers) - 1:
                hidden = self.activation(hidden)
        return self.output_activation(hidden) if self.output_activation is not None else hidden


class AffineConditionedMLP(nn.Module):
    """An MLP whose hidden layers are modulated by a condition with AdaIN (R2-Talker's M-AGLO, Sec. 3.3).

    R2-Talker "adopts AdaIN at each output of the FC layer": after each
    hidden linear layer, before its activation, the output is normalised
    and then scaled and shifted by the condition,
    ``h <- (h - mean(h)) / sqrt(var(h) + eps) * (1 + gamma) + beta``, where
    (gamma, beta) come from a bypass MLP of the condition (R2-Talker: 3
    layers, hidden 128, output 2 x the layer width), one bypass per
    modulated layer. AdaIN normalises each channel of one instance over its
    spatial positions; a NeRF sample's hidden vector has no spatial axis, so
    the statistics are each sample's own, over its features (the biased
    variance, as instance and layer normalisation take it), with no
    learnt affine of its own: the bypass's scale and shift are the only one.
    The bypass's last layer starts at zero so that training begins from the
    unconditioned, normalised network; the "1 +" makes the scale 1 there.
    The condition is global: one per frame, broadcast to every sample of
    the frame.
    """

    eps = 1e-5
    """Added to the variance before the square root (torch's instance / layer normalisation default)."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        condition_dim: int,
        hidden_dim: int = 128,
        num_layers: int = 3,
        bypass_hidden_dim: int = 128,
        bypass_layers: int = 3,
        activation: ActivationFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError("an affine-conditioned MLP needs at least one hidden layer (num_layers >= 2)")
        self.layers = nn.ModuleList(
            nn.Linear(input_dim if index == 0 else hidden_dim, output_dim if index == num_layers - 1 else hidden_dim)
            for index in range(num_layers)
        )
        self.bypasses = nn.ModuleList(
            MLP(condition_dim, 2 * hidden_dim, bypass_hidden_dim, bypass_layers, activation)
            for _ in range(num_layers - 1)
        )
        for bypass in self.bypasses:
            nn.init.zeros_(bypass.layers[-1].weight)
            nn.init.zeros_(bypass.layers[-1].bias)
        self.activation = activation()

    def forward(self, inputs: Tensor, condition: Tensor) -> Tensor:
        """``inputs`` [..., input_dim]; ``condition`` [condition_dim] or broadcastable to [..., condition_dim]."""
        hidden = inputs
        for layer, bypass in zip(self.layers[:-1], self.bypasses):
            gamma, beta = bypass(condition).chunk(2, dim=-1)
            normalised = nn.functional.layer_norm(layer(hidden), gamma.shape[-1:], eps=self.eps)
            hidden = self.activation(normalised * (1.0 + gamma) + beta)
        return self.layers[-1](hidden)
