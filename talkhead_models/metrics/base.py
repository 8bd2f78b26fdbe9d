"""What every metric returns, where pretrained weights are found, and how frames come in.

A metric is one function over a batch of frames (or landmarks, audio,
coefficients) that returns a :class:`MetricValue`: the number, its unit,
which way is better, and whether it was measured as the papers measure it
(``reference``), with a stand-in (``substitute: <what>``), or not at all
(``n/a``, with the reason). Tables print :meth:`MetricValue.cell` and
collect :meth:`MetricValue.footnote`, so a substituted or missing metric is
never passed off as the paper's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor
from talkhead_models.weights import weights_dir

REFERENCE = "reference"
"""Measured as the papers measure it: their formula, or their network with its published weights."""
NOT_AVAILABLE = "n/a"
SUBSTITUTE_PREFIX = "substitute: "

WEIGHTS_DOC = "docs/WEIGHTS.md"

FRAME, CLIP, REPETITION = "frame", "clip", "repetition"
SAMPLE_UNITS = (FRAME, CLIP, REPETITION)
"""What one of a value's samples (:attr:`MetricValue.per_frame`) is."""
SAMPLE_DIGITS = 5
"""Significant digits of the per-frame values in a record (keeps records small; far below any difference a
test set of a few hundred frames can resolve)."""


class MissingWeightsError(FileNotFoundError):
    """A weights file a metric needs is not in the weights folder; the message says which and where to get it."""


class WeightsError(RuntimeError):
    """A weights file is present but is not what its documented name promises (wrong keys or shapes)."""


def substitute(what: str) -> str:
    """The ``reference`` label of a value measured with a stand-in for the papers' tool."""
    return f"{SUBSTITUTE_PREFIX}{what}"


