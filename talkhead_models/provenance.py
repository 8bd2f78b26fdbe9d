"""Digests of what a result was made from: code, settings and input data.

An evaluation record carries :func:`inputs_digest` of the code, the config
(without its seed) and the data that produced it. Records of different seeds
are averaged only when their digests are equal: a seed retrained long ago,
before the code, config or data changed, would otherwise be averaged with
today's run without anyone noticing.

:func:`tree_digest` lists every regular file under the paths it is given,
sorted by relative POSIX path, as ``<relative path>\\0<sha256 hex of the
content>\\n`` and returns the sha256 of that list. Listing per-file digests
(rather than feeding contents one after another) leaves no ambiguity over
where one file ends and the next begins. Contents are read in 1 MiB chunks,
so a folder of hundreds of megabytes never sits in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

CHUNK = 1 << 20
SKIPPED_DIRS = frozenset({"__pycache__"})
SKIPPED_SUFFIXES = (".pyc",)
RUN_REPORTS = frozenset({"manifest.json", "report.json", "metrics.json"})
"""A stage's account of how it ran (seconds, frames per second, validation scores of the weights beside it) next to
what it made. A data input counts without them: the same outputs rebuilt on another day or machine (a clean clone's
``make demo``) hash the same, so the seeds trained before still pair with today's."""


def file_digest(path: Path) -> str:
    """The sha256 hex digest of ``path``'s content (a symlink: its target's)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _skipped(name: str) -> bool:
    return name in SKIPPED_DIRS or name.endswith(SKIPPED_SUFFIXES)


def _files(path: str) -> Iterable[str]:
    """Every regular file under ``path`` (``path`` itself when it is a file), following symlinks."""
    if not os.path.isdir(path):
        yield path
        return
    # os.walk does not notice a symlink that points back up the tree; the real folders seen stop the loop.
    seen: set[str] = set()
    for folder, dirnames, filenames in os.walk(path, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [name for name in dirnames if not _skipped(name)]
        for name in filenames:
            if _skipped(name):
                continue
            file = os.path.join(folder, name)
            if os.path.isfile(file):
                yield file
            elif not os.path.exists(file):
                # A dangling link stands for content that should be there (a dvc cache link, say): hashing
                # around it would give the digest of a tree that does not exist.
                raise FileNotFoundError(f"{file}: dangling symlink (its target is missing)")


def tree_digest(paths: Iterable[Path], root: Path | None = None, skip_names: frozenset[str] = frozenset()) -> str:
    """The sha256 hex digest of every regular file under ``paths`` (files or folders), by relative path.

    Each file counts with its path relative to ``root`` when given (so moving a file within the tree changes
    the digest, and the same tree checked out elsewhere does not), else relative to the folder given (a file
    given by itself counts by its name). ``__pycache__`` folders, ``*.pyc`` files and files named in
    ``skip_names`` are skipped; symlinks are followed. The order of ``paths`` does not matter and a file listed
    twice counts once. A missing path raises
    :class:`FileNotFoundError` naming it; a path outside ``root`` raises :class:`ValueError`.
    """
    base = None if root is None else os.path.abspath(root)
    entries: set[tuple[str, str]] = set()
    for given in paths:
        # abspath, not resolve: a symlinked folder keeps its own name in the relative paths.
        path = os.path.abspath(given)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{given}: not found (an input of the digest)")
        if _skipped(os.path.basename(path)):
            continue
        start = base if base is not None else path if os.path.isdir(path) else os.path.dirname(path)
        for file in _files(path):
            if os.path.basename(file) in skip_names:
                continue
            relative = os.path.relpath(file, start)
            if relative == os.pardir or relative.startswith(os.pardir + os.sep):
                raise ValueError(f"{given}: not under the root {root}")
            entries.add((Path(relative).as_posix(), file))
    digest = hashlib.sha256()
    # Two files can share a relative path only without a root (two folders given); sorting such ties by
    # content keeps the digest independent of where the folders live.
    for relative, content in sorted((relative, file_digest(Path(file))) for relative, file in entries):
        digest.update(f"{relative}\0{content}\n".encode())
    return digest.hexdigest()


def inputs_digest(code: Iterable[Path], data: Mapping[str, Path], settings: Mapping, root: Path) -> str:
    """What a result was made from, as one sha256 hex digest: the code, the data and the settings.

    Two records whose digests are equal were made from the same code, the same config and the same input data,
    so they differ only by their seed, and one seed's values can be averaged with the other's. ``settings`` is
    the config that produced the result *without its seed* (else every seed would differ); it is written as
    ``json.dumps(settings, sort_keys=True, default=str)``, so key order does not matter. Code paths count
    relative to ``root`` (see :func:`tree_digest`); each named data input counts relative to itself, so data
    kept outside the repository (``--processed /mnt/...``) hashes the same as the same data inside it, and without
    its stages' run reports (:data:`RUN_REPORTS`).
    """
    digest = hashlib.sha256()
    digest.update(f"code\0{tree_digest(code, root)}\n".encode())
    for name in sorted(data):
        digest.update(f"data\0{name}\0{tree_digest([data[name]], skip_names=RUN_REPORTS)}\n".encode())
    digest.update(b"settings\0" + json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()
