"""Other tools' data layouts as interchange formats (:mod:`talkhead_models.interop.ernerf`: ER-NeRF's data folder)."""
