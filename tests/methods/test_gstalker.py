"""GSTalker: initialisation, deformation fields, variants, training, resume, checkpoints and rendering."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from talkhead_models.methods import Driving, get_method
from talkhead_models.methods.gstalker import GSTalkerConfig
from talkhead_models.methods.gstalker.model import FrameCondition, random_gaussians
from talkhead_models.methods.gstalker.scene import IdentityScene, lips_box
from talkhead_models.checkpoints import CHECKPOINT_FILE, CURVE_FILE
from talkhead_models.components.schedule import exponential_lr
from talkhead_models.methods.gstalker.trainer import Trainer, build_model
from talkhead_models.methods.gstalker.motion import training_features
from talkhead_models.pretrained.audio2motion import centred_windows
from tests.methods.gstalker_fixtures import IDENTITY, TINY
from tests.methods.resume_fixtures import Killed, kill_at, ticking_clock

VARIANTS = ("gstalker", "gstalker_paper_audio", "gstalker_audio_whisper", "gstalker_no_static_init", "gstalker_no_hash_grid",
            "gstalker_no_perceptual")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(name: str = "gstalker", **changes) -> GSTalkerConfig:
    return get_method(name).resolve_config({**TINY, **changes})


def test_paper_values_are_the_defaults():
    cfg = GSTalkerConfig()
    assert (cfg.num_gaussians, cfg.init_cube_side, cfg.static_iterations, cfg.iterations) == (10_000, 2.0, 10_000,
                                                                                            100_000)
    assert (cfg.triplane.num_levels, cfg.triplane.level_dim, cfg.triplane.base_resolution,
            cfg.triplane.desired_resolution) == (14, 1, 64, 512)
    assert (cfg.hash_lr, cfg.deform_lr, cfg.pose_frequencies) == (5e-3, 1.6e-5, 6)


def test_variants_are_registered_and_differ_as_table_4_states():
    specs = {name: get_method(name) for name in VARIANTS}
    assert {spec.family for spec in specs.values()} == {"gstalker"}
    assert [spec.variant for spec in specs.values()] == ["", "paper_audio", "audio_whisper", "no_static_init",
                                                         "no_hash_grid", "no_perceptual"]
    configs = {name: spec.resolve_config({"static_iterations": 7, "perceptual_weight": 0.3, "audio_feature": "a2m"})
               for name, spec in specs.items()}
    full = configs["gstalker"]
    assert (full.static_iterations, full.spatial_encoding, full.perceptual_weight) == (7, "hash_grid", 0.3)
    assert full.audio_feature == "a2m"
    # The paper's audio path (the audio stage's mel features through the smoother), whatever params.yaml says.
    assert configs["gstalker_paper_audio"] == GSTalkerConfig(**{**full.__dict__, "audio_feature": "mel"})
    assert configs["gstalker_audio_whisper"] == GSTalkerConfig(**{**full.__dict__, "audio_feature": "whisper"})
    # Each ablation changes exactly its own switch, whatever params.yaml says.
    assert configs["gstalker_no_static_init"] == GSTalkerConfig(**{**full.__dict__, "static_iterations": 0})
    assert configs["gstalker_no_hash_grid"] == GSTalkerConfig(**{**full.__dict__, "spatial_encoding": "coordinates"})
    assert configs["gstalker_no_perceptual"] == GSTalkerConfig(**{**full.__dict__, "perceptual_weight": 0.0})
    with pytest.raises(ValueError, match="audio_feature"):
        GSTalkerConfig(audio_feature="deepspeech2")
    with pytest.raises(ValueError, match="motion_window"):
        GSTalkerConfig(audio_feature="a2m", motion_window=0)


def test_the_audio_smoother_learns_at_the_deformation_rate_unless_the_aid_sets_its_own():
    assert GSTalkerConfig().audio_learning_rate == GSTalkerConfig().deform_lr == 1.6e-5
    assert GSTalkerConfig(deform_lr=2e-3).audio_learning_rate == 2e-3
    assert GSTalkerConfig(deform_lr=2e-3, audio_lr=5e-4).audio_learning_rate == 5e-4
    with pytest.raises(ValueError, match="audio_lr"):
        GSTalkerConfig(audio_lr=-1.0)


def test_static_initialisation_puts_10000_points_in_the_cube():
    tensors = random_gaussians(10_000, 2.0, 0.1, 3, torch.Generator().manual_seed(0))
    means = tensors["means"]
    assert means.shape == (10_000, 3) and means.abs().max() <= 1.0
    # Uniform: every octant holds about an eighth (binomial sd ~33), the mean is near the centre.
    octants = torch.bincount(((means > 0).long() * torch.tensor([1, 2, 4])).sum(-1), minlength=8)
    assert octants.min() > 1250 - 150 and octants.max() < 1250 + 150
    assert means.mean(0).abs().max() < 0.03
    # 3D-GS's initial scale: RMS distance to the 3 nearest neighbours, isotropic.
    distances = torch.cdist(means[:5], means).sort(-1).values[:, 1:4]
    assert torch.allclose(tensors["scales"][:5, 0].exp(), distances.square().mean(-1).sqrt(), rtol=1e-4)
    assert torch.equal(tensors["scales"][:, 0], tensors["scales"][:, 2])
    assert torch.allclose(torch.sigmoid(tensors["opacities"]), torch.full((10_000,), 0.1))
    assert torch.equal(tensors["quats"][0], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert tensors["colors"].shape == (10_000, 1, 3) and tensors["sh_rest"].shape == (10_000, 15, 3)


@pytest.fixture(scope="module")
def scene(tracked_root) -> IdentityScene:
    return IdentityScene(tracked_root / IDENTITY, GSTalkerConfig().scene_scale, "mel")


def test_scene_cameras_poses_and_lip_boxes(scene):
    n = scene.reader.num_frames
    assert scene.c2w.shape == (n, 4, 4) and np.isfinite(scene.c2w).all()
    # Cameras sit a few world units from the head, looking at it (ER-NeRF's scale 4 of a ~1 m distance).
    assert 1.0 < scene.mean_camera_distance() < 10.0
    assert scene.raw_poses.shape == (n, 6)
    targets = scene.targets(int(scene.training_frames[0]), 96)
    assert targets.image.shape == (96, 96, 3) and targets.head_mask.shape == (96, 96, 1)
    # Area-averaged labels: fractions of each pixel, and head and torso never share more than the whole pixel.
    assert 0.0 < float(targets.head_mask.mean()) < 0.6 and 0.0 < float(targets.torso_mask.mean()) < 0.8
    assert float((targets.head_mask + targets.torso_mask).max()) <= 1.0 + 1e-6
    x0, y0, x1, y1 = targets.lips_box
    assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96 and x1 - x0 >= 8
    assert lips_box(np.array([[10.0, 10.0], [20.0, 14.0]]), 64, padding=0.0) == (10, 8, 20, 16)


def test_deformation_fields_start_at_zero_and_keep_colour_and_opacity(scene):
    cfg = tiny_config()
    model = build_model(cfg, scene)
    means = model.head.params["means"]
    condition = FrameCondition(torch.from_numpy(scene.c2w[0]), torch.from_numpy(scene.audio(0)),
                               torch.tensor([0.5]), torch.from_numpy(scene.raw_poses[0]))
    for part, field in (("head", model.head_deformation), ("torso", model.torso_deformation)):
        dx, dq, ds = field(means, model.condition_vector(part, condition))
        assert dx.shape == (cfg.num_gaussians, 3) and dq.shape == (cfg.num_gaussians, 4) and ds.shape == dx.shape
        assert dx.abs().max() == 0 and dq.abs().max() == 0 and ds.abs().max() == 0
    # Head condition: smoothed audio + eye; torso: the pose's frequency encoding (6 values, L = 6, with input).
    assert model.condition_vector("head", condition).shape == (cfg.audio_dim + 1,)
    assert model.condition_vector("torso", condition).shape == (6 * (1 + 2 * 6),)
    intrinsics = scene.intrinsics.matrix(48)
    static = model.render_part("head", condition, intrinsics, 48, deform=False)
    deformed = model.render_part("head", condition, intrinsics, 48, deform=True)
    assert static.rgb.shape == (48, 48, 3) and static.alpha.shape == (48, 48, 1)
    assert torch.allclose(static.rgb, deformed.rgb) and static.info["backend"] == "torch"
    # The deformation moves the Gaussians but never touches colour or opacity.
    with torch.no_grad():
        model.head_deformation.decoder.layers[-1].bias.copy_(torch.tensor([0.05, 0, 0, 0, 0, 0, 0, 0, 0, 0.0]))
    moved = model.render_part("head", condition, intrinsics, 48, deform=True)
    assert not torch.allclose(moved.rgb, static.rgb)
    assert set(model.head.params) == {"means", "scales", "quats", "opacities", "colors", "sh_rest"}


def test_no_hash_grid_feeds_the_coordinates(scene):
    full, ablation = build_model(tiny_config(), scene), build_model(tiny_config("gstalker_no_hash_grid"), scene)
    assert full.head_deformation.encoder is not None and ablation.head_deformation.encoder is None
    assert ablation.head_deformation.decoder.layers[0].in_features == 3 + tiny_config().audio_dim + 1
    assert full.hash_parameters() and not ablation.hash_parameters()


def _fixed_loss(trainer: Trainer, frames: list[int]) -> float:
    with torch.no_grad():
        return float(np.mean([float(trainer._frame_loss("head", ("head",), index)[0]) for index in frames]))


def test_a_few_static_steps_reduce_the_loss(scene):
    cfg = tiny_config(static_iterations=30)
    trainer = Trainer(cfg, scene, build_model(cfg, scene), torch.device("cpu"),
                      generator=torch.Generator().manual_seed(1))
    frames = [int(i) for i in scene.training_frames[:: max(1, len(scene.training_frames) // 2)][:2]]
    before = _fixed_loss(trainer, frames)
    for _ in range(15):
        trainer.iteration()
    after = _fixed_loss(trainer, frames)
    assert after < 0.8 * before
    # Densification ran (clone/split/prune) and kept parameters and Adam moments row for row.
    count = trainer.model.head.count
    assert count != cfg.num_gaussians
    state = trainer.optimizers["head"].state[trainer.model.head.params["means"]]
    assert state["exp_avg"].shape == (count, 3)


def test_train_resume_checkpoint_and_render(tracked_root, tmp_path):
    spec = get_method("gstalker")
    cfg = tiny_config()
    logged = []
    model_dir = tmp_path / "model"
    first = spec.train(cfg, tracked_root / IDENTITY, {}, model_dir, log_metric=lambda *a: logged.append(a))
    assert first["iterations"] == cfg.total_iterations == 10
    assert first["gaussians"] == first["gaussians_head"] + first["gaussians_torso"] > 0
    assert {name for name, _, _ in logged} >= {"loss", "val_psnr", "gaussians", "gaussians_head"}
    assert len(list((model_dir / "samples").glob("*.png"))) == cfg.samples

    # Weights only: tensors and plain containers; the Gaussian counts come back as trained.
    checkpoint = torch.load(model_dir / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["step"] == 10 and checkpoint["meta"]["deformed"] is True
    assert checkpoint["head"]["means"].shape[0] == first["gaussians_head"]

    # Resume: a longer schedule continues from iteration 10 instead of starting again.
    longer = tiny_config(iterations=8)
    second = spec.train(longer, tracked_root / IDENTITY, {}, model_dir)
    assert second["iterations"] == 14 and second["seconds"] >= first["seconds"]
    with (model_dir / CURVE_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    steps = [int(row["step"]) for row in rows]
    assert steps == sorted(steps) and len(set(steps)) == len(steps) and steps[-1] == 14 and 10 in steps
    assert list(rows[0]) == ["step", "seconds", "loss", "val_psnr"]
    assert any(row["val_psnr"] for row in rows) and any(not row["val_psnr"] for row in rows)
    assert all(math.isfinite(float(row["loss"])) for row in rows)

    head = spec.load(longer, tracked_root / IDENTITY, {}, model_dir)
    reader = head.scene.reader
    frames = np.flatnonzero(reader.validation_mask())[:3]
    features = reader.audio_features("mel")
    driving = Driving(identity=IDENTITY, role="self", audio=np.zeros(640 * 3, np.float32),
                      audio_features={"mel": np.asarray(features[frames])}, eye=reader.eye()[frames],
                      frame_indices=frames)
    rendered = list(head.render(driving))
    size = reader.frame(0).shape[0]
    assert head.image_size == size and len(rendered) == 3
    assert all(frame.shape == (size, size, 3) and frame.dtype == np.uint8 for frame in rendered)
    # Composed over the background: the corners (background in these frames) match bc.jpg closely.
    background = head.scene.background(size).numpy() * 255
    # Measured 7.7-8.0 of 255 on each frame (a few Gaussians reach the corner); against the background's
    # opposite corner 28, over black about 146.
    assert np.abs(rendered[0][:8, :8].astype(float) - background[:8, :8]).mean() < 12
    with pytest.raises(ValueError, match="add mel to audio.extra_kinds"):
        list(head.render(Driving(identity=IDENTITY, role="self", audio=np.zeros(640, np.float32),
                                 audio_features={"hubert": np.zeros((1, 16, 1024), np.float32)},
                                 eye=np.ones(1), frame_indices=frames[:1])))


def test_a_run_killed_after_a_wall_clock_checkpoint_resumes_to_the_uninterrupted_result(tracked_root, tmp_path,
                                                                                        monkeypatch):
    """Checkpointed between two curve rows, densified (its splits draw from torch's global generator): the
    resumed run must end where the uninterrupted one does."""
    from talkhead_models.methods.gstalker import trainer as trainer_module

    spec = get_method("gstalker")
    cfg = tiny_config(checkpoint_seconds=1.0)
    whole = spec.train(cfg, tracked_root / IDENTITY, {}, tmp_path / "whole")
    ticking_clock(monkeypatch, trainer_module)
    with pytest.raises(Killed):
        spec.train(cfg, tracked_root / IDENTITY, {}, tmp_path / "killed", log_metric=kill_at(8))
    saved = torch.load(tmp_path / "killed" / CHECKPOINT_FILE, weights_only=True)
    assert saved["step"] == 7 and len(saved["pending_losses"]) == 1  # the row at 6 was logged, 7's loss is pending
    resumed = spec.train(cfg, tracked_root / IDENTITY, {}, tmp_path / "killed")
    assert resumed["iterations"] == whole["iterations"] == cfg.total_iterations
    assert resumed["gaussians_head"] == whole["gaussians_head"] and resumed["final_loss"] == whole["final_loss"]
    expected = torch.load(tmp_path / "whole" / CHECKPOINT_FILE, weights_only=True)
    got = torch.load(tmp_path / "killed" / CHECKPOINT_FILE, weights_only=True)
    for part in ("head", "torso"):
        for name, value in expected[part].items():
            assert torch.equal(value, got[part][name]), (part, name)
    for name, value in expected["networks"].items():
        assert torch.equal(value, got["networks"][name]), name

    def without_seconds(folder):
        with (folder / CURVE_FILE).open() as handle:
            return [(row["step"], row["loss"], row["val_psnr"]) for row in csv.DictReader(handle)]

    assert without_seconds(tmp_path / "whole") == without_seconds(tmp_path / "killed")
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint*")) == [CHECKPOINT_FILE]


def test_motion_windows_stay_inside_their_recording():
    per_frame = np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    first, last = np.array([0, 0, 0, 3, 3, 3]), np.array([2, 2, 2, 5, 5, 5])
    windows = centred_windows(per_frame, 4, first, last)
    assert windows.shape == (6, 4, 2)
    # Offsets -2..1 around each frame, clamped to its recording: frame 2 never sees frame 3 and back.
    assert windows[2, :, 0].tolist() == [0, 1, 2, 2] and windows[3, :, 0].tolist() == [3, 3, 3, 4]
    assert windows[5, :, 0].tolist() == [3, 4, 5, 5]
    assert np.array_equal(centred_windows(per_frame, 1, first, last)[:, 0], per_frame)


def test_a2m_features_match_between_training_and_driving(tracked_root, untrained_audio2motion):
    root = tracked_root / IDENTITY
    motion, features = training_features(root, {"audio2motion": untrained_audio2motion}, 3, torch.device("cpu"))
    reader = IdentityScene(root, 4.0, "a2m", features).reader
    assert features.shape == (reader.num_frames, 3, 60) and np.isfinite(features).all()
    # Normalised on the training frames: zero mean per point, unit spread overall.
    centre = features[reader.training_frames(), 1]
    assert np.abs(centre.mean(0)).max() < 1e-3 and centre.std() == pytest.approx(1.0, rel=1e-3)
    # A driving recording of the identity's own voice gets exactly the features its frames were trained with.
    clip = reader.clips().iloc[0]
    first, last = int(clip.first_frame), int(clip.last_frame) + 1
    mel = np.asarray(reader.audio_features("mel")[first:last])
    assert np.allclose(motion.recording(mel, own_voice=True), features[first:last], atol=1e-5)
    # Another speaker's voice is normalised by that speaker's own mean, so the features differ.
    assert not np.allclose(motion.recording(mel + 1.0, own_voice=False), features[first:last], atol=1e-3)
    with pytest.raises(FileNotFoundError, match="pretrain_audio2motion"):
        training_features(root, {}, 3, torch.device("cpu"))


def test_a2m_train_and_render(tracked_root, untrained_audio2motion, tmp_path):
    spec = get_method("gstalker")
    cfg = tiny_config(audio_feature="a2m", motion_window=4, mouth_motion_weight=0.05, mouth_warmup_iterations=2)
    pretrained = {"audio2motion": untrained_audio2motion}
    model_dir = tmp_path / "model"
    summary = spec.train(cfg, tracked_root / IDENTITY, pretrained, model_dir)
    assert summary["iterations"] == cfg.total_iterations
    assert (model_dir / CURVE_FILE).is_file() and len(list((model_dir / "samples").glob("*.png"))) == cfg.samples
    checkpoint = torch.load(model_dir / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["meta"]["feature_kind"] == "a2m" and checkpoint["meta"]["feature_window"] == 4
    assert checkpoint["motion"]["neutral"].shape == (68, 3) and checkpoint["motion"]["window"] == 4
    head = spec.load(cfg, tracked_root / IDENTITY, pretrained, model_dir)
    reader = head.scene.reader
    frames = np.flatnonzero(reader.validation_mask())[:3]
    mel = np.asarray(reader.audio_features("mel")[frames])
    for role, voice in (("self", IDENTITY), ("cross", "S002")):
        driving = Driving(identity=IDENTITY, role=role, audio=np.zeros(640 * 3, np.float32),
                          audio_features={"mel": mel}, eye=reader.eye()[frames], frame_indices=frames,
                          audio_identity=voice)
        rendered = list(head.render(driving))
        assert len(rendered) == 3 and rendered[0].shape == (head.image_size, head.image_size, 3)
    with pytest.raises(ValueError, match="add mel to audio.extra_kinds"):
        list(head.render(Driving(identity=IDENTITY, role="self", audio=np.zeros(640, np.float32),
                                 audio_features={"hubert": np.zeros((1, 16, 8), np.float32)},
                                 eye=np.ones(1), frame_indices=frames[:1])))


@pytest.mark.parametrize("name", ["gstalker_no_static_init", "gstalker_no_hash_grid"])
def test_ablations_train_with_the_demo_aids(name, tracked_root, untrained_audio2motion, tmp_path):
    cfg = tiny_config(name, audio_feature="a2m", mouth_motion_weight=0.05, mouth_warmup_iterations=2,
                      deform_hash_init=0.1)
    summary = get_method(name).train(cfg, tracked_root / IDENTITY, {"audio2motion": untrained_audio2motion},
                                     tmp_path / "model")
    assert summary["iterations"] == cfg.total_iterations and math.isfinite(summary["final_loss"])


def test_mouth_motion_is_the_lips_against_the_mean_mouth(scene):
    frames = scene.training_frames
    index = int(frames[len(frames) // 2])
    reference, displacement = scene.mouth_motion(index)
    assert reference.shape == displacement.shape == (20, 2)
    assert np.allclose(reference + displacement, scene.mouth_points(index), atol=1e-4)
    # Over the frames the mean is taken from, the displacements average out.
    sampled = frames[:: max(1, len(frames) // 500)]
    assert np.abs(np.mean([scene.mouth_motion(int(i))[1] for i in sampled], axis=0)).max() < 1e-3


def test_mouth_motion_prior_teaches_the_field_the_lip_motion(scene):
    cfg = tiny_config(mouth_motion_weight=1.0, deform_hash_init=0.1, num_gaussians=3000, init_cube_side=1.0)
    trainer = Trainer(cfg, scene, build_model(cfg, scene), torch.device("cpu"),
                      generator=torch.Generator().manual_seed(0))
    frames = scene.training_frames
    # The frame whose lips are furthest from the mean mouth: a target of several pixels.
    index = int(max(frames, key=lambda i: np.abs(scene.mouth_motion(int(i))[1]).sum()))
    condition = trainer.condition(index)
    model, means = trainer.model, trainer.model.head.params["means"].detach()
    code = model.condition_vector("head", condition).detach()

    def loss() -> torch.Tensor:
        return trainer.mouth_motion_loss(index, condition, means,
                                         lambda inside: model.head_deformation(means[inside], code)[0])

    unmoved = trainer.mouth_motion_loss(index, condition, means, lambda inside: torch.zeros_like(means[inside]))
    assert float(loss().detach()) == pytest.approx(float(unmoved)) and float(unmoved) > 0.5
    optimizer = torch.optim.Adam(model.head_deformation.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert float(loss().detach()) < 0.5 * float(unmoved)


def test_position_schedule_is_log_linear():
    assert exponential_lr(1e-2, 1e-4, 0.0) == pytest.approx(1e-2)
    assert exponential_lr(1e-2, 1e-4, 0.5) == pytest.approx(1e-3)
    assert exponential_lr(1e-2, 1e-4, 2.0) == pytest.approx(1e-4)