@dataclass(frozen=True)
class MetricValue:
    """One metric's result over a batch (or a whole test set)."""

    name: str
    """Column name as the papers print it: "PSNR", "M-LMD", "LSE-C", ..."""
    value: float | None
    """The mean over frames (or the set-level value); None when the metric could not be measured."""
    unit: str = ""
    """"dB", "px", "frames/s", ... or "" for unitless values."""
    reference: str = REFERENCE
    """"reference", "substitute: <what>" or "n/a"."""
    note: str = ""
    """Why it is n/a, what the substitute is, or details (device, offset) worth a footnote."""
    higher_is_better: bool = True
    hardware: str = ""
    """Where a speed or cost was measured ("NVIDIA A100 (cuda:0)"); it goes into the footnote."""
    measured_with: str = ""
    """The tool a value measured as the papers do comes from, when a reader must know it (the landmark detector
    of LMD); it goes into the footnote."""
    per_frame: np.ndarray | None = field(default=None, compare=False, repr=False)
    """The values ``value`` is the mean of, one per ``sample_unit`` (frames, or clips for the lip-sync scores),
    in test-set order: what an interval between two runs resamples."""
    sample_unit: str = field(default=FRAME, compare=False)
    """What one entry of ``per_frame`` is: "frame", "clip" (lip-sync scores are per clip) or "repetition"."""

    @classmethod
    def not_available(cls, name: str, reason: str, unit: str = "", higher_is_better: bool = True) -> "MetricValue":
        """A metric that could not be measured, with the reason; never a made-up number."""
        return cls(name=name, value=None, unit=unit, reference=NOT_AVAILABLE, note=reason,
                   higher_is_better=higher_is_better)

    @property
    def available(self) -> bool:
        return self.value is not None

    @property
    def substituted(self) -> bool:
        return self.reference.startswith(SUBSTITUTE_PREFIX)

    def cell(self, digits: int = 3) -> str:
        """The table cell: the number with ``digits`` decimals, "inf", or "n/a"."""
        if self.value is None:
            return NOT_AVAILABLE
        if math.isinf(self.value):
            return "inf" if self.value > 0 else "-inf"
        return f"{self.value:.{digits}f}"

    def footnote(self) -> str | None:
        """The footnote a table needs (n/a, substituted, or hardware-dependent), or None."""
        if self.value is None:
            return f"{self.name}: n/a ({self.note})"
        if self.substituted:
            detail = f"; {self.note}" if self.note else ""
            return f"{self.name}: {self.reference}{detail}"
        if self.measured_with:
            where = f" on {self.hardware}" if self.hardware else ""
            return f"{self.name}: measured with {self.measured_with}{where}"
        if self.hardware:
            return f"{self.name}: measured on {self.hardware}"
        return None

    def to_dict(self) -> dict:
        """JSON-ready; the per-frame values rounded to :data:`SAMPLE_DIGITS` significant digits."""
        data = {"name": self.name, "value": self.value, "unit": self.unit, "reference": self.reference,
                "note": self.note, "higher_is_better": self.higher_is_better, "hardware": self.hardware}
        if self.measured_with:
            data["measured_with"] = self.measured_with
        if self.per_frame is not None:
            data["sample_unit"] = self.sample_unit
            data["per_frame"] = [float(f"{v:.{SAMPLE_DIGITS}g}") for v in np.asarray(self.per_frame).ravel()]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MetricValue":
        """The inverse of :meth:`to_dict` (per-frame values as rounded there; absent in older records).

        JSON's ``Infinity`` (ground truth's PSNR) arrives as ``float("inf")``;
        a missing or non-numeric value raises ``ValueError`` naming the metric.
        """
        if not isinstance(data, Mapping) or "name" not in data or "value" not in data:
            raise ValueError(f"a metric needs at least 'name' and 'value', got {data!r}")
        value = data["value"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"metric {data['name']!r}: value must be a number, Infinity or null, got {value!r}")
        per_frame = data.get("per_frame")
        if per_frame is not None:
            if not isinstance(per_frame, list) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in per_frame):
                raise ValueError(f"metric {data['name']!r}: per_frame must be a list of numbers")
            per_frame = np.asarray(per_frame, np.float64)
        unit = str(data.get("sample_unit", FRAME))
        if unit not in SAMPLE_UNITS:
            raise ValueError(f"metric {data['name']!r}: sample_unit {unit!r} is not one of {SAMPLE_UNITS}")
        return cls(name=str(data["name"]), value=None if value is None else float(value),
                   unit=str(data.get("unit", "")), reference=str(data.get("reference", REFERENCE)),
                   note=str(data.get("note", "")), higher_is_better=bool(data.get("higher_is_better", True)),
                   hardware=str(data.get("hardware", "")), per_frame=per_frame, sample_unit=unit,
                   measured_with=str(data.get("measured_with", "")))


def footnotes(values: Iterable[MetricValue]) -> list[str]:
    """The distinct footnotes of a table's values, in first-seen order."""
    notes: list[str] = []
    for value in values:
        text = value.footnote()
        if text is not None and text not in notes:
            notes.append(text)
    return notes


def require_weights(folder: str | Path | None, file_name: str, what: str) -> Path:
    """The path of ``file_name`` in the weights folder, or :class:`MissingWeightsError` saying what it is."""
    path = weights_dir(folder) / file_name
    if not path.exists():
        raise MissingWeightsError(f"{file_name} ({what}) not found in {path.parent}/; see {WEIGHTS_DOC}")
    return path


