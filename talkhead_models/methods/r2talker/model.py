"""The trained R2-Talker model of one identity and its renderer (the evaluation's ``TalkingHead``).

A frame is composited as RAD-NeRF does: the head NeRF over the torso net's
layer over the static background ``bc.jpg``::

    image = head + (1 - head_opacity) * (torso_rgb * torso_alpha + (1 - torso_alpha) * bc)

Only rays that cross the head box are marched and only pixels of the torso
region (the union of the training frames' neck and torso masks) evaluate the
torso net; everything else is the background.

At test time the condition comes from audio: the audio-to-landmark generator
(``pretrained["audio2motion"]``) turns the driving audio features into 68
landmarks in the canonical face frame, the frame the training landmarks were
brought into, so self- and cross-driven audio drive the model alike. The
audio baseline reads the driving audio features directly.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from talkhead_models.components.occupancy import OccupancyGrid, OccupancyGridConfig
from talkhead_models.config import from_dict
from talkhead_models.data.identity_reader import IdentityReader, TrackedCameras
from talkhead_models.methods.base import Driving, model_dir_file
from talkhead_models.methods.r2talker.config import R2TalkerConfig
from talkhead_models.components.backends import resolve_device
from talkhead_models.components.schedule import window_indices
from talkhead_models.methods.r2talker.data import IdentityData, SceneFrame, features_audio_config
from talkhead_models.methods.r2talker.fields import HeadField, TorsoField
from talkhead_models.methods.r2talker.render import HeadRender, render_head

if TYPE_CHECKING:  # the corpus-level models are imported only when a head is loaded
    from talkhead_models.pretrained.audio2motion import MotionAdaptation

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"


class R2TalkerModel(nn.Module):
    """Head field, torso field, occupancy grid and the scene geometry they live in."""

    def __init__(self, cfg: R2TalkerConfig, box: np.ndarray, image_size: int, audio_feature_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.image_size = image_size
        self.head = HeadField(cfg, audio_feature_dim)
        self.torso = TorsoField(cfg)
        self.grid = OccupancyGrid(torch.as_tensor(box, dtype=torch.float32), OccupancyGridConfig(
            resolution=cfg.occupancy_resolution, density_threshold=cfg.density_threshold))
        self.register_buffer("box", torch.as_tensor(box, dtype=torch.float32))
        # Cells the occupancy grid may mark occupied: the visual hull of the training masks with ``visual_hull``
        # (a demo aid), every cell without it (torch-ngp).
        self.register_buffer("hull", torch.ones(cfg.occupancy_resolution ** 3, dtype=torch.bool))
        self.register_buffer("torso_region", torch.zeros(image_size * image_size, dtype=torch.bool))
        self.register_buffer("torso_trained", torch.zeros((), dtype=torch.bool))

    def set_progress(self, iteration: int) -> int:
        """Enable the positional levels of the coarse-to-fine schedule at ``iteration``; returns their count."""
        levels = self.cfg.position_levels
        if self.cfg.progressive:
            from talkhead_models.components.hashgrid import progressive_level_count

            levels = progressive_level_count(iteration, levels, self.cfg.progressive_initial_levels,
                                             self.cfg.levels_per_step())
        self.head.position.set_active_levels(levels)
        return levels

    def resized(self, size: int) -> R2TalkerModel:
        """A copy that renders ``size`` x ``size`` frames of the same cameras, their intrinsics scaled by
        ``size / image_size`` (pixel centres sit at +0.5, so the scaling is exact): the fields are continuous
        in space, and only the torso's image-space region is resampled (nearest). The paper reports its
        speed at 450 x 450, whatever the resolution the identity was processed at."""
        if size < 1:
            raise ValueError(f"image size must be positive, got {size}")
        resized = copy.deepcopy(self)
        resized.image_size = size
        region = self.torso_region.view(1, 1, self.image_size, self.image_size).float()
        region = torch.nn.functional.interpolate(region, size=(size, size), mode="nearest")
        resized.torso_region = region.view(-1) > 0.5
        return resized

    def render_head(self, condition: Tensor, c2w: Tensor, intrinsics: tuple[float, float, float], pixels: Tensor,
                    perturb: bool = False, generator: torch.Generator | None = None,
                    distortion: bool = False, chunk: int | None = None) -> HeadRender:
        """``chunk``: steps composited per field call (default ``termination_chunk``); training passes the whole
        march, since one call per frame costs a third of a chunked one on a CPU and its rays' sample budget
        already bounds the work that early termination would save."""
        cfg = self.cfg
        return render_head(lambda p, d: self.head(p, d, condition), self.grid, c2w, *intrinsics, self.image_size,
                           pixels, self.box, cfg.march_steps, chunk or cfg.termination_chunk, cfg.min_transmittance,
                           perturb, generator, distortion, cfg.max_samples)

    def torso_layer(self, pixels: Tensor, anchors: Tensor, background: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Background [R, 3] with the torso composited over it at ``pixels`` [R]; also alpha and deformation."""
        size = self.image_size
        xy = torch.stack([pixels % size, torch.div(pixels, size, rounding_mode="floor")], -1).to(background.dtype)
        alpha, rgb, offset = self.torso((xy + 0.5) / size * 2.0 - 1.0, anchors)
        return rgb * alpha[:, None] + (1.0 - alpha[:, None]) * background, alpha, offset

    @torch.no_grad()
    def render_frame(self, condition: Tensor, c2w: Tensor, intrinsics: tuple[float, float, float],
                     background: Tensor, head_background: Tensor | None = None) -> Tensor:
        """[H, W, 3] frame in [0, 1]. ``background`` [H*W, 3] is bc.jpg; ``head_background`` (a frame's own
        torso over bc, the head stage's backdrop) replaces the torso net when given."""
        size = self.image_size
        pixels = torch.arange(size * size, device=background.device)
        head = self.render_head(condition, c2w, intrinsics, pixels)
        if head_background is not None:
            backdrop = head_background
        else:
            backdrop = background.clone()
            if bool(self.torso_trained):
                region = self.torso_region & (head.opacity < 1.0 - self.cfg.min_transmittance)
                index = region.nonzero().squeeze(-1)
                if index.numel():
                    anchors = self.torso.anchor_pixels(c2w, *intrinsics, size)
                    backdrop[index] = self.torso_layer(index, anchors, background[index])[0]
        image = head.color + (1.0 - head.opacity[:, None]) * backdrop
        return image.clamp(0.0, 1.0).view(size, size, 3)


