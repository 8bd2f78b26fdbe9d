"""The project modules a stage's code imports, statically, for checking dvc.yaml's code deps.

The walk reads each module's AST and follows every ``import`` and ``from ... import``
in it, including those inside functions (the project imports lazily to keep
heavy libraries out of the light stages). Importing ``a.b.c`` runs
``a/__init__.py`` and ``a/b/__init__.py`` too, so those are part of the
closure; ``from a.b import c`` adds ``a/b/c.py`` when that file exists. Only
the project's own packages (:data:`PROJECT_PACKAGES`) are followed; modules
with no code (empty, or a docstring only) are left out of the result, as
nothing in them can change a stage's output.

Three kinds of import edge are not followed, each for a reason the code
itself guarantees (tests/test_dvc_code_deps.py checks that each guarantee
still holds):

* the method registry's imports of the method families
  (:data:`REGISTRY_MODULES` -> ``talkhead_models.methods.<family>``): they
  only make the names known; a stage runs a family's code when it trains or
  loads that family, and then has the family as a dep of its own
  (``talkhead_models/methods/${item.family}`` in the per-method stages);
* ``stages._stage``'s import of the registry, which sits under
  ``if self.per_method:`` and so runs in the per-method stages only;
* ``talkhead_models.runs``'s import of the registry, which sits inside
  ``expand_runs`` and so runs only in stages whose code names that function.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]

PROJECT_PACKAGES = ("talkhead_models", "stages")

METHODS_PACKAGE = "talkhead_models.methods"
REGISTRY_MODULES = frozenset({METHODS_PACKAGE, f"{METHODS_PACKAGE}.base"})
"""The registry: ``methods/__init__.py`` and ``methods/base.py``, which import every family to register it."""


@dataclass(frozen=True)
class GuardedEdge:
    """An import that runs only under a condition a stage can be checked for."""

    importer: str
    imported: str
    enclosing: str
    """Source text of the ``if`` test or the name of the ``def`` the import sits in."""


STAGE_REGISTRY_EDGE = GuardedEdge("stages._stage", METHODS_PACKAGE, "self.per_method")
RUNS_REGISTRY_EDGE = GuardedEdge("talkhead_models.runs", METHODS_PACKAGE, "expand_runs")
GUARDED_EDGES = (STAGE_REGISTRY_EDGE, RUNS_REGISTRY_EDGE)


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """``a.b`` -> root/a/b.py or root/a/b/__init__.py, whichever exists; None for neither."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def is_project_module(module: str, packages: Iterable[str] = PROJECT_PACKAGES) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` -> [a, a.b, a.b.c]: importing a module runs its packages' ``__init__`` first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _absolute(module: str | None, level: int, importer: str, importer_is_package: bool) -> str:
    """A relative ``from`` import's module, made absolute against the importing module."""
    if level == 0:
        return module or ""
    package = importer.split(".") if importer_is_package else importer.split(".")[:-1]
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


@functools.lru_cache(maxsize=None)
def _parsed(path: Path, modified_ns: int) -> ast.Module:
    """The file's AST; ``modified_ns`` keys the cache so that an edited file is read again."""
    return ast.parse(path.read_text(), filename=str(path))


def parse(path: Path) -> ast.Module:
    return _parsed(path, path.stat().st_mtime_ns)


def imported_modules(module: str, root: Path = ROOT,
                     packages: Iterable[str] = PROJECT_PACKAGES) -> dict[str, ast.AST]:
    """Every project module that ``module``'s code imports, anywhere in it -> the import statement."""
    path = module_file(module, root)
    if path is None:
        raise FileNotFoundError(f"no source for module {module} under {root}")
    tree = parse(path)
    found: dict[str, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, module, path.name == "__init__.py")
            names = [base]
            # `from package import name` imports the submodule package/name.py when there is one.
            names += [f"{base}.{alias.name}" for alias in node.names
                      if alias.name != "*" and module_file(f"{base}.{alias.name}", root) is not None]
        else:
            continue
        for name in names:
            for target in _with_parents(name):
                if is_project_module(target, packages) and module_file(target, root) is not None:
                    found.setdefault(target, node)
    found.pop(module, None)
    return found


