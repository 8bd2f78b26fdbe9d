"""JEAN: paper values, variants, conditions, training on DTW pairs, resume and two-source rendering."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch

from talkhead_models.checkpoints import CHECKPOINT_FILE, CURVE_FILE
from talkhead_models.config import ConfigError, demo_aids
from talkhead_models.methods import Driving, get_method
from talkhead_models.methods.base import UnsupportedDriving
from talkhead_models.methods.jean import VARIANTS, JeanConfig
from talkhead_models.components.rays import intersect_aabb
from talkhead_models.components.schedule import exponential_lr, window_indices
from talkhead_models.methods.jean.data import training_pairs, training_sequence_frames
from talkhead_models.methods.jean.model import JeanModel
from talkhead_models.methods.jean.trainer import JeanTrainer
from tests.conftest import TRACKED_MODELS
from tests.methods.conftest import IDENTITY
from tests.methods.jean_fixtures import TINY
from tests.methods.resume_fixtures import Killed, kill_at, ticking_clock

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def tiny_config(name: str = "jean", **changes) -> JeanConfig:
    return get_method(name).resolve_config({**TINY, **changes})


@pytest.fixture(scope="module")
def jean_root(tracked_root, tmp_path_factory):
    """The tracked identity with the pair stage's DTW pairs and training sequences (what JEAN trains on)."""
    from stages import pair
    from talkhead_models.preprocess.pairing import PairConfig

    root = tmp_path_factory.mktemp("jean_processed")
    shutil.copytree(tracked_root / IDENTITY, root / IDENTITY)
    face_model = tmp_path_factory.getbasetemp() / TRACKED_MODELS / "face_model"
    base = root / IDENTITY
    pair.run(PairConfig(sequence_frames=50), {"crop": base / "crop", "landmarks": base / "landmarks",
                                              "track": base / "track", "face_model": face_model},
             {"pair": base / "pair"}, identity=IDENTITY)
    return root


@pytest.fixture(scope="module")
def corpus_models(jean_root, tmp_path_factory):
    """Stand-ins of the corpus-level models JEAN reads: an untrained contrastive audio encoder and emotion
    features that are a fixed random projection of the tracked expression (JEAN needs their interface here)."""
    from talkhead_models.data.identity_reader import IdentityReader
    from talkhead_models.pretrained.audio_contrastive import AudioContrastiveConfig, ContrastiveAudioNet, \
        save_audio_encoder
    from talkhead_models.pretrained.emotion import EMOTION_SOURCE_SUBSTITUTE, FEATURES_DIR, FEATURES_INFO

    reader = IdentityReader(jean_root / IDENTITY)
    folder = tmp_path_factory.mktemp("jean_models")
    torch.manual_seed(0)
    features = reader.audio_features("mel")
    (folder / "audio_contrastive").mkdir()
    save_audio_encoder(ContrastiveAudioNet(features.shape[-1]), AudioContrastiveConfig(audio_feature="mel"),
                       folder / "audio_contrastive" / "model.pt")
    expression = np.load(jean_root / IDENTITY / "track" / "exp.npy")
    emotion = (np.nan_to_num(expression) @ np.random.default_rng(0).normal(size=(expression.shape[1], 12))
               ).astype(np.float32)
    (folder / "emotion" / FEATURES_DIR).mkdir(parents=True)
    np.save(folder / "emotion" / FEATURES_DIR / f"{IDENTITY}.npy", emotion)
    (folder / "emotion" / FEATURES_INFO).write_text(json.dumps(
        {"source": EMOTION_SOURCE_SUBSTITUTE, "feature_dim": 12, "frames": {IDENTITY: len(emotion)}}))
    return {"audio_contrastive": folder / "audio_contrastive", "emotion": folder / "emotion"}


def test_paper_values_are_the_defaults():
    cfg = JeanConfig()
    # Sec. 3.1-3.3 and the supplement (8.x): written out, not read from the config.
    assert (cfg.audio_dim, cfg.expression_dim, cfg.condition_dim) == (64, 64, 96)
    assert (cfg.transformer_window, cfg.transformer_hidden, cfg.transformer_model_dim, cfg.transformer_layers,
            cfg.transformer_heads, cfg.transformer_dropout, cfg.swap_probability) == (8, 512, 128, 3, 8, 0.2, 0.8)
    assert (cfg.layers, cfg.hidden, cfg.position_frequencies, cfg.direction_frequencies) == (8, 128, 10, 4)
    assert (cfg.rays_per_step, cfg.iterations, cfg.learning_rate, cfg.final_learning_rate,
            cfg.audio_learning_rate) == (2048, 400_000, 5e-4, 5e-5, 5e-6)
    assert (cfg.coarse_samples, cfg.fine_samples, cfg.frames_per_step, cfg.opacity_weight) == (64, 128, 1, 0.0)
    assert cfg.surface_band == 0.0  # the whole head box, as AD-NeRF marches it
    assert demo_aids(cfg) == []
    assert len(demo_aids(tiny_config())) == 8


