"""The JEAN tests' tiny config (shared with the ER-NeRF interchange tests)."""

from __future__ import annotations

# A few iterations per second on one CPU core with every mechanism exercised: the transformer, both networks,
# checkpoints, validation and the demo's departures (so their code paths run).
TINY = dict(
    emotion_network="corpus_cnn", audio_feature="mel", backdrop="nearest_pose", position_encoding="hashgrid",
    hash_levels=2, hash_base_resolution=4, hash_desired_resolution=8, hash_log2_size=8, face_ray_fraction=0.5,
    opacity_weight=0.1, frames_per_step=2, surface_band=0.3,
    layers=2, hidden=16, render_downscale=4, rays_per_step=64, coarse_samples=4, fine_samples=4, iterations=6,
    learning_rate=5e-3, final_learning_rate=5e-4, transformer_steps=3, transformer_batch=4, transformer_hidden=16,
    transformer_model_dim=16, transformer_heads=2, transformer_layers=1, transformer_feedforward=16,
    expression_dim=8, checkpoint_every=2,
    validate_every=3, log_every=3, device="cpu",
)
