"""Index sets of mediapipe's 478-point face mesh and its 68-point iBUG subset.

Shared by the synthetic corpus (ground truth) and the landmark stage, so that
a "68-point landmark" means the same vertices everywhere. "Right" follows the
subject (the iBUG and mediapipe convention): the subject's right eye is on
the image's left.
"""

from __future__ import annotations

import numpy as np

# mediapipe vertex per iBUG-68 point, in iBUG order: jaw 0-16 (image left to
# right), brows 17-26, nose bridge 27-30, nostrils 31-35, eyes 36-47, outer
# lips 48-59, inner lips 60-67. Symmetric pairs map to mirrored vertices.
MP68 = np.array(
    [234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454,
     70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
     168, 197, 5, 4, 98, 97, 2, 326, 327,
     33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
     61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
     78, 81, 13, 311, 308, 402, 14, 178],
    dtype=np.int64,
)
IBUG_INNER_51 = np.arange(17, 68)
"""The iBUG-68 points without the jaw line: brows, nose, eyes and mouth."""
IBUG_MOUTH = np.arange(48, 68)
"""The iBUG-68 mouth: outer lips 48-59 and inner lips 60-67 (M-LMD's points)."""

LIPS_UPPER_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_LOWER_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
MOUTH_CORNERS = [61, 291, 78, 308]

RIGHT_EYE_UPPER = [246, 161, 160, 159, 158, 157, 173]
RIGHT_EYE_LOWER = [33, 7, 163, 144, 145, 153, 154, 155, 133]
LEFT_EYE_UPPER = [466, 388, 387, 386, 385, 384, 398]
LEFT_EYE_LOWER = [263, 249, 390, 373, 374, 380, 381, 382, 362]
RIGHT_EYE_CREASE = [247, 30, 29, 27, 28, 56, 190]
LEFT_EYE_CREASE = [467, 260, 259, 257, 258, 286, 414]
RIGHT_IRIS = list(range(468, 473))
LEFT_IRIS = list(range(473, 478))

RIGHT_BROW = [156, 70, 63, 105, 66, 107, 55, 193, 35, 124, 46, 53, 52, 65]
LEFT_BROW = [383, 300, 293, 334, 296, 336, 285, 417, 265, 353, 276, 283, 282, 295]
RIGHT_BROW_INNER = [107, 55, 66, 65, 193]
LEFT_BROW_INNER = [336, 285, 296, 295, 417]

RIGHT_CHEEK = [50, 101, 36, 205, 187, 123, 117, 118, 119, 100]
LEFT_CHEEK = [280, 330, 266, 425, 411, 352, 346, 347, 348, 329]

NOSE = [1, 2, 4, 5, 6, 19, 44, 45, 48, 51, 64, 75, 94, 97, 98, 115, 125, 129, 131, 134, 141, 168, 195,
        197, 198, 209, 218, 220, 235, 236, 237, 238, 239, 240, 241, 242, 248, 250, 274, 275, 278, 279,
        281, 294, 305, 326, 327, 344, 354, 358, 360, 363, 370, 420, 429, 438, 440, 455, 456, 457, 458,
        459, 460, 461, 462]

# The silhouette, in mediapipe's order (clockwise from the forehead top).
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]

FOREHEAD = 10
CHIN = 152
NOSE_TIP = 1


def lips_indices() -> list[int]:
    return sorted(set(LIPS_UPPER_OUTER + LIPS_LOWER_OUTER + LIPS_UPPER_INNER + LIPS_LOWER_INNER))


def inner_mouth_polygon() -> list[int]:
    """The inner-lip contour as one closed polygon (upper left to right, lower back)."""
    return LIPS_UPPER_INNER + LIPS_LOWER_INNER[-2:0:-1]


def outer_mouth_polygon() -> list[int]:
    return LIPS_UPPER_OUTER + LIPS_LOWER_OUTER[-2:0:-1]


def to_68(points: np.ndarray) -> np.ndarray:
    """Select the iBUG-68 subset from [..., 478, D] mediapipe points."""
    return points[..., MP68, :]
