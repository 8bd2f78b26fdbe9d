"""``python -m stages.check``: exit status, one logged line per problem, dvc.runs.yaml, and folder sources."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import yaml

from stages import check

ROOT = Path(__file__).resolve().parents[2]
RUNS_FILE = "dvc.runs.yaml"


@pytest.fixture
def checkout(tmp_path) -> Path:
    """The committed params.yaml and dvc.runs.yaml, alone in a folder (no data/)."""
    for name in ("params.yaml", RUNS_FILE):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def edit(root: Path, change) -> Path:
    params = yaml.safe_load((root / "params.yaml").read_text())
    change(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root / "params.yaml"


def problem_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_the_committed_params_pass(checkout, caplog):
    caplog.set_level(logging.INFO)
    assert check.main(["--params", str(checkout / "params.yaml")]) == 0
    assert problem_lines(caplog) == []


def test_each_problem_is_one_logged_line_naming_the_file_and_the_exit_status_is_1(checkout, caplog):
    def two_mistakes(params):
        params["crop"]["skip_unreadable"] = "no"
        params["profiles"]["demo"]["r2talkr"] = {}

    path = edit(checkout, two_mistakes)
    assert check.main(["--params", str(path)]) == 1
    assert problem_lines(caplog) == [
        f"{path}: profiles.demo.r2talkr: unknown params section: did you mean 'r2talker'?",
        f"{path}: crop.skip_unreadable: got 'no'; expected true or false",
        f"{path}: 2 problem(s); nothing was run",
    ]


def test_a_stale_runs_file_is_reported_and_write_runs_brings_it_in_step(checkout, caplog):
    path = edit(checkout, lambda params: params.update(seeds=[0, 1]))
    assert check.main(["--params", str(path)]) == 1
    assert "dvc.runs.yaml is out of date" in problem_lines(caplog)[0]
    assert check.main(["--params", str(path), "--write-runs"]) == 0
    written = yaml.safe_load((checkout / RUNS_FILE).read_text())["stage_runs"]
    # the committed demo runs: 3 reference rows of S001 and 3 of S003 (no seed) + 4 trained runs (each method's
    # comparison-table row, S3D-NeRF's on S003), now each with seeds 0 and 1
    assert len(written) == 3 + 3 + 4 * 2
    assert {"r2talker-S001-s1", "gstalker_paper_audio-S001-s1", "jean-S001-s1", "static-S001-s0",
            "s3dnerf-S003-s1", "nearest_pose-S003-s0"} <= set(written)
    assert "static-S001-s1" not in written and "gstalker_no_perceptual-S001-s0" not in written
    assert "gstalker-S001-s0" not in written   # the a2m-aided GSTalker is an ablation table's row
    assert check.main(["--params", str(path)]) == 0
    # tables_scope: full adds the 14 ablation runs on S001 (R2-Talker's 3 with its RAD-NeRF baseline, GSTalker's 5
    # with the a2m-aided one, JEAN's 6) and S3D-NeRF's 4 variants
    path = edit(checkout, lambda params: params.update(tables_scope="full"))
    assert check.main(["--params", str(path), "--write-runs"]) == 0
    written = yaml.safe_load((checkout / RUNS_FILE).read_text())["stage_runs"]
    assert len(written) == 3 + 17 * 2 + 3 + 5 * 2
    assert {"gstalker_no_perceptual-S001-s1", "gstalker-S001-s0"} <= set(written)
    assert {"jean_transformer_on_params-S001-s1", "s3dnerf-S003-s1", "static-S003-s0"} <= set(written)
    assert written["s3dnerf-S003-s0"]["processed"] == "data/processed"


def test_write_runs_leaves_the_runs_file_alone_when_the_params_are_refused(checkout):
    before = (checkout / RUNS_FILE).read_bytes()
    path = edit(checkout, lambda params: params.update(seeds=[0, 1], crpo={}))
    assert check.main(["--params", str(path), "--write-runs"]) == 1
    assert (checkout / RUNS_FILE).read_bytes() == before


def test_a_folder_source_is_checked_against_the_identities_in_its_folder(checkout):
    params = yaml.safe_load((checkout / "params.yaml").read_text())
    params["data"] = {"source": "videos", "identities": ["A001", "C003"]}
    params["runs"] = {"static-A001": {"method": "static", "family": "static", "identity": "A001"},
                      "static-B002": {"method": "static", "family": "static", "identity": "B002"}}
    params["ablation_runs"] = {}
    params["seeds"] = [0]
    params["pretrain"]["holdout_identity"] = ""
    assert check.problems(params, checkout) == [
        f"data.source: 'videos' reads {checkout / 'data/raw/videos'}, which does not exist: put the recordings "
        "there (docs/OWN_VIDEO.md) or use source: synthetic"]
    videos = checkout / "data" / "raw" / "videos"
    videos.mkdir(parents=True)
    for name in ("A001", "B002"):
        (videos / f"{name}.mp4").touch()
    assert check.problems(params, checkout) == [
        "data.identities: 'C003' is not in the videos source (A001, B002)",
        "runs.static-B002.identity: 'B002' is not processed: it is not in data.identities (A001, C003)",
    ]


def test_a_method_trained_across_identities_is_evaluated_on_the_identity_the_corpus_models_hold_out(checkout):
    params = yaml.safe_load((checkout / "params.yaml").read_text())
    assert check.problems(params, checkout) == []
    params["runs"]["s3dnerf-S002"] = {"method": "s3dnerf", "family": "s3dnerf", "identity": "S002"}
    assert check.problems(params, checkout) == [
        "runs.s3dnerf-S002.identity: 'S002' is not the identity the corpus-level models hold out ('S003', "
        "pretrain.holdout_identity): its sync expert would have trained on it; evaluate it on that identity or hold "
        "this one out"]
    # left empty, the hold-out is the last processed identity (S005): S3D-NeRF's S003 runs are refused too
    params["pretrain"]["holdout_identity"] = ""
    del params["runs"]["s3dnerf-S002"]
    assert [line.split(":")[0] for line in check.problems(params, checkout)] == [
        "runs.s3dnerf-S003.identity", *(f"ablation_runs.{variant}-S003.identity" for variant in (
            "s3dnerf_no_deform", "s3dnerf_naive_deform", "s3dnerf_concat_deform", "s3dnerf_no_lip_sync"))]


def test_a_params_file_that_is_not_yaml_or_not_there_is_named(tmp_path, caplog):
    broken = tmp_path / "params.yaml"
    broken.write_text("crop: {image_size: 256\n")
    assert check.main(["--params", str(broken)]) == 1
    assert problem_lines(caplog)[0].startswith(f"{broken}: cannot be read as YAML")
    assert check.main(["--params", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml not found" in problem_lines(caplog)[-1]


@pytest.fixture
def checkout_with_dvc(checkout) -> Path:
    """The checkout with dvc.yaml too: its params lists are what a profile must name."""
    shutil.copy(ROOT / "dvc.yaml", checkout / "dvc.yaml")
    return checkout


def test_a_profile_of_ones_own_missing_a_section_dvc_yaml_reads_is_one_line(checkout_with_dvc):
    params = yaml.safe_load((checkout_with_dvc / "params.yaml").read_text())
    assert check.problems(params, checkout_with_dvc) == []
    params["profiles"]["myprofile"] = {k: v for k, v in params["profiles"]["demo"].items() if k != "crop"}
    params["profile"] = "myprofile"
    assert check.problems(params, checkout_with_dvc) == [
        "profiles.myprofile: missing section 'crop' (dvc.yaml's stages read it; add `crop: {}`, empty for the "
        "defaults)"]


def test_a_family_section_is_wanted_under_the_profile_when_runs_train_that_family(checkout_with_dvc):
    params = yaml.safe_load((checkout_with_dvc / "params.yaml").read_text())
    # nearest_pose is read through profiles.${profile}.${item.family} only: by its runs
    del params["profiles"]["demo"]["nearest_pose"]
    assert check.problems(params, checkout_with_dvc) == [
        "profiles.demo: missing section 'nearest_pose' (dvc.yaml's stages read it; add `nearest_pose: {}`, empty "
        "for the defaults)"]
    del params["runs"]["nearest_pose-S001"], params["runs"]["nearest_pose-S003"]
    assert check.main(["--params", str(edit(checkout_with_dvc, lambda p: p.update(params))),
                       "--write-runs"]) == 0


def test_missing_sections_at_the_top_and_a_missing_paper_profile_are_named(checkout_with_dvc):
    params = yaml.safe_load((checkout_with_dvc / "params.yaml").read_text())
    del params["crop"]
    for name in ("crop", "data"):
        del params["profiles"]["demo"][name]
    assert check.problems(params, checkout_with_dvc) == [
        "crop: missing section (dvc.yaml's stages read it; add `crop: {}`, empty for the defaults)",
        "profiles.demo: missing sections 'crop', 'data' (dvc.yaml's stages read them; add each as "
        "`<section>: {}`, empty for the defaults)"]
    params = yaml.safe_load((checkout_with_dvc / "params.yaml").read_text())
    params["profile"] = "paper"
    del params["profiles"]["paper"]
    found = check.problems(params, checkout_with_dvc)
    assert len(found) == 1 and found[0].startswith("profiles.paper: missing (dvc.yaml's stages read "
                                                   "profiles.paper.<section>; add `paper:` under profiles"), found


def test_processed_identities_are_the_listed_ones_else_the_ones_synth_generates(tmp_path):
    from talkhead_models.config import ConfigError

    params = {"profile": "paper", "data": {"source": "synthetic", "identities": ["S002"]}, "synth": {"n_identities": 4}}
    assert check.processed_identities(params, tmp_path) == ["S002"]
    params["data"]["identities"] = []
    assert check.processed_identities(params, tmp_path) == ["S001", "S002", "S003", "S004"]
    params["data"] = {"source": "videos"}
    with pytest.raises(ConfigError, match="does not exist"):
        check.processed_identities(params, tmp_path)
