"""Import a data folder prepared by ER-NeRF's tools as a processed identity (not a DVC stage).

``python -m stages.import_ernerf data/obama --identity obama`` reads ER-NeRF's
``data/<ID>/`` (``ori_imgs/`` with ``<i>.jpg`` and ``<i>.lms``, ``aud.wav``,
``transforms_*.json``, ``track_params.pt``, ``parsing/``, ``gt_imgs/``,
``torso_imgs/``, ``bc.jpg``, ``au.csv``, ``aud_<kind>.npy``) and writes
``data/processed/<ID>/`` in our staged layout, deriving what the folder lacks
(FaceMesh's 478 points, the eye openness from AU45, semantic labels, the
split, the clip table, our mel features); docs/ERNERF.md and
``talkhead_models/interop/ernerf.py`` say how. Then train and evaluate it
with ``python -m stages.train`` / ``stages.evaluate --identity <ID>``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from stages._stage import configure_logging
from talkhead_models.config import ConfigError
from talkhead_models.interop.ernerf import ErnerfError, ImportConfig, import_ernerf

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.import_ernerf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="ER-NeRF's data/<ID> folder (with ori_imgs/)")
    parser.add_argument("--identity", help="identity name ([A-Za-z0-9_-]+; default: the folder's name)")
    parser.add_argument("--processed", type=Path, default=Path("data/processed"),
                        help="processed root (default: data/processed)")
    parser.add_argument("--audio-kinds", default="mel",
                        help="our audio features to compute from aud.wav besides the folder's aud_<kind>.npy, "
                             "comma-separated (default: mel; '' for none)")
    parser.add_argument("--force", action="store_true", help="replace an existing identity of that name")
    args = parser.parse_args(argv)
    configure_logging()
    identity = args.identity or args.folder.resolve().name
    kinds = tuple(kind.strip() for kind in args.audio_kinds.split(",") if kind.strip())
    try:
        summary = import_ernerf(args.folder, args.processed / identity, ImportConfig(audio_kinds=kinds),
                                replace=args.force)
    except (ErnerfError, ConfigError) as error:
        log.error("%s", error)
        return 1
    log.info("%s: %d frames, %d usable, %d self-driven test frames; train and evaluate it with `python -m "
             "stages.train --method <method> --identity %s` and `python -m stages.evaluate ...` (docs/ERNERF.md)",
             summary.identity, summary.frames, summary.usable, summary.self_frames, summary.identity)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
