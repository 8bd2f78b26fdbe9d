"""Head pose and camera conventions shared with the AD-NeRF / ER-NeRF / RAD-NeRF family.

Everything the tracker writes follows the peers' ``data_utils/face_tracking``
code, so their training code reads our ``track_params.pt`` and
``transforms_*.json`` unchanged:

* **Head frame** (the morphable model's coordinates): x towards the
  subject's left (image right in a frontal view), y up, z out of the face
  (towards a frontal camera); units are decimetres (BFM's micrometres divided
  by 1e5, as the peers scale it).
* **Camera frame**: OpenGL/NeRF, x right, y up, looking down -z; the face
  sits at negative z (the peers start the fit at z = -7 dm).
* **Pose**: ``euler = (theta, phi, psi)`` in radians and ``R = Rx(theta) @
  Ry(phi) @ Rz(-psi)`` (right-handed elementary rotations; the peers'
  ``euler2rot`` builds its z factor transposed, hence ``-psi``); a point of
  the head frame lands at ``p_cam = R @ p + trans`` (``trans`` in dm).
* **Projection**: ``u = -f * X / Z + cx``, ``v = f * Y / Z + cy`` (pixels,
  origin top-left; Z < 0, so u grows to the right and v downwards).
* **transforms_*.json**: ``transform_matrix`` is camera-to-world (world =
  head frame) in the OpenGL convention, ``[[R^T, -R^T @ trans / 10], [0, 0,
  0, 1]]``: the translation is in metres (the peers divide ``trans`` by 10
  when they write the file).

The synthetic corpus' ground truth uses OpenCV cameras (x right, y down, z
forward); ``OPENGL_TO_OPENCV`` converts a camera-frame rotation between the two.
"""

from __future__ import annotations

import numpy as np

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
"""Maps OpenGL camera coordinates to OpenCV ones (and back: it is its own inverse)."""

DECIMETRES_PER_METRE = 10.0


def euler_to_rotation(euler: np.ndarray) -> np.ndarray:
    """[..., 3] (theta, phi, psi) radians -> [..., 3, 3] rotation ``Rx(theta) @ Ry(phi) @ Rz(-psi)``."""
    euler = np.asarray(euler, dtype=np.float64)
    cos, sin = np.cos(euler), np.sin(euler)
    ones, zeros = np.ones_like(euler[..., 0]), np.zeros_like(euler[..., 0])
    rx = np.stack([ones, zeros, zeros, zeros, cos[..., 0], -sin[..., 0], zeros, sin[..., 0], cos[..., 0]], -1)
    ry = np.stack([cos[..., 1], zeros, sin[..., 1], zeros, ones, zeros, -sin[..., 1], zeros, cos[..., 1]], -1)
    rz = np.stack([cos[..., 2], sin[..., 2], zeros, -sin[..., 2], cos[..., 2], zeros, zeros, zeros, ones], -1)
    shape = euler.shape[:-1] + (3, 3)
    return rx.reshape(shape) @ ry.reshape(shape) @ rz.reshape(shape)


def rotation_to_euler(rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_rotation` (phi in [-pi/2, pi/2]; exact away from phi = +-90 degrees)."""
    rotation = np.asarray(rotation, dtype=np.float64)
    theta = np.arctan2(-rotation[..., 1, 2], rotation[..., 2, 2])
    phi = np.arcsin(np.clip(rotation[..., 0, 2], -1.0, 1.0))
    psi = np.arctan2(rotation[..., 0, 1], rotation[..., 0, 0])
    return np.stack([theta, phi, psi], axis=-1)


def project(points: np.ndarray, rotation: np.ndarray, trans: np.ndarray, focal: float, cx: float,
            cy: float) -> np.ndarray:
    """Head-frame points [..., P, 3] -> pixels [..., P, 2] through pose [..., 3, 3], [..., 3]."""
    cam = points @ np.swapaxes(rotation, -1, -2) + trans[..., None, :]
    return np.stack([-focal * cam[..., 0] / cam[..., 2] + cx, focal * cam[..., 1] / cam[..., 2] + cy], axis=-1)


def transform_matrix(euler: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """[..., 4, 4] camera-to-world (OpenGL, metres) from tracked euler [..., 3] and trans [..., 3] (dm)."""
    rotation_t = np.swapaxes(euler_to_rotation(euler), -1, -2)
    trans_m = np.asarray(trans, dtype=np.float64) / DECIMETRES_PER_METRE
    pose = np.zeros(rotation_t.shape[:-2] + (4, 4))
    pose[..., :3, :3] = rotation_t
    pose[..., :3, 3] = -(rotation_t @ trans_m[..., None])[..., 0]
    pose[..., 3, 3] = 1.0
    return pose


def pose_from_transform(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`transform_matrix`: (euler [..., 3], trans [..., 3] in dm)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rotation = np.swapaxes(matrix[..., :3, :3], -1, -2)
    trans_m = -(rotation @ matrix[..., :3, 3, None])[..., 0]
    return rotation_to_euler(rotation), trans_m * DECIMETRES_PER_METRE


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees of the relative rotation ``a @ b^T`` for [..., 3, 3] stacks."""
    relative = a @ np.swapaxes(b, -1, -2)
    cosine = (np.trace(relative, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def head_translation(c2w: np.ndarray) -> np.ndarray:
    """[..., 4, 4] camera-to-world (metres) -> [..., 3] the head frame's origin in camera coordinates (metres)."""
    return pose_from_transform(c2w)[1] / DECIMETRES_PER_METRE


def pose_distance(c2w: np.ndarray, candidates: np.ndarray, translation_scale: float) -> np.ndarray:
    """Head-pose distance from one camera [4, 4] to each of ``candidates`` [M, 4, 4]: the relative rotation's angle
    (radians) plus the head's shift in the camera frame over ``translation_scale`` (metres); the nearest_pose
    method's docstring derives why."""
    angle = np.radians(rotation_angle_deg(candidates[:, :3, :3], c2w[:3, :3]))
    shift = np.linalg.norm(head_translation(candidates) - head_translation(c2w), axis=-1)
    return angle + shift / translation_scale
