"""The speed comparison: alternation order, FPS against heads of known speed, the record, skips, the stage."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from statistics import median

import mlflow
import numpy as np
import pytest
import torch
import yaml

from talkhead_models.config import ConfigError
from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.evaluation.speed import SpeedConfig, measure_speed, speed_driving, time_alternating
from talkhead_models.methods import Driving, get_method
from talkhead_models.preprocess.audio_features import AudioConfig

ROOT = Path(__file__).resolve().parents[2]


class SleepyHead:
    """A head that takes a known time per frame (a sleep: no CPU contention with the timer) and logs its calls."""

    def __init__(self, name: str, seconds_per_frame: float, calls: list, image_size: int = 8) -> None:
        self.name, self.seconds_per_frame, self.calls, self.image_size = name, seconds_per_frame, calls, image_size

    def render(self, driving: Driving):
        self.calls.append((self.name, driving.num_frames))
        for _ in range(driving.num_frames):
            time.sleep(self.seconds_per_frame)
            yield np.zeros((self.image_size, self.image_size, 3), np.uint8)


def _driving(frames: int, identity: str = "S001") -> Driving:
    return Driving(identity=identity, role="self", audio=np.zeros(frames * 640, np.float32), audio_features={},
                   eye=np.zeros(frames, np.float32), frame_indices=np.arange(frames))


def test_heads_alternate_after_one_warm_up_each_and_fps_match_their_known_frame_times():
    calls: list = []
    fast, slow = SleepyHead("a", 0.005, calls), SleepyHead("b", 0.010, calls)
    fps_a, fps_b, shape_a, shape_b = time_alternating(fast, slow, _driving(8), repetitions=5, warmup_frames=2)
    assert calls == [("a", 2), ("b", 2)] + [("a", 8), ("b", 8)] * 5
    assert len(fps_a) == len(fps_b) == 5 and shape_a == shape_b == (8, 8, 3)
    # A sleep lasts at least what it asks for, so 200 and 100 frames/s are upper bounds; scheduling on a busy
    # machine only adds time. Timing both heads (or the warm-up) in one clock would put A below 70 frames/s.
    assert 120 < median(fps_a) <= 200 * 1.001
    assert 60 < median(fps_b) <= 100 * 1.001
    assert 1.6 <= median(a / b for a, b in zip(fps_a, fps_b)) <= 2.4


def _model_dirs(root: Path, present: list[str]):
    for path in present:
        (root / path).mkdir(parents=True)
    return lambda method, identity: root / method / identity


def test_record_format_identity_choice_and_skipped_pairs(tmp_path):
    calls: list = []
    speeds = {"a": 0.002, "b": 0.004, "small": 0.002}
    sizes = {"a": 8, "b": 8, "small": 4}
    model_dir = _model_dirs(tmp_path, ["a/S001", "a/S002", "b/S002", "small/S002"])
    loaded, driven = [], []

    def load(method, identity):
        loaded.append((method, identity))
        return SleepyHead(method, speeds[method], calls, sizes[method])

    def driving(identity, frames):
        driven.append(identity)
        return _driving(frames, identity)

    threads = torch.get_num_threads()
    cfg = SpeedConfig(pairs=(("a", "b"), ("a", "missing"), ("a", "small")), frames=4, repetitions=3,
                      warmup_frames=1, threads=1)
    record = measure_speed(cfg, ["S001", "S002"], model_dir, load, driving)
    assert torch.get_num_threads() == threads  # restored
    assert json.loads(json.dumps(record)) == record  # plain JSON
    assert set(record) == {"hardware", "threads", "pairs", "skipped"}
    assert record["threads"] == 1 and "1 threads" in record["hardware"]
    (pair,) = record["pairs"]
    # S001 lacks b's model: the first identity with both is S002.
    assert pair == {"identity": "S002", "a": "a", "b": "b", "resolution": [8, 8], "frames": 4, "repetitions": 3,
                    "fps_a": pair["fps_a"], "fps_b": pair["fps_b"]}
    assert len(pair["fps_a"]) == len(pair["fps_b"]) == 3
    assert all(isinstance(v, float) and 0 < v <= 500 * 1.001 for v in pair["fps_a"])
    assert [(s["a"], s["b"]) for s in record["skipped"]] == [("a", "missing"), ("a", "small")]
    assert "missing/S001" in record["skipped"][0]["reason"]
    assert "8 px" in record["skipped"][1]["reason"] and "4 px" in record["skipped"][1]["reason"]
    assert driven == ["S002"]  # one driving per identity, shared by the pairs
    assert ("missing", "S001") not in loaded and ("missing", "S002") not in loaded

    pinned = measure_speed(SpeedConfig(pairs=(("a", "b"),), identity="S001", frames=2, repetitions=1, threads=1),
                           ["S001", "S002"], model_dir, load, driving)
    assert pinned["pairs"] == [] and "b/S001" in pinned["skipped"][0]["reason"]
    assert "S002" not in pinned["skipped"][0]["reason"]


def test_config_rejects_malformed_pairs_and_empty_budgets():
    assert SpeedConfig(pairs=[["a", "b"]]).pairs == (("a", "b"),)  # YAML lists become tuples
    for bad in ({"pairs": (("a", "a"),)}, {"pairs": (("a", "b", "c"),)}, {"pairs": ("ab",)},
                {"pairs": (("a", "b/c"),)}, {"frames": 0}, {"repetitions": 0}, {"warmup_frames": 0}, {"threads": 0}):
        with pytest.raises(ConfigError):
            SpeedConfig(**bad)


def test_speed_driving_is_the_start_of_the_first_held_out_clip_long_enough(evaluation_root):
    reader = IdentityReader(evaluation_root / "S001")
    rows = reader.split().query("role == 'self'")
    lengths = (rows["last_frame"] - rows["first_frame"] + 1).to_numpy()
    frames = int(lengths.min())  # every held-out clip is long enough: the first one is used
    driving = speed_driving(evaluation_root / "S001", frames, AudioConfig())
    first = int(rows["first_frame"].iloc[0])
    np.testing.assert_array_equal(driving.frame_indices, np.arange(first, first + frames))
    assert driving.role == "self" and driving.num_frames == frames
    np.testing.assert_array_equal(driving.audio, reader.audio()[first * 640:(first + frames) * 640])
    with pytest.raises(ValueError, match="lower speed.frames"):
        speed_driving(evaluation_root / "S001", int(lengths.max()) + 1, AudioConfig())


def test_speed_stage_times_trained_models_and_skips_a_missing_one(evaluation_root, tiny_corpus, tmp_path,
                                                                   monkeypatch):
    from stages import speed
    from stages._stage import tracking_uri
    from talkhead_models.reporting import load_records

    shutil.copytree(evaluation_root / "S001", tmp_path / "data" / "processed" / "S001")
    for method in ("static", "ground_truth"):
        spec = get_method(method)
        model = tmp_path / "data" / "models" / method / "S001"
        model.mkdir(parents=True)
        spec.train(spec.resolve_config({}), tmp_path / "data" / "processed" / "S001", {}, model)
    params = {"profile": "test", "data": {"source": "synthetic", "identities": ["S001", "S002"]},
              "speed": {"pairs": [["static", "ground_truth"], ["static", "r2talker"]], "frames": 10,
                        "repetitions": 3, "threads": 1},
              "profiles": {"test": {}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    speed.STAGE.execute(params, root=tmp_path)

    path = tmp_path / "reports" / "metrics" / "speed.json"
    record = json.loads(path.read_text())
    (pair,) = record["pairs"]
    assert (pair["identity"], pair["a"], pair["b"]) == ("S001", "static", "ground_truth")
    assert pair["resolution"] == [192, 192] and pair["frames"] == 10 and pair["repetitions"] == 3
    assert len(pair["fps_a"]) == 3 and all(v > 0 for v in pair["fps_a"] + pair["fps_b"])
    (skip,) = record["skipped"]
    assert (skip["a"], skip["b"]) == ("static", "r2talker") and "r2talker/S001" in skip["reason"]
    # speed.json sits beside the per-method record folders: the tables' loader must pass over it.
    assert len(load_records(tmp_path / "reports" / "metrics")) == 0

    mlflow.set_tracking_uri(tracking_uri(tmp_path))
    (run,) = mlflow.search_runs(experiment_names=["talkhead"], output_format="list")
    assert run.data.tags["stage"] == "speed"
    assert run.data.metrics["static_vs_ground_truth_fps_a"] == pytest.approx(median(pair["fps_a"]))
    assert run.data.metrics["pairs_skipped"] == 1 and run.data.params["frames"] == "10"


def test_dvc_speed_stage_depends_on_the_models_and_params_the_configured_pairs_use():
    """dvc.yaml cannot expand the pairs: its deps are spelled out, so they must cover what the stage reads."""
    from stages.speed import STAGE
    from talkhead_models.config import load_params

    params = load_params(ROOT / "params.yaml")
    entry = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["speed"]
    deps = {next(iter(d)) if isinstance(d, dict) else d for d in entry["deps"]}
    cfg = STAGE.resolve_config(params)
    # Every model folder, trained by the demo's runs or only by `make tables-full`'s, and the corpus-level models
    # a loaded head may read (JEAN its emotion features), is under the one dep data/models.
    assert "data/models" in deps
    trained = {(run["method"], run["identity"])
               for section in ("runs", "ablation_runs") for run in params.get(section, {}).values()}
    candidates = [cfg.identity] if cfg.identity else list(cfg.data.identities)
    for a, b in cfg.pairs:
        # After a full `dvc repro` the stage compares on the first identity whose runs train both.
        identity = next((i for i in candidates if (a, i) in trained and (b, i) in trained), None)
        assert identity is not None, f"no run of params.yaml trains both {a} and {b}"
        assert f"data/processed/{identity}" in deps, (a, b)
        for family in {get_method(a).family, get_method(b).family}:
            assert {family, f"profiles.${{profile}}.{family}"} <= set(entry["params"]), family
