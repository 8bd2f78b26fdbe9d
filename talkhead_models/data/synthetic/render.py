"""Render frames of a synthetic identity: expression blendshapes, head pose, piecewise-affine warp.

A frame is produced by moving the rig's control points (face landmarks by
blendshapes and head pose, the torso loosely after the head), projecting
them with a pinhole camera, and warping the source texture triangle by
triangle. Triangles are drawn far to near, so a turned head hides what is
behind it. The mouth interior (cavity, teeth, tongue) is painted inside the
inner-lip contour, so an open mouth looks like one instead of stretched lips.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from talkhead_models import face_topology as topo
from talkhead_models.data.synthetic.face import (
    FACE, FIXED, LABEL_HEAD, LABEL_LIPS, LABEL_MOUTH, NECK, SHELL, TORSO, FaceRig,
)

# Expression coefficients, the ground truth of the face's non-rigid state.
EXPRESSION_KEYS = (
    "jaw_open", "lip_round", "lip_spread", "lip_close", "lip_bite",
    "blink_right", "blink_left", "happy", "sad", "angry",
)


@dataclass(frozen=True)
class FrameTruth:
    """What was rendered, in the camera's (OpenCV: x right, y down, z forward) coordinates."""

    image: np.ndarray  # [S, S, 3] uint8 RGB
    labels: np.ndarray  # [S, S] uint8 semantic labels
    landmarks_3d: np.ndarray  # [478, 3] camera coordinates (cm)
    landmarks_2d: np.ndarray  # [478, 2] pixels
    rotation: np.ndarray  # [3, 3] head frame -> camera
    translation: np.ndarray  # [3] head frame origin in the camera (cm)


def _gaussian_weights(points: np.ndarray, handles: list[int], sigma: float) -> np.ndarray:
    """Smooth influence of a handle set over all points: 1 on the handles, falling off with distance."""
    distance = np.linalg.norm(points[:, None, :2] - points[None, handles, :2], axis=-1).min(axis=1)
    return np.exp(-0.5 * (distance / sigma) ** 2)


