"""dvc.yaml's code deps cover what each stage imports, and its params follow the active profile.

A stage's code is the static import closure of stages/<name>.py through the project's packages
(tests/code_closure.py); a per-method stage's closure is taken for each method family on its own, with the
family's folder (``talkhead_models/methods/${item.family}``) as the dep that covers it.
"""

from __future__ import annotations

import ast
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from stages.check import pipeline_stages
from tests import code_closure
from tests.code_closure import (GUARDED_EDGES, METHODS_PACKAGE, REGISTRY_MODULES, RUNS_REGISTRY_EDGE,
                                STAGE_REGISTRY_EDGE, covered, family_of, imported_modules, method_families,
                                module_file, stage_code)

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = pipeline_stages()
FAMILY = "${item.family}"
PROFILE_SECTION = "profiles.${profile}."


def _dag() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _body(entry: dict) -> dict:
    return entry.get("do", entry)


def _deps(entry: dict) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else d for d in _body(entry).get("deps") or []]


def _missing_code(stage, deps: list[str]) -> list[str]:
    """One line per imported project file that ``deps`` do not cover, naming the chain that imports it (and,
    for a per-method stage, the families whose closure holds it)."""
    where = f"stages.{stage.name}.{'do.' if 'do' in _dag()[stage.name] else ''}deps"
    missing: dict[str, tuple[list[str], list[str]]] = {}
    families = method_families() if stage.per_method else [None]
    for family in families:
        resolved = [dep.replace(FAMILY, family) for dep in deps] if family else deps
        code = stage_code(f"stages.{stage.name}", per_method=stage.per_method, family=family)
        for path, chain in code.items():
            if not covered(path, resolved):
                missing.setdefault(path, ([], chain))[0].append(family)
    problems = []
    for path, (found_in, chain) in sorted(missing.items()):
        context = ""
        if stage.per_method:
            context = " (every family)" if found_in == families else f" (families {', '.join(found_in)})"
        problems.append(f"dvc.yaml {where}: add {path}{context}; imported via {' -> '.join(chain)}")
    return problems


def test_every_stage_depends_on_the_code_it_imports():
    dag = _dag()
    problems = [line for stage in PIPELINE for line in _missing_code(stage, _deps(dag[stage.name]))]
    assert not problems, "dvc.yaml misses code deps:\n" + "\n".join(problems)


def test_a_missed_library_module_is_named_with_its_stage():
    """The acceptance case: train without data/identity_reader.py is reported for that stage and file."""
    train = next(stage for stage in PIPELINE if stage.name == "train")
    deps = _deps(_dag()["train"])
    assert "talkhead_models/data/identity_reader.py" in deps
    without = [dep for dep in deps if dep != "talkhead_models/data/identity_reader.py"]
    added = sorted(set(_missing_code(train, without)) - set(_missing_code(train, deps)))
    assert len(added) == 1 and added[0].startswith(
        "dvc.yaml stages.train.do.deps: add talkhead_models/data/identity_reader.py (every family); imported via "
    ) and added[0].endswith(" -> talkhead_models.data.identity_reader"), added


