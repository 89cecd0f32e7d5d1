"""GeoIP enrichment: MaxMind GeoIP2/GeoLite2 City and ASN databases, one lookup per distinct IP.

The files are read with ``maxminddb`` (the reader under ``geoip2.database.Reader``) in ``MODE_AUTO``, which uses
the libmaxminddb C extension when it is installed. We read the raw records rather than building geoip2 model
objects because ``Reader.city()`` costs about twice a raw lookup (measured on GeoIP2-City-Test); the fields read
are the ones geoip2 exposes (``country.iso_code``, ``subdivisions.most_specific.iso_code`` = the *last*
subdivision, ``city.names.en``, ``location.*``, ``traits.network``, ``autonomous_system_*``), and the test suite
checks them against geoip2's answers in ``expected_lookups.json``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field

import maxminddb
import numpy as np
import pandas as pd

from watch_pipeline.core.frames import take_strings

GEO_COLUMNS = ("ip_internal", "geo_country", "geo_subdivision", "geo_city", "geo_lat", "geo_lon",
               "geo_accuracy_km", "asn", "asn_org", "geo_network")
_FLOAT_COLUMNS = ("geo_lat", "geo_lon", "geo_accuracy_km")

# Shared address space (RFC 6598, carrier-grade NAT) is neither private nor global in Python's ipaddress; an
# address there is not a meaningful geo location, so we count it as internal too.
_SHARED_V4 = ipaddress.ip_network("100.64.0.0/10")
_NULL_ROW = (False,) + (None,) * 9
_INTERNAL_ROW = (True,) + (None,) * 9
_NOT_KNOWN = object()


@dataclass
class GeoStats:
    """Counts of the last :meth:`GeoIPLookup.lookup` call (all per distinct IP)."""

    distinct_ips: int = 0
    found: int = 0
    not_found: int = 0
    internal: int = 0
    malformed: int = 0
    empty: int = 0
    malformed_values: list[str] = field(default_factory=list)
    malformed_positions: list[int] = field(default_factory=list)  # into the distinct values looked up

    def as_dict(self) -> dict:
        return {"distinct_ips": self.distinct_ips, "geo_found": self.found, "geo_not_found": self.not_found,
                "ip_internal": self.internal, "ip_malformed": self.malformed, "ip_empty": self.empty}


def parse_ip(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an IP as logged; IPv4-mapped IPv6 (``::ffff:1.2.3.4``) is unwrapped. Raises ValueError if malformed."""
    addr = ipaddress.ip_address(str(text).strip())
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr


