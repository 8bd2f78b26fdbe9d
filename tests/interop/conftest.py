"""One ER-NeRF data folder (tests/interop/ernerf_fixture.py), its import into our staged layout and the export of
that import back into ER-NeRF's layout, each made once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.ernerf_fixture import FixtureTruth, write_ernerf_folder

IDENTITY = "obama"


@dataclass(frozen=True)
class ErnerfCase:
    folder: Path
    """The ER-NeRF folder, as ER-NeRF's tools leave it."""
    truth: FixtureTruth
    identity: Path
    """Its import: data/processed/<ID> in our staged layout."""
    exported: Path
    """The import exported back into ER-NeRF's layout."""


@pytest.fixture(scope="session")
def ernerf_case(tmp_path_factory) -> ErnerfCase:
    from talkhead_models.interop.ernerf import export_ernerf, import_ernerf

    root = tmp_path_factory.mktemp("ernerf")
    folder = root / "ernerf" / IDENTITY
    truth = write_ernerf_folder(folder)
    identity = root / "processed" / IDENTITY
    import_ernerf(folder, identity)
    exported = root / "exported" / IDENTITY
    export_ernerf(identity, exported)
    return ErnerfCase(folder, truth, identity, exported)
