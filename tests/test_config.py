import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from talkhead_models.config import (NAME_MAX_LENGTH, PAPER_PROFILE, ConfigError, Device, Fraction, NonNegativeFloat,
                                    PositiveInt, demo_aid, demo_aids, describe, flatten, from_dict, load_params,
                                    resolve, section_overrides, to_dict, unknown_sections, validate_name)
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
    "gstalker_audio_whisper": ["whisper audio", "audio smoother lr 0.0005", "tri-plane init ±0.1",
                               "mouth-motion prior"],
    "s3dnerf": ["perceptual loss on the discriminator's features, not ImageNet VGG",
                "decoded RGB a change of the source's colour",
                "render's pixels read from the source where its rays land", "landing map convex-upsampled",
                "coarse render loss on the inner face",
                "a2m audio", "training sources with the mouth closed", "lip landmark flow loss x0.05",
                "adversarial loss x0.05, not x1"],
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
    """Only a variant's own switch may depart from the paper there (gstalker_audio_whisper's feature)."""
    params = {**load_params(REPOSITORY_PARAMS), "profile": PAPER_PROFILE}
    for name in method_names():
        spec = get_method(name)
        cfg = spec.resolve_config(section_overrides(params, spec.family))
        assert demo_aids(cfg) == demo_aids(spec.resolve_config({})), name
    assert demo_aids(get_method("gstalker_audio_whisper").resolve_config({})) == ["whisper audio"]


# ---------------------------------------------------------------------------------------------------------------
# Typed values: what from_dict / resolve refuse, and how the refusal reads


@dataclass(frozen=True)
class Typed:
    size: PositiveInt = 256
    rate: Fraction = 0.5
    flag: bool = False
    mode: Literal["wide", "tight"] = "tight"
    decay: tuple[Fraction, Fraction] = (0.5, 0.75)
    device: Device = "auto"
    inner: Inner = Inner()

    def __post_init__(self) -> None:
        if self.decay[0] > self.decay[1]:
            raise ValueError(f"decay must increase, got {self.decay}")


@pytest.mark.parametrize("key, value, allowed", [
    ("flag", "no", "true or false"),          # YAML's "no" in quotes is a string, which would be truthy
    ("flag", 1, "true or false"),
    ("size", "256", "an integer >= 1"),
    ("size", 800.5, "an integer >= 1"),
    ("size", 256.0, "an integer >= 1"),       # a float where an integer is meant is refused even when whole
    ("size", True, "an integer >= 1"),
    ("size", -5, "an integer >= 1"),
    ("size", 0, "an integer >= 1"),
    ("rate", 1.5, "a number >= 0 and <= 1"),
    ("rate", "0.5", "a number >= 0 and <= 1"),
    ("mode", "medium", "one of 'wide', 'tight'"),
    ("decay", 0.8, "a list of 2 items, each a number >= 0 and <= 1"),
    ("decay", [0.8], "a list of 2 items, each a number >= 0 and <= 1"),
    ("decay", [0.8, "0.9"], "a list of 2 items, each a number >= 0 and <= 1"),
    ("device", "gpu", "auto, cpu, cuda or cuda:<index>"),
    ("inner", 0.5, "a mapping of Inner's keys (rate)"),
])
def test_a_wrong_value_is_refused_naming_the_key_the_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as refused:
        resolve(Typed, {"typed": {key: value}}, "typed")
    assert refused.value.problems == [f"typed.{key}: got {value!r}; expected {allowed}"]


def test_accepted_values_keep_their_types():
    cfg = resolve(Typed, {"typed": {"size": 64, "rate": 1, "flag": True, "mode": "wide", "decay": [0, 1],
                                    "device": "cuda:1", "inner": {"rate": 3}}}, "typed")
    assert cfg == Typed(size=64, rate=1.0, flag=True, mode="wide", decay=(0.0, 1.0), device="cuda:1",
                        inner=Inner(rate=3.0))
    assert [type(v) for v in (cfg.rate, *cfg.decay, cfg.inner.rate)] == [float, float, float, float]


def test_every_mistake_of_a_section_is_its_own_line_and_a_nested_key_names_its_path():
    with pytest.raises(ConfigError) as refused:
        resolve(Typed, {"typed": {"size": "big", "flag": "yes", "inner": {"rate": "x", "rait": 1}}}, "typed")
    assert refused.value.problems == [
        "typed.size: got 'big'; expected an integer >= 1",
        "typed.flag: got 'yes'; expected true or false",
        "typed.inner.rait: unknown key: did you mean 'rate'?",
        "typed.inner.rate: got 'x'; expected a number",
    ]
    assert str(refused.value) == "\n".join(refused.value.problems)


