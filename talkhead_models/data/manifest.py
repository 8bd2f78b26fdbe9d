"""``manifest.json``: what a stage wrote (each file's shape and dtype) and the params that made it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

MANIFEST = "manifest.json"
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def describe_file(path: Path) -> dict[str, Any]:
    """Shape and dtype of an array, image or frame archive (and its frame count); size in bytes for anything else."""
    entry: dict[str, Any] = {"bytes": path.stat().st_size}
    if path.suffix == ".npy":
        array = np.load(path, mmap_mode="r")
        entry.update(shape=list(array.shape), dtype=str(array.dtype))
    elif path.suffix in _IMAGE_SUFFIXES:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is not None:
            entry.update(shape=list(image.shape), dtype=str(image.dtype))
    elif path.suffix == ".zip":
        import cv2

        from talkhead_models.preprocess.frames import FrameArchive

        archive = FrameArchive(path)
        entry.update(frames=len(archive), member_suffix=archive.suffix,
                     first_frame=int(archive.indices[0]) if len(archive) else None,
                     last_frame=int(archive.indices[-1]) if len(archive) else None)
        if len(archive):  # every frame of an archive has the shape and dtype of its first
            image = archive.read(int(archive.indices[0]), cv2.IMREAD_UNCHANGED, rgb=False)
            entry.update(shape=list(image.shape), dtype=str(image.dtype))
    return entry


def write_manifest(folder: Path, params: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """Describe every file under ``folder`` into ``folder/manifest.json``.

    A folder of numbered images (``ori_imgs/0.jpg`` ...) is summarised as one
    entry (count, and the shape of its first image), not thousands.
    """
    folder = Path(folder)
    files: dict[str, Any] = {}
    for path in sorted(folder.iterdir()):
        if path.name == MANIFEST:
            continue
        if path.is_dir():
            members = sorted(p for p in path.iterdir() if p.is_file())
            suffixes = sorted({p.suffix for p in members})
            summary: dict[str, Any] = {"count": len(members), "suffixes": suffixes}
            if members:
                first = min(members, key=lambda p: (len(p.stem), p.stem))
                summary["first"] = {"name": first.name, **describe_file(first)}
            files[f"{path.name}/"] = summary
        else:
            files[path.name] = describe_file(path)
    manifest = {"stage": stage, "params": dict(params), "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: re-run the stage that writes {Path(folder).name}/")
    return json.loads(path.read_text())
