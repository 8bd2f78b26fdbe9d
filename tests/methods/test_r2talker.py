"""R2-Talker: the ablation ladder's architectures, the paper's schedule, the renderer, training, resume, render."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from talkhead_models.components.hashgrid import LandmarkHashEncoder
from talkhead_models.components.mlp import MLP, AffineConditionedMLP
from talkhead_models.components.occupancy import OccupancyGrid, OccupancyGridConfig
from talkhead_models.components.volume import composite, sample_stratified
from talkhead_models.methods import Driving, get_method
from talkhead_models.methods.r2talker import R2TalkerConfig
from talkhead_models.methods.r2talker.fields import HeadField
from talkhead_models.methods.r2talker.model import MODEL_FILE, R2TalkerModel
from talkhead_models.methods.r2talker.render import march_and_composite
from talkhead_models.methods.r2talker.data import IdentityData, scene_frame
from talkhead_models.methods.r2talker.trainer import Trainer
from tests.methods.r2talker_fixtures import IDENTITY, TINY
from tests.methods.resume_fixtures import Killed, kill_at, ticking_clock

LADDER = {"r2talker_audio_baseline": ("audio_baseline", "audio", False, False, True),
          "r2talker_landmark_encoding": ("landmark_encoding", "landmarks", False, False, False),
          "r2talker_maglo": ("maglo", "landmarks", True, False, False),
          "r2talker": ("", "landmarks", True, True, False)}


def tiny_config(name: str, **overrides) -> R2TalkerConfig:
    return get_method(name).resolve_config({**TINY, **overrides})


# ---------------------------------------------------------------------------------------------------------------
# Configuration and architecture


def test_the_ladder_is_registered_with_its_switches():
    for name, (variant, condition, maglo, progressive, audio_spatial) in LADDER.items():
        spec = get_method(name)
        cfg = spec.resolve_config({"condition": "landmarks", "maglo": False, "progressive": True,
                                   "audio_spatial": True})  # params can't undo
        assert spec.family == "r2talker" and spec.variant == variant
        assert (cfg.condition, cfg.maglo, cfg.progressive, cfg.audio_spatial) == \
            (condition, maglo, progressive, audio_spatial)
        assert ("audio2motion" in spec.pretrained) == (condition == "landmarks")


def test_paper_defaults_and_schedule():
    cfg = R2TalkerConfig()
    assert (cfg.position_levels, cfg.position_level_dim, cfg.position_base_resolution,
            cfg.position_log2_hashmap_size, cfg.position_desired_resolution) == (16, 4, 32, 16, 2048)
    assert (cfg.landmark_levels, cfg.landmark_level_dim, cfg.landmark_window) == (16, 2, 5)
    assert (cfg.sigma_layers, cfg.sigma_hidden, cfg.geo_feat_dim, cfg.bypass_layers, cfg.bypass_hidden) == \
        (3, 128, 128, 3, 128)
    assert cfg.iterations == 240_000 and cfg.lips_start_iteration == 200_000
    lips = cfg.lips_start_iteration
    factors = [cfg.learning_rate_factor(i, cfg.iterations, lips) for i in (0, 149_999, 150_000, 179_999, 180_000,
                                                                           199_999, 200_000, 239_999)]
    assert factors == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01, 1.0, 1.0]
    assert cfg.levels_per_step() == 5000
    assert dataclasses.replace(cfg, iterations=2400).levels_per_step() == 50


def test_paper_architecture_shapes():
    """Table 6: positional grid 16 x 4 -> sigma net (3 FC, 128) -> 1 + 128; bypass FCs read 5 * 68 * 2 * 16."""
    field = HeadField(R2TalkerConfig(backend="torch"))
    assert field.position.output_dim == 64
    assert isinstance(field.sigma_net, AffineConditionedMLP)
    assert len(field.sigma_net.layers) == 3 and field.sigma_net.layers[-1].out_features == 129
    assert len(field.sigma_net.bypasses) == 2  # one per hidden FC layer
    first = field.sigma_net.bypasses[0]
    assert len(first.layers) == 3 and first.layers[0].in_features == 5 * 68 * 2 * 16 + 1  # + eye
    assert first.layers[-1].out_features == 2 * 128


def test_variants_differ_as_the_ladder_says():
    fields = {name: HeadField(tiny_config(name), audio_feature_dim=95) for name in LADDER}
    baseline, landmarks, maglo, full = (fields[n] for n in LADDER)
    assert not hasattr(baseline, "landmarks") and hasattr(baseline, "audio_net")
    assert isinstance(baseline.sigma_net, MLP) and isinstance(landmarks.sigma_net, MLP)
    assert isinstance(landmarks.landmarks, LandmarkHashEncoder) and not hasattr(landmarks, "audio_net")
    assert isinstance(maglo.sigma_net, AffineConditionedMLP) and isinstance(full.sigma_net, AffineConditionedMLP)
    # GLO concatenates the conditional feature to every sample's positional features.
    assert landmarks.sigma_net.layers[0].in_features == landmarks.position.output_dim + TINY["condition_dim"]
    # RAD-NeRF's audio-spatial decomposition: [position, audio] -> ambient MLP -> 2D grid; the eye joins after it.
    assert baseline.ambient_net.layers[0].in_features == baseline.position.output_dim + TINY["audio_dim"]
    assert baseline.ambient_net.layers[-1].out_features == 2 and baseline.ambient.config.input_dim == 2
    assert baseline.sigma_net.layers[0].in_features == baseline.position.output_dim + baseline.ambient.output_dim + 1
    assert not any(hasattr(field, "ambient") for field in (landmarks, maglo, full))
    eye = torch.ones(3)
    inputs = {"audio": torch.randn(3, 8, 16, 95), "landmarks": torch.randn(3, 5, 68, 3) * 0.5}
    points, directions = torch.rand(50, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    for name, field in fields.items():
        conditions = field.frame_conditions(inputs[field.cfg.condition], eye)
        assert conditions.shape[0] == 3
        sigma, rgb = field(points, directions, conditions[0])
        assert sigma.shape == (50,) and rgb.shape == (50, 3) and (sigma >= 0).all()
        assert ((rgb >= 0) & (rgb <= 1)).all()


def test_the_audio_spatial_decomposition_conditions_every_sample_on_its_own_position():
    """RAD-NeRF (the baseline) fuses audio and position per sample; R2-Talker's condition is one vector per frame."""
    torch.manual_seed(0)
    field = HeadField(tiny_config("r2talker_audio_baseline"), audio_feature_dim=95)
    calls = []
    field.ambient.register_forward_hook(lambda module, args, output: calls.append(args[0]))
    points = torch.rand(40, 3) * 2 - 1
    quiet, loud = (field.frame_conditions(torch.randn(1, 8, 16, 95) * scale, torch.ones(1))[0] for scale in (0.1, 3))
    field.log_density(points, quiet)
    field.log_density(points, loud)
    quiet_ambient, loud_ambient = calls
    assert quiet_ambient.shape == (40, 2) and (quiet_ambient.abs() < 1).all()  # tanh: inside the 2D grid
    assert quiet_ambient.std(0).min() > 0  # the coordinate depends on each sample's position ...
    assert not torch.allclose(quiet_ambient, loud_ambient)  # ... and on the audio
    # The eye ratio bypasses the ambient grid: it changes the density, not the ambient coordinate.
    closed = quiet.clone()
    closed[-1] = 0.0
    calls.clear()
    assert not torch.allclose(field.log_density(points, closed), field.log_density(points, quiet))
    assert torch.equal(calls[0], calls[1])
    with pytest.raises(ValueError, match="exclude each other"):
        R2TalkerConfig(maglo=True, audio_spatial=True)


