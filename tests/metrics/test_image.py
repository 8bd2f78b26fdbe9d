"""PSNR and SSIM against hand-computed values and scikit-image."""

import math

import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import structural_similarity

from talkhead_models.metrics import psnr, ssim


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()[::4, ::4].copy()  # 128x128 uint8 RGB


def test_psnr_of_identical_frames_is_infinite(astronaut):
    value = psnr(astronaut[None], astronaut[None])
    assert value.value == math.inf and value.cell() == "inf" and value.unit == "dB"


def test_psnr_hand_computed():
    target = torch.full((2, 3, 8, 8), 0.5)
    generated = target.clone()
    generated[0] += 0.1  # MSE 0.01 -> 20 dB
    generated[1, :, :4] += 0.2  # MSE 0.04 / 2 = 0.02 -> 10 log10(50) dB
    value = psnr(generated, target)
    np.testing.assert_allclose(value.per_frame, [20.0, 10 * math.log10(50)], rtol=1e-6)
    assert value.value == pytest.approx((20.0 + 10 * math.log10(50)) / 2, rel=1e-6)


def test_ssim_matches_scikit_image_and_is_symmetric(astronaut):
    rng = np.random.default_rng(0)
    noisy = np.clip(astronaut + rng.normal(0, 25, astronaut.shape), 0, 255).astype(np.uint8)
    shifted = np.roll(astronaut, 3, axis=1)
    generated, target = np.stack([noisy, shifted]), np.stack([astronaut, astronaut])
    value = ssim(generated, target)
    expected = [structural_similarity(g / 255.0, t / 255.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1.0) for g, t in zip(generated, target)]
    np.testing.assert_allclose(value.per_frame, expected, atol=2e-5)  # float32 moments vs float64
    assert ssim(target, generated).value == pytest.approx(value.value, abs=1e-9)
    assert ssim(target, target).value == pytest.approx(1.0, abs=1e-9)
    assert 0.0 < value.value < 1.0


def test_mismatched_batches_are_rejected(astronaut):
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(astronaut[None], astronaut[None, :64])