def save_model(path: Path, model: R2TalkerModel, scene: SceneFrame, neutral: np.ndarray | None,
               extra: Mapping[str, Any]) -> None:
    """State dict and plain config/metadata: loadable with ``torch.load(weights_only=True)``."""
    record = {
        "config": asdict(model.cfg), "state_dict": model.state_dict(),
        "scene": {"centre": scene.centre.tolist(), "scale": scene.scale, "box": scene.box.tolist()},
        "neutral": None if neutral is None else neutral.tolist(), "image_size": model.image_size,
        "audio_feature_dim": model.head.audio_net.convolutions[0].in_channels
        if model.cfg.condition == "audio" else None,
        **dict(extra),
    }
    torch.save(record, path)


def load_record(path: Path, device: torch.device) -> tuple[R2TalkerModel, SceneFrame, dict]:
    record = torch.load(path, map_location=device, weights_only=True)
    cfg = from_dict(R2TalkerConfig, record["config"], where="r2talker (checkpoint)")
    scene = SceneFrame(centre=np.asarray(record["scene"]["centre"]), scale=float(record["scene"]["scale"]),
                       box=np.asarray(record["scene"]["box"]))
    model = R2TalkerModel(cfg, scene.box, int(record["image_size"]), record.get("audio_feature_dim"))
    model.load_state_dict(record["state_dict"])
    return model.to(device).eval(), scene, record


