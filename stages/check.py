"""``python -m stages.check [--params FILE] [--write-runs]``: refuse a params file before any stage runs.

A mistake in params.yaml is found here in a few seconds, one line each,
instead of by the stage that reads it, possibly an hour into ``dvc repro``:

* sections: one that no stage, method family or shared config reads (``crpo:``,
  ``profiles.demo.r2talkr:``) would otherwise be ignored silently;
* values: every stage's and every registered method's config, resolved for the
  active profile, the paper profile and any other profile params defines
  (types, bounds, choices, unknown keys: :func:`talkhead_models.config.resolve`);
* ``seeds``: non-negative integers, none twice;
* ``runs`` and ``ablation_runs``: each entry's method registered and of the
  family it names, its identity a valid name that the source holds (and
  ``data.identities`` lists, when it lists any), whatever ``tables_scope``
  trains; ``tables_scope`` itself (``demo`` or ``full``);
* the source: ``data.source`` one of :data:`talkhead_models.data.sources.SOURCES`.
  The synthetic corpus's identities follow from the ``synth`` section, so a
  fresh checkout without data/ passes; a folder source's are those found in
  its folder (``data/raw/<source>``);
* dvc.yaml's params present: every section its stages list (``crop``,
  ``profiles.${profile}.crop``, ``profiles.${profile}.${item.family}`` for the
  families ``runs`` trains) is in params, at top level and under the active
  profile, so a profile of one's own that lacks one is a line here, not a
  DVC failure after a stage ran (no dvc.yaml beside the params file: skipped);
* dvc.runs.yaml in step with the runs ``tables_scope`` trains x ``seeds`` (``--write-runs`` rewrites it
  instead, once everything else passes: what ``make demo`` runs).

Exit status 1 when anything is wrong. ``make demo`` and CI run it first;
:func:`problems` is the same check for a flow.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

import stages
from stages import _runs
from stages._stage import Stage, configure_logging
from talkhead_models.config import (PAPER_PROFILE, PARAMS_KEYS, ConfigError, load_params, params_key, resolve,
                                    section_overrides, unknown_sections)
from talkhead_models.data import DataConfig
from talkhead_models.data.sources import identities as folder_identities
from talkhead_models.data.synthetic.corpus import SynthConfig
from talkhead_models.methods import get_method, method_names
from talkhead_models.runs import RUN_SECTIONS, expand_runs, parse_seeds, tables_scope

log = logging.getLogger(__name__)

RAW_STAGE = "crop"
"""The stage that reads the raw source; its ``raw`` input is where a folder source's identities are."""
DVC_FILE = "dvc.yaml"
PROFILE_PARAM = "profiles.${profile}."
"""How dvc.yaml names a section under the active profile."""
FAMILY_PARAM = "${item.family}"
"""How the train and evaluate stages name their method family's section (one per family that ``runs`` trains)."""
EMPTY_PARAMS = {"runs": "{}", "seeds": "[0]"}
"""What a top-level key that is not a section holds when it asks for nothing (``profile`` is told apart)."""


def pipeline_stages() -> list[Stage]:
    """Every DVC stage: the ``STAGE`` of each module of the stages package."""
    found = []
    for module in sorted(pkgutil.iter_modules(stages.__path__), key=lambda m: m.name):
        if module.name.startswith("_") or module.name == "check":
            continue
        stage = getattr(importlib.import_module(f"stages.{module.name}"), "STAGE", None)
        if isinstance(stage, Stage):
            found.append(stage)
    return found


def known_sections(pipeline: Iterable[Stage]) -> set[str]:
    """Params sections some config reads: each stage's own and shared ones, and each method family's."""
    sections = {name for stage in pipeline for name in (stage.section, *stage.shared_sections)}
    return sections | {get_method(name).family for name in method_names()}


