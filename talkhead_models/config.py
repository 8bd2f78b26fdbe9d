"""Dataclass configs resolved from params.yaml.

Every config is a dataclass whose defaults are the paper's values (the
``paper`` profile). ``params.yaml`` may override a section in two places:

* ``<section>:`` at top level applies in every profile (seeds, sources);
* ``profiles.<profile>.<section>:`` applies only when ``profile`` selects it.

So switching ``profile: demo`` to ``profile: paper`` restores the papers'
sizes with one edit, and DVC sees exactly which keys a stage depends on.

Values are checked on the way in (pydantic, strict): a field's annotation is
its contract, so ``image_size: "256"``, ``skip_unreadable: "no"``,
``iterations: 800.5`` or ``decay_at: 0.8`` are refused instead of reaching a
stage as a string, a truthy string or a float. The vocabulary below gives
the usual bounds a name (:data:`PositiveInt`, :data:`Fraction`, ...);
enum-like fields are ``Literal`` types. Every refusal names the key as
params.yaml spells it (``profiles.demo.crop.image_size``), the value and what
is allowed, one line per mistake (``ConfigError.problems``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Literal, Mapping, TypeVar

import annotated_types
import yaml
from pydantic import Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

T = TypeVar("T")

PositiveInt = Annotated[int, annotated_types.Ge(1)]
"""A size or count that must be at least 1 (image sides, iterations, layers, ``*_every`` intervals)."""
NonNegativeInt = Annotated[int, annotated_types.Ge(0)]
"""A count where 0 means none, off or no limit (seeds, optional steps, thread counts with 0 = default)."""
PositiveFloat = Annotated[float, annotated_types.Gt(0)]
"""A strictly positive quantity (rates, scales, lengths)."""
NonNegativeFloat = Annotated[float, annotated_types.Ge(0)]
"""A weight, margin or learning rate where 0 means off."""
Fraction = Annotated[float, annotated_types.Interval(ge=0, le=1)]
"""A share, probability or fraction of a schedule, in [0, 1]."""
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
                              description="auto, cpu, cuda or cuda:<index>")]
"""A torch device: auto (CUDA when available), cpu, cuda or cuda:<index>."""

DEMO_AID = "demo_aid"
"""Field metadata key: the field is a demo aid (not in the paper); its value is the label template."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
NAME_MAX_LENGTH = 64
"""Longest identity or method name: it becomes a folder name, and ``<method>-<identity>-s<seed>`` a DVC stage key
and an MLflow run name, which must stay well inside the file systems' 255-byte limit."""
PAPER_PROFILE = "paper"
PARAMS_KEYS = ("profile", "profiles", "seeds", "runs", "ablation_runs", "tables_scope")
"""Top-level params.yaml keys that are not config sections (and so may not appear under a profile)."""


class ConfigError(ValueError):
    """A params file or override that cannot be turned into a config.

    ``problems`` holds one line per mistake (what ``python -m stages.check`` prints); the message joins them.
    """

    def __init__(self, *problems: str) -> None:
        lines = [str(problem) for problem in problems]
        super().__init__("\n".join(lines))
        self.problems = lines


