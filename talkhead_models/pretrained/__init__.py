"""Corpus-level models trained once on all training identities, and the lip-sync scorers.

* ``canonical``: the canonical face frame (head pose removed from 68 3D landmarks);
* ``datasets``: the held-out split and the tensors the models train on;
* ``audio2motion``: audio features -> 68x3 landmark motion (GeneFace's audio2motion; R2-Talker's driver);
* ``sync_expert``: a SyncNet-style lip-sync expert (LSE scores without SyncNet's weights; S3D-NeRF's
  lip-sync discriminator);
* ``syncnet_reference``: syncnet_python's SyncNet, used when ``syncnet_v2.model`` is in the weights folder;
* ``lse``: Sync / LSE-C / LSE-D exactly as Wav2Lip's evaluation computes them;
* ``report``: reports/pretrain.md.
"""
