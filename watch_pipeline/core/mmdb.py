"""Write small GeoIP2-City- and GeoLite2-ASN-shaped ``.mmdb`` files with ``mmdb-writer``.

Used by tests, the demo generator and ``bench/enrich.py``; never a real geo source. Follows
``../shared/tools/mmdb_recipe.py``, which found these pitfalls:

* geoip2 dispatches on metadata ``database_type`` by substring: ``.city()`` needs "City", ``.asn()`` needs
  "GeoLite2-ASN". The defaults here satisfy both.
* Build an IPv6 tree (``ipv4_compatible``) so IPv4 and IPv6 lookups both work, and alias IPv4 networks under
  ``::ffff:0:0/96`` like MaxMind's own files so ``::ffff:a.b.c.d`` resolves too.
* ``insert_network`` lets a later supernet overwrite earlier subnets: insert supernets first.
* mmdb-writer 0.2.7 dedups data by Python equality, where ``1 == 1.0 == True``: key the cache by type as well.
* ``build_epoch`` must be non-zero or libmaxminddb (maxminddb's C extension) refuses the file.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Optional, Union

from mmdb_writer import Encoder, MMDBWriter, MmdbBaseType, MmdbF64, MmdbU16, MmdbU32, TreeWriter
from netaddr import IPNetwork, IPSet

Net = Union[str, ipaddress.IPv4Network, ipaddress.IPv6Network]

# Fixed, non-zero build_epoch (2023-11-14T22:13:20Z) so the files are byte-reproducible.
FIXED_EPOCH = 1_700_000_000


class _TypedEncoder(Encoder):
    """Encoder whose dedup cache cannot confuse 1, 1.0 and True."""

    def _freeze(self, value):
        if isinstance(value, dict):
            return ("map", tuple((k, self._freeze(v)) for k, v in value.items()))
        if isinstance(value, list):
            return ("arr", tuple(self._freeze(v) for v in value))
        if isinstance(value, MmdbBaseType):
            return (type(value).__name__, value.value)
        return (type(value).__name__, value)


class _TypedTreeWriter(TreeWriter):
    encoder_cls = _TypedEncoder


def write_mmdb(rows: Iterable[tuple[Net, dict]], path: str, *, database_type: str,
               description: str = "test database", build_epoch: int = FIXED_EPOCH,
               alias_ipv4_mapped: bool = True) -> str:
    """Write ``(network, record)`` rows to ``path``; a more specific network wins over its supernet."""
    if not build_epoch:
        raise ValueError("build_epoch must be non-zero (libmaxminddb rejects 0)")
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type,
                        languages=["en"], description={"en": description})
    items = []
    for net, record in rows:
        n = ipaddress.ip_network(net, strict=False)  # "1.2.3.4" -> 1.2.3.4/32
        items.append((n.prefixlen if n.version == 6 else n.prefixlen + 96, str(n), n.version, record))
    items.sort(key=lambda t: t[0])  # supernets first, so more specific networks win
    for _, cidr, version, record in items:
        writer.insert_network(IPSet([cidr]), record)  # IPv4 lands at ::a.b.c.d
        if alias_ipv4_mapped and version == 4:
            writer.insert_network(IPSet([IPNetwork(cidr).ipv6(ipv4_compatible=False)]), record)
    meta = {  # the keys MMDBWriter._build_meta() writes, with a pinned build_epoch
        "ip_version": 6,
        "database_type": database_type,
        "languages": ["en"],
        "binary_format_major_version": 2,
        "binary_format_minor_version": 0,
        "description": {"en": description},
        "build_epoch": int(build_epoch),
    }
    _TypedTreeWriter(writer.tree, meta, writer.int_type, writer.float_type).write(path)
    return path


def city_record(country_iso: str, city_name: Optional[str] = None, lat: Optional[float] = None,
                lon: Optional[float] = None, *, subdivision_iso: Optional[str] = None,
                accuracy_radius: Optional[int] = None, country_name: Optional[str] = None) -> dict:
    """A record in the GeoIP2/GeoLite2 City shape (the subset of keys the enrichment reads)."""
    country = {"iso_code": country_iso, "names": {"en": country_name or country_iso}}
    rec: dict = {"country": country, "registered_country": dict(country)}
    if city_name:
        rec["city"] = {"names": {"en": city_name}}
    if subdivision_iso:
        rec["subdivisions"] = [{"iso_code": subdivision_iso, "names": {"en": subdivision_iso}}]
    if lat is not None and lon is not None:
        loc: dict = {"latitude": MmdbF64(float(lat)), "longitude": MmdbF64(float(lon))}
        if accuracy_radius is not None:
            loc["accuracy_radius"] = MmdbU16(int(accuracy_radius))
        rec["location"] = loc
    return rec


def asn_record(asn: int, org: Optional[str] = None) -> dict:
    """A record in the GeoLite2-ASN shape (uint32 number, optional organisation)."""
    rec: dict = {"autonomous_system_number": MmdbU32(int(asn))}
    if org:
        rec["autonomous_system_organization"] = org
    return rec


def build_city_db(rows: Iterable[tuple[Net, dict]], path: str, *, database_type: str = "GeoIP2-City",
                  **kwargs) -> str:
    """``rows``: (network, :func:`city_record`) pairs. ``database_type`` must contain "City"."""
    return write_mmdb(rows, path, database_type=database_type, **kwargs)


def build_asn_db(rows: Iterable[tuple[Net, dict]], path: str, *, database_type: str = "GeoLite2-ASN",
                 **kwargs) -> str:
    """``rows``: (network, :func:`asn_record`) pairs. ``database_type`` must contain "GeoLite2-ASN"."""
    return write_mmdb(rows, path, database_type=database_type, **kwargs)
