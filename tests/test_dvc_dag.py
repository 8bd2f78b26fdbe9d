"""dvc.yaml and the stages' declared paths stay in step."""

from __future__ import annotations

import importlib
import shlex
from pathlib import Path

import yaml

from stages.check import pipeline_stages

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = pipeline_stages()

# dvc.yaml's interpolation of the placeholders the stages use.
DVC_SPELLING = {"{identity}": "${item}", "{source}": "${data.source}"}


def _entries(items) -> set[str]:
    return {next(iter(i)) if isinstance(i, dict) else i for i in items or []}


# Per-method stages iterate over dvc.runs.yaml `stage_runs` (params.yaml runs x seeds: method, family, identity,
# seed and the seed's path suffix).
RUN_SPELLING = {"{identity}": "${item.identity}", "{method}": "${item.method}", "{seed_suffix}": "${item.suffix}",
                "{source}": "${data.source}"}


def _dvc_path(path: str, spelling: dict[str, str] = DVC_SPELLING) -> str:
    for ours, theirs in spelling.items():
        path = path.replace(ours, theirs)
    return path


def test_every_stage_is_in_dvc_yaml_with_its_default_paths():
    dag = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert sorted(dag) == sorted(s.name for s in PIPELINE)
    all_outputs = {_dvc_path(p) for s in PIPELINE for p in s.outputs.values()}
    produced_paths = all_outputs | _per_identity_outputs() | _per_run_outputs()
    for stage in PIPELINE:
        entry = dag[stage.name]
        if stage.per_method:
            _check_per_method_stage(stage, entry)
            continue
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
        inputs = {_dvc_path(p) for p in stage.inputs.values()}
        identity_deps = _identity_deps(stage)
        if identity_deps is not None:
            # Per-identity parts instead of data/processed as a whole, which holds outputs made downstream.
            assert "data/processed" not in deps and identity_deps <= deps, (stage.name, identity_deps - deps)
            inputs.discard("data/processed")
        # An input folder is a dep itself, or through the parts the stage reads in it (speed: the compared
        # models and their identity, spelled out and checked against its config in tests/evaluation/test_speed.py).
        for path in inputs:
            assert any(dep == path or dep.startswith(path + "/") for dep in deps), (stage.name, path)
        declared_outs = _entries(entry.get("outs")) | _entries(entry.get("metrics"))
        assert {_dvc_path(p) for p in stage.outputs.values()} == declared_outs, stage.name
        assert f"stages/{stage.name}.py" in deps
        for dep in deps:
            # A dep is produced by the DAG when it is an output, a folder holding outputs (reports/metrics),
            # or a file inside one identity's output folder (data/processed/S001/crop/clips.parquet).
            produced = dep == "data/raw/${data.source}" or any(
                out == dep or out.startswith(dep + "/") or dep.startswith(out + "/") for out in produced_paths)
            assert (ROOT / dep).exists() or produced, (stage.name, dep)
        for section in entry.get("params", []):
            assert isinstance(section, str)


def test_params_file_resolves_for_every_stage():
    from talkhead_models.config import load_params

    params = load_params(ROOT / "params.yaml")
    for stage in PIPELINE:
        stage.resolve_config(params)


def _identities() -> list[str]:
    from talkhead_models.config import load_params

    return list(load_params(ROOT / "params.yaml")["data"]["identities"])


def _per_identity_outputs() -> set[str]:
    """Every per-identity stage's outputs, spelled out for each identity of data.identities."""
    return {path.replace("{identity}", identity) for stage in PIPELINE if stage.per_identity
            for path in stage.outputs.values() for identity in _identities()}


def _per_run_outputs() -> set[str]:
    """Per-method stages' outputs for each run x seed of params.yaml (data/models/r2talker/S001, ...)."""
    from talkhead_models.config import load_params
    from talkhead_models.runs import expand_runs

    runs = expand_runs(load_params(ROOT / "params.yaml"))
    return {path.replace("{method}", run.method).replace("{identity}", run.identity)
            .replace("{seed_suffix}", run.suffix)
            for stage in PIPELINE if stage.per_method for path in stage.outputs.values() for run in runs}


def _identity_deps(stage) -> set[str] | None:
    """A corpus-level stage's per-identity deps (``IDENTITY_DEPS`` of its module), for every identity; else None."""
    templates = getattr(importlib.import_module(f"stages.{stage.name}"), "IDENTITY_DEPS", None)
    if templates is None:
        return None
    return {template.replace("{identity}", identity) for template in templates for identity in _identities()}