def test_variants_are_registered_with_the_tables_switches():
    expected = {  # (audio encoder, expression feature, transformer), from Tables 1 and 2
        "jean": ("contrastive", "emotion", True), "jean_audio_only": ("scratch", "none", False),
        "jean_expression_only": ("none", "params", False), "jean_emotion_features": ("scratch", "emotion", False),
        "jean_expression_params": ("scratch", "params", False),
        "jean_ssl_audio_emotion_features": ("contrastive", "emotion", False),
        "jean_transformer_on_params": ("contrastive", "params", True),
    }
    assert {name for name, *_ in VARIANTS} == set(expected)
    for name, switches in expected.items():
        spec = get_method(name)
        assert spec.family == "jean" and spec.expression_source
        # params.yaml cannot undo an ablation
        cfg = spec.resolve_config({"audio_encoder": "contrastive", "expression_feature": "emotion",
                                   "expression_transformer": True, "audio_feature": "mel"})
        assert (cfg.audio_encoder, cfg.expression_feature, cfg.expression_transformer) == switches, name
    from talkhead_models.reporting.papers import mapped_variants

    assert set(mapped_variants()["jean"]) <= {spec_variant for _, spec_variant, *_ in VARIANTS}


def test_invalid_combinations_are_refused():
    with pytest.raises(ConfigError, match="both be none"):
        JeanConfig(audio_encoder="none", expression_feature="none", expression_transformer=False)
    with pytest.raises(ConfigError, match="needs an expression_feature"):
        JeanConfig(expression_feature="none", expression_transformer=True)


def test_learning_rate_decays_exponentially_between_the_papers_values():
    # 5e-4 -> 5e-5 over the run: halfway it is the geometric mean, sqrt(5e-4 * 5e-5) = 1.5811e-4.
    assert exponential_lr(5e-4, 5e-5, 0.0) == pytest.approx(5e-4)
    assert exponential_lr(5e-4, 5e-5, 0.5) == pytest.approx(1.5811388e-4, rel=1e-6)
    assert exponential_lr(5e-4, 5e-5, 1.0) == pytest.approx(5e-5)


def test_audio_windows_stay_inside_their_recording():
    frames = np.array([0, 2, 3, 5])
    first, last = np.array([0, 0, 3, 3]), np.array([2, 2, 5, 5])
    windows = window_indices(frames, 4, first, last)
    brute = [[min(max(f + o, a), b) for o in (-2, -1, 0, 1)] for f, a, b in zip(frames, first, last)]
    assert windows.tolist() == brute


def test_condition_is_audio_then_mapped_expression():
    cfg = JeanConfig()
    model = JeanModel(cfg, np.array([-1, -1, -1, 1, 1, 1.0]), 10, 64)
    windows = torch.randn(2, cfg.audio_attention_frames, 16, 10)
    expression = torch.randn(2, 64)
    condition = model.condition(windows, expression)
    assert condition.shape == (2, 96)
    torch.testing.assert_close(condition[:, :64], model.audio_code(windows))
    torch.testing.assert_close(condition[:, 64:], model.expression_map(expression))
    # The density and colour of a sample depend on the condition (it enters the MLP).
    x = torch.rand(3, 5, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(3, 5, 3), dim=-1)
    a = model.fine(x, d, condition[0])
    b = model.fine(x, d, condition[1])
    assert not torch.allclose(a[1], b[1])


def test_rays_of_several_frames_are_each_rendered_under_their_own_condition():
    # A step with frames_per_step > 1 renders all its rays at once, one condition per ray ([R, 1, C]): the
    # result must be what each frame's rays give under that frame's single condition.
    cfg = tiny_config(hidden=32, layers=3)
    torch.manual_seed(0)
    model = JeanModel(cfg, np.array([-1, -1, -1, 1, 1, 1.0]), 10, 8)
    conditions = torch.randn(2, cfg.condition_dim)
    origins = torch.tensor([[0.0, 0.0, -3.0]]).repeat(6, 1) + 0.1 * torch.randn(6, 3)
    directions = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0]]) + 0.2 * torch.randn(6, 3), dim=-1)
    per_ray = conditions.repeat_interleave(3, 0)[:, None, :]
    _, together, _ = model.render_rays(per_ray, origins, directions, perturb=False)
    for frame in range(2):
        rays = slice(3 * frame, 3 * frame + 3)
        _, alone, _ = model.render_rays(conditions[frame], origins[rays], directions[rays], perturb=False)
        torch.testing.assert_close(together.color[rays], alone.color)
        torch.testing.assert_close(together.opacity[rays], alone.opacity)
    # and the two frames' conditions do give different renders of the same rays
    _, first, _ = model.render_rays(conditions[0], origins, directions, perturb=False)
    assert not torch.allclose(first.color[3:], together.color[3:])


