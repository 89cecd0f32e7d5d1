"""A synthetic organisation's Google Workspace and Slack audit logs, deterministic by seed.

``generate_org`` builds the people and their ordinary life (home ISPs with dynamic addresses, the office, mobile
carriers whose addresses churn, the corporate VPN, travel, several devices with browser updates, local working
hours, quiet weekends, typos before a success), plans labelled benign look-alikes and account-takeover stories
(:mod:`watch_pipeline.demo.scenarios`), and writes an archive in the exact API formats plus matching GeoIP2 City
and GeoLite2 ASN databases. The ground truth goes to ``labels.json`` beside the data; the pipeline never reads it.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from watch_pipeline.demo import scenarios
from watch_pipeline.demo.formats import (AUTHORIZE, LOGIN_FAIL, LOGIN_OK, LOGOUT, PASSWORD_EDIT, PERSON,
                                         S_ANOMALY, S_DOWNLOAD, S_LOGIN, S_LOGOUT, SUSPICIOUS, TAG,
                                         ArchiveWriter, OrgIds)
from watch_pipeline.demo.world import (CITIES, HOTEL_CITIES, PHONE_MODELS, City, Network, World, browser_ua,
                                       chrome_major, firefox_major, slack_desktop_ua, slack_mobile_ua,
                                       v6_address)

DOMAIN = "acme.example"
CITY_DB_NAME = "GeoIP2-City-Demo.mmdb"
ASN_DB_NAME = "GeoLite2-ASN-Demo.mmdb"

_FIRST = ("Anna Ben Clara David Emma Felix Greta Hannah Ivan Julia Karl Lena Max Nina Oskar Paula Quentin Rosa "
          "Simon Tara Uwe Vera Walter Xenia Yusuf Zoe Aaron Bea Carlos Dana Elif Finn Gina Hugo Ines Jonas Kim "
          "Luca Mia Noah Olga Pablo Rita Sven Tomasz Ula Victor Wiebke Yara Zeynep Alice Bruno Chloe Diego "
          "Eva Farid Hanna Ida Jan Kerstin Leo Marta Nils Omar Petra Ralf Sara Timo Lara").split()
_LAST = ("Mueller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch Richter Klein Wolf "
         "Neumann Schwarz Zimmermann Braun Krueger Hofmann Hartmann Lange Schmitt Werner Krause Meier Lehmann "
         "Smith Jones Taylor Brown Garcia Martinez Lopez Kowalski Nowak Silva Santos Jansen deVries Bakker "
         "Dubois Martin Bernard Novak Horvat Larsen Nielsen Rossi Russo Costa Murphy Kelly Walsh Ahmed Khan "
         "Yilmaz Kaya Demir Petrov Ivanova Berg Lind Holm Sato Tanaka Chen Wang Nguyen Tran").split()

# ordinary OAuth apps people authorise: (app name, client id, client type, scopes)
ORDINARY_APPS = [
    ("Zoom", "849883241272-ed6lnodi1grnoomiuknqkq2rbvd2udku.apps.googleusercontent.com", "WEB",
     ("https://www.googleapis.com/auth/calendar.events", "https://www.googleapis.com/auth/userinfo.email")),
    ("Miro", "1062022105085-1ch3a2sg4k7ug0u0m4b2ds3i0n6m2ks5.apps.googleusercontent.com", "WEB",
     ("https://www.googleapis.com/auth/drive.file", "https://www.googleapis.com/auth/userinfo.profile")),
    ("Mozilla Thunderbird", "406964657835-aq8lmia8j95dhl1a2bvharmfk3t1hgqj.apps.googleusercontent.com",
     "NATIVE_DESKTOP", ("https://mail.google.com/", "https://www.googleapis.com/auth/carddav",
                        "https://www.googleapis.com/auth/calendar")),
    ("iOS Account Manager", "450232826690-0rm6bs9d2fps9tifvk2oodh3tasd7vl7.apps.googleusercontent.com",
     "NATIVE_IOS", ("https://mail.google.com/", "https://www.googleapis.com/auth/calendar",
                    "https://www.google.com/m8/feeds")),
    ("Calendly", "733208765164-8ei3a1hbbm3p1cm7hd1mqfs8qvr2ugrr.apps.googleusercontent.com", "WEB",
     ("https://www.googleapis.com/auth/calendar", "https://www.googleapis.com/auth/userinfo.email")),
    ("Notion", "905154425305-k5jqlu4d56dj6gb0ktgq8fbu8ivm7hbi.apps.googleusercontent.com", "WEB",
     ("https://www.googleapis.com/auth/drive.readonly", "https://www.googleapis.com/auth/userinfo.email")),
    ("Slack", "606546125214-pd8rhf6agfjmkqrm64mbv28h50mhbhkd.apps.googleusercontent.com", "WEB",
     ("https://www.googleapis.com/auth/userinfo.email", "openid")),
]
FILES = [("Q3-board-deck.pdf", "pdf"), ("roadmap.xlsx", "xlsx"), ("design-review.png", "png"),
         ("contract-draft.docx", "docx"), ("screenshot.png", "png"), ("customer-list.csv", "csv"),
         ("meeting-notes.txt", "text"), ("architecture.pdf", "pdf"), ("invoice-0931.pdf", "pdf"),
         ("salary-bands.xlsx", "xlsx"), ("onboarding.mp4", "mp4"), ("logs.zip", "zip")]
FILE_EXTRAS = [{"file": f} for f in FILES]  # shared, read-only: a million downloads need no million dicts


@dataclass
class Person:
    idx: int
    first: str
    last: str
    email: str
    profile_id: str
    slack_id: str
    city: City
    isp: Network
    carrier: Network
    browser: str
    laptop_os: str
    slack_desktop: bool
    phone: str
    phone_model: str
    start_hour: float
    work_hours: float
    update_lag: int
    office_goer: bool = False
    corp_vpn: bool = False
    commercial_vpn: Network | None = None
    analyst: bool = False
    weekend_prob: float = 0.1
    isp_v6: Network | None = None
    dual_stack_from: int = 10**9  # day index from which the home is dual-stack
    # state
    home_ip: str = ""
    next_ip_change: int = 0
    v6_prefix: int = 0
    v6_today: tuple = (-1, "")
    sessions: dict = field(default_factory=dict)  # device -> [session id, expires day index, ua]
    today: dict = field(default_factory=dict)  # what the scenarios need of the current day
    last_majors: tuple = ()
    last_ts: float = 0.0  # the person's latest own activity (not an attacker's)
    last_city: City | None = None  # where the person was on their latest day

    @property
    def display_name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def handle(self) -> str:
        return self.email.split("@")[0]

    @property
    def tz(self) -> str:
        return self.city.tz


@dataclass
class DemoOrg:
    """What :func:`generate_org` wrote and the facts a caller needs to run the pipeline over it."""

    out_dir: Path
    archive_dir: Path
    city_db: Path
    asn_db: Path
    labels_path: Path
    domain: str
    start: date
    end: date  # inclusive
    people: int
    days: int
    seed: int
    counts: dict  # events by kind, files, labels by scenario / kind


class _Life:
    """Generates everything; one instance per ``generate_org`` call."""

    def __init__(self, people: int, days: int, seed: int, start: date, attacks: bool) -> None:
        self.seed, self.start, self.n_days = seed, start, days
        self.dates = [start + timedelta(days=i) for i in range(days)]
        self.rng = random.Random(f"{seed}:life")
        self.world = World()
        self.events_by_day: dict[int, list] = defaultdict(list)
        self._midnight: dict[tuple[str, int], float] = {}
        self.people = self._make_people(people)
        self.plan: dict[tuple[int, int], tuple] = {}  # (person, day index) -> (benign kind, arg)
        self.off: set[tuple[int, int]] = set()
        self.campaigns: list[dict] = []
        self.flushed, self.late_events = 0, 0
        self._plan_benign()
        self.attack_plan = scenarios.plan_attacks(self, random.Random(f"{seed}:attacks")) if attacks else {}

    # ---------------------------------------------------------------------------------------------- people
    def _make_people(self, n: int) -> list[Person]:
        rng, w = self.rng, self.world
        out, seen = [], set()
        # most people in Germany (a third of them in Berlin, near the office), some remote elsewhere
        remote = [("GB", 0.06), ("NL", 0.04), ("ES", 0.04), ("PL", 0.04), ("PT", 0.03), ("FR", 0.03), ("US", 0.06)]
        for i in range(n):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            handle = f"{first}.{last}".lower()
            k = 2
            while handle in seen:
                handle, k = f"{first}.{last}{k}".lower(), k + 1
            seen.add(handle)
            x, country = rng.random(), "DE"
            for c, share in remote:
                if x < share:
                    country = c
                    break
                x -= share
            cities = w.home_cities[country]
            cname = "Berlin" if country == "DE" and rng.random() < 0.45 else rng.choice(cities)
            city = CITIES[cname]
            isp = rng.choice(w.residential[(country, cname)])
            laptop_os = rng.choices(["windows", "mac", "linux"], [0.5, 0.4, 0.1])[0]
            browser = {"windows": lambda: rng.choices(["chrome", "edge", "firefox"], [0.6, 0.25, 0.15])[0],
                       "mac": lambda: rng.choices(["chrome", "safari", "firefox"], [0.55, 0.35, 0.1])[0],
                       "linux": lambda: rng.choices(["chrome", "firefox"], [0.5, 0.5])[0]}[laptop_os]()
            phone = "ios" if rng.random() < 0.55 else "android"
            p = Person(
                idx=i, first=first, last=last, email=f"{handle}@{DOMAIN}",
                profile_id=str(100_000_000_000_000_000_000 + rng.getrandbits(64)),
                slack_id="W" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(10)),
                city=city, isp=isp, carrier=rng.choice(w.mobile[country]), browser=browser, laptop_os=laptop_os,
                slack_desktop=rng.random() < 0.7, phone=phone, phone_model=rng.choice(PHONE_MODELS[phone]),
                start_hour=rng.gauss(8.8, 0.8), work_hours=rng.gauss(8.5, 0.6), update_lag=rng.randrange(0, 9),
                office_goer=cname == "Berlin" and rng.random() < 0.8, corp_vpn=rng.random() < 0.15,
                analyst=rng.random() < 0.03, weekend_prob=rng.choice([0.05, 0.1, 0.2, 0.4]))
            if rng.random() < 0.04:
                p.commercial_vpn = rng.choice(self.world.commercial_vpn)
            v6 = w.residential_v6.get((isp.org, cname))
            if v6 is not None and rng.random() < 0.6:
                p.isp_v6, p.dual_stack_from = v6, 0
                p.v6_prefix = v6.v6_prefix64(rng)
            out.append(p)
        return out

    # ---------------------------------------------------------------------------------------------- plan
    def workdays(self) -> list[int]:
        return [i for i, d in enumerate(self.dates) if d.weekday() < 5]

    def _plan_benign(self) -> None:
        rng, n, days = self.rng, len(self.people), self.n_days
        work = self.workdays()
        scale = n * days / 6000  # 1.0 for 200 people x 30 days

        def some(rate: float) -> int:
            return max(1, round(rate * scale))

        def free(pi: int, di: int) -> bool:
            return (pi, di) not in self.plan and (pi, di) not in self.off

        # vacations: a week off for some people, so activity gaps are normal
        for _ in range(round(n * days / 300)):
            pi, d0 = rng.randrange(n), rng.randrange(days)
            for di in range(d0, min(days, d0 + rng.randint(3, 7))):
                self.off.add((pi, di))
        for _ in range(some(10)):  # business trips: hotel abroad, the phone roams on its home carrier
            pi = rng.randrange(n)
            home = self.people[pi].city.country
            city = rng.choice([c for c in HOTEL_CITIES if CITIES[c].country != home])
            hotel = rng.choice([v for v in self.world.venues[city] if "hotel" in v.key])
            d0 = rng.choice(work)
            trip = [di for di in range(d0, min(days, d0 + rng.randint(2, 4))) if free(pi, di)]
            for k, di in enumerate(trip):
                self.plan[(pi, di)] = ("business_trip", (hotel, k == 1 and rng.random() < 0.6))
        for kind, rate in (("first_corp_vpn", 4), ("moving_house", 3), ("new_laptop", 4), ("ipv6_enabled", 2)):
            for _ in range(some(rate)):
                pi, di = rng.randrange(n), rng.choice(work)
                if free(pi, di) and not (kind == "first_corp_vpn" and self.people[pi].corp_vpn):
                    self.plan[(pi, di)] = (kind, None)
        for kind, rate in (("cafe", 40), ("coworking", 15), ("late_night", 20), ("vendor_flag", 6),
                           ("oauth_grant", 20)):
            for _ in range(some(rate)):
                pi, di = rng.randrange(n), rng.choice(work)
                if free(pi, di):
                    self.plan[(pi, di)] = (kind, None)
        # an org-wide forced password change early in the second week
        self.password_day = work[min(len(work) - 1, max(0, len(work) // 3))]
        self.campaigns.append({"kind": "forced_password_change", "benign": True,
                               "date": self.dates[self.password_day].isoformat()})

    # ---------------------------------------------------------------------------------------------- helpers
    def midnight(self, tz: str, di: int) -> float:
        """UTC epoch of local midnight of day ``di`` in ``tz``."""
        key = (tz, di)
        v = self._midnight.get(key)
        if v is None:
            d = self.dates[di] if di < self.n_days else self.start + timedelta(days=di)
            v = self._midnight[key] = datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(tz)).timestamp()
        return v

    def emit(self, ts: float, kind: int, p: Person, ip: str, net: Network, ua: str = "", session: int = 0,
             extra: dict | None = None, tag: tuple | None = None) -> tuple:
        e = (ts, kind, p.idx, ip, net, ua, session, extra, tag)
        if ts > p.last_ts and (tag is None or tag[0] != "attack"):
            p.last_ts = ts
        day = int((ts - self.t0) // 86400)
        if day < self.flushed:  # that day is written already (never expected; counted so tests can tell)
            self.late_events += 1
        else:
            self.events_by_day[day].append(e)
        return e

    def device_ua(self, p: Person, device: str, di: int) -> str:
        d = self.dates[di] - timedelta(days=p.update_lag)
        if device == "phone":
            return slack_mobile_ua(p.phone, p.phone_model, d)
        if device == "slack_laptop" and p.slack_desktop:
            return slack_desktop_ua(p.laptop_os, d)
        return browser_ua(p.browser, p.laptop_os, d)

    def session(self, p: Person, device: str, di: int, ts: float, ip: str, net: Network, ua: str,
                tag: tuple | None) -> int:
        """The device's Slack session; a new one (with a ``user_login``) when it expired or the UA changed."""
        s = p.sessions.get(device)
        if s is None or di >= s[1] or s[2] != _ua_family(ua):
            sid = 100_000_000_000 + self.rng.getrandbits(40)
            s = p.sessions[device] = [sid, di + self.rng.randint(5, 21), _ua_family(ua)]
            self.emit(ts, S_LOGIN, p, ip, net, ua, sid, None, tag)
        return s[0]

    def home_address(self, p: Person, di: int) -> tuple[str, Network]:
        if p.isp_v6 is not None and di >= p.dual_stack_from and self.rng.random() < 0.6:
            if p.v6_today[0] != di:  # privacy extensions: a new temporary address every day
                p.v6_today = (di, v6_address(p.v6_prefix, self.rng))
            return p.v6_today[1], p.isp_v6
        return p.home_ip, p.isp

    def mobile_address(self, p: Person) -> tuple[str, Network]:
        return p.carrier.address(self.rng), p.carrier  # CGNAT: a new address almost every time

    # ---------------------------------------------------------------------------------------------- a day
    def person_day(self, p: Person, di: int) -> None:
        rng, d = self.rng, self.dates[di]
        p.today = {}
        if di >= p.next_ip_change:  # DHCP churn of the home address
            p.home_ip, p.next_ip_change = p.isp.address(rng), di + rng.randint(2, 10)
        if (p.idx, di) in self.off:
            return
        kind, arg = self.plan.get((p.idx, di), (None, None))
        tag = ("benign", kind) if kind else None
        if kind == "moving_house" and arg is None:  # new ISP, maybe another city of the same country
            country = p.city.country
            p.city = CITIES[rng.choice(self.world.home_cities[country])]
            p.isp = rng.choice([n for n in self.world.residential[(country, p.city.name)] if n.org != p.isp.org]
                               or self.world.residential[(country, p.city.name)])
            p.home_ip, p.next_ip_change = p.isp.address(rng), di + rng.randint(5, 12)
            p.isp_v6, p.dual_stack_from = None, 10**9
            p.office_goer = p.office_goer and p.city.name == "Berlin"
            self.plan.setdefault((p.idx, di + 1), ("moving_house", "settling in"))
        elif kind == "new_laptop":
            p.laptop_os = rng.choice([o for o in ("windows", "mac", "linux") if o != p.laptop_os])
            p.browser = {"windows": "edge", "mac": "safari", "linux": "firefox"}[p.laptop_os]
        elif kind == "first_corp_vpn":
            p.corp_vpn = True
        elif kind == "ipv6_enabled":
            v6 = self.world.residential_v6.get((p.isp.org, p.city.name))
            if v6 is None or p.isp_v6 is not None:
                kind, tag = None, None
            else:
                p.isp_v6, p.dual_stack_from, p.v6_prefix = v6, di, v6.v6_prefix64(rng)
        weekend = d.weekday() >= 5
        planned = kind
        city = arg[0].city if kind == "business_trip" else p.city
        t_mid = self.midnight(city.tz, di)
        majors = (chrome_major(d - timedelta(days=p.update_lag)), firefox_major(d - timedelta(days=p.update_lag)))
        if p.last_majors and majors != p.last_majors and not kind and p.browser in ("chrome", "edge", "firefox"):
            ch = 0 if p.browser != "firefox" else 1
            if majors[ch] != p.last_majors[ch]:
                kind, tag = "browser_update", ("benign", "browser_update")
        p.last_majors = majors

        if weekend and planned is None:
            p.last_city = p.city
            if rng.random() < p.weekend_prob:
                self._phone_slack(p, di, t_mid + rng.uniform(10, 21) * 3600, at_home=True, n=rng.randint(1, 3))
            return

        # where the laptop is today
        if kind == "business_trip":
            net = arg[0]
            ip = net.address(rng)
        elif kind in ("cafe", "coworking"):
            venue = rng.choice([v for v in self.world.venues[p.city.name]
                                if ("cafe" in v.key) == (kind == "cafe") and ("cowork" in v.key) == (kind != "cafe")])
            net, ip = venue, venue.address(rng)
        elif p.office_goer and rng.random() < 0.65:
            net, ip = self.world.office, self.world.office.address(rng)
        else:
            ip, net = self.home_address(p, di)
        if net.kind != "office" and kind != "business_trip":
            if p.corp_vpn and (rng.random() < 0.5 or kind == "first_corp_vpn"):
                net, ip = self.world.corp_vpn, self.world.corp_vpn.address(rng)
            elif p.commercial_vpn is not None and rng.random() < 0.5:
                net, ip = p.commercial_vpn, p.commercial_vpn.address(rng)
                if kind is None:
                    kind, tag = "commercial_vpn", ("benign", "commercial_vpn")
        start = t_mid + max(6.0, p.start_hour + rng.gauss(0, 0.4)) * 3600
        # Nobody teleports: arriving from far away (a trip's first day, the day home after it) the day starts once
        # the flight can have landed (airliner ~850 km/h plus ~3 h to, through and from airports)
        if p.last_city is not None and p.last_city.name != city.name:
            km = _km(p.last_city, city)
            if km > 300:
                start = max(start, p.last_ts + (km / 850.0 + 3.0) * 3600)
        p.last_city = city
        end = start + max(4.0, p.work_hours + rng.gauss(0, 0.6)) * 3600
        if weekend:
            end = start + rng.uniform(1, 3) * 3600
        p.today = {"ip": ip, "net": net, "start": start, "end": end, "di": di}

        # Google sign-in on the laptop browser; sometimes a typo first
        methods = ["password", "google_prompt"] if p.idx % 3 == 0 else ["password"]
        t = start + rng.uniform(0, 1200)
        forced = di == self.password_day and rng.random() < 0.75
        if kind is None and forced:
            kind, tag = "forced_password_change", ("benign", "forced_password_change")
        if rng.random() < 0.75 or forced or kind:
            if forced:  # the old password no longer works: fail once from the usual address, then change it
                self.emit(t - 90, LOGIN_FAIL, p, ip, net, "", 0, {"methods": ["password"]}, tag)
                self.emit(t - 30, PASSWORD_EDIT, p, ip, net, "", 0, None, tag)
            elif rng.random() < 0.03:
                self.emit(t - rng.uniform(8, 40), LOGIN_FAIL, p, ip, net, "", 0, {"methods": ["password"]}, tag)
            flag = kind == "vendor_flag" and rng.random() < 0.5
            self.emit(t, LOGIN_OK, p, ip, net, "", 0, {"methods": methods, "suspicious": flag}, tag)
            if flag:
                self.emit(t + rng.uniform(1, 60), SUSPICIOUS, p, ip, net, "", 0, None, tag)
            elif kind == "vendor_flag":  # Slack's anomaly engine trips on an ordinary session instead
                self.emit(t + rng.uniform(600, 3000), S_ANOMALY, p, ip, net, self.device_ua(p, "slack_laptop", di),
                          0, {"reason": ["asn", "ip_address"], "ip_details": ["new-asn"],
                              "previous_ip": p.home_ip, "previous_ua": ""}, tag)
            p.today["login_ts"] = t
        if rng.random() < 0.25:
            self.emit(rng.uniform(start + 3600, end), LOGIN_OK, p, ip, net, "", 0,
                      {"methods": methods, "login_type": "reauth" if rng.random() < 0.3 else "google_password"}, tag)
        if rng.random() < 0.02:
            self.emit(end + rng.uniform(0, 600), LOGOUT, p, ip, net, "", 0, None, tag)
        if kind == "oauth_grant" or rng.random() < 0.004:
            self.emit(rng.uniform(start, end), AUTHORIZE, p, ip, net, "", 0, {"app": rng.choice(ORDINARY_APPS)},
                      tag or ("benign", "oauth_grant"))

        # Slack on the laptop (desktop app or browser)
        ua = self.device_ua(p, "slack_laptop", di)
        sid = self.session(p, "slack_laptop", di, start + rng.uniform(60, 900), ip, net, ua, tag)
        p.today["slack_session"], p.today["slack_ua"] = sid, ua
        n_dl = _poisson(rng, 1.3)
        if p.analyst and rng.random() < 0.6:
            n_dl, kind = rng.randint(30, 120), kind or "analyst_downloads"
            tag = tag or ("benign", "analyst_downloads")
        for _ in range(n_dl):
            self.emit(rng.uniform(start, end), S_DOWNLOAD, p, ip, net, ua, sid, rng.choice(FILE_EXTRAS), tag)
        if rng.random() < 0.01:
            self.emit(end, S_LOGOUT, p, ip, net, ua, sid, None, tag)
            p.sessions.pop("slack_laptop", None)

        if kind == "business_trip" and arg[1]:  # a hotel business-centre computer: new browser, new session
            hua = browser_ua("chrome", "windows", d - timedelta(days=120))
            t = start + rng.uniform(3600, 4 * 3600)
            self.emit(t, LOGIN_OK, p, ip, net, "", 0, {"methods": ["password"]}, ("benign", "hotel_computer"))
            hsid = 100_000_000_000 + rng.getrandbits(40)
            self.emit(t + 40, S_LOGIN, p, ip, net, hua, hsid, None, ("benign", "hotel_computer"))
            self.emit(t + 200, S_DOWNLOAD, p, ip, net, hua, hsid, rng.choice(FILE_EXTRAS),
                      ("benign", "hotel_computer"))
            self.emit(t + 400, S_LOGOUT, p, ip, net, hua, hsid, None, ("benign", "hotel_computer"))

        if kind == "late_night":  # a genuine late shift from home
            t_night = t_mid + rng.uniform(22.5, 24.5) * 3600
            hip, hnet = self.home_address(p, di)
            self.emit(t_night, LOGIN_OK, p, hip, hnet, "", 0, {"methods": methods}, tag)
            for _ in range(rng.randint(1, 4)):
                self.emit(t_night + rng.uniform(60, 7200), S_DOWNLOAD, p, hip, hnet, ua, sid,
                          rng.choice(FILE_EXTRAS), tag)

        # the phone: office Wi-Fi, home Wi-Fi or the carrier (roaming on the home carrier abroad)
        self._phone_slack(p, di, rng.uniform(start, end), at_home=False, n=_poisson(rng, 1.0),
                          at_office=net.kind == "office", tag=tag if kind == "business_trip" else None)
        if rng.random() < 0.08:
            mip, mnet = self.mobile_address(p)
            self.emit(rng.uniform(start, end + 3 * 3600), LOGIN_OK, p, mip, mnet, "", 0,
                      {"methods": ["password"], "login_type": "google_password"},
                      tag if kind == "business_trip" else None)
        if rng.random() < 0.3:  # evening Slack on the phone from home
            self._phone_slack(p, di, end + rng.uniform(1, 4) * 3600, at_home=kind != "business_trip",
                              n=rng.randint(1, 2), tag=tag if kind == "business_trip" else None)

    def _phone_slack(self, p: Person, di: int, t: float, at_home: bool, n: int, at_office: bool = False,
                     tag: tuple | None = None) -> None:
        rng = self.rng
        ua = self.device_ua(p, "phone", di)
        if at_home and rng.random() < 0.6:
            ip, net = self.home_address(p, di)
        elif at_office and rng.random() < 0.5:
            ip, net = self.world.office.address(rng), self.world.office
        else:
            ip, net = self.mobile_address(p)
        sid = self.session(p, "phone", di, t, ip, net, ua, tag)
        for _ in range(n):
            if net.kind == "mobile":
                ip = p.carrier.address(rng)
            t += rng.uniform(60, 3600)
            self.emit(t, S_DOWNLOAD, p, ip, net, ua, sid, rng.choice(FILE_EXTRAS), tag)

    # ---------------------------------------------------------------------------------------------- run
    def run(self, write_day) -> None:
        """Generate day by day; hand each UTC day's events to ``write_day(di, events)`` once no later day can add
        to it (local days and night-time stories reach at most one UTC day either side)."""
        self.t0 = datetime(self.start.year, self.start.month, self.start.day, tzinfo=timezone.utc).timestamp()
        for di in range(self.n_days):
            for p in self.people:
                self.person_day(p, di)
            for attack in self.attack_plan.get(di, ()):
                attack(self, di)
            if di >= 2:
                write_day(di - 2, self.events_by_day.pop(di - 2, []))
                self.flushed = di - 1
        for di in range(max(0, self.n_days - 2), self.n_days):
            write_day(di, self.events_by_day.pop(di, []))


