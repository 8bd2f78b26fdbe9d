"""CPBD: the no-reference sharpness metric of Narvekar and Karam (2011), higher is sharper.

A vectorised port of the reference implementation as the talking-head
papers run it (the ``cpbd`` Python package, itself a port of the authors'
MATLAB release), on 8-bit grey frames:

1. Canny edges (scikit-image, sigma 1) mark the 64x64 blocks with more than
   0.2 % edge pixels as edge blocks; Sobel edges of the horizontal gradient,
   thresholded at twice the root mean square strength and thinned, are the
   edges whose widths are measured;
2. an edge's width (Marziliano et al.) is the length of the monotonic
   intensity run on both sides along the row, for edges whose gradient
   angle rounds to 0 or 180 degrees, at most 101 pixels per side;
3. per edge block, the just-noticeable blur width is 5 pixels when the
   block's contrast (max - min) is at most 50, else 3, and an edge of width
   w is detected as blurred with probability 1 - exp(-(w / w_JNB)^3.6);
4. CPBD is the fraction of edges in edge blocks whose probability, rounded
   to a percent, is at most 63 %.

The reference's quirks are kept so values match it: a pixel with a zero
horizontal gradient gets angle 0, and an image whose angles are all zero
has no measured edges (CPBD 0).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve
from skimage.feature import canny
from torch import Tensor

from talkhead_models.metrics.base import MetricValue, as_frames, batches, with_batch_axis

BLOCK = 64
EDGE_BLOCK_FRACTION = 0.002
BETA = 3.6
JNB_LOW_CONTRAST, JNB_HIGH_CONTRAST = 5.0, 3.0
LOW_CONTRAST_MAX = 50
MAX_MARGIN = 100
SHARP_PERCENT_MAX = 63
LUMA = np.array([0.299, 0.587, 0.114])
# The horizontal-gradient Sobel kernel, normalised by the sum of its absolute values.
SOBEL_X = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8.0


def grey_frames(frames: Tensor | np.ndarray) -> np.ndarray:
    """[B, H, W] float64 8-bit grey levels (ITU-R 601 luma of the rounded RGB), as imread(mode 'L') gives."""
    rgb = np.rint(as_frames(frames).clamp(0, 1).permute(0, 2, 3, 1).cpu().double().numpy() * 255.0)
    return np.rint(rgb @ LUMA)


def _sobel_edges(image: np.ndarray) -> np.ndarray:
    strength = convolve(image, SOBEL_X) ** 2
    strength[strength <= 2.0 * np.sqrt(strength.mean())] = 0.0
    # Thinning: keep local maxima along the row or the column.
    padded = np.pad(strength, 1)
    centre = padded[1:-1, 1:-1]
    along_row = (centre > padded[1:-1, :-2]) & (centre > padded[1:-1, 2:])
    along_column = (centre > padded[:-2, 1:-1]) & (centre > padded[2:, 1:-1])
    return along_row | along_column


def _run_ending_at(condition: np.ndarray) -> np.ndarray:
    """Per row, the number of consecutive True values ending at each column (0 where False)."""
    columns = np.arange(condition.shape[1])
    last_false = np.maximum.accumulate(np.where(condition, -1, columns), axis=1)
    return columns - last_false


def _run_starting_at(condition: np.ndarray) -> np.ndarray:
    return _run_ending_at(condition[:, ::-1])[:, ::-1]


def edge_widths(image: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """[H, W] Marziliano widths at the edge pixels with horizontal gradient angles (0 elsewhere)."""
    gradient_y, gradient_x = np.gradient(image)
    angles = np.zeros_like(image)
    nonzero = gradient_x != 0
    angles[nonzero] = np.degrees(np.arctan2(gradient_y[nonzero], gradient_x[nonzero]))
    widths = np.zeros_like(image)
    if not angles.any():
        return widths
    quantised = 45.0 * np.round(angles / 45.0)
    inside = np.zeros_like(edges)
    inside[1:-1, 1:-1] = True
    candidates = edges & inside

    # rises[:, k]: image[k] > image[k - 1]; falls[:, k]: image[k] < image[k - 1] (False at k = 0).
    step = np.diff(image, axis=1)
    rises = np.pad(step > 0, ((0, 0), (1, 0)))
    falls = np.pad(step < 0, ((0, 0), (1, 0)))

    def side_widths(condition: np.ndarray) -> np.ndarray:
        # Left: the run of ``condition`` ending at column - 1 (each step from k to k - 1 continues the
        # edge). Right: the run starting at column + 2 (a step from k to k + 1 is tested at k + 1).
        left = np.zeros_like(image)
        left[:, 1:] = _run_ending_at(condition)[:, :-1]
        right = np.zeros_like(image)
        right[:, :-2] = _run_starting_at(condition)[:, 2:]
        return np.minimum(left, MAX_MARGIN) + 1 + np.minimum(right, MAX_MARGIN) + 1

    # Gradient pointing left (180): intensity rises leftwards and falls rightwards.
    leftward = candidates & (np.abs(quantised) == 180)
    widths[leftward] = side_widths(falls)[leftward]
    # Gradient pointing right (0): intensity falls leftwards and rises rightwards.
    rightward = candidates & (quantised == 0)
    widths[rightward] = side_widths(rises)[rightward]
    return widths


def cpbd_sharpness(grey: np.ndarray) -> float:
    """CPBD of one 8-bit grey image [H, W] (values 0-255); 0 when it has no measurable edge."""
    image = np.asarray(grey, np.float64)
    if image.ndim != 2:
        raise ValueError(f"CPBD expects one grey image [H, W], got {image.shape}")
    block_edges = canny(image)
    widths = edge_widths(image, _sobel_edges(image))
    rows, columns = image.shape[0] // BLOCK, image.shape[1] // BLOCK
    if rows == 0 or columns == 0:
        raise ValueError(f"CPBD works on {BLOCK}x{BLOCK} blocks; the image {image.shape} has none")

    def blocks(array: np.ndarray) -> np.ndarray:
        cropped = array[: rows * BLOCK, : columns * BLOCK]
        return cropped.reshape(rows, BLOCK, columns, BLOCK).swapaxes(1, 2).reshape(rows * columns, BLOCK * BLOCK)

    pixels = blocks(image)
    is_edge_block = np.count_nonzero(blocks(block_edges), axis=1) > BLOCK * BLOCK * EDGE_BLOCK_FRACTION
    contrast = (pixels.max(axis=1) - pixels.min(axis=1)).astype(np.int64)
    jnb = np.where(contrast <= LOW_CONTRAST_MAX, JNB_LOW_CONTRAST, JNB_HIGH_CONTRAST)
    block_widths = blocks(widths)
    measured = (block_widths != 0) & is_edge_block[:, None]
    if not measured.any():
        return 0.0
    ratio = block_widths / jnb[:, None]
    probability = 1.0 - np.exp(-(ratio[measured] ** BETA))
    percent = np.rint(probability * 100.0)
    return float(np.count_nonzero(percent <= SHARP_PERCENT_MAX) / percent.size)


def cpbd(frames: Tensor | np.ndarray, batch_size: int = 32) -> MetricValue:
    """Mean per-frame CPBD of generated frames (no reference needed; higher is sharper)."""
    frames = with_batch_axis(frames)
    per_frame = np.array([cpbd_sharpness(grey) for part in batches(len(frames), batch_size)
                          for grey in grey_frames(frames[part])])
    return MetricValue("CPBD", float(per_frame.mean()), per_frame=per_frame)
