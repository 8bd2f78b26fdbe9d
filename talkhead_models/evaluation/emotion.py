"""The corpus emotion CNN as a judge of rendered frames (the cross-expression setting's emotion metrics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from talkhead_models.pretrained.emotion import EMOTION_SOURCE_SUBSTITUTE, crop_faces, face_boxes, load_model


class EmotionScorer:
    """Each rendered frame's probability of each emotion, by the pretrain_emotion stage's substitute CNN.

    Frames are cropped as the network was trained (``face_boxes`` around their 68 landmarks, smoothed over the
    clip); the network never saw a test frame (the stage's ``data_audit.csv``).
    """

    def __init__(self, path: Path, device: str = "cpu") -> None:
        self.model, self.config = load_model(path, device)
        self.emotions: tuple[str, ...] = tuple(self.config["emotions"])
        self.path = Path(path)
        self.source = EMOTION_SOURCE_SUBSTITUTE

    @torch.no_grad()
    def probabilities(self, frames: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """[N, len(emotions)] softmax of one clip's frames [N, H, W, 3] (RGB uint8) with their landmarks [N, 68, 2]."""
        boxes = face_boxes(landmarks68, [(0, len(frames))], self.config["crop_scale"], self.config["smooth_frames"])
        images = torch.from_numpy(np.ascontiguousarray(np.asarray(frames).transpose(0, 3, 1, 2))).float()
        crops = crop_faces(images, torch.from_numpy(boxes), self.config["crop_size"],
                           grayscale=self.config["grayscale"])
        device = next(self.model.parameters()).device
        return torch.softmax(self.model(crops.to(device)), dim=-1).cpu().numpy()
