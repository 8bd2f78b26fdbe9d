from dataclasses import dataclass

import pytest

from talkhead_models.config import ConfigError, flatten, resolve, validate_name


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
