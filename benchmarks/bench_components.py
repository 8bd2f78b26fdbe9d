"""Speed of the neural components: hash grid, Gaussian rasteriser, volume rendering with and without occupancy grid.

Usage: ``python -m benchmarks.bench_components [--threads 2] [--output reports/bench/components.json]``
(or ``python benchmarks/bench_components.py``). Writes the machine, the date and the numbers as JSON.
On a machine with CUDA it also times the GPU backends (tcnn, gsplat) next to the torch paths.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as ``python -m`` does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from talkhead_models.atomic import write_text
from talkhead_models.components.gaussians import gsplat_available, rasterize_gaussians
from talkhead_models.components.hashgrid import HashGridConfig, HashGridEncoding, tcnn_available
from talkhead_models.components.mlp import MLP
from talkhead_models.components.occupancy import OccupancyGrid, OccupancyGridConfig, composite_marched
from talkhead_models.components.rays import get_rays, intersect_aabb
from talkhead_models.components.volume import render_rays, sample_stratified

logger = logging.getLogger("benchmarks.bench_components")

HASH_POINTS = 2**18
RASTER_GAUSSIANS = 20_000
RASTER_CPU_TARGET_S = 0.5


def timed(run: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """Median wall time of ``run`` over ``repeats`` calls after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "tcnn_available": tcnn_available(),
        "gsplat_cuda_available": gsplat_available(),
    }
    return info


def bench_hash_grid(device: torch.device, backend: str) -> dict:
    """R2-Talker-sized grid (3D, 16 levels x 2 features, 2^16 entries per level) on 2^18 points."""
    config = HashGridConfig(input_dim=3, num_levels=16, level_dim=2, base_resolution=32, log2_hashmap_size=16, desired_resolution=2048)
    grid = HashGridEncoding(config, backend=backend).to(device)
    points = torch.rand(HASH_POINTS, 3, device=device) * 2 - 1

    def forward() -> None:
        with torch.no_grad():
            grid(points)

    def forward_backward() -> None:
        grid.embeddings.grad = None
        grid(points).square().sum().backward()

    forward_s = timed(forward, device)
    training_s = timed(forward_backward, device)
    return {
        "backend": backend,
        "device": device.type,
        "points": HASH_POINTS,
        "config": "3D, 16 levels x 2 features, log2 table 16, base 32, finest 2048",
        "forward_points_per_s": HASH_POINTS / forward_s,
        "forward_backward_points_per_s": HASH_POINTS / training_s,
    }


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


def bench_rasteriser(device: torch.device, backend: str, size: int) -> dict:
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

    forward_s = timed(forward, device)
    training_s = timed(forward_backward, device)
    result = {
        "backend": backend,
        "device": device.type,
        "gaussians": RASTER_GAUSSIANS,
        "image": f"{size}x{size}",
        "scene": "GSTalker static init: uniform in a cube of side 2, 3D-GS scales (3-NN) and opacity 0.1, SH degree 3",
        "forward_s": forward_s,
        "forward_backward_s": training_s,
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


def bench_volume_rendering(device: torch.device, image_size: int = 64, num_steps: int = 128) -> dict:
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
    dense_s, marched_s = timed(dense, device), timed(marched, device)
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
    }


def run(threads: int) -> dict:
    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    results: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "hash_grid": [bench_hash_grid(cpu, "torch")],
        "rasteriser": [bench_rasteriser(cpu, "torch", 128)],
        "volume_rendering": [bench_volume_rendering(cpu)],
    }
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        results["hash_grid"].append(bench_hash_grid(cuda, "torch"))
        if tcnn_available():
            results["hash_grid"].append(bench_hash_grid(cuda, "tcnn"))
        results["rasteriser"].append(bench_rasteriser(cuda, "torch", 512))
        if gsplat_available():
            results["rasteriser"].append(bench_rasteriser(cuda, "gsplat", 512))
        results["volume_rendering"].append(bench_volume_rendering(cuda))
    else:
        results["gpu"] = "no CUDA device on this machine: GPU backends (tcnn, gsplat) not measured"
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    parser.add_argument("--output", type=Path, default=Path("reports/bench/components.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = run(args.threads)
    write_text(args.output, json.dumps(results, indent=2) + "\n")
    logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