def test_dvc_status_sees_a_changed_identity_reader_in_every_train_stage():
    """What `dvc status` compares: train@<run>'s deps, as DVC resolves them, hold the file (directly or by
    folder), so a changed line in it marks every train stage changed."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        trains = [stage for stage in repo.index.stages if stage.addressing.startswith("train@")]
        assert trains
        for stage in trains:
            paths = [str(dep.def_path) for dep in stage.deps if not isinstance(dep, ParamsDependency)]
            assert covered("talkhead_models/data/identity_reader.py", paths), stage.addressing


def test_a_changed_line_of_identity_reader_makes_a_committed_train_stage_changed(tmp_path, monkeypatch):
    """The acceptance check with DVC itself: a scratch repository holding this code, one train stage committed
    over placeholder data, is up to date until a line of talkhead_models/data/identity_reader.py changes."""
    from dvc.repo import Repo

    for name in ("dvc.yaml", "dvc.runs.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for package in ("stages", "talkhead_models"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    Repo.init(str(tmp_path), no_scm=True).close()
    monkeypatch.chdir(tmp_path)  # DVC names stages relative to the working directory
    target = "train@r2talker-S001-s0"
    with Repo(str(tmp_path)) as repo:
        stage = next(stage for stage in repo.index.stages if stage.addressing == target)
        for out in [*stage.deps, *stage.outs]:
            path = tmp_path / str(out.def_path)
            if str(out.def_path).startswith("data/"):
                placeholder = path if path.suffix else path / "placeholder"
                placeholder.parent.mkdir(parents=True, exist_ok=True)
                placeholder.write_text("placeholder\n")
        repo.commit(target, force=True)
        assert repo.status(targets=[target]) == {}
    reader = tmp_path / "talkhead_models" / "data" / "identity_reader.py"
    reader.write_text(reader.read_text() + "# a changed line\n")
    with Repo(str(tmp_path)) as repo:
        status = repo.status(targets=[target])
    assert status == {target: [{"changed deps": {"talkhead_models/data/identity_reader.py": "modified"}}]}, status


def test_the_registry_imports_exactly_the_registered_families():
    """The walk leaves out the registry's imports of the families; that is sound only while those imports are
    the registration of every family and nothing else."""
    from talkhead_models.methods import get_method, method_names

    imported = {family_of(target) for module in REGISTRY_MODULES for target in imported_modules(module)
                if family_of(target) is not None}
    registered = {get_method(name).family for name in method_names()}
    assert imported == registered == set(method_families())


def _enclosing(tree: ast.AST, imported: str) -> list[str]:
    """For each import of ``imported`` in ``tree``: the source of the innermost ``if`` test or the ``def`` name
    around it."""
    found = []

    def visit(node: ast.AST, context: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = context
            if isinstance(child, ast.If):
                inner = ast.unparse(child.test)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = child.name
            if isinstance(child, ast.ImportFrom) and child.module == imported or \
                    isinstance(child, ast.Import) and any(alias.name == imported for alias in child.names):
                found.append(inner)
            visit(child, inner)

    visit(tree, "<module>")
    return found


@pytest.mark.parametrize("edge", GUARDED_EDGES, ids=lambda edge: f"{edge.importer}->{edge.imported}")
def test_each_left_out_import_still_sits_under_its_guard(edge):
    """stages._stage imports the registry only under ``if self.per_method:``, talkhead_models.runs only inside
    ``expand_runs``: if either moves, the walk must follow it again (change tests/code_closure.py)."""
    tree = ast.parse(module_file(edge.importer).read_text())
    assert _enclosing(tree, edge.imported) == [edge.enclosing], edge


def test_guarded_edges_count_only_where_their_guard_holds():
    assert STAGE_REGISTRY_EDGE.enclosing == "self.per_method" and RUNS_REGISTRY_EDGE.enclosing == "expand_runs"
    base = "talkhead_models/methods/base.py"
    # synth runs neither guard: no registry; tables imports expand_runs (stages/_runs.py): the registry.
    assert base not in stage_code("stages.synth", per_method=False)
    assert base in stage_code("stages.tables", per_method=False)
    assert base in stage_code("stages.train", per_method=True, family="static")
    # The registry's family imports are not followed, a family's own imports are.
    static = stage_code("stages.train", per_method=True, family="static")
    assert not any(path.startswith("talkhead_models/methods/r2talker/") for path in static)
    assert "talkhead_models/methods/static/model.py" in static


def test_the_walk_follows_lazy_relative_and_submodule_imports(tmp_path):
    """A hand-made package: every way of importing a module is followed, and only project modules."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": """
            import json
            from pkg.sub import b
            def later():
                from .c import thing
                import pkg.sub.d
            """,
        "pkg/sub/__init__.py": "VALUE = 1\n",
        "pkg/sub/b.py": "from . import e\n",
        "pkg/c.py": "thing = 1\n",
        "pkg/sub/d.py": "'''Docstring only.'''\n",
        "pkg/sub/e.py": "from pkg.sub import VALUE\n",
        "pkg/unused.py": "x = 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    chains = code_closure.closure(["pkg.a"], per_method=False, root=tmp_path, packages=("pkg",))
    assert set(chains) == {"pkg", "pkg.a", "pkg.sub", "pkg.sub.b", "pkg.c", "pkg.sub.d", "pkg.sub.e"}
    assert chains["pkg.sub.e"] == ["pkg.a", "pkg.sub.b", "pkg.sub.e"]
    with_code = {module for module in chains if code_closure.has_code(module, tmp_path)}
    assert with_code == {"pkg.a", "pkg.sub", "pkg.sub.b", "pkg.c", "pkg.sub.e"}
    assert covered("pkg/sub/b.py", ["pkg/sub"]) and not covered("pkg/sub_b.py", ["pkg/sub"])


