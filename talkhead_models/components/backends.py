"""Which fast GPU libraries can run here."""

from __future__ import annotations

import importlib.util

import torch


def cuda_library_available(module: str) -> bool:
    """True when ``module`` is installed and a CUDA device is present.

    Both conditions matter: gsplat imports on a CPU machine but its kernels
    try to compile and fail there; tinycudann needs a device at import.
    """
    return torch.cuda.is_available() and importlib.util.find_spec(module) is not None


def resolve_device(name: str, section: str) -> torch.device:
    """The torch device of a config's ``device`` ("auto": CUDA when present); CUDA asked for on a machine without
    it is an error naming ``section``'s key."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"{section}.device={name} but no CUDA device is available; use device: auto or cpu")
    return torch.device(name)
