"""MLPs, frequency encoding and audio encoders."""

import math

import numpy as np
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


def _numpy_mlp(mlp: MLP, inputs: np.ndarray) -> np.ndarray:
    """The MLP in float64 numpy from its weights: ReLU between layers, the input re-entering at each skip."""
    hidden = inputs.astype(np.float64)
    for index, layer in enumerate(mlp.layers):
        if index in mlp.skips:
            hidden = np.concatenate([hidden, inputs], -1)
        hidden = hidden @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()
        if index < len(mlp.layers) - 1:
            hidden = np.maximum(hidden, 0.0)
    return hidden


@pytest.mark.parametrize("shared_shape", [(5, 1, 6), (6,)])
def test_mlp_with_a_shared_input_is_the_mlp_of_the_concatenated_input(shared_shape):
    torch.manual_seed(0)
    mlp = MLP(input_dim=4 + 6, output_dim=3, hidden_dim=16, num_layers=5, skips=(3,))
    own = torch.randn(5, 7, 4)  # 5 rays of 7 samples; 4 features of each sample, 6 shared by a ray's samples
    shared = torch.randn(*shared_shape)
    concatenated = torch.cat([own, shared.expand(5, 7, 6)], -1).numpy()
    expected = _numpy_mlp(mlp, concatenated)
    np.testing.assert_allclose(mlp(own, shared=shared).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mlp(torch.as_tensor(concatenated)).detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def _numpy_maglo(mlp: AffineConditionedMLP, inputs: np.ndarray, condition: np.ndarray) -> np.ndarray:
    """M-AGLO in float64 numpy from the module's weights: each hidden FC output normalised over its features
    (mean, biased variance, eps 1e-5), scaled by 1 + gamma and shifted by beta from the bypass MLP, then ReLU."""
    def weights(linear: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
        return linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy()

    hidden = inputs.astype(np.float64)
    for layer, bypass in zip(mlp.layers[:-1], mlp.bypasses):
        code = condition.astype(np.float64)
        for index, linear in enumerate(bypass.layers):
            w, b = weights(linear)
            code = code @ w.T + b
            if index < len(bypass.layers) - 1:
                code = np.maximum(code, 0.0)
        width = code.shape[-1] // 2
        gamma, beta = code[..., :width], code[..., width:]
        w, b = weights(layer)
        pre = hidden @ w.T + b
        mean = pre.mean(-1, keepdims=True)
        variance = ((pre - mean) ** 2).mean(-1, keepdims=True)
        hidden = np.maximum((pre - mean) / np.sqrt(variance + 1e-5) * (1.0 + gamma) + beta, 0.0)
    w, b = weights(mlp.layers[-1])
    return hidden @ w.T + b


def test_affine_conditioned_mlp_is_adain_on_each_hidden_layer():
    torch.manual_seed(0)
    mlp = AffineConditionedMLP(input_dim=6, output_dim=3, condition_dim=5, hidden_dim=8, num_layers=3,
                               bypass_hidden_dim=7, bypass_layers=3)
    inputs = torch.randn(4, 6)
    first, second = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(mlp(inputs, first), mlp(inputs, second))  # zero-initialised bypass: identity affine
    for bypass in mlp.bypasses:
        torch.nn.init.normal_(bypass.layers[-1].weight, std=0.5)
        torch.nn.init.normal_(bypass.layers[-1].bias, std=0.5)
    assert not torch.allclose(mlp(inputs, first), mlp(inputs, second))
    with torch.no_grad():
        for condition in (first, second):
            expected = _numpy_maglo(mlp, inputs.numpy(), condition.numpy())
            np.testing.assert_allclose(mlp(inputs, condition).numpy(), expected, rtol=1e-5, atol=1e-5)
        # One condition per frame, broadcast over the frame's samples.
        batched = mlp(inputs.reshape(2, 2, 6), torch.stack([first, second])[:, None, :]).numpy()
        np.testing.assert_allclose(batched[1], _numpy_maglo(mlp, inputs[2:].numpy(), second.numpy()),
                                   rtol=1e-5, atol=1e-5)


def test_affine_conditioned_mlp_normalises_away_a_shift_of_the_pre_activation():
    """The same constant added to every feature of a hidden FC output (per sample) leaves the output unchanged;
    without the normalisation it would pass through the ReLU and change it."""
    torch.manual_seed(1)
    mlp = AffineConditionedMLP(input_dim=6, output_dim=3, condition_dim=5, hidden_dim=16, num_layers=3)
    for bypass in mlp.bypasses:
        torch.nn.init.normal_(bypass.layers[-1].weight, std=0.5)
    inputs, condition = torch.randn(10, 6), torch.randn(5)
    with torch.no_grad():
        before = mlp(inputs, condition)
        for layer in mlp.layers[:-1]:
            layer.bias += 2.5
        torch.testing.assert_close(mlp(inputs, condition), before, rtol=1e-5, atol=1e-5)
        mlp.layers[0].weight[:, 0] += 0.7  # a shift that depends on the sample (its first input), same per feature
        torch.testing.assert_close(mlp(inputs, condition), before, rtol=1e-5, atol=1e-5)
        mlp.layers[0].bias[0] += 1.0  # one feature only: not a shift, the output moves
        assert not torch.allclose(mlp(inputs, condition), before, atol=1e-3)


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
