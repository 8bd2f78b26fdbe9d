"""The R2-Talker tests' tiny config (the tracked identity and the audio2motion model are shared fixtures:
tests/methods/conftest.py)."""

from __future__ import annotations

from tests.methods.conftest import IDENTITY  # noqa: F401  (re-exported for the tests)

# A model small enough to train a few dozen iterations in seconds on one CPU core; every switch of the ladder
# is still exercised (the full method's values are set per test).
TINY = dict(
    position_levels=4, position_level_dim=2, position_base_resolution=8, position_log2_hashmap_size=10,
    position_desired_resolution=64, sigma_hidden=16, geo_feat_dim=8, color_hidden=8,
    landmark_levels=2, landmark_level_dim=2, landmark_base_resolution=8, landmark_log2_hashmap_size=10,
    landmark_desired_resolution=32, bypass_hidden=16, condition_dim=8, audio_dim=8,
    torso_levels=2, torso_base_resolution=8, torso_log2_hashmap_size=10, torso_desired_resolution=32,
    torso_hidden=8, torso_deform_hidden=8,
    march_steps=24, max_samples=8, min_transmittance=0.01, occupancy_resolution=12, occupancy_update_every=8,
    occupancy_conditions=1, density_threshold=3.0, rays_per_step=192, torso_rays_per_step=256,
    frames_per_step=2, head_ray_fraction=0.3, lips_ray_fraction=0.2, opacity_weight=0.1, distortion_weight=0.01,
    visual_hull=True, shape_prior_steps=5, shape_prior_carve=0.1, iterations=30, torso_iterations=6, validate_every=1000, validation_frames=1,
    log_every=5, checkpoint_every=10, device="cpu", backend="torch", lips_loss="dssim", network_learning_rate=1e-2,
)

