"""MLPs, frequency encoding and audio encoders."""

import math

import pytest
import torch

from talkhead_models.components.audio import AudioAttNet, AudioNet, TemporalSmoother
from talkhead_models.components.encodings import FrequencyEncoding
from talkhead_models.components.mlp import MLP, AffineConditionedMLP


def test_frequency_encoding_is_ad_nerfs_embedder():
    encoding = FrequencyEncoding(input_dim=3, num_frequencies=4)
    values = torch.randn(5, 3)
    expected = [values]
    for k in range(4):
        expected += [torch.sin(2.0**k * values), torch.cos(2.0**k * values)]
    assert encoding.output_dim == 3 * (1 + 2 * 4)
    torch.testing.assert_close(encoding(values), torch.cat(expected, dim=-1))
    gstalker = FrequencyEncoding(input_dim=1, num_frequencies=6, include_input=False, multiplier=math.pi)
    torch.testing.assert_close(gstalker(torch.tensor([[0.25]]))[0, 10:12], torch.tensor([math.sin(8 * math.pi), math.cos(8 * math.pi)]), atol=1e-5, rtol=0)


def test_mlp_layers_and_skip_connection():
    mlp = MLP(input_dim=10, output_dim=4, hidden_dim=16, num_layers=8, skips=(4,))
    assert len(mlp.layers) == 8
    assert mlp.layers[4].in_features == 16 + 10 and mlp.layers[5].in_features == 16
    assert mlp(torch.randn(7, 10)).shape == (7, 4)
    with pytest.raises(ValueError):
        MLP(4, 4, skips=(0,))


def test_affine_conditioned_mlp_starts_unconditioned_then_modulates():
    torch.manual_seed(0)
    mlp = AffineConditionedMLP(input_dim=6, output_dim=3, condition_dim=5, hidden_dim=8, num_layers=3)
    inputs = torch.randn(4, 6)
    first, second = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(mlp(inputs, first), mlp(inputs, second))  # zero-initialised bypass: identity affine
    for bypass in mlp.bypasses:
        torch.nn.init.normal_(bypass.layers[-1].weight)
    assert not torch.allclose(mlp(inputs, first), mlp(inputs, second))
    # Hand-computed M-AGLO: h <- act(W h * (1 + gamma) + beta) at each hidden layer.
    hidden = inputs
    for layer, bypass in zip(mlp.layers[:-1], mlp.bypasses):
        gamma, beta = bypass(first).chunk(2)
        hidden = torch.relu(layer(hidden) * (1 + gamma) + beta)
    torch.testing.assert_close(mlp(inputs, first), mlp.layers[-1](hidden))
    batched = mlp(inputs.reshape(2, 2, 6), torch.stack([first, second])[:, None, :])  # one condition per frame
    torch.testing.assert_close(batched[0], mlp(inputs[:2], first))


def test_audio_net_shapes():
    net = AudioNet(feature_dim=29, output_dim=64)
    assert net(torch.randn(3, 16, 29)).shape == (3, 64)
    with pytest.raises(ValueError):
        AudioNet(window=32)
    with pytest.raises(ValueError):
        net(torch.randn(3, 8, 29))


def test_audio_attention_is_a_convex_combination():
    attention = AudioAttNet(seq_len=8, attention_dim=32)
    code = torch.randn(2, 1, 64)
    torch.testing.assert_close(attention(code.expand(2, 8, 64)), code[:, 0], atol=1e-5, rtol=1e-5)
    codes = torch.randn(2, 8, 64)
    output = attention(codes)
    assert torch.all(output <= codes.amax(1) + 1e-6) and torch.all(output >= codes.amin(1) - 1e-6)


def test_temporal_smoother_uses_the_whole_window():
    torch.manual_seed(0)
    smoother = TemporalSmoother(input_dim=29, output_dim=32, window=8)
    features = torch.randn(2, 8, 29, requires_grad=True)
    output = smoother(features)
    assert output.shape == (2, 32)
    output.sum().backward()
    frame_influence = features.grad.abs().sum(-1)
    assert torch.all(frame_influence > 0)  # every frame of the window reaches the output
    with pytest.raises(ValueError):
        smoother(torch.randn(2, 7, 29))
