"""Export a processed identity as a data folder in ER-NeRF's layout (not a DVC stage).

``python -m stages.export_ernerf --identity S001 /tmp/S001`` writes
``ori_imgs/<i>.jpg`` (the frame archive's bytes unchanged) and ``<i>.lms``,
``parsing/``, ``gt_imgs/``, ``torso_imgs/``, ``bc.jpg``, ``aud.wav``, the
identity's ``aud_<kind>.npy``, ``au.csv`` (OpenFace-style, ``AU45_r`` from
``eye.npy``), ``track_params.pt`` and ``transforms_*.json``: what ER-NeRF's,
RAD-NeRF's and TalkingGaussian's loaders read. docs/ERNERF.md says what
maps to what.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from stages._stage import configure_logging
from talkhead_models.config import ConfigError, validate_name
from talkhead_models.interop.ernerf import ErnerfError, export_ernerf

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.export_ernerf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the folder to write (new or empty)")
    parser.add_argument("--identity", required=True, help="the processed identity to export")
    parser.add_argument("--processed", type=Path, default=Path("data/processed"),
                        help="processed root (default: data/processed)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty folder")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        summary = export_ernerf(args.processed / validate_name(args.identity, "identity"), args.folder,
                                replace=args.force)
    except (ErnerfError, ConfigError) as error:
        log.error("%s", error)
        return 1
    log.info("%s: %d frames, %d .lms, au.csv %s%s", args.folder, summary.frames, summary.lms, summary.au_csv,
             f"; {len(summary.notes)} note(s) in {args.folder}/README_talkhead.txt" if summary.notes else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
