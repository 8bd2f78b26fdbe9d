"""Talking-head methods, one package each, registered by name (see :mod:`talkhead_models.methods.base`).

``get_method(name)`` returns a :class:`MethodSpec` (config class, trainer,
loader); ``method_names()`` lists every registered method and ablation
variant. The reference rows are methods too: :mod:`talkhead_models.methods.ground_truth`,
:mod:`talkhead_models.methods.static` and :mod:`talkhead_models.methods.nearest_pose`.
"""

from talkhead_models.methods.base import (Driving, MethodSpec, TalkingHead, UnsupportedDriving, get_method,
                                          method_names, register)

# Registered here, not in base._load_builtin_methods: base.py is a dependency of every train and evaluate stage
# in dvc.yaml, so listing it there would retrain and re-evaluate every model. Any import of a method module runs
# this package first, so get_method() sees it all the same.
import talkhead_models.methods.nearest_pose  # noqa: E402,F401

__all__ = ["Driving", "MethodSpec", "TalkingHead", "UnsupportedDriving", "get_method", "method_names", "register"]
