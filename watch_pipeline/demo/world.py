"""The demo world: cities, networks (ISPs, mobile carriers, office, VPNs, hosting, Tor) and user agents.

Prefixes are public (never RFC 5737) and sit near the operators' real allocations so lookups look plausible,
but they are made up: the demo's own ``.mmdb`` files are the only truth about them. Every address the generator
hands out comes from a :class:`Network` here, so every address resolves in both databases.
"""

from __future__ import annotations

import ipaddress
import random
from functools import lru_cache
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

# ---------------------------------------------------------------------------------------------------------------
# Places
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class City:
    name: str
    country: str
    lat: float
    lon: float
    tz: str
    subdivision: str


CITIES: dict[str, City] = {c.name: c for c in (
    City("Berlin", "DE", 52.5200, 13.4050, "Europe/Berlin", "BE"),
    City("Munich", "DE", 48.1372, 11.5755, "Europe/Berlin", "BY"),
    City("Hamburg", "DE", 53.5511, 9.9937, "Europe/Berlin", "HH"),
    City("Cologne", "DE", 50.9375, 6.9603, "Europe/Berlin", "NW"),
    City("Frankfurt am Main", "DE", 50.1109, 8.6821, "Europe/Berlin", "HE"),
    City("Leipzig", "DE", 51.3397, 12.3731, "Europe/Berlin", "SN"),
    City("Dusseldorf", "DE", 51.2277, 6.7735, "Europe/Berlin", "NW"),
    City("Nuremberg", "DE", 49.4521, 11.0767, "Europe/Berlin", "BY"),
    City("London", "GB", 51.5074, -0.1278, "Europe/London", "ENG"),
    City("Manchester", "GB", 53.4808, -2.2426, "Europe/London", "ENG"),
    City("Edinburgh", "GB", 55.9533, -3.1883, "Europe/London", "SCT"),
    City("Amsterdam", "NL", 52.3676, 4.9041, "Europe/Amsterdam", "NH"),
    City("Rotterdam", "NL", 51.9244, 4.4777, "Europe/Amsterdam", "ZH"),
    City("Madrid", "ES", 40.4168, -3.7038, "Europe/Madrid", "MD"),
    City("Barcelona", "ES", 41.3874, 2.1686, "Europe/Madrid", "CT"),
    City("Warsaw", "PL", 52.2297, 21.0122, "Europe/Warsaw", "14"),
    City("Krakow", "PL", 50.0647, 19.9450, "Europe/Warsaw", "12"),
    City("Lisbon", "PT", 38.7223, -9.1393, "Europe/Lisbon", "11"),
    City("Porto", "PT", 41.1579, -8.6291, "Europe/Lisbon", "13"),
    City("Paris", "FR", 48.8566, 2.3522, "Europe/Paris", "IDF"),
    City("Lyon", "FR", 45.7640, 4.8357, "Europe/Paris", "ARA"),
    City("Roubaix", "FR", 50.6942, 3.1746, "Europe/Paris", "HDF"),
    City("Stockholm", "SE", 59.3293, 18.0686, "Europe/Stockholm", "AB"),
    City("Zurich", "CH", 47.3769, 8.5417, "Europe/Zurich", "ZH"),
    City("Vienna", "AT", 48.2082, 16.3738, "Europe/Vienna", "9"),
    City("Bucharest", "RO", 44.4268, 26.1025, "Europe/Bucharest", "B"),
    City("New York", "US", 40.7128, -74.0060, "America/New_York", "NY"),
    City("Ashburn", "US", 39.0438, -77.4874, "America/New_York", "VA"),
    City("Austin", "US", 30.2672, -97.7431, "America/Chicago", "TX"),
    City("Denver", "US", 39.7392, -104.9903, "America/Denver", "CO"),
    City("San Francisco", "US", 37.7749, -122.4194, "America/Los_Angeles", "CA"),
    City("Seattle", "US", 47.6062, -122.3321, "America/Los_Angeles", "WA"),
    City("Los Angeles", "US", 34.0522, -118.2437, "America/Los_Angeles", "CA"),
    City("Tokyo", "JP", 35.6762, 139.6503, "Asia/Tokyo", "13"),
    City("Singapore", "SG", 1.3521, 103.8198, "Asia/Singapore", "01"),
    City("Dubai", "AE", 25.2048, 55.2708, "Asia/Dubai", "DU"),
    City("Lagos", "NG", 6.5244, 3.3792, "Africa/Lagos", "LA"),
    City("Sao Paulo", "BR", -23.5505, -46.6333, "America/Sao_Paulo", "SP"),
    City("Ho Chi Minh City", "VN", 10.8231, 106.6297, "Asia/Ho_Chi_Minh", "SG"),
    City("Moscow", "RU", 55.7558, 37.6173, "Europe/Moscow", "MOW"),
    City("Mumbai", "IN", 19.0760, 72.8777, "Asia/Kolkata", "MH"),
)}

