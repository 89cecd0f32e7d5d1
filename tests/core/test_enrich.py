"""enrich_events: MaxMind's test databases, quarantine of malformed IPs, identities, column layout."""

from __future__ import annotations

import ipaddress
import json

import pandas as pd
import pytest

from watch_pipeline.core import schema
from watch_pipeline.core.enrich import enrich_events
from watch_pipeline.core.geo import GeoIPLookup
from watch_pipeline.core.identity import IdentityMapper
from watch_pipeline.core.mmdb import asn_record, build_asn_db, build_city_db, city_record

BASE = [c.name for c in schema.EVENT_BASE_COLUMNS]
ALL = [c.name for c in schema.EVENT_COLUMNS]


def make_events(rows: list[dict]) -> pd.DataFrame:
    """Base-schema events; unspecified columns get neutral values."""
    defaults = {c: "" for c in BASE}
    defaults.update(partition_date=pd.Timestamp("2026-01-05").date(), source=schema.SOURCE_GOOGLE, app="login",
                    outcome=schema.OUTCOME_SUCCESS, event_time=pd.Timestamp("2026-01-05 10:00"), access_count=1,
                    vendor_suspicious=False, ingest_time=pd.Timestamp("2026-01-05 11:00"))
    full = [{**defaults, "event_id": f"e{i}", **row} for i, row in enumerate(rows)]
    return pd.DataFrame(full, columns=BASE)


def _mapped_to_v4(network: str) -> str:
    """'::ffff:5102:45a0/123' -> '81.2.69.160/27' (the enrichment unwraps IPv4-mapped addresses)."""
    net = ipaddress.ip_network(network)
    if net.version == 6 and net.network_address.ipv4_mapped is not None:
        return str(ipaddress.ip_network((net.network_address.ipv4_mapped, net.prefixlen - 96)))
    return network


@pytest.mark.parametrize("city_name", ["GeoIP2-City-Test", "GeoLite2-City-Test"])
def test_expected_lookups_reproduced(peer_data, city_name):
    base = peer_data / "maxmind-test-data"
    expected = json.loads((base / "expected_lookups.json").read_text())
    events = make_events([{"ip": e["ip"], "actor_raw": "a@example.com"} for e in expected])
    with GeoIPLookup(str(base / f"test-data/{city_name}.mmdb"),
                     str(base / "test-data/GeoLite2-ASN-Test.mmdb")) as geo:
        result = enrich_events(events, geo, IdentityMapper())
    assert result.quarantined.empty and len(result.events) == len(expected)
    out = result.events.set_index("ip")
    for e in expected:
        row, city, asn = out.loc[e["ip"]], e[city_name], e["GeoLite2-ASN-Test"]
        internal = ipaddress.ip_address(e["ip"]).is_private
        assert bool(row.ip_internal) is internal, e["ip"]
        if city:
            assert row.geo_country == city["country"], e["ip"]
            assert (None if pd.isna(row.geo_city) else row.geo_city) == city["city"], e["ip"]
            assert (None if pd.isna(row.geo_subdivision) else row.geo_subdivision) == city["subdivision"], e["ip"]
            assert row.geo_lat == pytest.approx(city["lat"]) and row.geo_lon == pytest.approx(city["lon"]), e["ip"]
            assert row.geo_accuracy_km > 0, e["ip"]
        else:
            assert pd.isna(row.geo_country) and pd.isna(row.geo_city) and pd.isna(row.geo_lat), e["ip"]
        if asn:
            assert row.asn == asn["asn"], e["ip"]
            assert (None if pd.isna(row.asn_org) else row.asn_org) == asn["org"], e["ip"]
            assert row.geo_network == asn["network"], e["ip"]
        else:
            assert pd.isna(row.asn) and pd.isna(row.asn_org), e["ip"]
            if city:
                assert row.geo_network == _mapped_to_v4(city["network"]), e["ip"]
            else:
                assert pd.isna(row.geo_network), e["ip"]
    n_found = sum(1 for e in expected if e[city_name] or e["GeoLite2-ASN-Test"])
    assert result.stats["geo_found"] == n_found
    assert result.stats["ip_internal"] == 1  # 10.0.0.1
    assert result.stats["geo_not_found"] == len(expected) - n_found - 1  # 8.8.8.8 (and City-less IPs on GeoLite2)


@pytest.fixture(scope="module")
def small_dbs(tmp_path_factory):
    d = tmp_path_factory.mktemp("enrich-mmdb")
    city = build_city_db([
        ("81.2.69.0/24", city_record("GB", "London", 51.5, -0.1, accuracy_radius=20)),
        ("2a00:1450::/32", city_record("DE", "Berlin", 52.52, 13.405, accuracy_radius=50)),
    ], str(d / "City.mmdb"))
    asn = build_asn_db([("81.2.64.0/18", asn_record(20712, "Andrews & Arnold Ltd"))], str(d / "ASN.mmdb"))
    return city, asn


