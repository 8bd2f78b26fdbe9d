"""A solid-head prior from the face's landmarks: where a head model should put its surface before it has learnt one.

The tracked cameras triangulate the detected face landmarks into 3D points
of the head frame (:func:`triangulate`). Their depth, interpolated over the
face's outline (:func:`face_depth_map`), is the front of the face; around it
an ellipsoid spanning the head's extent stands for the rest of the head
(:class:`ShapePrior`). R2-Talker fits its density to this solid and carves
the space in front of it out of its occupancy grid; JEAN bounds its rays to
a band around its front surface (:meth:`ShapePrior.surface_bounds`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from talkhead_models.data.identity_reader import IdentityReader

TRIANGULATION_FRAMES = 240
"""Training frames whose landmarks are triangulated into the face's 3D points."""


def triangulate(c2w: np.ndarray, pixels: np.ndarray, focal: float, cx: float, cy: float) -> np.ndarray:
    """[P, 3] world points whose projections best match ``pixels`` [F, P, 2] in cameras ``c2w`` [F, 4, 4].

    Linear least squares (DLT) in the peers' projection ``u = -f x / z + cx``,
    ``v = f y / z + cy`` of the camera point ``(x, y, z) = R^T (X - o)``: each
    view gives two planes through the point, ``row . (X - o) = 0``.
    """
    to_camera = np.swapaxes(c2w[:, :3, :3], 1, 2)  # [F, 3, 3] world -> camera
    origins = c2w[:, :3, 3]
    axis_x, axis_y, axis_z = to_camera[:, 0], to_camera[:, 1], to_camera[:, 2]  # [F, 3]
    u, v = pixels[..., 0] - cx, pixels[..., 1] - cy  # [F, P]
    rows = np.concatenate([u[..., None] * axis_z[:, None] + focal * axis_x[:, None],
                           v[..., None] * axis_z[:, None] - focal * axis_y[:, None]])  # [2F, P, 3]
    targets = np.einsum("fpk,fk->fp", rows, np.concatenate([origins, origins]))
    normal = np.einsum("fpi,fpj->pij", rows, rows)
    return np.linalg.solve(normal, np.einsum("fpi,fp->pi", rows, targets)[..., None])[..., 0]


def triangulated_face(c2w: np.ndarray, landmarks: np.ndarray, focal: float, cx: float,
                      cy: float) -> np.ndarray | None:
    """[P, 3] the face's points triangulated from the frames whose landmarks [F, P, >=2] (pixels) are all finite;
    None when fewer than two frames have them."""
    pixels = np.asarray(landmarks[..., :2], np.float64)
    usable = np.isfinite(pixels).all(axis=(1, 2))
    if usable.sum() < 2:
        return None
    return triangulate(np.asarray(c2w)[usable], pixels[usable], focal, cx, cy)


def identity_face_points(reader: "IdentityReader", frames: np.ndarray,
                         count: int = TRIANGULATION_FRAMES) -> np.ndarray | None:
    """[P, 3] an identity's face in the head frame (metres): the 478 FaceMesh landmarks of ``count`` of its
    ``frames`` (evenly spread) triangulated with their tracked cameras; None without landmarks.

    They are where the tracker's own cameras put the face, so a density
    prior built on them agrees with the poses the rays come from.
    """
    if not any(reader.layout.path(name).is_file() for name in ("landmarks478", "landmarks68")):
        return None
    frames = np.asarray(frames)
    picked = frames[np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int)]
    points = reader.landmarks().points478  # NaN/inf in a frame with a face is refused, naming the file
    cameras = reader.cameras()
    return triangulated_face(cameras.c2w[picked], points[picked], cameras.focal, cameras.cx, cameras.cy)


