"""Audio encoders: AD-NeRF's AudioNet and AudioAttNet, and GSTalker's temporal smoother.

AD-NeRF (used by JEAN) encodes, per video frame, a window of 16 audio
feature vectors (DeepSpeech: 29 logits each) with 1D convolutions into one
vector, then smooths 8 consecutive frame vectors with learned attention
weights. GSTalker smooths per-frame audio features with 1D convolutions and
self-attention over a window of frames.
"""

from __future__ import annotations

from torch import Tensor, nn


class AudioNet(nn.Module):
    """AD-NeRF's per-frame audio encoder: [B, window <= 16, feature_dim] -> [B, output_dim].

    Four stride-2 convolutions reduce the window to one step (16 -> 8 -> 4 -> 2 -> 1),
    then two linear layers. AD-NeRF: 29 DeepSpeech features, output 64.
    """

    def __init__(self, feature_dim: int = 29, output_dim: int = 64, window: int = 16) -> None:
        super().__init__()
        if not 1 <= window <= 16:
            raise ValueError(f"AudioNet's four stride-2 convolutions reduce at most 16 steps, got a window of {window}")
        self.window = window
        channels = (feature_dim, 32, 32, 64, 64)
        convolutions: list[nn.Module] = []
        for in_channels, out_channels in zip(channels[:-1], channels[1:]):
            convolutions += [nn.Conv1d(in_channels, out_channels, 3, stride=2, padding=1), nn.LeakyReLU(0.02)]
        self.convolutions = nn.Sequential(*convolutions)
        self.head = nn.Sequential(nn.Linear(64, 64), nn.LeakyReLU(0.02), nn.Linear(64, output_dim))

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 3 or features.shape[1] != self.window:
            raise ValueError(f"expected audio windows [B, {self.window}, features], got {tuple(features.shape)}")
        encoded = self.convolutions(features.transpose(1, 2)).squeeze(-1)  # [B, 64]
        return self.head(encoded)


class AudioAttNet(nn.Module):
    """AD-NeRF's attention smoothing over a window of frame codes: [B, seq_len, dim] -> [B, dim].

    A 1D convolution stack over the first ``attention_dim`` channels scores each
    frame, a linear layer and softmax over the window turn the scores into
    weights, and the output is the weighted sum of the codes. AD-NeRF: 8
    frames, scores from 32 channels.
    """

    def __init__(self, seq_len: int = 8, attention_dim: int = 32) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.attention_dim = attention_dim
        channels = (attention_dim, 16, 8, 4, 2, 1)
        layers: list[nn.Module] = []
        for in_channels, out_channels in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv1d(in_channels, out_channels, 3, padding=1), nn.LeakyReLU(0.02)]
        self.scores = nn.Sequential(*layers)
        self.weights = nn.Sequential(nn.Linear(seq_len, seq_len), nn.Softmax(dim=-1))

    def forward(self, codes: Tensor) -> Tensor:
        if codes.dim() != 3 or codes.shape[1] != self.seq_len or codes.shape[2] < self.attention_dim:
            raise ValueError(
                f"expected codes [B, {self.seq_len}, >= {self.attention_dim}], got {tuple(codes.shape)}"
            )
        scores = self.scores(codes[..., : self.attention_dim].transpose(1, 2)).squeeze(1)  # [B, seq_len]
        weights = self.weights(scores)
        return (weights.unsqueeze(-1) * codes).sum(1)


class TemporalSmoother(nn.Module):
    """GSTalker's temporal smoothing of audio features over a window of frames: [B, W, in] -> [B, out].

    1D convolutions along time mix neighbouring frames, multi-head
    self-attention (with a residual connection and layer norm) relates every
    frame of the window to the others, and learned attention pooling
    (softmax over the window) returns one feature for the window's frame.
    GSTalker gives no sizes; the defaults follow RAD-NeRF's audio path
    (window 8, 32-d output).
    """

    def __init__(self, input_dim: int, output_dim: int = 32, window: int = 8, num_heads: int = 4) -> None:
        super().__init__()
        if output_dim % num_heads:
            raise ValueError(f"output_dim {output_dim} must be divisible by num_heads {num_heads}")
        self.window = window
        self.convolutions = nn.Sequential(
            nn.Conv1d(input_dim, output_dim, 3, padding=1),
            nn.LeakyReLU(0.02),
            nn.Conv1d(output_dim, output_dim, 3, padding=1),
            nn.LeakyReLU(0.02),
        )
        self.attention = nn.MultiheadAttention(output_dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(output_dim)
        self.pool_scores = nn.Linear(output_dim, 1)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 3 or features.shape[1] != self.window:
            raise ValueError(f"expected features [B, {self.window}, dim], got {tuple(features.shape)}")
        mixed = self.convolutions(features.transpose(1, 2)).transpose(1, 2)  # [B, W, out]
        attended, _ = self.attention(mixed, mixed, mixed, need_weights=False)
        context = self.norm(mixed + attended)
        weights = self.pool_scores(context).softmax(dim=1)  # [B, W, 1]
        return (weights * context).sum(1)