# ---------------------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------------------

RESIDENTIAL = "residential"
MOBILE = "mobile"
OFFICE = "office"
CORP_VPN = "corp_vpn"
VENUE = "venue"  # hotel, café, co-working
COMMERCIAL_VPN = "commercial_vpn"
HOSTING = "hosting"
TOR = "tor"


@dataclass
class Network:
    """One geolocated pool of addresses of one operator."""

    key: str
    kind: str
    asn: int
    org: str
    cidr: str
    city: City | None  # None: country-level geolocation only
    country: str
    isp: str = ""  # the ISP name Slack's accessLogs would show
    _base: int = field(init=False, repr=False)
    _size: int = field(init=False, repr=False)
    _v6: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.cidr)
        self._base, self._size, self._v6 = int(net.network_address), net.num_addresses, net.version == 6
        self.isp = self.isp or self.org

    def address(self, rng: random.Random) -> str:
        """A random host address of the pool (avoiding .0 and .255 style edges).

        Offices and venues egress through a handful of NAT addresses, not their whole /24.
        """
        if self.kind in (OFFICE, VENUE):
            return str(ipaddress.IPv4Address(self._base + 10 + rng.randrange(0, 4 if self.kind == OFFICE else 2)))
        if self._v6:
            return str(ipaddress.IPv6Address(self._base + rng.randrange(1, self._size - 1)))
        # random() is several times faster than randrange() and exact enough for 32-bit pools
        return str(ipaddress.IPv4Address(self._base + 1 + int(rng.random() * (self._size - 2))))

    def v6_prefix64(self, rng: random.Random) -> int:
        """A random /64 inside an IPv6 pool (a home's delegated prefix)."""
        return self._base + (rng.randrange(0, self._size >> 64) << 64)


def v6_address(prefix64: int, rng: random.Random) -> str:
    """A privacy-extension address (random interface id) inside a /64."""
    return str(ipaddress.IPv6Address(prefix64 + rng.getrandbits(64)))


