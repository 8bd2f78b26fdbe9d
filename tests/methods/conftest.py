"""The methods' tests share tests/conftest.py's ``tracked_root`` (one tiny tracked and parsed identity) and
``untrained_audio2motion``; ``IDENTITY`` names the identity they train on."""

from __future__ import annotations

from tests.conftest import TRACKED_IDENTITY as IDENTITY  # noqa: F401 - imported by the method tests
