"""Generate the synthetic MEAD-like corpus with ground truth.

Layout (MEAD's own, so one reader serves both)::

    <root>/<ID>/video/front/<emotion>/level_<k>/<NNN>.mp4     video with its audio muxed, as MEAD ships it
    <root>/<ID>/audio/<emotion>/level_<k>/<NNN>.m4a           the same audio alone
    <root>/<ID>/truth/front/<emotion>/level_<k>/<NNN>.npz     ground truth of that clip
    <root>/videos/<ID>.mp4                                    one long person-specific video (AD-NeRF style)
    <root>/videos/truth/<ID>.npz                              its ground truth
    <root>/corpus.json                                        config, identities, and one row per clip

Every clip is generated from its own random stream, seeded by (seed,
identity, clip), so the corpus is the same whatever the worker count or order.
Identities are numbered in one sequence: the ``n_identities`` full ones,
then the ``small_identities`` small ones (few sentences and a short video:
many cheap speakers for a generalizable method's training set). Each is
derived from one source photo (:data:`~.face.PHOTO_NAMES`), the astronaut
unless ``identity_photos`` names another, so a held-out identity can come
from a photo no training identity shares. Adding identities or photos for
others leaves an identity's own streams, and so its recordings, unchanged.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import tempfile
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import annotated_types
import numpy as np
from pydantic import Field
from tqdm import tqdm

from talkhead_models import face_topology as topo
from talkhead_models.config import (NAME_MAX_LENGTH, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                                    validate_name)
from talkhead_models.data.synthetic import speech
from talkhead_models.data.synthetic.face import (DEFAULT_PHOTO, LABEL_NAMES, PHOTO_NAMES, PhotoFace, PhotoName,
                                                 build_rig, make_look, photo_face)
from talkhead_models.data.synthetic.motion import blinks, emotion_intensity, head_motion, torso_follow
from talkhead_models.data.synthetic.render import EXPRESSION_KEYS, FaceRenderer
from talkhead_models.media import VideoWriter, write_audio

log = logging.getLogger(__name__)

# MEAD's levels: neutral is recorded at level 1 only; the other emotions at 1-3.
EMOTION_LEVELS = {"neutral": 1, "angry": 3, "happy": 3, "sad": 3}
LEVEL_INTENSITY = {1: 0.35, 2: 0.7, 3: 1.0}
CONTINUOUS_SENTENCE_BASE = 1000  # sentence ids of the long videos, disjoint from the clips'
Emotion = Literal["neutral", "angry", "happy", "sad"]
"""The emotions the corpus records (the keys of :data:`EMOTION_LEVELS`)."""
AudioFormat = Literal["m4a", "wav"]
AUDIO_FORMATS = typing.get_args(AudioFormat)
IdentityPrefix = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]*$", max_length=NAME_MAX_LENGTH - 3,
                                      description=f"letters, digits, '_' and '-', at most {NAME_MAX_LENGTH - 3} "
                                                  "characters (it starts every identity name)")]
Crf = Annotated[int, annotated_types.Interval(ge=0, le=51)]
"""An x264 constant rate factor."""
IdentityPhotos = Annotated[dict[str, PhotoName], Field(
    description="a mapping identity name -> source photo, each photo one of " + ", ".join(map(repr, PHOTO_NAMES)))]
"""Which source photo an identity is derived from, by identity name (the others: the astronaut)."""


@dataclass(frozen=True)
class SynthConfig:
    """The synthetic corpus. Defaults are the full (paper-sized) corpus."""

    seed: NonNegativeInt = 0
    """Seed of everything random; the same seed gives the same corpus."""
    n_identities: PositiveInt = 6
    """Number of speakers. At least 3 so one can be held out for the single-shot method."""
    identity_prefix: IdentityPrefix = "S"
    """Identity names are the prefix plus a 3-digit number (S001, ...), like MEAD's M003/W009."""
    image_size: PositiveInt = 512
    """Side of the square frames in pixels (the papers train at 512 or 450)."""
    fps: PositiveFloat = 30.0
    """Frame rate of the MEAD-like clips (MEAD records at 30 fps; preprocessing resamples to 25)."""
    video_fps: PositiveFloat = 25.0
    """Frame rate of the long person-specific videos (the AD-NeRF/ER-NeRF datasets are 25 fps)."""
    sample_rate: PositiveInt = 16000
    """Audio sample rate in Hz."""
    n_sentences: PositiveInt = 12
    """Sentences per identity; each is spoken in every emotion."""
    emotions: tuple[Emotion, ...] = speech.EMOTIONS
    """Emotions recorded; neutral at level 1, the others at level 3 (JEAN's selection)."""
    video_seconds: PositiveFloat = 120.0
    """Minimum length of each person-specific video, in seconds."""
    audio_format: AudioFormat = "m4a"
    """Container of the separate audio files: m4a (as MEAD) or wav."""
    focal_factor: PositiveFloat = 2.2
    """Focal length as a multiple of the image side (about 26 degrees field of view)."""
    max_angles_deg: tuple[NonNegativeFloat, NonNegativeFloat, NonNegativeFloat] = (15.0, 10.0, 5.0)
    """Largest yaw, pitch and roll of the head, in degrees."""
    max_translation_cm: NonNegativeFloat = 1.5
    """Largest sideways head translation in cm (depth moves 1.5 times this)."""
    crf: Crf = 18
    """x264 quality of the videos (lower is better; 18 is visually lossless)."""
    workers: PositiveInt = 2
    """Processes rendering clips in parallel."""
    identity_photos: IdentityPhotos = field(default_factory=dict)
    """Source photo of each identity not derived from the astronaut, by name (``{S003: grace_hopper}``): a held-out
    identity from a photo no training identity shares. Photos: astronaut (scikit-image), grace_hopper (matplotlib)."""
    small_identities: NonNegativeInt = 0
    """Extra identities after the ``n_identities`` full ones, numbered on (S004, S005 after three), each recorded
    small: ``small_sentences`` sentences per emotion and a ``small_video_seconds`` video (a generalizable method's
    many training speakers, cheap to preprocess)."""
    small_sentences: PositiveInt = 2
    """Sentences of each small identity; each is spoken in every emotion."""
    small_video_seconds: PositiveFloat = 12.0
    """Minimum length of each small identity's person-specific video, in seconds."""

    def __post_init__(self) -> None:
        # pydantic checks the photo names of a params file; this catches a config built in code too, and the
        # identity names, which depend on the other fields.
        names = self.identity_names()
        unknown_identities = sorted(map(str, set(self.identity_photos) - set(names)))
        if unknown_identities:
            corpus = f"{names[0]}..{names[-1]}" if names else "none"
            raise ValueError(f"identity_photos names {', '.join(unknown_identities)}, not an identity of this corpus "
                             f"({corpus}; n_identities + small_identities set how many)")
        unknown_photos = sorted({str(p) for p in self.identity_photos.values()} - set(PHOTO_NAMES))
        if unknown_photos:
            raise ValueError(f"identity_photos: unknown photo {', '.join(map(repr, unknown_photos))}; known: "
                             f"{', '.join(PHOTO_NAMES)}")

    def identity_names(self) -> list[str]:
        """Every identity's name, in order: the full ones, then the small ones."""
        return [validate_name(f"{self.identity_prefix}{i + 1:03d}", "identity")
                for i in range(self.n_identities + self.small_identities)]

    def identities(self) -> list[Identity]:
        """Every identity with what it is recorded with, in the order of :meth:`identity_names`."""
        return [Identity(
            index=index, name=name, photo=self.identity_photos.get(name, DEFAULT_PHOTO),
            small=index >= self.n_identities,
            n_sentences=self.small_sentences if index >= self.n_identities else self.n_sentences,
            video_seconds=self.small_video_seconds if index >= self.n_identities else self.video_seconds,
        ) for index, name in enumerate(self.identity_names())]