# (country, [(org, asn, v4 /13 base, v6 /29 base or None)], [(carrier org, asn, pool, home city)])
# Each residential ISP's /13 is cut into one /16 per city of the country (index order) plus venues in the last /16.
_COUNTRIES = [
    ("DE", ["Berlin", "Munich", "Hamburg", "Cologne", "Frankfurt am Main", "Leipzig"],
     [("Deutsche Telekom AG", 3320, "87.128.0.0/13", "2003::/29"),
      ("Vodafone GmbH", 3209, "88.64.0.0/13", "2a02:8100::/29"),
      ("Telefonica Germany GmbH & Co.OHG", 6805, "95.112.0.0/13", None),
      ("1&1 Versatel Deutschland GmbH", 8881, "84.56.0.0/13", None)],
     [("Telekom Deutschland Mobile", 3320, "80.187.0.0/16", "Frankfurt am Main", "Deutsche Telekom AG"),
      ("Vodafone GmbH Mobile", 3209, "109.40.0.0/16", "Dusseldorf", "Vodafone GmbH"),
      ("Telefonica Germany Mobile", 6805, "82.113.96.0/19", "Munich", "Telefonica Germany GmbH & Co.OHG")]),
    ("GB", ["London", "Manchester", "Edinburgh"],
     [("British Telecommunications PLC", 2856, "86.128.0.0/13", "2a00:23c0::/29"),
      ("Virgin Media Limited", 5089, "82.0.0.0/13", None),
      ("Sky UK Limited", 5607, "90.192.0.0/13", None)],
     [("EE Limited", 12576, "31.94.0.0/16", "London", ""),
      ("Hutchison 3G UK Limited", 206067, "92.40.0.0/16", "London", "")]),
    ("NL", ["Amsterdam", "Rotterdam"],
     [("KPN B.V.", 1136, "77.160.0.0/13", None),
      ("Vodafone Libertel B.V.", 33915, "84.24.0.0/13", None)],
     [("Odido Netherlands B.V.", 31615, "62.140.128.0/17", "Amsterdam", "")]),
    ("ES", ["Madrid", "Barcelona"],
     [("Telefonica de Espana S.A.U.", 3352, "83.32.0.0/13", None),
      ("Orange Espagne SA", 12479, "90.160.0.0/13", None)],
     [("Vodafone Espana S.A.U.", 12430, "37.11.0.0/16", "Madrid", "")]),
    ("PL", ["Warsaw", "Krakow"],
     [("Orange Polska Spolka Akcyjna", 5617, "83.24.0.0/13", None),
      ("Netia SA", 12741, "89.64.0.0/13", None)],
     [("P4 Sp. z o.o.", 39603, "37.47.0.0/16", "Warsaw", "")]),
    ("PT", ["Lisbon", "Porto"],
     [("MEO - Servicos de Comunicacoes e Multimedia S.A.", 3243, "85.240.0.0/13", None),
      ("NOS Comunicacoes, S.A.", 2860, "188.80.0.0/13", None)],
     [("Vodafone Portugal", 12353, "94.60.0.0/16", "Lisbon", "")]),
    ("FR", ["Paris", "Lyon"],
     [("Orange S.A.", 3215, "90.0.0.0/13", None),
      ("Free SAS", 12322, "82.64.0.0/13", "2a01:e00::/29")],
     [("Bouygues Telecom SA", 5410, "176.128.0.0/16", "Paris", "")]),
    ("US", ["New York", "Austin", "Denver", "San Francisco", "Seattle"],
     [("Comcast Cable Communications, LLC", 7922, "73.0.0.0/13", "2601::/29"),
      ("Charter Communications Inc", 20115, "75.80.0.0/13", None),
      ("Verizon Business", 701, "71.160.0.0/13", None)],
     [("T-Mobile USA, Inc.", 21928, "172.56.0.0/16", "Seattle", ""),
      ("Cellco Partnership DBA Verizon Wireless", 22394, "174.192.0.0/16", "New York", "")]),
    ("SE", ["Stockholm"], [("Telia Company AB", 3301, "81.224.0.0/13", None)], []),
    ("JP", ["Tokyo"], [("NTT Communications Corporation", 4713, "153.128.0.0/13", None)], []),
    ("SG", ["Singapore"], [("SingNet Pte Ltd", 3758, "116.88.0.0/13", None)], []),
    ("AE", ["Dubai"], [("Emirates Telecommunications Group Company (Etisalat Group) PJSC", 5384,
                        "94.200.0.0/13", None)], []),
    ("NG", ["Lagos"], [("MTN NIGERIA Communication limited", 29465, "105.112.0.0/13", None)], []),
    ("BR", ["Sao Paulo"], [("Claro NXT Telecomunicacoes Ltda", 28573, "177.32.0.0/13", None)], []),
    ("VN", ["Ho Chi Minh City"], [("Viettel Group", 7552, "27.64.0.0/13", None)], []),
    ("RU", ["Moscow"], [("PJSC Rostelecom", 12389, "178.64.0.0/13", None)], []),
    ("IN", ["Mumbai"], [("Reliance Jio Infocomm Limited", 55836, "49.32.0.0/13", None)], []),
]

