"""The GSTalker tests' tiny config (the tracked identity and the audio2motion model are shared fixtures:
tests/methods/conftest.py)."""

from __future__ import annotations

from tests.methods.conftest import IDENTITY  # noqa: F401  (re-exported for the tests)

# Small enough for a few iterations per second on one CPU core, with every mechanism still exercised:
# SH degree 1, densification, joint-stage windows of several frames, checkpoints and validation.
TINY = dict(
    num_gaussians=400, sh_degree=1, sh_degree_interval=2, static_iterations=3, iterations=4,
    triplane=dict(num_levels=2, base_resolution=8, desired_resolution=16, log2_hashmap_size=8),
    audio_dim=8, audio_heads=2, deform_hidden=16,
    densify=dict(start_iteration=1, interval=2, stop_iteration=100, opacity_reset_interval=100_000,
                 grad_threshold=0.002, prune_opacity=0.02),
    position_lr=1.6e-3, position_lr_final=1.6e-4, color_lr=0.025, scaling_lr=0.02, deform_lr=1e-3, hash_lr=0.05,
    perceptual="dssim", static_downscale=4, train_downscale=2, joint_crop=48, frames_per_step=2,
    checkpoint_every=2, validate_every=4, validation_frames=1, log_every=2, samples=1,
    device="cpu", raster_backend="torch", hashgrid_backend="torch",
)