def validate_name(name: str, kind: str = "name") -> str:
    """Return ``name`` if it is safe to use as a path component.

    Identity and method names become folder names; a separator or ``..``
    would let a name escape its folder, so only ``[A-Za-z0-9_-]+`` passes,
    at most :data:`NAME_MAX_LENGTH` characters.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"invalid {kind} {name!r}: use letters, digits, '_' and '-' only "
            "(it becomes a folder name)"
        )
    if len(name) > NAME_MAX_LENGTH:
        raise ConfigError(f"invalid {kind} {name[:20]}...: {len(name)} characters; use at most {NAME_MAX_LENGTH} "
                          "(it becomes a folder name and part of a DVC stage key)")
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
    _deep_update(merged, _section_mapping(params.get(section), section))
    profiles = _section_mapping(params.get("profiles"), "profiles")
    if not isinstance(profile, str):
        raise ConfigError(f"profile: got {_shown(profile)}; expected the name of a profile under 'profiles' "
                          f"(defined: {sorted(map(str, profiles))}) or '{PAPER_PROFILE}'")
    if profile != PAPER_PROFILE:
        if profile not in profiles:
            raise ConfigError(
                f"profile {profile!r} is not defined under 'profiles' in params.yaml "
                f"(defined: {sorted(profiles)}; '{PAPER_PROFILE}' needs no entry)"
            )
    chosen = _section_mapping(profiles.get(profile), f"profiles.{profile}")
    _deep_update(merged, _section_mapping(chosen.get(section), f"profiles.{profile}.{section}"))
    return merged


def resolve(cls: type[T], params: Mapping[str, Any], section: str, *, shared_sections: Iterable[str] = (),
            pinned: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from its defaults plus the overrides params.yaml gives ``section``.

    ``shared_sections`` are other sections the config embeds as fields of the same name (a stage's ``data``);
    ``pinned`` values go on top of params (an ablation variant's switches, which params must not undo). A
    refused value is named where params.yaml sets it: ``profiles.demo.crop.image_size`` or ``crop.image_size``.
    """
    own = section_overrides(params, section)
    overrides = dict(own)
    for shared in shared_sections:
        overrides = {shared: section_overrides(params, shared), **overrides}
    overrides.update(pinned or {})
    shared_set = frozenset(shared_sections)

    def locate(keys: tuple[str, ...]) -> str:
        if keys and keys[0] in shared_set and keys[0] not in own:
            return params_key(params, keys[0], keys[1:])
        return params_key(params, section, keys)

    return from_dict(cls, overrides, where=section, locate=locate)


def params_key(params: Mapping[str, Any], section: str, keys: tuple[str, ...] = ()) -> str:
    """Where params.yaml sets ``section``.``keys``: under the active profile when it does, else at top level."""
    profile = params.get("profile", PAPER_PROFILE)
    profiles = params.get("profiles")
    chosen = profiles.get(profile) if isinstance(profiles, Mapping) else None
    in_profile = chosen.get(section) if isinstance(chosen, Mapping) else None
    if _has_path(in_profile, keys):
        return ".".join(("profiles", str(profile), section, *keys))
    return ".".join((section, *keys))


def unknown_sections(params: Mapping[str, Any], sections: Iterable[str]) -> list[str]:
    """One line per params.yaml section that no config reads (a typo such as ``crpo:`` is ignored otherwise).

    ``sections`` are the known ones; the top level may also hold :data:`PARAMS_KEYS`, a profile only sections.
    """
    known = sorted(set(sections))

    def unknown(name: str, key: str, candidates: list[str]) -> str:
        hint = _did_you_mean(key, candidates) or f"; sections: {', '.join(known)}"
        return f"{name}: unknown params section{hint}"

    problems = [unknown(key, key, [*known, *PARAMS_KEYS]) for key in params if key not in known
                and key not in PARAMS_KEYS]
    profiles = params.get("profiles") or {}
    if not isinstance(profiles, Mapping):
        return problems + [f"profiles: got {_shown(profiles)}; expected a mapping <profile>: {{<section>: ...}}"]
    for profile, body in profiles.items():
        if not isinstance(body, Mapping):
            if body is not None:
                problems.append(f"profiles.{profile}: got {_shown(body)}; expected a mapping <section>: {{...}}")
            continue
        for key in body:
            if key in PARAMS_KEYS:
                problems.append(f"profiles.{profile}.{key}: {key!r} is a top-level key of params.yaml, not a "
                                "section a profile can override; move it to the top level")
            elif key not in known:
                problems.append(unknown(f"profiles.{profile}.{key}", key, known))
    return problems


