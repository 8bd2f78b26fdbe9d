"""The synthetic corpus: MEAD layout, determinism, and ground truth that matches the pixels and the audio."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from talkhead_models import face_topology as topo
from talkhead_models.data.synthetic.corpus import SynthConfig, generate
from talkhead_models.media import iter_frames, probe, read_audio
from talkhead_models.preprocess.facemesh import FaceMesh

MEAD_VIDEO = re.compile(r"^(?P<id>[A-Za-z0-9_-]+)/video/front/(?P<emotion>\w+)/level_(?P<level>\d)/(?P<n>\d{3})\.mp4$")
MEAD_AUDIO = re.compile(r"^(?P<id>[A-Za-z0-9_-]+)/audio/(?P<emotion>\w+)/level_(?P<level>\d)/(?P<n>\d{3})\.(m4a|wav)$")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_layout_is_meads(tiny_corpus, tiny_config):
    files = _files(tiny_corpus)
    videos = [f for f in files if MEAD_VIDEO.match(f)]
    audios = [f for f in files if MEAD_AUDIO.match(f)]
    n_clips = tiny_config.n_identities * len(tiny_config.emotions) * tiny_config.n_sentences
    assert len(videos) == len(audios) == n_clips
    for video in videos:
        m = MEAD_VIDEO.match(video)
        assert int(m["level"]) == (1 if m["emotion"] == "neutral" else 3)
        assert f"{m['id']}/truth/front/{m['emotion']}/level_{m['level']}/{m['n']}.npz" in files
    for identity in tiny_config.identity_names():
        assert f"videos/{identity}.mp4" in files and f"videos/truth/{identity}.npz" in files
    index = json.loads((tiny_corpus / "corpus.json").read_text())
    assert len(index["clips"]) == n_clips + tiny_config.n_identities


def test_same_seed_same_corpus_whatever_the_worker_count(tmp_path, tiny_corpus, tiny_config):
    cfg = replace(tiny_config, n_identities=1, workers=1)
    generate(cfg, tmp_path)
    for truth in (tmp_path / "S001" / "truth").rglob("*.npz"):
        a, b = np.load(truth), np.load(tiny_corpus / truth.relative_to(tmp_path))
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{truth.name}:{key}")
    video = "S001/video/front/sad/level_3/002.mp4"
    for fa, fb in zip(iter_frames(tmp_path / video), iter_frames(tiny_corpus / video), strict=True):
        np.testing.assert_array_equal(fa, fb)
    audio = "S001/audio/sad/level_3/002.m4a"
    np.testing.assert_array_equal(read_audio(tmp_path / audio), read_audio(tiny_corpus / audio))


def test_other_seed_other_corpus(tmp_path, tiny_corpus, tiny_config):
    cfg = replace(tiny_config, n_identities=1, seed=1, emotions=("neutral",), n_sentences=1, video_seconds=1.0)
    generate(cfg, tmp_path)
    truth = "S001/truth/front/neutral/level_1/001.npz"
    assert not np.array_equal(np.load(tmp_path / truth)["euler"], np.load(tiny_corpus / truth)["euler"])


def test_audio_and_video_lengths_agree(tiny_corpus):
    index = json.loads((tiny_corpus / "corpus.json").read_text())
    for clip in index["clips"]:
        frames = sum(1 for _ in iter_frames(tiny_corpus / clip["video"]))
        assert frames == clip["frames"]
        video_seconds = frames / clip["fps"]
        muxed = read_audio(tiny_corpus / clip["video"])
        assert abs(len(muxed) / 16000 - video_seconds) < 1.0 / clip["fps"], clip["video"]
        if clip["audio"]:
            alone = read_audio(tiny_corpus / clip["audio"])
            assert abs(len(alone) / 16000 - video_seconds) < 1.0 / clip["fps"], clip["audio"]
        truth = np.load(tiny_corpus / clip["truth"])
        assert truth["landmarks_2d"].shape == (frames, 478, 2)
        assert truth["labels"].shape[0] == frames
        assert truth["phone_ends"][-1] <= video_seconds + 1e-6


def test_ground_truth_landmarks_lie_on_the_face_mediapipe_sees(tiny_corpus):
    """FaceMesh's own 68 points on the rendered frames agree with the ground truth to a few % of the eye distance."""
    errors = []
    with FaceMesh(static=True) as mesh:
        for truth_path in sorted((tiny_corpus / "S002" / "truth").rglob("*.npz"))[:2] + [
                tiny_corpus / "videos" / "truth" / "S001.npz"]:
            video = str(truth_path).replace("/truth/front/", "/video/front/").replace("/truth/", "/")
            truth = np.load(truth_path)
            for i, frame in enumerate(iter_frames(Path(video).with_suffix(".mp4"))):
                if i % 5:
                    continue
                found = mesh(frame)
                assert found is not None, f"{video} frame {i}: no face"
                gt = truth["landmarks_2d_68"][i]
                inter_ocular = np.linalg.norm(gt[36] - gt[45])
                inner = np.r_[17:68]  # the jaw contour is a silhouette, defined differently by each annotator
                errors.append(np.linalg.norm(topo.to_68(found)[inner, :2] - gt[inner], axis=1).mean() / inter_ocular)
    assert np.median(errors) < 0.05, f"median NME {np.median(errors):.3f}"


