"""Hash grid: layout, equality with a brute-force reference, gradients, progressive mask, backends."""

import math

import numpy as np
import pytest
import torch

from talkhead_models.components.hashgrid import (
    HASH_PRIMES,
    HashGridConfig,
    HashGridEncoding,
    LandmarkHashEncoder,
    TriPlaneConfig,
    TriPlaneHashGrid,
    level_layouts,
    progressive_level_count,
    resolve_backend,
    tcnn_available,
)

# 3D: level 0 is 4^3 = 64 vertices (dense), level 1 has 7^3 = 343 > 256 entries (hashed).
SMALL_3D = HashGridConfig(input_dim=3, num_levels=4, level_dim=2, base_resolution=4, log2_hashmap_size=8, desired_resolution=16)
# 2D: levels 0-1 dense (16 and 49 vertices), levels 2-3 hashed (100, 256 > 64 entries).
SMALL_2D = HashGridConfig(input_dim=2, num_levels=4, level_dim=3, base_resolution=4, log2_hashmap_size=6, desired_resolution=16)


def reference_corners(points_unit: np.ndarray, config: HashGridConfig):
    """Instant-NGP's lookups, point by point, corner by corner, with Python integers.

    Yields (point, level, table row, weight): the encoding adds weight * table[row] to the point's level features.
    """
    growth = math.exp(math.log(config.desired_resolution / config.base_resolution) / (config.num_levels - 1))
    offset = 0
    for level in range(config.num_levels):
        scale = config.base_resolution * growth**level - 1.0
        resolution = math.ceil(scale) + 1
        dense_size = resolution**config.input_dim
        size = min(-(-dense_size // 8) * 8, 2**config.log2_hashmap_size)
        for p, point in enumerate(points_unit):
            position = [x * scale + 0.5 for x in point]
            cell = [math.floor(x) for x in position]
            fraction = [x - c for x, c in zip(position, cell)]
            for corner in range(2**config.input_dim):
                vertex = [c + ((corner >> d) & 1) for d, c in enumerate(cell)]
                weight = math.prod(f if (corner >> d) & 1 else 1 - f for d, f in enumerate(fraction))
                if dense_size <= size:
                    index = sum(v * resolution**d for d, v in enumerate(vertex))
                else:
                    index = 0
                    for d, v in enumerate(vertex):
                        index ^= (v * HASH_PRIMES[d]) % 2**32
                yield p, level, offset + index % size, weight
        offset += size


def reference_encoding(points_unit: np.ndarray, table: np.ndarray, config: HashGridConfig) -> np.ndarray:
    """Instant-NGP's encoding evaluated point by point, corner by corner (``reference_corners``)."""
    output = np.zeros((len(points_unit), config.num_levels * config.level_dim))
    for p, level, row, weight in reference_corners(points_unit, config):
        output[p, level * config.level_dim : (level + 1) * config.level_dim] += weight * table[row]
    return output


def reference_table_gradient(points_unit: np.ndarray, output_grad: np.ndarray, config: HashGridConfig, entries: int):
    """Gradient of sum(encoding * output_grad) with respect to the table: each lookup adds weight * its output's grad."""
    gradient = np.zeros((entries, config.level_dim))
    for p, level, row, weight in reference_corners(points_unit, config):
        gradient[row] += weight * output_grad[p, level * config.level_dim : (level + 1) * config.level_dim]
    return gradient


def test_level_layout_follows_instant_ngp():
    layouts = level_layouts(HashGridConfig())  # R2-Talker: 16 levels, base 32, 2^16 entries, finest 2048
    assert len(layouts) == 16
    assert layouts[0].resolution == 32 and not layouts[0].hashed and layouts[0].size == 32**3
    assert all(layout.hashed and layout.size == 2**16 for layout in layouts[1:])
    # Finest grid coordinate spans desired_resolution - 1 cells (up to float32 rounding, as in tcnn).
    assert layouts[-1].scale == pytest.approx(2047, abs=0.01)
    assert [layout.offset for layout in layouts] == [sum(l.size for l in layouts[:i]) for i in range(16)]
    small = level_layouts(SMALL_2D)
    assert [layout.hashed for layout in small] == [False, False, True, True]
    assert all(layout.size % 8 == 0 for layout in small)


@pytest.mark.parametrize("config", [SMALL_3D, SMALL_2D], ids=["3d", "2d"])
def test_torch_backend_matches_bruteforce_reference(config):
    torch.manual_seed(0)
    grid = HashGridEncoding(config, backend="torch", bound=2.0)
    with torch.no_grad():
        grid.embeddings.uniform_(-1.0, 1.0)
    points = torch.rand(60, config.input_dim) * 4.0 - 2.0
    encoded = grid(points)
    expected = reference_encoding(
        ((points.double() + 2.0) / 4.0).numpy(), grid.embeddings.detach().double().numpy(), config
    )
    assert encoded.shape == (60, config.output_dim)
    np.testing.assert_allclose(encoded.detach().numpy(), expected, atol=2e-5)


@pytest.mark.parametrize("config", [SMALL_3D, SMALL_2D], ids=["3d", "2d"])
@pytest.mark.parametrize("active", [4, 3], ids=["all-levels", "progressive"])
def test_table_gradient_matches_bruteforce_reference(config, active):
    # Each level is gathered from its own slice of the table, the finest levels left out by the progressive mask
    # included: the gradient must still land on exactly the rows and with the weights of Instant-NGP's lookups.
    torch.manual_seed(5)
    grid = HashGridEncoding(config, backend="torch")
    grid.set_active_levels(active)
    with torch.no_grad():
        grid.embeddings.uniform_(-1.0, 1.0)
    points = torch.rand(50, config.input_dim) * 2 - 1
    output_grad = torch.randn(50, config.output_dim)
    output_grad[:, active * config.level_dim :] = 0.0  # masked levels output zeros whatever their upstream grad
    grid(points).backward(output_grad)
    expected = reference_table_gradient(
        ((points.double() + 1.0) / 2.0).numpy(), output_grad.double().numpy(), config, grid.embeddings.shape[0]
    )
    np.testing.assert_allclose(grid.embeddings.grad.numpy(), expected, atol=1e-5)


def test_gradients_pass_gradcheck_in_float64():
    config = HashGridConfig(input_dim=3, num_levels=2, level_dim=2, base_resolution=2, log2_hashmap_size=4, desired_resolution=4)
    grid = HashGridEncoding(config, backend="torch").double()
    torch.manual_seed(1)
    table = (torch.rand_like(grid.embeddings) * 2 - 1).requires_grad_(True)
    points = (torch.rand(5, 3, dtype=torch.float64) * 1.6 - 0.8).requires_grad_(True)
    assert any(layout.hashed for layout in grid.layouts) and not all(layout.hashed for layout in grid.layouts)

    def encode(points, table):
        return torch.func.functional_call(grid, {"embeddings": table}, (points,))

    assert torch.autograd.gradcheck(encode, (points, table), eps=1e-6, atol=1e-5)


def test_progressive_mask_zeroes_exactly_the_disabled_levels():
    torch.manual_seed(2)
    grid = HashGridEncoding(SMALL_3D, backend="torch")
    with torch.no_grad():
        grid.embeddings.uniform_(-1.0, 1.0)
    points = torch.rand(40, 3) * 2 - 1
    full = grid(points).detach()
    grid.set_active_levels(2)
    assert grid.active_levels == 2
    masked = grid(points)
    enabled = 2 * SMALL_3D.level_dim
    assert torch.equal(masked[:, :enabled], full[:, :enabled])
    assert torch.count_nonzero(masked[:, enabled:]) == 0
    assert torch.count_nonzero(full[:, enabled:]) > 0
    masked.sum().backward()
    per_level_grad = [grid.embeddings.grad[l.offset : l.offset + l.size].abs().sum() for l in grid.layouts]
    assert all(g > 0 for g in per_level_grad[:2]) and all(g == 0 for g in per_level_grad[2:])
    with pytest.raises(ValueError):
        grid.set_active_levels(0)


def test_progressive_schedule_is_r2talkers():
    assert progressive_level_count(0, 16) == 4
    assert progressive_level_count(4999, 16) == 4
    assert progressive_level_count(5000, 16) == 5
    assert progressive_level_count(10 ** 6, 16) == 16


def test_checkpoint_layout_is_one_flat_table():
    grid = HashGridEncoding(SMALL_3D, backend="torch")
    state = grid.state_dict()
    assert list(state) == ["embeddings"]
    total = sum(layout.size for layout in grid.layouts)
    # tiny-cuda-nn's HashGrid holds exactly n_entries * F parameters, in this order.
    assert state["embeddings"].shape == (total, SMALL_3D.level_dim)
    restored = HashGridEncoding(SMALL_3D, backend="torch")
    restored.load_state_dict(state)
    points = torch.rand(8, 3) * 2 - 1
    torch.testing.assert_close(restored(points), grid(points))


@pytest.mark.skipif(tcnn_available(), reason="tinycudann and CUDA are present here")
def test_backend_selection_without_tcnn():
    assert resolve_backend("auto") == "torch"
    with pytest.raises(RuntimeError, match="tinycudann"):
        HashGridEncoding(SMALL_3D, backend="tcnn")


@pytest.mark.gpu
@pytest.mark.skipif(not tcnn_available(), reason="tinycudann with a CUDA device is not available")
def test_tcnn_backend_matches_torch_backend():
    torch.manual_seed(3)
    config = HashGridConfig(input_dim=3, num_levels=16, level_dim=2, base_resolution=16, log2_hashmap_size=14, desired_resolution=512)
    fast = HashGridEncoding(config, backend="tcnn").cuda()
    with torch.no_grad():
        fast.embeddings.uniform_(-1.0, 1.0)
    reference = HashGridEncoding(config, backend="torch").cuda()
    reference.load_state_dict(fast.state_dict())
    points = torch.rand(4096, 3, device="cuda") * 2 - 1
    fast_out, reference_out = fast(points), reference(points)
    torch.testing.assert_close(fast_out, reference_out, atol=1e-4, rtol=1e-4)
    grad = torch.randn_like(fast_out)
    fast_out.backward(grad)
    reference_out.backward(grad)
    torch.testing.assert_close(fast.embeddings.grad, reference.embeddings.grad, atol=1e-3, rtol=1e-3)


def test_triplane_matches_a_bruteforce_lookup_on_each_projection():
    config = TriPlaneConfig(num_levels=3, level_dim=1, base_resolution=4, desired_resolution=16, log2_hashmap_size=6)
    torch.manual_seed(4)
    triplane = TriPlaneHashGrid(config, backend="torch")
    with torch.no_grad():
        for plane in triplane.planes.values():
            plane.embeddings.uniform_(-1.0, 1.0)
    points = torch.rand(10, 3) * 2 - 1
    features = triplane(points)
    assert features.shape == (10, triplane.output_dim) == (10, 9)
    # ER-NeRF's order, written out here rather than read from TriPlaneHashGrid.PLANES: xy, then yz, then xz.
    unit = ((points.double() + 1.0) / 2.0).numpy()
    expected = np.concatenate(
        [
            reference_encoding(unit[:, axes], triplane.planes[name].embeddings.detach().double().numpy(), config.plane_config())
            for name, axes in (("xy", [0, 1]), ("yz", [1, 2]), ("xz", [0, 2]))
        ],
        axis=1,
    )
    np.testing.assert_allclose(features.detach().numpy(), expected, atol=2e-5)


def test_landmark_encoder_concatenates_per_landmark_encodings():
    encoder = LandmarkHashEncoder(SMALL_3D, backend="torch")
    with torch.no_grad():
        encoder.grid.embeddings.uniform_(-1.0, 1.0)
    landmarks = torch.rand(2, 5, 68, 3) * 2 - 1  # a window of 5 frames of 68 landmarks
    features = encoder(landmarks)
    assert features.shape == (2, encoder.output_dim(5 * 68)) == (2, 5 * 68 * 4 * 2)
    per_point = encoder.grid.output_dim
    table = encoder.grid.embeddings.detach().double().numpy()
    # Landmark 2 of frame 0 of sample 1 is the third point of the sample's flattened (frame, landmark) order.
    third = reference_encoding(((landmarks[1, 0, 2:3].double() + 1.0) / 2.0).numpy(), table, SMALL_3D)[0]
    np.testing.assert_allclose(features[1, 2 * per_point : 3 * per_point].detach().numpy(), third, atol=2e-5)
    last = reference_encoding(((landmarks[1, 4, 67:68].double() + 1.0) / 2.0).numpy(), table, SMALL_3D)[0]
    np.testing.assert_allclose(features[1, -per_point:].detach().numpy(), last, atol=2e-5)
