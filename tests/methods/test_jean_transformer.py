"""JEAN's expression transformer, each check against something computed independently: the encoder's raw output
split by hand, the encoded halves recomputed outside the loss, the decoder fed its own generation, windows
built by a plain loop, and a toy whose emotion and speech are known by construction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import talkhead_models.methods.jean.transformer as jean
from talkhead_models.methods.jean.transformer import (ExpressionTransformer, TransformerTraining, expression_codes,
                                                      frame_codes, pair_loss, train_expression_transformer)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(model_dim=64, hidden_dim=128, layers=2, heads=4, feedforward_dim=128)
"""A model small enough to train in seconds on one CPU thread; the paper's sizes are the class defaults."""


def normalised_model(feature_dim: int = 20, seed: int = 0, **options) -> ExpressionTransformer:
    torch.manual_seed(seed)
    model = ExpressionTransformer(feature_dim, **options)
    # A mean and scale far from (0, 1), so a step that skips or repeats the normalisation shows.
    model.set_normalisation(torch.linspace(-3, 3, feature_dim), torch.linspace(0.5, 4, feature_dim))
    return model.eval()


def test_shapes_and_split_into_lip_then_expression():
    model = normalised_model()
    features = torch.randn(3, 8, 20) * 2
    raw = []
    handle = model.encoder.register_forward_hook(lambda module, inputs, output: raw.append(output))
    with torch.no_grad():
        lip, expression = model.encode(features)
    handle.remove()
    assert lip.shape == expression.shape == (3, 8, 64)
    assert raw[0].shape == (3, 10, 128), "the window plus the start and end vectors"
    torch.testing.assert_close(lip, raw[0][:, 1:-1, :64], rtol=0, atol=0)
    torch.testing.assert_close(expression, raw[0][:, 1:-1, 64:], rtol=0, atol=0)
    with torch.no_grad():
        assert model.decode(lip, expression).shape == (3, 8, 20)
        assert model.decode(lip, expression, features).shape == (3, 8, 20)
        assert model(features).shape == (3, 8, 20)


def test_pair_loss_decodes_each_lip_part_with_the_swapped_expression_and_its_features():
    model = normalised_model()
    features_a, features_b = torch.randn(3, 8, 20), torch.randn(3, 8, 20) + 5
    swap = torch.tensor([True, False, True])
    with torch.no_grad():
        lip_a, expression_a = model.encode(features_a)
        lip_b, expression_b = model.encode(features_b)
    seen = {}
    decode = model.decode_normalised

    def recording(lip, expression, target=None):
        seen.update(lip=lip, expression=expression, target=target)
        return decode(lip, expression, target)

    model.decode_normalised = recording
    with torch.no_grad():
        loss = pair_loss(model, features_a, features_b, swap)
    close = dict(rtol=1e-5, atol=1e-5)
    # Rows 0..2 carry A's lip parts, rows 3..5 B's; windows 0 and 2 are swapped, window 1 is not.
    torch.testing.assert_close(seen["lip"], torch.cat([lip_a, lip_b]), **close)
    expected_expression = torch.stack([expression_b[0], expression_a[1], expression_b[2],
                                       expression_a[0], expression_b[1], expression_a[2]])
    torch.testing.assert_close(seen["expression"], expected_expression, **close)
    # The target follows the expression part: A's lip with B's expression is B's window.
    expected_target = torch.stack([features_b[0], features_a[1], features_b[2],
                                   features_a[0], features_b[1], features_a[2]])
    torch.testing.assert_close(seen["target"], expected_target, rtol=0, atol=0)
    with torch.no_grad():
        by_hand = (decode(seen["lip"], seen["expression"], expected_target)
                   - model.normalise(expected_target)).abs().mean()
    torch.testing.assert_close(loss, by_hand, **close)


def test_training_swaps_whole_windows_with_the_configured_probability(monkeypatch):
    swaps = []
    original = jean.pair_loss

    def recording(model, features_a, features_b, swap):
        if model.training:
            swaps.append(swap.clone())
        return original(model, features_a, features_b, swap)

    monkeypatch.setattr(jean, "pair_loss", recording)
    features = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    pairs = [(np.arange(20), np.arange(20, 40))]
    training = TransformerTraining(steps=25, batch_size=64, swap_probability=0.8, log_every=100)
    train_expression_transformer(features, pairs, training, model_options=dict(SMALL, layers=1))
    drawn = torch.cat(swaps).float()
    assert len(swaps) == 25 and drawn.shape == (25 * 64,)
    # 1600 draws: the standard error of the fraction is 0.01.
    assert abs(drawn.mean().item() - 0.8) < 0.04


