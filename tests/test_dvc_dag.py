"""dvc.yaml and the stages' declared paths stay in step."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from flows.pipeline import PIPELINE

ROOT = Path(__file__).resolve().parents[1]


def _entries(items) -> set[str]:
    return {next(iter(i)) if isinstance(i, dict) else i for i in items or []}


def test_every_stage_is_in_dvc_yaml_with_its_default_paths():
    dag = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(dag) == [s.name for s in PIPELINE]
    for stage in PIPELINE:
        entry = dag[stage.name]
        argv = shlex.split(entry["cmd"])
        assert argv[:3] == ["python", "-m", f"stages.{stage.name}"]
        given = dict(zip(argv[3::2], argv[4::2]))
        for name, path in {**stage.inputs, **stage.outputs}.items():
            assert given.get(f"--{name.replace('_', '-')}") == path, (stage.name, name)
        assert set(stage.inputs.values()) <= _entries(entry["deps"])
        declared_outs = _entries(entry.get("outs")) | _entries(entry.get("metrics"))
        assert set(stage.outputs.values()) == declared_outs
        assert f"stages/{stage.name}.py" in _entries(entry["deps"])
        for dep in _entries(entry["deps"]):
            assert (ROOT / dep).exists() or dep in {p for s in PIPELINE for p in s.outputs.values()}, dep


def test_params_file_resolves_for_every_stage():
    from talkhead_models.config import load_params, resolve

    params = load_params(ROOT / "params.yaml")
    for stage in PIPELINE:
        resolve(stage.config, params, stage.section)
