"""The canonical face frame: 68 landmarks with the head pose removed.

Each frame's 68 3D points (pixel x, y and pixel depth z) are aligned to the
identity's neutral mean shape by a similarity Procrustes fit (scale, rotation,
translation; Umeyama's closed form). The fit uses only points that speech and
expression do not move (nose bridge and nostrils, eye corners), so a talking
mouth is not taken for a head turn; the transform is then applied to all 68.

The neutral mean shape is the generalised Procrustes mean of the identity's
neutral frames, centred and scaled to unit RMS radius: canonical coordinates
are face-size free, so displacements are comparable across identities, and
``NeutralShape.pixels_per_unit`` turns them back into pixels.

A detector's 3D is not the face's: after the rigid fit its mouth still moves
with the head pose. ``remove_pose_dependence`` takes out the part of the
canonical landmarks that a least-squares fit on the pose angles explains
(``datasets.load_identity`` applies it to the models' targets).

``canonical_landmarks(lms68_3d, reference)`` is the rigid step alone; a
pose-based canonicalisation (from the head tracker) can replace it with the
same signature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from talkhead_models import geometry
from talkhead_models.face_topology import IBUG_MOUTH
from talkhead_models.geometry import Similarity

# Points that move with the skull only: nose bridge 27-30, nostrils 31-35, outer and inner eye corners.
RIGID_ANCHORS = np.array([27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45], dtype=np.int64)
MOUTH = IBUG_MOUTH
MIN_POSE_FRAMES = 100  # frames an identity needs before remove_pose_dependence fits its 6 pose terms


@dataclass(frozen=True)
class NeutralShape:
    """An identity's neutral mean shape in the canonical frame and its size in pixels."""

    shape: np.ndarray  # [68, 3], centred, unit RMS radius
    pixels_per_unit: float  # mean image size of one canonical unit over the neutral frames


def fit_similarity(points: np.ndarray, reference: np.ndarray, anchors: np.ndarray = RIGID_ANCHORS) -> Similarity:
    """Least-squares similarity taking ``points[:, anchors]`` ([N, 68, 3]) onto ``reference[anchors]`` ([68, 3])."""
    return geometry.fit_similarity(np.asarray(points, np.float64)[:, anchors],
                                   np.asarray(reference, np.float64)[anchors])


def canonical_landmarks(lms68_3d: np.ndarray, reference: np.ndarray,
                        anchors: np.ndarray = RIGID_ANCHORS) -> np.ndarray:
    """[N, 68, 3] image-frame landmarks -> the canonical frame of ``reference`` (float32)."""
    points = np.asarray(lms68_3d, np.float64)
    return fit_similarity(points, reference, anchors).apply(points).astype(np.float32)


def pose_angles(rotation: np.ndarray) -> np.ndarray:
    """[N, 3] yaw, pitch, roll (radians) of [N, 3, 3] rotations."""
    return Rotation.from_matrix(np.asarray(rotation, np.float64)).as_euler("yxz")


def remove_pose_dependence(canonical: np.ndarray, rotation: np.ndarray, reference_frames: np.ndarray,
                           fit_frames: np.ndarray | None = None) -> np.ndarray:
    """Canonical landmarks ([N, 68, 3]) minus the part that follows the head pose.

    A monocular landmark detector's 3D is not the face's: under a head turn its
    lip points shift in a way a rigid transform does not undo, so the
    canonical mouth still depends on the pose (on the synthetic corpus the pose
    explains 16-26% of FaceMesh's canonical mouth motion, 4-7% of the true
    one's). A least-squares fit over all frames of the displacements on the
    pose angles and their squares (``rotation``: the frames' canonicalising
    rotations) is subtracted, with the angles centred on ``reference_frames``
    (the neutral frames) so that their mean shape stays where it was. Fewer than
    ``MIN_POSE_FRAMES`` frames are returned as they are: too few to tell the
    pose's share from the speech. ``fit_frames`` (default all) restricts the fit,
    not the subtraction: the test frames of ``datasets.load_identity`` are moved
    by a fit that never saw them.
    """
    points = np.asarray(canonical, np.float64)
    fit = np.arange(len(points)) if fit_frames is None else np.asarray(fit_frames)
    if len(fit) < MIN_POSE_FRAMES:
        return points.astype(np.float32)
    angles = pose_angles(rotation)
    features = np.concatenate([angles, angles ** 2], axis=1)
    features -= features[reference_frames].mean(axis=0)
    design = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    flat = points.reshape(len(points), -1)
    weights = np.linalg.lstsq(design[fit], flat[fit], rcond=None)[0]
    return (flat - features @ weights[:-1]).reshape(points.shape).astype(np.float32)


def neutral_shape(lms68_3d: np.ndarray, anchors: np.ndarray = RIGID_ANCHORS, iterations: int = 4) -> NeutralShape:
    """Generalised Procrustes mean of an identity's neutral frames ([N, 68, 3])."""
    points = np.asarray(lms68_3d, np.float64)
    if points.ndim != 3 or points.shape[1:] != (68, 3) or len(points) == 0:
        raise ValueError(f"expected neutral landmarks [N > 0, 68, 3], got {points.shape}")
    reference = _normalise(np.median(points, axis=0))
    for _ in range(iterations):
        reference = _normalise(fit_similarity(points, reference, anchors).apply(points).mean(axis=0))
    transforms = fit_similarity(points, reference, anchors)
    return NeutralShape(reference.astype(np.float32), float(np.mean(1.0 / transforms.scale)))


def _normalise(shape: np.ndarray) -> np.ndarray:
    centred = shape - shape.mean(axis=0)
    return centred / np.sqrt((centred ** 2).sum(axis=1).mean())
