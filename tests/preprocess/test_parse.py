"""The parse stage against the rendered labels, ER-NeRF's file conventions, and failure handling."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from stages import parse
from talkhead_models.data.synthetic.face import LABEL_BACKGROUND, LABEL_LIPS, LABEL_MOUTH, LABEL_NECK, LABEL_TORSO
from talkhead_models.preprocess import parsing
from talkhead_models.preprocess.bisenet import WEIGHTS, BiSeNet, load_bisenet
from talkhead_models.preprocess.frames import write_image
from talkhead_models.preprocess.parsing import HEAD_LABELS, ParseConfig
from tests.preprocess.conftest import DROPPED_RECORDING

IDENTITIES = ("S001", "S002")
ER_NERF_BGR = {"head": (255, 0, 0), "neck": (0, 255, 0), "torso": (0, 0, 255), "background": (255, 255, 255)}


def truth_labels(corpus: Path, clips: pd.DataFrame) -> np.ndarray:
    return np.concatenate([np.load(corpus / truth)["labels"] for truth in clips.truth])


def read(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """An image as cv2 reads it; ``<kind>/<i>.png`` is read from the frame archive ``<kind>.zip`` with zipfile."""
    archive = path.parent.with_suffix(".zip")
    if archive.is_file():
        with zipfile.ZipFile(archive) as members:
            image = cv2.imdecode(np.frombuffer(members.read(path.name), np.uint8), flags)
    else:
        image = cv2.imread(str(path), flags)
    assert image is not None, path
    return image


def members(archive: Path) -> set[str]:
    with zipfile.ZipFile(archive) as frames:
        return set(frames.namelist())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("identity", IDENTITIES)
def test_masks_match_the_rendered_labels(processed_root, parse_done, tiny_corpus, identity):
    base = processed_root / identity
    clips = pd.read_parquet(base / "crop" / "clips.parquet")
    expected = truth_labels(tiny_corpus, clips)
    found = np.stack([read(base / "parse" / "semantic" / f"{i}.png") for i in range(len(expected))])
    assert found.dtype == np.uint8 and found.shape == expected.shape
    head = iou(np.isin(found, HEAD_LABELS), np.isin(expected, HEAD_LABELS))
    assert head >= 0.9, head
    per_frame = [iou(np.isin(f, HEAD_LABELS), np.isin(e, HEAD_LABELS)) for f, e in zip(found, expected)]
    assert min(per_frame) >= 0.85
    # SelfieSegmentation's person runs a little past the rendered clothing at the bottom edge.
    assert iou(found > 0, expected > 0) >= 0.85
    assert iou(found == LABEL_TORSO, expected == LABEL_TORSO) >= 0.7
    assert iou(found == LABEL_NECK, expected == LABEL_NECK) >= 0.4  # neck and torso meet at a guessed collar line
    open_mouth = (expected == LABEL_MOUTH).sum(axis=(1, 2)) > 20
    assert iou(found[open_mouth] == LABEL_MOUTH, expected[open_mouth] == LABEL_MOUTH) >= 0.5
    assert iou(found == LABEL_LIPS, expected == LABEL_LIPS) >= 0.3  # lips are 2-3 px thick at 192 px
    assert parse_done[identity]["parsed_frames"] == len(expected)


def test_parsing_files_hold_er_nerf_bytes(processed_root, parse_done):
    """ER-NeRF reads parsing/<i>.png with cv2.imread and compares these exact triples (B, G, R order)."""
    base = processed_root / "S001" / "parse"
    for index in (0, 100, 300):
        colours = read(base / "parsing" / f"{index}.png", cv2.IMREAD_COLOR)
        labels = read(base / "semantic" / f"{index}.png")
        expected = {"head": np.isin(labels, HEAD_LABELS), "neck": labels == LABEL_NECK,
                    "torso": labels == LABEL_TORSO, "background": labels == LABEL_BACKGROUND}
        for part, mask in expected.items():
            assert mask.any()
            matches = (colours == ER_NERF_BGR[part]).all(axis=2)
            assert np.array_equal(matches, mask), part
    # Viewed as an RGB image (what a viewer shows), ER-NeRF's head is blue.
    rgb = cv2.cvtColor(read(base / "parsing" / "0.png", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert ((rgb == (0, 0, 255)).all(axis=2) == np.isin(read(base / "semantic" / "0.png"), HEAD_LABELS)).all()


def test_background_gt_and_torso_images(processed_root, parse_done, tiny_corpus):
    base = processed_root / "S001"
    clips = pd.read_parquet(base / "crop" / "clips.parquet")
    expected = truth_labels(tiny_corpus, clips)
    background = read(base / "parse" / "bc.jpg").astype(np.float32)
    always_visible = (expected == LABEL_BACKGROUND).all(axis=0)
    assert always_visible.mean() > 0.2
    frame = read(base / "crop" / "ori_imgs" / "50.jpg").astype(np.float32)
    assert np.abs(background - frame)[always_visible].mean() < 6.0

    labels = read(base / "parse" / "semantic" / "50.png")
    gt = read(base / "parse" / "gt_imgs" / "50.jpg").astype(np.float32)
    person = labels != LABEL_BACKGROUND
    assert np.abs(gt - frame)[person].mean() < 3.0
    assert np.abs(gt - background)[~person].mean() < 3.0

    torso = read(base / "parse" / "torso_imgs" / "50.png")
    assert torso.shape == (*labels.shape, 4)
    alpha = torso[..., 3]
    assert (alpha[labels == LABEL_TORSO] == 255).all() and (alpha[labels == LABEL_NECK] == 255).all()
    assert (alpha[~person] == 0).mean() > 0.97  # only the neck fill reaches past the person
    head = np.isin(labels, HEAD_LABELS)
    assert 0 < (alpha[head] > 0).mean() < 0.3  # the neck is extended up under the chin, the rest is gone
    assert (torso[..., :3][alpha == 0] == 0).all()

    manifest = json.loads((base / "parse" / "manifest.json").read_text())
    assert manifest["stage"] == "parse" and manifest["files"]["parsing.zip"]["frames"] == len(expected)
    assert manifest["files"]["torso_imgs.zip"]["shape"] == [*labels.shape, 4]
    assert sorted(p.name for p in (base / "parse").iterdir()) == ["bc.jpg", "gt_imgs.zip", "manifest.json",
                                                                  "parsing.zip", "semantic.zip", "torso_imgs.zip"]


def test_dropped_recording_gets_no_masks(dropped_recording):
    metrics = parse.run(ParseConfig(), {"crop": dropped_recording / "crop",
                                        "landmarks": dropped_recording / "landmarks"},
                        {"parse": dropped_recording / "parse"}, identity="S002").metrics
    clips = pd.read_parquet(dropped_recording / "crop" / "clips.parquet")
    dropped = clips.iloc[DROPPED_RECORDING]
    frames = dropped["last_frame"] - dropped["first_frame"] + 1
    assert metrics["skipped_frames"] == frames
    out = dropped_recording / "parse"
    assert f"{dropped['first_frame']}.png" not in members(out / "parsing.zip")
    assert f"{dropped['last_frame'] + 1}.jpg" in members(out / "gt_imgs.zip")
    n_frames = int(clips["last_frame"].max()) + 1
    assert len(members(out / "torso_imgs.zip")) == n_frames - frames


def test_a_failure_leaves_the_previous_output(processed_root, parse_done, tmp_path, monkeypatch):
    base = processed_root / "S001"
    out = tmp_path / "parse"
    out.mkdir()
    (out / "marker").write_text("previous run")
    calls = {"n": 0}
    original = parsing.torso_rgba

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 40:
            raise RuntimeError("disk on fire")
        return original(*args)

    monkeypatch.setattr(parsing, "torso_rgba", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        parse.run(ParseConfig(), {"crop": base / "crop", "landmarks": base / "landmarks"}, {"parse": out},
                  identity="S001")
    assert (out / "marker").read_text() == "previous run"
    assert [p.name for p in tmp_path.iterdir()] == ["parse"]


@pytest.mark.parametrize("channels", [1, 3, 4, "palette"])
def test_png_encoder_round_trips_through_opencv(tmp_path, channels):
    rng = np.random.default_rng(1)
    if channels == "palette":
        indices = rng.integers(0, 6, (37, 53), dtype=np.uint8)
        write_image(tmp_path / "x.png", indices, palette=parsing.PARSING_PALETTE)
        np.testing.assert_array_equal(read(tmp_path / "x.png", cv2.IMREAD_COLOR), parsing.PARSING_BGR[indices])
        return
    shape = (37, 53) if channels == 1 else (37, 53, channels)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    image[:10] = 0  # flat rows, as masks and cut-outs have
    write_image(tmp_path / "x.png", image)  # RGB(A) in, so cv2 reads it back as BGR(A)
    expected = image if channels == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR if channels == 3
                                                        else cv2.COLOR_RGBA2BGRA)
    np.testing.assert_array_equal(read(tmp_path / "x.png"), expected)


def test_bisenet_matches_the_released_architecture(tmp_path, monkeypatch):
    """Module names and sizes of face-parsing.PyTorch's BiSeNet, so 79999_iter.pth (53.3 MB) loads unchanged."""
    import torch

    state = BiSeNet().state_dict()
    assert {"cp.resnet.conv1.weight", "cp.resnet.layer4.1.bn2.running_var", "cp.arm16.conv_atten.weight",
            "cp.conv_avg.conv.weight", "ffm.convblk.conv.weight", "ffm.conv2.weight", "conv_out.conv_out.weight",
            "conv_out16.conv_out.weight", "conv_out32.conv.bn.weight"} <= set(state)
    assert state["conv_out.conv_out.weight"].shape == (19, 256, 1, 1)
    assert state["cp.resnet.layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert abs(sum(v.numel() * 4 for v in state.values()) / 1e6 - 53.25) < 0.05
    with torch.no_grad():
        assert BiSeNet().eval()(torch.rand(1, 3, 64, 64)).shape == (1, 19, 64, 64)

    torch.save(state, tmp_path / WEIGHTS)
    assert isinstance(load_bisenet(tmp_path / WEIGHTS), BiSeNet)
    monkeypatch.setenv("TALKHEAD_WEIGHTS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=WEIGHTS):
        parsing.make_parser(ParseConfig(backend="bisenet"))


@pytest.mark.skipif(not (Path(os.environ.get("TALKHEAD_WEIGHTS", "weights")) / WEIGHTS).is_file(),
                    reason=f"BiSeNet weights ({WEIGHTS}) not in $TALKHEAD_WEIGHTS")
def test_bisenet_backend_with_released_weights(processed_root, landmarks_done, tiny_corpus):
    parser = parsing.make_parser(ParseConfig(backend="bisenet"))
    base = processed_root / "S001"
    clips = pd.read_parquet(base / "crop" / "clips.parquet")
    expected = truth_labels(tiny_corpus, clips)
    points = np.load(base / "landmarks" / "lms478.npy")
    scores = []
    for index in range(0, len(expected), 40):
        frame = cv2.cvtColor(read(base / "crop" / "ori_imgs" / f"{index}.jpg"), cv2.COLOR_BGR2RGB)
        found = parser(frame, points[index])
        scores.append(iou(np.isin(found, HEAD_LABELS), np.isin(expected[index], HEAD_LABELS)))
    assert np.mean(scores) > 0.8
