"""A trained GSTalker model as a :class:`~talkhead_models.methods.base.TalkingHead`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch

from talkhead_models.methods.base import Driving, model_dir_file
from talkhead_models.methods.gstalker.config import GSTalkerConfig
from talkhead_models.methods.gstalker.model import FrameCondition, GSTalkerModel, compose
from talkhead_models.methods.gstalker.motion import MotionFeatures, motion_from_state
from talkhead_models.methods.gstalker.scene import IdentityScene
from talkhead_models.checkpoints import CHECKPOINT_FILE
from talkhead_models.components.backends import resolve_device
from talkhead_models.methods.gstalker.trainer import load_checkpoint, model_from_checkpoint

log = logging.getLogger(__name__)


class GSTalkerHead:
    """Renders the identity's frames at the driving's cameras, deformed by the driving audio and eye feature.

    The spatial features of the canonical Gaussians do not depend on the
    frame, so they are computed once here; per frame only the audio
    smoother, the two small decoders and the rasteriser run.
    """

    def __init__(self, model: GSTalkerModel, scene: IdentityScene, deform: bool, device: torch.device,
                 motion: MotionFeatures | None = None) -> None:
        self.model = model.eval()
        self.motion = motion
        self.scene = scene
        self.deform = deform
        self.device = device
        self.image_size = scene.image_size
        self.intrinsics = scene.intrinsics.matrix(self.image_size).to(device)
        self.background = scene.background(self.image_size).to(device)
        with torch.no_grad():
            self.head_spatial = model.head_deformation.spatial(model.head.params["means"])
            self.torso_spatial = model.torso_deformation.spatial(model.torso.params["means"])

    def _features(self, driving: Driving) -> np.ndarray:
        kind = self.scene.audio_feature
        if self.motion is not None:
            source = self.motion.kind
            if source not in driving.audio_features:
                raise ValueError(f"GSTalker of {self.scene.reader.root.name} reads audio-to-motion features computed "
                                 f"from {source!r} audio features, but the driving signal has "
                                 f"{sorted(driving.audio_features)}; add {source} to audio.extra_kinds")
            own_voice = driving.audio_identity in ("", driving.identity)
            return self.motion.recording(driving.audio_features[source], own_voice)
        if kind not in driving.audio_features:
            raise ValueError(f"GSTalker of {self.scene.reader.root.name} was trained on {kind!r} audio features but "
                             f"the driving signal has {sorted(driving.audio_features)}; add {kind} to audio.extra_kinds "
                             f"(or retrain with gstalker.audio_feature set to one of the audio stage's kinds)")
        features = np.asarray(driving.audio_features[kind], dtype=np.float32)
        if features.shape[1:] != self.model.feature_shape:
            raise ValueError(f"driving {kind} features have windows {features.shape[1:]}, the model was trained on "
                             f"{self.model.feature_shape}; re-run the audio stage with the training settings")
        return features

    @torch.no_grad()
    def render(self, driving: Driving) -> Iterator[np.ndarray]:
        features = self._features(driving)
        for i, index in enumerate(driving.frame_indices):
            index = int(index)
            if not 0 <= index < len(self.scene.c2w):
                raise IndexError(f"driving frame {index} is outside {self.scene.reader.root.name}'s "
                                 f"{len(self.scene.c2w)} processed frames")
            condition = FrameCondition(
                c2w=torch.from_numpy(self.scene.c2w[index]).to(self.device),
                audio=torch.from_numpy(features[i]).to(self.device),
                eye=torch.tensor([float(driving.eye[i])], device=self.device),
                pose=torch.from_numpy(self.scene.raw_poses[index]).to(self.device),
            )
            head = self.model.render_part("head", condition, self.intrinsics, self.image_size, self.deform,
                                          self.head_spatial)
            torso = self.model.render_part("torso", condition, self.intrinsics, self.image_size, self.deform,
                                           self.torso_spatial)
            image = compose(head, torso, self.background).clamp(0.0, 1.0)
            yield (image * 255.0).round().to(torch.uint8).cpu().numpy()


def load(cfg: GSTalkerConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path) -> GSTalkerHead:
    """The trained model in ``model_dir`` (its ``checkpoint.pt``) on ``identity_root``'s cameras and background."""
    checkpoint = load_checkpoint(model_dir_file(model_dir, CHECKPOINT_FILE))
    device = resolve_device(cfg.device, "gstalker")
    meta = checkpoint["meta"]
    scene = IdentityScene(identity_root, cfg.scene_scale, str(meta["feature_kind"]))
    model = model_from_checkpoint(cfg, checkpoint).to_device(device)
    motion = motion_from_state(checkpoint["motion"], pretrained, device) if "motion" in checkpoint else None
    deform = bool(meta["deformed"])
    log.info("gstalker@%s: %d head + %d torso Gaussians after %d iterations", meta["identity"], model.head.count,
             model.torso.count, int(checkpoint["step"]))
    return GSTalkerHead(model, scene, deform, device, motion)
