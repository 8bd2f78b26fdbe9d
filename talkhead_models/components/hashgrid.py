"""Multi-resolution hash-grid encoding (Instant-NGP) with a torch and a tcnn backend.

The torch backend reproduces tiny-cuda-nn's ``HashGrid`` encoding exactly:
the same level resolutions, the same dense-then-hashed indexing, the same
hash, and the same flat parameter layout (level after level, entry after
entry, feature after feature). A checkpoint written with one backend
therefore loads into the other, and the tcnn path is only a speed-up.

Inputs are points in ``[-bound, bound]^D``; they are mapped to the unit cube
that tiny-cuda-nn expects, as torch-ngp's ``GridEncoder`` (RAD-NeRF, ER-NeRF,
R2-Talker) does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types
import numpy as np
import torch
from torch import Tensor, nn

from talkhead_models.components.backends import cuda_library_available
from talkhead_models.config import PositiveInt

logger = logging.getLogger(__name__)

HashGridBackend = Literal["torch", "tcnn", "auto"]

# tiny-cuda-nn's coherent-prime hash: the first prime is 1 so that neighbouring
# cells along x stay neighbours in memory.
HASH_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
_UINT32_MASK = 0xFFFFFFFF
# Instant-NGP and torch-ngp initialise the table uniformly in +-1e-4.
INIT_RANGE = 1e-4


@dataclass
class HashGridConfig:
    """Hash-grid hyper-parameters; defaults are R2-Talker's landmark encoder (supplement Table 7)."""

    input_dim: Annotated[int, annotated_types.Interval(ge=1, le=len(HASH_PRIMES))] = 3
    """Dimension of the points (2 for a tri-plane's planes, 3 for space)."""
    num_levels: PositiveInt = 16
    """Number of resolution levels L."""
    level_dim: PositiveInt = 2
    """Features per level F (R2-Talker: 2 for landmarks, 4 for positions)."""
    base_resolution: PositiveInt = 32
    """Coarsest resolution N_min."""
    log2_hashmap_size: PositiveInt = 16
    """log2 of the entries per level T; coarse levels that fit use fewer, densely indexed."""
    desired_resolution: PositiveInt = 2048
    """Finest resolution N_max; fixes the per-level growth factor b = (N_max/N_min)^(1/(L-1))."""

    def __post_init__(self) -> None:
        if not 1 <= self.input_dim <= len(HASH_PRIMES):
            raise ValueError(f"input_dim must be in 1..{len(HASH_PRIMES)}, got {self.input_dim}")
        if self.num_levels < 1 or self.level_dim < 1:
            raise ValueError("num_levels and level_dim must be positive")
        if self.desired_resolution < self.base_resolution:
            raise ValueError(
                f"desired_resolution {self.desired_resolution} is below base_resolution {self.base_resolution}"
            )

    @property
    def per_level_scale(self) -> float:
        """Growth factor b between consecutive levels."""
        if self.num_levels == 1:
            return 1.0
        return math.exp(math.log(self.desired_resolution / self.base_resolution) / (self.num_levels - 1))

    @property
    def output_dim(self) -> int:
        return self.num_levels * self.level_dim


@dataclass(frozen=True)
class LevelLayout:
    """Where one level lives in the table and how it is indexed."""

    scale: float
    """Position multiplier: a unit-cube coordinate x maps to grid coordinate x * scale + 0.5."""
    resolution: int
    """Vertices per axis."""
    offset: int
    """First table entry of this level."""
    size: int
    """Entries of this level (dense vertex count rounded up to 8, capped at 2^log2_hashmap_size)."""
    hashed: bool
    """True when the dense grid does not fit and indices are hashed."""


