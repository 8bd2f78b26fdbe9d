"""What a talking-head method is to the rest of the pipeline: a trainer and a renderer, registered by name.

The evaluation knows nothing about NeRFs or Gaussians. It builds a
:class:`Driving` (audio, per-frame audio features and eye openness, the
camera poses and frames of the identity being rendered, and, where the
driving frames are the identity's own, their landmarks and expression) and
calls ``render(driving)``, which yields one RGB frame per driving frame.

A method is registered once per trainable variant: the full method and
each ablation of its paper (``r2talker_audio_baseline``, ...) are separate
names sharing one ``family`` and config class, differing by config
overrides. Training and loading take the identity's processed folder and
the corpus-level models (``pretrained``: name -> folder, e.g.
``audio2motion``, ``sync_expert``) so a method asks for what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Protocol

import numpy as np

from talkhead_models.checkpoints import CURVE_FILE
from talkhead_models.config import from_dict, resolve, validate_name

Role = Literal["self", "cross", "cross_expression"]
MetricLogger = Callable[[str, float, int], None]


class UnsupportedDriving(ValueError):
    """A method cannot render this driving signal (the ground truth has no frames for another person's audio)."""


@dataclass
class Driving:
    """Everything that drives ``n`` rendered frames of one identity's model.

    Frames are rendered from the identity's own cameras and backgrounds at
    ``frame_indices`` (its processed frames); in self-driven evaluation
    those are the validation frames whose ground truth the output is
    compared with, in cross-driven evaluation a stretch of its own poses
    under another person's audio.
    """

    identity: str
    """Whose model renders."""
    role: Role
    """"self" (the identity's own held-out audio and frames), "cross" (another identity's audio) or
    "cross_expression" (its own held-out audio of one clip, the expression of another clip of the same sentence)."""
    audio: np.ndarray
    """[n * 640] 16 kHz mono waveform: frame i covers samples [640 i, 640 (i + 1))."""
    audio_features: Mapping[str, np.ndarray]
    """Feature kind ("mel", "hubert", ...) -> [n, 16, D] windows centred on each frame (the audio stage's shapes)."""
    eye: np.ndarray
    """[n] open-eye area ratio (the peers' AU45 stand-in) per frame."""
    frame_indices: np.ndarray
    """[n] processed frames of ``identity`` whose camera pose and background each rendered frame uses."""
    audio_identity: str = ""
    """Whose voice the audio is (= ``identity`` when self-driven)."""
    clip: str = ""
    """The driving recording ("<emotion>/level_<k>/<NNN>" or "video")."""
    emotion: str = "neutral"
    """Emotion of the driving recording."""
    landmarks: np.ndarray | None = None
    """[n, 68, 2] landmarks of the driving frames in processed pixels when they are the identity's own
    (self-driven); an oracle that audio-driven methods must not need at test time."""
    expression: np.ndarray | None = None
    """[n, K] tracked expression coefficients of the driving frames (self-driven; an oracle like ``landmarks``)."""
    expression_frames: np.ndarray | None = None
    """[n] processed frames of ``identity`` whose face gives each rendered frame its expression: JEAN's second
    source (a real video of the same person, read by the method through its own per-frame features). The
    driving frames themselves when self-driven, another clip's frames in the cross-expression setting, None
    when there is no expression video (a method that needs one raises UnsupportedDriving)."""
    expression_clip: str = ""
    """The recording ``expression_frames`` come from ("" = the driving recording itself)."""

    def __post_init__(self) -> None:
        n = len(self.frame_indices)
        if len(self.eye) != n:
            raise ValueError(f"driving {self.identity}/{self.clip}: {len(self.eye)} eye values for {n} frames")
        for kind, features in self.audio_features.items():
            if len(features) != n:
                raise ValueError(f"driving {self.identity}/{self.clip}: {len(features)} {kind} feature windows "
                                 f"for {n} frames")
        for name in ("landmarks", "expression", "expression_frames"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"driving {self.identity}/{self.clip}: {len(value)} {name} rows for {n} frames")

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)

    def slice(self, start: int, stop: int) -> "Driving":
        """Frames [start, stop): the same recording, shorter (audio cut on frame boundaries)."""
        samples = self.audio_samples_per_frame
        return replace(
            self, audio=self.audio[start * samples: stop * samples],
            audio_features={k: v[start:stop] for k, v in self.audio_features.items()},
            eye=self.eye[start:stop], frame_indices=self.frame_indices[start:stop],
            landmarks=None if self.landmarks is None else self.landmarks[start:stop],
            expression=None if self.expression is None else self.expression[start:stop],
            expression_frames=None if self.expression_frames is None else self.expression_frames[start:stop],
        )

    @property
    def audio_samples_per_frame(self) -> int:
        return 640