def problems(params: Mapping[str, Any], root: Path, write_runs: bool = False) -> list[str]:
    """One line per mistake in ``params`` (read from ``root``/params.yaml or another file in ``root``).

    ``write_runs``: bring ``root``/dvc.runs.yaml up to date when nothing else is wrong, instead of reporting it.
    """
    pipeline = pipeline_stages()
    sections = known_sections(pipeline)
    found = unknown_sections(params, sections)
    found += _config_problems(params, pipeline)
    found += dvc_param_problems(params, root, sections)
    _collect(found, lambda: parse_seeds(params))
    valid_runs = _run_entry_problems(params, found)
    found += _source_problems(params, root, pipeline, valid_runs)
    # dvc.runs.yaml follows from runs x seeds: judged (or written) only once the params themselves pass, so a
    # mistake in them is one line, not also a stale file
    if not found:
        _collect(found, lambda: _runs.write(root, params) if write_runs else _runs.check(root, params))
    # a top-level mistake is met once per profile: say it once; the caller names the file
    return list(dict.fromkeys(line.removeprefix("params.yaml ") for line in found))


def _config_problems(params: Mapping[str, Any], pipeline: list[Stage]) -> list[str]:
    found: list[str] = []
    profiles = params.get("profiles")
    defined = list(profiles) if isinstance(profiles, Mapping) else []
    active = params.get("profile", PAPER_PROFILE)
    if not isinstance(active, str):
        _collect(found, lambda: section_overrides(params, "data"))  # refuses the value of `profile`, once
        active = PAPER_PROFILE
    for profile in dict.fromkeys([active, PAPER_PROFILE, *map(str, defined)]):
        chosen = {**params, "profile": profile}
        for stage in pipeline:
            _collect(found, lambda: stage.resolve_config(chosen))
        for name in method_names():
            spec = get_method(name)
            _collect(found, lambda: spec.resolve_params(chosen))
    return found


def dvc_params(root: Path) -> tuple[set[str], set[str]] | None:
    """The params.yaml sections dvc.yaml's stages list: (top-level sections, sections under ``profiles.${profile}``).

    ``${item.family}`` stays as it is (the caller knows the families); keys naming another file or other
    variables are left out. None when ``root`` has no dvc.yaml.
    """
    path = root / DVC_FILE
    if not path.is_file():
        return None
    top: set[str] = set()
    profile: set[str] = set()

    def section(key: str) -> str:
        return FAMILY_PARAM if key.startswith(FAMILY_PARAM) else key.split(".")[0]

    for entry in ((yaml.safe_load(path.read_text()) or {}).get("stages") or {}).values():
        body = entry.get("do", entry) if isinstance(entry, Mapping) else {}
        for key in body.get("params") or []:
            if not isinstance(key, str):
                continue  # {other_file: [keys]}
            if key.startswith(PROFILE_PARAM):
                profile.add(section(key[len(PROFILE_PARAM):]))
            elif "${" not in key.replace(FAMILY_PARAM, ""):
                top.add(section(key))
    return top, profile