def test_autoregressive_generation_equals_teacher_forcing_on_its_own_output():
    model = normalised_model(heads=8)
    lip, expression = torch.randn(4, 8, 64), torch.randn(4, 8, 64)
    with torch.no_grad():
        generated = model.decode(lip, expression)
        forced = model.decode(lip, expression, target=generated)
        other = model.decode(lip, expression, target=torch.randn(4, 8, 20) * 3)
    torch.testing.assert_close(forced, generated, rtol=0, atol=1e-5)
    # Frame 0 depends on the codes alone; later frames on the fed-back frames, which here differ.
    torch.testing.assert_close(other[:, 0], generated[:, 0], rtol=0, atol=1e-5)
    assert (other[:, 1:] - generated[:, 1:]).abs().amax(dim=(0, 2)).min() > 1e-3


@pytest.mark.parametrize("changed", [0, 3, 6])
def test_decoder_is_causal(changed):
    model = normalised_model()
    lip, expression = torch.randn(2, 8, 64), torch.randn(2, 8, 64)
    target = torch.randn(2, 8, 20)
    edited = target.clone()
    edited[:, changed] += 10
    with torch.no_grad():
        before = model.decode(lip, expression, target)
        after = model.decode(lip, expression, edited)
    torch.testing.assert_close(after[:, :changed + 1], before[:, :changed + 1], rtol=0, atol=1e-5)
    assert (after[:, changed + 1] - before[:, changed + 1]).abs().max() > 1e-3


