"""Time courses that are not speech: head motion, the torso's lag, blinks, emotion intensity."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d


def smooth_noise(n: int, fps: float, rng: np.random.Generator, max_abs: float,
                 freq_range: tuple[float, float] = (0.05, 0.5), n_waves: int = 4) -> np.ndarray:
    """A smooth random signal: a few sinusoids with 1/f amplitudes, scaled to reach ``max_abs`` at most."""
    t = np.arange(n) / fps
    freqs = rng.uniform(*freq_range, n_waves)
    phases = rng.uniform(0, 2 * np.pi, n_waves)
    signal = (np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None]) / freqs[:, None]).sum(axis=0)
    peak = np.abs(signal).max() if n > 0 else 1.0
    return signal / max(peak, 1e-9) * max_abs * rng.uniform(0.6, 1.0)


def head_motion(n: int, fps: float, rng: np.random.Generator, max_angles_deg: tuple[float, float, float],
                max_translation_cm: float) -> tuple[np.ndarray, np.ndarray]:
    """Yaw, pitch, roll (radians) and translation (cm) per frame, smooth and bounded."""
    angles = np.stack([smooth_noise(n, fps, rng, np.radians(limit)) for limit in max_angles_deg], axis=1)
    translation = np.stack([smooth_noise(n, fps, rng, scale * max_translation_cm) for scale in (1.0, 0.7, 1.5)],
                           axis=1)
    return angles, translation


def torso_follow(angles: np.ndarray, translation: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """The torso follows the head loosely: a fraction of its motion, a fifth of a second late."""
    lag = max(1, int(round(0.2 * fps)))
    delayed_t = np.concatenate([np.repeat(translation[:1], lag, axis=0), translation[:-lag]])[: len(translation)]
    delayed_yaw = np.concatenate([np.repeat(angles[:1, 0], lag), angles[:-lag, 0]])[: len(angles)]
    shift = gaussian_filter1d(0.35 * delayed_t, sigma=0.1 * fps, axis=0, mode="nearest")
    yaw = gaussian_filter1d(0.25 * delayed_yaw, sigma=0.1 * fps, mode="nearest")
    return shift, yaw


def blinks(n: int, fps: float, rng: np.random.Generator, mean_interval_s: float = 3.5) -> np.ndarray:
    """Eye closure in [0, 1] per frame: blinks of 0.15-0.3 s at random (Poisson) times."""
    closure = np.zeros(n)
    t = rng.exponential(mean_interval_s * 0.6)
    duration_s = n / fps
    while t < duration_s:
        length = rng.uniform(0.15, 0.3)
        frames = np.arange(int(t * fps), min(n, int((t + length) * fps) + 1))
        phase = (frames / fps - t) / length
        closure[frames] = np.maximum(closure[frames], np.sin(np.pi * np.clip(phase, 0, 1)) ** 0.7)
        t += length + rng.exponential(mean_interval_s)
    return closure


def emotion_intensity(n: int, fps: float, rng: np.random.Generator, level: float) -> np.ndarray:
    """An emotion held through a clip, as MEAD's actors do, with a slow +-10% waver."""
    if level == 0.0:
        return np.zeros(n)
    return np.clip(level * (1.0 + smooth_noise(n, fps, rng, 0.1, (0.1, 0.4), 2)), 0.0, 1.2)