def dvc_param_problems(params: Mapping[str, Any], root: Path, sections: Iterable[str]) -> list[str]:
    """One line per section dvc.yaml's stages list that params lacks (DVC refuses a missing params key, but only
    once it reaches the stage, maybe after others ran): at top level, and under the active profile, one line per
    profile."""
    listed = dvc_params(root)
    profile = params.get("profile", PAPER_PROFILE)
    profiles = params.get("profiles")
    if listed is None or not isinstance(profile, str) or not isinstance(profiles, (Mapping, type(None))):
        return []  # no DVC here, or `profile` / `profiles` themselves are wrong (reported with the configs)
    top, under_profile = listed
    entries = [entry for section in RUN_SECTIONS if isinstance(params.get(section), Mapping)
               for entry in params[section].values()]
    families = {entry["family"] for entry in entries
                if isinstance(entry, Mapping) and isinstance(entry.get("family"), str)}
    families &= set(sections)  # an unknown family is reported with its run

    def expanded(names: set[str]) -> list[str]:
        return sorted((names - {FAMILY_PARAM}) | (families if FAMILY_PARAM in names else set()))

    found = [f"{name}: missing section (dvc.yaml's stages read it; add `{name}: {{}}`, empty for the defaults)"
             for name in expanded(top) if name not in params and name not in PARAMS_KEYS]
    found += [f"{name}: missing (dvc.yaml's stages read it; add `{name}: {EMPTY_PARAMS[name]}`)"
              for name in sorted(top & EMPTY_PARAMS.keys()) if name not in params]
    if "profile" in top and "profile" not in params:
        found.append(f"profile: missing (dvc.yaml's stages read {PROFILE_PARAM}<section>; add `profile: "
                     f"{PAPER_PROFILE}` or the name of another profile under profiles)")
    wanted = expanded(under_profile)
    if profile not in (profiles or {}):
        if profile == PAPER_PROFILE and "profile" in params and wanted:
            found.append(f"profiles.{profile}: missing (dvc.yaml's stages read profiles.{profile}.<section>; add "
                         f"`{profile}:` under profiles with each of {', '.join(wanted)} as `<section>: {{}}`)")
        return found  # another undefined profile is reported with the configs; a missing `profile` just above
    body = profiles[profile]
    if not isinstance(body, (Mapping, type(None))):
        return found  # reported with the unknown sections
    missing = [name for name in wanted if name not in (body or {})]
    if len(missing) == 1:
        found.append(f"profiles.{profile}: missing section {missing[0]!r} (dvc.yaml's stages read it; add "
                     f"`{missing[0]}: {{}}`, empty for the defaults)")
    elif missing:
        found.append(f"profiles.{profile}: missing sections {', '.join(map(repr, missing))} (dvc.yaml's stages "
                     f"read them; add each as `<section>: {{}}`, empty for the defaults)")
    return found


def _run_entry_problems(params: Mapping[str, Any], found: list[str]) -> dict[str, str] | None:
    """Each ``runs`` and ``ablation_runs`` entry checked on its own, so that every bad entry gets its line (the
    ablation runs too in the demo scope: ``make tables-full`` must not fail on them late), and ``tables_scope``.

    Returns the identity of each run by ``<section>.<key>`` when all entries passed, else None.
    """
    if not _collect(found, lambda: tables_scope(params)):
        return None
    identities: dict[str, str] = {}
    total = 0
    for section in RUN_SECTIONS:
        runs = params.get(section) or {}
        if not isinstance(runs, Mapping):
            found.append(f"{section}: got {runs!r}; expected a mapping <method>-<identity>: "
                         "{method, family, identity}")
            return None
        total += len(runs)
        for key, entry in runs.items():
            errors: list[str] = []
            if f"runs.{key}" in identities:
                found.append(f"{section}.{key}: listed in runs too; list a run once")
                continue
            # seeds are checked once, by the caller; [0] keeps a bad seeds list from failing every entry again
            if _collect(errors, lambda: expand_runs({section: {key: entry}, "seeds": [0]}, sections=(section,))):
                identities[f"{section}.{key}"] = entry["identity"]
            found += [error if f"{section}.{key}" in error else f"{section}.{key}: {error}" for error in errors]
    return identities if len(identities) == total else None


def processed_identities(params: Mapping[str, Any], root: Path) -> list[str]:
    """The identities the per-identity stages process: ``data.identities``, or every identity the source holds
    (for the synthetic source, those ``synth`` will generate); refused when the source cannot say."""
    data = resolve(DataConfig, params, "data")
    if data.identities:
        return list(data.identities)
    found: list[str] = []
    available = _source_identities(data.source, params, root, pipeline_stages(), found)
    if available is None:
        raise ConfigError(*(found or [f"data.source: the identities of {data.source!r} cannot be known"]))
    return available


