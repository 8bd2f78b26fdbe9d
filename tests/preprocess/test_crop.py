"""The crop stage against the synthetic ground truth: layout, frame counts, time mapping, crop box, audio."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from stages import crop
from talkhead_models import face_topology as topo
from talkhead_models.data import DataConfig
from talkhead_models.data.manifest import read_manifest
from talkhead_models.data.processed import CLIP_COLUMNS, FPS, SAMPLE_RATE
from talkhead_models.data.synthetic.corpus import SynthConfig, generate
from talkhead_models.media import iter_frames, read_audio
from talkhead_models.preprocess.facemesh import FaceMesh
from talkhead_models.preprocess.video import CropBox, CropConfig, crop_box, crop_frame, frame_schedule
from talkhead_models.preprocess.frames import FrameArchive

IMAGE_SIZE = 160
SAMPLES_PER_FRAME = SAMPLE_RATE // int(FPS)


def crop_config(**overrides) -> CropConfig:
    return CropConfig(**{"image_size": IMAGE_SIZE, "data": DataConfig(source="synthetic"), **overrides})


def run_crop(raw: Path, identity: str, out: Path, **overrides) -> pd.DataFrame:
    crop.run(crop_config(**overrides), {"raw": raw}, {"crop": out}, identity=identity)
    return pd.read_parquet(out / "clips.parquet")


@pytest.fixture(scope="module")
def tiny_crop(tiny_corpus, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("crop") / "S001" / "crop"
    return out, run_crop(tiny_corpus, "S001", out)


@pytest.fixture(scope="module")
def corpus_30fps(tmp_path_factory) -> Path:
    """One identity recorded at 30 fps, as MEAD is: the crop has to resample it to 25 fps."""
    root = tmp_path_factory.mktemp("corpus30")
    generate(SynthConfig(n_identities=1, image_size=IMAGE_SIZE, fps=30.0, n_sentences=1, emotions=("neutral",),
                         video_seconds=1.0, workers=1), root)
    return root


@pytest.fixture(scope="module")
def crop_30fps(corpus_30fps, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("crop30") / "S001" / "crop"
    return out, run_crop(corpus_30fps, "S001", out)


def as_stored(frame: np.ndarray) -> np.ndarray:
    """An RGB frame after the crop stage's JPEG round trip (BGR float)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return cv2.imdecode(data, cv2.IMREAD_COLOR).astype(np.float32)


def source_frames(corpus: Path) -> dict[str, int]:
    index = json.loads((corpus / "corpus.json").read_text())
    return {row["video"]: row["frames"] for row in index["clips"]}


def test_layout_frame_counts_and_audio_length(tiny_corpus, tiny_crop):
    out, clips = tiny_crop
    assert tuple(clips.columns) == CLIP_COLUMNS
    n_frames = FrameArchive(out / "ori_imgs.zip").contiguous_count()  # frames 0..N-1, no gap
    assert clips.first_frame.tolist() == [0] + (clips.last_frame[:-1] + 1).tolist()
    assert clips.last_frame.iloc[-1] == n_frames - 1
    # recordings order: MEAD clips sorted by path, then the long video
    assert clips["clip"].tolist() == ["neutral/level_1/001", "neutral/level_1/002", "sad/level_3/001",
                                      "sad/level_3/002", "video"]
    frames = source_frames(tiny_corpus)
    for row in clips.itertuples():
        assert row.last_frame - row.first_frame + 1 == round(frames[row.source] / row.source_fps * FPS)
        assert (tiny_corpus / row.truth).is_file()
    image = FrameArchive(out / "ori_imgs.zip").read(0, rgb=False)
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    audio = read_audio(out / "aud.wav", SAMPLE_RATE)
    assert len(audio) == n_frames * SAMPLES_PER_FRAME
    manifest = read_manifest(out)
    assert manifest["stage"] == "crop" and manifest["params"]["image_size"] == IMAGE_SIZE
    assert manifest["files"]["ori_imgs.zip"]["frames"] == n_frames
    assert manifest["files"]["ori_imgs.zip"]["shape"] == [IMAGE_SIZE, IMAGE_SIZE, 3]
    assert {"aud.wav", "clips.parquet"} <= set(manifest["files"])