@pytest.mark.parametrize("window", [8, 5])
def test_expression_codes_take_each_frames_window_and_its_middle_output(window):
    model = normalised_model(feature_dim=12, **SMALL)
    features = np.random.default_rng(1).normal(size=(13, 12)).astype(np.float32)
    expected_lip, expected_expression = [], []
    with torch.no_grad():
        for t in range(len(features)):
            frames = [min(max(t - window // 2 + j, 0), len(features) - 1) for j in range(window)]
            lip, expression = model.encode(torch.from_numpy(features[frames])[None])
            expected_lip.append(lip[0, window // 2].numpy())
            expected_expression.append(expression[0, window // 2].numpy())
    model.train()
    codes = expression_codes(model, features, window=window, batch=5)
    assert model.training, "the caller's mode is restored"
    assert codes.shape == (13, 32) and codes.dtype == np.float32
    np.testing.assert_allclose(codes, np.stack(expected_expression), rtol=0, atol=1e-5)
    np.testing.assert_allclose(frame_codes(model, torch.from_numpy(features), window, batch=4)[0],
                               np.stack(expected_lip), rtol=0, atol=1e-5)
    assert expression_codes(model, np.zeros((0, 12), np.float32)).shape == (0, 32)


def test_pair_windows_against_a_loop():
    path_a, path_b = np.arange(100, 111), np.arange(200, 211)
    windows_a, windows_b = jean._pair_windows([(path_a, path_b), (np.array([3, 4, 5]), np.array([7, 7, 8]))],
                                              window=8, frames=300)
    expected = [[path_a[s + j] for j in range(8)] for s in range(4)] + [[3, 4, 5, 5, 5, 5, 5, 5]]
    np.testing.assert_array_equal(windows_a, expected)
    np.testing.assert_array_equal(windows_b[:4], windows_a[:4] + 100)
    np.testing.assert_array_equal(windows_b[4], [7, 7, 8, 8, 8, 8, 8, 8])
    as_path, _ = jean._pair_windows([np.stack([path_a, path_b], 1)], window=8, frames=300)
    np.testing.assert_array_equal(as_path, windows_a[:4])
    two_steps, _ = jean._pair_windows([np.array([[1, 2], [3, 4]])], window=3, frames=300)
    np.testing.assert_array_equal(two_steps, [[1, 3, 3]])
    tiled, _ = jean._pair_windows([(path_a, path_b)], window=4, frames=300, stride=4)
    np.testing.assert_array_equal(tiled, [path_a[0:4], path_a[4:8], path_a[7:11]])
    with pytest.raises(ValueError, match="differ in length"):
        jean._pair_windows([(path_a, path_b[:-1])], window=8, frames=300)
    with pytest.raises(ValueError, match="outside"):
        jean._pair_windows([(path_a, path_b)], window=8, frames=150)


def toy_identity(seed: int, dim: int = 16, sentences: int = 8, length: int = 48, latent: int = 4):
    """Each sentence a smooth lip trajectory shared by both emotions; each emotion a constant offset.

    Clip order: sentence s in emotion A, then in emotion B; pairs align them step for step.
    """
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(latent, dim)) / np.sqrt(latent)
    offsets = rng.normal(size=(2, dim))
    offsets *= 0.5 * np.sqrt(dim) / np.linalg.norm(offsets, axis=1, keepdims=True)
    clips, pairs = [], []
    for _ in range(sentences):
        time = np.arange(length)[:, None]
        lips = np.sin(rng.uniform(0.1, 0.5, (1, latent)) * time + rng.uniform(0, 2 * np.pi, (1, latent))) @ mixing
        first = len(clips) * length
        clips += [lips + offset + 0.05 * rng.normal(size=(length, dim)) for offset in offsets]
        pairs.append((np.arange(first, first + length), np.arange(first + length, first + 2 * length)))
    return np.concatenate(clips).astype(np.float32), pairs


def separation(codes_a: np.ndarray, codes_b: np.ndarray) -> float:
    """Distance of the two emotions' mean codes in units of their within-emotion spread along that direction."""
    direction = codes_a.mean(0) - codes_b.mean(0)
    direction /= np.linalg.norm(direction)
    along_a, along_b = codes_a @ direction, codes_b @ direction
    return float((along_a.mean() - along_b.mean()) / np.sqrt(0.5 * (along_a.var() + along_b.var())))


def test_training_on_a_toy_separates_emotion_from_speech():
    features, pairs = toy_identity(seed=0)
    training, validation = pairs[:6], pairs[6:]
    model, history = train_expression_transformer(
        features, training, TransformerTraining(steps=200, log_every=100, seed=0), validation, model_options=SMALL)
    initial, final = history[0], history[-1]
    assert initial["step"] == 0 and final["step"] == 200
    # Untrained ~0.87, trained ~0.12 (normalised L1) on unseen sentences.
    assert final["val_loss"] < 0.3 * initial["val_loss"]
    # A's lip part decoded with B's expression part gives B: no worse than unswapped (trained with swaps
    # switched off the swapped loss stays ~3x the plain one).
    assert final["val_swapped_loss"] < 1.3 * final["val_loss"]

    lip_a, expression_a = (np.concatenate(part) for part in
                           zip(*(frame_codes(model, features[a]) for a, _ in validation)))
    lip_b, expression_b = (np.concatenate(part) for part in
                           zip(*(frame_codes(model, features[b]) for _, b in validation)))
    # Trained ~10-16 over seeds 0-4; with swaps off ~6-8, with the target following the lip part ~4-7.
    assert separation(expression_a, expression_b) > 8
    assert separation(expression_a, expression_b) > 1.5 * separation(lip_a, lip_b)
    # The lip parts of aligned A and B frames, which say the same thing in two emotions, lie close compared with
    # A and B frames at least 4 steps apart (trained ~0.3-0.4; untrained ~0.7, swaps off ~0.65-0.7, target
    # following the lip part ~0.8).
    steps = np.arange(len(lip_a))
    apart = np.abs(steps[:, None] - steps[None]) >= 4
    aligned = np.linalg.norm(lip_a - lip_b, axis=1).mean()
    elsewhere = np.linalg.norm(lip_a[:, None] - lip_b[None], axis=2)[apart].mean()
    assert aligned < 0.5 * elsewhere


def test_resumed_training_matches_an_uninterrupted_run_and_leaves_the_global_rng_alone():
    features, pairs = toy_identity(seed=1, sentences=3, length=20)
    options = dict(SMALL, layers=1)
    training = TransformerTraining(steps=6, batch_size=8, log_every=2, checkpoint_every=3, seed=3)
    states = []
    global_rng = torch.get_rng_state()
    whole, whole_history = train_expression_transformer(features, pairs[:2], training, pairs[2:],
                                                        on_checkpoint=states.append, model_options=options)
    assert torch.equal(torch.get_rng_state(), global_rng)
    assert [state["step"] for state in states] == [3, 6]
    resumed, resumed_history = train_expression_transformer(features, pairs[:2], training, pairs[2:],
                                                            state=states[0], model_options=options)
    for (name, value), (_, again) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(again, value, rtol=0, atol=1e-6, msg=name)
    assert [row["step"] for row in resumed_history] == list(range(7))
    np.testing.assert_allclose([row.get("loss", 0) for row in resumed_history],
                               [row.get("loss", 0) for row in whole_history], rtol=1e-5)
    used = np.concatenate([np.concatenate(pair) for pair in pairs[:2]])
    np.testing.assert_allclose(whole.feature_mean.numpy(), features[used].mean(0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(whole.feature_std.numpy(), features[used].std(0, ddof=1), rtol=1e-4)
    # A finished run extended by two steps is the run that took eight from the start.
    longer = dataclasses.replace(training, steps=8)
    extended, _ = train_expression_transformer(features, pairs[:2], longer, pairs[2:], state=states[1],
                                               model_options=options)
    straight, _ = train_expression_transformer(features, pairs[:2], longer, pairs[2:], model_options=options)
    for (name, value), (_, again) in zip(straight.state_dict().items(), extended.state_dict().items()):
        torch.testing.assert_close(again, value, rtol=0, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="other settings"):
        train_expression_transformer(features, pairs[:2], dataclasses.replace(training, learning_rate=1e-4),
                                     state=states[0], model_options=options)