def has_code(module: str, root: Path = ROOT) -> bool:
    """Whether the module holds anything but a docstring (an empty ``__init__.py`` changes nothing)."""
    body = parse(module_file(module, root)).body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    return bool(body)


def family_of(module: str) -> str | None:
    """``talkhead_models.methods.r2talker.model`` -> ``r2talker``; None outside a method family."""
    parts = module.split(".")
    prefix = METHODS_PACKAGE.split(".")
    if len(parts) > len(prefix) and parts[:len(prefix)] == prefix and parts[len(prefix)] != "base":
        return parts[len(prefix)]
    return None


def package_modules(package: str, root: Path = ROOT) -> list[str]:
    """Every module of a package folder, the package itself included."""
    folder = root.joinpath(*package.split("."))
    return sorted(".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                  for path in folder.rglob("*.py"))


def method_families(root: Path = ROOT) -> list[str]:
    """The method families: the packages under talkhead_models/methods."""
    folder = root.joinpath(*METHODS_PACKAGE.split("."))
    return sorted(p.name for p in folder.iterdir() if (p / "__init__.py").is_file())


def closure(roots: Iterable[str], *, per_method: bool, root: Path = ROOT,
            packages: Iterable[str] = PROJECT_PACKAGES) -> dict[str, list[str]]:
    """Every project module reachable from ``roots`` -> the import chain that reaches it (root first).

    The registry's imports of the families are not followed, nor a guarded edge whose guard the stage
    does not meet (``per_method`` for :data:`STAGE_REGISTRY_EDGE`; code that names ``expand_runs`` for
    :data:`RUNS_REGISTRY_EDGE`, decided after the walk).
    """
    roots = list(roots)
    stage_edge = (STAGE_REGISTRY_EDGE.importer, STAGE_REGISTRY_EDGE.imported)
    runs_edge = (RUNS_REGISTRY_EDGE.importer, RUNS_REGISTRY_EDGE.imported)

    def walk(skip_runs_edge: bool) -> dict[str, list[str]]:
        chains = {module: [module] for module in roots}
        queue = list(roots)
        while queue:
            module = queue.pop()
            for target in imported_modules(module, root, packages):
                edge = (module, target)
                if module in REGISTRY_MODULES and family_of(target) is not None:
                    continue
                if not per_method and edge == stage_edge or skip_runs_edge and edge == runs_edge:
                    continue
                if target not in chains:
                    chains[target] = chains[module] + [target]
                    queue.append(target)
        return chains

    chains = walk(skip_runs_edge=True)
    if any(uses_name(module, RUNS_REGISTRY_EDGE.enclosing, root) for module in chains
           if module != RUNS_REGISTRY_EDGE.importer):
        chains = walk(skip_runs_edge=False)
    return chains


def uses_name(module: str, name: str, root: Path = ROOT) -> bool:
    """Whether ``module`` imports or refers to ``name`` anywhere (``from x import name``, ``name(...)``,
    ``x.name``)."""
    for node in ast.walk(parse(module_file(module, root))):
        if isinstance(node, ast.alias) and node.name.split(".")[-1] == name or \
                isinstance(node, ast.Name) and node.id == name or isinstance(node, ast.Attribute) and node.attr == name:
            return True
    return False


def module_path(module: str, root: Path = ROOT) -> str:
    """The module's file relative to the repository root, as dvc.yaml spells a dep."""
    return module_file(module, root).relative_to(root).as_posix()


def stage_code(stage_module: str, *, per_method: bool, family: str | None = None,
               root: Path = ROOT) -> dict[str, list[str]]:
    """A stage's code: file -> import chain, for the modules with code in them.

    A per-method stage's closure is computed for one ``family``: the family's whole package is a root
    (its folder is the stage's dep), and the other families come in only where code imports them itself.
    """
    roots = [stage_module] + (package_modules(f"{METHODS_PACKAGE}.{family}", root) if family else [])
    chains = closure(roots, per_method=per_method, root=root)
    return {module_path(module, root): chain for module, chain in chains.items() if has_code(module, root)}


def covered(path: str, deps: Iterable[str]) -> bool:
    """A dep names the file itself or a folder holding it."""
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)
