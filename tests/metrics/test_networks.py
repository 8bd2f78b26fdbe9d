"""LPIPS, FID and ACD networks: loading from the weights folder, the distance math, and alignment.

The published weights cannot be downloaded here, so the networks are saved
with random weights under the documented file names (in the layouts of
torchvision, lpips, pytorch-fid and insightface) and loaded back.
"""

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage import data

from talkhead_models.metrics import (FidInceptionV3, IResNet50, LpipsNetwork, WeightsError, acd, align_faces, fid,
                                     frechet_distance, load_arcface, load_fid_inception, load_lpips, lpips)
from talkhead_models.metrics.fid_score import feature_statistics
from talkhead_models.metrics.identity import ARCFACE_TEMPLATE


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    image = torch.from_numpy(data.astronaut()[::4, ::4].copy()).permute(2, 0, 1).float() / 255.0
    return image[None]  # [1, 3, 128, 128]


@pytest.fixture(scope="module")
def lpips_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    network = LpipsNetwork("alex")
    # torchvision's AlexNet file also holds the classifier, which LPIPS ignores.
    backbone = {f"features.{key}": value for key, value in network.features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(4, 9216)
    torch.save(backbone, folder / "alexnet-owt-7be5be79.pth")
    # lpips' linear layers: non-negative 1x1 convolutions behind a dropout (model.0).
    torch.save({f"lin{k}.model.1.weight": torch.rand_like(lin.weight) for k, lin in enumerate(network.lins)},
               folder / "lpips_alex_lin.pth")
    return folder


def test_lpips_loads_the_documented_files(lpips_weights):
    network = load_lpips("alex", lpips_weights)
    saved = torch.load(lpips_weights / "lpips_alex_lin.pth", weights_only=True)
    torch.testing.assert_close(network.lins[2].weight, saved["lin2.model.1.weight"])
    assert not any(parameter.requires_grad for parameter in network.parameters())


def test_lpips_is_zero_for_identical_images_symmetric_and_grows_with_noise(lpips_weights, faces):
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(faces.shape, generator=generator)
    slightly, strongly = (faces + 0.03 * noise).clamp(0, 1), (faces + 0.3 * noise).clamp(0, 1)
    batch = torch.cat([faces, slightly, strongly])
    value = lpips(batch, faces.expand_as(batch), weights=lpips_weights)
    assert value.reference == "reference" and not value.higher_is_better
    zero, small, large = value.per_frame
    assert zero == pytest.approx(0.0, abs=1e-7)
    assert 0.0 < small < large
    reverse = lpips(faces.expand_as(batch), batch, weights=lpips_weights)
    np.testing.assert_allclose(reverse.per_frame, value.per_frame, rtol=1e-5, atol=1e-7)


def test_lpips_rejects_a_file_for_another_network(tmp_path, lpips_weights):
    (tmp_path / "alexnet-owt-7be5be79.pth").write_bytes((lpips_weights / "alexnet-owt-7be5be79.pth").read_bytes())
    torch.save({"lin0.model.1.weight": torch.rand(1, 32, 1, 1)}, tmp_path / "lpips_alex_lin.pth")
    with pytest.raises(WeightsError, match="lpips_alex_lin.pth"):
        load_lpips("alex", tmp_path)


def test_arcface_rejects_a_file_for_another_network(tmp_path):
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "arcface_r50.pth")
    with pytest.raises(WeightsError, match="arcface_r50.pth.*missing"):
        load_arcface(tmp_path)


def test_frechet_distance_of_gaussians_by_hand():
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2 = (1 + 4) + (1 + 1).
    value = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.array([1.0, 2.0]), np.diag([4.0, 9.0]))
    assert value == pytest.approx(7.0, abs=1e-9)
    assert frechet_distance(np.zeros(1), np.eye(1) * 2.0, np.zeros(1), np.eye(1) * 2.0) == pytest.approx(0, abs=1e-12)


def test_frechet_distance_agrees_with_the_scipy_sqrtm_formula():
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(200, 6)), rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    (mu1, sigma1), (mu2, sigma2) = feature_statistics(first), feature_statistics(second)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-8)


