"""What the pipeline trains and evaluates: params.yaml ``runs`` crossed with ``seeds``.

``runs`` maps ``<method>-<identity>`` to ``{method, family, identity}``;
``seeds`` lists the training seeds (``[0]`` in the demo). Every run whose
method takes a seed (its config has a ``seed`` field) is trained once per
seed, each as its own DVC stage ``train@<method>-<identity>-s<seed>``;
reference rows (ground truth, static, nearest pose) learn nothing random,
so they run once, as seed 0. Seed 0 keeps the unsuffixed paths
(``data/models/<method>/<identity>``, ``reports/metrics/<method>/<identity>.json``);
seed k > 0 appends ``.seed<k>`` (``<identity>.seed1.json``), the name the
records loader reads back.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping

from talkhead_models.config import ConfigError, validate_name

DEFAULT_SEEDS = (0,)
_SEEDED_NAME = re.compile(r"^(?P<identity>[A-Za-z0-9_-]+)\.seed(?P<seed>[0-9]+)$")


def seed_suffix(seed: int) -> str:
    """The path suffix of ``seed``'s outputs: "" for seed 0 (the pipeline's own run), ``.seed<k>`` otherwise."""
    return "" if seed == 0 else f".seed{seed}"


def split_seed(name: str) -> tuple[str, int | None]:
    """An output's name read back: ``S001.seed2`` -> ("S001", 2); a name without the suffix -> (name, None)."""
    seeded = _SEEDED_NAME.match(name)
    return (seeded["identity"], int(seeded["seed"])) if seeded else (name, None)


def stage_key(method: str, identity: str, seed: int) -> str:
    """``<method>-<identity>-s<seed>``: the DVC stage key (``train@<key>``) and the MLflow run's name."""
    return f"{method}-{identity}-s{seed}"


@dataclass(frozen=True)
class Run:
    """One trained (or reference) run: a method on an identity with one seed."""

    method: str
    family: str
    identity: str
    seed: int = 0

    @property
    def key(self) -> str:
        """The DVC stage key: ``train@<key>``, ``evaluate@<key>``."""
        return stage_key(self.method, self.identity, self.seed)

    @property
    def suffix(self) -> str:
        return seed_suffix(self.seed)

    def item(self) -> dict[str, Any]:
        """The run as dvc.yaml's ``foreach`` item sees it (``${item.method}`` ...)."""
        return {"method": self.method, "family": self.family, "identity": self.identity, "seed": self.seed,
                "suffix": self.suffix}


def parse_seeds(params: Mapping[str, Any]) -> tuple[int, ...]:
    """params.yaml ``seeds``: distinct non-negative integers, at least one (absent: seed 0 only)."""
    seeds = params.get("seeds", list(DEFAULT_SEEDS))
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"params.yaml seeds: expected a non-empty list of integers such as [0, 1, 2], got {seeds!r}")
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"params.yaml seeds: {seed!r} is not a non-negative integer")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"params.yaml seeds: {seeds} lists a seed twice")
    return tuple(seeds)


def takes_seed(config: type) -> bool:
    """Whether a method's config has a training seed (reference rows have none)."""
    return dataclasses.is_dataclass(config) and any(f.name == "seed" for f in dataclasses.fields(config))


def expand_runs(params: Mapping[str, Any]) -> list[Run]:
    """Every (run, seed) the params ask for, in ``runs`` order then seed order.

    Each entry of ``runs`` must name a registered method of the family it
    says, on a valid identity, under its ``<method>-<identity>`` key.
    """
    from talkhead_models.methods import get_method

    runs = params.get("runs") or {}
    if not isinstance(runs, Mapping):
        raise ConfigError("params.yaml runs: expected a mapping <method>-<identity>: {method, family, identity}")
    seeds = parse_seeds(params)
    expanded: list[Run] = []
    for key, entry in runs.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"params.yaml runs.{key}: expected {{method, family, identity}}, got {entry!r}")
        missing = sorted({"method", "family", "identity"} - set(entry))
        unknown = sorted(set(entry) - {"method", "family", "identity"})
        if missing or unknown:
            raise ConfigError(f"params.yaml runs.{key}: missing {missing}, unknown {unknown}; "
                              "an entry is {method, family, identity}")
        method = validate_name(str(entry["method"]), "method")
        identity = validate_name(str(entry["identity"]), "identity")
        if key != f"{method}-{identity}":
            raise ConfigError(f"params.yaml runs.{key}: the key must be <method>-<identity> ({method}-{identity})")
        spec = get_method(method)
        if spec.family != entry["family"]:
            raise ConfigError(f"params.yaml runs.{key}: {method} belongs to family {spec.family!r}, "
                              f"not {entry['family']!r}")
        for seed in seeds if takes_seed(spec.config) else (0,):
            expanded.append(Run(method, spec.family, identity, seed))
    return expanded
