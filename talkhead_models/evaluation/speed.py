"""Rendering speed of two methods compared like with like: one process, one driving, alternated repetitions.

Each evaluate stage measures its method's FPS in its own process, minutes or
hours apart, and the machine's speed drifts between them (other jobs on the
cores, clock and cache state), so the ratio of two records' FPS flipped
between seeds. Here both models of a pair are loaded into one process, each
warmed up, then timed alternately A, B, A, B, ... on the same self-driven
frames of one identity, at the same resolution and torch thread count: a
drift hits both sides of a round alike, and the per-repetition values show
the spread a claim has to beat.

:func:`measure_speed` returns the record the ``speed`` stage writes
(``reports/metrics/speed.json``)::

    {"hardware": str, "threads": int,
     "pairs": [{"identity", "a", "b", "resolution": [H, W], "frames", "repetitions",
                "fps_a": [float per repetition], "fps_b": [...]}],
     "skipped": [{"a", "b", "reason"}]}
"""

from __future__ import annotations

import logging
import time
from statistics import median
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from talkhead_models.config import ConfigError, PositiveInt, validate_name
from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.evaluation.driving import FrameBudget, driving_kinds, drivings
from talkhead_models.methods.base import Driving, TalkingHead
from talkhead_models.metrics.speed import device_description
from talkhead_models.preprocess.audio_features import AudioConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedConfig:
    """What the speed comparison renders and how often (params.yaml ``speed``; no paper values: a protocol)."""

    pairs: tuple[tuple[str, str], ...] = (("r2talker", "r2talker_audio_baseline"),
                                          ("gstalker_paper_audio", "r2talker"), ("gstalker_paper_audio", "jean"))
    """(a, b) method names timed against each other: R2-Talker against its RAD-NeRF baseline (R2-Talker's
    Table 1 speed claim) and GSTalker, the paper's method on its own audio encoder, against R2-Talker and JEAN
    (GSTalker's claim to render faster than the NeRFs)."""
    identity: str = ""
    """Whose models are compared; "" = for each pair, the first of ``data.identities`` with both models trained."""
    frames: PositiveInt = 20
    """Frames rendered per repetition (the first self-driven held-out clip that long, cut to this length)."""
    repetitions: PositiveInt = 7
    """Timed rounds; each round renders the frames with A, then with B."""
    warmup_frames: PositiveInt = 3
    """Untimed frames each model renders before the first round (first-call allocations, caches)."""
    threads: PositiveInt = 2
    """torch threads while rendering; 2 = the demo's evaluate threads, so the FPS compare with its records'."""

    def __post_init__(self) -> None:
        pairs = []
        for pair in self.pairs:
            if isinstance(pair, str) or len(pair) != 2:
                raise ConfigError(f"speed.pairs: each entry is [a, b] (two method names), got {pair!r}")
            a, b = (validate_name(str(name), "method") for name in pair)
            if a == b:
                raise ConfigError(f"speed.pairs: {a!r} is compared with itself")
            pairs.append((a, b))
        object.__setattr__(self, "pairs", tuple(pairs))
        if self.identity:
            validate_name(self.identity, "identity")
        for name in ("frames", "repetitions", "warmup_frames", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"speed.{name} must be at least 1, got {getattr(self, name)}")


def speed_driving(identity_root: Path, frames: int, audio_cfg: AudioConfig) -> Driving:
    """``frames`` frames of the identity's first self-driven held-out clip that is at least that long."""
    reader = IdentityReader(identity_root)
    # Self-driven rows read the identity's own audio, never the raw corpus: raw_root is not used.
    clips = drivings(reader, "self", FrameBudget(), Path(identity_root), audio_cfg, driving_kinds(reader, audio_cfg))
    for driving in clips:
        if driving.num_frames >= frames:
            return driving.slice(0, frames)
    longest = max((d.num_frames for d in clips), default=0)
    raise ValueError(f"{reader.root.name}: no self-driven held-out clip has {frames} frames (longest {longest}); "
                     "lower speed.frames")


def _render_all(head: TalkingHead, driving: Driving) -> tuple[int, tuple[int, ...]]:
    """Frames rendered and the shape of the first; the frames themselves are dropped as they come."""
    count, shape = 0, ()
    for frame in head.render(driving):
        if count == 0:
            shape = tuple(frame.shape)
        count += 1
    if count != driving.num_frames:
        raise RuntimeError(f"{type(head).__name__} rendered {count} frames for {driving.num_frames} driving frames")
    return count, shape


