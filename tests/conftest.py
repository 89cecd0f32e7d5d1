"""Shared fixtures. Tests that read ../shared/peer-data skip cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
PEER_DATA = SHARED / "peer-data"


@pytest.fixture(scope="session")
def peer_data() -> Path:
    """Path to ../shared/peer-data; skips the test when it is not there."""
    if not PEER_DATA.is_dir():
        pytest.skip("../shared/peer-data is not present")
    return PEER_DATA
