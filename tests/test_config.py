from dataclasses import dataclass, field
from pathlib import Path

import pytest

from talkhead_models.config import (PAPER_PROFILE, ConfigError, demo_aid, demo_aids, flatten, load_params, resolve,
                                    section_overrides, validate_name)
from talkhead_models.methods import get_method, method_names


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5


@dataclass(frozen=True)
class Example:
    size: int = 512
    angles: tuple[float, float] = (15.0, 10.0)
    inner: Inner = Inner()


def test_paper_profile_is_the_dataclass_defaults_plus_top_level_overrides():
    params = {"profile": "paper", "example": {"size": 300}, "profiles": {"demo": {"example": {"size": 64}}}}
    assert resolve(Example, params, "example") == Example(size=300)


def test_profile_overrides_win_and_nest():
    params = {"profile": "demo", "example": {"size": 300},
              "profiles": {"demo": {"example": {"size": 64, "angles": [1, 2], "inner": {"rate": 2}}}}}
    cfg = resolve(Example, params, "example")
    assert cfg == Example(size=64, angles=(1, 2), inner=Inner(rate=2.0))
    assert isinstance(cfg.inner.rate, float)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="sise"):
        resolve(Example, {"example": {"sise": 1}}, "example")


def test_undefined_profile_is_an_error():
    with pytest.raises(ConfigError, match="profile 'fast'"):
        resolve(Example, {"profile": "fast"}, "example")


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x y", "../etc", "id\\0"])
def test_names_that_could_escape_a_folder_are_refused(bad):
    with pytest.raises(ConfigError):
        validate_name(bad, "identity")


def test_good_names_pass():
    assert validate_name("M003_front-1") == "M003_front-1"


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


@dataclass(frozen=True)
class Grid:
    levels: int = demo_aid(16, "grid {value}/{default} levels")
    spacing: tuple[float, float] = demo_aid((0.5, 1.0), "spacing {value}")


@dataclass(frozen=True)
class Aided:
    rate: float = demo_aid(1e-4, "init ±{value}")
    prior_weight: float = demo_aid(0.0, "shape prior")
    prior_steps: int = demo_aid(0, "shape prior")
    iterations: int = 1000
    grid: Grid = field(default_factory=Grid)


def test_demo_aids_formats_the_labels_of_the_fields_off_their_paper_value():
    assert demo_aids(Aided()) == []
    assert demo_aids(Aided(iterations=5)) == []  # not an aid field
    aided = Aided(rate=0.1, prior_weight=0.05, prior_steps=300, grid=Grid(levels=4, spacing=(0.25, 1.0)))
    assert demo_aids(aided) == ["init ±0.1", "shape prior", "grid 4/16 levels", "spacing 0.25, 1"]


REPOSITORY_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"

DEMO_AIDS = {
    "r2talker": ["visual-hull occupancy start", "opacity loss", "distortion loss", "solid-head prior",
                 "carved 0.03 in front of the face"],
    "gstalker": ["a2m audio", "audio smoother lr 0.0005", "tri-plane init ±0.1", "mouth-motion prior"],
    "gstalker_paper_audio": ["audio smoother lr 0.0005", "tri-plane init ±0.1", "mouth-motion prior"],
}


@pytest.mark.parametrize("name", sorted(DEMO_AIDS))
def test_the_demo_profile_names_its_aids(name):
    params = load_params(REPOSITORY_PARAMS)
    assert params["profile"] == "demo"
    spec = get_method(name)
    assert demo_aids(spec.resolve_config(section_overrides(params, spec.family))) == DEMO_AIDS[name]


def test_a_cut_landmark_grid_is_an_aid():
    from talkhead_models.methods.r2talker import R2TalkerConfig

    assert demo_aids(R2TalkerConfig(landmark_levels=4, landmark_desired_resolution=64)) == [
        "landmark grid 4/16 levels", "landmark grid finest res. 64/2048"]


def test_the_paper_profile_uses_no_demo_aid():
    params = {**load_params(REPOSITORY_PARAMS), "profile": PAPER_PROFILE}
    for name in method_names():
        spec = get_method(name)
        cfg = spec.resolve_config(section_overrides(params, spec.family))
        assert demo_aids(cfg) == [], name
