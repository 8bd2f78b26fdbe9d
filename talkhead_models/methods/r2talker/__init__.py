"""R2-Talker (2023): hash-grid landmark encoding and progressive multilayer conditioning.

Registered names, one per rung of the paper's ablation ladder (Table 4),
all of family ``r2talker`` (params.yaml section ``r2talker``):

* ``r2talker_audio_baseline``: RAD-NeRF: audio features (AudioNet +
  AudioAttNet) through its audio-spatial decomposition (per sample, an
  ambient MLP of position and audio feature -> a 2D ambient hash grid);
* ``r2talker_landmark_encoding``: + the hash-grid landmark encoding of 5
  frames of 68 landmarks, now a global condition concatenated to every
  sample's positional feature (GLO);
* ``r2talker_maglo``: + M-AGLO (per-layer affine modulation by bypass FCs);
* ``r2talker``: + progressive optimisation: the full method.
"""

from talkhead_models.methods.base import MethodSpec, register
from talkhead_models.methods.r2talker.config import R2TalkerConfig
from talkhead_models.methods.r2talker.model import R2TalkerHead, load_r2talker
from talkhead_models.methods.r2talker.trainer import train_r2talker

LADDER = (
    ("r2talker_audio_baseline", "audio_baseline", {"condition": "audio", "maglo": False, "progressive": False,
                                                    "audio_spatial": True},
     (), "Table 4 baseline: RAD-NeRF (audio features, audio-spatial decomposition per sample)"),
    ("r2talker_landmark_encoding", "landmark_encoding", {"condition": "landmarks", "maglo": False,
                                                         "progressive": False, "audio_spatial": False},
     ("audio2motion",), "Table 4: + hash-grid landmark encoding"),
    ("r2talker_maglo", "maglo", {"condition": "landmarks", "maglo": True, "progressive": False,
                                  "audio_spatial": False},
     ("audio2motion",), "Table 4: + M-AGLO"),
    ("r2talker", "", {"condition": "landmarks", "maglo": True, "progressive": True, "audio_spatial": False},
     ("audio2motion",), "R2-Talker: + progressive optimisation (the full method)"),
)

SPECS = {
    name: register(MethodSpec(name=name, family="r2talker", config=R2TalkerConfig, train=train_r2talker,
                              load=load_r2talker, variant=variant, overrides=overrides, description=description,
                              pretrained=pretrained))
    for name, variant, overrides, pretrained, description in LADDER
}

__all__ = ["LADDER", "R2TalkerConfig", "R2TalkerHead", "SPECS", "load_r2talker", "train_r2talker"]
