"""A small folder in ER-NeRF's data layout, written by our own code from ER-NeRF's documented names and formats.

What ER-NeRF's ``data_utils/process.py`` (and OpenFace, for ``au.csv``)
leave in ``data/<ID>/``, for a synthetic speaker rendered by the synthetic
corpus' face renderer, so FaceMesh finds the face and the cameras agree with
the pictures:

* ``ori_imgs/<i>.jpg`` (cv2 JPEG) and ``ori_imgs/<i>.lms`` (68 lines ``x y``, ``%f``: the renderer's iBUG-68
  points, where ER-NeRF has face-alignment's);
* ``parsing/<i>.png``: the colour array head (255, 0, 0), neck (0, 255, 0), torso (0, 0, 255), background white,
  handed to ``cv2.imwrite`` (so BGR on disk);
* ``bc.jpg``, ``gt_imgs/<i>.jpg`` (the frame over ``bc.jpg``), ``torso_imgs/<i>.png`` (BGRA);
* ``aud.wav`` (16 kHz), ``aud_ds.npy`` [N, 16, 29], ``aud_eo.npy`` [N, 16, 44], ``aud_hu.npy`` [N, 2, 1024];
* ``au.csv``: OpenFace FeatureExtraction's table (``frame, face_id, timestamp, confidence, success, AU01_r, ...``,
  comma + space separated, so pandas names the columns ``' AU45_r'``), AU45 from the rendered blinks;
* ``track_params.pt`` ({'id': [1, 100], 'exp': [N, 79], 'euler': [N, 3], 'trans': [N, 3], 'focal': [1]}, BFM's
  dimensions, not our face model's) and ``transforms_train.json`` / ``transforms_val.json`` (OpenGL
  camera-to-world in metres, world = the head). ER-NeRF puts the last N - int(N * 10 / 11) frames in val; here
  the last ``val_frames`` (12 of 48, so the evaluation scores the 10 frames Exp-Diff's tracker needs at least):
  whichever frames the file names are the test frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from talkhead_models import face_topology as topo
from talkhead_models.data.processed import SAMPLE_RATE, SAMPLES_PER_FRAME
from talkhead_models.media import write_audio
from talkhead_models.preprocess.cameras import OPENGL_TO_OPENCV, pose_from_transform
from talkhead_models.preprocess.parsing import PARSING_BGR

N_FRAMES = 48
SIZE = 128
OPENFACE_AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15", "AU17",
                "AU20", "AU23", "AU25", "AU26", "AU45")


@dataclass(frozen=True)
class FixtureTruth:
    """What the folder was made from (for the tests' expectations)."""

    n_frames: int
    size: int
    val_start: int
    au45: np.ndarray
    focal: float


def ernerf_c2w(rotation_cv: np.ndarray, translation_cm: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """ER-NeRF's camera-to-world (OpenGL, metres) of a head posed ``rotation_cv`` / ``translation_cm`` in an OpenCV
    camera; the world is the head frame turned by its rest rotation ``rest`` into OpenGL axes (the face looks
    along +z, as in ER-NeRF's head frame)."""
    flip = OPENGL_TO_OPENCV
    rotation = flip @ rotation_cv @ rest.T @ flip
    translation = flip @ translation_cm / 100.0
    c2w = np.eye(4)
    c2w[:3, :3] = rotation.T
    c2w[:3, 3] = -rotation.T @ translation
    return c2w


def write_ernerf_folder(root: Path, n_frames: int = N_FRAMES, size: int = SIZE, seed: int = 0,
                        val_frames: int = 12) -> FixtureTruth:
    """Write ER-NeRF's files for one synthetic speaker into ``root`` (created)."""
    import torch

    from talkhead_models.data.synthetic.face import build_rig, make_look, photo_face
    from talkhead_models.data.synthetic.motion import blinks
    from talkhead_models.data.synthetic.render import EXPRESSION_KEYS, FaceRenderer

    rng = np.random.default_rng(seed)
    root = Path(root)
    for name in ("ori_imgs", "parsing", "gt_imgs", "torso_imgs"):
        (root / name).mkdir(parents=True)
    rig = build_rig(make_look(0, np.random.default_rng(seed)), photo_face(size), 2.2)
    renderer = FaceRenderer(rig)
    t = np.arange(n_frames) / 25.0
    angles = np.stack([0.12 * np.sin(2 * np.pi * 0.4 * t), 0.06 * np.sin(2 * np.pi * 0.3 * t + 1.0),
                       0.03 * np.sin(2 * np.pi * 0.2 * t)], axis=1)
    jaw = 0.5 * (1 - np.cos(2 * np.pi * 2.5 * t))
    closure = blinks(n_frames, 25.0, rng, mean_interval_s=0.6)
    frames, labels, c2w = [], [], []
    for i in range(n_frames):
        expression = np.zeros(len(EXPRESSION_KEYS))
        expression[EXPRESSION_KEYS.index("jaw_open")] = jaw[i]
        expression[EXPRESSION_KEYS.index("blink_right")] = closure[i]
        expression[EXPRESSION_KEYS.index("blink_left")] = closure[i]
        truth = renderer.render(angles[i], np.zeros(3), expression, np.zeros(3), 0.0)
        frames.append(truth.image)
        labels.append(truth.labels)
        c2w.append(ernerf_c2w(truth.rotation, truth.translation, rig.head_rotation))
        cv2.imwrite(str(root / "ori_imgs" / f"{i}.jpg"), cv2.cvtColor(truth.image, cv2.COLOR_RGB2BGR))
        np.savetxt(root / "ori_imgs" / f"{i}.lms", topo.to_68(truth.landmarks_2d), "%f")
    images, labels = np.stack(frames), np.stack(labels)
    background = labels == 0
    counts = np.maximum(background.sum(0), 1)[..., None]
    bc = (images * background[..., None]).sum(0) / counts
    bc[background.sum(0) == 0] = images.reshape(-1, 3).mean(0)
    bc = bc.astype(np.uint8)
    cv2.imwrite(str(root / "bc.jpg"), cv2.cvtColor(bc, cv2.COLOR_RGB2BGR))
    colours = np.zeros(256, np.int64)  # ER-NeRF's parser knows head, neck, torso and background only
    colours[[1, 4, 5]], colours[2], colours[3] = 1, 2, 3
    for i in range(n_frames):
        parts = colours[labels[i]]
        cv2.imwrite(str(root / "parsing" / f"{i}.png"), PARSING_BGR[parts])
        gt = images[i].copy()
        gt[parts == 0] = bc[parts == 0]
        cv2.imwrite(str(root / "gt_imgs" / f"{i}.jpg"), cv2.cvtColor(gt, cv2.COLOR_RGB2BGR))
        torso = gt.copy()
        torso[parts == 1] = bc[parts == 1]
        alpha = np.where((parts == 2) | (parts == 3), 255, 0).astype(np.uint8)
        torso[alpha == 0] = 0
        rgba = np.dstack([cv2.cvtColor(torso, cv2.COLOR_RGB2BGR), alpha])
        cv2.imwrite(str(root / "torso_imgs" / f"{i}.png"), rgba)

    samples = np.arange(n_frames * SAMPLES_PER_FRAME) / SAMPLE_RATE
    envelope = np.repeat(jaw, SAMPLES_PER_FRAME)
    audio = 0.3 * envelope * np.sin(2 * np.pi * 180 * samples) + 0.01 * rng.standard_normal(len(samples))
    write_audio(root / "aud.wav", audio.astype(np.float32), SAMPLE_RATE)
    logits = rng.standard_normal((n_frames, 16, 29)).astype(np.float32)
    np.save(root / "aud_ds.npy", logits)
    np.save(root / "aud_eo.npy", rng.standard_normal((n_frames, 16, 44)).astype(np.float32))
    np.save(root / "aud_hu.npy", rng.standard_normal((n_frames, 2, 1024)).astype(np.float32))

    # OpenFace writes 2 decimals; blinks reach 2.5 (ER-NeRF clips at 2).
    au45 = np.round(2.5 * closure, 2)
    header = ["frame", "face_id", "timestamp", "confidence", "success"] + [f"{au}_r" for au in OPENFACE_AUS]
    lines = [", ".join(header)]
    for i in range(n_frames):
        values = [np.round(rng.uniform(0, 1.5), 2) for _ in OPENFACE_AUS[:-1]] + [au45[i]]
        row = [f"{i + 1}", "0", f"{i / 25:.3f}", "0.98", "1"] + [f"{v:.2f}" for v in values]
        lines.append(", ".join(row))
    (root / "au.csv").write_text("\n".join(lines) + "\n")

    c2w = np.stack(c2w)
    euler, trans = pose_from_transform(c2w)
    torch.save({"id": torch.randn(1, 100), "exp": torch.randn(n_frames, 79),
                "euler": torch.as_tensor(euler, dtype=torch.float32),
                "trans": torch.as_tensor(trans, dtype=torch.float32),
                "focal": torch.tensor([float(rig.focal)])}, root / "track_params.pt")
    val_start = n_frames - val_frames
    for split, ids in (("train", range(0, val_start)), ("val", range(val_start, n_frames))):
        content = {"focal_len": float(rig.focal), "cx": size / 2.0, "cy": size / 2.0,
                   "frames": [{"img_id": i, "aud_id": i, "transform_matrix": c2w[i].tolist()} for i in ids]}
        (root / f"transforms_{split}.json").write_text(json.dumps(content, indent=2, separators=(",", ": ")))
    return FixtureTruth(n_frames=n_frames, size=size, val_start=val_start, au45=au45, focal=float(rig.focal))
