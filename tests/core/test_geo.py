"""GeoIPLookup against small databases written with mmdb-writer (watch_pipeline.core.mmdb)."""

from __future__ import annotations

import ipaddress

import geoip2.database
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watch_pipeline.core import geo as geo_module
from watch_pipeline.core.geo import GEO_COLUMNS, GeoIPLookup, classify_ip, is_internal, parse_ip
from watch_pipeline.core.mmdb import asn_record, build_asn_db, build_city_db, city_record

CITY_ROWS = [
    ("81.2.69.0/24", city_record("GB", "London", 51.5142, -0.0931, subdivision_iso="ENG", accuracy_radius=50)),
    ("81.2.69.160/27", city_record("GB", "Islington", 51.5333, -0.1, accuracy_radius=5)),  # more specific
    ("1.0.0.0/8", city_record("AU", None, -33.0, 151.0)),  # country-level only
    ("2a00:1450::/32", city_record("DE", "Berlin", 52.52, 13.405, subdivision_iso="BE", accuracy_radius=20)),
    ("198.51.100.0/24", city_record("JP", "Tokyo", 35.68, 139.69)),  # TEST-NET-2: internal, never looked up
]
ASN_ROWS = [
    ("81.2.64.0/18", asn_record(20712, "Andrews & Arnold Ltd")),
    ("2a00:1450::/29", asn_record(15169, "Google LLC")),
    ("5.6.7.0/24", asn_record(64500, None)),  # ASN only, no organisation
]


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    d = tmp_path_factory.mktemp("mmdb")
    return build_city_db(CITY_ROWS, str(d / "City.mmdb")), build_asn_db(ASN_ROWS, str(d / "ASN.mmdb"))


@pytest.fixture()
def geo(dbs):
    with GeoIPLookup(*dbs) as g:
        yield g


def test_written_files_read_back_with_geoip2(dbs):
    """The helper's files are valid GeoIP2 City / GeoLite2 ASN databases for geoip2 itself."""
    with geoip2.database.Reader(dbs[0]) as city, geoip2.database.Reader(dbs[1]) as asn:
        assert city.city("81.2.69.170").city.name == "Islington"
        assert city.city("::ffff:81.2.69.1").city.name == "London"
        assert asn.asn("2a00:1450::1").autonomous_system_number == 15169


def test_lookup_values_and_index(geo):
    ips = pd.Series(["81.2.69.1", "81.2.69.170", "2a00:1450:4001::5", "1.2.3.4", "5.6.7.8"], index=[10, 11, 12, 13, 14])
    out = geo.lookup(ips)
    assert list(out.columns) == list(GEO_COLUMNS)
    assert list(out.index) == [10, 11, 12, 13, 14]
    london, islington, berlin, au, asn_only = (out.loc[i] for i in ips.index)
    assert (london.geo_country, london.geo_city, london.geo_subdivision) == ("GB", "London", "ENG")
    assert (london.geo_lat, london.geo_lon, london.geo_accuracy_km) == (51.5142, -0.0931, 50)
    assert (london.asn, london.asn_org, london.geo_network) == (20712, "Andrews & Arnold Ltd", "81.2.64.0/18")
    assert islington.geo_city == "Islington" and islington.geo_accuracy_km == 5
    assert (berlin.geo_country, berlin.geo_city, berlin.geo_subdivision) == ("DE", "Berlin", "BE")
    assert (berlin.asn, berlin.geo_network) == (15169, "2a00:1450::/29")
    assert au.geo_country == "AU" and pd.isna(au.geo_city) and pd.isna(au.asn)
    assert au.geo_network == "1.0.0.0/8"  # no ASN match: the City network
    assert pd.isna(asn_only.geo_country) and asn_only.asn == 64500 and pd.isna(asn_only.asn_org)
    assert not out["ip_internal"].any()
    assert str(out["asn"].dtype) == "Int64"


def test_ipv4_mapped_is_unwrapped(geo):
    out = geo.lookup(pd.Series(["::ffff:81.2.69.170", "::FFFF:10.1.2.3"]))
    assert out.loc[0, "geo_city"] == "Islington"
    assert out.loc[0, "geo_network"] == "81.2.64.0/18"  # reported as IPv4, not ::ffff:...
    assert bool(out.loc[1, "ip_internal"]) is True


@pytest.mark.parametrize("ip", ["10.0.0.1", "192.168.1.20", "172.16.5.4", "127.0.0.1", "169.254.1.1",
                                "100.64.0.7", "198.51.100.9", "::1", "fe80::1", "fc00::1", "fe80::1%eth0",
                                "0.0.0.0", "240.0.0.1", "224.0.0.1"])
def test_internal_addresses_are_not_looked_up(geo, ip):
    out = geo.lookup(pd.Series([ip]))
    assert bool(out.loc[0, "ip_internal"]) is True
    assert out.loc[0, list(GEO_COLUMNS[1:])].isna().all()  # 198.51.100.0/24 IS in the City DB: not used
    assert geo.stats.internal == 1 and geo.stats.found == 0


def test_unknown_malformed_and_empty(geo):
    ips = pd.Series(["8.8.8.8", "2001:4860::8888", "not-an-ip", "1.2.3.999", "1.2.3.4:443", "", None, "  ", "8.8.8.8"])
    out = geo.lookup(ips)
    assert out[list(GEO_COLUMNS[1:])].isna().all().all()
    assert not out["ip_internal"].any()
    assert sorted(geo.malformed) == sorted(["not-an-ip", "1.2.3.999", "1.2.3.4:443"])
    s = geo.stats
    assert (s.not_found, s.malformed, s.found, s.internal) == (2, 3, 0, 0)