def load_state_dict(path: Path) -> dict[str, Tensor]:
    """``torch.load(weights_only=True)`` of a state dict, unwrapping a ``{"state_dict": ...}`` container.

    A file that is not a mapping of tensors raises :class:`WeightsError` naming it.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the file is not a state dict
        raise WeightsError(f"{path}: cannot be read as a PyTorch state dict ({error}); replace it with the file "
                           f"{WEIGHTS_DOC} names") from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict (name -> tensor); replace it with the file "
                           f"{WEIGHTS_DOC} names")
    # Checkpoints saved from DataParallel prefix every key with "module.".
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_into(module: torch.nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """Load ``state`` strictly into ``module``; a key or shape mismatch names the file and the first differences.

    A module built on the meta device (no memory, no initialisation: the
    file replaces every tensor) takes the file's tensors as they are.
    """
    on_meta = any(tensor.is_meta for tensor in module.state_dict().values())
    try:
        module.load_state_dict(state, strict=True, assign=on_meta)
    except RuntimeError as error:
        expected, found = set(module.state_dict()), set(state)
        missing, unexpected = sorted(expected - found)[:5], sorted(found - expected)[:5]
        raise WeightsError(f"{path}: does not match the network it should hold (missing {missing}, unexpected "
                           f"{unexpected}; {str(error).splitlines()[0]}); see {WEIGHTS_DOC}") from error


def as_frames(frames: Tensor | np.ndarray) -> Tensor:
    """Frames as a float tensor [B, 3, H, W] in [0, 1].

    Accepts a float tensor [B, 3, H, W] (or one frame [3, H, W]) in [0, 1],
    or uint8 numpy RGB [B, H, W, 3] (or [H, W, 3]) as decoded from video.
    """
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8 or frames.shape[-1] != 3 or frames.ndim not in (3, 4):
            raise ValueError(f"numpy frames must be uint8 RGB [B, H, W, 3] or [H, W, 3], got {frames.dtype} "
                             f"{frames.shape}")
        array = frames[None] if frames.ndim == 3 else frames
        return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float() / 255.0
    if not isinstance(frames, Tensor):
        raise TypeError(f"frames must be a torch tensor [B, 3, H, W] or a uint8 numpy array, got {type(frames)}")
    tensor = frames[None] if frames.dim() == 3 else frames
    if tensor.dim() != 4 or tensor.shape[1] != 3:
        raise ValueError(f"frames must be [B, 3, H, W], got {tuple(frames.shape)}")
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    if not tensor.is_floating_point():
        raise ValueError(f"frames must be float in [0, 1] or uint8, got {tensor.dtype}")
    return tensor


def frame_pair(generated: Tensor | np.ndarray, target: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Both batches as float [B, 3, H, W] on the generated frames' device, checked to have one shape."""
    generated, target = as_frames(generated), as_frames(target)
    if generated.shape != target.shape:
        raise ValueError(f"generated frames {tuple(generated.shape)} and targets {tuple(target.shape)} differ in shape")
    return generated, target.to(generated.device, generated.dtype)


def frame_batches(generated: Tensor | np.ndarray, target: Tensor | np.ndarray,
                  batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive (generated, target) float batches, converted one batch at a time (long uint8 videos stay small)."""
    generated, target = with_batch_axis(generated), with_batch_axis(target)
    if len(generated) != len(target):
        raise ValueError(f"{len(generated)} generated frames and {len(target)} targets differ in shape (frame count)")
    for part in batches(len(generated), batch_size):
        yield frame_pair(generated[part], target[part])


def with_batch_axis(frames: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """A single frame ([H, W, 3] numpy or [3, H, W] tensor) as a batch of one; batches unchanged, not converted."""
    return frames[None] if getattr(frames, "ndim", 0) == 3 else frames


def batches(count: int, size: int) -> Iterable[slice]:
    """Consecutive slices of at most ``size`` over ``count`` items."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return (slice(start, min(start + size, count)) for start in range(0, count, size))


def as_points(points: Tensor | np.ndarray, count: int | None = None, what: str = "landmarks") -> np.ndarray:
    """Landmarks [B, P, 2] (or one set [P, 2]) as float64 numpy; ``count`` checks P."""
    array = points.detach().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points)
    array = array[None] if array.ndim == 2 else array
    if array.ndim != 3 or array.shape[-1] < 2 or (count is not None and array.shape[1] != count):
        expected = f"[B, {count}, 2]" if count is not None else "[B, P, 2]"
        raise ValueError(f"{what} must be {expected} pixel coordinates, got {array.shape}")
    return array[..., :2].astype(np.float64)
