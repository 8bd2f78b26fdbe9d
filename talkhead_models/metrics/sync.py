"""Sync, LSE-C and LSE-D: lip-sync scores from a sync scorer (SyncNet, or the project's sync expert).

This module does not hold a sync network. It defines what a scorer must
offer (:class:`SyncScorer`) and turns one scorer call into the three table
values, labelled with the scorer's provenance:

* **LSE-C** (lip-sync error, confidence): SyncNet's confidence at the best
  audio-video offset (median minus minimum of the mean distances over the
  offsets searched), higher is better;
* **LSE-D** (distance): the minimum mean embedding distance, lower is better;
* **Sync**: the "Sync" column of the NeRF papers, SyncNet's confidence, the
  same number as LSE-C.

The offset found (in video frames) goes into the notes: a large one says
the audio and video are shifted rather than badly synced.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from talkhead_models.metrics.base import REFERENCE, SUBSTITUTE_PREFIX, MetricValue, substitute

log = logging.getLogger(__name__)

SYNC_METRICS = ("Sync", "LSE-C", "LSE-D")


@runtime_checkable
class SyncScorer(Protocol):
    """Anything that scores lip sync the way syncnet_python's evaluation does (talkhead_models.pretrained.lse).

    ``score(frames_or_mouths, audio)`` takes the video (frames or mouth
    crops, as the scorer expects them) and its audio (waveform or log-mel,
    as it expects), and returns ``(lse_c, lse_d, offset)`` or an object with
    ``confidence``, ``distance`` and ``offset`` (``pretrained.lse.SyncScore``).
    The offset is in video frames with syncnet_python's sign: a video whose
    audio is delayed by k frames scores -k. A scorer may carry
    ``reference``: "reference" when it is SyncNet with its published
    weights, or "substitute: <what>"; without it, values are labelled as a
    substitute named after the scorer's class. A scorer whose weights are
    missing raises FileNotFoundError (or metrics.MissingWeightsError).
    """

    def score(self, frames_or_mouths: Any, audio: Any) -> Any: ...


def scorer_reference(scorer: SyncScorer) -> str:
    """The scorer's declared provenance, or a substitute label naming its class."""
    declared = getattr(scorer, "reference", None)
    if isinstance(declared, str) and (declared == REFERENCE or declared.startswith(SUBSTITUTE_PREFIX)):
        return declared
    return substitute(f"sync scorer {type(scorer).__name__}")


def sync_metrics(scorer: SyncScorer | None, frames_or_mouths: Any, audio: Any,
                 missing_reason: str = "no sync scorer: neither SyncNet (syncnet_v2.model) nor a trained sync "
                                       "expert is available") -> dict[str, MetricValue]:
    """``{"Sync", "LSE-C", "LSE-D"}`` from one ``scorer.score`` call; n/a with the reason without a scorer."""
    if scorer is None:
        log.warning("lip-sync metrics not measured: %s", missing_reason)
        return _not_available(missing_reason)
    if not isinstance(scorer, SyncScorer):
        raise TypeError(f"{type(scorer).__name__} has no score(frames_or_mouths, audio) method")
    try:
        result = scorer.score(frames_or_mouths, audio)
    except FileNotFoundError as error:
        log.warning("lip-sync metrics not measured: %s", error)
        return _not_available(str(error))
    if all(hasattr(result, key) for key in ("confidence", "distance", "offset")):
        lse_c, lse_d, offset = result.confidence, result.distance, result.offset
    else:
        lse_c, lse_d, offset = result
    reference = scorer_reference(scorer)
    note = f"audio-video offset {int(offset)} frames"
    return {
        "Sync": MetricValue("Sync", float(lse_c), reference=reference,
                            note=f"SyncNet confidence (= LSE-C); {note}"),
        "LSE-C": MetricValue("LSE-C", float(lse_c), reference=reference, note=note),
        "LSE-D": MetricValue("LSE-D", float(lse_d), reference=reference, note=note, higher_is_better=False),
    }


def _not_available(reason: str) -> dict[str, MetricValue]:
    return {name: MetricValue.not_available(name, reason, higher_is_better=name != "LSE-D") for name in SYNC_METRICS}