def test_a_refusal_names_the_key_where_params_yaml_sets_it():
    params = {"profile": "demo", "typed": {"size": -1},
              "profiles": {"demo": {"typed": {"inner": {"rate": "fast"}}}}}
    with pytest.raises(ConfigError) as refused:
        resolve(Typed, params, "typed")
    assert refused.value.problems == ["typed.size: got -1; expected an integer >= 1",
                                      "profiles.demo.typed.inner.rate: got 'fast'; expected a number"]
    # the profile wins where both set the key, so that is the value to fix
    with pytest.raises(ConfigError, match=r"^profiles\.demo\.typed\.size: got 0;"):
        resolve(Typed, {**params, "typed": {"size": 5}, "profiles": {"demo": {"typed": {"size": 0}}}}, "typed")


def test_the_dataclass_checks_across_fields_still_run_and_name_the_section():
    params = {"profile": "demo", "profiles": {"demo": {"typed": {"decay": [0.9, 0.8]}}}}
    with pytest.raises(ConfigError) as refused:
        resolve(Typed, params, "typed")
    assert refused.value.problems == ["profiles.demo.typed: decay must increase, got (0.9, 0.8)"]


@dataclass(frozen=True)
class WithShared:
    inner: Inner = Inner()
    size: PositiveInt = 1


def test_a_shared_section_is_named_as_its_own_section_and_pinned_values_win():
    params = {"profile": "demo", "inner": {"rate": "x"}, "profiles": {"demo": {"with_shared": {"size": 2}}}}
    with pytest.raises(ConfigError, match=r"^inner\.rate: got 'x'; expected a number$"):
        resolve(WithShared, params, "with_shared", shared_sections=("inner",))
    params["inner"]["rate"] = 0.25
    cfg = resolve(WithShared, params, "with_shared", shared_sections=("inner",), pinned={"size": 7})
    assert cfg == WithShared(inner=Inner(rate=0.25), size=7)


def test_a_section_that_is_not_a_mapping_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"^profiles\.demo\.typed: got \[1, 2\]; expected a mapping"):
        resolve(Typed, {"profile": "demo", "profiles": {"demo": {"typed": [1, 2]}}}, "typed")


def test_unknown_sections_at_the_top_and_under_a_profile():
    params = {"profile": "demo", "seeds": [0], "runs": {}, "crpo": {}, "zzz": 1, "crop": {},
              "profiles": {"demo": {"crop": {}, "r2talkr": {}, "seeds": [1]}}}
    assert unknown_sections(params, {"crop", "r2talker"}) == [
        "crpo: unknown params section: did you mean 'crop'?",
        "zzz: unknown params section; sections: crop, r2talker",
        "profiles.demo.r2talkr: unknown params section: did you mean 'r2talker'?",
        "profiles.demo.seeds: 'seeds' is a top-level key of params.yaml, not a section a profile can override; "
        "move it to the top level",
    ]


def test_describe_spells_out_each_kind_of_annotation():
    assert describe(PositiveInt) == "an integer >= 1"
    assert describe(NonNegativeFloat) == "a number >= 0"
    assert describe(tuple[str, ...]) == "a list, each item a string"
    assert describe(Literal["a", "b"] | None) == "one of 'a', 'b' or null"


def test_a_name_longer_than_the_bound_is_refused():
    assert validate_name("S" * NAME_MAX_LENGTH) == "S" * NAME_MAX_LENGTH
    with pytest.raises(ConfigError, match=f"{NAME_MAX_LENGTH + 1} characters; use at most {NAME_MAX_LENGTH}"):
        validate_name("S" * (NAME_MAX_LENGTH + 1), "identity")


def _configs() -> dict[str, type]:
    """Every config a stage or a method resolves, and every dataclass nested in one, by name."""
    from stages.check import pipeline_stages

    found: dict[str, type] = {}

    def add(cls: type) -> None:
        if f"{cls.__module__}.{cls.__qualname__}" in found:
            return
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
        for hint in typing.get_type_hints(cls).values():
            for option in (hint, *typing.get_args(hint)):
                if dataclasses.is_dataclass(option):
                    add(option)

    for stage in pipeline_stages():
        add(stage.config)
    for name in method_names():
        add(get_method(name).config)
    return found


@pytest.mark.parametrize("name, cls", sorted(_configs().items()))
def test_each_configs_defaults_pass_its_own_checks(name, cls):
    defaults = cls()
    assert from_dict(cls, json.loads(json.dumps(to_dict(defaults)))) == defaults  # as YAML would give them back


# ---------------------------------------------------------------------------------------------------------------
# The typed sections as params.yaml reaches them: through a stage's resolve_config or a method's resolve_params


def _resolve_section(section: str, params: dict) -> object:
    """``section`` resolved as the pipeline resolves it: by the stage that owns it (or embeds it, for ``data``),
    else by the method family of that name."""
    from stages.check import pipeline_stages

    stages = pipeline_stages()
    stage = next((s for s in stages if s.section == section), None) or next(
        (s for s in stages if section in s.shared_sections), None)
    if stage is not None:
        return stage.resolve_config(params)
    return get_method(section).resolve_params(params)