# (org, asn, [(cidr, city)])
_COMMERCIAL_VPNS = [
    ("Datacamp Limited", 60068, [("89.187.160.0/24", "Frankfurt am Main"), ("89.187.161.0/24", "London"),
                                  ("89.187.162.0/24", "New York"), ("89.187.163.0/24", "Singapore"),
                                  ("89.187.164.0/24", "Amsterdam"), ("89.187.165.0/24", "Zurich")]),
    ("M247 Europe SRL", 9009, [("146.70.10.0/24", "Bucharest"), ("146.70.11.0/24", "Paris"),
                               ("146.70.12.0/24", "Madrid"), ("146.70.13.0/24", "Warsaw"),
                               ("146.70.14.0/24", "Los Angeles"), ("146.70.15.0/24", "Stockholm")]),
    ("Packethub S.A.", 207137, [("185.202.220.0/24", "Stockholm"), ("185.202.221.0/24", "Tokyo"),
                                ("185.202.222.0/24", "Lisbon"), ("185.202.223.0/24", "Vienna")]),
    ("Clouvider Limited", 62240, [("45.134.140.0/24", "London"), ("45.134.141.0/24", "New York")]),
]
_HOSTING = [
    ("Amazon.com, Inc.", 16509, [("3.120.0.0/16", "Frankfurt am Main"), ("18.204.0.0/16", "Ashburn"),
                                 ("13.40.0.0/16", "London")]),
    ("DigitalOcean, LLC", 14061, [("167.99.0.0/17", "New York"), ("167.99.128.0/17", "Amsterdam"),
                                  ("128.199.0.0/16", "Singapore")]),
    ("OVH SAS", 16276, [("51.68.0.0/16", "Roubaix"), ("51.79.0.0/16", "Singapore")]),
    ("Hetzner Online GmbH", 24940, [("49.12.0.0/16", "Nuremberg")]),
]
_TOR = [
    ("Stiftung Erneuerbare Freiheit", 60729, [("185.220.100.0/24", None), ("185.220.101.0/24", None)], "DE"),
    ("Foundation for Applied Privacy", 208323, [("109.70.100.0/24", "Vienna")], "AT"),
    ("Emerald Onion", 396507, [("23.129.64.0/24", "Seattle")], "US"),
]
# corporate networks of the demo organisation
OFFICE_CIDR, OFFICE_CITY = "213.61.56.0/24", "Berlin"
CORP_VPN_CIDR, CORP_VPN_CITY = "165.225.76.0/24", "Amsterdam"

HOTEL_CITIES = ["Paris", "London", "New York", "San Francisco", "Tokyo", "Singapore", "Dubai", "Madrid",
                "Amsterdam", "Warsaw", "Stockholm", "Lisbon"]
FAR_ATTACK_COUNTRIES = ["NG", "BR", "VN", "RU", "IN"]


_MMDB_CACHE: dict[str, bytes] = {}


