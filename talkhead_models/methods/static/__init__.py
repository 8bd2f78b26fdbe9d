"""``static``: one training frame repeated whatever the audio says.

The floor a trained method must beat on every metric that looks at motion
(the issues ask for PSNR 3 dB above it, M-LMD at most 0.7 x its value and a
higher LSE-C).
"""

from talkhead_models.methods.base import MethodSpec, register
from talkhead_models.methods.static.model import Static, StaticConfig, load, train

SPEC = register(MethodSpec(
    name="static", family="static", config=StaticConfig, train=train, load=load,
    description="one training frame repeated (the floor every trained method must beat)",
))

__all__ = ["SPEC", "Static", "StaticConfig"]