def test_dvc_builds_the_graph_without_a_cycle_and_the_face_model_before_tracking():
    """DVC refuses a cyclic DAG; face_model must sit between the landmarks and the track stages."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        graph = repo.index.graph  # raises on a cycle
        stages = {stage.addressing: stage for stage in graph}
    assert nx.is_directed_acyclic_graph(graph)
    upstream = {stage.addressing for stage in nx.descendants(graph, stages["face_model"])}
    identities = _identities()
    assert {f"landmarks@{identity}" for identity in identities} <= upstream
    assert not {name for name in upstream if name.split("@")[0] in ("track", "pair", "split", "parse", "audio")}
    for identity in identities:
        assert stages["face_model"] in nx.descendants(graph, stages[f"track@{identity}"])
        assert stages[f"track@{identity}"] in nx.descendants(graph, stages[f"pair@{identity}"])
        assert stages[f"pair@{identity}"] in nx.descendants(graph, stages["preprocess_report"])


def _check_per_method_stage(stage, entry) -> None:
    """train/evaluate: foreach over runs x seeds, the method, family, identity and seed of the item everywhere."""
    assert entry["foreach"] == "${stage_runs}", stage.name
    entry = entry["do"]
    argv = shlex.split(entry["cmd"])
    assert argv[:3] == ["python", "-m", f"stages.{stage.name}"]
    given = dict(zip(argv[3::2], argv[4::2]))
    assert given.pop("--method") == "${item.method}" and given.pop("--identity") == "${item.identity}"
    assert given.pop("--seed") == "${item.seed}"
    for name, path in {**stage.inputs, **stage.outputs}.items():
        assert given.get(f"--{name.replace('_', '-')}") == _dvc_path(path, RUN_SPELLING), (stage.name, name)
    deps = _entries(entry["deps"])
    # The processed identity is the item's ``processed`` folder: the identity's own, or all of data/processed for
    # a method trained across identities (talkhead_models.runs.Run.item).
    assert "${item.processed}" in deps and "data/processed/${item.identity}" not in deps, stage.name
    deps |= {"data/processed/${item.identity}"}
    for path in (_dvc_path(p, RUN_SPELLING) for p in stage.inputs.values()):
        # An input folder is a dep itself, or through the files the stage reads in it (the corpus-level
        # models' weights: their scores and reports beside them must not retrain every method).
        assert any(dep == path or dep.startswith(path + "/") for dep in deps), (stage.name, path)
    for name in ("audio2motion", "sync_expert"):
        assert f"data/models/{name}/model.pt" in deps and f"data/models/{name}" not in deps, (stage.name, name)
    assert f"stages/{stage.name}.py" in deps and "talkhead_models/methods/${item.family}" in deps
    declared_outs = _entries(entry.get("outs")) | _entries(entry.get("metrics"))
    assert {_dvc_path(p, RUN_SPELLING) for p in stage.outputs.values()} == declared_outs, stage.name
    assert "${item.family}" in entry["params"] and "profiles.${profile}.${item.family}" in entry["params"]


def test_every_run_names_a_registered_method_of_its_family_with_params_sections():
    from talkhead_models.config import load_params
    from talkhead_models.methods import get_method

    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["runs"], "params.yaml has no runs"
    for key, entry in params["runs"].items():
        spec = get_method(entry["method"])
        assert key == f"{entry['method']}-{entry['identity']}"
        assert spec.family == entry["family"], key
        # DVC refuses a params key that is missing, so each family has a section at top level and in every profile.
        assert spec.family in raw and all(spec.family in body for body in raw["profiles"].values()), key
        assert entry["identity"] in params["data"]["identities"], key
        spec.resolve_config(raw[spec.family] or {})



def test_dvc_runs_yaml_lists_every_run_and_seed_of_params_yaml():
    from stages._runs import check
    from talkhead_models.config import load_params

    check(ROOT, load_params(ROOT / "params.yaml"))


def test_dvc_names_one_train_and_evaluate_stage_per_run_and_seed():
    """DVC resolves dvc.runs.yaml's items into train@<method>-<identity>-s<seed>, seed k > 0 in its own folder."""
    from dvc.repo import Repo

    from talkhead_models.config import load_params
    from talkhead_models.runs import expand_runs

    with Repo(str(ROOT)) as repo:
        outs = {stage.addressing: {str(out.def_path) for out in stage.outs} for stage in repo.index.stages}
    for run in expand_runs(load_params(ROOT / "params.yaml")):
        assert outs[f"train@{run.key}"] == {f"data/models/{run.method}/{run.identity}{run.suffix}"}
        assert f"reports/metrics/{run.method}/{run.identity}{run.suffix}.json" in outs[f"evaluate@{run.key}"]
