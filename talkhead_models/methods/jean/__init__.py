"""JEAN (2024): joint expression and audio-guided NeRF-based talking face generation.

Registered names, all of family ``jean`` (params.yaml section ``jean``):

* ``jean``: the full method: the contrastively pre-trained audio encoder
  (fine-tuned) and the expression transformer's code of emotion features;
* Table 1's NeRF baselines on the same network: ``jean_audio_only`` (AD-NeRF:
  audio alone, its encoder trained with the NeRF) and ``jean_expression_only``
  (NeRFace: the 3DMM expression coefficients alone);
* Table 2's ablations: (a) ``jean_emotion_features`` (emotion features, no
  transformer, audio encoder from scratch), (b) ``jean_expression_params``
  (3DMM coefficients, no transformer, audio from scratch), (c)
  ``jean_ssl_audio_emotion_features`` (the pre-trained audio encoder with
  raw emotion features), (d) ``jean_transformer_on_params`` (the pre-trained
  audio encoder, the transformer on 3DMM coefficients).
"""

from talkhead_models.methods.base import MethodSpec, register
from talkhead_models.methods.jean.config import JeanConfig
from talkhead_models.methods.jean.head import JeanHead, load_jean
from talkhead_models.methods.jean.trainer import train_jean

CORPUS_MODELS = ("landmark_ae", "audio_contrastive", "emotion")
"""The corpus-level models of JEAN (pretrain_* stages); a variant declares those it reads."""

VARIANTS = (
    ("jean", "", {"audio_encoder": "contrastive", "expression_feature": "emotion", "expression_transformer": True},
     ("audio_contrastive", "emotion"), "JEAN: pre-trained audio encoder + expression transformer on emotion "
                                       "features (the full method)"),
    ("jean_audio_only", "audio_only", {"audio_encoder": "scratch", "expression_feature": "none",
                                       "expression_transformer": False},
     (), "Table 1: AD-NeRF (audio only, encoder trained with the NeRF)"),
    ("jean_expression_only", "expression_only", {"audio_encoder": "none", "expression_feature": "params",
                                                 "expression_transformer": False},
     (), "Table 1: NeRFace (3DMM expression coefficients only)"),
    ("jean_emotion_features", "emotion_features", {"audio_encoder": "scratch", "expression_feature": "emotion",
                                                   "expression_transformer": False},
     ("emotion",), "Table 2 (a): emotion features, no transformer, audio encoder from scratch"),
    ("jean_expression_params", "expression_params", {"audio_encoder": "scratch", "expression_feature": "params",
                                                     "expression_transformer": False},
     (), "Table 2 (b): 3DMM expression coefficients, no transformer, audio encoder from scratch"),
    ("jean_ssl_audio_emotion_features", "ssl_audio_emotion_features",
     {"audio_encoder": "contrastive", "expression_feature": "emotion", "expression_transformer": False},
     ("audio_contrastive", "emotion"), "Table 2 (c): pre-trained audio encoder + raw emotion features"),
    ("jean_transformer_on_params", "transformer_on_params",
     {"audio_encoder": "contrastive", "expression_feature": "params", "expression_transformer": True},
     ("audio_contrastive",), "Table 2 (d): pre-trained audio encoder + transformer on 3DMM coefficients"),
)

SPECS = {
    name: register(MethodSpec(name=name, family="jean", config=JeanConfig, train=train_jean, load=load_jean,
                              variant=variant, overrides=overrides, description=description,
                              pretrained=pretrained, expression_source=True))
    for name, variant, overrides, pretrained, description in VARIANTS
}

__all__ = ["CORPUS_MODELS", "JeanConfig", "JeanHead", "SPECS", "VARIANTS", "load_jean", "train_jean"]
