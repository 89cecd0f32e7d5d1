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


@pytest.fixture(scope="session")
def small_org(tmp_path_factory):
    """A small demo organisation (API pages + .mmdb files + labels), generated once per test session."""
    from watch_pipeline.demo import generate_org

    return generate_org(tmp_path_factory.mktemp("org"), people=25, days=10, seed=11)


@pytest.fixture()
def pipeline_env(tmp_path, monkeypatch, small_org):
    """WATCH_HOME and WATCH_CONFIG for one test: a fresh warehouse over the small demo org's archive."""
    import yaml

    config = tmp_path / "watch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "user_domain": small_org.domain,
                "geoip": {"city_db": str(small_org.city_db), "asn_db": str(small_org.asn_db)},
                "archive": {"dir": str(small_org.archive_dir)},
            }
        )
    )
    monkeypatch.setenv("WATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WATCH_CONFIG", str(config))
    monkeypatch.delenv("WATCH_WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("WATCH_ARCHIVE_DIR", raising=False)
    return tmp_path