NEWLY_TYPED = [
    ("landmarks", ("backend",), "dlib", "one of 'mediapipe', 'face_alignment'"),
    ("landmarks", ("min_confidence",), 1.5, "a number >= 0 and <= 1"),
    ("landmarks", ("device",), "gpu", "auto, cpu, cuda or cuda:<index>"),
    ("landmarks", ("workers",), 0, "an integer >= 1"),
    ("landmarks", ("smooth_sigma",), -1.0, "a number >= 0"),
    ("track", ("focal_min",), 0, "a number > 0"),
    ("track", ("iterations",), 12.5, "an integer >= 1"),
    ("track", ("threads",), 0, "an integer >= 1"),
    ("face_model", ("exp_components",), 0, "an integer >= 1"),
    ("face_model", ("min_contrast",), -0.1, "a number >= 0"),
    ("data", ("source",), "youtube", "one of synthetic, mead, videos (synthetic: the corpus"),
    ("synth", ("crf",), 80, "an integer >= 0 and <= 51"),
    ("synth", ("audio_format",), "mp3", "one of 'm4a', 'wav'"),
    ("synth", ("emotions",), ["neutral", "bored"], "a list, each item one of 'neutral', 'angry', 'happy', 'sad'"),
    ("synth", ("fps",), 0, "a number > 0"),
    ("synth", ("identity_prefix",), "../", "letters, digits, '_' and '-'"),
    ("describe", ("detection_stride",), 0, "an integer >= 1"),
    ("tables", ("frame_width",), "wide", "an integer >= 1"),
    ("preprocess_report", ("frame_stride",), 0, "an integer >= 1"),
    ("static", ("frame",), -2, "an integer >= -1"),
    ("nearest_pose", ("translation_scale",), 0, "a number > 0"),
    ("gstalker", ("densify", "interval"), 0, "an integer >= 1"),
    ("gstalker", ("densify", "prune_opacity"), 2.0, "a number >= 0 and <= 1"),
    ("gstalker", ("triplane", "num_levels"), 0, "an integer >= 1"),
]


@pytest.mark.parametrize("section, keys, value, allowed", NEWLY_TYPED,
                         ids=[f"{s}.{'.'.join(k)}={v!r}" for s, k, v, _ in NEWLY_TYPED])
def test_a_wrong_value_in_a_typed_section_is_refused_naming_its_params_key(section, keys, value, allowed):
    nested: object = value
    for key in reversed(keys):
        nested = {key: nested}
    params = {"profile": "demo", "profiles": {"demo": {section: nested}}}
    with pytest.raises(ConfigError) as refused:
        _resolve_section(section, params)
    key = ".".join(("profiles", "demo", section, *keys))
    assert len(refused.value.problems) == 1, refused.value.problems
    assert refused.value.problems[0].startswith(f"{key}: got {value!r}; expected {allowed}"), refused.value.problems


def test_a_check_across_fields_of_a_component_names_its_params_key():
    params = {"profile": "demo", "profiles": {"demo": {"gstalker": {"triplane": {"base_resolution": 1024}}}}}
    with pytest.raises(ConfigError) as refused:
        get_method("gstalker").resolve_params(params)
    assert refused.value.problems == [
        "profiles.demo.gstalker.triplane: desired_resolution 512 is below base_resolution 1024"]


@pytest.mark.parametrize("name", method_names())
def test_resolve_params_gives_what_resolve_config_gives_for_the_section(name):
    spec = get_method(name)
    for profile in ("demo", PAPER_PROFILE):
        params = {**load_params(REPOSITORY_PARAMS), "profile": profile}
        assert spec.resolve_params(params) == spec.resolve_config(section_overrides(params, spec.family))


def test_a_stage_resolves_its_config_as_the_check_names_its_keys():
    from stages import crop

    params = {**load_params(REPOSITORY_PARAMS), "profile": "demo"}
    cfg = crop.STAGE.resolve_config(params)
    assert cfg.data.identities == tuple(params["data"]["identities"])
    params["profiles"]["demo"]["crop"] = {"image_size": "256"}
    with pytest.raises(ConfigError) as refused:
        crop.STAGE.resolve_config(params)
    assert refused.value.problems[0].startswith("profiles.demo.crop.image_size: got '256'")


def test_the_literals_list_what_the_code_supports():
    from talkhead_models.data import Source
    from talkhead_models.data.sources import SOURCES
    from talkhead_models.data.synthetic import speech
    from talkhead_models.data.synthetic.corpus import EMOTION_LEVELS, Emotion
    from talkhead_models.preprocess.landmarks import BACKENDS, LandmarkBackend

    assert typing.get_args(Source) == SOURCES == ("synthetic", "mead", "videos")
    assert set(typing.get_args(Emotion)) == set(EMOTION_LEVELS) == set(speech.EMOTIONS)
    assert typing.get_args(LandmarkBackend) == BACKENDS == ("mediapipe", "face_alignment")