def expression_bases(face: np.ndarray) -> dict[str, np.ndarray]:
    """Linear blendshapes [478, 3] (cm at unit activation) on the identity's canonical face."""
    n = len(face)
    upper_lip = sorted(set(topo.LIPS_UPPER_OUTER + topo.LIPS_UPPER_INNER) - set(topo.MOUTH_CORNERS))
    lower_lip = sorted(set(topo.LIPS_LOWER_OUTER + topo.LIPS_LOWER_INNER) - set(topo.MOUTH_CORNERS))
    lips = topo.lips_indices()
    mouth = face[topo.MOUTH_CORNERS].mean(axis=0)
    mouth_half_width = 0.5 * abs(face[291, 0] - face[61, 0])
    oval_x = face[topo.FACE_OVAL, 0]
    half_face = 0.5 * (oval_x.max() - oval_x.min())

    # Jaw: everything below the mouth line turns down with the mandible,
    # fading towards the jaw angles; the lower lip rides fully on it.
    below = np.clip((face[:, 1] - mouth[1]) / 0.6, 0.0, 1.0)
    lateral = 1.0 - np.clip((np.abs(face[:, 0] - mouth[0]) - 0.45 * half_face) / (0.5 * half_face), 0.0, 1.0)
    jaw_weight = below * lateral
    jaw_weight[lower_lip] = 1.0
    jaw_weight[upper_lip] = 0.0
    jaw_weight[topo.MOUTH_CORNERS] = 0.45
    jaw = np.zeros((n, 3))
    jaw[:, 1] = 1.5 * jaw_weight
    jaw[:, 2] = 0.45 * jaw_weight
    jaw[upper_lip, 1] = -0.15

    lip_offset = face[lips] - mouth
    round_ = np.zeros((n, 3))
    round_[lips, 0] = -0.3 * lip_offset[:, 0]
    round_[lips, 2] = -0.5
    spread = np.zeros((n, 3))
    corner_weight = _gaussian_weights(face, topo.MOUTH_CORNERS, 0.5)
    spread[:, 0] = 0.35 * corner_weight * np.sign(face[:, 0] - mouth[0]) * np.clip(
        np.abs(face[:, 0] - mouth[0]) / mouth_half_width, 0, 1)
    close = np.zeros((n, 3))
    close[topo.LIPS_UPPER_INNER[1:-1], 1] = 0.12
    close[topo.LIPS_LOWER_INNER[1:-1], 1] = -0.12
    bite = np.zeros((n, 3))
    bite[lower_lip, 1] = -0.3
    bite[lower_lip, 2] = 0.35

    bases = {"jaw_open": jaw, "lip_round": round_, "lip_spread": spread, "lip_close": close, "lip_bite": bite}
    for side, upper, lower, crease, iris in (
        ("right", topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER, topo.RIGHT_EYE_CREASE, topo.RIGHT_IRIS),
        ("left", topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER, topo.LEFT_EYE_CREASE, topo.LEFT_IRIS),
    ):
        blink = np.zeros((n, 3))
        lower_pts = face[lower]
        for index in upper + iris:
            nearest = lower_pts[np.argmin(np.abs(lower_pts[:, 0] - face[index, 0]))]
            blink[index, 1] = 0.95 * (nearest[1] - face[index, 1])
        for index in crease:
            nearest = lower_pts[np.argmin(np.abs(lower_pts[:, 0] - face[index, 0]))]
            blink[index, 1] = 0.35 * (nearest[1] - face[index, 1])
        bases[f"blink_{side}"] = blink

    # Emotions: brows, lip corners, cheeks and lids, spread smoothly over the skin.
    outward = np.sign(face[:, 0] - mouth[0])
    above_eyes = face[:, 1] < face[topo.RIGHT_EYE_UPPER + topo.LEFT_EYE_UPPER, 1].mean()
    brows = _gaussian_weights(face, topo.RIGHT_BROW + topo.LEFT_BROW, 0.7) * above_eyes
    inner_brows = _gaussian_weights(face, topo.RIGHT_BROW_INNER + topo.LEFT_BROW_INNER, 0.6) * above_eyes
    cheeks = _gaussian_weights(face, topo.RIGHT_CHEEK + topo.LEFT_CHEEK, 0.8)
    corners = _gaussian_weights(face, topo.MOUTH_CORNERS, 0.6)
    lower_lids = np.zeros(n)
    lower_lids[topo.RIGHT_EYE_LOWER + topo.LEFT_EYE_LOWER] = 1.0
    upper_lids = np.zeros(n)
    upper_lids[topo.RIGHT_EYE_UPPER + topo.LEFT_EYE_UPPER] = 1.0

    happy = np.zeros((n, 3))
    happy[:, 1] = -0.4 * corners - 0.3 * cheeks - 0.1 * brows - 0.08 * lower_lids
    happy[:, 0] = 0.3 * corners * outward
    sad = np.zeros((n, 3))
    sad[:, 1] = 0.3 * corners - 0.4 * inner_brows + 0.15 * (brows - inner_brows).clip(0) + 0.05 * upper_lids
    angry = np.zeros((n, 3))
    angry[:, 1] = 0.4 * brows + 0.1 * upper_lids + 0.05 * corners
    angry[:, 0] = -0.25 * inner_brows * np.sign(face[:, 0] - face[topo.NOSE_TIP, 0]) - 0.15 * corners * outward
    bases.update(happy=happy, sad=sad, angry=angry)
    return bases


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation (radians) about the head's y (yaw), x (pitch) and z (roll) axes: R = Rz Rx Ry."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