def _source_problems(params: Mapping[str, Any], root: Path, pipeline: list[Stage],
                     run_identities: Mapping[str, str] | None) -> list[str]:
    """``data.source`` known, and every identity that ``data.identities``, ``runs`` (the entries that are valid
    otherwise) and ``pretrain`` name in it."""
    found: list[str] = []
    try:
        data = resolve(DataConfig, params, "data")
    except ConfigError:
        return found  # reported with the stages' configs (an unknown source too: DataConfig.source is a Literal)
    available = _source_identities(data.source, params, root, pipeline, found)
    if available is None:
        return found
    where = f"the {data.source} source ({', '.join(available) or 'no identities'})"
    for identity in data.identities:
        if identity not in available:
            found.append(f"{params_key(params, 'data', ('identities',))}: {identity!r} is not in {where}")
    processed = [name for name in data.identities if name in available] or available
    if data.identities:
        where = f"data.identities ({', '.join(data.identities)})"
    for key, identity in (run_identities or {}).items():  # "<section>.<method>-<identity>"
        if identity not in processed:
            found.append(f"{key}.identity: {identity!r} is not processed: it is not in {where}")
    try:
        holdout = section_overrides(params, "pretrain").get("holdout_identity", "")
    except ConfigError:
        return found
    if isinstance(holdout, str) and holdout and holdout not in processed:
        found.append(f"{params_key(params, 'pretrain', ('holdout_identity',))}: {holdout!r} is not in {where}; "
                     "leave it empty to hold out the last one")
        return found
    held_out = holdout if isinstance(holdout, str) and holdout else sorted(processed)[-1]
    for key, identity in (run_identities or {}).items():
        section, run = key.split(".", 1)
        # A method trained across identities is evaluated on the one it never saw; the frozen corpus-level
        # models it trains against (the sync expert) must not have seen it either.
        if get_method(params[section][run]["method"]).across_identities and identity != held_out:
            found.append(f"{key}.identity: {identity!r} is not the identity the corpus-level models hold out "
                         f"({held_out!r}, {params_key(params, 'pretrain', ('holdout_identity',))}): its sync "
                         "expert would have trained on it; evaluate it on that identity or hold this one out")
    return found


def _source_identities(source: str, params: Mapping[str, Any], root: Path, pipeline: list[Stage],
                       found: list[str]) -> list[str] | None:
    """The identities ``source`` holds, or None (with the reason in ``found``) when they cannot be known."""
    if source == "synthetic":
        try:
            return resolve(SynthConfig, params, "synth").identity_names()
        except ConfigError:
            return None  # reported with the synth stage's config
    folder = _raw_folder(root, source, pipeline)
    key = params_key(params, "data", ("source",))
    if not folder.is_dir():
        found.append(f"{key}: {source!r} reads {folder}, which does not exist: put the recordings there "
                     "(docs/OWN_VIDEO.md) or use source: synthetic")
        return None
    try:
        return folder_identities(source, folder)
    except ConfigError as exc:
        found.append(f"{key}: {folder} holds a recording whose name cannot be an identity: {exc}")
        return None


def _raw_folder(root: Path, source: str, pipeline: list[Stage]) -> Path:
    raw = next(stage for stage in pipeline if stage.name == RAW_STAGE).inputs["raw"]
    return root / raw.replace("{source}", source)


def _collect(found: list[str], check: Callable[[], object]) -> bool:
    """Run ``check``; append its refusal's lines to ``found``. Whether it passed."""
    try:
        check()
    except ConfigError as exc:
        found += exc.problems
    except (KeyError, ValueError) as exc:  # get_method's unknown name, a dataclass's own check
        found.append(str(exc.args[0]) if exc.args else repr(exc))
    else:
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--write-runs", action="store_true",
                        help="once the params pass, write dvc.runs.yaml from them instead of checking it")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        params = load_params(args.params)
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    except yaml.YAMLError as exc:
        log.error("%s: cannot be read as YAML: %s", args.params, str(exc).replace("\n", " "))
        return 1
    found = problems(params, Path(args.params).resolve().parent, write_runs=args.write_runs)
    for problem in found:
        log.error("%s: %s", args.params, problem)
    if found:
        log.error("%s: %d problem(s); nothing was run", args.params, len(found))
        return 1
    log.info("%s: checked (sections, configs of every profile, seeds, runs, source, %s params, %s)", args.params,
             DVC_FILE, _runs.RUNS_FILE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
