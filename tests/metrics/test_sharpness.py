"""CPBD: lower on a blurred image, and equal to a loop-by-loop transcription of the reference algorithm."""

import math

import cv2
import numpy as np
import pytest
from skimage import data
from skimage.feature import canny

from talkhead_models.metrics import cpbd, cpbd_sharpness
from talkhead_models.metrics.sharpness import _sobel_edges, grey_frames


def reference_cpbd(image: np.ndarray) -> float:
    """The published algorithm written as loops (the cpbd package's compute.py, Canny blocks / Sobel widths)."""
    image = image.astype(np.float64)
    canny_edges, sobel_edges = canny(image), _sobel_edges(image)
    height, width = image.shape
    gradient_y, gradient_x = np.gradient(image)
    angles = np.zeros(image.shape)
    for row in range(height):
        for col in range(width):
            if gradient_x[row, col] != 0:
                angles[row, col] = math.atan2(gradient_y[row, col], gradient_x[row, col]) * 180 / math.pi
    widths = np.zeros(image.shape)
    quantised = 45 * np.round(angles / 45)
    for row in range(1, height - 1):
        for col in range(1, width - 1):
            if not sobel_edges[row, col] or quantised[row, col] not in (180, -180, 0):
                continue
            rising_left = quantised[row, col] != 0
            for margin in range(101):
                inner, outer = col - 1 - margin, col - 2 - margin
                step = image[row, outer] - image[row, inner] if outer >= 0 else 0
                if outer < 0 or (step <= 0 if rising_left else step >= 0):
                    break
            left = margin + 1
            for margin in range(101):
                inner, outer = col + 1 + margin, col + 2 + margin
                step = image[row, outer] - image[row, inner] if outer < width else 0
                if outer >= width or (step >= 0 if rising_left else step <= 0):
                    break
            widths[row, col] = left + margin + 1
    histogram, total = np.zeros(101), 0
    for i in range(height // 64):
        for j in range(width // 64):
            rows, cols = slice(64 * i, 64 * i + 64), slice(64 * j, 64 * j + 64)
            if np.count_nonzero(canny_edges[rows, cols]) > 64 * 64 * 0.002:
                block = widths[rows, cols]
                block = block[block != 0]
                contrast = int(image[rows, cols].max() - image[rows, cols].min())
                jnb = 5 if contrast <= 50 else 3
                for probability in 1 - np.exp(-abs(block / jnb) ** 3.6):
                    histogram[int(round(probability * 100))] += 1
                    total += 1
    return float(np.sum(histogram[:64] / total)) if total else 0.0


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    return grey_frames(data.astronaut()[None])[0]  # 512x512


def test_vectorised_cpbd_equals_the_reference_loops(grey):
    crop = grey[160:288, 128:320]  # 128x192: six blocks of face, hair and helmet
    assert cpbd_sharpness(crop) == pytest.approx(reference_cpbd(crop), abs=1e-12)
    blurred = cv2.GaussianBlur(crop, (0, 0), 1.5)
    assert cpbd_sharpness(blurred) == pytest.approx(reference_cpbd(blurred), abs=1e-12)


def test_cpbd_is_lower_on_a_blurred_image():
    frames = data.astronaut()[::2, ::2]
    blurred = np.stack([cv2.GaussianBlur(frames, (0, 0), sigma) for sigma in (1.0, 2.0)])
    value = cpbd(np.concatenate([frames[None], blurred]))
    sharp, soft, softer = value.per_frame
    assert sharp > soft > softer
    assert 0.0 <= softer and sharp <= 1.0 and value.higher_is_better
    assert value.value == pytest.approx(value.per_frame.mean())


def test_a_flat_image_has_no_edges_to_measure():
    assert cpbd_sharpness(np.full((64, 64), 128.0)) == 0.0
    with pytest.raises(ValueError, match="64x64 blocks"):
        cpbd_sharpness(np.zeros((32, 80)))