def test_progressive_levels_enable_coarse_to_fine():
    cfg = tiny_config("r2talker", iterations=400, position_levels=8)  # one more level every 8 iterations
    model = R2TalkerModel(cfg, np.array([-1, -1, -1, 1, 1, 1.0]), 32)
    assert cfg.levels_per_step() == round(5000 * 400 / 240_000)
    assert [model.set_progress(i) for i in (0, 7, 8, 16, 40, 10_000)] == [4, 4, 5, 6, 8, 8]
    model.set_progress(0)
    features = model.head.position(torch.rand(20, 3) * 2 - 1).view(20, 8, -1)
    assert features[:, 4:].abs().sum() == 0 and features[:, :4].abs().sum() > 0
    plain = R2TalkerModel(tiny_config("r2talker_maglo", position_levels=8), np.array([-1, -1, -1, 1, 1, 1.0]), 32)
    assert plain.set_progress(0) == 8


# ---------------------------------------------------------------------------------------------------------------
# Rendering


class ConstantField:
    """Density ``sigma`` inside a sphere of radius 0.5, colour from the position."""

    def __init__(self, sigma: float) -> None:
        self.sigma, self.calls = sigma, 0

    def __call__(self, points, directions):
        self.calls += len(points)
        inside = (points.norm(dim=-1) < 0.5).float()
        return self.sigma * inside, torch.sigmoid(points)


