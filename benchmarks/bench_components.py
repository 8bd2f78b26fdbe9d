"""Speed of the neural components: hash grid, Gaussian rasteriser, volume rendering with and without occupancy grid.

Usage: ``python -m benchmarks.bench_components [--threads 1] [--repetitions 7] [--pairs 15] [--output reports/bench/components.json]``
(or ``python benchmarks/bench_components.py``). Writes the machine, the commit, the date and the numbers as JSON.
On a machine with CUDA it also times the GPU backends (tcnn, gsplat) next to the torch paths.

Rules that keep the numbers comparable on a shared machine: one torch thread by default (a second
thread competes with whatever else runs on a 2-core box), at least 7 timed repetitions after a warm-up,
the median with its spread (min, max, quartiles) rather than a single figure, and the hash grid timed
against the per-level torch grid it replaced (:func:`reference_encode`), alternated call by call in one
process on the same inputs, so that drift of the machine hits both sides of every pair alike.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as ``python -m`` does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from talkhead_models.atomic import write_text
from talkhead_models.components.gaussians import gsplat_available, rasterize_gaussians
from talkhead_models.components.hashgrid import (
    HASH_PRIMES,
    HashGridConfig,
    HashGridEncoding,
    LevelLayout,
    tcnn_available,
)
from talkhead_models.components.mlp import MLP
from talkhead_models.components.occupancy import OccupancyGrid, OccupancyGridConfig, composite_marched
from talkhead_models.components.rays import get_rays, intersect_aabb
from talkhead_models.components.volume import render_rays, sample_stratified
from talkhead_models.metrics.speed import device_description
from stages._stage import git_commit

logger = logging.getLogger("benchmarks.bench_components")

HASH_SIZES = (2**12, 2**13, 2**15, 2**18)
"""Batch sizes of the hash-grid comparison: a landmark window up to a full training batch of ray samples."""
HASH_CONFIG = dict(input_dim=3, num_levels=16, level_dim=2, base_resolution=32, log2_hashmap_size=16, desired_resolution=2048)
HASH_CONFIG_TEXT = "3D, 16 levels x 2 features, log2 table 16, base 32, finest 2048"
RASTER_GAUSSIANS = 20_000
RASTER_CPU_TARGET_S = 0.5
MIN_REPETITIONS = 7
MIN_REPETITION_S = 0.2
"""A repetition runs the timed call often enough to last this long: one 2^12-point fwd+bwd takes tens of
milliseconds, where the clock's, the allocator's and the scheduler's jitter would be a large part of one call."""
HASH_PAIRS = 15
"""Alternated pairs per hash-grid measurement: more than the other components' repetitions because the
paired ratio is the figure the issue decides on, and a pair at 2^12..2^15 points costs under a second."""
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def _synchronise(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without a barrier the clock would stop before the work does.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(run: Callable[[], object], device: torch.device, calls: int) -> float:
    """Seconds per call of ``run``, averaged over ``calls`` back-to-back calls."""
    _synchronise(device)
    start = time.perf_counter()
    for _ in range(calls):
        run()
    _synchronise(device)
    return (time.perf_counter() - start) / calls


def calls_per_repetition(runs: list[Callable[[], object]], device: torch.device, min_seconds: float) -> int:
    """How many calls make one repetition last ``min_seconds``, from the slowest of ``runs`` after a warm-up call."""
    for run in runs:
        run()  # warm-up: allocator, lazy initialisation, caches
    slowest = max(_clock(run, device, 1) for run in runs)
    return max(1, int(np.ceil(min_seconds / max(slowest, 1e-9))))


def summary(times: list[float]) -> dict:
    """Median and spread of per-call times in seconds."""
    values = np.asarray(times, np.float64)
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    return {"median_s": float(median), "min_s": float(values.min()), "max_s": float(values.max()),
            "q1_s": float(q1), "q3_s": float(q3), "times_s": [float(value) for value in values]}


def timed(run: Callable[[], object], device: torch.device, repetitions: int = MIN_REPETITIONS,
          min_repetition_s: float = MIN_REPETITION_S) -> dict:
    """Per-call time of ``run`` over ``repetitions`` repetitions after one warm-up call: median and spread."""
    calls = calls_per_repetition([run], device, min_repetition_s)
    _clock(run, device, calls)  # one untimed repetition: the first ones after a size change ran slow
    times = [_clock(run, device, calls) for _ in range(repetitions)]
    return {**summary(times), "repetitions": repetitions, "calls_per_repetition": calls}


def ratio_interval(ratios: np.ndarray, seed: int = 0) -> dict:
    """Median of the per-pair ratios with a percentile-bootstrap interval of that median, resampling pairs."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, ratios.size, size=(BOOTSTRAP_RESAMPLES, ratios.size))
    medians = np.median(ratios[picks], axis=1)
    tail = (1.0 - CONFIDENCE) / 2.0
    low, high = np.quantile(medians, [tail, 1.0 - tail])
    return {"median": float(np.median(ratios)), "low": float(low), "high": float(high), "confidence": CONFIDENCE,
            "interval": f"percentile bootstrap of the median over the {ratios.size} pairs "
                        f"({BOOTSTRAP_RESAMPLES} resamples, seed {seed})",
            "pair_min": float(ratios.min()), "pair_max": float(ratios.max()),
            "ratios": [float(value) for value in ratios]}


def paired_timed(library: Callable[[], object], reference: Callable[[], object], device: torch.device,
                 repetitions: int = MIN_REPETITIONS, min_repetition_s: float = MIN_REPETITION_S) -> dict:
    """Time ``library`` and ``reference`` alternately (A B A B ...) after a warm-up of both.

    Each pair is one repetition of each side, back to back, so a slow spell of the machine lands on both
    halves of a pair; the ratio reference / library per pair is then the comparison, not the two medians.
    """
    calls = calls_per_repetition([library, reference], device, min_repetition_s)
    # One untimed pair: the first repetitions after a change of batch size ran slow (allocator settling).
    _clock(library, device, calls)
    _clock(reference, device, calls)
    library_times, reference_times = [], []
    for _ in range(repetitions):
        library_times.append(_clock(library, device, calls))
        reference_times.append(_clock(reference, device, calls))
    ratios = np.asarray(reference_times) / np.asarray(library_times)
    return {
        "library": summary(library_times),
        "reference": summary(reference_times),
        "ratio_reference_over_library": ratio_interval(ratios),
        "repetitions": repetitions,
        "calls_per_repetition": calls,
        "order": "library then reference in every pair, the pairs back to back",
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device_description("cpu"),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "tcnn_available": tcnn_available(),
        "gsplat_cuda_available": gsplat_available(),
    }
    return info


def _reference_combine(per_axis: list[torch.Tensor], combine) -> torch.Tensor:
    """Outer combination of per-axis [2, N] tensors over the 2^D corners -> [2^D, N] (corner-major)."""
    result = per_axis[0]
    for values in per_axis[1:]:
        result = combine(result.unsqueeze(1), values.unsqueeze(0)).flatten(0, 1)
    return result


def reference_encode(unit_points: torch.Tensor, embeddings: torch.Tensor, layouts: list[LevelLayout],
                     level_dim: int) -> torch.Tensor:
    """The plain per-level torch hash grid: one ``index_select`` per level, tiny-cuda-nn's table layout.

    This is the library's torch path as it was before commit 3bf2b30 gathered every level in one
    ``index_select``, kept here verbatim so that the comparison does not move when the library does.
    """
    num_points, input_dim = unit_points.shape
    neighbour = torch.tensor([[0], [1]], device=unit_points.device)
    axes = unit_points.T  # [D, N]
    level_features = []
    for layout in layouts:
        grid_position = axes * layout.scale + 0.5
        cell = torch.floor(grid_position)
        fraction = grid_position - cell
        vertices = cell.long().unsqueeze(1) + neighbour  # [D, 2, N]
        if layout.hashed:
            contributions = [(vertices[d] * HASH_PRIMES[d]) & 0xFFFFFFFF for d in range(input_dim)]
            index = _reference_combine(contributions, torch.bitwise_xor) & (layout.size - 1)
        else:
            contributions = [vertices[d] * layout.resolution**d for d in range(input_dim)]
            index = _reference_combine(contributions, torch.add) % layout.size
        axis_weights = [torch.stack([1.0 - fraction[d], fraction[d]]) for d in range(input_dim)]
        weights = _reference_combine(axis_weights, torch.mul)  # [2^D, N]
        values = embeddings.index_select(0, (index + layout.offset).flatten()).view(*index.shape, -1)  # [2^D, N, F]
        level_features.append((weights.unsqueeze(-1) * values).sum(0))
    return torch.stack(level_features, dim=1).reshape(num_points, len(layouts) * level_dim)


def reference_forward(grid: HashGridEncoding, points: torch.Tensor) -> torch.Tensor:
    """``grid``'s forward (all levels active) with the per-level reference encoder in place of the library's."""
    unit_points = ((points + grid.bound) / (2 * grid.bound)).clamp(0.0, 1.0)
    return reference_encode(unit_points, grid.embeddings, grid.layouts, grid.config.level_dim)


def check_reference(grid: HashGridEncoding, points: torch.Tensor) -> dict:
    """Outputs and gradients (table and points) of library and reference must agree before either is timed.

    Asserted for the torch backend (the same arithmetic in another order); tcnn's CUDA kernels accumulate in
    another order and precision, so for it the differences are recorded, not asserted.
    """
    results = {}
    for name, encode in (("library", grid), ("reference", lambda x: reference_forward(grid, x))):
        grid.embeddings.grad = None
        inputs = points.detach().clone().requires_grad_(True)
        output = encode(inputs)
        output.sum().backward()
        results[name] = (output.detach(), grid.embeddings.grad.clone(), inputs.grad.clone())
    grid.embeddings.grad = None
    differences = {}
    for index, what in enumerate(("output", "table_grad", "points_grad")):
        library, reference = results["library"][index], results["reference"][index]
        # The table holds values of about 1e-4, so an absolute 1e-6 alone would pass almost anything;
        # the relative tolerance is what makes this a check of the same numbers.
        if grid.backend == "torch":
            torch.testing.assert_close(library, reference, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")
        differences[f"{what}_max_abs_diff"] = float((library - reference).abs().max())
    return differences


def bench_hash_grid(device: torch.device, backend: str, sizes: tuple[int, ...] = HASH_SIZES,
                    repetitions: int = HASH_PAIRS, seed: int = 0) -> dict:
    """fwd+bwd of the library's grid against the per-level reference, alternated, at every batch size.

    fwd+bwd: encode, sum the outputs, backward to the table and to the points (a deformation or
    landmark encoder needs both). The forward alone (no autograd) is timed the same way.
    """
    torch.manual_seed(seed)
    grid = HashGridEncoding(HashGridConfig(**HASH_CONFIG), backend=backend).to(device)
    results = []
    for size in sizes:
        points = (torch.rand(size, 3, device=device) * 2 - 1).requires_grad_(True)
        check = check_reference(grid, points)

        def library_step() -> None:
            grid.embeddings.grad, points.grad = None, None
            grid(points).sum().backward()

        def reference_step() -> None:
            grid.embeddings.grad, points.grad = None, None
            reference_forward(grid, points).sum().backward()

        def library_forward() -> None:
            with torch.no_grad():
                grid(points)

        def reference_forward_only() -> None:
            with torch.no_grad():
                reference_forward(grid, points)

        forward_backward = paired_timed(library_step, reference_step, device, repetitions)
        forward = paired_timed(library_forward, reference_forward_only, device, repetitions)
        ratio = forward_backward["ratio_reference_over_library"]
        logger.info("hash grid %s %s 2^%d points fwd+bwd: library %.4f s, reference %.4f s, "
                    "reference/library %.3f [%.3f, %.3f]", backend, device.type, int(np.log2(size)),
                    forward_backward["library"]["median_s"], forward_backward["reference"]["median_s"],
                    ratio["median"], ratio["low"], ratio["high"])
        results.append({
            "backend": backend,
            "device": device.type,
            "points": size,
            "config": HASH_CONFIG_TEXT,
            "reference": "per-level torch hash grid (one index_select per level, same table): reference_encode",
            "check": check,
            "forward_backward": forward_backward,
            "forward": forward,
            "forward_backward_points_per_s": size / forward_backward["library"]["median_s"],
            "forward_points_per_s": size / forward["library"]["median_s"],
        })
    return {"backend": backend, "device": device.type, "sizes": list(sizes), "loss": "sum of the outputs",
            "gradients": "table and points", "results": results}


def gstalker_init_scene(count: int, width: int, height: int, device: torch.device, seed: int = 0):
    """GSTalker's static initialisation: random Gaussians in a cube of side 2, 3D-GS initial scales and opacity.

    3D-GS initialises each scale to the RMS distance to the 3 nearest neighbours
    and every opacity to 0.1; SH degree 3. The camera at distance 4 frames the cube.
    """
    generator = torch.Generator().manual_seed(seed)
    means = torch.rand(count, 3, generator=generator) * 2 - 1
    nearest = []
    for start in range(0, count, 2048):
        distances = torch.cdist(means[start : start + 2048], means)
        nearest.append(distances.topk(4, largest=False).values[:, 1:].square().mean(-1).sqrt())
    scales = torch.cat(nearest)[:, None].repeat(1, 3)
    quats = torch.randn(count, 4, generator=generator)
    opacities = torch.full((count,), 0.1)
    sh = torch.randn(count, 16, 3, generator=generator) * 0.2
    viewmat = torch.eye(4)
    viewmat[2, 3] = 4.0
    focal = 1.35 * width
    intrinsics = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    tensors = [means, quats, scales, opacities, sh, viewmat, intrinsics]
    return [tensor.to(device) for tensor in tensors]


def bench_rasteriser(device: torch.device, backend: str, size: int, repetitions: int = MIN_REPETITIONS) -> dict:
    means, quats, scales, opacities, sh, viewmat, intrinsics = gstalker_init_scene(RASTER_GAUSSIANS, size, size, device)
    params = [tensor.clone().requires_grad_(True) for tensor in (means, quats, scales, opacities, sh)]

    def render():
        return rasterize_gaussians(*params, viewmat, intrinsics, size, size, sh_degree=3, backend=backend)

    def forward() -> None:
        with torch.no_grad():
            render()

    def forward_backward() -> None:
        for param in params:
            param.grad = None
        output = render()
        (output.image.sum() + output.alpha.sum()).backward()

    forward_timing = timed(forward, device, repetitions)
    training_timing = timed(forward_backward, device, repetitions)
    forward_s, training_s = forward_timing["median_s"], training_timing["median_s"]
    logger.info("rasteriser %s %s %dx%d: forward %.3f s, fwd+bwd %.3f s (medians)", backend, device.type, size, size,
                forward_s, training_s)
    result = {
        "backend": backend,
        "device": device.type,
        "gaussians": RASTER_GAUSSIANS,
        "image": f"{size}x{size}",
        "scene": "GSTalker static init: uniform in a cube of side 2, 3D-GS scales (3-NN) and opacity 0.1, SH degree 3",
        "forward_s": forward_s,
        "forward_backward_s": training_s,
        "forward": forward_timing,
        "forward_backward": training_timing,
    }
    if device.type == "cpu" and size == 128:
        result["target_forward_backward_s"] = RASTER_CPU_TARGET_S
        result["meets_target"] = training_s <= RASTER_CPU_TARGET_S
    return result


class HeadLikeField(torch.nn.Module):
    """A RAD-NeRF-sized field (hash grid + small MLP) whose density is confined to an ellipsoid,
    so that, like a head in its box, most of the volume is empty."""

    def __init__(self) -> None:
        super().__init__()
        self.encoding = HashGridEncoding(
            HashGridConfig(input_dim=3, num_levels=16, level_dim=2, base_resolution=16, log2_hashmap_size=16, desired_resolution=512),
            backend="auto",
        )
        self.mlp = MLP(self.encoding.output_dim, 4, hidden_dim=64, num_layers=3)
        self.register_buffer("radii", torch.tensor([0.7, 0.9, 0.75]))  # about a quarter of the box, like a head

    def density_inside(self, positions: torch.Tensor) -> torch.Tensor:
        return ((positions / self.radii).square().sum(-1) < 1.0).to(positions.dtype)

    def forward(self, positions: torch.Tensor, directions: torch.Tensor):
        output = self.mlp(self.encoding(positions))
        density = torch.nn.functional.softplus(output[..., 0] + 3.0) * 10.0 * self.density_inside(positions)
        return density, torch.sigmoid(output[..., 1:])


def bench_volume_rendering(device: torch.device, image_size: int = 64, num_steps: int = 128,
                           repetitions: int = MIN_REPETITIONS) -> dict:
    """Render one image densely and with the occupancy grid; rays per second for both."""
    torch.manual_seed(0)
    field = HeadLikeField().to(device)
    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], device=device)
    c2w = torch.eye(4, device=device)
    c2w[2, 3] = 3.0  # OpenGL camera on +z looking at the origin
    rays = get_rays(c2w, focal=1.1 * image_size, cx=image_size / 2, cy=image_size / 2, height=image_size, width=image_size)
    near, far, _ = intersect_aabb(rays.origins, rays.directions, aabb)
    grid = OccupancyGrid(aabb, OccupancyGridConfig(resolution=64)).to(device)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(4):
            grid.update(lambda points, condition: field(points, None)[0], conditions=[None], generator=generator)
    num_rays = rays.origins.shape[0]

    def dense() -> None:
        with torch.no_grad():
            t_values, deltas = sample_stratified(near, far, num_steps)
            render_rays(field, rays.origins, rays.directions, t_values, deltas)

    def marched() -> None:
        with torch.no_grad():
            samples = grid.march(rays.origins, rays.directions, near, far, num_steps)
            densities, colours = field(samples.positions, samples.directions)
            composite_marched(samples, densities, colours)

    kept = grid.march(rays.origins, rays.directions, near, far, num_steps).ray_indices.numel()
    dense_timing, marched_timing = timed(dense, device, repetitions), timed(marched, device, repetitions)
    dense_s, marched_s = dense_timing["median_s"], marched_timing["median_s"]
    logger.info("volume rendering %s: dense %.3f s, occupancy grid %.4f s per image (medians)", device.type,
                dense_s, marched_s)
    return {
        "device": device.type,
        "rays": num_rays,
        "steps_per_ray": num_steps,
        "field": "hash grid (16 levels x 2, 2^16) + MLP 64x3, density inside a head-sized ellipsoid",
        "occupied_cell_fraction": grid.occupancy_ratio,
        "samples_evaluated_per_ray_with_grid": kept / num_rays,
        "dense_rays_per_s": num_rays / dense_s,
        "occupancy_grid_rays_per_s": num_rays / marched_s,
        "speedup": dense_s / marched_s,
        "dense": dense_timing,
        "occupancy_grid": marched_timing,
    }


def run(threads: int, repetitions: int = MIN_REPETITIONS, pairs: int = HASH_PAIRS, hash_sizes: tuple[int, ...] = HASH_SIZES,
        components: tuple[str, ...] = ("hash_grid", "rasteriser", "volume_rendering")) -> dict:
    """Time ``components`` on the CPU (and on CUDA where there is one) with ``threads`` torch threads."""
    if min(repetitions, pairs) < 2:
        raise ValueError(f"need at least 2 repetitions and pairs for a spread, got {repetitions} and {pairs}")
    if min(repetitions, pairs) < MIN_REPETITIONS:
        logger.warning("%d repetitions, %d pairs: fewer than the %d a recorded benchmark uses", repetitions, pairs,
                       MIN_REPETITIONS)
    torch.set_num_threads(threads)
    started = time.perf_counter()
    cpu = torch.device("cpu")
    commit = git_commit(Path(__file__).resolve().parents[1])
    results: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit.removesuffix("-dirty"),
        # Tracked files differing from the commit: the numbers are then of code that no commit holds.
        "tree_dirty": commit.endswith("-dirty"),
        "machine": machine_info(),
        "settings": {
            "threads": threads,
            "repetitions": repetitions,
            "min_repetition_s": MIN_REPETITION_S,
            "hash_grid_pairs": pairs,
            "warm_up": "one call of each timed function (each side of a pair), then one untimed repetition "
                       "(one untimed pair) before the timed ones",
            "timing": "wall time (time.perf_counter) per call; a repetition is calls_per_repetition calls back to "
                      "back, so that it lasts at least min_repetition_s; spread = min, max and quartiles of the "
                      "repetitions",
            "problem_sizes": "as in the previous version of this benchmark (none reduced to fit the run time)",
        },
    }
    if "hash_grid" in components:
        results["hash_grid"] = [bench_hash_grid(cpu, "torch", hash_sizes, pairs)]
    if "rasteriser" in components:
        results["rasteriser"] = [bench_rasteriser(cpu, "torch", 128, repetitions)]
    if "volume_rendering" in components:
        results["volume_rendering"] = [bench_volume_rendering(cpu, repetitions=repetitions)]
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        results["machine"]["cuda_description"] = device_description(cuda)
        if "hash_grid" in components:
            results["hash_grid"].append(bench_hash_grid(cuda, "torch", hash_sizes, pairs))
            if tcnn_available():
                results["hash_grid"].append(bench_hash_grid(cuda, "tcnn", hash_sizes, pairs))
        if "rasteriser" in components:
            results["rasteriser"].append(bench_rasteriser(cuda, "torch", 512, repetitions))
            if gsplat_available():
                results["rasteriser"].append(bench_rasteriser(cuda, "gsplat", 512, repetitions))
        if "volume_rendering" in components:
            results["volume_rendering"].append(bench_volume_rendering(cuda, repetitions=repetitions))
    else:
        results["gpu"] = "no CUDA device on this machine: GPU backends (tcnn, gsplat) not measured"
    results["wall_s"] = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: a second thread shares a 2-core machine with the rest)")
    parser.add_argument("--repetitions", type=int, default=MIN_REPETITIONS,
                        help=f"timed repetitions per measurement (default and recorded minimum {MIN_REPETITIONS})")
    parser.add_argument("--pairs", type=int, default=HASH_PAIRS,
                        help=f"alternated library/reference pairs per hash-grid measurement (default {HASH_PAIRS})")
    parser.add_argument("--hash-sizes", type=int, nargs="+", default=list(HASH_SIZES),
                        help="hash-grid batch sizes in points")
    parser.add_argument("--components", nargs="+", default=["hash_grid", "rasteriser", "volume_rendering"],
                        choices=["hash_grid", "rasteriser", "volume_rendering"])
    parser.add_argument("--output", type=Path, default=Path("reports/bench/components.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = run(args.threads, args.repetitions, args.pairs, tuple(args.hash_sizes), tuple(args.components))
    write_text(args.output, json.dumps(results, indent=2) + "\n")
    logger.info("wrote %s in %.0f s", args.output, results["wall_s"])


if __name__ == "__main__":
    main()