def _km(a: City, b: City) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 12742.0 * math.asin(math.sqrt(h))


_NO_DIGITS = str.maketrans("", "", "0123456789")


@lru_cache(maxsize=None)
def _ua_family(ua: str) -> str:
    """The UA without version numbers: a session survives browser updates but not a new device."""
    return ua.translate(_NO_DIGITS)


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, prod = math.exp(-lam), 0, rng.random()
    while prod > threshold:
        k += 1
        prod *= rng.random()
    return k


def generate_org(out_dir: Path, people: int = 200, days: int = 30, seed: int = 7,
                 start: date = date(2026, 10, 1), attacks: bool = True) -> DemoOrg:
    """Write a demo organisation's archive, GeoIP databases and labels under ``out_dir``; same seed, same bytes.

    Layout: ``archive/google/{login,token}/<day>/`` (Reports API pages, ``items.jsonl``, ``.gz``),
    ``archive/slack/audit/<day>/`` (Audit Logs pages, ``entries.jsonl[.gz]``), ``archive/slack/access_logs/<day>/``
    (team.accessLogs pages), ``GeoIP2-City-Demo.mmdb``, ``GeoLite2-ASN-Demo.mmdb`` and ``labels.json``:
    ``attacks`` ``[{actor, date, scenario}]`` (UTC days with attacker events), ``benign`` ``[{actor, date, kind}]``
    (look-alike days, never on an attack day) and ``campaigns`` (the org-wide stories: spraying and stuffing with
    their source IPs, targets and compromised accounts; the forced password change day).
    """
    out_dir = Path(out_dir)
    archive = out_dir / "archive"
    out_dir.mkdir(parents=True, exist_ok=True)
    life = _Life(people, days, seed, start, attacks)
    ids = OrgIds(domain=DOMAIN, customer_id="C03acm7x1", enterprise_id="E07ACME01", team_id="T07ACME01",
                 org_name="Acme Example")
    writer = ArchiveWriter(archive, life.people, ids, seed)
    counts: dict = defaultdict(int)
    labels: dict[tuple, set] = defaultdict(set)

    def write_day(di: int, events: list) -> None:
        day = life.dates[di].isoformat()
        writer.write_day(day, events, di)
        counts["events"] += len(events)
        for e in events:
            if e[TAG] is not None:
                labels[(e[TAG][0], life.people[e[PERSON]].email, day)].add(e[TAG][1])

    life.run(write_day)
    counts["late_events"] = life.late_events
    city_db, asn_db = out_dir / CITY_DB_NAME, out_dir / ASN_DB_NAME
    life.world.write_mmdb(city_db, asn_db)
    attacks_l = [{"actor": a, "date": d, "scenario": s} for (k, a, d), ss in sorted(labels.items())
                 if k == "attack" for s in sorted(ss)]
    attacked = {(x["actor"], x["date"]) for x in attacks_l}
    # an actor-day is either an attack or a benign look-alike: the attack wins
    benign_l = [{"actor": a, "date": d, "kind": s} for (k, a, d), ss in sorted(labels.items())
                if k == "benign" and (a, d) not in attacked for s in sorted(ss)]
    labels_path = out_dir / "labels.json"
    labels_path.write_text(json.dumps({
        "note": "ground truth of the demo organisation; never read by the pipeline",
        "domain": DOMAIN, "seed": seed, "start": start.isoformat(), "end": life.dates[-1].isoformat(),
        "people": people, "attacks": attacks_l, "benign": benign_l, "campaigns": life.campaigns,
    }, indent=1, sort_keys=True) + "\n")
    counts.update({f"records_{k}": v for k, v in writer.records.items()})
    counts["files"] = writer.files
    counts["attack_actor_days"] = len({(x["actor"], x["date"]) for x in attacks_l})
    counts["benign_lookalike_days"] = len({(x["actor"], x["date"]) for x in benign_l})
    for x in attacks_l:
        counts[f"attack:{x['scenario']}"] += 1
    return DemoOrg(out_dir=out_dir, archive_dir=archive, city_db=city_db, asn_db=asn_db, labels_path=labels_path,
                   domain=DOMAIN, start=start, end=life.dates[-1], people=people, days=days, seed=seed,
                   counts=dict(counts))
