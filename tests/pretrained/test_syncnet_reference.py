"""The reference SyncNet: syncnet_python's architecture, MFCC and face crop, and loading its weights file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkhead_models.pretrained.syncnet_reference import (
    SYNCNET_FILE, ReferenceScorer, SyncNetS, _filterbank, face_crops, load_reference_syncnet, load_sync_scorer,
    reference_mfcc, weights_dir,
)


def _filterbank_as_published(count=26, nfft=512, rate=16000):
    """python_speech_features.get_filterbanks, loop for loop."""
    high = 2595 * np.log10(1 + (rate / 2) / 700.0)
    points = np.linspace(0, high, count + 2)
    bins = np.floor((nfft + 1) * (700 * (10 ** (points / 2595.0) - 1)) / rate)
    bank = np.zeros([count, nfft // 2 + 1])
    for j in range(count):
        for i in range(int(bins[j]), int(bins[j + 1])):
            bank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            bank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return bank


def test_mfcc_follows_python_speech_features():
    np.testing.assert_allclose(_filterbank(26, 512, 16000), _filterbank_as_published(), atol=1e-12)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    mfcc = reference_mfcc(audio)
    assert mfcc.shape == (13, 1 + int(np.ceil((16000 - 400) / 160)))
    # c0 is the log of the frame energy of the pre-emphasised 16-bit signal (first frame, by hand).
    signal = np.round(audio.astype(np.float64) * 32767)
    emphasised = np.append(signal[0], signal[1:] - 0.97 * signal[:-1])
    energy = (np.abs(np.fft.rfft(emphasised[:400], 512)) ** 2 / 512).sum()
    assert abs(mfcc[0, 0] - np.log(energy)) < 1e-3


def test_architecture_takes_syncnet_python_inputs():
    model = SyncNetS().eval()
    with torch.no_grad():
        assert model.forward_aud(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)
        assert model.forward_lip(torch.zeros(1, 3, 5, 224, 224)).shape == (1, 1024)


def test_face_crop_places_the_landmark_box_as_syncnet_python():
    frames = np.zeros((13, 256, 256, 3), np.uint8)
    frames[:, 80:160, 100:180] = 255  # a white square exactly where the "landmarks" are
    corners = np.array([[100, 80], [180, 80], [100, 160], [180, 160]], np.float32)
    points = np.repeat(np.resize(corners, (68, 2))[None], 13, axis=0)
    crop = face_crops(frames, points)[6]
    # Box half side 40 px: the crop spans 1 half side above the centre to 1.8 below, 1.4 to each side.
    white = crop[..., 0] > 127
    rows, cols = np.nonzero(white)
    assert abs(rows.min() - 0) <= 2 and abs(rows.max() - 160) <= 3
    assert abs(cols.min() - 32) <= 3 and abs(cols.max() - 192) <= 3


def test_loading_reads_the_published_state_dict_layout(tmp_path, caplog):
    assert load_reference_syncnet(tmp_path) is None  # absent: the sync expert is used instead
    state = {k: v for k, v in SyncNetS().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / SYNCNET_FILE)  # syncnet_v2.model predates num_batches_tracked
    model = load_reference_syncnet(tmp_path)
    torch.testing.assert_close(model.netcnnaud[0].weight, state["netcnnaud.0.weight"])
    assert isinstance(load_sync_scorer(tmp_path / "no-expert.pt", tmp_path), ReferenceScorer)
    torch.save({"netcnnaud.0.weight": torch.zeros(3)}, tmp_path / SYNCNET_FILE)
    with pytest.raises(RuntimeError, match="not syncnet_python's"):
        load_reference_syncnet(tmp_path)


@pytest.mark.skipif(not (weights_dir() / SYNCNET_FILE).is_file(), reason=f"{SYNCNET_FILE} not in the weights folder")
def test_reference_syncnet_finds_the_synthetic_clips_in_sync(processed_truth):
    from talkhead_models.media import read_audio
    from talkhead_models.pretrained.datasets import load_identity, processed_identities

    scorer = ReferenceScorer(load_reference_syncnet())
    identity = load_identity(processed_identities(processed_truth)[0])
    row = identity.clips.iloc[0]
    span = range(row.first_frame, row.last_frame + 1)
    frames = np.stack([identity.processed.frames("frames").read(i) for i in span])
    audio = read_audio(identity.processed.path("audio"))[span.start * 640:span.stop * 640]
    score = scorer.score((frames, identity.image[span.start:span.stop]), audio)
    assert abs(score.offset) <= 1 and score.confidence > 1.0