def test_extra_cases_and_quarantine(small_dbs):
    events = make_events([
        {"ip": "81.2.69.10", "user_agent": "com.tinyspeck.chatlyio/23.07.10 (iPhone; iOS 16.5.1; Scale/3.00)"},
        {"ip": "::ffff:81.2.69.11"},
        {"ip": "2a00:1450:4001:81b::200e"},
        {"ip": "192.168.0.4"},
        {"ip": "8.8.4.4"},
        {"ip": "999.1.1.1"},
        {"ip": ""},
        {"ip": "999.1.1.1"},
    ])
    with GeoIPLookup(*small_dbs) as geo:
        result = enrich_events(events, geo, IdentityMapper("example.com"))
    ev = result.events
    assert list(ev.columns) == ALL
    assert ev["event_id"].tolist() == ["e0", "e1", "e2", "e3", "e4", "e6"]
    by_id = ev.set_index("event_id")
    assert by_id.loc["e0", "geo_city"] == "London" and by_id.loc["e0", "asn"] == 20712
    assert by_id.loc["e0", "ua_browser"] == "Slack iOS App"
    assert by_id.loc["e1", "geo_city"] == "London" and by_id.loc["e1", "geo_network"] == "81.2.64.0/18"
    assert by_id.loc["e2", "geo_country"] == "DE" and by_id.loc["e2", "geo_network"] == "2a00:1450::/32"
    assert bool(by_id.loc["e3", "ip_internal"]) and pd.isna(by_id.loc["e3", "geo_country"])
    assert not by_id.loc["e4", "ip_internal"] and pd.isna(by_id.loc["e4", "geo_country"])
    assert pd.isna(by_id.loc["e6", "geo_country"]) and by_id.loc["e6", "ua_browser"] == ""
    q = result.quarantined
    assert q["event_id"].tolist() == ["e5", "e7"] and q["reason"].str.contains("999.1.1.1").all()
    s = result.stats
    assert (s["distinct_ips"], s["geo_found"], s["geo_not_found"], s["ip_internal"], s["ip_malformed"]) == \
        (7, 3, 1, 1, 1)
    assert s["malformed_ip_events"] == 2 and s["malformed_ip_values"] == ["999.1.1.1"]
    assert s["events_in"] == 8 and s["events_out"] == 6


def test_no_geo_database():
    events = make_events([{"ip": "81.2.69.10"}, {"ip": "10.1.1.1"}, {"ip": "bad ip"}])
    result = enrich_events(events, None, IdentityMapper())
    assert list(result.events.columns) == ALL and len(result.events) == 2
    assert result.events["geo_country"].isna().all() and result.events["asn"].isna().all()
    assert result.events["ip_internal"].tolist() == [False, True]
    assert result.stats["geo_configured"] is False and len(result.quarantined) == 1


def test_identities_across_sources():
    events = make_events([
        {"source": schema.SOURCE_GOOGLE, "actor_raw": "Alice@Example.COM", "ip": "1.1.1.1"},
        {"source": schema.SOURCE_SLACK_AUDIT, "app": "slack_audit", "actor_raw": "bob@EXAMPLE.com",
         "actor_id": "U222", "ip": "1.1.1.1"},
        {"source": schema.SOURCE_SLACK_ACCESS, "app": "slack_access", "actor_raw": "bobby", "actor_id": "U222"},
        {"source": schema.SOURCE_SLACK_ACCESS, "app": "slack_access", "actor_raw": "carol", "actor_id": "U333"},
        {"source": schema.SOURCE_SLACK_ACCESS, "app": "slack_access", "actor_raw": "", "actor_id": "U444"},
        {"source": schema.SOURCE_GOOGLE, "actor_raw": "old.alias@corp.example", "actor": ""},
        {"source": schema.SOURCE_GOOGLE, "actor_raw": "x@example.com", "actor": "Dave@Example.com"},
    ])
    mapper = IdentityMapper(user_map={"Old.Alias@Corp.Example": "alice@example.com"})
    result = enrich_events(events, None, mapper)
    assert result.events["actor"].tolist() == ["alice@example.com", "bob@example.com", "bob@example.com", "carol",
                                               "u444", "alice@example.com", "dave@example.com"]
    assert result.events["actor_raw"].tolist() == events["actor_raw"].tolist()  # raw kept as logged
    assert result.stats["unresolved_identities"] == 2
    assert result.stats["unresolved_sample"] == ["carol", "U444"]
    assert mapper.unresolved == ["carol", "U444"]

    # with user_domain the Slack user name falls back to name@domain (Busybody's semantics)
    result = enrich_events(events, None, IdentityMapper(user_domain="example.com"))
    assert result.events["actor"].tolist()[3] == "carol@example.com"
    assert result.events["actor"].tolist()[4] == "u444"  # a bare id is never domain-qualified
    assert result.stats["unresolved_sample"] == ["U444"]


def test_missing_base_column_is_an_error():
    with pytest.raises(KeyError, match="user_agent"):
        enrich_events(make_events([{"ip": "1.1.1.1"}]).drop(columns=["user_agent"]), None, IdentityMapper())


def test_enrich_takes_base_columns_in_any_order_and_ignores_others():
    from watch_pipeline.core.normalize import BASE_COLUMNS

    base = pd.DataFrame({c: [""] * 3 for c in BASE_COLUMNS})
    base = base.assign(event_id=["a", "b", "c"], ip=["10.0.0.1", "", "8.8.8.8"], source="google", actor_raw="x@y.z",
                       access_count=1, vendor_suspicious=False, event_time=pd.Timestamp("2026-10-05"))
    shuffled = base[list(reversed(BASE_COLUMNS))].assign(extra=1)
    a = enrich_events(base, None, IdentityMapper()).events
    b = enrich_events(shuffled, None, IdentityMapper()).events
    pd.testing.assert_frame_equal(a, b)
    assert "extra" not in b.columns
