"""Raw sources, the processed-identity layout, and the synthetic corpus."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataConfig:
    """Which raw data the pipeline reads (params.yaml ``data``)."""

    source: str = "synthetic"
    """synthetic (the generated corpus), mead (MEAD as distributed) or videos (one <ID>.mp4 per identity)."""
    identities: tuple[str, ...] = ()
    """Identities to process; empty means every identity found in the source."""
