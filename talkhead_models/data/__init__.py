"""Raw sources, the processed-identity layout, and the synthetic corpus."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

Source = Literal["synthetic", "mead", "videos"]
"""The raw sources a pipeline reads (:mod:`talkhead_models.data.sources` reads each)."""
SOURCE_HELP = ("synthetic: the corpus the synth section generates; mead: MEAD as distributed, videos: one "
               "<ID>.mp4 per identity, both under data/raw/<source>")
"""What each source is, for the message refusing an unknown one."""


@dataclass(frozen=True)
class DataConfig:
    """Which raw data the pipeline reads (params.yaml ``data``)."""

    source: Annotated[Source, Field(description=f"one of {', '.join(typing.get_args(Source))} "
                                                f"({SOURCE_HELP})")] = "synthetic"
    """synthetic (the generated corpus), mead (MEAD as distributed) or videos (one <ID>.mp4 per identity)."""
    identities: tuple[str, ...] = ()
    """Identities to process; empty means every identity found in the source."""