class TalkingHead(Protocol):
    """A trained (or reference) model of one identity."""

    image_size: int
    """Side of the square frames it renders (the processed frames' size)."""

    def render(self, driving: Driving) -> Iterator[np.ndarray]:
        """One RGB uint8 frame [image_size, image_size, 3] per driving frame, in order.

        Raises :class:`UnsupportedDriving` when the method cannot follow this signal.

        A head may also expose ``timings``: after each ``render``, a dict of per-module wall times in
        milliseconds per frame (keys ending in ``_ms``, e.g. ``rendering_ms``), which the evaluation reports
        beside FPS (R2-Talker's supplement times audio features, audio-to-landmarks and rendering apart).
        """
        ...


TrainFunction = Callable[..., dict[str, Any]]
"""``train(cfg, identity_root, pretrained, model_dir, log_metric=None) -> summary`` writes the model into
``model_dir`` (an empty folder that the caller renames into place) and returns numbers worth logging;
``summary["seconds"]`` is the training wall time (no data loading before the first step excluded)."""
LoadFunction = Callable[..., TalkingHead]
"""``load(cfg, identity_root, pretrained, model_dir) -> TalkingHead``."""


@dataclass(frozen=True)
class MethodSpec:
    """One registered, trainable name: a method or one ablation variant of it."""

    name: str
    family: str
    """The paper (or reference) the name belongs to: ground_truth, static, r2talker, gstalker, jean, s3dnerf."""
    config: type
    """The family's config dataclass (paper values as defaults); params.yaml section = ``family``."""
    train: TrainFunction
    load: LoadFunction
    variant: str = ""
    """Ablation key within the family ("" for the full method)."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Config values that make this variant (applied after params.yaml, so an ablation stays an ablation)."""
    description: str = ""
    pretrained: tuple[str, ...] = ()
    """Corpus-level models it needs (folders under data/models): "audio2motion", "sync_expert", ..."""
    expression_source: bool = False
    """It takes a second, expression-source video (``Driving.expression_frames``), as JEAN does: the evaluation
    then also renders the cross-expression setting (audio from one clip, expression from another)."""
    across_identities: bool = False
    """It is trained once across identities, not per identity (S3D-NeRF): its run's identity is the one it is
    evaluated on, which its training holds out; ``train`` gets that identity's folder and reads the others beside
    it, so its DVC stage depends on every processed identity (``Run.item``'s ``processed``)."""

    def resolve_config(self, section: Mapping[str, Any]) -> Any:
        """The family's params section, then this variant's overrides, as the config dataclass."""
        merged = {**dict(section or {}), **dict(self.overrides)}
        return from_dict(self.config, merged, where=self.family)

    def resolve_params(self, params: Mapping[str, Any]) -> Any:
        """The config from a whole params file: the family's section for the active profile, then this variant's
        overrides (what :meth:`resolve_config` gives for that section), a refused value named as params.yaml
        spells it (``profiles.demo.r2talker.iterations``)."""
        return resolve(self.config, params, self.family, pinned=self.overrides)


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method name; names are validated (they become paths) and unique."""
    validate_name(spec.name, "method")
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"method {spec.name!r} is registered twice ({existing.family} and {spec.family})")
    _REGISTRY[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """The registered method or variant ``name``; unknown names list the known ones."""
    _load_builtin_methods()
    try:
        return _REGISTRY[validate_name(name, "method")]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(method_names())}") from None


def method_names() -> list[str]:
    _load_builtin_methods()
    return sorted(_REGISTRY)


def _load_builtin_methods() -> None:
    # Importing a method's package registers it; done lazily so this module has no import cycle.
    import talkhead_models.methods.ground_truth  # noqa: F401
    import talkhead_models.methods.static  # noqa: F401
    import talkhead_models.methods.r2talker  # noqa: F401
    import talkhead_models.methods.gstalker  # noqa: F401
    import talkhead_models.methods.jean  # noqa: F401
    import talkhead_models.methods.s3dnerf  # noqa: F401



REFERENCE_FAMILIES = ("ground_truth", "static", "nearest_pose")
"""Families that learn nothing and render nothing (they read frames): rows every table carries, the real frames
(upper bound), a still frame (what doing nothing scores) and, for each test frame, the training frame of the
nearest tracked head pose (what retrieval without audio scores); a rendering speed of theirs would mean nothing."""

SAMPLES_DIR = "samples"
"""Folder of a trainer's sample renders (``*.png``) in its model folder; the train stage logs them."""


def training_artifacts(model_dir: Path) -> list[Path]:
    """The curve and sample renders a trainer left in ``model_dir`` (those it wrote; none is required)."""
    model_dir = Path(model_dir)
    curve = [model_dir / CURVE_FILE] if (model_dir / CURVE_FILE).is_file() else []
    return curve + sorted((model_dir / SAMPLES_DIR).glob("*.png"))


def model_dir_file(model_dir: Path, name: str) -> Path:
    """A file a method's trainer wrote; a missing one names the train stage to run."""
    path = Path(model_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the model folder is incomplete; re-run the train stage "
                                f"(`dvc repro train@<method>-<identity>-s<seed>`)")
    return path