class SlabField(torch.nn.Module):
    """Dense matter only where z < -0.3, far behind a head whose front is at z = 0.5."""

    def forward(self, positions, directions, condition):
        density = torch.where(positions[..., 2] < -0.3, 50.0, 0.0)
        return density, torch.ones(*positions.shape[:-1], 3)


@pytest.mark.parametrize("band, expected_opacity", [(0.0, 1.0), (0.1, 0.0)])
def test_surface_band_samples_only_around_the_prior_surface(band, expected_opacity):
    from talkhead_models.components.head_prior import ShapePrior

    cfg = tiny_config(surface_band=band, surface_band_behind=0.1)
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    model = JeanModel(cfg, box.numpy(), 10, 8)
    if band:
        model.set_prior(ShapePrior(torch.zeros(3), torch.full((3,), 0.5), None, box))
    model.coarse = model.fine = SlabField()
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.1, -0.1, 3.0]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    _, fine, hit = model.render_rays(torch.zeros(cfg.condition_dim), origins, directions, perturb=False)
    # Without the band the rays march the box and reach the slab; with it they stop 0.1 behind the front.
    assert hit.all()
    torch.testing.assert_close(fine.opacity, torch.full((2,), expected_opacity), atol=1e-3, rtol=0)


def test_rays_outside_the_envelope_are_empty_and_render_frame_skips_only_those():
    from talkhead_models.components.head_prior import ShapePrior
    from talkhead_models.methods.jean.model import camera_rays, render_frame

    cfg = tiny_config(surface_band=0.1, surface_band_behind=0.1, surface_envelope=1.2)
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    torch.manual_seed(0)
    model = JeanModel(cfg, box.numpy(), 10, 8).eval()
    model.set_prior(ShapePrior(torch.zeros(3), torch.full((3,), 0.5), None, box))
    # A camera 3 units in front of the head box looking at it, 24 px: the box fills most of the frame.
    c2w = torch.eye(4)
    c2w[2, 3] = 3.0
    size, condition = 24, torch.randn(cfg.condition_dim)
    origins, directions = camera_rays(c2w, 30.0, 12.0, 12.0, size, torch.arange(size * size), size)
    _, _, hit = model.ray_bounds(origins, directions)
    assert (directions[:, 2] < 0).all()  # towards the head
    in_box = intersect_aabb(origins, directions, box)[2]
    # Some rays meet the box but pass outside the grown ellipsoid (radius 0.6): they are empty.
    crossing = origins + (3.0 / -directions[:, 2:]) * directions  # where each ray crosses z = 0
    lateral = torch.linalg.norm(crossing, dim=-1)  # its distance from the head's centre
    assert (in_box & ~hit).any() and hit.any()
    assert not hit[lateral > 0.75].any() and hit[lateral < 0.55].all()
    with torch.no_grad():
        _, fine, _ = model.render_rays(condition, origins, directions, perturb=False)
    assert float(fine.opacity[~hit].abs().max()) == 0.0
    colour, opacity = render_frame(model, condition, c2w, (30.0, 12.0, 12.0), size, size)
    torch.testing.assert_close(opacity.reshape(-1), fine.opacity)
    torch.testing.assert_close(colour.reshape(-1, 3), fine.color)


def test_training_reads_no_test_frame_and_pairs_only_training_sentences(jean_root):
    from talkhead_models.data.identity_reader import IdentityReader

    reader = IdentityReader(jean_root / IDENTITY)
    held_out = reader.held_out_mask()
    frames = training_sequence_frames(reader)
    assert len(frames) and not held_out[frames].any()
    pairs = training_pairs(reader)
    assert pairs and all(not held_out[a].any() and not held_out[b].any() for _, a, b in pairs)


