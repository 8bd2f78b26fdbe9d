"""The head box of a person-specific head model: where the tracked face is, mapped into a [-1, 1]^3 scene.

Cameras are the tracker's ``transforms_*.json`` (OpenGL camera-to-world,
world = the head frame in metres). The head box comes from the training
frames' head masks: their pixels are unprojected onto the face plane z = 0
of the head frame, x and y bound by the 0.5-99.5 percentiles over frames,
and the depth range is the half width on either side of that plane (the box
only bounds the rays; the model finds the head inside it). The scene frame
centres the box and scales it into [-1, 1]^3, as RAD-NeRF scales its poses
by 4 so that the head fills its unit cube, here from the data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneFrame:
    """The map from the head frame (metres) into the scene frame where the head box is [-1, 1]^3 at most."""

    centre: np.ndarray  # [3]
    scale: float
    box: np.ndarray  # [6] the head box in the scene frame (xmin, ymin, zmin, xmax, ymax, zmax)

    def c2w(self, c2w: np.ndarray) -> np.ndarray:
        """Camera-to-world [..., 4, 4] in metres -> scene frame (rotation kept, centre moved, scaled)."""
        scene = np.array(c2w, np.float64, copy=True)
        scene[..., :3, 3] = (scene[..., :3, 3] - self.centre) * self.scale
        return scene

    def to_dict(self) -> dict:
        return {"centre": self.centre.tolist(), "scale": self.scale, "box": self.box.tolist()}

    @classmethod
    def from_dict(cls, record: dict) -> "SceneFrame":
        return cls(centre=np.asarray(record["centre"], np.float64), scale=float(record["scale"]),
                   box=np.asarray(record["box"], np.float64))


def unproject_to_face_plane(c2w: np.ndarray, pixels: np.ndarray, focal: float, cx: float, cy: float) -> np.ndarray:
    """Head-frame (x, y) where the rays of ``pixels`` [P, 2] (column, row) cross the plane z = 0."""
    directions = np.stack([(pixels[:, 0] + 0.5 - cx) / focal, -(pixels[:, 1] + 0.5 - cy) / focal,
                           -np.ones(len(pixels))], axis=-1) @ c2w[:3, :3].T
    origin = c2w[:3, 3]
    t = -origin[2] / np.where(np.abs(directions[:, 2]) < 1e-9, -1e-9, directions[:, 2])
    return (origin[None, :2] + t[:, None] * directions[:, :2])


def head_scene_frame(masks: Iterable[tuple[np.ndarray, np.ndarray]], focal: float, cx: float, cy: float,
                     margin: float, name: str = "") -> SceneFrame | None:
    """The scene frame of the head box seen in ``masks``: (c2w [4, 4], head mask [H, W] bool) per frame.

    None when no mask has a head pixel (the caller names the file to fix).
    """
    points = []
    for c2w, mask in masks:
        rows, cols = np.nonzero(mask)
        if len(rows) == 0:
            continue
        pixels = np.stack([cols, rows], -1).astype(np.float64)
        points.append(unproject_to_face_plane(c2w, pixels, focal, cx, cy))
    if not points:
        return None
    cloud = np.concatenate(points)
    low, high = np.percentile(cloud, 0.5, axis=0), np.percentile(cloud, 99.5, axis=0)
    half_width = 0.5 * (high[0] - low[0])
    low3 = np.array([low[0], low[1], -half_width])
    high3 = np.array([high[0], high[1], half_width])
    centre, half = 0.5 * (low3 + high3), 0.5 * (high3 - low3) * (1.0 + margin)
    scale = 1.0 / float(half.max())
    box = np.concatenate([-half * scale, half * scale])
    log.info("%s: head box %s m (centre %s), scene scale %.2f", name, np.round(2 * half, 3).tolist(),
             np.round(centre, 3).tolist(), scale)
    return SceneFrame(centre=centre, scale=scale, box=box)