def test_fid_with_a_declared_extractor_is_labelled_a_substitute():
    generator = torch.Generator().manual_seed(0)
    dark, bright = torch.rand(40, 3, 8, 8, generator=generator) * 0.5, torch.rand(40, 3, 8, 8, generator=generator)
    mean_colour = lambda frames: frames.mean(dim=(2, 3))  # noqa: E731 - a 3-d feature for the test
    same = fid(dark, dark, extractor=mean_colour, extractor_name="mean colour")
    apart = fid(dark, bright, extractor=mean_colour, extractor_name="mean colour")
    assert same.value == pytest.approx(0.0, abs=1e-9) and apart.value > 0.05
    assert apart.reference == "substitute: Fréchet distance on mean colour features"


def test_fid_inception_loads_pytorch_fid_layout_and_measures(tmp_path, faces):
    torch.manual_seed(0)
    state = FidInceptionV3().state_dict()
    assert {"Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.bn.running_var", "Mixed_7c.branch3x3dbl_3b.conv.weight",
            "fc.weight"} <= set(state)
    assert state["fc.weight"].shape == (1008, 2048)
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    network = load_fid_inception(tmp_path)
    torch.testing.assert_close(network.Mixed_6b.branch7x7_2.conv.weight, state["Mixed_6b.branch7x7_2.conv.weight"])
    generator = torch.Generator().manual_seed(2)
    real = (faces + 0.1 * torch.randn((2, 3, 128, 128), generator=generator)).clamp(0, 1)
    fake = torch.rand((2, 3, 128, 128), generator=generator)
    value = fid(fake, real, weights=tmp_path)
    assert value.reference == "reference" and "2 generated vs 2 real" in value.note
    assert np.isfinite(value.value) and value.value > 0


def test_arcface_alignment_maps_the_landmarks_onto_the_template():
    size = 224
    ramp = torch.arange(size, dtype=torch.float32) / size
    frame = torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size), torch.zeros(size, size)])[None]
    # 68 landmarks whose five ArcFace keypoints are the template scaled by 2 and shifted by (5, 3).
    keypoints = 2.0 * ARCFACE_TEMPLATE + [5.0, 3.0]
    landmarks = np.zeros((1, 68, 2))
    landmarks[0, 36:42], landmarks[0, 42:48] = keypoints[0], keypoints[1]
    landmarks[0, 30], landmarks[0, 48], landmarks[0, 54] = keypoints[2], keypoints[3], keypoints[4]
    face = align_faces(frame, landmarks)[0]
    # Face pixel (u, v) samples the frame at (2u + 5, 2v + 3): the red ramp reads x / size, the green y / size.
    u = torch.arange(112, dtype=torch.float32)
    inside = 2 * u + 5 <= size - 1  # the last columns map past the frame edge
    torch.testing.assert_close(face[0, 50][inside], ((2 * u + 5) / size)[inside], atol=1e-5, rtol=0)
    assert torch.all(face[0, 50][~inside] == 0)
    inside = 2 * u + 3 <= size - 1
    torch.testing.assert_close(face[1, :, 50][inside], ((2 * u + 3) / size)[inside], atol=1e-5, rtol=0)


def test_arcface_loads_insightface_layout_and_measures_identity_distance(tmp_path, faces):
    torch.manual_seed(0)
    state = IResNet50().state_dict()
    assert {"conv1.weight", "prelu.weight", "layer1.0.downsample.0.weight", "layer3.13.bn3.running_mean",
            "fc.weight", "features.running_var"} <= set(state)
    assert state["fc.weight"].shape == (512, 512 * 7 * 7)
    torch.save(state, tmp_path / "arcface_r50.pth")
    network = load_arcface(tmp_path)
    torch.testing.assert_close(network.layer4[2].conv2.weight, state["layer4.2.conv2.weight"])
    crops = torch.nn.functional.interpolate(faces, size=(112, 112), mode="bilinear", align_corners=False)
    other = torch.flip(crops, dims=(2,))
    value = acd(torch.cat([crops, other]), crops, weights=tmp_path)
    assert value.reference == "reference" and value.note == "frames used as face crops"
    assert value.per_frame[0] == pytest.approx(0.0, abs=1e-5)
    assert 0.0 < value.per_frame[1] <= 2.0