def test_chunked_marching_equals_dense_compositing():
    torch.manual_seed(0)
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], OccupancyGridConfig(resolution=8))  # fresh grid: all occupied
    origins = torch.tensor([[0.0, 0.0, 3.0]]).repeat(40, 1) + torch.randn(40, 3) * 0.05
    directions = torch.nn.functional.normalize(torch.cat([torch.randn(40, 2) * 0.1, -torch.ones(40, 1)], -1), dim=-1)
    near, far = torch.full((40,), 2.0), torch.full((40,), 4.0)
    field = ConstantField(3.0)
    result = march_and_composite(field, grid, origins, directions, near, far, num_steps=64, chunk=7,
                                 min_transmittance=0.0, distortion=True)
    t, deltas = sample_stratified(near, far, 64)
    positions = origins[:, None] + t[..., None] * directions[:, None]
    sigma, rgb = field(positions.reshape(-1, 3), None)
    dense = composite(sigma.view(40, 64), rgb.view(40, 64, 3), deltas, t)
    assert torch.allclose(result.color, dense.color, atol=1e-5)
    assert torch.allclose(result.opacity, dense.opacity, atol=1e-5)
    # Mip-NeRF 360's distortion, brute force over all pairs of samples (normalised distances).
    s = (t - near[:, None]) / (far - near)[:, None]
    w = dense.weights
    brute = (w[:, :, None] * w[:, None, :] * (s[:, :, None] - s[:, None, :]).abs()).sum((1, 2)) \
        + (w ** 2 * deltas / (far - near)[:, None]).sum(-1) / 3
    assert torch.allclose(result.distortion, brute, atol=1e-5)


def test_early_termination_and_sample_budget_bound_the_work():
    grid = OccupancyGrid([-1, -1, -1, 1, 1, 1], OccupancyGridConfig(resolution=8))
    origins, directions = torch.tensor([[0.0, 0.0, 3.0]]).repeat(10, 1), torch.tensor([[0.0, 0.0, -1.0]]).repeat(10, 1)
    near, far = torch.full((10,), 2.0), torch.full((10,), 4.0)
    opaque = ConstantField(1e4)
    result = march_and_composite(opaque, grid, origins, directions, near, far, 64, chunk=4, min_transmittance=1e-3)
    # The sphere starts at step 16 of 64: the first chunk inside it makes every ray opaque; nothing after is read.
    assert torch.allclose(result.opacity, torch.ones(10)) and result.samples == 10 * 20
    thin = ConstantField(0.01)
    budget = march_and_composite(thin, grid, origins, directions, near, far, 64, chunk=4, min_transmittance=1e-3,
                                 max_samples=5)
    assert budget.samples == 10 * 5


