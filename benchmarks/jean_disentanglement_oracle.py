"""What a perfectly disentangled render scores in the cross-expression setting: is JEAN's claim reachable here?

The claim (issue 21, ``reports/claims.md``) asks a render driven by clip A's
audio and clip B's expression to have a lower Exp-Diff to B's frames than to
A's. On the synthetic corpus the right answer is known: the renderer that made
the corpus (``talkhead_models.data.synthetic``) is given clip A's visemes,
blinks, head pose and torso, and clip B's emotion track (index-aligned, as the
evaluation aligns B with A). Those frames are scored by the evaluation's own
cross-expression code (``evaluate_method`` with a head that returns them), on
the same 250 frames the demo evaluates; the oracle's own inputs are checked
against the corpus's stored truth first.

The tracker's Exp-Diff is dominated by the mouth, so the evaluation also
asks the corpus emotion CNN (``pretrain_emotion``, trained without test
frames) for each frame's probability of B's emotion and of A's; the claim
now reads those. Modes:
``oracle``; ``audio_source`` (clip A re-rendered unchanged: a check of the
re-rendering, its Exp-Diff to A is the tracker's noise on real frames); and
``jean`` (the DAG's JEAN model of the identity, for comparison)::

    python -m benchmarks.jean_disentanglement_oracle --output reports/bench/jean_disentanglement_oracle.json

Needs the DAG's outputs for S001 (processed data, the sync expert, the face
model, JEAN's model folder for the evaluation's bookkeeping); one thread,
about a minute per oracle mode, four for ``jean``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks.bench_components import machine_info
from stages._stage import git_commit
from talkhead_models import evaluation
from talkhead_models.atomic import write_text
from talkhead_models.config import load_params, resolve
from talkhead_models.data.identity_reader import IdentityReader
from talkhead_models.data.synthetic.corpus import ClipInputs, SynthConfig, clip_inputs, identity_renderer, plan
from talkhead_models.data.synthetic.face import photo_face
from talkhead_models.data.synthetic.render import EXPRESSION_KEYS
from talkhead_models.evaluation import CROSS_EXPRESSION, EvaluationConfig, EvaluationInputs
from talkhead_models.evaluation.evaluate import EMOTION_AUDIO, EMOTION_EXPRESSION
from talkhead_models.methods import Driving, get_method
from talkhead_models.metrics.uncertainty import paired_bootstrap
from talkhead_models.preprocess.audio_features import AudioConfig

logger = logging.getLogger("benchmarks.jean_disentanglement_oracle")

EMOTION_KEYS = ("happy", "sad", "angry")
"""The blendshapes an emotion drives (corpus.py sets one of them per clip); the rest is speech and blinks."""
EXPRESSION_DIFF_TO_AUDIO = "Exp-Diff to audio source"


class OracleHead:
    """A ``TalkingHead`` whose frames come from the corpus renderer: A's speech and pose with B's emotion."""

    def __init__(self, cfg: SynthConfig, reader: IdentityReader, identity: str, raw_root: Path, mode: str) -> None:
        self.cfg, self.reader, self.mode = cfg, reader, mode
        self.specs = {spec.truth_path: spec for spec in plan(cfg) if spec.identity == identity and spec.kind == "clip"}
        if not self.specs:
            raise ValueError(f"{identity} is not an identity of the synthetic corpus params.yaml describes")
        spec = next(iter(self.specs.values()))
        self.renderer = identity_renderer(cfg, photo_face(cfg.image_size), spec.identity_index)
        self.image_size = cfg.image_size
        self.clips = reader.clips()
        self.raw_root = raw_root
        self.timings: dict[str, float] = {}
        self._inputs: dict[str, ClipInputs] = {}

    def _clip_of(self, index: int) -> tuple[str, int]:
        row = self.clips[(self.clips["first_frame"] <= index) & (self.clips["last_frame"] >= index)].iloc[0]
        crop = (int(row["crop_x0"]), int(row["crop_y0"]), int(row["crop_size"]), int(row["image_size"]))
        if crop != (0, 0, self.cfg.image_size, self.cfg.image_size):
            raise ValueError(f"clip {row['clip']} was cropped {crop}; the oracle renders uncropped frames")
        return str(row["truth"]), index - int(row["first_frame"])

    def inputs(self, truth_path: str) -> ClipInputs:
        if truth_path not in self._inputs:
            inputs = clip_inputs(self.cfg, self.specs[truth_path])
            stored = np.load(self.raw_root / truth_path)
            # The re-drawn inputs must be the corpus's own: same expression track and head angles.
            np.testing.assert_allclose(inputs.expression, stored["expression"], atol=1e-6, err_msg=truth_path)
            np.testing.assert_allclose(inputs.angles, stored["euler"], atol=1e-6, err_msg=truth_path)
            self._inputs[truth_path] = inputs
        return self._inputs[truth_path]

    def render(self, driving: Driving) -> Iterator[np.ndarray]:
        emotion_columns = [EXPRESSION_KEYS.index(key) for key in EMOTION_KEYS]
        for a, b in zip(np.asarray(driving.frame_indices), np.asarray(driving.expression_frames)):
            (clip_a, row_a), (clip_b, row_b) = self._clip_of(int(a)), self._clip_of(int(b))
            source, emotion = self.inputs(clip_a), self.inputs(clip_b)
            expression = source.expression[row_a].copy()
            if self.mode == "oracle":
                expression[emotion_columns] = emotion.expression[row_b, emotion_columns]
            yield self.renderer.render(source.angles[row_a], source.translation[row_a], expression,
                                       source.torso_shift[row_a], source.torso_yaw[row_a]).image


def measure(mode: str, params: dict, identity: str, frames: int) -> dict:
    root = Path(".")
    synth = resolve(SynthConfig, params, "synth")
    raw_root = root / "data/raw/synthetic"
    reader = IdentityReader(root / "data/processed" / identity)
    jean = get_method("jean")
    pretrained = {name: root / "data/models" / name for name in ("audio2motion", "sync_expert", "emotion",
                                                                  "audio_contrastive")}
    if mode == "jean":
        inner = jean.load(jean.resolve_params(params), reader.root, {name: pretrained[name] for name in jean.pretrained},
                          root / "data/models/jean" / identity)
    else:
        inner = OracleHead(synth, reader, identity, raw_root, mode)
    spec = dataclasses.replace(jean, load=lambda *args, **kwargs: inner)
    inputs = EvaluationInputs(identity_root=reader.root, model_dir=root / "data/models/jean" / identity,
                              raw_root=raw_root, sync_expert=root / "data/models/sync_expert",
                              face_model=root / "data/models/face_model", pretrained=pretrained)
    only_cross_expression = EvaluationConfig(max_self_frames=1, max_cross_frames=1,
                                             max_cross_expression_frames=frames, videos=False)
    settings = evaluation.evaluated_settings
    evaluation.evaluated_settings = lambda method, cfg, identity: [(CROSS_EXPRESSION, frames)]
    try:
        record = evaluation.evaluate_method(spec, jean.resolve_params(params), only_cross_expression,
                                            resolve(AudioConfig, params, "audio"), inputs, None)
    finally:
        evaluation.evaluated_settings = settings
    metrics = record["settings"][CROSS_EXPRESSION]["metrics"]
    to_b, to_a = (np.asarray(metrics[name]["per_frame"]) for name in ("Exp-Diff", EXPRESSION_DIFF_TO_AUDIO))
    interval = paired_bootstrap(to_b, to_a)
    to_b_emotion, to_a_emotion = (np.asarray(metrics[name]["per_frame"]) for name in (EMOTION_EXPRESSION,
                                                                                       EMOTION_AUDIO))
    emotion_interval = paired_bootstrap(to_b_emotion, to_a_emotion)
    emotion = {"P(B's emotion)": float(to_b_emotion.mean()), "P(A's emotion)": float(to_a_emotion.mean()),
               "P(B) - P(A)": {"estimate": emotion_interval.estimate, "low": emotion_interval.low,
                               "high": emotion_interval.high}}
    return {"mode": mode, "frames": int(len(to_b)), "Exp-Diff to B": float(metrics["Exp-Diff"]["value"]),
            "Exp-Diff to A": float(metrics[EXPRESSION_DIFF_TO_AUDIO]["value"]),
            "Exp-Diff to B - to A": {"estimate": interval.estimate, "low": interval.low, "high": interval.high},
            "M-LMD to A": float(metrics["M-LMD"]["value"]), "Sync": float(metrics["Sync"]["value"]),
            "Exp-Diff says expression follows B": bool(interval.high < 0),
            "emotion CNN": emotion,
            "emotion CNN says expression follows B": bool(emotion["P(B) - P(A)"]["low"] > 0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", nargs="+", default=["audio_source", "oracle", "jean"], choices=["audio_source", "oracle", "jean"])
    parser.add_argument("--identity", default="S001")
    parser.add_argument("--frames", type=int, default=250, help="cross-expression frames (the demo's 250)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--output", type=Path, default=Path("reports/bench/jean_disentanglement_oracle.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    params = load_params(args.params)
    results = [measure(mode, params, args.identity, args.frames) for mode in args.mode]
    for result in results:
        logger.info("%s", json.dumps(result))
    report = {"benchmark": "jean_disentanglement_oracle", "date": datetime.now(timezone.utc).isoformat(),
              "commit": git_commit(Path(__file__).resolve().parents[1]), "machine": machine_info(),
              "identity": args.identity, "results": results}
    write_text(args.output, json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
