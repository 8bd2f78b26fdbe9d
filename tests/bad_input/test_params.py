"""Every params.yaml mistake of issue 18 is refused before any work: ``python -m stages.check`` gives it one line
naming the key (as params.yaml spells it), and a stage resolving its config refuses it too."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from stages import crop, describe, face_model, landmarks, synth, tables, track, train
from stages.check import problems
from talkhead_models.config import ConfigError, resolve
from talkhead_models.methods import get_method

ROOT = Path(__file__).resolve().parents[2]


def set_in(*path: str, value: Any) -> Callable[[dict], None]:
    def change(params: dict) -> None:
        target = params
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return change


def add_run(key: str, **entry: str) -> Callable[[dict], None]:
    return set_in("runs", key, value=entry)


def resolve_crop(params: dict) -> Any:
    return resolve(crop.STAGE.config, params, crop.STAGE.section, shared_sections=crop.STAGE.shared_sections)


def resolve_r2talker(params: dict) -> Any:
    spec = get_method("r2talker")
    return resolve(spec.config, params, spec.family, pinned=spec.overrides)


def stage_config(module: Any) -> Callable[[dict], Any]:
    """The config resolution ``Stage.execute`` does before any work."""
    return module.STAGE.resolve_config


def method_config(name: str) -> Callable[[dict], Any]:
    """The method config resolution ``Stage.execute`` does for a train or evaluate stage."""
    return get_method(name).resolve_params


# (the change, the key its line must start with, what the line must say, the config resolution that refuses it too)
MISTAKES = {
    "skip_unreadable 'no'": (set_in("crop", "skip_unreadable", value="no"),
                             "crop.skip_unreadable", "got 'no'; expected true or false", resolve_crop),
    "image_size '256'": (set_in("profiles", "demo", "crop", "image_size", value="256"),
                         "profiles.demo.crop.image_size", "got '256'; expected an integer", resolve_crop),
    "image_size -5": (set_in("profiles", "demo", "crop", "image_size", value=-5),
                      "profiles.demo.crop.image_size", "got -5; expected an integer >= 1", resolve_crop),
    "margin wide": (set_in("crop", "margin", value="wide"), "crop.margin", "got 'wide'; expected a number",
                    resolve_crop),
    "iterations 800.5": (set_in("profiles", "demo", "r2talker", "iterations", value=800.5),
                         "profiles.demo.r2talker.iterations", "got 800.5; expected an integer", resolve_r2talker),
    "decay_at 0.8": (set_in("profiles", "demo", "r2talker", "decay_at", value=0.8),
                     "profiles.demo.r2talker.decay_at", "got 0.8; expected a list of 2 items", resolve_r2talker),
    "section crpo": (set_in("crpo", value={"image_size": 128}), "crpo", "unknown params section: did you mean 'crop'?",
                     None),
    "section r2taker": (set_in("r2taker", value={"iterations": 10}), "r2taker",
                        "unknown params section: did you mean 'r2talker'?", None),
    "profile section r2talkr": (set_in("profiles", "demo", "r2talkr", value={"iterations": 10}),
                                "profiles.demo.r2talkr", "unknown params section: did you mean 'r2talker'?", None),
    "source youtube": (set_in("data", "source", value="youtube"), "data.source",
                       "got 'youtube'; expected one of synthetic, mead, videos", None),
    "run of an unknown method": (add_run("r2talker_fast-S001", method="r2talker_fast", family="r2talker",
                                         identity="S001"), "runs.r2talker_fast-S001", "unknown method 'r2talker_fast'",
                                 None),
    "run on identity ../evil": (add_run("r2talker-../evil", method="r2talker", family="r2talker", identity="../evil"),
                                "runs.r2talker-../evil", "invalid identity '../evil'", None),
    "run of the wrong family": (add_run("gstalker-S002", method="gstalker", family="r2talker", identity="S002"),
                                "runs.gstalker-S002", "gstalker belongs to family 'gstalker', not 'r2talker'", None),
    "run on an identity the source lacks": (add_run("gstalker-S009", method="gstalker", family="gstalker",
                                                    identity="S009"),
                                            "runs.gstalker-S009.identity", "'S009' is not processed", None),
    "run on a name too long": (add_run(f"static-{'S' * 65}", method="static", family="static", identity="S" * 65),
                               f"runs.static-{'S' * 65}", "65 characters; use at most 64", None),
    "seed listed twice": (set_in("seeds", value=[0, 1, 0]), "seeds", "lists a seed twice", None),
    # the sections typed since: one representative mistake each, refused by the check and by the stage itself
    "landmarks backend dlib": (set_in("landmarks", "backend", value="dlib"), "landmarks.backend",
                               "got 'dlib'; expected one of 'mediapipe', 'face_alignment'", stage_config(landmarks)),
    "track focal_min 0": (set_in("profiles", "demo", "track", "focal_min", value=0), "profiles.demo.track.focal_min",
                          "got 0; expected a number > 0", stage_config(track)),
    "face_model exp_components 0": (set_in("face_model", "exp_components", value=0), "face_model.exp_components",
                                    "got 0; expected an integer >= 1", stage_config(face_model)),
    "synth crf 80": (set_in("profiles", "demo", "synth", "crf", value=80), "profiles.demo.synth.crf",
                     "got 80; expected an integer >= 0 and <= 51", stage_config(synth)),
    "synth audio_format mp3": (set_in("synth", "audio_format", value="mp3"), "synth.audio_format",
                               "got 'mp3'; expected one of 'm4a', 'wav'", stage_config(synth)),
    "describe detection_stride 0": (set_in("describe", "detection_stride", value=0), "describe.detection_stride",
                                    "got 0; expected an integer >= 1", stage_config(describe)),
    "tables frame_width '256'": (set_in("profiles", "demo", "tables", "frame_width", value="256"),
                                 "profiles.demo.tables.frame_width", "got '256'; expected an integer >= 1",
                                 stage_config(tables)),
    "gstalker densify interval 0": (set_in("profiles", "demo", "gstalker", "densify", "interval", value=0),
                                    "profiles.demo.gstalker.densify.interval", "got 0; expected an integer >= 1",
                                    method_config("gstalker_no_perceptual")),
    "static frame -2": (set_in("static", "frame", value=-2), "static.frame", "got -2; expected an integer >= -1",
                        method_config("static")),
    "train threads 0": (set_in("profiles", "demo", "train", "threads", value=0), "profiles.demo.train.threads",
                        "got 0; expected an integer >= 1", stage_config(train)),
}


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> tuple[dict, Path]:
    """The committed params and dvc.runs.yaml in a folder without data/ (a fresh checkout's state)."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copy(ROOT / "dvc.runs.yaml", root / "dvc.runs.yaml")
    return yaml.safe_load((ROOT / "params.yaml").read_text()), root


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_the_check_refuses_the_mistake_in_one_line_naming_the_key(mistake, committed):
    change, key, says, resolver = MISTAKES[mistake]
    params = copy.deepcopy(committed[0])
    change(params)
    found = problems(params, committed[1])
    assert len(found) == 1, found
    assert found[0].startswith(f"{key}:") and says in found[0], found[0]
    if resolver is not None:
        with pytest.raises(ConfigError) as refused:
            resolver(params)
        assert refused.value.problems == found


def test_the_committed_params_pass_on_a_checkout_without_data(committed):
    assert not (committed[1] / "data").exists()
    assert problems(*committed) == []
