"""Raw sources: where an identity's recordings are, whatever the dataset.

Three sources share one reader interface, so every preprocessing stage reads
any of them:

* ``mead``: MEAD as distributed, ``<root>/<ID>/video/front/<emotion>/level_<k>/<NNN>.mp4``
  (audio muxed, and also under ``<root>/<ID>/audio/<emotion>/level_<k>/<NNN>.m4a``);
* ``videos``: one person-specific video per identity, ``<root>/<ID>.mp4``
  (AD-NeRF / ER-NeRF / GSTalker datasets);
* ``synthetic``: the generated corpus: MEAD's tree plus ``videos/<ID>.mp4``,
  with ground truth beside each recording.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from pathlib import Path

from talkhead_models.config import validate_name
from talkhead_models.data import Source

SOURCES = typing.get_args(Source)
_MEAD_VIDEO = re.compile(r"^video/front/(?P<emotion>[a-z]+)/level_(?P<level>\d+)/(?P<sentence>\d+)\.mp4$")


@dataclass(frozen=True)
class Recording:
    """One source file of an identity."""

    identity: str
    clip: str  # unique within the identity: "<emotion>/level_<k>/<NNN>" or "video"
    video: Path  # the video file (audio muxed where the source has it)
    audio: Path | None  # a separate audio file, when the source has one
    emotion: str
    level: int
    sentence: int  # 0 for a person-specific video
    truth: Path | None  # ground truth (synthetic source only)

    @property
    def kind(self) -> str:
        return "video" if self.clip == "video" else "clip"


def recordings(source: str, root: Path, identity: str) -> list[Recording]:
    """An identity's recordings, in a fixed order (MEAD clips sorted by path, then the long video)."""
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; use one of {SOURCES} (params.yaml data.source)")
    validate_name(identity, "identity")
    root = Path(root)
    found: list[Recording] = []
    if source in ("synthetic", "mead"):
        base = root / identity
        for video in sorted(base.glob("video/front/*/level_*/*.mp4")):
            match = _MEAD_VIDEO.match(video.relative_to(base).as_posix())
            if match is None:
                continue
            emotion, level, sentence = match["emotion"], int(match["level"]), int(match["sentence"])
            clip = f"{emotion}/level_{level}/{match['sentence']}"
            audio = next((p for p in (base / "audio" / emotion / f"level_{level}").glob(f"{match['sentence']}.*")
                          if p.suffix in (".m4a", ".wav", ".aac", ".mp3")), None)
            truth = base / "truth" / "front" / emotion / f"level_{level}" / f"{match['sentence']}.npz"
            found.append(Recording(identity, clip, video, audio, emotion, level, sentence,
                                   truth if truth.is_file() else None))
    long_video = root / ("videos" if source == "synthetic" else "") / f"{identity}.mp4"
    if source in ("synthetic", "videos") and long_video.is_file():
        truth = root / "videos" / "truth" / f"{identity}.npz"
        found.append(Recording(identity, "video", long_video, None, "neutral", 1, 0,
                               truth if truth.is_file() else None))
    if not found:
        layout = {"mead": f"{root}/{identity}/video/front/<emotion>/level_<k>/<NNN>.mp4",
                  "videos": f"{root}/{identity}.mp4",
                  "synthetic": f"{root}/{identity}/video/front/... or {root}/videos/{identity}.mp4"}[source]
        raise FileNotFoundError(f"no recordings of identity {identity!r} in {root} (source {source!r}); "
                                f"expected {layout}")
    return found


def identities(source: str, root: Path) -> list[str]:
    """Identity names present in a source folder."""
    root = Path(root)
    if source == "videos":
        names = [p.stem for p in root.glob("*.mp4")]
    else:
        names = [p.name for p in root.iterdir() if (p / "video" / "front").is_dir()]
    return sorted(validate_name(n, "identity") for n in names)