def test_train_resume_and_render_with_two_sources(jean_root, corpus_models, tmp_path):
    spec = get_method("jean")
    cfg = tiny_config()
    model_dir = tmp_path / "model"
    logged = []
    first = spec.train(cfg, jean_root / IDENTITY, corpus_models, model_dir, log_metric=lambda *a: logged.append(a))
    assert first["iterations"] == 6 and first["transformer_pairs"] > 0
    assert {name for name, _, _ in logged} >= {"train_loss"}
    assert list((model_dir / "samples").glob("*.png"))
    checkpoint = torch.load(model_dir / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["iteration"] == 6

    longer = tiny_config(iterations=9)
    second = spec.train(longer, jean_root / IDENTITY, corpus_models, model_dir)
    # A changed config starts over (the checkpoint is of another configuration), it does not mix the two.
    assert second["iterations"] == 9
    with (model_dir / CURVE_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == [3, 6, 9]
    assert all(math.isfinite(float(row["loss"])) for row in rows)

    head = spec.load(longer, jean_root / IDENTITY, corpus_models, model_dir)
    reader = head.reader
    frames = np.flatnonzero(reader.validation_mask())[:3]
    features = reader.audio_features("mel")
    driving = Driving(identity=IDENTITY, role="self", audio=np.zeros(640 * 3, np.float32),
                      audio_features={"mel": np.asarray(features[frames])}, eye=reader.eye()[frames],
                      frame_indices=frames, expression_frames=frames)
    rendered = list(head.render(driving))
    size = reader.frame(0).shape[0]
    assert head.image_size == size and len(rendered) == 3
    assert all(frame.shape == (size, size, 3) and frame.dtype == np.uint8 for frame in rendered)
    assert set(head.timings) == {"conditions_ms", "rendering_ms"}
    # The solid-head prior travels with the weights: the loaded model bounds its rays as the trained one did.
    saved = torch.load(model_dir / "model.pt", weights_only=True)["state_dict"]
    assert torch.isfinite(saved["prior_depth"]).any() and torch.isfinite(saved["prior_centre"]).all()
    torch.testing.assert_close(head.model.prior_depth, saved["prior_depth"], equal_nan=True)
    # Another expression source changes the render; the audio alone stays the same.
    other = reader.training_frames()[:3]
    swapped = list(head.render(Driving(**{**driving.__dict__, "expression_frames": other})))
    assert any(not np.array_equal(a, b) for a, b in zip(rendered, swapped))
    with pytest.raises(UnsupportedDriving, match="expression-source"):
        list(head.render(Driving(**{**driving.__dict__, "expression_frames": None})))


def test_a_killed_run_resumes_to_the_uninterrupted_result(jean_root, monkeypatch, tmp_path):
    from talkhead_models.methods.jean import trainer as trainer_module

    spec = get_method("jean_expression_params")
    cfg = tiny_config("jean_expression_params", checkpoint_seconds=1.0)
    whole = spec.train(cfg, jean_root / IDENTITY, {}, tmp_path / "whole")
    ticking_clock(monkeypatch, trainer_module)
    with pytest.raises(Killed):
        spec.train(cfg, jean_root / IDENTITY, {}, tmp_path / "killed", log_metric=kill_at(6))
    resumed = spec.train(cfg, jean_root / IDENTITY, {}, tmp_path / "killed")
    assert resumed["iterations"] == whole["iterations"] == 6
    expected = torch.load(tmp_path / "whole" / CHECKPOINT_FILE, weights_only=True)
    got = torch.load(tmp_path / "killed" / CHECKPOINT_FILE, weights_only=True)
    for name, value in expected["model"].items():
        # (the solid-head prior's depth map is NaN outside the face)
        torch.testing.assert_close(value, got["model"][name], rtol=0, atol=0, equal_nan=True, msg=name)


def test_nerf_training_lowers_the_photometric_loss(jean_root):
    from talkhead_models.data.identity_reader import IdentityReader
    from talkhead_models.preprocess.frames import resized

    cfg = tiny_config("jean_expression_params", iterations=150, rays_per_step=256, hidden=16, learning_rate=1e-2,
                      final_learning_rate=1e-2, frames_per_step=1, opacity_weight=0.0, surface_band=0.0)
    torch.manual_seed(0)  # the networks' initialisation (train_jean seeds it from the config)
    trainer = JeanTrainer(cfg, IdentityReader(jean_root / IDENTITY), {}, jean_root / "unused", torch.device("cpu"))
    index = int(trainer.frames[0])
    truth = resized(trainer.reader.gt_image(index), trainer.size).astype(float)

    def error() -> float:  # the whole frame over its backdrop, against the frame itself
        return float(((trainer.render(index).astype(float) - truth) ** 2).mean())

    before = error()
    for _ in range(150):
        trainer.step()
    # Measured on the tiny identity over initialisation seeds 0, 1, 2: the frame's squared error falls to 0.28,
    # 0.33 and 0.23 of the untrained one's (after 60 steps 0.44-0.81); a NeRF that does not learn stays near 1.
    assert error() < 0.5 * before
