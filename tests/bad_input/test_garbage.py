"""No silent garbage: frames without a face are neither trained on nor scored, and NaN/inf in an array a stage
reads is refused naming the file, the frames and the stage to re-run, with no output left behind."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

from stages import audio, crop, face_model, landmarks, pair, parse, split, track
from stages.split import SplitStageConfig
from talkhead_models.data import DataConfig
from talkhead_models.data.arrays import NonFiniteError
from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.data.landmark_arrays import read_landmarks
from talkhead_models.data.processed import SAMPLES_PER_FRAME, ProcessedIdentity
from talkhead_models.evaluation import EvaluationInputs, _expression_fitter
from talkhead_models.evaluation.driving import FrameBudget, drivings
from talkhead_models.evaluation.evaluate import FACE_MODEL_FILE
from talkhead_models.preprocess.audio_features import AudioConfig
from talkhead_models.preprocess.frames import read_clips
from talkhead_models.preprocess.landmarks import LandmarksConfig
from talkhead_models.preprocess.pairing import PairConfig
from talkhead_models.preprocess.parsing import ParseConfig
from talkhead_models.preprocess.splits import SplitConfig, evaluation_mask
from talkhead_models.preprocess.tracking import TrackingError
from talkhead_models.preprocess.video import CropConfig
from talkhead_models.pretrained import audio2motion, datasets, sync_expert
from tests.frame_archives import replace_frames

IMAGE_SIZE = 128
LONG, SHORT = 20, 4  # black stretches, in frames: longer and shorter than long_gap_frames (12)


def assert_no_output(out: Path) -> None:
    """Neither the output folder nor a temporary one beside it."""
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))


class WarningList(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass(frozen=True)
class Blackened:
    """S001 through crop, landmarks, audio and split, with three stretches of its cropped frames made black."""

    base: Path
    clips: pd.DataFrame
    long_training: np.ndarray
    """LONG frames inside a recording that is trained on."""
    short_training: np.ndarray
    """SHORT frames inside another recording that is trained on."""
    long_held_out: np.ndarray
    """LONG frames inside a held-out recording, with frames that have a face on both sides."""
    landmark_metrics: dict
    log: str


@pytest.fixture(scope="module")
def blackened(tmp_path_factory, tiny_corpus) -> Blackened:
    base = tmp_path_factory.mktemp("garbage") / "S001"
    crop.run(CropConfig(image_size=IMAGE_SIZE, data=DataConfig(source="synthetic")), {"raw": tiny_corpus},
             {"crop": base / "crop"}, identity="S001")
    n_frames = len(zipfile.ZipFile(base / "crop" / "ori_imgs.zip").namelist())
    clips = read_clips(base / "crop" / "clips.parquet", n_frames)
    held = evaluation_mask(clips, n_frames, SplitConfig())
    recordings = clips.loc[clips.kind == "clip"]
    training = [r for r in recordings.itertuples() if not held[r.first_frame]]
    held_out = [r for r in recordings.itertuples() if held[r.first_frame]]
    assert len(training) >= 2 and held_out and held_out[0].last_frame - held_out[0].first_frame + 1 >= LONG + 16
    stretches = (np.arange(training[0].first_frame + 5, training[0].first_frame + 5 + LONG),
                 np.arange(training[1].first_frame + 10, training[1].first_frame + 10 + SHORT),
                 np.arange(held_out[0].first_frame + 8, held_out[0].first_frame + 8 + LONG))
    replace_frames(base / "crop" / "ori_imgs.zip",
                   {int(index): np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8) for index in np.concatenate(stretches)})

    warnings = WarningList()  # caplog is per test; this fixture runs once per module
    logging.getLogger("stages.landmarks").addHandler(warnings)
    try:
        metrics = landmarks.run(LandmarksConfig(), {"crop": base / "crop"}, {"landmarks": base / "landmarks"},
                                identity="S001").metrics
    finally:
        logging.getLogger("stages.landmarks").removeHandler(warnings)
    audio.run(AudioConfig(), {"crop": base / "crop", "landmarks": base / "landmarks"}, {"features": base / "features"},
              identity="S001")
    split.run(SplitStageConfig(data=DataConfig(source="synthetic", identities=("S001", "S002"))),
              {"crop": base / "crop", "corpus": tiny_corpus}, {"split": base / "split"}, identity="S001")
    return Blackened(base, clips, *stretches, metrics, "\n".join(warnings.messages))


def long_gap_frames_by_hand(detected: np.ndarray, clips: pd.DataFrame, longest_kept: int) -> set[int]:
    """Frames of runs without a detection longer than ``longest_kept``, walking each recording frame by frame."""
    excluded: set[int] = set()
    for clip in clips.itertuples():
        run: list[int] = []
        for index in range(clip.first_frame, clip.last_frame + 2):
            if index <= clip.last_frame and not detected[index]:
                run.append(index)
                continue
            if len(run) > longest_kept:
                excluded.update(run)
            run = []
    return excluded


def test_black_stretches_are_left_out_of_training_and_evaluation_and_counted(blackened):
    folder = blackened.base / "landmarks"
    detected, usable = np.load(folder / "detected.npy"), np.load(folder / "usable.npy")
    n_frames = len(usable)

    # The rule, checked against a frame-by-frame walk: only gaps longer than long_gap_frames are unusable.
    expected_unusable = long_gap_frames_by_hand(detected, blackened.clips, LandmarksConfig().long_gap_frames)
    assert set(np.flatnonzero(~usable).tolist()) == expected_unusable
    assert not usable[blackened.long_training].any() and not usable[blackened.long_held_out].any()
    assert usable[blackened.short_training].all()  # a short gap is interpolated and kept
    # FaceMesh may need a frame or two to find the face again after the black frames, never more.
    assert len(expected_unusable) <= 2 * LONG + 2 * 3

    # Counted in the stage's metrics, report.json and log, with the reason.
    report = json.loads((folder / "report.json").read_text())
    for counts in (blackened.landmark_metrics, report):
        assert counts["excluded_frames"] == counts["excluded_long_gap_frames"] == len(expected_unusable)
        assert counts["excluded_faceless_recording_frames"] == 0
    assert sum(gap["frames"] for gap in report["long_gap_list"]) == len(expected_unusable)
    assert f"{len(expected_unusable)} of {n_frames} frames left out of training and evaluation" in blackened.log

    reader = IdentityReader(blackened.base)
    held = evaluation_mask(blackened.clips, n_frames, SplitConfig())
    training = reader.training_frames()
    assert training.tolist() == [i for i in range(n_frames) if not held[i] and i not in expected_unusable]
    assert set(blackened.short_training.tolist()) <= set(training.tolist())
    # Frames without a face in a held-out recording stay test data (never trained on) but are not scored.
    np.testing.assert_array_equal(reader.held_out_mask(), held)
    np.testing.assert_array_equal(reader.validation_mask(), held & usable)


def test_self_driven_evaluation_scores_only_frames_with_a_face_with_their_own_audio(blackened, tiny_corpus):
    reader = IdentityReader(blackened.base)
    usable = np.load(blackened.base / "landmarks" / "usable.npy")
    held = evaluation_mask(blackened.clips, len(usable), SplitConfig())
    self_driven = drivings(reader, "self", FrameBudget(), tiny_corpus, AudioConfig(), ("mel",))
    scored = np.concatenate([d.frame_indices for d in self_driven])
    np.testing.assert_array_equal(np.sort(scored), np.flatnonzero(held & usable))
    waveform = reader.audio()
    for driving in self_driven:
        first, last = int(driving.frame_indices[0]), int(driving.frame_indices[-1])
        np.testing.assert_array_equal(driving.frame_indices, np.arange(first, last + 1))
        np.testing.assert_array_equal(driving.audio, waveform[first * SAMPLES_PER_FRAME:(last + 1) * SAMPLES_PER_FRAME])
    # The held-out recording with black frames in its middle is scored in two pieces around them.
    cut = [d for d in self_driven if blackened.long_held_out[0] - 1 in d.frame_indices
           or blackened.long_held_out[-1] + 1 in d.frame_indices]
    assert len(cut) == 2 and cut[0].clip == cut[1].clip

    # Cross-driven clips are rendered from the held-out cameras that have a face.
    cross = drivings(reader, "cross", FrameBudget(max_frames=80, min_clip_frames=40), tiny_corpus, AudioConfig(),
                     ("mel",))
    assert cross and all((held & usable)[d.frame_indices].all() for d in cross)


def test_synthetic_identity_frame_sets_are_unchanged(evaluation_root):
    """Every tiny-corpus frame has a face: training and test frames are exactly the split rule's."""
    for identity in ("S001", "S002"):
        reader = IdentityReader(evaluation_root / identity)
        assert reader.usable_mask().all()
        held = evaluation_mask(reader.clips(), reader.num_frames, SplitConfig())
        np.testing.assert_array_equal(reader.validation_mask(), held)
        np.testing.assert_array_equal(reader.training_frames(), np.flatnonzero(~held))
        table = reader.split()
        pd.testing.assert_frame_equal(reader.self_driven_rows(), table.loc[table.role == "self"].reset_index(drop=True))


