import pytest

from watch_pipeline.settings import EXAMPLE_SETTINGS, SettingsError, load_settings, parse_settings


def test_example_settings_load_and_resolve_relative_paths():
    s = load_settings(EXAMPLE_SETTINGS)
    assert s.user_domain == "acme.example"
    assert s.geoip.city_db.endswith("GeoIP2-City.mmdb") and s.geoip.city_db.startswith("/")
    assert s.history_days == 60


def test_unknown_and_bad_keys_are_named():
    with pytest.raises(SettingsError) as err:
        parse_settings({"geoip": {"city": "x"}, "models": {"min_events": "many"}, "bogus": 1}, "f.yaml")
    text = str(err.value)
    assert "geoip.city: unknown key" in text and "bogus: unknown key" in text and "models.min_events" in text
    assert "f.yaml" in text


def test_busybody_history_limit_string_is_seconds():
    assert parse_settings({"history_limit": "172800"}).history_days == 2


def test_env_overrides_and_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("GEOIP_ASN_DB", "/data/asn.mmdb")
    monkeypatch.delenv("WATCH_CONFIG", raising=False)
    assert load_settings().geoip.asn_db == "/data/asn.mmdb"
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("user_map: [1, 2]\n")
    with pytest.raises(SettingsError, match="user_map"):
        load_settings(bad)


def test_duckdb_memory_limit_is_set_and_checked(tmp_path, monkeypatch):
    from watch_pipeline.warehouse import DuckDBWarehouse

    monkeypatch.setenv("WATCH_DUCKDB_MEMORY_LIMIT", "512MB")
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    limit = wh.query_df("SELECT current_setting('memory_limit') AS v")["v"].iloc[0]
    wh.close()
    assert limit.replace(" ", "").upper() in ("512.0MB", "488.2MIB", "512MB", "488.2MB")
    monkeypatch.setenv("WATCH_DUCKDB_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="WATCH_DUCKDB_MEMORY_LIMIT"):
        DuckDBWarehouse(tmp_path / "x.duckdb")
    monkeypatch.delenv("WATCH_DUCKDB_MEMORY_LIMIT")
    monkeypatch.setenv("WATCH_DUCKDB_CHECKPOINT_THRESHOLD", "64MB")
    wh = DuckDBWarehouse(tmp_path / "y.duckdb")
    threshold = wh.query_df("SELECT current_setting('checkpoint_threshold') AS v")["v"].iloc[0]
    wh.close()
    assert threshold.replace(" ", "").upper() in ("64.0MB", "61.0MIB", "64MB")
