"""The labelled account-takeover stories of the demo organisation.

Every attack happens in the second half of the date range, so the victims have history, and on a workday when
the victim is around and has no benign look-alike planned, so an actor-day carries one story. Each event an attack
adds is tagged ``("attack", scenario)``; ``labels.json`` is built from those tags.
"""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Callable

from watch_pipeline.demo.formats import AUTHORIZE, LOGIN_FAIL, LOGIN_OK, S_ANOMALY, S_DOWNLOAD, S_LOGIN, SUSPICIOUS
from watch_pipeline.demo.world import FAR_ATTACK_COUNTRIES, browser_ua

PHISH_INFRA = ("residential", "commercial_vpn", "hosting", "tor")
SCENARIOS = tuple(f"phish_{k}" for k in PHISH_INFRA) + (
    "impossible_travel", "password_spray", "credential_stuffing", "stolen_session", "same_country_takeover")

# OAuth apps attackers like for mailbox access (rare in any organisation)
RARE_APPS = [
    ("PERFECTDATA SOFTWARE", "1076458562426-43gi9gdnvlcbpvpm45jq4mp4f3n5nk5m.apps.googleusercontent.com",
     "NATIVE_DESKTOP", ("https://mail.google.com/", "https://www.googleapis.com/auth/userinfo.email")),
    ("eM Client", "1097153419826-7k5lq3h1i2bu7fj9r7mvhnn1m3qf8jf1.apps.googleusercontent.com", "NATIVE_DESKTOP",
     ("https://mail.google.com/", "https://www.googleapis.com/auth/contacts",
      "https://www.googleapis.com/auth/calendar")),
    ("rclone", "202264815644-rt1o1c9evjaotbpbab10m83i8cnjk077.apps.googleusercontent.com", "NATIVE_DESKTOP",
     ("https://www.googleapis.com/auth/drive",)),
]
LOOT = [("customer-list.csv", "csv"), ("salary-bands.xlsx", "xlsx"), ("contract-draft.docx", "docx"),
        ("Q3-board-deck.pdf", "pdf"), ("architecture.pdf", "pdf"), ("passwords-old.txt", "text"),
        ("invoice-0931.pdf", "pdf"), ("logs.zip", "zip"), ("vpn-config.ovpn", "binary")]
LOOT_EXTRAS = [{"file": f} for f in LOOT]

Attack = Callable[["object", int], None]


def _attacker_ua(rng: random.Random, d) -> str:
    return rng.choice([browser_ua("chrome", "windows", d - timedelta(days=90)),
                       browser_ua("firefox", "linux", d - timedelta(days=60)),
                       browser_ua("chrome", "linux", d - timedelta(days=200))])


def _far_net(life, rng: random.Random, victim_country: str, near=None, min_km: float = 0):
    """A residential network in a country attackers often work from (at least ``min_km`` from ``near``)."""
    nets = [n for c in FAR_ATTACK_COUNTRIES if c != victim_country for n in life.world.local_networks(c)]
    if near is not None:
        nets = [n for n in nets if _km(near, n.city) >= min_km] or nets
    return rng.choice(nets)


def _km(a, b) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 12742.0 * math.asin(math.sqrt(h))


def _infra_net(life, rng: random.Random, infra: str, victim_country: str):
    w = life.world
    if infra == "residential":
        return _far_net(life, rng, victim_country)
    pool = {"commercial_vpn": w.commercial_vpn, "hosting": w.hosting, "tor": w.tor}[infra]
    return rng.choice([n for n in pool if n.country != victim_country] or pool)


def _loot(life, rng, p, t: float, net, ip_fn, ua: str, sid: int, n: int, tag, spread_s: float = 1800) -> None:
    for _ in range(n):
        life.emit(t + rng.uniform(30, spread_s), S_DOWNLOAD, p, ip_fn(), net, ua, sid, rng.choice(LOOT_EXTRAS),
                  tag)