@dataclass(frozen=True)
class Identity:
    """One speaker of the corpus and how much of it is recorded."""

    index: int  # position in the corpus; keys the identity's random streams
    name: str
    photo: PhotoName  # the source photo it is derived from
    small: bool  # one of the small_identities
    n_sentences: int  # sentences, each in every emotion
    video_seconds: float  # minimum length of its person-specific video


@dataclass(frozen=True)
class ClipSpec:
    """One recording to render."""

    identity_index: int
    identity: str
    kind: str  # "clip" (MEAD-like) or "video" (person-specific)
    emotion: str
    level: int
    sentence: int  # 1-based sentence number within the identity (0 for a video)
    clip_index: int  # position in the identity's recording list; seeds the clip's randomness
    video_path: str
    audio_path: str | None
    truth_path: str


def plan(cfg: SynthConfig) -> list[ClipSpec]:
    """All recordings of the corpus, in a fixed order."""
    unknown = [e for e in cfg.emotions if e not in EMOTION_LEVELS]
    if unknown:
        raise ValueError(f"unknown emotions {unknown}; supported: {sorted(EMOTION_LEVELS)}")
    specs = []
    for identity in cfg.identities():
        index, name = identity.index, identity.name
        clip_index = 0
        for emotion in cfg.emotions:
            level = EMOTION_LEVELS[emotion]
            for sentence in range(1, identity.n_sentences + 1):
                rel = f"{emotion}/level_{level}/{sentence:03d}"
                specs.append(ClipSpec(
                    identity_index=index, identity=name, kind="clip", emotion=emotion, level=level,
                    sentence=sentence, clip_index=clip_index,
                    video_path=f"{name}/video/front/{rel}.mp4",
                    audio_path=f"{name}/audio/{rel}.{cfg.audio_format}",
                    truth_path=f"{name}/truth/front/{rel}.npz",
                ))
                clip_index += 1
        specs.append(ClipSpec(
            identity_index=index, identity=name, kind="video", emotion="neutral", level=1, sentence=0,
            clip_index=clip_index, video_path=f"videos/{name}.mp4", audio_path=None,
            truth_path=f"videos/truth/{name}.npz",
        ))
    return specs


