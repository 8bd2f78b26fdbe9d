"""The two reference rows every table carries: ``ground_truth`` (the real frames) and ``static`` (one frame).

Neither learns anything. ``ground_truth`` returns the identity's own
validation frames, so its row is what the metrics give to the real video
(PSNR inf, LMD 0, the sync scorer's score of real speech). ``static``
repeats one training frame whatever the audio says: the floor a trained
method must beat on every metric that looks at motion.
"""

from talkhead_models.methods.base import MethodSpec, register
from talkhead_models.methods.reference.model import (GroundTruth, GroundTruthConfig, Static, StaticConfig,
                                                    load_ground_truth, load_static, train_ground_truth,
                                                    train_static)

GROUND_TRUTH = register(MethodSpec(
    name="ground_truth", family="ground_truth", config=GroundTruthConfig, train=train_ground_truth,
    load=load_ground_truth, description="the identity's real validation frames (the tables' Ground Truth row)",
))
STATIC = register(MethodSpec(
    name="static", family="static", config=StaticConfig, train=train_static, load=load_static,
    description="one training frame repeated (the floor every trained method must beat)",
))

__all__ = ["GROUND_TRUTH", "STATIC", "GroundTruth", "GroundTruthConfig", "Static", "StaticConfig"]
