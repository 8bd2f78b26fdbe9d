"""Helpers the trainers' resume tests share: a stand-in for a kill, and a clock that checkpoints every iteration."""

from __future__ import annotations

import functools
import itertools
from types import ModuleType

import pytest

from talkhead_models.checkpoints import Checkpoints


class Killed(Exception):
    """Stands for the process being killed."""


def kill_at(step: int):
    """A log_metric that kills the run when the curve row of ``step`` is logged."""
    def log_metric(name: str, value: float, at: int) -> None:
        if at == step:
            raise Killed(step)
    return log_metric


def ticking_clock(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> None:
    """``module``'s checkpoints see one second pass per look at the clock: with ``checkpoint_seconds=1`` every
    iteration is checkpointed, also those between two curve rows."""
    ticks = itertools.count()
    monkeypatch.setattr(module, "Checkpoints", functools.partial(Checkpoints, clock=lambda: float(next(ticks))))