def test_stages_do_not_import_other_stages():
    """Shared logic lives in the library; stages/_*.py helpers are the only stage modules a stage imports."""
    imports = {stage.name: [m for m in imported_modules(f"stages.{stage.name}")
                            if m.startswith("stages.") and not m.split(".")[1].startswith("_")]
               for stage in PIPELINE}
    assert not {name: found for name, found in imports.items() if found}


def _stage_sections(stage) -> list[str]:
    return [stage.section, *stage.shared_sections] + ([FAMILY] if stage.per_method else [])


def test_params_follow_the_active_profile():
    """Every section a stage reads, at top level and under the active profile; no profile named in dvc.yaml."""
    dag = _dag()
    assert "profiles.demo" not in (ROOT / "dvc.yaml").read_text()
    problems = []
    for stage in PIPELINE:
        params = _body(dag[stage.name]).get("params") or []
        for section in _stage_sections(stage):
            for key in (section, PROFILE_SECTION + section):
                if key not in params:
                    problems.append(f"dvc.yaml stages.{stage.name} params: add {key}")
        if "profile" not in params:
            problems.append(f"dvc.yaml stages.{stage.name} params: add profile")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_dvc_finds_every_params_key_under_each_profile(tmp_path, profile):
    """DVC itself resolves the stages with ``profile: <profile>`` and reads every params key they list: a
    missing one would fail `dvc repro` after the stage ran (MissingParamsError)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    for name in ("dvc.yaml", "dvc.runs.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profile"] = profile
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    Repo.init(str(tmp_path), no_scm=True).close()
    missing = {}
    with Repo(str(tmp_path)) as repo:
        stages = repo.index.stages
        for stage in stages:
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    absent = set(dep.params) - set(dep.read_params())
                    if absent:
                        missing[stage.addressing] = sorted(absent)
                    assert f"profiles.{profile}.{stage.name.split('@')[0]}" in dep.params, stage.name
    assert stages and not missing, f"params.yaml profiles.{profile} lacks sections dvc.yaml names: {missing}"


def test_every_profile_names_every_section_dvc_yaml_reads():
    """A profile of params.yaml (the user's own too) must hold each section dvc.yaml's params name under
    ``profiles.${profile}``, empty for the defaults, for every family the runs use."""
    dvc_text = (ROOT / "dvc.yaml").read_text()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    families = sorted({entry["family"] for entry in raw["runs"].values()})
    sections = {line.strip()[2 + len(PROFILE_SECTION):] for line in dvc_text.splitlines()
                if line.strip().startswith("- " + PROFILE_SECTION)}
    sections = (sections - {FAMILY}) | set(families)
    assert "paper" in raw["profiles"], "params.yaml: add profiles.paper (its sections empty) for DVC"
    problems = [f"params.yaml profiles.{profile}: add {section}: {{}}" for profile, body in raw["profiles"].items()
                for section in sorted(sections) if section not in (body or {})]
    assert not problems, "\n".join(problems)


def test_method_families_are_the_packages_under_methods():
    assert set(method_families()) >= {"ground_truth", "static", "nearest_pose", "r2talker", "gstalker"}
    assert all((ROOT / METHODS_PACKAGE.replace(".", "/") / family / "__init__.py").is_file()
               for family in method_families())
