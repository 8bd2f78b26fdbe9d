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
