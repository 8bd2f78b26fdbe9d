"""params.yaml runs x seeds: which stages the DAG gets, and the paths each seed writes."""

from __future__ import annotations

import pytest
import yaml

from stages._runs import VARS_KEY, check, render, stage_runs
from talkhead_models.config import ConfigError
from talkhead_models.runs import expand_runs, parse_seeds, seed_suffix, split_seed

RUNS = {"static-S001": {"method": "static", "family": "static", "identity": "S001"},
        "r2talker_maglo-S001": {"method": "r2talker_maglo", "family": "r2talker", "identity": "S001"},
        "gstalker-S002": {"method": "gstalker", "family": "gstalker", "identity": "S002"}}


def test_every_seeded_run_is_crossed_with_every_seed_and_a_reference_row_runs_once():
    runs = expand_runs({"runs": RUNS, "seeds": [0, 2]})
    assert [run.key for run in runs] == ["static-S001-s0", "r2talker_maglo-S001-s0", "r2talker_maglo-S001-s2",
                                         "gstalker-S002-s0", "gstalker-S002-s2"]
    assert [run.family for run in runs] == ["static", "r2talker", "r2talker", "gstalker", "gstalker"]
    assert [run.suffix for run in runs] == ["", "", ".seed2", "", ".seed2"]
    assert [run.key for run in expand_runs({"runs": RUNS})] == ["static-S001-s0", "r2talker_maglo-S001-s0",
                                                                "gstalker-S002-s0"]


def test_the_records_loader_reads_a_seeds_suffix_back_as_that_seed():
    assert seed_suffix(0) == "" and split_seed("S001" + seed_suffix(0)) == ("S001", None)
    for seed in (1, 7, 12):
        assert split_seed("S001" + seed_suffix(seed)) == ("S001", seed)


@pytest.mark.parametrize("seeds", [[], [0, 0], [-1], [1.5], ["1"], [True], 0])
def test_seeds_must_be_distinct_non_negative_integers(seeds):
    with pytest.raises(ConfigError, match="seeds"):
        parse_seeds({"seeds": seeds})


@pytest.mark.parametrize("entry, message", [
    ({"method": "r2talker", "family": "gstalker", "identity": "S001"}, "belongs to family 'r2talker'"),
    ({"method": "r2talker", "family": "r2talker"}, "missing \\['identity'\\]"),
    ({"method": "r2talker", "family": "r2talker", "identity": "S001", "seed": 1}, "unknown \\['seed'\\]"),
    ({"method": "r2talker", "family": "r2talker", "identity": "S002"}, "must be <method>-<identity>"),
])
def test_a_malformed_run_is_refused_naming_its_key(entry, message):
    with pytest.raises(ConfigError, match=message):
        expand_runs({"runs": {"r2talker-S001": entry}})


def test_dvc_runs_yaml_is_checked_against_the_params(tmp_path):
    params = {"runs": RUNS, "seeds": [0]}
    (tmp_path / "dvc.runs.yaml").write_text(render(stage_runs(params)))
    items = yaml.safe_load((tmp_path / "dvc.runs.yaml").read_text())[VARS_KEY]
    assert items["gstalker-S002-s0"] == {"method": "gstalker", "family": "gstalker", "identity": "S002", "seed": 0,
                                         "suffix": "", "processed": "data/processed/S002"}
    check(tmp_path, params)
    with pytest.raises(ConfigError, match=r"lacks: \['gstalker-S002-s1', 'r2talker_maglo-S001-s1'\].*stages._runs"):
        check(tmp_path, {**params, "seeds": [0, 1]})
    (tmp_path / "dvc.runs.yaml").unlink()
    with pytest.raises(ConfigError, match="missing"):
        check(tmp_path, params)


def test_a_method_trained_across_identities_depends_on_every_processed_identity():
    runs = expand_runs({"runs": {**RUNS, "s3dnerf-S003": {"method": "s3dnerf", "family": "s3dnerf",
                                                          "identity": "S003"}}, "seeds": [0]})
    processed = {run.key: run.item()["processed"] for run in runs}
    # trained on every identity but S003, evaluated on S003: its stages read the whole processed folder
    assert processed["s3dnerf-S003-s0"] == "data/processed"
    assert processed["gstalker-S002-s0"] == "data/processed/S002"