def test_one_lookup_per_distinct_ip(geo, monkeypatch):
    calls = []
    real = geo.lookup_one
    monkeypatch.setattr(geo, "lookup_one", lambda ip: calls.append(ip) or real(ip))
    ips = pd.Series(["81.2.69.1"] * 500 + ["5.6.7.8"] * 300 + ["10.0.0.1"] * 200)
    out = geo.lookup(ips)
    assert sorted(calls) == sorted(["81.2.69.1", "5.6.7.8", "10.0.0.1"])
    assert geo.stats.distinct_ips == 3 and geo.stats.found == 2 and geo.stats.internal == 1
    assert (out["geo_city"] == "London").sum() == 500 and (out["asn"] == 64500).sum() == 300


def test_city_only_and_asn_only(dbs):
    with GeoIPLookup(dbs[0], None) as city_only, GeoIPLookup(None, dbs[1]) as asn_only:
        a = city_only.lookup(pd.Series(["81.2.69.1"])).loc[0]
        b = asn_only.lookup(pd.Series(["81.2.69.1"])).loc[0]
    with geoip2.database.Reader(dbs[0]) as ref:  # the /27 splits the /24: the matched node is what geoip2 says
        expected_network = str(ref.city("81.2.69.1").traits.network)
    assert expected_network == "81.2.69.0/25"
    assert a.geo_city == "London" and pd.isna(a.asn) and a.geo_network == expected_network
    assert pd.isna(b.geo_city) and b.asn == 20712 and b.geo_network == "81.2.64.0/18"


def test_no_database_gives_empty_geo_but_internal_flags():
    geo = GeoIPLookup(None, "")
    assert not geo.configured
    out = geo.lookup(pd.Series(["81.2.69.1", "10.0.0.1", "bogus"]))
    assert out[list(GEO_COLUMNS[1:])].isna().all().all()
    assert out["ip_internal"].tolist() == [False, True, False]
    assert geo.malformed == ["bogus"] and geo.stats.not_found == 0


def test_missing_file_names_setting_and_path(tmp_path, dbs):
    missing = tmp_path / "nope" / "GeoLite2-City.mmdb"
    with pytest.raises(FileNotFoundError) as err:
        GeoIPLookup(str(missing), None, setting_names=("GEOIP_CITY_DB", "GEOIP_ASN_DB"))
    assert str(missing) in str(err.value) and "GEOIP_CITY_DB" in str(err.value)
    with pytest.raises(FileNotFoundError, match="geoip.asn_db"):
        GeoIPLookup(dbs[0], str(tmp_path / "asn.mmdb"))


def test_swapped_databases_are_rejected(dbs):
    with pytest.raises(ValueError, match="geoip.city_db"):
        GeoIPLookup(dbs[1], dbs[0])


def test_empty_series(geo):
    out = geo.lookup(pd.Series([], dtype=object))
    assert list(out.columns) == list(GEO_COLUMNS) and len(out) == 0
    assert out["geo_lat"].dtype == np.float64


@settings(max_examples=1000, deadline=None)
@given(st.ip_addresses())
def test_fast_classification_agrees_with_ipaddress(addr):
    """classify_ip's socket fast paths give exactly what the ipaddress-based reference gives."""
    for text in {str(addr), str(addr).upper(), f" {addr} "} | ({f"::ffff:{addr}"} if addr.version == 4 else set()):
        ref = parse_ip(text)
        assert classify_ip(text) == (str(ref), is_internal(ref)), text


def test_every_special_ipv4_block_is_checked_slowly():
    """Each IPv4 range ipaddress calls non-public starts with an octet the fast path hands to ipaddress."""
    blocks = [ipaddress.ip_network(n) for n in ("100.64.0.0/10", "224.0.0.0/4", "240.0.0.0/4", "169.254.0.0/16",
                                                "127.0.0.0/8", "0.0.0.0/8")]
    blocks += list(ipaddress._IPv4Constants._private_networks)  # the library's own table
    for net in blocks:
        for octet in range(int(net.network_address) >> 24, (int(net.broadcast_address) >> 24) + 1):
            assert classify_ip(f"{octet}.0.0.1")[1] == is_internal(ipaddress.ip_address(f"{octet}.0.0.1"))
            assert octet in geo_module._V4_SPECIAL_FIRST_OCTETS, net
    public = [o for o in range(256) if o not in geo_module._V4_SPECIAL_FIRST_OCTETS]
    for octet in public:  # the complement: nothing internal anywhere in it (sampled at the block edges)
        for tail in ("0.0.0", "255.255.255", "64.0.1", "168.1.1", "0.2.1"):
            assert not is_internal(ipaddress.ip_address(f"{octet}.{tail}")), (octet, tail)


def test_lookups_made_elsewhere_give_the_same_table_and_stats(geo, dbs, monkeypatch):
    """events.prepare_day looks a day's addresses up in a helper process (lookup_rows); lookup_distinct then uses
    them and looks up only the rest."""
    uniques = pd.Index(["81.2.69.161", "5.6.7.8", "10.0.0.1", "not-an-ip", "", "  ", "8.8.8.8", "2a00:1450::1"])
    plain = geo.lookup_distinct(uniques)
    plain_stats = geo.stats
    with GeoIPLookup(*dbs) as helper:
        known = helper.lookup_rows(list(uniques[:5]) + [None, float("nan"), "81.2.69.161"])
    assert set(known) == set(uniques[:5])  # text values only, once each
    calls = []
    real = geo.lookup_one
    monkeypatch.setattr(geo, "lookup_one", lambda ip: calls.append(ip) or real(ip))
    primed = geo.lookup_distinct(uniques, known=known)
    pd.testing.assert_frame_equal(primed, plain)
    assert geo.stats == plain_stats and plain_stats.malformed_positions == [3]
    assert calls == list(uniques[5:])