def from_dict(cls: type[T], values: Mapping[str, Any], where: str = "",
              locate: Callable[[tuple[str, ...]], str] | None = None) -> T:
    """Instantiate a (possibly nested) dataclass from ``values``, checked against its fields' annotations.

    Unknown keys, values of the wrong type (strictly: a string is not a number, 1 is not ``true``; an integer
    is accepted for a float, a list for a tuple) and values outside a field's bounds are refused, all of them
    at once, each on its own line naming the key (``locate`` turns a key path into the name shown; by default
    ``where`` and the keys joined by dots), the value and what is allowed. The dataclass's own
    ``__post_init__`` checks then run as before.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if locate is None:
        def locate(keys: tuple[str, ...]) -> str:
            return ".".join((where, *keys)) if where else ".".join(keys) or cls.__name__
    problems: list[str] = []
    config = _build(cls, values, (), locate, problems)
    if problems:
        raise ConfigError(*problems)
    return config


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


def _build(cls: type, values: Any, keys: tuple[str, ...], locate: Callable[[tuple[str, ...]], str],
           problems: list[str]) -> Any:
    """``cls`` from ``values``, or None with the reasons appended to ``problems``."""
    fields = {item.name: item for item in dataclasses.fields(cls) if item.init}
    if not isinstance(values, Mapping):
        problems.append(f"{locate(keys)}: got {_shown(values)}; expected a mapping of {cls.__name__}'s keys "
                        f"({', '.join(fields)})")
        return None
    found = len(problems)
    for key in values:
        if key not in fields:
            hint = _did_you_mean(str(key), list(fields)) or f"; valid keys: {', '.join(sorted(fields))}"
            problems.append(f"{locate((*keys, str(key)))}: unknown key{hint}")
    hints = _hints(cls)
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            continue
        hint, path = hints[name], (*keys, name)
        nested = _dataclass_option(hint, value)
        if nested is not None:
            kwargs[name] = value if isinstance(value, nested) else _build(nested, value, path, locate, problems)
            continue
        try:
            kwargs[name] = _adapter(hint).validate_python(_lists_as_tuples(hint, value), strict=True)
        except ValidationError:
            problems.append(f"{locate(path)}: got {_shown(value)}; expected {describe(hint)}")
    if len(problems) > found:
        return None
    try:
        return cls(**kwargs)
    except ValueError as exc:
        # A check across fields (__post_init__): name the section it concerns, keep the dataclass's words.
        problems.append(f"{locate(keys)}: {exc}")
        return None


def describe(hint: Any) -> str:
    """What a field accepts, in words (``an integer >= 1``, ``one of 'a', 'b'``, ``a list of 2 numbers``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        described = [m.description for m in args[1:] if isinstance(m, FieldInfo) and m.description]
        if described:
            return described[0]
        bounds = [text for m in args[1:] for text in _bound_texts(m)]
        return " ".join([describe(args[0]), " and ".join(bounds)]) if bounds else describe(args[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list, each item {describe(args[0])}"
        if args and all(a == args[0] for a in args):
            return f"a list of {len(args)} items, each {describe(args[0])}"
        return "a list of " + ", ".join(describe(a) for a in args)
    if dataclasses.is_dataclass(hint):
        return f"a mapping of {hint.__name__}'s keys"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _bound_texts(metadata: Any) -> list[str]:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    bounds = []
    for attribute, symbol in symbols.items():
        bound = getattr(metadata, attribute, None)
        if bound is not None and isinstance(metadata, (annotated_types.BaseMetadata, annotated_types.Interval)):
            bounds.append(f"{symbol} {bound:g}" if isinstance(bound, float) else f"{symbol} {bound}")
    return bounds


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _adapter(hint: Any) -> TypeAdapter:
    try:
        return _cached_adapter(hint)
    except TypeError:  # an unhashable annotation: build it each time
        return TypeAdapter(hint)


@functools.lru_cache(maxsize=None)
def _cached_adapter(hint: Any) -> TypeAdapter:
    return TypeAdapter(hint)


def _dataclass_option(hint: Any, value: Any) -> type | None:
    """The dataclass a field's value is built as: the annotation itself, or a dataclass option of a union when the
    value is a mapping (or already an instance)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if dataclasses.is_dataclass(option) and (isinstance(value, (Mapping, option)) or len(options) == 1):
            return option
    return None


def _lists_as_tuples(hint: Any, value: Any) -> Any:
    """YAML has no tuples: a list given for a tuple field (at any depth) becomes one, so strict checking applies
    to its items."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _lists_as_tuples(args[0], value)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            value = _lists_as_tuples(option, value)
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_lists_as_tuples(args[0], item) for item in value)
        return tuple(_lists_as_tuples(args[i], item) if i < len(args) else item for i, item in enumerate(value))
    return value


def _has_path(mapping: Any, keys: tuple[str, ...]) -> bool:
    """Whether ``mapping`` holds ``keys`` (nested); with no keys, whether it holds anything."""
    if not isinstance(mapping, Mapping):
        return False
    if not keys:
        return bool(mapping)
    if keys[0] not in mapping:
        return False
    return len(keys) == 1 or _has_path(mapping[keys[0]], keys[1:])


def _section_mapping(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: got {_shown(value)}; expected a mapping of keys (or nothing)")
    return value


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f": did you mean {close[0]!r}?" if close else ""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _deep_update(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value