def test_landmarks_are_the_projection_of_the_3d_truth(tiny_corpus):
    truth = np.load(tiny_corpus / "videos" / "truth" / "S002.npz")
    k = truth["intrinsics"]
    cam = truth["landmarks_3d"]
    projected = cam[..., :2] / cam[..., 2:] * k[[0, 1], [0, 1]] + k[[0, 1], [2, 2]]
    np.testing.assert_allclose(projected, truth["landmarks_2d"], atol=1e-2)
    # Rotations are rotations, and the head stays within the configured range.
    r = truth["rotation"]
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    assert np.abs(np.degrees(truth["euler"])).max(axis=0).tolist() <= [15.0 + 1e-3, 10.0 + 1e-3, 5.0 + 1e-3]


def test_masks_cover_head_and_torso(tiny_corpus):
    truth = np.load(tiny_corpus / "S001" / "truth" / "front" / "neutral" / "level_1" / "001.npz")
    labels = truth["labels"]
    names = list(truth["label_names"])
    for name in ("background", "head", "torso", "lips", "mouth_interior"):
        share = (labels == names.index(name)).mean()
        assert share > 0.0005, f"{name} covers {share:.4f} of the pixels"
    # The landmarks fall inside the head (or lips/mouth) region of the same frame.
    lms = np.round(truth["landmarks_2d_68"][0]).astype(int)
    inside = labels[0][lms[:, 1].clip(0, 191), lms[:, 0].clip(0, 191)]
    assert np.isin(inside[17:], [names.index(n) for n in ("head", "lips", "mouth_interior")]).mean() > 0.95


def test_same_sentence_lasts_longer_when_sad(tiny_corpus):
    index = json.loads((tiny_corpus / "corpus.json").read_text())
    for identity in ("S001", "S002"):
        for sentence in (1, 2):
            durations = {c["emotion"]: c["speech_s"] for c in index["clips"]
                         if c["identity"] == identity and c["sentence"] == sentence}
            assert durations["sad"] > 1.1 * durations["neutral"]


def test_media_probe_reads_metadata_without_ffprobe(tiny_corpus):
    info = probe(tiny_corpus / "videos" / "S001.mp4")
    assert (info.width, info.height, info.fps, info.has_video, info.has_audio) == (192, 192, 25.0, True, True)
    clips = json.loads((tiny_corpus / "corpus.json").read_text())["clips"]
    video = next(c for c in clips if c["video"] == "videos/S001.mp4")
    assert info.duration == pytest.approx(video["duration_s"], abs=0.1)


def test_unknown_emotion_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown emotions"):
        generate(SynthConfig(emotions=("bored",), n_identities=1), tmp_path)


def test_a_clip_re_rendered_from_its_inputs_is_the_corpus_clip(tiny_corpus, tiny_config):
    # clip_inputs re-draws a recording's speech, motion and expression track from its seed (the JEAN
    # disentanglement oracle recombines two clips' tracks this way): it must give what the corpus stored, and
    # the identity's renderer must draw the stored landmarks from them.
    from talkhead_models.data.synthetic.corpus import clip_inputs, identity_renderer, plan
    from talkhead_models.data.synthetic.face import photo_face

    spec = next(s for s in plan(tiny_config) if s.kind == "clip" and s.emotion != "neutral")
    truth = np.load(tiny_corpus / spec.truth_path)
    inputs = clip_inputs(tiny_config, spec)
    np.testing.assert_array_equal(inputs.expression, truth["expression"])
    np.testing.assert_array_equal(inputs.angles.astype(np.float32), truth["euler"])
    assert inputs.n_frames == len(truth["expression"])
    renderer = identity_renderer(tiny_config, photo_face(tiny_config.image_size), spec.identity_index)
    frame = renderer.render(inputs.angles[3], inputs.translation[3], inputs.expression[3], inputs.torso_shift[3],
                            inputs.torso_yaw[3])
    np.testing.assert_allclose(frame.landmarks_2d, truth["landmarks_2d"][3], atol=1e-3)