class FaceRenderer:
    """Turns (pose, expression) into frames of one identity."""

    def __init__(self, rig: FaceRig) -> None:
        self.rig = rig
        n_face = int((rig.kinds == FACE).sum())
        self._face_rows = np.flatnonzero(rig.kinds == FACE)
        self._shell_rows = np.flatnonzero(rig.kinds == SHELL)
        self._neck_rows = np.flatnonzero(rig.kinds == NECK)
        self._torso_rows = np.flatnonzero(rig.kinds == TORSO)
        self._fixed_rows = np.flatnonzero(rig.kinds == FIXED)
        bases = expression_bases(rig.canonical[:n_face])
        self._bases = np.stack([bases[key] for key in EXPRESSION_KEYS])  # [K, 478, 3]
        size = rig.size
        self._pixels = np.stack(np.meshgrid(np.arange(size, dtype=np.float32),
                                            np.arange(size, dtype=np.float32)), axis=-1).reshape(-1, 2)
        src = np.dstack([rig.texture, rig.alpha[..., None]]).astype(np.float32)
        self._source_rgba = src
        self._inner_mouth = topo.inner_mouth_polygon()
        self._outer_mouth = topo.outer_mouth_polygon()

    def render(
        self,
        yaw_pitch_roll: np.ndarray,
        translation: np.ndarray,
        expression: np.ndarray,
        torso_shift: np.ndarray,
        torso_yaw: float,
    ) -> FrameTruth:
        """One frame. Angles in radians, translations in cm, expression in EXPRESSION_KEYS order."""
        rig = self.rig
        rotation = euler_to_matrix(*yaw_pitch_roll) @ rig.head_rotation
        head_origin = rig.head_pivot + translation

        points = np.zeros((len(rig.kinds), 3))
        points[self._fixed_rows, 2] = 1.0  # border points are not projected; keep the division finite
        face = rig.canonical[self._face_rows] + np.tensordot(expression, self._bases, axes=1)
        points[self._face_rows] = face @ rotation.T + head_origin
        points[self._shell_rows] = rig.canonical[self._shell_rows] @ rotation.T + head_origin
        torso_rotation = euler_to_matrix(torso_yaw, 0.0, 0.0)
        torso = (rig.torso_rest - rig.torso_pivot) @ torso_rotation.T + rig.torso_pivot + torso_shift
        head_posed_neck = rig.canonical[self._neck_rows] @ rotation.T + head_origin
        points[self._neck_rows] = 0.5 * (head_posed_neck + torso[self._neck_rows])
        points[self._torso_rows] = torso[self._torso_rows]

        projected = rig.focal * points[:, :2] / points[:, 2:3] + rig.size / 2.0
        projected[self._fixed_rows] = rig.source_points[self._fixed_rows]
        depth = points[:, 2].copy()
        depth[self._fixed_rows] = depth.max() + 100.0

        image, labels = self._warp(projected, depth)
        self._paint_mouth(image, labels, projected, points)
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        landmarks_3d = points[self._face_rows]
        return FrameTruth(
            image=image, labels=labels, landmarks_3d=landmarks_3d, landmarks_2d=projected[self._face_rows],
            rotation=rotation, translation=head_origin,
        )

    def _warp(self, projected: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse-map every pixel through the triangle that covers it (nearest triangle wins)."""
        rig = self.rig
        size = rig.size
        triangles = rig.triangles
        dst = projected[triangles]  # [T, 3, 2]
        src = rig.source_points[triangles]
        # The affine map taking each destination triangle onto its source triangle,
        # solved in closed form through the destination's edge vectors.
        e1, e2 = dst[:, 1] - dst[:, 0], dst[:, 2] - dst[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        usable = np.abs(det) > 1e-6
        safe = np.where(usable, det, 1.0)
        inverse = np.stack([np.stack([e2[:, 1], -e2[:, 0]], -1), np.stack([-e1[:, 1], e1[:, 0]], -1)], 1) / safe[:,
                                                                                                    None, None]
        linear = np.stack([src[:, 1] - src[:, 0], src[:, 2] - src[:, 0]], axis=2) @ inverse  # [T, 2, 2]
        affine = np.concatenate([linear, (src[:, 0] - np.einsum("tij,tj->ti", linear, dst[:, 0]))[..., None]], 2)

        ids = np.full((size, size), -1, np.int32)
        order = np.argsort(-depth[triangles].mean(axis=1))
        corners = np.round(dst * 16).astype(np.int32)  # 4 fractional bits: sub-pixel edges
        for index in order:
            if usable[index]:
                cv2.fillConvexPoly(ids, corners[index], int(index), lineType=cv2.LINE_8, shift=4)
        flat_ids = ids.reshape(-1)
        covered = flat_ids >= 0
        maps = np.full((size * size, 2), -1.0, np.float32)
        pix = self._pixels[covered]
        m = affine[flat_ids[covered]]
        maps[covered, 0] = m[:, 0, 0] * pix[:, 0] + m[:, 0, 1] * pix[:, 1] + m[:, 0, 2]
        maps[covered, 1] = m[:, 1, 0] * pix[:, 0] + m[:, 1, 1] * pix[:, 1] + m[:, 1, 2]
        map_x = maps[:, 0].reshape(size, size)
        map_y = maps[:, 1].reshape(size, size)
        rgba = cv2.remap(self._source_rgba, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        labels = cv2.remap(rig.labels, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        alpha = rgba[..., 3:4] * covered.reshape(size, size, 1)
        image = rgba[..., :3] * alpha + rig.background * (1.0 - alpha)
        labels = np.where(alpha[..., 0] > 0.5, labels, 0).astype(np.uint8)
        return image, labels

    def _paint_mouth(self, image: np.ndarray, labels: np.ndarray, projected: np.ndarray, points: np.ndarray) -> None:
        """Cavity, teeth and tongue inside the inner lips; lips and mouth labels from the contours.

        Works on the mouth's bounding box only: the rest of the frame is untouched.
        """
        rig = self.rig
        outer = projected[self._outer_mouth]
        x0, y0 = np.maximum(np.floor(outer.min(axis=0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(outer.max(axis=0)).astype(int) + 3, rig.size)
        if x1 <= x0 or y1 <= y0:
            return
        box = (slice(y0, y1), slice(x0, x1))
        shape = (y1 - y0, x1 - x0)
        offset = np.array([x0, y0], np.float64)

        def polygon_mask(polygon: np.ndarray, antialiased: bool) -> np.ndarray:
            mask = np.zeros(shape, np.float32)
            cv2.fillPoly(mask, [np.round((polygon - offset) * 16).astype(np.int32)], 1.0,
                         cv2.LINE_AA if antialiased else cv2.LINE_8, shift=4)
            return mask

        inner = projected[self._inner_mouth]
        mouth_mask = polygon_mask(inner, True)
        box_labels = labels[box]
        box_labels[(polygon_mask(outer, False) > 0) & (box_labels == LABEL_HEAD)] = LABEL_LIPS
        box_labels[mouth_mask > 0.5] = LABEL_MOUTH

        # Pixel size of a centimetre at the mouth's depth, to size the teeth.
        px_per_cm = rig.focal / points[self._face_rows][topo.MOUTH_CORNERS, 2].mean()
        upper = projected[topo.LIPS_UPPER_INNER]
        lower = projected[topo.LIPS_LOWER_INNER]
        upper_teeth = polygon_mask(np.vstack([upper, upper[::-1] + [0, 0.45 * px_per_cm]]), True)[..., None]
        lower_teeth = polygon_mask(np.vstack([lower, lower[::-1] - [0, 0.3 * px_per_cm]]), True)[..., None]
        centre = lower.mean(axis=0) - [0, 0.25 * px_per_cm] - offset
        axes = (max(1, int(0.3 * np.ptp(lower[:, 0]))), max(1, int(0.25 * px_per_cm)))
        tongue = np.zeros(shape, np.float32)
        cv2.ellipse(tongue, (int(centre[0]), int(centre[1])), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
        tongue = tongue[..., None]

        interior = np.empty((*shape, 3), np.float32)
        interior[:] = (0.16, 0.05, 0.07)
        interior = interior * (1 - tongue) + np.array([0.55, 0.2, 0.22], np.float32) * tongue
        interior = interior * (1 - lower_teeth) + 0.78 * lower_teeth
        interior = interior * (1 - upper_teeth) + np.array([0.93, 0.91, 0.86], np.float32) * upper_teeth
        m = mouth_mask[..., None]
        image[box] = image[box] * (1 - m) + interior * m
