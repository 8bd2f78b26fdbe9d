"""``ground_truth``: the identity's real validation frames, the tables' "Ground Truth" row.

Nothing is learned. Its row is what the metrics give the real video (PSNR
inf, LMD 0, the sync scorer's score of real speech); it has no frames of the
identity speaking someone else's audio, so every cross-driven cell is n/a.
"""

from talkhead_models.methods.base import MethodSpec, register
from talkhead_models.methods.ground_truth.model import GroundTruth, GroundTruthConfig, load, train

SPEC = register(MethodSpec(
    name="ground_truth", family="ground_truth", config=GroundTruthConfig, train=train, load=load,
    description="the identity's real validation frames (the tables' Ground Truth row)",
))

__all__ = ["SPEC", "GroundTruth", "GroundTruthConfig"]
