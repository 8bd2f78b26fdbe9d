"""A trained JEAN model driven by two sources: audio (lips) and an expression-source video of the same person.

Per driving frame: e_a from the driving audio's feature windows (AudioNet
over each of ``audio_attention_frames`` neighbouring frames, then
AudioAttNet), e_e from the expression-source frames (``Driving.expression_frames``:
their per-frame expression inputs, encoded by the frozen expression
transformer over the source's own sequence, no DTW), the camera of the
driving frame, and the head composited over the backdrop (``backdrop``:
white as the paper renders, or the torso and background of the training
frame with the nearest head pose).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.nn import functional as F

from talkhead_models.components.scene import SceneFrame
from talkhead_models.config import from_dict
from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.methods.base import Driving, UnsupportedDriving, model_dir_file
from talkhead_models.methods.jean.config import JeanConfig
from talkhead_models.components.backends import resolve_device
from talkhead_models.components.schedule import window_indices
from talkhead_models.methods.jean.data import backdrop, expression_inputs
from talkhead_models.methods.jean.model import MODEL_FILE, JeanModel, render_frame
from talkhead_models.methods.jean.trainer import Normaliser
from talkhead_models.preprocess.cameras import pose_distance
from talkhead_models.preprocess.frames import read_image

log = logging.getLogger(__name__)


class JeanHead:
    """The evaluation's ``TalkingHead`` for one identity's JEAN model."""

    def __init__(self, cfg: JeanConfig, model: JeanModel, record: Mapping[str, Any], reader: IdentityReader,
                 expression: np.ndarray | None, transformer: Any, device: torch.device) -> None:
        self.cfg, self.model, self.reader, self.device = cfg, model, reader, device
        self.scene = SceneFrame.from_dict(record["scene"])
        self.image_size = int(record["image_size"])
        self.render_size = int(record["render_size"])
        self.cameras = reader.cameras()
        self.expression = expression  # [N, E] normalised expression inputs of every frame of the identity
        self.transformer = transformer
        self.training_frames = np.asarray(record["training_frames"], np.int64)
        self.background = read_image(reader.layout.path("background")).astype(np.float32) / 255.0
        self._backdrops: dict[int, np.ndarray] = {}
        self.timings: dict[str, float] = {}

    def _audio_windows(self, driving: Driving) -> torch.Tensor | None:
        if self.model.audio_net is None:
            return None
        features = driving.audio_features.get(self.cfg.audio_feature)
        if features is None:
            raise UnsupportedDriving(f"JEAN reads {self.cfg.audio_feature} audio features; the driving has "
                                     f"{sorted(driving.audio_features)}")
        n = driving.num_frames
        index = window_indices(np.arange(n), self.cfg.audio_attention_frames, np.zeros(n, np.int64),
                               np.full(n, n - 1, np.int64))
        return torch.as_tensor(np.asarray(features, np.float32)[index], device=self.device)

    def _expression_inputs(self, driving: Driving) -> torch.Tensor | None:
        if self.model.expression_map is None:
            return None
        if driving.expression_frames is None:
            raise UnsupportedDriving("JEAN needs an expression-source video (Driving.expression_frames)")
        values = self.expression[np.asarray(driving.expression_frames, np.int64)]
        if self.transformer is not None:
            from talkhead_models.methods.jean.transformer import expression_codes

            values = expression_codes(self.transformer, values, window=self.cfg.transformer_window)
        return torch.as_tensor(np.asarray(values, np.float32), device=self.device)

    def _backdrop(self, index: int) -> np.ndarray:
        """[H, W, 3] in [0, 1] behind the head of driving frame ``index``."""
        if self.cfg.backdrop == "white":
            return np.ones((self.image_size, self.image_size, 3), np.float32)
        distances = pose_distance(self.cameras.c2w[index], self.cameras.c2w[self.training_frames], 0.1)
        nearest = int(self.training_frames[int(np.argmin(distances))])
        if nearest not in self._backdrops:
            if len(self._backdrops) > 64:
                self._backdrops.clear()
            self._backdrops[nearest] = backdrop(self.reader, nearest, self.background)
        return self._backdrops[nearest]

    def render(self, driving: Driving) -> Iterator[np.ndarray]:
        started = time.perf_counter()
        with torch.no_grad():
            audio = self._audio_windows(driving)
            expression = self._expression_inputs(driving)
            conditions = self.model.condition(audio, expression)
        condition_seconds = time.perf_counter() - started
        render_seconds = 0.0
        for number, index in enumerate(np.asarray(driving.frame_indices, np.int64)):
            if not self.cameras.has(int(index)):
                raise ValueError(f"frame {index} of {self.reader.root.name} has no tracked camera; re-run the "
                                 "track stage")
            tick = time.perf_counter()
            c2w = torch.as_tensor(self.scene.c2w(self.cameras.c2w[index]), dtype=torch.float32, device=self.device)
            colour, opacity = render_frame(self.model, conditions[number], c2w,
                                           (self.cameras.focal, self.cameras.cx, self.cameras.cy),
                                           self.render_size, self.image_size)
            if self.render_size != self.image_size:
                stacked = torch.cat([colour, opacity[..., None]], -1).permute(2, 0, 1)[None]
                stacked = F.interpolate(stacked, size=(self.image_size, self.image_size), mode="bilinear",
                                        align_corners=False)[0].permute(1, 2, 0)
                colour, opacity = stacked[..., :3], stacked[..., 3].clamp(0, 1)
            image = colour.cpu().numpy() + (1.0 - opacity.cpu().numpy())[..., None] * self._backdrop(int(index))
            render_seconds += time.perf_counter() - tick
            yield np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
        frames = max(driving.num_frames, 1)
        self.timings = {"conditions_ms": 1000 * condition_seconds / frames,
                        "rendering_ms": 1000 * render_seconds / frames}


def load_jean(cfg: JeanConfig, identity_root: Path, pretrained: Mapping[str, Path], model_dir: Path) -> JeanHead:
    """The trained model in ``model_dir`` with the identity's cameras, backdrop and expression inputs."""
    device = resolve_device(cfg.device, "jean")
    record = torch.load(model_dir_file(model_dir, MODEL_FILE), map_location=device, weights_only=True)
    trained = from_dict(JeanConfig, record["config"], where="jean (model.pt)")
    # Test-time settings (the backdrop) come from the config the model is loaded with; the rest from training.
    cfg = from_dict(JeanConfig, {**record["config"], "backdrop": cfg.backdrop, "device": cfg.device},
                    where="jean")
    model = JeanModel(trained, np.asarray(record["scene"]["box"]), record.get("audio_feature_dim"),
                      record.get("expression_input_dim"))
    model.load_state_dict(record["state_dict"])
    model.to(device).eval()
    reader = IdentityReader(identity_root)
    expression = transformer = None
    if trained.expression_feature != "none":
        normaliser = Normaliser.from_dict(record["normaliser"])
        expression = normaliser(expression_inputs(trained, reader, pretrained))
        if "transformer" in record:
            from talkhead_models.methods.jean.transformer import ExpressionTransformer

            saved = record["transformer"]
            transformer = ExpressionTransformer(int(saved["feature_dim"]), **saved["options"])
            transformer.load_state_dict(saved["state_dict"])
            transformer.eval()
    return JeanHead(cfg, model, record, reader, expression, transformer, device)