def plan_attacks(life, rng: random.Random) -> dict[int, list[Attack]]:
    """Choose victims and days; returns day index -> callables that add the attack's events on that day."""
    n, days = len(life.people), life.n_days
    second_half = [di for di in life.workdays() if di >= days // 2] or [days - 1]
    scale = max(1, round(n / 200))
    used: set[int] = set()
    plan: dict[int, list[Attack]] = {}

    def victim(di: int) -> int | None:
        for _ in range(200):
            pi = rng.randrange(n)
            if pi not in used and (pi, di) not in life.plan and (pi, di) not in life.off \
                    and (pi, di + 1) not in life.plan:
                used.add(pi)
                return pi
        return None

    for scenario in SCENARIOS:
        for _ in range(scale):
            di = rng.choice(second_half)
            if scenario in ("password_spray", "credential_stuffing"):
                k = 2 if scenario == "password_spray" else 3
                winners = [v for v in (victim(di) for _ in range(k)) if v is not None]
                plan.setdefault(di, []).append(_campaign(scenario, winners, random.Random(rng.getrandbits(64))))
                continue
            pi = victim(di)
            if pi is None:
                continue
            fn = {"impossible_travel": _impossible_travel, "stolen_session": _stolen_session,
                  "same_country_takeover": _same_country}.get(scenario)
            sub = random.Random(rng.getrandbits(64))
            if fn is None:
                infra = scenario.removeprefix("phish_")
                plan.setdefault(di, []).append(lambda life, di, pi=pi, infra=infra, sub=sub:
                                               _phish(life, di, pi, infra, sub))
            else:
                plan.setdefault(di, []).append(lambda life, di, pi=pi, fn=fn, sub=sub: fn(life, di, pi, sub))
    return plan


def _phish(life, di: int, pi: int, infra: str, rng: random.Random) -> None:
    """Phished password used from abroad, then (often) a rare OAuth app and a new Slack device with mass downloads;
    the attacker may come back the next day. The victim keeps working as usual."""
    p, d = life.people[pi], life.dates[di]
    tag = ("attack", f"phish_{infra}")
    net = _infra_net(life, rng, infra, p.city.country)
    fresh = (lambda: rng.choice(life.world.tor).address(rng)) if infra == "tor" else None
    ip = net.address(rng)
    ua = _attacker_ua(rng, d)
    for visit in range(2 if rng.random() < 0.4 and di + 1 < life.n_days else 1):
        t = life.t0 + (di + visit) * 86400 + rng.uniform(1, 22) * 3600
        if rng.random() < 0.3:
            life.emit(t - rng.uniform(20, 120), LOGIN_FAIL, p, ip, net, "", 0, {"methods": ["password"]}, tag)
        suspicious = rng.random() < 0.3
        life.emit(t, LOGIN_OK, p, ip, net, "", 0, {"methods": ["password"], "suspicious": suspicious}, tag)
        if suspicious:
            life.emit(t + rng.uniform(5, 90), SUSPICIOUS, p, ip, net, "", 0, None, tag)
        if visit == 0 and rng.random() < 0.75:
            life.emit(t + rng.uniform(60, 600), AUTHORIZE, p, ip, net, "", 0, {"app": rng.choice(RARE_APPS)}, tag)
        if visit == 0 or rng.random() < 0.5:
            sid = 100_000_000_000 + rng.getrandbits(40)
            t_s = t + rng.uniform(300, 1500)
            life.emit(t_s, S_LOGIN, p, fresh() if fresh else ip, net, ua, sid, None, tag)
            _loot(life, rng, p, t_s, net, fresh or (lambda: ip), ua, sid, rng.randint(20, 80), tag)


def _impossible_travel(life, di: int, pi: int, rng: random.Random) -> None:
    """A sign-in thousands of km away an hour after the victim's genuine one."""
    p = life.people[pi]
    tag = ("attack", "impossible_travel")
    t_genuine = p.today.get("login_ts")
    genuine = (p.today.get("net") or p.isp).city or p.city
    if t_genuine is None:  # make sure the genuine sign-in is there (untagged: it is the victim's)
        t_genuine = p.today.get("start", life.t0 + di * 86400 + 8 * 3600)
        ip, net = p.today.get("ip") or p.home_ip, p.today.get("net") or p.isp
        life.emit(t_genuine, LOGIN_OK, p, ip, net, "", 0, {"methods": ["password"]}, None)
    net = _far_net(life, rng, p.city.country, near=genuine, min_km=4000)
    ip = net.address(rng)
    t = t_genuine + rng.uniform(45, 75) * 60
    life.emit(t, LOGIN_OK, p, ip, net, "", 0, {"methods": ["password"]}, tag)
    if rng.random() < 0.6:
        ua, sid = _attacker_ua(rng, life.dates[di]), 100_000_000_000 + rng.getrandbits(40)
        life.emit(t + 200, S_LOGIN, p, ip, net, ua, sid, None, tag)
        _loot(life, rng, p, t + 200, net, lambda: ip, ua, sid, rng.randint(3, 15), tag)


def _stolen_session(life, di: int, pi: int, rng: random.Random) -> None:
    """The victim's live Slack session cookie replayed from a new IP and device: no login event at all."""
    p = life.people[pi]
    tag = ("attack", "stolen_session")
    s = p.sessions.get("slack_laptop")
    if s is None:  # the victim had no session yet: one appears through their own ordinary login
        ua = life.device_ua(p, "slack_laptop", di)
        sid = life.session(p, "slack_laptop", di, p.today.get("start", life.t0 + di * 86400 + 8 * 3600),
                           p.home_ip, p.isp, ua, None)
    else:
        sid, ua = s[0], p.today.get("slack_ua") or life.device_ua(p, "slack_laptop", di)
    net = _infra_net(life, rng, rng.choice(["hosting", "commercial_vpn", "residential"]), p.city.country)
    ip = net.address(rng)
    aua = _attacker_ua(rng, life.dates[di])
    t = life.t0 + di * 86400 + rng.uniform(1, 21) * 3600
    _loot(life, rng, p, t, net, lambda: ip, aua, sid, rng.randint(10, 40), tag, spread_s=2400)
    if rng.random() < 0.5:  # Slack's session-fingerprint anomaly sometimes fires
        life.emit(t + rng.uniform(120, 900), S_ANOMALY, p, ip, net, aua, sid,
                  {"reason": ["session_fingerprint"], "previous_ip": p.today.get("ip", p.home_ip),
                   "previous_ua": ua}, tag)


def _same_country(life, di: int, pi: int, rng: random.Random) -> None:
    """A quiet takeover from another ISP or carrier of the victim's own country, at night, on a new device."""
    p = life.people[pi]
    tag = ("attack", "same_country_takeover")
    w = life.world
    options = [n for n in w.local_networks(p.city.country) if n.org != p.isp.org]
    options += [m for m in w.mobile.get(p.city.country, []) if m.org != p.carrier.org]
    net = rng.choice(options)
    ip = net.address(rng)
    # 01:00-04:30 local in the night after day di (before it on the last day), so it stays in the second half
    night = di + 1 if di + 1 < life.n_days else di
    t = life.midnight(p.tz, night) + rng.uniform(1.0, 4.5) * 3600
    if p.city.country == "DE" and rng.random() < 0.5:
        ua = "com.Slack/26.10.10.0 (Linux; U; Android 15; SM-A256B Build/AP3A.240905.015)"
    else:
        ua = _attacker_ua(rng, life.dates[di])
    life.emit(t, LOGIN_OK, p, ip, net, "", 0, {"methods": ["password"]}, tag)
    sid = 100_000_000_000 + rng.getrandbits(40)
    life.emit(t + rng.uniform(60, 400), S_LOGIN, p, ip, net, ua, sid, None, tag)
    _loot(life, rng, p, t + 400, net, lambda: ip, ua, sid, rng.randint(3, 8), tag, spread_s=2400)


def _campaign(scenario: str, winners: list[int], rng: random.Random) -> Attack:
    """Password spraying (one try per account from a few IPs within an hour) or credential stuffing (bursts of
    tries from many hosting / VPN addresses over hours); ``winners`` are the accounts whose password works."""

    def run(life, di: int) -> None:
        w = life.world
        people = life.people
        spray = scenario == "password_spray"
        if spray:
            nets = [rng.choice(w.hosting + w.commercial_vpn) for _ in range(rng.randint(2, 3))]
            targets = rng.sample(range(len(people)), max(len(winners) + 3, min(300, int(len(people) * 0.4))))
            window, tries = 3600, (1, 1)
        else:
            nets = [rng.choice(w.hosting + w.commercial_vpn) for _ in range(rng.randint(10, 20))]
            targets = rng.sample(range(len(people)), max(len(winners) + 3, min(500, int(len(people) * 0.15))))
            window, tries = 3 * 3600, (1, 3)
        targets = [t for t in targets if t not in winners] + list(winners)
        ips = [(n.address(rng), n) for n in nets]
        t0 = life.t0 + di * 86400 + rng.uniform(0, 20) * 3600
        for pi in targets:
            p = people[pi]
            won = pi in winners
            tag = ("attack", scenario) if won else None
            for _ in range(rng.randint(*tries)):
                ip, net = rng.choice(ips)
                life.emit(t0 + rng.uniform(0, window), LOGIN_FAIL, p, ip, net, "", 0, {"methods": ["password"]},
                          ("campaign", scenario) if not won else tag)
            if won:
                ip, net = rng.choice(ips)
                t = t0 + rng.uniform(window * 0.5, window * 1.1)
                life.emit(t, LOGIN_OK, p, ip, net, "", 0, {"methods": ["password"]}, tag)
                if rng.random() < 0.5:
                    life.emit(t + rng.uniform(60, 600), AUTHORIZE, p, ip, net, "", 0,
                              {"app": rng.choice(RARE_APPS)}, tag)
                else:
                    ua, sid = _attacker_ua(rng, life.dates[di]), 100_000_000_000 + rng.getrandbits(40)
                    life.emit(t + 120, S_LOGIN, p, ip, net, ua, sid, None, tag)
                    _loot(life, rng, p, t + 120, net, lambda ip=ip: ip, ua, sid, rng.randint(5, 30), tag)
        life.campaigns.append({
            "kind": scenario, "benign": False, "date": life.dates[di].isoformat(),
            "source_ips": sorted({ip for ip, _ in ips}),
            "targets": sorted(people[t].email for t in targets),
            "compromised": sorted(people[t].email for t in winners)})

    return run
