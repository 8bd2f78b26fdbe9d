"""A repository-shaped workspace for flow tests: this project's code, a dvc.yaml holding some of its stages, git and
DVC initialised, so flows run dvc.yaml's own commands and ``dvc status`` means what it means in the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping

import yaml

REPOSITORY = Path(__file__).resolve().parents[2]
CODE = ("talkhead_models", "stages", "flows", "pyproject.toml", ".dvcignore")


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=env)


def make_workspace(dest: Path, params: Mapping, stages: Iterable[str]) -> Path:
    """``dest`` with the code, ``params``, dvc.yaml's ``stages`` (by their names in dvc.yaml: ``train``, not
    ``train@...``) and dvc.runs.yaml written from ``params`` runs, committed to git; DVC initialised."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in CODE:
        source = REPOSITORY / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    dvc_yaml = yaml.safe_load((REPOSITORY / "dvc.yaml").read_text())
    kept = list(stages)
    missing = sorted(set(kept) - set(dvc_yaml["stages"]))
    assert not missing, f"dvc.yaml has no stage(s) {missing}"
    dvc_yaml["stages"] = {name: dvc_yaml["stages"][name] for name in kept}
    (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    (dest / "params.yaml").write_text(yaml.safe_dump(dict(params), sort_keys=False))
    (dest / ".gitignore").write_text("/data\n/experiments\n/mlflow.db\n/mlruns\n/reports\n")
    _run([sys.executable, "-m", "stages._runs"], dest)
    _run(["git", "init", "-q"], dest)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dest)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "workspace"], dest)
    _run(["dvc", "init", "-q"], dest)
    _run(["dvc", "config", "core.analytics", "false"], dest)
    return dest