class World:
    """All networks, indexed the ways the generator needs them."""

    def __init__(self) -> None:
        self.networks: list[Network] = []
        self.residential: dict[tuple[str, str], list[Network]] = {}  # (country, city) -> one pool per ISP
        self.residential_v6: dict[tuple[str, str], Network] = {}  # (isp org, city) -> v6 pool
        self.mobile: dict[str, list[Network]] = {}  # country -> carriers
        self.venues: dict[str, list[Network]] = {}  # city -> /24s (hotels, cafés, co-working)
        self.commercial_vpn: list[Network] = []
        self.hosting: list[Network] = []
        self.tor: list[Network] = []
        self.home_cities: dict[str, list[str]] = {}
        for country, cities, isps, carriers in _COUNTRIES:
            self.home_cities[country] = cities
            for isp_i, (org, asn, v4, v6) in enumerate(isps):
                subnets = list(ipaddress.ip_network(v4).subnets(new_prefix=16))
                v6nets = list(ipaddress.ip_network(v6).subnets(new_prefix=32)) if v6 else []
                for i, cname in enumerate(cities):
                    net = self._add(f"res:{org}:{cname}", RESIDENTIAL, asn, org, str(subnets[i]), cname)
                    self.residential.setdefault((country, cname), []).append(net)
                    if v6:
                        self.residential_v6[(org, cname)] = self._add(
                            f"res6:{org}:{cname}", RESIDENTIAL, asn, org, str(v6nets[i]), cname)
                if isp_i == 0:  # venues (hotels, cafés, co-working) in the first ISP's last /16
                    venue_blocks = list(subnets[-1].subnets(new_prefix=24))
                    for ci, cname in enumerate(cities):
                        for k, label in enumerate(("hotel-a", "hotel-b", "cafe-a", "cafe-b", "cowork")):
                            net = self._add(f"venue:{label}:{cname}", VENUE, asn, org,
                                            str(venue_blocks[ci * 8 + k]), cname)
                            self.venues.setdefault(cname, []).append(net)
            for org, asn, pool, home, isp in carriers:
                self.mobile.setdefault(country, []).append(
                    self._add(f"mob:{org}", MOBILE, asn, isp or org, pool, home, isp=org))
        for org, asn, exits in _COMMERCIAL_VPNS:
            for cidr, cname in exits:
                self.commercial_vpn.append(self._add(f"vpn:{org}:{cname}", COMMERCIAL_VPN, asn, org, cidr, cname))
        for org, asn, sites in _HOSTING:
            for cidr, cname in sites:
                self.hosting.append(self._add(f"host:{org}:{cname}", HOSTING, asn, org, cidr, cname))
        for org, asn, exits, country in _TOR:
            for cidr, cname in exits:
                self.tor.append(self._add(f"tor:{cidr}", TOR, asn, org, cidr, cname, country=country))
        self.office = self._add("office", OFFICE, 8220, "Colt Technology Services GmbH", OFFICE_CIDR, OFFICE_CITY)
        self.corp_vpn = self._add("corp_vpn", CORP_VPN, 53813, "Zscaler, Inc.", CORP_VPN_CIDR, CORP_VPN_CITY)
        self._check_disjoint()

    def _add(self, key: str, kind: str, asn: int, org: str, cidr: str, city: str | None,
             country: str = "", isp: str = "") -> Network:
        c = CITIES[city] if city else None
        net = Network(key, kind, asn, org, cidr, c, c.country if c else country, isp)
        self.networks.append(net)
        return net

    def _check_disjoint(self) -> None:
        nets = sorted((ipaddress.ip_network(n.cidr) for n in self.networks), key=lambda n: (n.version, n))
        for a, b in zip(nets, nets[1:]):
            if a.version == b.version and a.overlaps(b):
                raise ValueError(f"demo world networks overlap: {a} {b}")

    def local_networks(self, country: str) -> list[Network]:
        return [n for (c, _), pools in self.residential.items() if c == country for n in pools]

    def write_mmdb(self, city_path: Path, asn_path: Path) -> None:
        """Write the City and ASN databases covering every network of the world.

        The world does not depend on the seed, so the bytes are built once per process and copied after that.
        """
        if not _MMDB_CACHE:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                self._build_mmdb(Path(tmp) / "city.mmdb", Path(tmp) / "asn.mmdb")
                _MMDB_CACHE["city"] = (Path(tmp) / "city.mmdb").read_bytes()
                _MMDB_CACHE["asn"] = (Path(tmp) / "asn.mmdb").read_bytes()
        Path(city_path).write_bytes(_MMDB_CACHE["city"])
        Path(asn_path).write_bytes(_MMDB_CACHE["asn"])

    def _build_mmdb(self, city_path: Path, asn_path: Path) -> None:
        from watch_pipeline.core.mmdb import asn_record, build_asn_db, build_city_db, city_record

        city_rows, asn_rows = [], []
        for n in self.networks:
            if n.city is not None:
                rec = city_record(n.country, n.city.name, n.city.lat, n.city.lon,
                                  subdivision_iso=n.city.subdivision,
                                  accuracy_radius=1000 if n.kind == MOBILE else 20)
            else:  # country-level only, like many Tor exits and anycast ranges
                rec = city_record(n.country, None, None, None)
            city_rows.append((n.cidr, rec))
            asn_rows.append((n.cidr, asn_record(n.asn, n.org)))
        build_city_db(city_rows, str(city_path), description="watch-pipeline demo City database")
        build_asn_db(asn_rows, str(asn_path), description="watch-pipeline demo ASN database")