def is_internal(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Private, loopback, link-local, reserved, multicast, unspecified or CGNAT: no place on a map."""
    return bool(addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved
                or addr.is_multicast or addr.is_unspecified or (addr.version == 4 and addr in _SHARED_V4))


# First octets of every IPv4 range is_internal() can be true for (RFC 6890 special-purpose blocks, 100.64/10,
# multicast and class E). Any other IPv4 address is public without asking ipaddress, which is ~20x slower than
# the fast path; tests/core/test_geo.py checks this set against ipaddress's own tables.
_V4_SPECIAL_FIRST_OCTETS = frozenset({0, 10, 100, 127, 169, 172, 192, 198, 203, *range(224, 256)})
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
# Inside 2000::/3 only 2001::/16 (2001::/23 protocol assignments, 2001:db8::/32 documentation, ...) and 2002::/16
# (6to4) hold special-purpose blocks; everything else there is public.
_V6_SPECIAL_2000_PREFIXES = frozenset({b"\x20\x01", b"\x20\x02"})


def classify_ip(text: str) -> tuple[str, bool] | None:
    """(canonical address text, internal) for one logged IP; IPv4-mapped unwrapped; None when malformed."""
    text = text.strip()
    try:  # socket's C parsers first: most addresses are plain IPv4 / IPv6
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:
        try:
            packed = socket.inet_pton(socket.AF_INET6, text)
        except OSError:
            packed = None
        else:
            if packed[:12] == _MAPPED_PREFIX:
                packed = packed[12:]
    if packed is not None:
        if len(packed) == 4:
            if packed[0] not in _V4_SPECIAL_FIRST_OCTETS:
                return socket.inet_ntoa(packed), False
        elif 0x20 <= packed[0] <= 0x3F and packed[:2] not in _V6_SPECIAL_2000_PREFIXES:
            return socket.inet_ntop(socket.AF_INET6, packed), False  # global unicast 2000::/3
    try:  # IPv6, special IPv4 blocks and odd spellings (scope ids): ipaddress decides
        addr = parse_ip(text)
    except ValueError:
        return None
    return str(addr), is_internal(addr)


def _network_text(ip: str, prefix: int) -> str:
    """CIDR text of the matched network of ``ip`` (what geoip2 reports as ``traits.network``)."""
    if ":" in ip:
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    addr = int.from_bytes(socket.inet_aton(ip), "big")
    net = addr & ((0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF)
    return f"{socket.inet_ntoa(net.to_bytes(4, 'big'))}/{prefix}"


def _open(path: str | None, kind: str, setting: str):
    if not path:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GeoIP {kind} database configured in '{setting}' does not exist: {path}")
    reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
    db_type = reader.metadata().database_type
    # the same substring test geoip2 applies before .city() / .asn(): catches swapped settings early
    if (kind == "City" and "City" not in db_type) or (kind == "ASN" and "ASN" not in db_type):
        reader.close()
        raise ValueError(f"'{setting}' ({path}) is a {db_type!r} database, not a {kind} database")
    return reader


class GeoIPLookup:
    """Look IPs up in a City and/or an ASN database (either may be None)."""

    def __init__(self, city_db: str | None, asn_db: str | None,
                 setting_names: tuple[str, str] = ("geoip.city_db", "geoip.asn_db")) -> None:
        self.city_db, self.asn_db = city_db or None, asn_db or None
        self._city = _open(self.city_db, "City", setting_names[0])
        try:
            self._asn = _open(self.asn_db, "ASN", setting_names[1])
        except Exception:
            if self._city is not None:
                self._city.close()
            raise
        self.stats = GeoStats()

    @property
    def configured(self) -> bool:
        """False when neither database is set: lookups then only tell internal addresses apart."""
        return self._city is not None or self._asn is not None

    def close(self) -> None:
        for reader in (self._city, self._asn):
            if reader is not None:
                reader.close()

    def __enter__(self) -> GeoIPLookup:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def malformed(self) -> list[str]:
        """The malformed IP strings of the last lookup (the caller quarantines their events)."""
        return self.stats.malformed_values

    def lookup_one(self, text: object) -> tuple | None:
        """The enrichment tuple (in :data:`GEO_COLUMNS` order) for one IP string, or None if malformed."""
        if text is None or (isinstance(text, float) and np.isnan(text)) or not str(text).strip():
            return _NULL_ROW
        parsed = classify_ip(str(text))
        if parsed is None:
            return None
        ip, internal = parsed
        if internal:
            return _INTERNAL_ROW
        country = subdivision = city = lat = lon = acc = asn = org = network = None
        prefix = None
        if self._city is not None:
            rec, city_prefix = self._city.get_with_prefix_len(ip)
            if rec:
                prefix = city_prefix
                country = (rec.get("country") or {}).get("iso_code")
                subs = rec.get("subdivisions")
                subdivision = subs[-1].get("iso_code") if subs else None  # geoip2's most_specific
                city = ((rec.get("city") or {}).get("names") or {}).get("en")
                loc = rec.get("location") or {}
                lat, lon, acc = loc.get("latitude"), loc.get("longitude"), loc.get("accuracy_radius")
        if self._asn is not None:
            rec, asn_prefix = self._asn.get_with_prefix_len(ip)
            if rec:
                prefix = asn_prefix  # the ASN network is preferred
                asn = rec.get("autonomous_system_number")
                org = rec.get("autonomous_system_organization")
        if prefix is not None:
            network = _network_text(ip, prefix)
        return (False, country, subdivision, city, lat, lon, acc, asn, org, network)

    def lookup(self, ips: pd.Series) -> pd.DataFrame:
        """Enrichment columns for ``ips``, indexed like it; one database lookup per distinct value.

        Malformed IP strings get null columns and are listed in :attr:`malformed`; empty IPs are nulls.
        """
        codes, uniques = pd.factorize(ips, use_na_sentinel=True)
        table = self.lookup_distinct(uniques)
        return expand(table, codes, ips.index)

    def lookup_rows(self, values) -> dict[str, tuple | None]:
        """``lookup_one`` of every distinct text value: what :meth:`lookup_distinct` takes as `known` (a helper
        process looks a day's addresses up while the day before is built)."""
        return {v: self.lookup_one(v) for v in dict.fromkeys(values) if isinstance(v, str)}

    def lookup_distinct(self, uniques, known: dict[str, tuple | None] | None = None) -> pd.DataFrame:
        """One row per value of ``uniques`` (positionally), updating :attr:`stats`.

        `known` holds ``lookup_one`` results computed already (:meth:`lookup_rows`, with the same databases); the
        other values are looked up here."""
        stats = GeoStats(distinct_ips=len(uniques))
        rows = []
        for position, value in enumerate(uniques):
            row = known.get(value, _NOT_KNOWN) if known and isinstance(value, str) else _NOT_KNOWN
            if row is _NOT_KNOWN:
                row = self.lookup_one(value)
            if row is None:
                stats.malformed += 1
                stats.malformed_values.append(str(value))
                stats.malformed_positions.append(position)
                row = (False,) + (None,) * 9
            elif row[0]:
                stats.internal += 1
            elif value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
                stats.empty += 1
            elif row[1] is None and row[7] is None and row[9] is None:
                if self.configured:
                    stats.not_found += 1
            else:
                stats.found += 1
            rows.append(row)
        self.stats = stats
        columns = list(zip(*rows)) if rows else [()] * len(GEO_COLUMNS)
        # object columns: expand() turns them into typed columns in one step each
        return pd.DataFrame({c: np.array(v, dtype=object) for c, v in zip(GEO_COLUMNS, columns)})


def expand(table: pd.DataFrame, codes: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """Map a per-distinct-value table back onto rows: ``codes`` index ``table`` (-1 = missing value -> nulls)."""
    n = len(table)
    take = np.where(codes < 0, n, codes)  # position n is an appended all-null row
    out = {"ip_internal": np.append(table["ip_internal"].to_numpy(dtype=bool), False)[take]}
    for col in GEO_COLUMNS[1:]:
        if col in _FLOAT_COLUMNS:
            values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype="float64")
            out[col] = np.append(values, np.nan)[take]
        elif col == "asn":
            values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype="float64")
            out[col] = pd.array(np.append(values, np.nan)[take], dtype="Int64")  # ASNs < 2**32: exact in float64
        else:
            out[col] = take_strings(table[col], codes)
    return pd.DataFrame(out, index=index, columns=list(GEO_COLUMNS))


def empty_geo(index: pd.Index) -> pd.DataFrame:
    """All-null geo columns (no database configured)."""
    return expand(pd.DataFrame({c: [] for c in GEO_COLUMNS}), np.full(len(index), -1, dtype=np.intp), index)