def time_alternating(head_a: TalkingHead, head_b: TalkingHead, driving: Driving, repetitions: int,
                     warmup_frames: int) -> tuple[list[float], list[float], tuple[int, ...], tuple[int, ...]]:
    """FPS of A and of B per repetition, rendering ``driving`` A, B, A, B, ... after one warm-up each.

    Also returns the frame shape each head rendered in its warm-up.
    """
    warmup = driving.slice(0, max(1, min(warmup_frames, driving.num_frames)))
    fps_a: list[float] = []
    fps_b: list[float] = []
    with torch.no_grad():
        _, shape_a = _render_all(head_a, warmup)
        _, shape_b = _render_all(head_b, warmup)
        for _ in range(repetitions):
            for head, fps in ((head_a, fps_a), (head_b, fps_b)):
                started = time.perf_counter()
                count, _ = _render_all(head, driving)
                fps.append(count / max(time.perf_counter() - started, 1e-9))
    return fps_a, fps_b, shape_a, shape_b


def measure_speed(cfg: SpeedConfig, identities: Sequence[str], model_dir: Callable[[str, str], Path],
                  load: Callable[[str, str], TalkingHead],
                  driving: Callable[[str, int], Driving]) -> dict:
    """Time every pair of ``cfg.pairs`` alternately in this process; the speed record (module docstring).

    ``model_dir(method, identity)`` is where a trained model would be (a pair whose folder is missing is
    skipped with the reason), ``load(method, identity)`` loads it, ``driving(identity, frames)`` builds the
    self-driven driving both render.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        hardware = device_description()
        pairs, skipped = [], []
        drivings_by_identity: dict[str, Driving] = {}
        for a, b in cfg.pairs:
            identity, reason = _pick_identity(cfg.identity, identities, a, b, model_dir)
            if identity is None:
                log.warning("speed: skipping %s vs %s: %s", a, b, reason)
                skipped.append({"a": a, "b": b, "reason": reason})
                continue
            if identity not in drivings_by_identity:
                drivings_by_identity[identity] = driving(identity, cfg.frames)
            frames = drivings_by_identity[identity]
            head_a, head_b = load(a, identity), load(b, identity)
            if head_a.image_size != head_b.image_size:
                reason = (f"{a} renders {head_a.image_size} px and {b} {head_b.image_size} px on {identity}: "
                          "FPS at different resolutions do not compare")
                log.warning("speed: skipping %s vs %s: %s", a, b, reason)
                skipped.append({"a": a, "b": b, "reason": reason})
                continue
            fps_a, fps_b, shape_a, shape_b = time_alternating(head_a, head_b, frames, cfg.repetitions,
                                                              cfg.warmup_frames)
            if shape_a[:2] != shape_b[:2]:
                raise RuntimeError(f"speed {a} vs {b}: both report {head_a.image_size} px but rendered frames of "
                                   f"shapes {shape_a} and {shape_b}")
            pairs.append({"identity": identity, "a": a, "b": b, "resolution": [int(shape_a[0]), int(shape_a[1])],
                          "frames": frames.num_frames, "repetitions": cfg.repetitions, "fps_a": fps_a,
                          "fps_b": fps_b})
            log.info("speed %s vs %s on %s (%dx%d, %d frames): median %.3g vs %.3g frames/s over %d rounds",
                     a, b, identity, shape_a[0], shape_a[1], frames.num_frames, median(fps_a), median(fps_b),
                     cfg.repetitions)
            del head_a, head_b
    finally:
        torch.set_num_threads(previous_threads)
    return {"hardware": hardware, "threads": cfg.threads, "pairs": pairs, "skipped": skipped}


def _pick_identity(wanted: str, identities: Sequence[str], a: str, b: str,
                   model_dir: Callable[[str, str], Path]) -> tuple[str | None, str]:
    """The identity to compare ``a`` and ``b`` on, or None and why not."""
    candidates = [wanted] if wanted else list(identities)
    missing_first: list[str] = []
    for identity in candidates:
        # Named as <method>/<identity>, not the absolute path: the record is committed (a DVC metrics file).
        missing = [f"{m}/{identity}" for m in (a, b) if not model_dir(m, identity).is_dir()]
        if not missing:
            return identity, ""
        missing_first = missing_first or missing
    if not candidates:
        return None, "no identities to compare on (data.identities is empty)"
    return None, (f"no identity of [{', '.join(candidates)}] has both models trained (missing model folder "
                  f"{', '.join(missing_first)}); run `dvc repro train@{a}-<ID>-s0 train@{b}-<ID>-s0`")
