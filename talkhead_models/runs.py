"""What the pipeline trains and evaluates: params.yaml ``runs`` (and ``ablation_runs``) crossed with ``seeds``.

``runs`` maps ``<method>-<identity>`` to ``{method, family, identity}``:
the rows of the papers' comparison tables, which ``make demo`` fills.
``ablation_runs`` has the same form: the variants only the ablation tables
show (and S3D-NeRF's runs until the demo has room for them), trained when ``tables_scope`` is ``full`` (``make tables-full``;
docs/BUDGET.md says why the demo leaves them out).
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
TABLE_SCOPES = ("demo", "full")
"""params.yaml ``tables_scope``: ``demo`` trains ``runs``; ``full`` adds ``ablation_runs``."""
RUN_SECTIONS = ("runs", "ablation_runs")
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
    across_identities: bool = False
    """The method trains across identities (``MethodSpec.across_identities``): its stages read every processed
    identity."""

    @property
    def key(self) -> str:
        """The DVC stage key: ``train@<key>``, ``evaluate@<key>``."""
        return stage_key(self.method, self.identity, self.seed)

    @property
    def suffix(self) -> str:
        return seed_suffix(self.seed)

    def item(self) -> dict[str, Any]:
        """The run as dvc.yaml's ``foreach`` item sees it (``${item.method}`` ...)."""
        processed = "data/processed" if self.across_identities else f"data/processed/{self.identity}"
        return {"method": self.method, "family": self.family, "identity": self.identity, "seed": self.seed,
                "suffix": self.suffix, "processed": processed}


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


def tables_scope(params: Mapping[str, Any]) -> str:
    """params.yaml ``tables_scope`` (absent: ``demo``)."""
    scope = params.get("tables_scope", "demo")
    if scope not in TABLE_SCOPES:
        raise ConfigError(f"params.yaml tables_scope: got {scope!r}; expected one of {', '.join(TABLE_SCOPES)} "
                          "(`make demo` keeps it, `make tables-full` sets full)")
    return scope


def run_entries(params: Mapping[str, Any], sections: tuple[str, ...] | None = None) -> dict[str, tuple[str, Any]]:
    """``<method>-<identity>`` -> (section, entry) of ``sections`` (default: those ``tables_scope`` trains); a key in
    two sections is refused."""
    if sections is None:
        sections = RUN_SECTIONS if tables_scope(params) == "full" else RUN_SECTIONS[:1]
    entries: dict[str, tuple[str, Any]] = {}
    for section in sections:
        runs = params.get(section) or {}
        if not isinstance(runs, Mapping):
            raise ConfigError(f"params.yaml {section}: expected a mapping <method>-<identity>: "
                              "{method, family, identity}")
        for key, entry in runs.items():
            if key in entries:
                raise ConfigError(f"params.yaml {section}.{key}: also in {entries[key][0]}; list a run once")
            entries[key] = (section, entry)
    return entries


def expand_runs(params: Mapping[str, Any], sections: tuple[str, ...] | None = None) -> list[Run]:
    """Every (run, seed) the params ask for, in ``runs`` then ``ablation_runs`` order, then seed order.

    Each entry must name a registered method of the family it says, on a
    valid identity, under its ``<method>-<identity>`` key. ``sections``
    (default: what ``tables_scope`` trains) picks the params sections read.
    """
    from talkhead_models.methods import get_method

    seeds = parse_seeds(params)
    expanded: list[Run] = []
    for key, (section, entry) in run_entries(params, sections).items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"params.yaml {section}.{key}: expected {{method, family, identity}}, got {entry!r}")
        missing = sorted({"method", "family", "identity"} - set(entry))
        unknown = sorted(set(entry) - {"method", "family", "identity"})
        if missing or unknown:
            raise ConfigError(f"params.yaml {section}.{key}: missing {missing}, unknown {unknown}; "
                              "an entry is {method, family, identity}")
        method = validate_name(str(entry["method"]), "method")
        identity = validate_name(str(entry["identity"]), "identity")
        if key != f"{method}-{identity}":
            raise ConfigError(f"params.yaml {section}.{key}: the key must be <method>-<identity> "
                              f"({method}-{identity})")
        spec = get_method(method)
        if spec.family != entry["family"]:
            raise ConfigError(f"params.yaml {section}.{key}: {method} belongs to family {spec.family!r}, "
                              f"not {entry['family']!r}")
        for seed in seeds if takes_seed(spec.config) else (0,):
            expanded.append(Run(method, spec.family, identity, seed, spec.across_identities))
    return expanded
