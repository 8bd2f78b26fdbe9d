"""Summaries of a generated corpus: tables, a FaceMesh detection rate and a contact sheet."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from talkhead_models.media import iter_frames
from talkhead_models.preprocess.facemesh import DetectionCount, FaceMesh, count_detections

log = logging.getLogger(__name__)


def load_index(root: Path) -> dict:
    """The corpus index written by the synth stage."""
    path = Path(root) / "corpus.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: generate the corpus first (`dvc repro synth`)")
    return json.loads(path.read_text())


def clip_table(index: dict) -> pd.DataFrame:
    return pd.DataFrame(index["clips"])


def identity_table(clips: pd.DataFrame) -> pd.DataFrame:
    """Per identity: emotions, sentences, clips, seconds and frames of clips and of the long video."""
    rows = []
    for identity, group in clips.groupby("identity"):
        mead = group[group.kind == "clip"]
        video = group[group.kind == "video"]
        rows.append({
            "identity": identity,
            "emotions": ", ".join(sorted(mead.emotion.unique())),
            "sentences": mead.sentence.nunique(),
            "clips": len(mead),
            "clip seconds": round(mead.duration_s.sum(), 1),
            "clip frames": int(mead.frames.sum()),
            "video seconds": round(video.duration_s.sum(), 1),
            "video frames": int(video.frames.sum()),
        })
    return pd.DataFrame(rows)


def sentence_durations(clips: pd.DataFrame) -> pd.DataFrame:
    """Mean spoken duration (s) of each sentence per emotion, over identities."""
    mead = clips[clips.kind == "clip"]
    table = mead.pivot_table(index="sentence", columns="emotion", values="speech_s", aggfunc="mean")
    return table.round(2)


def detection_rates(root: Path, clips: pd.DataFrame, stride: int = 1) -> pd.DataFrame:
    """FaceMesh detection per identity and kind, every ``stride``-th frame, each frame detected from scratch."""
    rows = []
    with FaceMesh(static=True) as mesh:
        for row in tqdm(clips.itertuples(), total=len(clips), desc="facemesh", unit="video"):
            count: DetectionCount = count_detections(Path(root) / row.video, mesh, stride)
            rows.append({"identity": row.identity, "kind": row.kind, "frames": count.frames,
                         "detected": count.detected})
    return pd.DataFrame(rows)


def _frame_at(video: Path, index: int) -> np.ndarray:
    for i, frame in enumerate(iter_frames(video)):
        if i == index:
            return frame.copy()
    raise IndexError(f"{video}: has no frame {index}")


def contact_sheet(root: Path, clips: pd.DataFrame, tile: int = 160) -> np.ndarray:
    """Rows: identities. Columns: the middle frame of sentence 1 in each emotion, then the long
    video's middle frame with the ground-truth 68 landmarks drawn on it."""
    root = Path(root)
    emotions = sorted(clips[clips.kind == "clip"].emotion.unique())
    rows = []
    for identity, group in clips.groupby("identity"):
        tiles = []
        for emotion in emotions:
            pick = group[(group.kind == "clip") & (group.emotion == emotion)].sort_values("sentence").iloc[0]
            frame = _frame_at(root / pick.video, pick.frames // 2)
            tiles.append(_label(cv2.resize(frame, (tile, tile), interpolation=cv2.INTER_AREA), f"{identity} {emotion}"))
        video = group[group.kind == "video"].iloc[0]
        middle = video.frames // 2
        frame = _frame_at(root / video.video, middle)
        truth = np.load(root / video.truth)
        scale = tile / frame.shape[1]
        frame = cv2.resize(frame, (tile, tile), interpolation=cv2.INTER_AREA)
        for x, y in truth["landmarks_2d_68"][middle] * scale:
            cv2.circle(frame, (int(round(x)), int(round(y))), 1, (0, 255, 0), -1)
        tiles.append(_label(frame, f"{identity} video + 68 GT"))
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def _label(image: np.ndarray, text: str) -> np.ndarray:
    image = image.copy()
    cv2.putText(image, text, (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(image, text, (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return image