def generate(cfg: SynthConfig, root: Path) -> list[dict]:
    """Render the whole corpus into ``root`` (an empty folder). Returns the clip table."""
    if cfg.audio_format not in AUDIO_FORMATS:
        raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}, not {cfg.audio_format!r}")
    specs = plan(cfg)
    identities = cfg.identities()
    photos = {name: photo_face(cfg.image_size, name) for name in sorted({i.photo for i in identities})}
    rows: list[dict] = []
    # Long videos first: they are the biggest jobs, so the pool ends evenly.
    order = sorted(specs, key=lambda s: s.kind != "video")
    context = multiprocessing.get_context("spawn")
    workers = max(1, min(cfg.workers, len(specs)))
    with context.Pool(workers, initializer=_init_worker, initargs=(cfg, photos, str(root))) as pool:
        for row in tqdm(pool.imap_unordered(_render_spec, order), total=len(order), desc="synth clips",
                        unit="clip"):
            rows.append(row)
    rows.sort(key=lambda r: (r["identity"], r["kind"], r["emotion"], r["sentence"]))
    voices = {i.name: asdict(speech.make_voice(_identity_rng(cfg, i.index, "voice"))) for i in identities}
    looks = {i.name: asdict(make_look(i.index, _identity_rng(cfg, i.index, "look"))) for i in identities}
    index = {
        "config": asdict(cfg),
        "identities": cfg.identity_names(),
        "small_identities": [i.name for i in identities if i.small],
        "photos": {i.name: i.photo for i in identities},
        "voices": voices,
        "looks": looks,
        "label_names": list(LABEL_NAMES),
        "expression_keys": list(EXPRESSION_KEYS),
        "clips": rows,
    }
    (root / "corpus.json").write_text(json.dumps(index, indent=1))
    return rows


def _identity_rng(cfg: SynthConfig, identity_index: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, identity_index, {"voice": 1, "look": 2}[purpose]])


_WORKER: dict = {}


def _init_worker(cfg: SynthConfig, photos: dict[str, PhotoFace], root: str) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; nested threads only contend
    _WORKER.update(cfg=cfg, photos=photos, root=Path(root), renderers={})


