"""dvc.yaml and the stages' declared paths stay in step."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from flows.pipeline import PIPELINE

ROOT = Path(__file__).resolve().parents[1]

# dvc.yaml's interpolation of the placeholders the stages use.
DVC_SPELLING = {"{identity}": "${item}", "{source}": "${data.source}"}


def _entries(items) -> set[str]:
    return {next(iter(i)) if isinstance(i, dict) else i for i in items or []}


def _dvc_path(path: str) -> str:
    for ours, theirs in DVC_SPELLING.items():
        path = path.replace(ours, theirs)
    return path


def test_every_stage_is_in_dvc_yaml_with_its_default_paths():
    dag = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(dag) == [s.name for s in PIPELINE]
    all_outputs = {_dvc_path(p) for s in PIPELINE for p in s.outputs.values()}
    for stage in PIPELINE:
        entry = dag[stage.name]
        if stage.per_identity:
            assert entry["foreach"] == "${data.identities}", stage.name
            entry = entry["do"]
        argv = shlex.split(entry["cmd"])
        assert argv[:3] == ["python", "-m", f"stages.{stage.name}"]
        given = dict(zip(argv[3::2], argv[4::2]))
        if stage.per_identity:
            assert given.pop("--identity") == "${item}"
        for name, path in {**stage.inputs, **stage.outputs}.items():
            assert given.get(f"--{name.replace('_', '-')}") == _dvc_path(path), (stage.name, name)
        deps = _entries(entry["deps"])
        assert {_dvc_path(p) for p in stage.inputs.values()} <= deps, stage.name
        declared_outs = _entries(entry.get("outs")) | _entries(entry.get("metrics"))
        assert {_dvc_path(p) for p in stage.outputs.values()} == declared_outs, stage.name
        assert f"stages/{stage.name}.py" in deps
        for dep in deps:
            produced = dep in all_outputs or dep in ("data/processed", "data/raw/${data.source}")
            assert (ROOT / dep).exists() or produced, (stage.name, dep)
        for section in entry.get("params", []):
            assert isinstance(section, str)


def test_params_file_resolves_for_every_stage():
    from talkhead_models.config import load_params

    params = load_params(ROOT / "params.yaml")
    for stage in PIPELINE:
        stage.resolve_config(params)
