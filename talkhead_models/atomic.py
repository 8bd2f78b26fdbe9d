"""Write outputs so that a killed or failed run leaves the old output or none.

Everything is written under a temporary sibling path and renamed into place
only when the writer finishes without an exception; ``rename`` within one
folder is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_dir(path, tmp)


def _replace_dir(path: Path, new: Path) -> None:
    """Rename ``new`` to ``path``; an existing ``path`` is moved aside first and removed after."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    new.rename(path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def resumable_dir(path: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_dir`, but the work folder survives a failure so the next run can resume from it.

    The folder is the sibling ``.<name>.partial``: training writes its
    checkpoints there, a killed run leaves them (and the previous output
    untouched), and success renames it into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = path.with_name(f".{path.name}.partial")
    work.mkdir(exist_ok=True)
    yield work
    _replace_dir(path, work)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path (same suffix) that replaces ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    # mkstemp creates the file private (0600); the output should get the permissions any new file gets.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