def identity_renderer(cfg: SynthConfig, photo: PhotoFace, identity_index: int) -> FaceRenderer:
    """The renderer of one identity of the corpus ``cfg`` describes (its look, rig and camera).

    ``photo`` is the identity's source photo at the corpus size: ``photo_face(cfg.image_size,
    cfg.identities()[identity_index].photo)``.
    """
    identity = cfg.identities()[identity_index]
    if photo.photo != identity.photo:
        # The rig would build silently from the wrong face: refuse instead.
        raise ValueError(f"identity {identity.name} is derived from the {identity.photo} photo, not from "
                         f"{photo.photo}: pass photo_face(size, {identity.photo!r})")
    look = make_look(identity_index, _identity_rng(cfg, identity_index, "look"))
    return FaceRenderer(build_rig(look, photo, cfg.focal_factor))


def _renderer(identity_index: int) -> FaceRenderer:
    renderers = _WORKER["renderers"]
    if identity_index not in renderers:
        cfg: SynthConfig = _WORKER["cfg"]
        photo = _WORKER["photos"][cfg.identities()[identity_index].photo]
        renderers[identity_index] = identity_renderer(cfg, photo, identity_index)
    return renderers[identity_index]


def _utterance(cfg: SynthConfig, spec: ClipSpec, rng: np.random.Generator) -> speech.Utterance:
    voice = speech.make_voice(_identity_rng(cfg, spec.identity_index, "voice"))
    if spec.kind == "clip":
        # Sentence texts are shared by all identities (as in MEAD); only timing and voice differ.
        phones = speech.sentence_phones(spec.sentence, cfg.seed)
        return speech.synthesize(phones, spec.emotion, voice, cfg.sample_rate, rng)
    parts, total, k = [], 0.0, 0
    video_seconds = cfg.identities()[spec.identity_index].video_seconds
    while total < video_seconds:
        phones = speech.sentence_phones(CONTINUOUS_SENTENCE_BASE + spec.identity_index * 1000 + k, cfg.seed)
        parts.append(speech.synthesize(phones, "neutral", voice, cfg.sample_rate, rng,
                                       lead_silence=0.1, tail_silence=0.1))
        total += parts[-1].duration + 0.25
        k += 1
    return speech.concatenate(parts, gap=0.25)


@dataclass(frozen=True)
class ClipInputs:
    """Everything a recording's frames are rendered from, one row per frame."""

    utterance: speech.Utterance
    audio: np.ndarray  # [samples] float32, padded or cut to the frames' duration
    angles: np.ndarray  # [N, 3] yaw, pitch, roll (rad) relative to the rest pose
    translation: np.ndarray  # [N, 3] head offset (cm)
    torso_shift: np.ndarray  # [N, 3] torso offset (cm), following the head (motion.torso_follow)
    torso_yaw: np.ndarray  # [N] torso yaw (rad)
    expression: np.ndarray  # [N, len(EXPRESSION_KEYS)] blendshape weights: visemes, blinks, the emotion

    @property
    def n_frames(self) -> int:
        return len(self.angles)


def clip_inputs(cfg: SynthConfig, spec: ClipSpec) -> ClipInputs:
    """The recording's speech, head motion and expression track, drawn from its own seeded generator (so a
    clip can be re-rendered, or recombined with another clip's rows, exactly as the corpus rendered it)."""
    rng = np.random.default_rng([cfg.seed, spec.identity_index, spec.clip_index, 7])
    fps = cfg.fps if spec.kind == "clip" else cfg.video_fps
    utterance = _utterance(cfg, spec, rng)
    n_frames = int(np.ceil(utterance.duration * fps))
    n_samples = int(round(n_frames / fps * cfg.sample_rate))
    audio = np.zeros(n_samples, np.float32)
    audio[: min(n_samples, len(utterance.audio))] = utterance.audio[:n_samples]

    visemes = speech.viseme_track(utterance.phones, fps, n_frames)
    angles, translation = head_motion(n_frames, fps, rng, cfg.max_angles_deg, cfg.max_translation_cm)
    torso_shift, torso_yaw = torso_follow(angles, translation, fps)
    closure = blinks(n_frames, fps, rng)
    expression = np.zeros((n_frames, len(EXPRESSION_KEYS)), np.float32)
    for key in speech.VISEME_KEYS:
        expression[:, EXPRESSION_KEYS.index(key)] = visemes[key]
    expression[:, EXPRESSION_KEYS.index("blink_right")] = closure
    expression[:, EXPRESSION_KEYS.index("blink_left")] = closure
    if spec.emotion != "neutral":
        expression[:, EXPRESSION_KEYS.index(spec.emotion)] = emotion_intensity(
            n_frames, fps, rng, LEVEL_INTENSITY[spec.level])
    return ClipInputs(utterance, audio, angles, translation, torso_shift, torso_yaw, expression)


