"""``nearest_pose``: the training frame whose tracked head pose is nearest the driving frame's, audio ignored.

A floor that follows the head: the static row repeats one frame, so part
of what a trained method gains over it is only the head's pose, which every
method is given (the driving frame's camera). This row gets the pose right
as far as the training frames allow and leaves the mouth to chance; a method
that beats it on the mouth's metrics does so by listening.
"""

from talkhead_models.methods.base import MethodSpec, register
from talkhead_models.methods.nearest_pose.model import (NearestPose, NearestPoseConfig, head_translation, load,
                                                        pose_distance, train)

SPEC = register(MethodSpec(
    name="nearest_pose", family="nearest_pose", config=NearestPoseConfig, train=train, load=load,
    description="the training frame with the nearest tracked head pose (a floor that follows the head)",
))

__all__ = ["SPEC", "NearestPose", "NearestPoseConfig", "head_translation", "pose_distance"]