@pytest.fixture
def landmark_copy(blackened, tmp_path) -> Path:
    """A writable copy of the blackened identity's crop and landmarks (the module's copy stays clean)."""
    base = tmp_path / "S001"
    for name in ("crop", "landmarks"):
        shutil.copytree(blackened.base / name, base / name)
    return base


def spoil(path: Path, frames: list[int], value: float) -> None:
    array = np.load(path)
    array[frames] = value
    np.save(path, array)


def with_a_face(base: Path) -> np.ndarray:
    return np.flatnonzero(np.load(base / "landmarks" / "usable.npy"))


def test_nan_in_landmarks_is_refused_by_the_parse_stage_naming_the_file_and_frames(landmark_copy):
    first, other = with_a_face(landmark_copy)[[0, -1]]
    spoil(landmark_copy / "landmarks" / "lms478.npy", [first, first + 1, first + 2, other], np.nan)
    out = landmark_copy / "parse"
    with pytest.raises(NonFiniteError, match=rf"lms478.npy: NaN or inf in frames {first}-{first + 2}, {other} "
                                             r"\(4 frames\) of \d+; .*"
                                             r"re-run the landmarks stage \(`dvc repro landmarks@S001`\)"):
        parse.run(ParseConfig(), {"crop": landmark_copy / "crop", "landmarks": landmark_copy / "landmarks"},
                  {"parse": out}, identity="S001")
    assert_no_output(out)