def _render_spec(spec: ClipSpec) -> dict:
    cfg: SynthConfig = _WORKER["cfg"]
    root: Path = _WORKER["root"]
    fps = cfg.fps if spec.kind == "clip" else cfg.video_fps
    inputs = clip_inputs(cfg, spec)
    utterance, audio, n_frames = inputs.utterance, inputs.audio, inputs.n_frames
    angles, translation, expression = inputs.angles, inputs.translation, inputs.expression
    torso_shift, torso_yaw = inputs.torso_shift, inputs.torso_yaw

    renderer = _renderer(spec.identity_index)
    size = cfg.image_size
    truth = {
        "rotation": np.zeros((n_frames, 3, 3), np.float32),
        "translation": np.zeros((n_frames, 3), np.float32),
        "landmarks_3d": np.zeros((n_frames, 478, 3), np.float32),
        "landmarks_2d": np.zeros((n_frames, 478, 2), np.float32),
        "labels": np.zeros((n_frames, size, size), np.uint8),
    }
    video_path = root / spec.video_path
    video_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        write_audio(wav, audio, cfg.sample_rate)
        with VideoWriter(video_path, size, size, fps, audio_path=wav, crf=cfg.crf) as writer:
            for i in range(n_frames):
                frame = renderer.render(angles[i], translation[i], expression[i], torso_shift[i], torso_yaw[i])
                writer.write(frame.image)
                truth["rotation"][i] = frame.rotation
                truth["translation"][i] = frame.translation
                truth["landmarks_3d"][i] = frame.landmarks_3d
                truth["landmarks_2d"][i] = frame.landmarks_2d
                truth["labels"][i] = frame.labels
    if spec.audio_path is not None:
        audio_path = root / spec.audio_path
        audio_path.parent.mkdir(parents=True, exist_ok=True)
        write_audio(audio_path, audio, cfg.sample_rate)

    rig = renderer.rig
    intrinsics = np.array([[rig.focal, 0, size / 2], [0, rig.focal, size / 2], [0, 0, 1]], np.float32)
    truth_path = root / spec.truth_path
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        truth_path,
        **truth,
        landmarks_3d_68=topo.to_68(truth["landmarks_3d"]),
        landmarks_2d_68=topo.to_68(truth["landmarks_2d"]),
        euler=angles.astype(np.float32),  # yaw, pitch, roll (rad) relative to the rest pose
        intrinsics=intrinsics,
        expression=expression,
        expression_keys=np.array(EXPRESSION_KEYS),
        phone_labels=np.array([p.phone for p in utterance.phones]),
        phone_starts=np.array([p.start for p in utterance.phones], np.float64),
        phone_ends=np.array([p.end for p in utterance.phones], np.float64),
        label_names=np.array(LABEL_NAMES),
        fps=np.float64(fps),
        sample_rate=np.int64(cfg.sample_rate),
        emotion=np.array(spec.emotion),
        level=np.int64(spec.level),
        sentence=np.int64(spec.sentence),
        identity=np.array(spec.identity),
    )
    return {
        "identity": spec.identity, "kind": spec.kind, "emotion": spec.emotion, "level": spec.level,
        "sentence": spec.sentence, "video": spec.video_path, "audio": spec.audio_path, "truth": spec.truth_path,
        "fps": fps, "frames": n_frames, "duration_s": round(n_frames / fps, 4), "speech_s": round(
            utterance.duration, 4),
    }
