"""Positional (frequency) encoding of NeRF / AD-NeRF."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FrequencyEncoding(nn.Module):
    """gamma(p) = (p, sin(2^0 s p), cos(2^0 s p), ..., sin(2^(L-1) s p), cos(2^(L-1) s p)).

    The order is AD-NeRF's embedder (input first, then sine and cosine per
    frequency). ``multiplier`` s is 1 in NeRF / AD-NeRF (JEAN: L = 10 for
    positions, 4 for view directions) and pi in GSTalker's pose encoding (L = 6).
    """

    def __init__(self, input_dim: int, num_frequencies: int, include_input: bool = True, multiplier: float = 1.0):
        super().__init__()
        self.input_dim = input_dim
        self.include_input = include_input
        self.register_buffer(
            "frequencies", multiplier * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32), persistent=False
        )

    @property
    def output_dim(self) -> int:
        return self.input_dim * (int(self.include_input) + 2 * self.frequencies.numel())

    def forward(self, values: Tensor) -> Tensor:
        """[..., D] -> [..., output_dim]."""
        scaled = values.unsqueeze(-2) * self.frequencies.to(values.dtype).unsqueeze(-1)  # [..., L, D]
        # Interleave sine and cosine per frequency: [..., L, 2, D] flattened.
        periodic = torch.stack([torch.sin(scaled), torch.cos(scaled)], dim=-2).flatten(-3)
        return torch.cat([values, periodic], dim=-1) if self.include_input else periodic