ABLATIONS = {"r2talker_landmark_encoding-S001": {"method": "r2talker_landmark_encoding", "family": "r2talker",
                                                 "identity": "S001"}}


def test_the_demo_scope_trains_runs_and_the_full_scope_adds_the_ablation_runs():
    params = {"runs": RUNS, "ablation_runs": ABLATIONS, "seeds": [0]}
    demo = [run.key for run in expand_runs(params)]
    assert demo == [run.key for run in expand_runs({**params, "tables_scope": "demo"})] == [
        "static-S001-s0", "r2talker_maglo-S001-s0", "gstalker-S002-s0"]
    assert [run.key for run in expand_runs({**params, "tables_scope": "full"})] == demo + [
        "r2talker_landmark_encoding-S001-s0"]
    with pytest.raises(ConfigError, match="tables_scope: got 'all'; expected one of demo, full"):
        expand_runs({**params, "tables_scope": "all"})
    with pytest.raises(ConfigError, match=r"ablation_runs.static-S001: also in runs; list a run once"):
        expand_runs({**params, "ablation_runs": {"static-S001": RUNS["static-S001"]}, "tables_scope": "full"})


def test_the_check_judges_ablation_runs_in_the_demo_scope_too(tmp_path):
    from stages.check import _run_entry_problems

    found: list[str] = []
    bad = {"r2talker_maglo-S001": {"method": "r2talker_maglo", "family": "gstalker", "identity": "S001"}}
    assert _run_entry_problems({"runs": {"static-S001": RUNS["static-S001"]}, "ablation_runs": bad}, found) is None
    assert len(found) == 1 and "ablation_runs.r2talker_maglo-S001: " in found[0] and "family" in found[0]


def test_setting_the_scope_rewrites_one_line_of_params_and_the_stage_list(tmp_path):
    from stages._runs import main

    text = ("# the demo's runs\ntables_scope: demo  # make tables-full sets full\nseeds: [0]\nruns:\n"
            + "".join(f"  {key}: {yaml.safe_dump(entry, default_flow_style=True).strip()}\n" for key, entry in RUNS.items())
            + "ablation_runs:\n"
            + "".join(f"  {key}: {yaml.safe_dump(entry, default_flow_style=True).strip()}\n"
                      for key, entry in ABLATIONS.items()))
    params = tmp_path / "params.yaml"
    params.write_text(text)
    assert main(["--params", str(params), "--scope", "full"]) == 0
    assert params.read_text() == text.replace("tables_scope: demo", "tables_scope: full")
    listed = yaml.safe_load((tmp_path / "dvc.runs.yaml").read_text())[VARS_KEY]
    assert "r2talker_landmark_encoding-S001-s0" in listed and len(listed) == 4
    assert main(["--params", str(params), "--scope", "demo"]) == 0
    assert len(yaml.safe_load((tmp_path / "dvc.runs.yaml").read_text())[VARS_KEY]) == 3


def test_lock_entries_of_runs_no_longer_asked_for_are_dropped_and_the_rest_kept(tmp_path):
    from stages._runs import prune_lock

    kept_text = ("  crop@S001:\n    cmd: python -m stages.crop\n"
                 "  train@static-S001-s0:\n    cmd: python -m stages.train --method static\n"
                 "  evaluate@static-S001-s0:\n    cmd: python -m stages.evaluate --method static\n")
    stale_text = ("  train@r2talker_maglo-S001-s1:\n    cmd: python -m stages.train --method r2talker_maglo\n"
                  "    deps:\n    - path: params.yaml\n      md5: 0123\n"
                  "  evaluate@r2talker_maglo-S001-s1:\n    cmd: python -m stages.evaluate\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n" + kept_text + stale_text)
    runs = {"static-S001-s0": {}}
    assert prune_lock(tmp_path, runs) == ["train@r2talker_maglo-S001-s1", "evaluate@r2talker_maglo-S001-s1"]
    assert (tmp_path / "dvc.lock").read_text() == "schema: '2.0'\nstages:\n" + kept_text  # DVC's layout kept
    assert prune_lock(tmp_path, runs) == []