def test_audio_of_each_recording_is_aligned_with_its_frames(tiny_corpus, tiny_crop):
    out, clips = tiny_crop
    audio = read_audio(out / "aud.wav", SAMPLE_RATE)
    for row in clips.itertuples():
        segment = audio[row.first_frame * SAMPLES_PER_FRAME : (row.last_frame + 1) * SAMPLES_PER_FRAME]
        original = read_audio(tiny_corpus / row.source, SAMPLE_RATE)[: len(segment)]
        # the same samples (up to PCM-16 rounding and the AAC round trip), not shifted by even 1 ms
        aligned = np.corrcoef(segment[: len(original)], original)[0, 1]
        shifted = np.corrcoef(segment[16 : len(original)], original[: len(original) - 16])[0, 1]
        assert aligned > 0.99 and aligned > shifted + 0.05, (row.clip, aligned, shifted)


def test_crop_box_of_head_and_shoulders_frames_is_the_full_frame(tiny_crop):
    _, clips = tiny_crop
    assert (clips.crop_size >= 0.95 * 192).all()
    assert ((clips.crop_x0 + clips.crop_size) <= 192).all() and ((clips.crop_y0 + clips.crop_size) <= 192).all()


def facemesh_nme(out: Path, clips: pd.DataFrame, corpus: Path, clip: str, probes: list[int]) -> float:
    """Mean NME (of the inter-ocular distance) between mapped ground truth and FaceMesh on processed frames."""
    row = clips[clips["clip"] == clip].iloc[0]
    truth = np.load(corpus / row.truth)["landmarks_2d_68"]
    schedule = frame_schedule(len(truth), row.source_fps)
    box = CropBox(int(row.crop_x0), int(row.crop_y0), int(row.crop_size))
    errors = []
    with FaceMesh(static=True) as mesh:
        for k in probes:
            expected = box.to_processed(truth[schedule[k]], IMAGE_SIZE)
            image = FrameArchive(out / "ori_imgs.zip").read(row.first_frame + k)
            found = mesh(image)
            assert found is not None, (clip, k)
            found68 = topo.to_68(found)[:, :2]
            inter_ocular = np.linalg.norm(expected[36] - expected[45])
            errors.append(np.linalg.norm(found68 - expected, axis=1).mean() / inter_ocular)
    return float(np.mean(errors))


def test_ground_truth_lands_on_the_face_in_processed_frames(tiny_corpus, tiny_crop):
    out, clips = tiny_crop
    assert facemesh_nme(out, clips, tiny_corpus, "video", [0, 25, 50, 70]) < 0.05


def test_30fps_recording_is_resampled_by_time(corpus_30fps, crop_30fps):
    out, clips = crop_30fps
    row = clips[clips.kind == "clip"].iloc[0]
    n_source = source_frames(corpus_30fps)[row.source]
    assert row.source_fps == 30.0
    assert row.last_frame - row.first_frame + 1 == round(n_source / 30.0 * 25.0)
    assert len(read_audio(out / "aud.wav", SAMPLE_RATE)) == (clips.last_frame.iloc[-1] + 1) * SAMPLES_PER_FRAME
    # processed frame k is the source frame nearest to k / 25 s (the very same JPEG), not one of its neighbours
    box = CropBox(int(row.crop_x0), int(row.crop_y0), int(row.crop_size))
    source = [as_stored(crop_frame(frame, box, IMAGE_SIZE)) for frame in iter_frames(corpus_30fps / row.source)]
    schedule = frame_schedule(n_source, 30.0)
    differences = {offset: [] for offset in (-1, 0, 1)}
    for k in range(1, len(schedule) - 1):
        processed = FrameArchive(out / "ori_imgs.zip").read(row.first_frame + k, rgb=False).astype(np.float32)
        for offset in differences:
            differences[offset].append(np.abs(processed - source[schedule[k] + offset]).mean())
    assert max(differences[0]) == 0.0
    assert min(np.mean(differences[-1]), np.mean(differences[1])) > 0.3
    assert facemesh_nme(out, clips, corpus_30fps, row["clip"], [0, 30, 60]) < 0.05