# ---------------------------------------------------------------------------------------------------------------
# User agents, with version drift over time
# ---------------------------------------------------------------------------------------------------------------

_CHROME_EPOCH, _CHROME_BASE = date(2025, 9, 30), 141  # Chrome 141 stable; a major every 4 weeks
_FIREFOX_EPOCH, _FIREFOX_BASE = date(2025, 9, 16), 143
_SAFARI_EPOCH = date(2025, 9, 15)  # Safari 26.0; a major a year, a minor about every two months
_SLACK_EPOCH = date(2025, 9, 1)  # Slack desktop 4.46; a minor every three weeks

OS_STRINGS = {
    "windows": "Windows NT 10.0; Win64; x64",
    "mac": "Macintosh; Intel Mac OS X 10_15_7",
    "linux": "X11; Linux x86_64",
}


def chrome_major(d: date) -> int:
    return _CHROME_BASE + (d - _CHROME_EPOCH).days // 28


def firefox_major(d: date) -> int:
    return _FIREFOX_BASE + (d - _FIREFOX_EPOCH).days // 28


@lru_cache(maxsize=None)
def browser_ua(browser: str, os_name: str, d: date) -> str:
    """The user agent of ``browser`` on ``os_name`` as auto-updated on day ``d``."""
    osx = OS_STRINGS[os_name]
    if browser == "firefox":
        v = firefox_major(d)
        return f"Mozilla/5.0 ({osx}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"
    if browser == "safari":
        days = (d - _SAFARI_EPOCH).days
        return (f"Mozilla/5.0 ({osx}) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                f"Version/{26 + days // 365}.{(days % 365) // 61} Safari/605.1.15")
    v = chrome_major(d)
    ua = f"Mozilla/5.0 ({osx}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"
    return ua + f" Edg/{v}.0.0.0" if browser == "edge" else ua


@lru_cache(maxsize=None)
def slack_desktop_ua(os_name: str, d: date) -> str:
    v = f"4.{46 + (d - _SLACK_EPOCH).days // 21}.{(d - _SLACK_EPOCH).days % 21 * 7 + 12}"
    c = chrome_major(d) - 1
    return (f"Mozilla/5.0 ({OS_STRINGS[os_name]}) AppleWebKit/537.36 (KHTML, like Gecko) Slack/{v} "
            f"Chrome/{c}.0.7339.0 Electron/{c - 102}.2.0 Safari/537.36 Sonic Slack_SSB/{v}")


@lru_cache(maxsize=None)
def slack_mobile_ua(phone: str, model: str, d: date) -> str:
    """Slack's phone apps; the app version is year.month.release like the real ones."""
    release = f"{d.year % 100}.{d.month:02d}.{10 if d.day < 15 else 20}"
    if phone == "ios":
        ios = f"{26 + (d - _SAFARI_EPOCH).days // 365}.{((d - _SAFARI_EPOCH).days % 365) // 61}"
        return f"com.tinyspeck.chatlyio/{release} (iPhone; iOS {ios}; Scale/3.00)"
    return f"com.Slack/{release}.0 (Linux; U; Android 16; {model} Build/BP2A.250805.005)"


PHONE_MODELS = {"ios": ["iPhone"], "android": ["SM-S931B", "Pixel 9", "Pixel 8a", "SM-A556B", "moto g85 5G"]}
