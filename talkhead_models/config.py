"""Dataclass configs resolved from params.yaml.

Every config is a dataclass whose defaults are the paper's values (the
``paper`` profile). ``params.yaml`` may override a section in two places:

* ``<section>:`` at top level applies in every profile (seeds, sources);
* ``profiles.<profile>.<section>:`` applies only when ``profile`` selects it.

So switching ``profile: demo`` to ``profile: paper`` restores the papers'
sizes with one edit, and DVC sees exactly which keys a stage depends on.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")

DEMO_AID = "demo_aid"
"""Field metadata key: the field is a demo aid (not in the paper); its value is the label template."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
PAPER_PROFILE = "paper"


class ConfigError(ValueError):
    """A params file or override that cannot be turned into a config."""


def validate_name(name: str, kind: str = "name") -> str:
    """Return ``name`` if it is safe to use as a path component.

    Identity and method names become folder names; a separator or ``..``
    would let a name escape its folder, so only ``[A-Za-z0-9_-]+`` passes.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"invalid {kind} {name!r}: use letters, digits, '_' and '-' only "
            "(it becomes a folder name)"
        )
    return name


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read a params file with ``yaml.safe_load``; a missing file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found: run from the repository root or pass --params")
    with path.open() as handle:
        params = yaml.safe_load(handle) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return params


def section_overrides(params: Mapping[str, Any], section: str) -> dict[str, Any]:
    """The merged overrides for ``section``: top-level first, then the active profile's."""
    profile = params.get("profile", PAPER_PROFILE)
    merged: dict[str, Any] = {}
    _deep_update(merged, params.get(section) or {})
    profiles = params.get("profiles") or {}
    if profile != PAPER_PROFILE:
        if profile not in profiles:
            raise ConfigError(
                f"profile {profile!r} is not defined under 'profiles' in params.yaml "
                f"(defined: {sorted(profiles)}; '{PAPER_PROFILE}' needs no entry)"
            )
    _deep_update(merged, (profiles.get(profile) or {}).get(section) or {})
    return merged


def resolve(cls: type[T], params: Mapping[str, Any], section: str) -> T:
    """Build ``cls`` from its defaults plus the overrides params.yaml gives ``section``."""
    return from_dict(cls, section_overrides(params, section), where=section)


def from_dict(cls: type[T], values: Mapping[str, Any], where: str = "") -> T:
    """Instantiate a (possibly nested) dataclass, rejecting unknown keys by name."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in params section '{where or cls.__name__}'; "
            f"valid keys: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    return cls(**kwargs)


def demo_aid(default: Any, label: str) -> Any:
    """A config field that is a demo aid: a departure from the paper that the demo needs on a CPU.

    The default is the paper's value (the aid off); a run uses the aid when its value differs from the
    default. ``label`` names the aid in tables and claims and may use ``{value}`` and ``{default}``, e.g.
    ``"landmark grid {value}/{default} levels"``.
    """
    return dataclasses.field(default=default, metadata={DEMO_AID: label})


def demo_aids(config: Any) -> list[str]:
    """The labels of the demo aids ``config`` (and the configs nested in it) uses, in field order.

    An aid is in use when its value differs from the field's default, the paper's value.
    """
    labels: list[str] = []
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            labels += [label for label in demo_aids(value) if label not in labels]
            continue
        template = item.metadata.get(DEMO_AID)
        if template is None:
            continue
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        if value != default:
            label = template.format(value=_aid_text(value), default=_aid_text(default))
            if label not in labels:
                labels.append(label)
    return labels


def _aid_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_aid_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a config, for logging and manifests."""
    return dataclasses.asdict(config)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; what MLflow params expect."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if dataclasses.is_dataclass(option) and isinstance(value, Mapping):
                return from_dict(option, value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _deep_update(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value