def test_off_centre_face_in_a_wide_frame_is_cropped_around_the_face(tiny_corpus, tmp_path):
    """A 400x240 frame with the 192 px picture near its right edge: the square follows the face."""
    from talkhead_models.media import VideoWriter

    source = tiny_corpus / "videos" / "S001.mp4"
    raw = tmp_path / "raw"
    raw.mkdir()
    offset = np.array([200, 40])
    with VideoWriter(raw / "S001.mp4", 400, 240, 25.0, audio_path=source) as writer:
        for frame in iter_frames(source):
            canvas = np.full((240, 400, 3), 90, np.uint8)
            canvas[offset[1] : offset[1] + 192, offset[0] : offset[0] + 192] = frame
            writer.write(canvas)
    out = tmp_path / "crop"
    clips = run_crop(raw, "S001", out, data=DataConfig(source="videos"))
    row = clips.iloc[0]
    assert row.crop_size <= 240 and row.crop_x0 + row.crop_size <= 400 and row.crop_y0 + row.crop_size <= 240
    truth = np.load(tiny_corpus / "videos" / "truth" / "S001.npz")["landmarks_2d_68"] + offset
    box = CropBox(int(row.crop_x0), int(row.crop_y0), int(row.crop_size))
    mapped = box.to_processed(truth, IMAGE_SIZE)
    assert (mapped.min(axis=(0, 1)) > 0).all() and (mapped.max(axis=(0, 1)) < IMAGE_SIZE).all()
    face_centre_x = mapped[:, :, 0].mean() / IMAGE_SIZE
    assert 0.35 < face_centre_x < 0.65
    assert FrameArchive(out / "ori_imgs.zip").read(0, rgb=False).shape == (IMAGE_SIZE, IMAGE_SIZE, 3)


def test_crop_box_is_a_robust_median_kept_inside_the_image():
    rng = np.random.default_rng(0)
    faces = np.column_stack([rng.normal(300, 2, 40), rng.normal(200, 2, 40), np.full(40, 100.0), np.full(40, 100.0)])
    faces[:5, :2] = [[20, 20]] * 5  # a few wrong detections far away
    box = crop_box(faces, 1280, 720, margin=2.0, shift_down=0.25)
    assert box.size == 200
    assert abs(box.x0 + box.size / 2 - 350) <= 3  # face centre x = 300 + 50
    assert abs(box.y0 + box.size / 2 - 275) <= 3  # face centre y = 250, plus a quarter of the face below
    near_edge = crop_box(np.array([[0.0, 0.0, 100, 100]]), 640, 480, margin=3.0, shift_down=0.0)
    assert (near_edge.x0, near_edge.y0, near_edge.size) == (0, 0, 300)
    too_big = crop_box(np.array([[200.0, 100, 300, 300]]), 640, 480, margin=3.0, shift_down=0.0)
    assert too_big.size == 480 and too_big.y0 == 0 and 0 <= too_big.x0 <= 160
    # a small face is not enlarged to the output size while the image has the pixels
    assert crop_box(faces, 1280, 720, margin=2.0, shift_down=0.25, min_side=256).size == 256
    assert crop_box(faces, 1280, 240, margin=2.0, shift_down=0.25, min_side=256).size == 240


def test_frame_schedule_picks_the_nearest_source_frame():
    assert frame_schedule(94, 30.0).tolist()[:7] == [0, 1, 2, 4, 5, 6, 7]
    assert len(frame_schedule(94, 30.0)) == 78
    assert frame_schedule(10, 12.5).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 9]
    assert frame_schedule(73, 25.0).tolist() == list(range(73))
    assert frame_schedule(1001, 29.97).max() == 1000


def test_stage_runs_from_params_with_the_shared_data_section(tiny_corpus, tmp_path):
    """``python -m stages.crop`` path: params sections crop + data, one MLflow run, report.json attached."""
    params = {"profile": "paper", "data": {"source": "videos"}, "crop": {"image_size": 96, "detection_stride": 10}}
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "S002.mp4").write_bytes((tiny_corpus / "videos" / "S002.mp4").read_bytes())
    result = crop.STAGE.execute(params, root=tmp_path, paths={"raw": "raw", "crop": "out/S002/crop"}, identity="S002")
    out = tmp_path / "out" / "S002" / "crop"
    assert result.metrics["frames"] == len(FrameArchive(out / "ori_imgs.zip")) > 0
    assert result.metrics["recordings"] == 1 and result.metrics["recordings_dropped"] == 0
    assert FrameArchive(out / "ori_imgs.zip").read(0, rgb=False).shape == (96, 96, 3)
    manifest = read_manifest(out)
    assert manifest["params"]["data"]["source"] == "videos" and manifest["params"]["detection_stride"] == 10
    assert json.loads((out / "report.json").read_text())["dropped"] == []