class R2TalkerHead:
    """A trained model of one identity driven by audio (the evaluation's ``TalkingHead``).

    After each ``render`` call, ``timings`` holds the supplement's per-module
    times (Table 5) in milliseconds per frame: audio features (the driving
    audio's features recomputed from the waveform), audio to landmarks
    (the motion generator) and rendering.
    """

    def __init__(self, model: R2TalkerModel, scene: SceneFrame, cameras: TrackedCameras, background: np.ndarray,
                 device: torch.device, audio2motion: tuple[Any, dict] | None = None,
                 neutral: np.ndarray | None = None, own_speaker_mean: Tensor | None = None,
                 audio_config: Any = None, identity: str = "",
                 adaptation: MotionAdaptation | None = None) -> None:
        self.model, self.scene, self.cameras, self.device = model, scene, cameras, device
        self.cfg: R2TalkerConfig = model.cfg
        self.image_size = model.image_size
        self.background = torch.as_tensor(background.reshape(-1, 3), dtype=torch.float32, device=device)
        self.audio2motion, self.neutral = audio2motion, neutral
        self.own_speaker_mean, self.audio_config, self.identity = own_speaker_mean, audio_config, identity
        self.adaptation = adaptation  # the face's MotionAdaptation, None = the generator's output as it is
        self.timings: dict[str, float] = {}

    def _camera(self, index: int) -> Tensor:
        if not self.cameras.has(index):
            raise ValueError(f"frame {index} of {self.identity} has no tracked camera; re-run the track stage")
        return torch.as_tensor(self.scene.c2w(self.cameras.c2w[index]), dtype=torch.float32, device=self.device)

    def _feature_seconds(self, driving: Driving) -> float:
        """Wall time of computing the driving audio's features from its waveform (timing only)."""
        if self.audio_config is None:
            return 0.0
        from talkhead_models.preprocess.audio_features import waveform_features

        started = time.perf_counter()
        try:
            waveform_features(driving.audio, driving.num_frames, self.audio_config)
        except Exception as error:  # noqa: BLE001 - timing is best effort (e.g. HuBERT weights absent)
            log.debug("audio feature timing skipped: %s", error)
            return 0.0
        return time.perf_counter() - started

    def _inputs(self, driving: Driving) -> tuple[Tensor, float]:
        """Condition inputs of every driving frame and the seconds the motion generator took."""
        n = driving.num_frames
        frames = np.arange(n)
        first, last = np.zeros(n, np.int64), np.full(n, n - 1, np.int64)
        if self.cfg.condition == "audio":
            features = self._features(driving, self.cfg.audio_kind)
            index = window_indices(frames, self.cfg.audio_attention_window, first, last)
            return torch.as_tensor(features[index], dtype=torch.float32, device=self.device), 0.0
        if self.audio2motion is None:
            raise RuntimeError("R2-Talker needs the audio2motion model (pretrained['audio2motion'])")
        from talkhead_models.pretrained.audio2motion import predict_landmarks, speaker_mean

        generator, generator_cfg = self.audio2motion
        features = self._features(driving, generator_cfg.get("feature_kind", "mel"))
        started = time.perf_counter()
        own_voice = driving.audio_identity in ("", driving.identity) and self.own_speaker_mean is not None
        mean = self.own_speaker_mean if own_voice else speaker_mean(features, generator_cfg.get("pitch_column", -1))
        landmarks = predict_landmarks(generator, features, mean, self.neutral, self.adaptation)  # [n, 68, 3]
        seconds = time.perf_counter() - started
        index = window_indices(frames, self.cfg.landmark_window, first, last)
        return torch.as_tensor(landmarks[index], dtype=torch.float32, device=self.device), seconds

    @staticmethod
    def _features(driving: Driving, kind: str) -> np.ndarray:
        if kind not in driving.audio_features:
            raise ValueError(f"the driving signal has {sorted(driving.audio_features)} audio features but the model "
                             f"needs {kind!r}; add {kind} to audio.extra_kinds")
        return np.asarray(driving.audio_features[kind], np.float32)

    def render(self, driving: Driving) -> Iterator[np.ndarray]:
        feature_seconds = self._feature_seconds(driving)
        inputs, motion_seconds = self._inputs(driving)
        eye = torch.as_tensor(np.asarray(driving.eye, np.float32), device=self.device)
        intrinsics = (self.cameras.focal, self.cameras.cx, self.cameras.cy)
        render_seconds = 0.0
        with torch.no_grad():
            for i, index in enumerate(driving.frame_indices):
                started = time.perf_counter()
                condition = self.model.head.frame_conditions(inputs[i:i + 1], eye[i:i + 1])[0]
                image = self.model.render_frame(condition, self._camera(int(index)), intrinsics, self.background)
                frame = (image.cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
                render_seconds += time.perf_counter() - started
                yield frame
        n = max(driving.num_frames, 1)
        self.timings = {"frames": float(driving.num_frames), "audio_features_ms": 1e3 * feature_seconds / n,
                        "audio_to_landmarks_ms": 1e3 * motion_seconds / n, "rendering_ms": 1e3 * render_seconds / n,
                        "total_ms": 1e3 * (feature_seconds + motion_seconds + render_seconds) / n}


def load_r2talker(cfg: R2TalkerConfig, identity_root: Path, pretrained: Mapping[str, Path],
                  model_dir: Path) -> R2TalkerHead:
    """The trained model in ``model_dir`` with the identity's cameras and background."""
    device = resolve_device(cfg.device, "r2talker")
    model, scene, record = load_record(model_dir_file(model_dir, MODEL_FILE), device)
    from talkhead_models.preprocess.frames import read_image

    reader = IdentityReader(identity_root)
    background = read_image(reader.layout.path("background")).astype(np.float32) / 255.0
    audio2motion = neutral = own_mean = adaptation = None
    if model.cfg.condition == "landmarks":
        if "audio2motion" not in pretrained:
            raise FileNotFoundError("R2-Talker renders from landmarks predicted from audio: it needs the "
                                    "audio2motion model (run `dvc repro pretrain_audio2motion`)")
        from talkhead_models.pretrained.audio2motion import load_model, speaker_mean

        audio2motion = load_model(Path(pretrained["audio2motion"]) / "model.pt", device=str(device))
        neutral = np.asarray(record["neutral"], np.float32)
        kind = audio2motion[1].get("feature_kind", "mel")
        features = reader.audio_features(kind)
        # The voice's mean over the training frames only: the test audio stays unseen until it drives the head.
        own_mean = speaker_mean(features[reader.training_frames()], audio2motion[1].get("pitch_column", -1))
        if cfg.motion_adaptation:  # a test-time switch: the config the model is loaded with decides
            adaptation = face_adaptation(reader, audio2motion[0], features, own_mean, neutral)
    head = R2TalkerHead(model, scene, reader.cameras(), background, device, audio2motion, neutral, own_mean,
                        features_audio_config(reader.layout), reader.root.name, adaptation)
    return head


def face_adaptation(reader: IdentityReader, generator: nn.Module, features: np.ndarray, own_mean: Tensor,
                    neutral: np.ndarray) -> MotionAdaptation:
    """The identity's ``MotionAdaptation``: the generator's output on its own recordings against its tracked
    canonical landmarks, over the training frames only (the validation frames stay unseen)."""
    from talkhead_models.pretrained.audio2motion import adapt_to_face
    from talkhead_models.pretrained.canonical import MOUTH
    from talkhead_models.pretrained.datasets import load_identity

    canonical = load_identity(reader.layout).canonical
    recordings = [(int(row.first_frame), int(row.last_frame) + 1) for row in reader.clips().itertuples(index=False)]
    adaptation = adapt_to_face(generator, features, own_mean, neutral, canonical, recordings,
                               reader.training_frames())
    mouth = adaptation.gain[MOUTH]
    log.info("%s: audio-to-landmark output adapted to the face on %d training frames (mouth gain x %.2f, "
             "y %.2f, z %.2f)", reader.root.name, adaptation.frames, *mouth.mean(0).tolist())
    return adaptation


__all__ = ["IdentityData", "R2TalkerHead", "R2TalkerModel", "load_r2talker", "save_model"]