def test_training_render_in_one_field_call_matches_the_chunked_render():
    # Training composites the whole march in one field call per frame; without early termination that is the
    # chunked renderer's image exactly.
    torch.manual_seed(0)
    cfg = tiny_config("r2talker", march_steps=32, termination_chunk=4, min_transmittance=0.0, max_samples=0)
    model = R2TalkerModel(cfg, np.array([-0.5, -0.5, -0.5, 0.5, 0.5, 0.5]), 16)
    condition = model.head.frame_conditions(torch.rand(1, cfg.landmark_window, 68, 3), torch.zeros(1))[0]
    c2w = torch.eye(4)
    c2w[2, 3] = 2.0  # OpenGL camera on +z looking at the box
    calls = []
    forward = model.head.forward
    model.head.forward = lambda *args: calls.append(len(args[0])) or forward(*args)
    pixels = torch.arange(16 * 16)
    with torch.no_grad():
        chunked = model.render_head(condition, c2w, (20.0, 8.0, 8.0), pixels)
        chunked_calls, calls[:] = len(calls), []
        whole = model.render_head(condition, c2w, (20.0, 8.0, 8.0), pixels, chunk=cfg.march_steps)
    assert chunked.samples == whole.samples > 0
    assert chunked_calls > 1 and len(calls) == 1
    assert torch.allclose(chunked.color, whole.color, atol=1e-6)
    assert torch.allclose(chunked.opacity, whole.opacity, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Training, resume and rendering on a tiny tracked identity


def read_curve(folder: Path) -> list[dict[str, str]]:
    with open(folder / "curve.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(tracked_root, tmp_path_factory):
    """The full method trained briefly (head, lips, torso) into a model folder."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("r2talker_model")
    spec = get_method("r2talker")
    summary = spec.train(tiny_config("r2talker"), tracked_root / IDENTITY, {}, folder)
    return folder, summary


def test_the_face_is_triangulated_inside_the_head_box_and_nothing_in_front_of_it_stays_occupied(tracked_root,
                                                                                                tmp_path):
    cfg = tiny_config("r2talker", shape_prior_carve=0.1)
    data = IdentityData(tracked_root / IDENTITY, with_landmarks=True)
    face = (data.face_points() - (scene := scene_frame(data, cfg.box_margin)).centre) * scene.scale
    assert np.isfinite(face).all() and (np.abs(face) <= 1.0).all()
    # The synthetic face's nose points towards the camera (+z), in front of its eye corners.
    assert face[1, 2] > face[[33, 263], 2].max()
    model = R2TalkerModel(cfg, scene.box, data.image_size)
    trainer = Trainer(cfg, data, scene, model, torch.device("cpu"), tmp_path, None)
    trainer.carve_occupancy()
    hull_before = int(model.hull.sum())
    prior = trainer.shape_prior()
    trainer.carve_in_front(prior)
    kept = model.grid.cell_centres(model.hull.nonzero().squeeze(-1))
    assert 0 < int(model.hull.sum()) < hull_before
    assert (kept[:, 2] <= prior.front(kept) + cfg.shape_prior_carve).all()
    assert not (model.grid.occupied & ~model.hull).any()


def test_the_solid_head_prior_needs_the_visual_hull_and_carving_needs_the_prior():
    R2TalkerConfig(visual_hull=True, shape_prior_steps=10, shape_prior_carve=0.03)
    with pytest.raises(ValueError, match="visual_hull"):
        R2TalkerConfig(shape_prior_steps=10)
    with pytest.raises(ValueError, match="shape_prior_steps"):
        R2TalkerConfig(visual_hull=True, shape_prior_carve=0.03)


@pytest.mark.parametrize("visual_hull", [False, True])
def test_the_occupancy_grid_starts_from_the_visual_hull_only_when_asked(tracked_root, tmp_path, visual_hull):
    """Paper (no hull): every cell starts occupied and the first update keeps the cells whose density beats
    torch-ngp's min(mean over all cells, threshold). Aid: the grid starts as the hull and never leaves it."""
    cfg = tiny_config("r2talker", visual_hull=visual_hull, shape_prior_steps=0, shape_prior_carve=0.0,
                      iterations=TINY["occupancy_update_every"] - 1, torso_iterations=0)
    data = IdentityData(tracked_root / IDENTITY, with_landmarks=True)
    scene = scene_frame(data, cfg.box_margin)
    model = R2TalkerModel(cfg, scene.box, data.image_size)
    trainer = Trainer(cfg, data, scene, model, torch.device("cpu"), tmp_path, None)
    trainer.run()  # ends just before the first occupancy update
    grid, hull = model.grid, model.hull
    if not visual_hull:
        assert hull.all() and grid.occupied.all()
    else:
        assert 0.0 < float(hull.float().mean()) < 1.0
        assert torch.equal(grid.occupied, hull)
    trainer.iteration = cfg.occupancy_update_every
    trainer.update_occupancy()
    density = grid.density
    if not visual_hull:
        threshold = min(float(density.mean()), cfg.density_threshold)
        assert torch.equal(grid.occupied, density > threshold)
    else:
        assert not (grid.occupied & ~hull).any() and not density[~hull].any()


def test_training_lowers_the_loss_and_writes_its_outputs(trained):
    folder, summary = trained
    assert summary["iterations"] == TINY["iterations"] + TINY["torso_iterations"] and summary["seconds"] > 0
    rows = read_curve(folder)
    assert list(rows[0]) == ["step", "seconds", "loss", "val_psnr"]
    head = [float(r["loss"]) for r in rows if int(r["step"]) <= TINY["iterations"] * 0.8]
    assert head[-1] < 0.85 * head[0]
    assert rows[-1]["val_psnr"] != "" and all(r["val_psnr"] == "" for r in rows[:-1])
    assert list((folder / "samples").glob("*.png"))
    record = torch.load(folder / MODEL_FILE, weights_only=True)
    assert record["config"]["iterations"] == TINY["iterations"] and "state_dict" in record
    assert bool(record["state_dict"]["torso_trained"])


def test_training_resumes_from_its_checkpoint(trained, tracked_root, tmp_path):
    folder, summary = trained
    spec = get_method("r2talker")
    again = spec.train(tiny_config("r2talker"), tracked_root / IDENTITY, {}, folder)
    assert again["iterations"] == summary["iterations"]  # finished: nothing left to do
    assert again["seconds"] == pytest.approx(summary["seconds"])
    longer = spec.train(tiny_config("r2talker", torso_iterations=TINY["torso_iterations"] + 4),
                        tracked_root / IDENTITY, {}, folder)
    assert longer["iterations"] == summary["iterations"] + 4 and longer["seconds"] > summary["seconds"]
    steps = [int(r["step"]) for r in read_curve(folder)]
    assert steps == sorted(steps) and steps[-1] == summary["iterations"] + 4


def test_a_run_killed_after_a_wall_clock_checkpoint_resumes_to_the_uninterrupted_result(tracked_root, tmp_path,
                                                                                        monkeypatch):
    """The checkpoint falls between two curve rows: the losses since the last row must survive the kill too."""
    from talkhead_models.methods.r2talker import trainer as trainer_module

    spec = get_method("r2talker")
    cfg = tiny_config("r2talker", iterations=12, torso_iterations=4, checkpoint_seconds=1.0)
    whole = spec.train(cfg, tracked_root / IDENTITY, {}, tmp_path / "whole")
    ticking_clock(monkeypatch, trainer_module)
    with pytest.raises(Killed):
        spec.train(cfg, tracked_root / IDENTITY, {}, tmp_path / "killed", log_metric=kill_at(10))
    saved = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert saved["iteration"] == 9 and len(saved["pending_losses"]) == 4  # iterations 6-9, since the row at 5
    resumed = spec.train(cfg, tracked_root / IDENTITY, {}, tmp_path / "killed")
    assert resumed["iterations"] == whole["iterations"] == 16
    assert resumed["final_loss"] == whole["final_loss"]
    expected = torch.load(tmp_path / "whole" / MODEL_FILE, weights_only=True)["state_dict"]
    got = torch.load(tmp_path / "killed" / MODEL_FILE, weights_only=True)["state_dict"]
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    without_seconds = [[(r["step"], r["loss"], r["val_psnr"]) for r in read_curve(tmp_path / folder)]
                       for folder in ("whole", "killed")]
    assert without_seconds[0] == without_seconds[1] and len(without_seconds[0]) == 4
    # Finished: one checkpoint, no previous one.
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint*")) == ["checkpoint.pt"]


def driving(root: Path, role: str, frames: np.ndarray) -> Driving:
    from talkhead_models.data.identity_reader import IdentityReader

    reader = IdentityReader(root)
    n = len(frames)
    return Driving(identity=IDENTITY, role=role, audio=np.zeros(n * 640, np.float32),
                   audio_features={"mel": np.asarray(reader.audio_features("mel")[frames])},
                   eye=reader.eye()[frames], frame_indices=frames,
                   audio_identity=IDENTITY if role == "self" else "S002")


def test_render_gives_one_frame_per_driving_frame_and_module_timings(trained, tracked_root, untrained_audio2motion):
    folder, _ = trained
    spec = get_method("r2talker")
    head = spec.load(tiny_config("r2talker"), tracked_root / IDENTITY, {"audio2motion": untrained_audio2motion}, folder)
    frames = np.flatnonzero(np.load(tracked_root / IDENTITY / "landmarks" / "detected.npy"))[:3]
    for role in ("self", "cross"):
        rendered = list(head.render(driving(tracked_root / IDENTITY, role, frames)))
        assert len(rendered) == 3
        assert all(f.shape == (head.image_size, head.image_size, 3) and f.dtype == np.uint8 for f in rendered)
        assert head.timings["frames"] == 3 and head.timings["rendering_ms"] > 0
        assert head.timings["audio_to_landmarks_ms"] > 0 and head.timings["audio_features_ms"] > 0
    # The generator's output is adapted to the face on its training frames, unless the switch is off.
    from talkhead_models.data.identity_reader import IdentityReader
    assert head.adaptation.frames == len(IdentityReader(tracked_root / IDENTITY).training_frames())
    plain = spec.load(tiny_config("r2talker", motion_adaptation=False), tracked_root / IDENTITY,
                      {"audio2motion": untrained_audio2motion}, folder)
    assert plain.adaptation is None


def test_audio_baseline_trains_and_renders_without_the_motion_generator(tracked_root, tmp_path):
    spec = get_method("r2talker_audio_baseline")
    cfg = tiny_config("r2talker_audio_baseline", iterations=6, torso_iterations=2)
    summary = spec.train(cfg, tracked_root / IDENTITY, {}, tmp_path)
    assert summary["iterations"] == 8
    head = spec.load(cfg, tracked_root / IDENTITY, {}, tmp_path)
    rendered = list(head.render(driving(tracked_root / IDENTITY, "cross", np.array([0, 1]))))
    assert len(rendered) == 2 and head.timings["audio_to_landmarks_ms"] == 0


def test_a_resized_model_renders_the_same_view_at_another_resolution(trained, tracked_root):
    """The paper times rendering at 450 x 450: the fields are continuous, so a model renders any size."""
    folder, _ = trained
    from talkhead_models.methods.r2talker.model import load_record

    model, scene, _ = load_record(folder / MODEL_FILE, torch.device("cpu"))
    data = IdentityData(tracked_root / IDENTITY, with_landmarks=True)
    frame = int(data.validation_frames[0])
    condition = model.head.frame_conditions(torch.as_tensor(data.landmark_windows(np.array([frame]), 5)),
                                            torch.as_tensor(data.eye[[frame]]))[0]
    c2w = torch.as_tensor(scene.c2w(data.cameras.c2w[frame]), dtype=torch.float32)
    intrinsics = (data.cameras.focal, data.cameras.cx, data.cameras.cy)
    size = model.image_size
    background = torch.full((size * size, 3), 0.5)
    original = model.render_frame(condition, c2w, intrinsics, background)
    double = model.resized(2 * size)
    assert double.image_size == 2 * size and model.image_size == size  # a copy: the trained model is untouched
    assert double.torso_region.view(2 * size, 2 * size)[::2, ::2].equal(model.torso_region.view(size, size))
    rendered = double.render_frame(condition, c2w, tuple(2.0 * v for v in intrinsics),
                                   torch.full((4 * size * size, 3), 0.5))
    assert rendered.shape == (2 * size, 2 * size, 3)
    # Each 2x2 block of the doubled frame samples the area of one original pixel.
    pooled = torch.nn.functional.avg_pool2d(rendered.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)
    # Measured 0.00034 (the frame departs from grey by 0.07); the doubled frame rendered half an original pixel
    # off gives 0.00095-0.0010, with a focal 2% off 0.0015, with unscaled principal point 0.08.
    assert (pooled - original).abs().mean() < 0.0006


def test_the_speed_benchmark_times_training_and_rendering_at_the_papers_size(tracked_root, tmp_path):
    from benchmarks.bench_r2talker import run, stage_rate

    assert stage_rate([(5, 1.0), (10, 2.0), (15, 4.0), (20, 5.0)], 0, 15) == pytest.approx(10 / 3.0)
    assert stage_rate([(5, 1.0)], 0, 15) is None  # one logged step gives no interval
    tiny = {k: v for k, v in TINY.items() if k not in ("iterations", "torso_iterations")}
    result = run(tracked_root / IDENTITY, "paper", iterations=10, torso_iterations=4, size=40, frames=1,
                 device_name="cpu", model_dir=None, params_path=Path("params.yaml"), overrides=tiny)
    training, rendering = result["training"], result["rendering"]
    assert training["head_iterations"] == 10 and training["head_iterations_per_s"] > 0
    assert training["torso_iterations_per_s"] > 0
    assert training["config"]["rays_per_step"] == TINY["rays_per_step"]
    assert rendering["size"] == 40 and rendering["fps"] > 0 and rendering["model_iterations"] == 14
    assert result["machine"]["torch"] == torch.__version__


def test_a_frame_too_large_for_one_graph_is_backpropagated_in_chunks_with_the_same_gradient(tracked_root, tmp_path):
    """The paper's 65,536 rays per step do not fit one graph in memory: chunked, the gradient must not change."""
    data = IdentityData(tracked_root / IDENTITY, with_landmarks=True)
    gradients, losses = [], []
    for chunk in (0, 40):  # 96 rays per frame: whole, then in chunks of 40, 40 and 16
        cfg = tiny_config("r2talker", train_ray_chunk=chunk)
        torch.manual_seed(3)
        scene = scene_frame(data, cfg.box_margin)
        model = R2TalkerModel(cfg, scene.box, data.image_size)
        trainer = Trainer(cfg, data, scene, model, torch.device("cpu"), tmp_path / str(chunk), None)
        trainer.head_optimiser.step = lambda: None  # compare the gradients, not Adam's sign-like first step
        losses.append(trainer.head_step())
        assert trainer._rays == TINY["rays_per_step"]
        gradients.append({name: p.grad.clone() for name, p in model.head.named_parameters() if p.grad is not None})
    whole, chunked = gradients
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert whole.keys() == chunked.keys() and len(whole) > 5
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-4, atol=1e-7, msg=name)
