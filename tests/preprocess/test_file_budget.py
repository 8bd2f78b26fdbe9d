"""A processed identity is a fixed set of files, whatever its frame count (issue 20: at most 50 per identity).

The long identity is the tiny S001's frames played four times over (four times the frames and recordings), run
through the stages that write per-frame data; its folders must hold exactly the files of the short one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd

from stages import landmarks, parse
from talkhead_models.preprocess.landmarks import LandmarksConfig
from talkhead_models.preprocess.parsing import ParseConfig

REPEATS = 4
FILE_BUDGET = 50


def repeated_crop(source: Path, target: Path, repeats: int) -> int:
    """``target`` as a crop folder holding ``source``'s recordings ``repeats`` times; returns its frame count."""
    clips = pd.read_parquet(source / "clips.parquet")
    n_frames = int(clips["last_frame"].max()) + 1
    target.mkdir(parents=True)
    with zipfile.ZipFile(source / "ori_imgs.zip") as frames, \
            zipfile.ZipFile(target / "ori_imgs.zip", "w", zipfile.ZIP_STORED) as out:
        for copy in range(repeats):
            for index in range(n_frames):
                out.writestr(f"{copy * n_frames + index}.jpg", frames.read(f"{index}.jpg"))
    copies = [clips.assign(first_frame=clips["first_frame"] + k * n_frames,
                           last_frame=clips["last_frame"] + k * n_frames,
                           clip=clips["clip"] + f"/copy{k}") for k in range(repeats)]
    pd.concat(copies, ignore_index=True).to_parquet(target / "clips.parquet", index=False)
    return repeats * n_frames


def names(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_files_per_identity_do_not_grow_with_its_frame_count(processed_root, parse_done, tmp_path):
    short = processed_root / "S001"
    long = tmp_path / "S001"
    n_frames = repeated_crop(short / "crop", long / "crop", REPEATS)
    landmarks.run(LandmarksConfig(), {"crop": long / "crop"}, {"landmarks": long / "landmarks"}, identity="S001")
    parse.run(ParseConfig(), {"crop": long / "crop", "landmarks": long / "landmarks"}, {"parse": long / "parse"},
              identity="S001")
    with zipfile.ZipFile(long / "parse" / "gt_imgs.zip") as gt:
        assert len(gt.namelist()) == n_frames  # every frame is there, inside one file
    for stage in ("landmarks", "parse"):
        assert names(long / stage) == names(short / stage), stage
    assert len(names(long)) == len(names(short)) <= FILE_BUDGET