def level_layouts(config: HashGridConfig) -> list[LevelLayout]:
    """The per-level layout, computed in float32 exactly as tiny-cuda-nn computes it."""
    log2_scale = np.float32(np.log2(np.float32(config.per_level_scale)))
    max_entries = 1 << config.log2_hashmap_size
    layouts = []
    offset = 0
    for level in range(config.num_levels):
        scale = np.float32(np.exp2(np.float32(level) * log2_scale) * np.float32(config.base_resolution) - 1.0)
        resolution = int(math.ceil(scale)) + 1
        dense_entries = resolution**config.input_dim
        size = min(-(-dense_entries // 8) * 8, max_entries)
        layouts.append(LevelLayout(float(scale), resolution, offset, size, hashed=dense_entries > size))
        offset += size
    return layouts


def progressive_level_count(
    iteration: int, num_levels: int, initial_levels: int = 4, iterations_per_level: int = 5000
) -> int:
    """Levels enabled at ``iteration`` in R2-Talker's coarse-to-fine schedule.

    R2-Talker (after Neuralangelo) starts with the 4 coarsest levels and enables
    one more every 5000 iterations.
    """
    if iteration < 0:
        raise ValueError(f"iteration must be non-negative, got {iteration}")
    return min(num_levels, initial_levels + iteration // iterations_per_level)


def tcnn_available() -> bool:
    """True when tiny-cuda-nn is installed and a CUDA device is present."""
    return cuda_library_available("tinycudann")


def resolve_backend(backend: HashGridBackend) -> Literal["torch", "tcnn"]:
    """``auto`` picks tcnn when it can run, torch otherwise; an explicit tcnn must be runnable."""
    if backend == "auto":
        return "tcnn" if tcnn_available() else "torch"
    if backend == "tcnn" and not tcnn_available():
        raise RuntimeError(
            "hash-grid backend 'tcnn' needs tinycudann and a CUDA device; "
            "install tiny-cuda-nn's torch bindings or use backend='torch' (or 'auto')"
        )
    if backend not in ("torch", "tcnn"):
        raise ValueError(f"unknown hash-grid backend {backend!r}: use 'torch', 'tcnn' or 'auto'")
    return backend


def _combine_over_axes(per_axis: list[Tensor], combine) -> Tensor:
    """Combine per-axis [2, N] tensors (lower, upper vertex) over all 2^D corners into [2^D, N].

    Corner-major layout keeps the points contiguous in the innermost
    dimension, so every broadcast is a fast, vectorised loop over points.
    """
    result = per_axis[0]
    for values in per_axis[1:]:
        result = combine(result.unsqueeze(1), values.unsqueeze(0)).flatten(0, 1)
    return result


def encode_torch(unit_points: Tensor, embeddings: Tensor, layouts: list[LevelLayout]) -> Tensor:
    """Encode points in the unit cube with the table ``embeddings`` [entries, F] -> [N, L*F].

    Vectorised over points and corners with one loop over levels. Hash and
    multilinear weights are separable over axes, so each is computed per
    axis for the two neighbouring vertices and combined by an outer XOR / sum
    / product. Autograd gives the gradients for the table and the points.

    How the work is laid out is chosen for CPU speed; the arithmetic is that
    of the plain per-level grid, so outputs and gradients are the same numbers
    (benchmarks/bench_components.py asserts it before timing the two):

    * Each level reads its own slice of the table (``split``), with indices
      local to the slice. The backward of a level's gather then fills a
      gradient of the slice's size only, and ``split``'s backward joins the
      slices into the table's gradient once per call. Gathering each level
      from the whole table filled a table-sized gradient per level (slow for
      small batches); gathering all levels in one ``index_select`` avoided
      that but built level-concatenated index, weight and value tensors L
      times a level's size, which from 2^15 points on cost more in memory
      traffic and freshly mapped pages than it saved (1.3-1.4x slower at
      2^15-2^18 points). One path now wins at every size, so none is chosen
      by batch size.
    * The slice is gathered transposed, [F, entries] -> [F, 2^D, N], so the
      weighted sum over corners and its backward broadcast the weights along
      the contiguous points dimension; with values [2^D, N, F] every product
      broadcast over a dimension of F (2) elements, which ran at a fraction
      of the memory speed.
    * Vertices are the lower corner and lower + 1 stacked, not the lower
      corner plus a broadcast [[0], [1]]: torch ran that broadcast add several
      times slower than the stack.
    * Indices stay int64: ``index_select``'s CPU backward is about 4x slower
      with int32 indices.
    """
    num_points, input_dim = unit_points.shape
    axes = unit_points.T  # [D, N]
    primes = torch.tensor(HASH_PRIMES[:input_dim], device=unit_points.device).view(-1, 1, 1)
    sizes = [layout.size for layout in layouts]
    unused = embeddings.shape[0] - sum(sizes)  # the finer levels a progressive schedule leaves out
    tables = embeddings.split(sizes + [unused] if unused else sizes)
    level_features = []
    for layout, table in zip(layouts, tables):
        grid_position = axes * layout.scale + 0.5
        cell = torch.floor(grid_position)
        fraction = grid_position - cell  # [D, N], carries the gradient w.r.t. the points
        lower = cell.long()
        vertices = torch.stack([lower, lower + 1], 1)  # [D, 2, N]: lower and upper vertex per axis
        if layout.hashed:
            # tiny-cuda-nn's fast_hash in uint32 arithmetic, XOR of coordinate * prime, reduced modulo the level's
            # power-of-two size: AND distributes over XOR, so each axis's product is masked before the XOR.
            # Coordinates stay below 2^13 and primes below 2^32, so products fit in int64.
            # (The uint32 mask only matters for levels of more than 2^32 entries.)
            contributions = (vertices * primes).bitwise_and_((layout.size - 1) & _UINT32_MASK)
            index = _combine_over_axes(list(contributions), torch.bitwise_xor)
        else:
            strides = torch.tensor([layout.resolution**d for d in range(input_dim)], device=unit_points.device)
            index = _combine_over_axes(list(vertices * strides.view(-1, 1, 1)), torch.add) % layout.size
        weights = _combine_over_axes(list(torch.stack([1.0 - fraction, fraction], 1)), torch.mul)  # [2^D, N]
        values = table.T.contiguous().index_select(1, index.flatten()).view(-1, *index.shape)  # [F, 2^D, N]
        level_features.append((weights * values).sum(1))  # [F, N]
    return torch.cat(level_features).T.contiguous()  # [N, L*F], level after level


class HashGridEncoding(nn.Module):
    """Multi-resolution hash encoding of points in ``[-bound, bound]^D``.

    The table is one parameter ``embeddings`` of shape [entries, F] in
    tiny-cuda-nn's layout, whichever backend runs. ``set_active_levels``
    zeroes the features (and so the gradients) of the finest levels for
    coarse-to-fine training; the mask is not saved in the state dict
    because it follows from the iteration (``progressive_level_count``).
    """

    def __init__(
        self,
        config: HashGridConfig | None = None,
        backend: HashGridBackend = "auto",
        bound: float = 1.0,
    ) -> None:
        super().__init__()
        self.config = config or HashGridConfig()
        self.bound = bound
        self.layouts = level_layouts(self.config)
        total_entries = self.layouts[-1].offset + self.layouts[-1].size
        self.embeddings = nn.Parameter(
            torch.empty(total_entries, self.config.level_dim).uniform_(-INIT_RANGE, INIT_RANGE)
        )
        self.register_buffer("level_mask", torch.ones(self.config.num_levels), persistent=False)
        # The mask's count as a plain int: the torch path slices the levels by it without reading the buffer
        # back from the device at every call.
        self._active_levels = self.config.num_levels
        self.backend = resolve_backend(backend)
        # The tcnn module is kept out of the module tree (plain attribute, not a
        # submodule) so that its own copy of the table is neither saved nor
        # optimised: forward passes ours in its place.
        object.__setattr__(self, "_tcnn_encoding", self._build_tcnn() if self.backend == "tcnn" else None)
        logger.debug(
            "hash grid: %d levels x %d features, %d entries, backend %s",
            self.config.num_levels,
            self.config.level_dim,
            total_entries,
            self.backend,
        )

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    @property
    def active_levels(self) -> int:
        return self._active_levels

    def set_active_levels(self, count: int) -> None:
        """Enable the ``count`` coarsest levels; the finer ones output zeros."""
        if not 1 <= count <= self.config.num_levels:
            raise ValueError(f"active level count must be in 1..{self.config.num_levels}, got {count}")
        self.level_mask.zero_()
        self.level_mask[:count] = 1.0
        self._active_levels = count

    def _build_tcnn(self) -> nn.Module:
        import tinycudann as tcnn

        encoding_config = {
            "otype": "HashGrid",
            "n_levels": self.config.num_levels,
            "n_features_per_level": self.config.level_dim,
            "log2_hashmap_size": self.config.log2_hashmap_size,
            "base_resolution": self.config.base_resolution,
            "per_level_scale": self.config.per_level_scale,
            "interpolation": "Linear",
        }
        # float32 parameters so that both backends hold the same numbers.
        encoding = tcnn.Encoding(self.config.input_dim, encoding_config, dtype=torch.float32)
        expected = self.embeddings.numel()
        if encoding.params.numel() != expected:
            raise RuntimeError(
                f"tinycudann HashGrid has {encoding.params.numel()} parameters, expected {expected}: "
                "its level layout differs from the torch backend's"
            )
        return encoding

    def forward(self, points: Tensor) -> Tensor:
        """Encode ``points`` [..., D] in ``[-bound, bound]`` -> [..., L*F]."""
        if points.shape[-1] != self.config.input_dim:
            raise ValueError(f"expected points with {self.config.input_dim} coordinates, got shape {tuple(points.shape)}")
        leading_shape = points.shape[:-1]
        flat_points = points.reshape(-1, self.config.input_dim).to(self.embeddings.dtype)
        # Clamp to the unit cube: outside it the grid has no vertices.
        unit_points = ((flat_points + self.bound) / (2 * self.bound)).clamp(0.0, 1.0)
        # tiny-cuda-nn runs on CUDA only; CPU inputs take the torch path with the same table.
        if self._tcnn_encoding is not None and unit_points.is_cuda:
            features = torch.func.functional_call(
                self._tcnn_encoding, {"params": self.embeddings.reshape(-1)}, (unit_points.contiguous(),)
            )
            mask = self.level_mask.to(features.dtype).repeat_interleave(self.config.level_dim)
            return (features * mask).reshape(*leading_shape, self.output_dim)
        # The masked levels' features are zeros whatever the table holds, so they are not computed: with
        # R2-Talker's progressive schedule the paper's first 5,000 iterations encode 4 levels of 16. The active
        # levels' features and the table's gradient are the same numbers as when all levels are encoded.
        active = self._active_levels
        features = encode_torch(unit_points, self.embeddings, self.layouts[:active])
        if active < self.config.num_levels:
            features = nn.functional.pad(features, (0, (self.config.num_levels - active) * self.config.level_dim))
        return features.reshape(*leading_shape, self.output_dim)


@dataclass
class TriPlaneConfig:
    """One 2D hash grid per plane; defaults are GSTalker's deformation field (Sec. 4.1)."""

    num_levels: PositiveInt = 14
    """GSTalker: L = 14."""
    level_dim: PositiveInt = 1
    """GSTalker: F = 1."""
    base_resolution: PositiveInt = 64
    """GSTalker: resolutions from 64 ..."""
    desired_resolution: PositiveInt = 512
    """... to 512."""
    log2_hashmap_size: PositiveInt = 14
    """Not given by GSTalker; ER-NeRF's tri-plane value."""

    def __post_init__(self) -> None:
        if self.desired_resolution < self.base_resolution:
            raise ValueError(
                f"desired_resolution {self.desired_resolution} is below base_resolution {self.base_resolution}"
            )

    def plane_config(self) -> HashGridConfig:
        return HashGridConfig(
            input_dim=2,
            num_levels=self.num_levels,
            level_dim=self.level_dim,
            base_resolution=self.base_resolution,
            log2_hashmap_size=self.log2_hashmap_size,
            desired_resolution=self.desired_resolution,
        )


class TriPlaneHashGrid(nn.Module):
    """Tri-plane of 2D hash grids (ER-NeRF / GSTalker): features of the xy, yz and xz projections, concatenated."""

    # ER-NeRF's plane order, so that its checkpoints' feature order carries over.
    PLANES = {"xy": (0, 1), "yz": (1, 2), "xz": (0, 2)}

    def __init__(self, config: TriPlaneConfig | None = None, backend: HashGridBackend = "auto", bound: float = 1.0):
        super().__init__()
        self.config = config or TriPlaneConfig()
        plane_config = self.config.plane_config()
        self.planes = nn.ModuleDict(
            {name: HashGridEncoding(plane_config, backend=backend, bound=bound) for name in self.PLANES}
        )

    @property
    def output_dim(self) -> int:
        return 3 * self.config.num_levels * self.config.level_dim

    def set_active_levels(self, count: int) -> None:
        for plane in self.planes.values():
            plane.set_active_levels(count)

    def forward(self, points: Tensor) -> Tensor:
        """Encode ``points`` [..., 3] -> [..., 3*L*F]."""
        return torch.cat(
            [self.planes[name](points[..., list(axes)]) for name, axes in self.PLANES.items()], dim=-1
        )


class LandmarkHashEncoder(nn.Module):
    """R2-Talker's landmark encoding: query one 3D hash grid at every landmark and concatenate.

    Input [B, ..., K, 3] (for example a window of 5 frames of 68 landmarks)
    -> [B, prod(...) * K * L * F]. The grid is shared by all landmarks, so the
    encoding keeps the landmarks' spatial structure without per-landmark weights.
    """

    def __init__(self, config: HashGridConfig | None = None, backend: HashGridBackend = "auto", bound: float = 1.0):
        super().__init__()
        self.grid = HashGridEncoding(config or HashGridConfig(), backend=backend, bound=bound)

    def output_dim(self, points_per_sample: int) -> int:
        """Feature size for ``points_per_sample`` landmarks (R2-Talker: 5 frames * 68)."""
        return points_per_sample * self.grid.output_dim

    def forward(self, landmarks: Tensor) -> Tensor:
        if landmarks.dim() < 3 or landmarks.shape[-1] != 3:
            raise ValueError(f"expected landmarks of shape [B, ..., K, 3], got {tuple(landmarks.shape)}")
        return self.grid(landmarks).reshape(landmarks.shape[0], -1)
