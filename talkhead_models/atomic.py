"""Write outputs so that a killed or failed run leaves the old output or none, and one writer at a time.

Everything is written under a temporary sibling path and renamed into place
only when the writer finishes without an exception; ``rename`` within one
folder is atomic on POSIX file systems. New files and folders get the
permissions the user's umask gives any new file (not the private 0600/0700
of ``mkstemp``/``mkdtemp``), so a shared machine or DVC cache can read them.

:func:`resumable_dir` keeps its work folder across a failed run, so two runs
writing the same output would share it: it holds :func:`exclusive_lock` on a
lock file beside the work folder, and a second run fails at once with
:class:`OutputBusyError` naming the folder and the process that holds it
(failing rather than waiting: a training run takes minutes to hours, and a
queue of hidden waiters is harder to understand than a clear message).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator


class OutputBusyError(RuntimeError):
    """Another process holds the lock of an output being written."""


def process_umask() -> int:
    """The process's umask.

    Linux shows it in /proc/self/status; elsewhere it can only be read by setting it, which for a moment
    changes it for every thread of the process.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def default_mode(path: Path) -> None:
    """Give ``path`` the permissions a new file (0666) or folder (0777) gets under the umask."""
    full = 0o777 if path.is_dir() else 0o666
    os.chmod(path, full & ~process_umask())


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    default_mode(tmp)
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


def lock_path(path: str | Path) -> Path:
    """The lock file of output ``path``: hidden, beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def resumable_dir(path: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_dir`, but the work folder survives a failure so the next run can resume from it.

    The folder is the sibling ``.<name>.partial``: training writes its
    checkpoints there, a killed run leaves them (and the previous output
    untouched), and success renames it into place. While the block runs the
    output's lock (:func:`lock_path`) is held; a second run raises
    :class:`OutputBusyError` at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = path.with_name(f".{path.name}.partial")
    with exclusive_lock(lock_path(path), wait=False, what=f"{path} (work folder {work})"):
        work.mkdir(exist_ok=True)
        yield work
        _replace_dir(path, work)


@contextlib.contextmanager
def exclusive_lock(path: str | Path, wait: bool = True, what: str | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` for the block; the file is removed on release.

    ``wait=False`` raises :class:`OutputBusyError` at once when another process holds it, naming ``what``
    (default: the lock file) and the holder's pid, host and start time, which the holder writes into the file.
    The lock belongs to the open file, so it is released when the holder exits or is killed, whatever the
    cause; a lock file left behind by a killed holder is simply taken over.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as error:
            handle.close()
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = _read_holder(path)
            raise OutputBusyError(
                f"{what or path} is being written by another run ({holder}); wait for it to finish, or stop "
                f"that process and run again (its lock: {path})") from None
        # A holder removes the file when it releases the lock: the lock just taken may be on a file that is no
        # longer at ``path``, while a newcomer locks a fresh one there. Only a lock on the file at ``path`` counts.
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        handle.close()


def _read_holder(path: Path) -> str:
    """'pid P on HOST since TIME' from a lock file, or what can be said when it is unreadable."""
    try:
        holder = json.loads(path.read_text())
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its pid yet"


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path (same suffix) that replaces ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    default_mode(tmp)
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
