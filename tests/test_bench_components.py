"""benchmarks/bench_components: the hash-grid comparison at one tiny size records what a reader needs."""

from __future__ import annotations

import json

import torch

from benchmarks import bench_components
from talkhead_models.components.hashgrid import HashGridConfig, HashGridEncoding


def test_reference_matches_library() -> None:
    torch.manual_seed(0)
    grid = HashGridEncoding(HashGridConfig(**bench_components.HASH_CONFIG), backend="torch")
    # A table of a realistic trained magnitude, so that a mismatch is not hidden under the 1e-4 initialisation.
    with torch.no_grad():
        grid.embeddings.normal_()
    points = torch.rand(257, 3) * 2.2 - 1.1  # some points outside the box: both sides clamp them alike
    torch.testing.assert_close(bench_components.reference_forward(grid, points), grid(points), rtol=1e-6, atol=1e-6)
    check = bench_components.check_reference(grid, points)
    assert set(check) == {"output_max_abs_diff", "table_grad_max_abs_diff", "points_grad_max_abs_diff"}


def test_hash_grid_comparison_json(tmp_path) -> None:
    threads = torch.get_num_threads()
    output = tmp_path / "components.json"
    try:
        bench_components.main(["--components", "hash_grid", "--hash-sizes", "64", "--repetitions", "2",
                               "--pairs", "2", "--output", str(output)])
    finally:
        torch.set_num_threads(threads)  # the benchmark sets the process-wide count
    result = json.loads(output.read_text())
    assert result["date"].endswith("+00:00")
    assert len(result["commit"]) == 40 or result["commit"] == "unknown"
    assert isinstance(result["tree_dirty"], bool)
    machine = result["machine"]
    assert machine["cpu_model"] and machine["cpu_count"] >= 1 and machine["torch"] == torch.__version__
    assert result["settings"]["threads"] == machine["torch_threads"] == 1
    assert result["settings"]["hash_grid_pairs"] == 2
    (measurement,) = result["hash_grid"][0]["results"]
    assert measurement["points"] == 64
    assert all(value <= 1e-6 for value in measurement["check"].values())
    for kind in ("forward_backward", "forward"):
        timing = measurement[kind]
        for side in ("library", "reference"):
            assert len(timing[side]["times_s"]) == 2
            assert timing[side]["min_s"] <= timing[side]["median_s"] <= timing[side]["max_s"]
        ratio = timing["ratio_reference_over_library"]
        assert len(ratio["ratios"]) == 2 and ratio["low"] <= ratio["median"] <= ratio["high"]
        assert "bootstrap" in ratio["interval"]