def test_inf_in_landmarks_is_refused_by_the_audio_stage_and_the_reader(landmark_copy):
    frame = with_a_face(landmark_copy)[len(with_a_face(landmark_copy)) // 2]
    spoil(landmark_copy / "landmarks" / "lms68.npy", [frame], np.inf)
    out = landmark_copy / "features"
    with pytest.raises(NonFiniteError, match=rf"lms68.npy: NaN or inf in frame {frame} \(1 frame\).*landmarks@S001"):
        audio.run(AudioConfig(), {"crop": landmark_copy / "crop", "landmarks": landmark_copy / "landmarks"},
                  {"features": out}, identity="S001")
    assert_no_output(out)
    with pytest.raises(NonFiniteError, match=rf"lms68.npy: NaN or inf in frame {frame} "):
        IdentityReader(landmark_copy).landmarks()


def test_nan_is_accepted_only_where_the_landmarks_stage_stores_it(landmark_copy, blackened):
    """A recording without any face is stored as NaN and flagged unusable: that is not damage."""
    folder = landmark_copy / "landmarks"
    recording = blackened.clips.iloc[0]
    frames = list(range(int(recording.first_frame), int(recording.last_frame) + 1))
    spoil(folder / "lms478.npy", frames, np.nan)
    spoil(folder / "lms68.npy", frames, np.nan)
    spoil(folder / "usable.npy", frames, False)
    stored = read_landmarks(folder)
    assert np.isnan(stored.points478[frames]).all() and not stored.usable[frames].any()
    spoil(folder / "usable.npy", [frames[-1]], True)
    with pytest.raises(NonFiniteError, match=rf"lms478.npy: NaN or inf in frame {frames[-1]} \(1 frame\)"):
        read_landmarks(folder)


def test_nan_in_audio_is_refused_naming_the_frames(landmark_copy):
    wav = landmark_copy / "crop" / "aud.wav"
    samples, rate = soundfile.read(wav, dtype="float32")
    samples[7 * SAMPLES_PER_FRAME + 3] = np.nan
    samples[9 * SAMPLES_PER_FRAME:10 * SAMPLES_PER_FRAME] = np.inf
    soundfile.write(wav, samples, rate, subtype="FLOAT")
    out = landmark_copy / "features"
    with pytest.raises(NonFiniteError, match=r"aud.wav: NaN or inf samples in the audio of frames 7, 9 \(2 frames\).*"
                                             r"dvc repro crop@S001"):
        audio.run(AudioConfig(), {"crop": landmark_copy / "crop", "landmarks": landmark_copy / "landmarks"},
                  {"features": out}, identity="S001")
    assert_no_output(out)


def test_nan_in_features_eye_and_cameras_is_refused_by_the_reader(blackened, tmp_path):
    base = tmp_path / "S001"
    for name in ("crop", "features"):
        shutil.copytree(blackened.base / name, base / name)
    spoil(base / "features" / "aud_mel.npy", [3, 4], np.nan)
    spoil(base / "features" / "eye.npy", [5], -np.inf)
    reader = IdentityReader(base)
    with pytest.raises(NonFiniteError, match=r"aud_mel.npy: NaN or inf in frames 3-4 .*dvc repro audio@S001"):
        reader.audio_features("mel")
    with pytest.raises(NonFiniteError, match=r"eye.npy: NaN or inf in frame 5 .*dvc repro audio@S001"):
        reader.eye()

    (base / "track").mkdir()
    pose = np.eye(4).tolist()
    spoilt = np.eye(4)
    spoilt[0, 3] = np.nan
    for name, ids in (("train", range(0, 10)), ("val", range(10, 14))):
        frames = [{"img_id": i, "aud_id": i, "transform_matrix": spoilt.tolist() if i in (2, 11) else pose}
                  for i in ids]
        (base / "track" / f"transforms_{name}.json").write_text(
            json.dumps({"focal_len": 300.0, "cx": 64.0, "cy": 64.0, "frames": frames}))
    with pytest.raises(NonFiniteError, match=r"transforms_train.json: NaN or inf in the transform_matrix of frame 2 "
                                             r"\(1 frame\).*dvc repro track@S001"):
        reader.cameras()


LANDMARKS_STAGE = r"re-run the landmarks stage \(`dvc repro landmarks@S001`\)"
TRACK_STAGE = r"re-run the track stage \(`dvc repro track@S001`\)"


@pytest.mark.parametrize("stage", [track, pair], ids=["track", "pair"])
def test_nan_and_inf_in_landmarks_are_refused_by_the_track_and_pair_stages(landmark_copy, stage):
    """Once "median residual nan px" (NaN) and a LinAlgError naming no file (inf)."""
    faces = with_a_face(landmark_copy)
    first, other = int(faces[3]), int(faces[-2])
    spoil(landmark_copy / "landmarks" / "lms478.npy", [first], np.inf)
    spoil(landmark_copy / "landmarks" / "lms478.npy", [other], np.nan)
    name = stage.STAGE.name
    inputs = {"crop": landmark_copy / "crop", "landmarks": landmark_copy / "landmarks",
              "track": landmark_copy / "track", "face_model": landmark_copy / "face_model"}
    config = stage.STAGE.config()
    with pytest.raises(NonFiniteError, match=rf"lms478.npy: NaN or inf in frames {first}, {other} \(2 frames\) "
                                             rf"of \d+; .*{LANDMARKS_STAGE}"):
        stage.run(config, inputs, {name: landmark_copy / name}, identity="S001")
    assert_no_output(landmark_copy / name)
    # Arrays of the wrong length stay the TrackingError they were.
    np.save(landmark_copy / "landmarks" / "usable.npy", np.load(landmark_copy / "landmarks" / "usable.npy")[:-1])
    with pytest.raises(TrackingError, match=r"S001: .*usable.npy: shape"):
        stage.run(config, inputs, {name: landmark_copy / name}, identity="S001")


def test_nan_in_landmarks_is_refused_by_the_face_model_stage(landmark_copy):
    frame = int(with_a_face(landmark_copy)[10])
    spoil(landmark_copy / "landmarks" / "lms478.npy", [frame], np.nan)
    out = landmark_copy.parent / "models" / "face_model"
    with pytest.raises(NonFiniteError, match=rf"lms478.npy: NaN or inf in frame {frame} \(1 frame\).*"
                                             rf"{LANDMARKS_STAGE}"):
        face_model.run(face_model.FaceModelStageConfig(data=DataConfig(identities=("S001",))),
                       {"processed": landmark_copy.parent}, {"model": out})
    assert_no_output(out)


def test_nan_in_landmarks_is_refused_by_the_corpus_models_loader(landmark_copy):
    frame = int(with_a_face(landmark_copy)[5])
    spoil(landmark_copy / "landmarks" / "lms68.npy", [frame], -np.inf)
    n_frames = len(np.load(landmark_copy / "landmarks" / "usable.npy"))
    with pytest.raises(NonFiniteError, match=rf"lms68.npy: NaN or inf in frame {frame} \(1 frame\).*"
                                             rf"{LANDMARKS_STAGE}"):
        datasets.load_identity(ProcessedIdentity(landmark_copy), test=np.zeros(n_frames, bool))


@pytest.fixture
def faceless_corpus(blackened, evaluation_root, tmp_path) -> Path:
    """A processed root for the corpus-level models: a copy of the blackened S001 (what they read of it) and
    the tiny corpus's S002 (a link)."""
    root = tmp_path / "processed"
    (root / "S001" / "crop").mkdir(parents=True)
    shutil.copy(blackened.base / "crop" / "clips.parquet", root / "S001" / "crop" / "clips.parquet")
    for name in ("landmarks", "features", "split"):
        shutil.copytree(blackened.base / name, root / "S001" / name)
    (root / "S002").symlink_to(evaluation_root / "S002", target_is_directory=True)
    return root


def test_frames_without_a_face_are_in_no_corpus_model_data(faceless_corpus):
    identities = datasets.load_corpus(faceless_corpus)
    usable = np.load(faceless_corpus / "S001" / "landmarks" / "usable.npy")
    test = datasets.evaluation_masks(datasets.processed_identities(faceless_corpus))["S001"]
    assert (~usable & ~test).any() and (~usable & test).any()  # black stretches in trained and in test recordings
    for cfg in (datasets.SplitConfig(), datasets.SplitConfig(holdout_identity="S001")):
        segments = datasets.segment_table(identities, cfg)
        own = segments[segments.identity == "S001"]
        split_of = np.empty(len(usable), object)
        for row in own.itertuples():
            split_of[row.first_frame:row.last_frame + 1] = row.split
        # The test frames are exactly the split tables'; the other frames without a face are NO_FACE, every other
        # frame is in a split a model reads.
        np.testing.assert_array_equal(split_of == datasets.TEST, test)
        np.testing.assert_array_equal(split_of == datasets.NO_FACE, ~usable & ~test)
        assert set(split_of[usable & ~test]) <= set(datasets.USED)
        # No loader of either model reads one: training, validation, normalisers, adaptations, speaker means.
        faceless = int(own.start.min()) + np.flatnonzero(~usable)
        sync = sync_expert.loader_frames(segments, sync_expert.SyncExpertConfig())
        used = {**{f"sync_{role}": frames for role, frames in sync.items()},
                **audio2motion.loader_frames(segments, audio2motion.Audio2MotionConfig())}
        assert used["sync_train"].size and used["train"].size and used["validation"].size
        for role, frames in used.items():
            assert not np.isin(faceless, frames).any(), role
        audit = datasets.checked_audit(identities, segments, used).set_index("identity")
        assert audit.loc["S001", "no_face_frames"] == (~usable & ~test).sum()
        assert audit.loc["S002", "no_face_frames"] == 0
    with pytest.raises(datasets.PretrainDataError, match="without a face among the frames .* reads for train"):
        datasets.checked_audit(identities, segments, {"train": faceless[:3]})


def test_frames_without_a_face_are_out_of_the_canonical_fit(faceless_corpus):
    """Their landmarks (NaN for a recording without a face) move nothing else, and crash nothing."""
    before = datasets.load_corpus(faceless_corpus)[0]
    usable = before.usable
    for name in ("lms478.npy", "lms68.npy"):
        spoil(faceless_corpus / "S001" / "landmarks" / name, list(np.flatnonzero(~usable)), np.nan)
    after = datasets.load_corpus(faceless_corpus)[0]
    np.testing.assert_array_equal(after.neutral.shape, before.neutral.shape)
    np.testing.assert_array_equal(after.canonical[usable], before.canonical[usable])
    assert np.isnan(after.canonical[~usable]).all()


def test_nan_in_audio_features_is_refused_by_the_audio_to_motion_loader(faceless_corpus):
    spoil(faceless_corpus / "S001" / "features" / "aud_mel.npy", [17, 18], np.nan)
    identities = datasets.load_corpus(faceless_corpus)
    segments = datasets.segment_table(identities, datasets.SplitConfig())
    with pytest.raises(NonFiniteError, match=r"aud_mel.npy: NaN or inf in frames 17-18 \(2 frames\).*"
                                             r"dvc repro audio@S001"):
        audio2motion.motion_data(identities, segments, "mel")


def test_nan_in_tracked_params_is_refused_by_the_pair_stage_and_exp_diff(landmark_copy, tmp_path):
    n_frames = len(np.load(landmark_copy / "landmarks" / "usable.npy"))
    folder = landmark_copy / "track"
    folder.mkdir()
    exp = np.zeros((n_frames, 8), np.float32)
    exp[[4, 5]] = np.nan
    np.save(folder / "exp.npy", exp)
    params = {"id": torch.zeros(1, 4), "exp": torch.zeros(n_frames, 8), "euler": torch.zeros(n_frames, 3),
              "trans": torch.zeros(n_frames, 3), "focal": torch.tensor([300.0])}
    torch.save(params, folder / "track_params.pt")
    inputs = {"crop": landmark_copy / "crop", "landmarks": landmark_copy / "landmarks", "track": folder,
              "face_model": landmark_copy / "face_model"}
    out = landmark_copy / "pair"
    with pytest.raises(NonFiniteError, match=rf"exp.npy: NaN or inf in frames 4-5 \(2 frames\).*{TRACK_STAGE}"):
        pair.run(PairConfig(), inputs, {"pair": out}, identity="S001")
    assert_no_output(out)
    np.save(folder / "exp.npy", np.zeros((n_frames, 8), np.float32))
    params["euler"][7, 1] = float("inf")
    torch.save(params, folder / "track_params.pt")
    with pytest.raises(NonFiniteError, match=rf"track_params.pt\[euler\]: NaN or inf in frame 7 \(1 frame\).*"
                                             rf"{TRACK_STAGE}"):
        pair.run(PairConfig(), inputs, {"pair": out}, identity="S001")
    assert_no_output(out)

    # Exp-Diff's tracker reads the identity shape and focal of the same file.
    params["euler"][7, 1] = 0.0
    params["focal"][0] = float("nan")
    torch.save(params, folder / "track_params.pt")
    (landmark_copy / "face_model").mkdir()
    (landmark_copy / "face_model" / FACE_MODEL_FILE).write_bytes(b"")
    inputs = EvaluationInputs(landmark_copy, tmp_path, tmp_path, None, landmark_copy / "face_model", {})
    with pytest.raises(NonFiniteError, match=rf"track_params.pt\[focal\]: NaN or inf .*{TRACK_STAGE}"):
        _expression_fitter(inputs, IdentityReader(landmark_copy), IMAGE_SIZE)

