"""What DVC knows about the DAG, read and written by flows so that ``dvc repro`` agrees with them afterwards.

A flow runs a stage exactly as ``dvc repro`` would (the stage's ``cmd`` from
dvc.yaml, in a child process) and then records it with ``dvc commit`` of that
one stage, so ``dvc status`` is clean and a later ``dvc repro`` does not redo
the work. Every DVC command a flow issues goes through :func:`dvc`, which
serialises them under one lock per workspace: DVC's own repository lock
refuses a second command instead of waiting, and parallel tasks of a flow
(or two flows on one machine) would otherwise fail on it. A ``dvc repro``
started by hand holds DVC's lock without ours; :func:`dvc` then retries with
back-off until ``lock_wait_seconds``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from talkhead_models.atomic import exclusive_lock

log = logging.getLogger(__name__)

DVC_LOCK_BUSY = "Unable to acquire lock"
"""What DVC prints when another DVC command holds the repository lock."""


@dataclass(frozen=True)
class DagStage:
    """One stage of dvc.yaml as DVC addresses it (``crop@S001``, ``train@r2talker-S001-s0``)."""

    name: str
    cmd: str
    upstream: frozenset[str]
    """Names of the stages whose outputs it depends on directly."""

    @property
    def kind(self) -> str:
        """The stage module's name: ``train`` for ``train@r2talker-S001-s0``."""
        return self.name.split("@", 1)[0]

    @property
    def item(self) -> str:
        """The foreach item (an identity or a run key); "" for a stage that runs once."""
        return self.name.split("@", 1)[1] if "@" in self.name else ""


def dvc_executable() -> str:
    """The ``dvc`` beside this interpreter (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("dvc")
    return str(beside) if beside.is_file() else (shutil.which("dvc") or "dvc")


def child_environment(root: Path) -> dict[str, str]:
    """The environment of a DVC command or a stage's child process: this venv first on PATH, as ``make`` has it.

    dvc.yaml's commands say ``python -m stages.<name>``; without the venv on PATH a worker started from another
    shell would run them with a Python that lacks torch.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONPATH", str(root))
    return env


def dag(root: Path) -> dict[str, DagStage]:
    """dvc.yaml's stages (its ``foreach`` items spelled out), by name."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        raise FileNotFoundError(f"{root} is not a DVC repository: run the flows in this project's checkout (or pass "
                                f"root=), after `make demo` or `dvc init`") from None
    with repo:
        graph = repo.index.graph
        # In DVC's graph an edge goes from a stage to a stage it depends on. (``name``, not ``addressing``: the
        # latter is relative to the current directory, "../ws/dvc.yaml:crop@S001" from elsewhere.)
        return {stage.name: DagStage(stage.name, stage.cmd, frozenset(dep.name for dep in graph.successors(stage)))
                for stage in graph if getattr(stage, "cmd", None)}


def upstream_closure(stages: dict[str, DagStage], targets: Iterable[str]) -> set[str]:
    """``targets`` and every stage they depend on, however indirectly."""
    found: set[str] = set()
    pending = list(targets)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        if name not in stages:
            raise KeyError(f"{name}: not a stage of dvc.yaml (it has {len(stages)} stages, e.g. "
                           f"{', '.join(sorted(stages)[:4])})")
        found.add(name)
        pending.extend(stages[name].upstream)
    return found


def topological(stages: dict[str, DagStage], names: Iterable[str]) -> list[str]:
    """``names`` ordered so that every stage comes after the stages it depends on (ties by name)."""
    names = set(names)
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(names):
        ready = sorted(n for n in names - placed if stages[n].upstream & names <= placed)
        if not ready:
            raise ValueError(f"dvc.yaml has a cycle among {sorted(names - placed)}")
        order += ready
        placed.update(ready)
    return order


def dvc(root: Path, *args: str, lock_wait_seconds: float = 600.0) -> subprocess.CompletedProcess:
    """Run one DVC command in ``root``, serialised with every other flow's, retrying while DVC's lock is busy."""
    lock = root / ".dvc" / "tmp" / "talkhead-flows.lock"
    command = [dvc_executable(), *args]
    deadline = time.monotonic() + lock_wait_seconds
    delay = 1.0
    with exclusive_lock(lock, what="the DVC commands of flows in this workspace"):
        while True:
            done = subprocess.run(command, cwd=root, capture_output=True, text=True, env=child_environment(root))
            busy = done.returncode != 0 and DVC_LOCK_BUSY in (done.stderr + done.stdout)
            if not busy:
                break
            if time.monotonic() > deadline:
                break
            log.info("`dvc %s` waits: another DVC command (a `dvc repro` by hand?) holds the repository lock",
                     " ".join(args))
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    if done.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` in {root} failed (exit {done.returncode}):\n"
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done


def changed(root: Path, names: Iterable[str]) -> set[str]:
    """Which of ``names`` DVC would run again (``dvc status``: a dep, param, command or output differs from
    dvc.lock, or the stage never ran)."""
    names = sorted(names)
    if not names:
        return set()
    report = json.loads(dvc(root, "status", "--json", *names).stdout or "{}")
    return {name for name in report if name in names}


def record(root: Path, name: str) -> None:
    """Write stage ``name``'s current deps, params and outputs into dvc.lock (and outputs into DVC's cache)."""
    dvc(root, "commit", "--force", name)
    log.info("recorded %s in dvc.lock", name)
