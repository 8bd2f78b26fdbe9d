"""Talking-head methods, one package each, registered by name (see :mod:`talkhead_models.methods.base`).

``get_method(name)`` returns a :class:`MethodSpec` (config class, trainer,
loader); ``method_names()`` lists every registered method and ablation
variant. The reference rows are methods too: :mod:`talkhead_models.methods.ground_truth`
and :mod:`talkhead_models.methods.static`.
"""

from talkhead_models.methods.base import (Driving, MethodSpec, TalkingHead, UnsupportedDriving, get_method,
                                          method_names, register)

__all__ = ["Driving", "MethodSpec", "TalkingHead", "UnsupportedDriving", "get_method", "method_names", "register"]