def face_depth_map(face: np.ndarray, box: Tensor, resolution: int) -> Tensor:
    """[R, R] (rows y, columns x) the face's depth z over the box's x-y extent, linearly interpolated between
    the face points [P, 3] (scene frame); NaN outside their outline."""
    from scipy.interpolate import LinearNDInterpolator

    low, high = box[:2].cpu().numpy(), box[3:5].cpu().numpy()
    xs = np.linspace(low[0], high[0], resolution)
    ys = np.linspace(low[1], high[1], resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    depth = LinearNDInterpolator(face[:, :2], face[:, 2])(grid_x, grid_y)
    return torch.as_tensor(depth, dtype=torch.float32, device=box.device)


@dataclass(frozen=True)
class ShapePrior:
    """A solid head: an ellipsoid, cut at the front by the face's depth map where there is one."""

    centre: Tensor  # [3] scene frame
    radii: Tensor  # [3]
    depth: Tensor | None  # [R, R] face_depth_map over the box's x-y extent
    box: Tensor  # [6]

    @classmethod
    def spanning(cls, low: Tensor, high: Tensor, face: np.ndarray | None, box: Tensor,
                 resolution: int) -> "ShapePrior":
        """The solid head spanning the extent [low, high] (scene frame) of the head's silhouette.

        The ellipsoid's x and y radii are the extent's half sizes and its depth
        radius the x radius (a head about as deep as wide). With face points
        [P, 3] (scene frame) its front is put at the face's most forward point,
        and inside the face's outline the surface is the points' own depth;
        without them the ellipsoid is centred in the extent.
        """
        centre, radii = 0.5 * (low + high), 0.5 * (high - low)
        radii[2] = radii[0]
        depth = None
        if face is not None:
            centre[2] = float(face[:, 2].max()) - radii[2]
            depth = face_depth_map(face, box, resolution)
        return cls(centre, radii, depth, box)

    def _face_depth(self, points: Tensor) -> Tensor:
        """[M] the face's depth above each point's (x, y); +inf outside the face or without a depth map."""
        if self.depth is None:
            return torch.full_like(points[:, 0], math.inf)
        resolution = self.depth.shape[0]
        unit = (points[:, :2] - self.box[:2]) / (self.box[3:5] - self.box[:2])
        index = (unit * (resolution - 1)).round().long().clamp(0, resolution - 1)
        depth = self.depth[index[:, 1], index[:, 0]]
        return torch.where(torch.isnan(depth), torch.full_like(depth, math.inf), depth)

    def inside(self, points: Tensor) -> Tensor:
        """[M] whether points [M, 3] lie in the solid head."""
        in_ellipsoid = (((points - self.centre) / self.radii) ** 2).sum(-1) <= 1.0
        return in_ellipsoid & (points[:, 2] <= self._face_depth(points))

    def front(self, points: Tensor) -> Tensor:
        """[M] depth of the solid's front surface above each point's (x, y); +inf where the ellipsoid has none."""
        offset = (points[:, :2] - self.centre[:2]) / self.radii[:2]
        left = 1.0 - (offset ** 2).sum(-1)
        ellipsoid = torch.where(left > 0, self.centre[2] + self.radii[2] * left.clamp_min(0).sqrt(),
                                torch.full_like(left, math.inf))
        return torch.minimum(ellipsoid, self._face_depth(points))

    def meets_ellipsoid(self, origins: Tensor, directions: Tensor, grow: float = 1.0) -> Tensor:
        """[R] whether rays [R, 3] pass through the ellipsoid grown by ``grow`` ahead of their origin."""
        # In the frame where the grown ellipsoid is the unit sphere: |o + t d|^2 = 1 has a root with t > 0.
        radii = self.radii * grow
        o, d = (origins - self.centre) / radii, directions / radii
        a, b, c = (d * d).sum(-1), 2.0 * (o * d).sum(-1), (o * o).sum(-1) - 1.0
        discriminant = b * b - 4.0 * a * c
        exit_t = (-b + discriminant.clamp_min(0).sqrt()) / (2.0 * a)
        return (discriminant >= 0) & (exit_t > 0)

    def surface_bounds(self, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor, before: float,
                       behind: float, steps: int = 32, refinements: int = 10) -> tuple[Tensor, Tensor]:
        """(near, far) [R] of rays [R, 3] narrowed to ``before`` in front of and ``behind`` behind the point
        where they first reach the solid's front (z at or below ``front``); rays that never do keep theirs.

        The crossing is found on ``steps`` even steps between near and far,
        then bisected ``refinements`` times within its step: no network is
        evaluated, only the ellipsoid and the depth map, so a few hundred
        lookups per ray cost nothing beside one field evaluation. A feature
        thinner than a step that a ray only grazes can be missed.
        """
        fractions = torch.linspace(0.0, 1.0, steps + 1, device=near.device, dtype=near.dtype)
        t = near[:, None] + (far - near)[:, None] * fractions  # [R, S+1]
        reached = self._reached(origins, directions, t)
        found = reached.any(-1)
        first = torch.argmax(reached.to(torch.uint8), dim=-1)  # index of the first step at or behind the front
        upper = t.gather(1, first[:, None])[:, 0]
        lower = t.gather(1, (first - 1).clamp_min(0)[:, None])[:, 0]
        for _ in range(refinements):
            middle = 0.5 * (lower + upper)
            inside = self._reached(origins, directions, middle[:, None])[:, 0]
            upper = torch.where(inside, middle, upper)
            lower = torch.where(inside, lower, middle)
        crossing = upper
        narrow_near = torch.where(found, torch.maximum(near, crossing - before), near)
        narrow_far = torch.where(found, torch.minimum(far, crossing + behind), far)
        return narrow_near, torch.maximum(narrow_far, narrow_near + 1e-4)

    def _reached(self, origins: Tensor, directions: Tensor, t: Tensor) -> Tensor:
        """[R, S] whether the points at ``t`` [R, S] along the rays lie at or behind the front surface (never
        where there is none above them)."""
        points = origins[:, None, :] + t[..., None] * directions[:, None, :]
        flat = points.reshape(-1, 3)
        front = self.front(flat)
        return (torch.isfinite(front) & (flat[:, 2] <= front)).view(t.shape)
