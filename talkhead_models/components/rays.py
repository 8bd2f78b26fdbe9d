"""Camera rays in the peers' transforms.json convention, AABB clipping and pixel sampling.

AD-NeRF, RAD-NeRF and ER-NeRF store ``transform_matrix`` as an OpenGL-style
camera-to-world matrix: the camera looks down its -z axis, +y is up and +x
is right, while image rows grow downwards. A pixel (i, j) (column, row),
sampled at its centre, therefore has the camera-space direction
``((i + 0.5 - cx) / focal, -(j + 0.5 - cy) / focal, -1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RayBundle:
    """Rays for a set of pixels of one or more cameras."""

    origins: Tensor
    """[..., R, 3] world-space ray origins (the camera centres)."""
    directions: Tensor
    """[..., R, 3] unit world-space directions."""
    pixel_indices: Tensor
    """[R] flattened pixel indices ``row * width + column`` the rays go through."""


def pixel_directions(
    pixel_indices: Tensor, width: int, focal: float | Tensor, cx: float | Tensor, cy: float | Tensor
) -> Tensor:
    """Camera-space directions (not normalised, z = -1) through the centres of ``pixel_indices``."""
    columns = (pixel_indices % width).to(torch.float32) + 0.5
    rows = torch.div(pixel_indices, width, rounding_mode="floor").to(torch.float32) + 0.5
    return torch.stack(
        [(columns - cx) / focal, -(rows - cy) / focal, -torch.ones_like(columns)],
        dim=-1,
    )


def get_rays(
    c2w: Tensor,
    focal: float | Tensor,
    cx: float | Tensor,
    cy: float | Tensor,
    height: int,
    width: int,
    pixel_indices: Tensor | None = None,
) -> RayBundle:
    """Rays through ``pixel_indices`` (default: every pixel) of the camera(s) ``c2w`` [..., 4, 4].

    ``focal``, ``cx`` and ``cy`` are in pixels as in transforms.json
    (``focal_len``, ``cx``, ``cy``). Directions are normalised so that a ray
    parameter t is a distance.
    """
    if pixel_indices is None:
        pixel_indices = torch.arange(height * width, device=c2w.device)
    if pixel_indices.numel() and (pixel_indices.min() < 0 or pixel_indices.max() >= height * width):
        raise ValueError(f"pixel indices out of range for a {height}x{width} image")
    camera_dirs = pixel_directions(pixel_indices.to(c2w.device), width, focal, cx, cy).to(c2w.dtype)
    rotation = c2w[..., :3, :3]
    world_dirs = torch.einsum("...ij,rj->...ri", rotation, camera_dirs)
    world_dirs = world_dirs / world_dirs.norm(dim=-1, keepdim=True)
    origins = c2w[..., None, :3, 3].expand_as(world_dirs)
    return RayBundle(origins=origins, directions=world_dirs, pixel_indices=pixel_indices)


def intersect_aabb(
    origins: Tensor, directions: Tensor, aabb: Tensor, min_near: float = 0.05
) -> tuple[Tensor, Tensor, Tensor]:
    """Slab-test ray / box intersection.

    ``aabb`` is [6] = (xmin, ymin, zmin, xmax, ymax, zmax). Returns (near, far,
    hit) per ray; near is at least ``min_near`` (RAD-NeRF's default 0.05) so
    that rays starting inside the box begin in front of the camera. Rays that
    miss get near = far, so any sampler between them yields zero length.
    """
    inverse = 1.0 / torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t_lower = (aabb[:3] - origins) * inverse
    t_upper = (aabb[3:] - origins) * inverse
    near = torch.minimum(t_lower, t_upper).amax(-1).clamp_min(min_near)
    far = torch.maximum(t_lower, t_upper).amin(-1)
    hit = far > near
    far = torch.where(hit, far, near)
    return near, far, hit


def sample_pixels(height: int, width: int, count: int, generator: torch.Generator | None = None) -> Tensor:
    """``count`` pixel indices drawn uniformly without replacement (random rays for a batch)."""
    count = min(count, height * width)
    return torch.randperm(height * width, generator=generator)[:count]


def sample_patch(
    height: int,
    width: int,
    patch_size: int,
    region: tuple[int, int, int, int] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pixel indices [patch_size * patch_size] of a random square patch, in row-major order.

    The patch lies inside ``region`` = (x0, y0, x1, y1) (exclusive ends; for
    example the lips' bounding box for the lip LPIPS loss) when the region
    is large enough; a smaller region gets a patch centred on it. The patch is
    always kept inside the image. Reshape the rendered colours to
    [patch_size, patch_size, 3] for a perceptual loss.
    """
    if patch_size > min(height, width):
        raise ValueError(f"patch of {patch_size} px does not fit a {height}x{width} image")
    x0, y0, x1, y1 = region if region is not None else (0, 0, width, height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty patch region {region}")

    def corner(low: int, high: int, limit: int) -> int:
        room = high - low - patch_size
        if room >= 0:
            start = low + int(torch.randint(room + 1, (1,), generator=generator))
        else:
            start = (low + high - patch_size) // 2
        return min(max(start, 0), limit - patch_size)

    left = corner(x0, x1, width)
    top = corner(y0, y1, height)
    rows = torch.arange(top, top + patch_size)
    columns = torch.arange(left, left + patch_size)
    return (rows[:, None] * width + columns[None, :]).flatten()
