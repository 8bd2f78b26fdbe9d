"""GSTalker (Chen et al. 2024): audio-driven deformable 3D Gaussian splatting, and its Table 4 ablations.

Registered names (family ``gstalker``, params section ``gstalker``):

* ``gstalker``: the full method, with the audio feature params.yaml selects (the demo: ``a2m``, a demo aid);
* ``gstalker_paper_audio``: the full method on the paper's audio path whatever the profile says: the audio
  stage's features (``mel``, the one kind computed without weights, standing in for DeepSpeech) through the
  temporal smoother, not the audio-to-motion model's mouth displacements. It is the paper's GSTalker row in
  the comparison tables (``reporting/papers.py``), the ``a2m`` one a labelled variant beside it; the Table 4
  ablations stay ablations of ``gstalker``, trained with the same audio feature;
* ``gstalker_audio_whisper``: the paper's audio path on Whisper tiny.en's encoder features (``whisper``, a real
  pretrained ASR representation that runs offline) instead of mel: Table 5's question, which speech features
  drive the deformation field best, asked of the features this project can compute;
* ``gstalker_no_static_init``: no static initialisation (the random Gaussians go straight to the joint stage);
* ``gstalker_no_hash_grid``: the deformation fields read the raw canonical coordinates instead of the tri-plane;
* ``gstalker_no_perceptual``: no perceptual (LPIPS) term in the loss.

Table 5's audio features are the config field ``audio_feature`` (see
:class:`~talkhead_models.methods.gstalker.config.GSTalkerConfig`); the features computed here without any
download are ``mel`` and ``whisper`` (the audio stage writes ``whisper`` when it is in ``audio.extra_kinds``),
and ``a2m`` (the audio-to-motion model's mouth displacements) stands in for DeepSpeech / HuBERT when their
weights are absent.
"""

from talkhead_models.methods.base import MethodSpec, register
from talkhead_models.methods.gstalker.config import GSTalkerConfig
from talkhead_models.methods.gstalker.renderer import GSTalkerHead, load
from talkhead_models.methods.gstalker.trainer import train

FAMILY = "gstalker"

VARIANTS = {
    "": ({}, "GSTalker: static init, audio-driven tri-plane deformation, pose-driven torso"),
    "paper_audio": ({"audio_feature": "mel"},
                    "GSTalker on its own audio encoder path (mel features through the temporal smoother), not the "
                    "audio-to-motion model's mouth displacements"),
    "audio_whisper": ({"audio_feature": "whisper"},
                      "GSTalker on its own audio encoder path over Whisper tiny.en's encoder features (Table 5's "
                      "comparison of speech features, on a feature computed offline)"),
    "no_static_init": ({"static_iterations": 0}, "GSTalker without the static Gaussian initialisation (Table 4)"),
    "no_hash_grid": ({"spatial_encoding": "coordinates"},
                     "GSTalker with raw coordinates instead of the hash-grid tri-plane (Table 4)"),
    "no_perceptual": ({"perceptual_weight": 0.0}, "GSTalker without the perceptual (LPIPS) loss (Table 4)"),
}

SPECS = {
    variant: register(MethodSpec(
        name=FAMILY if not variant else f"{FAMILY}_{variant}", family=FAMILY, config=GSTalkerConfig, train=train,
        load=load, variant=variant, overrides=overrides, description=description,
        # Read only with audio_feature: a2m; every train stage has it as an input anyway.
        pretrained=("audio2motion",),
    ))
    for variant, (overrides, description) in VARIANTS.items()
}

__all__ = ["FAMILY", "SPECS", "VARIANTS", "GSTalkerConfig", "GSTalkerHead", "load", "train"]
