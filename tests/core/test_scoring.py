"""The default risk scorer on small hand-built organisations: each signal, organisation context and cold start."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest

from watch_pipeline.core.profiles import ActorProfiles, learning_state
from watch_pipeline.core.scoring import RiskScorer, haversine_km

START = pd.Timestamp("2026-09-01")
HISTORY_DAYS = 10
N_USERS = 30
LAPTOP = ("Chrome", "Windows", "Chrome|Windows|Other")
PHONE = ("Slack iOS App", "iOS", "Slack iOS App|iOS|iPhone")
NEW_DEVICE = ("Firefox", "Linux", "Firefox|Linux|Other")
BERLIN = ("DE", "Berlin", 52.52, 13.40)
HOME_ISPS = [(3320, "Deutsche Telekom AG"), (3209, "Vodafone GmbH"), (6805, "Telefonica Germany")]
CARRIER = (29562, "Carrier Mobile GmbH")  # every user's phone: churning addresses, many colleagues
_ids = itertools.count()


def user(i: int) -> str:
    return f"user{i:02d}@acme.example"


def ev(t, actor, ip, asn, org, *, action="login_success", app="login", outcome="success", device=None,
       place=BERLIN, session="", oauth="", suspicious=False, reasons="", major=""):
    browser, os_, key = device or ("", "", "")
    source = "slack_audit" if app == "slack_audit" else ("slack_access" if app == "slack_access" else "google")
    return {
        "event_id": f"e{next(_ids):06d}", "partition_date": pd.Timestamp(t).date(), "source": source, "app": app,
        "action": action, "outcome": outcome, "event_time": pd.Timestamp(t), "actor": actor, "ip": ip,
        "user_agent": key, "session_id": session, "login_type": "google_password" if app == "login" else "",
        "oauth_client": oauth, "target": "", "vendor_suspicious": suspicious, "vendor_reasons": reasons,
        "ip_internal": False, "geo_country": place[0], "geo_city": place[1], "geo_lat": place[2], "geo_lon": place[3],
        "asn": asn, "asn_org": org, "ua_browser": browser, "ua_os": os_, "ua_device_key": key,
        "ua_browser_major": major or ("140" if key else ""),
    }


def ordinary_day(day: pd.Timestamp, i: int) -> list[dict]:
    """A user's workday: Google sign-in at home, Slack on the laptop with a few downloads, the phone on the carrier."""
    asn, org = HOME_ISPS[i % len(HOME_ISPS)]
    home = f"10{i % 3}.{i}.1.{day.day}"
    t = day + pd.Timedelta(hours=8, minutes=i)
    rows = [ev(t, user(i), home, asn, org)]
    sid = f"S{i:03d}"
    rows.append(ev(t + pd.Timedelta(minutes=5), user(i), home, asn, org, app="slack_audit", action="user_login",
                   device=LAPTOP, session=sid))
    for k in range(3):
        rows.append(ev(t + pd.Timedelta(hours=1 + k), user(i), home, asn, org, app="slack_audit",
                       action="file_downloaded", outcome="info", device=LAPTOP, session=sid))
    for k in range(2):  # the carrier hands out a new address (and a new city) every time
        city = [("DE", "Munich", 48.14, 11.58), ("DE", "Hamburg", 53.55, 9.99)][(i + k + day.day) % 2]
        rows.append(ev(t + pd.Timedelta(hours=4 + k), user(i), f"80.{i}.{day.day}.{k}", *CARRIER, app="slack_access",
                       action="access", device=PHONE, place=city))
    return rows


def history(users=range(N_USERS), days=HISTORY_DAYS) -> pd.DataFrame:
    rows = [r for d in range(days) for i in users for r in ordinary_day(START + pd.Timedelta(days=d), i)]
    return pd.DataFrame(rows)


TODAY = START + pd.Timedelta(days=HISTORY_DAYS)


def score_day(hist: pd.DataFrame, today_rows: list[dict], peaks=None, config=None, min_events=20, min_days=3):
    """Profiles fit on the history, today scored before update (as the pipeline does); returns the score rows."""
    today = pd.DataFrame(today_rows)
    profiles = ActorProfiles().fit(hist)
    learning = learning_state(profiles, min_events=min_events, min_days=min_days)
    profile_scores = profiles.score_samples(today)
    scorer = RiskScorer(config).fit(hist)
    previous = hist[hist["event_time"] >= TODAY - pd.Timedelta(days=2)]
    return scorer.score_samples(today, profile_scores=profile_scores, learning=learning, peaks=peaks,
                                forest_scores=None, previous_events=previous)


def actor_score(scores: pd.DataFrame, actor: str) -> float:
    s = scores.loc[scores["actor"] == actor, "score"]
    return float(s.max()) if len(s) else 0.0


def phished(actor: str, t: pd.Timestamp, asn=60068, org="Datacamp Limited", place=("NL", "Amsterdam", 52.37, 4.9),
            downloads=25, oauth="rclone") -> list[dict]:
    ip = "185.1.2.3"
    rows = [ev(t, actor, ip, asn, org, place=place)]
    if oauth:
        rows.append(ev(t + pd.Timedelta(minutes=3), actor, ip, asn, org, app="token", action="authorize",
                       oauth=oauth, place=place))
    rows.append(ev(t + pd.Timedelta(minutes=10), actor, ip, asn, org, app="slack_audit", action="user_login",
                   device=NEW_DEVICE, session="SX", place=place))
    rows += [ev(t + pd.Timedelta(minutes=11 + k), actor, ip, asn, org, app="slack_audit", action="file_downloaded",
                outcome="info", device=NEW_DEVICE, session="SX", place=place) for k in range(downloads)]
    return rows


@pytest.fixture(scope="module")
def hist() -> pd.DataFrame:
    return history()


def test_new_rare_network_with_new_device_scores_high_with_numbers(hist):
    victim = user(4)
    rows = ordinary_day(TODAY, 4) + phished(victim, TODAY + pd.Timedelta(hours=20))
    scores = score_day(hist, rows)
    assert actor_score(scores, victim) >= 0.9
    top = scores[scores["actor"] == victim].sort_values("score").iloc[-1]
    reasons = json.loads(top["reasons"])
    text = " ".join(reasons)
    assert "AS60068 (Datacamp Limited)" in text
    assert f"0 of {N_USERS} colleagues" in text  # the organisation context, with its numbers
    assert "25 downloads" in text and "rclone" in text
    assert {"new_network", "rare_in_org", "new_device", "rare_oauth"} <= set(top["kinds"].split(","))
    assert top["model_state"] == "established"
    ctx = json.loads(top["context"])
    assert ctx["country"] == "NL" and ctx["asn_org"] == "Datacamp Limited" and ctx["ua_browser"] == "Firefox"
    # the victim's own ordinary events are not part of the story
    own = {r["event_id"] for r in ordinary_day(TODAY, 4)}
    assert not set(scores["event_id"]) & own


def test_network_used_by_many_colleagues_does_not_alert(hist):
    # a corporate VPN / carrier many colleagues use: new for this user, but no story
    vpn = (64512, "Zscaler, Inc.")
    h = pd.concat([hist, pd.DataFrame([ev(START + pd.Timedelta(days=d, hours=9), user(i), f"165.1.{i}.{d}", *vpn)
                                       for d in range(HISTORY_DAYS) for i in range(10, 25)])], ignore_index=True)
    victim = user(3)
    rows = ordinary_day(TODAY, 3) + [ev(TODAY + pd.Timedelta(hours=10), victim, "165.1.99.1", *vpn,
                                        place=("NL", "Amsterdam", 52.37, 4.9))]
    scores = score_day(h, rows)
    assert actor_score(scores, victim) < 0.5
    # the same sign-in from a network nobody uses does tell more
    rows_rare = ordinary_day(TODAY, 3) + [ev(TODAY + pd.Timedelta(hours=10), victim, "185.9.9.9", 60068,
                                             "Datacamp Limited", place=("NL", "Amsterdam", 52.37, 4.9))]
    assert actor_score(score_day(h, rows_rare), victim) > actor_score(scores, victim)


def test_own_device_on_a_new_network_is_a_trip_not_a_takeover(hist):
    victim = user(5)
    hotel = (12345, "Hotel Lisboa Wifi")
    lisbon = ("PT", "Lisbon", 38.72, -9.14)
    t = TODAY + pd.Timedelta(hours=9)
    rows = [ev(t, victim, "85.1.1.1", *hotel, place=lisbon),
            ev(t + pd.Timedelta(minutes=5), victim, "85.1.1.1", *hotel, app="slack_audit", action="user_login",
               device=LAPTOP, session="S005", place=lisbon)]
    rows += [ev(t + pd.Timedelta(minutes=20 + k), victim, "85.1.1.1", *hotel, app="slack_audit",
                action="file_downloaded", outcome="info", device=LAPTOP, session="S005", place=lisbon) for k in range(5)]
    scores = score_day(hist, rows)
    assert actor_score(scores, victim) < 0.5


def test_impossible_travel():
    h = history()
    victim = user(6)
    t = TODAY + pd.Timedelta(hours=8)
    asn, org = HOME_ISPS[6 % 3]
    mumbai = ("IN", "Mumbai", 19.07, 72.88)
    rows = [ev(t, victim, "100.6.1.1", asn, org),
            ev(t + pd.Timedelta(minutes=50), victim, "49.32.1.1", 55836, "Reliance Jio", place=mumbai)]
    scores = score_day(h, rows)
    top = scores[scores["actor"] == victim]
    assert "impossible_travel" in top["kinds"].iloc[0]
    text = " ".join(json.loads(top["reasons"].iloc[0]))
    km = haversine_km(52.52, 13.40, 19.07, 72.88)
    assert f"{km:,.0f} km" in text and "50 min" in text
    assert actor_score(scores, victim) >= 0.5
    # the carrier's addresses jump between cities all the time: that is not travel
    carrier_rows = ordinary_day(TODAY, 6)
    assert "impossible_travel" not in ",".join(score_day(h, carrier_rows)["kinds"])


def test_haversine_known_distance():
    assert haversine_km(52.52, 13.405, 48.8566, 2.3522) == pytest.approx(878, abs=5)  # Berlin - Paris


def test_session_jump_to_new_ip_and_device(hist):
    victim = user(7)
    t = TODAY + pd.Timedelta(hours=13)
    thief = [ev(t + pd.Timedelta(minutes=k), victim, "45.1.1.1", 9009, "M247 Europe SRL", app="slack_audit",
                action="file_downloaded", outcome="info", device=NEW_DEVICE, session="S007",
                place=("RO", "Bucharest", 44.43, 26.1)) for k in range(12)]
    scores = score_day(hist, ordinary_day(TODAY, 7) + thief)
    top = scores[scores["actor"] == victim]
    assert "session_jump" in top["kinds"].iloc[0]
    text = " ".join(json.loads(top["reasons"].iloc[0]))
    assert "S007" in text and "45.1.1.1" in text
    assert actor_score(scores, victim) >= 0.9


def test_learning_user_does_not_alert_on_novelty_alone():
    h = history()
    newcomer = user(40)
    h_new = pd.concat([h, pd.DataFrame(ordinary_day(TODAY - pd.Timedelta(days=1), 40))], ignore_index=True)
    rows = phished(newcomer, TODAY + pd.Timedelta(hours=15), oauth="")
    scores = score_day(h_new, rows)
    assert actor_score(scores, newcomer) < 0.5
    assert set(scores.loc[scores["actor"] == newcomer, "model_state"]) <= {"learning"}
    # once established, the same story alerts
    established = score_day(h, phished(user(8), TODAY + pd.Timedelta(hours=15), oauth=""))
    assert actor_score(established, user(8)) >= 0.5


def test_learning_user_still_alerts_on_org_level_signal():
    h = history()
    newcomer = user(41)
    t = TODAY + pd.Timedelta(hours=10)
    spray_ip = "89.187.164.3"
    rows = [ev(t + pd.Timedelta(seconds=k), user(i), spray_ip, 60068, "Datacamp Limited", action="login_failure",
               outcome="failure", place=("NL", "Amsterdam", 52.37, 4.9)) for k, i in enumerate(range(20))]
    rows.append(ev(t + pd.Timedelta(minutes=30), newcomer, spray_ip, 60068, "Datacamp Limited",
                   place=("NL", "Amsterdam", 52.37, 4.9)))
    scores = score_day(h, rows)
    row = scores[scores["actor"] == newcomer]
    assert len(row) and row["model_state"].iloc[0] == "learning"
    assert "campaign_success" in row["kinds"].iloc[0]
    assert "20 accounts failed from 89.187.164.3" in " ".join(json.loads(row["reasons"].iloc[0]))
    assert actor_score(scores, newcomer) >= 0.5
    # failures alone never score an account (that is the org-level alert's job)
    assert actor_score(scores, user(3)) == 0.0


def test_vendor_flag_alone_is_not_critical(hist):
    victim = user(9)
    asn, org = HOME_ISPS[9 % 3]
    rows = ordinary_day(TODAY, 9) + [ev(TODAY + pd.Timedelta(hours=8, minutes=30), victim, "100.9.1.1", asn, org,
                                        action="suspicious_login", outcome="warning", suspicious=True,
                                        reasons="suspicious_login")]
    scores = score_day(hist, rows)
    assert actor_score(scores, victim) < 0.5
    # weighed, not ignored: with a rare new network it adds to the story
    plain = actor_score(score_day(hist, phished(victim, TODAY + pd.Timedelta(hours=9), oauth="", downloads=0)), victim)
    flagged_rows = phished(victim, TODAY + pd.Timedelta(hours=9), oauth="", downloads=0)
    flagged_rows[0]["vendor_suspicious"] = True
    assert actor_score(score_day(hist, flagged_rows), victim) > plain


def test_empty_day_gives_empty_frame(hist):
    scorer = RiskScorer().fit(hist)
    out = scorer.score_samples(hist.iloc[0:0], profile_scores=None, learning=None)
    assert out.empty and "score" in out.columns


def test_stolen_session_from_same_browser_family_but_older_build(hist):
    victim = user(10)  # runs Chrome 140 on Windows; the thief replays the session from Chrome 120 on Windows
    t = TODAY + pd.Timedelta(hours=14)
    thief = [ev(t + pd.Timedelta(minutes=k), victim, "146.70.1.1", 9009, "M247 Europe SRL", app="slack_audit",
                action="file_downloaded", outcome="info", device=LAPTOP, session="S010", major="120",
                place=("ES", "Madrid", 40.42, -3.7)) for k in range(12)]
    scores = score_day(hist, ordinary_day(TODAY, 10) + thief)
    top = scores[scores["actor"] == victim]
    assert "session_jump" in top["kinds"].iloc[0]
    assert actor_score(scores, victim) >= 0.9
    # the same family on the same build is the user's own laptop: vouched, no alert
    own = [dict(r, ua_browser_major="140", event_id=r["event_id"] + "b") for r in thief]
    assert actor_score(score_day(hist, ordinary_day(TODAY, 10) + own), victim) < 0.5


def test_new_device_at_night_on_a_familiar_network(hist):
    victim = user(11)
    asn, org = HOME_ISPS[11 % 3]
    t = TODAY + pd.Timedelta(hours=1)
    rows = [ev(t, victim, "101.11.1.1", asn, org),
            ev(t + pd.Timedelta(minutes=3), victim, "101.11.1.1", asn, org, app="slack_audit", action="user_login",
               device=NEW_DEVICE, session="SN")]
    rows += [ev(t + pd.Timedelta(minutes=5 + k), victim, "101.11.1.1", asn, org, app="slack_audit",
                action="file_downloaded", outcome="info", device=NEW_DEVICE, session="SN") for k in range(4)]
    night = actor_score(score_day(hist, rows), victim)
    assert night >= 0.5
    # a new laptop during working hours on the home network is just a new laptop
    day_rows = [dict(r, event_time=r["event_time"] + pd.Timedelta(hours=8), event_id=r["event_id"] + "d") for r in rows]
    assert actor_score(score_day(hist, day_rows), victim) < 0.5


def _home_line_history(victim_i: int) -> pd.DataFrame:
    """The history, with the victim's home line keeping one address (a fixed line, unlike a carrier's CGNAT)."""
    h = history()
    mine = h["actor"] == user(victim_i)
    home_asn = HOME_ISPS[victim_i % len(HOME_ISPS)][0]
    h.loc[mine & (h["asn"] == home_asn), "ip"] = "87.1.2.3"
    return h


LAGOS = ("NG", "Lagos", 6.45, 3.39)
MTN = (29465, "MTN NIGERIA Communication limited")


def test_sign_in_abroad_while_the_user_is_at_home_on_their_fixed_line():
    victim_i = 7
    h = _home_line_history(victim_i)
    asn, org = HOME_ISPS[victim_i % len(HOME_ISPS)]
    t = TODAY + pd.Timedelta(hours=12)
    # the victim, working as usual 5 h earlier: too slow for "impossible travel" (1,000 km/h), too fast to fly 5,000 km
    at_home = ev(t - pd.Timedelta(hours=5), user(victim_i), "87.1.2.3", asn, org)
    abroad = ev(t, user(victim_i), "105.112.1.1", *MTN, place=LAGOS)  # a login and nothing else
    scores = score_day(h, [at_home, abroad])
    top = scores[scores["actor"] == user(victim_i)].sort_values("score").iloc[-1]
    assert "home_presence" in top["kinds"].split(",")
    assert "km away" in top["reasons"] and "87.1.2.3" not in top["reasons"]  # names the network, not the line
    assert top["score"] >= 0.5
    # the same login while the user's phone works (on the carrier) and no fixed line is in use: a trip
    phone = ev(t - pd.Timedelta(hours=1), user(victim_i), "80.9.9.9", *CARRIER, app="slack_access",
               action="access", device=PHONE)
    travelling = score_day(h, [phone, abroad])
    kinds = ",".join(travelling.loc[travelling["actor"] == user(victim_i), "kinds"])
    assert "home_presence" not in kinds
    assert actor_score(travelling, user(victim_i)) < 0.5
    assert actor_score(travelling, user(victim_i)) < top["score"]


def test_trip_after_a_flight_is_not_home_presence():
    # home line in use 14 h before a sign-in 5,000 km away: a flight fits, so no physical contradiction
    victim_i = 8
    h = _home_line_history(victim_i)
    asn, org = HOME_ISPS[victim_i % len(HOME_ISPS)]
    t = TODAY + pd.Timedelta(hours=20)
    rows = [ev(t - pd.Timedelta(hours=14), user(victim_i), "87.1.2.3", asn, org),
            ev(t, user(victim_i), "105.112.1.1", *MTN, place=LAGOS)]
    kinds = ",".join(score_day(h, rows)["kinds"])
    assert "home_presence" not in kinds


def test_return_of_a_network_that_brought_a_stranger_device():
    victim_i = 9
    h = history()
    yesterday = TODAY - pd.Timedelta(days=1)
    # yesterday: the attacker's first visit (new device, downloads) from a rare network
    h = pd.concat([h, pd.DataFrame(phished(user(victim_i), yesterday + pd.Timedelta(hours=15), asn=MTN[0],
                                           org=MTN[1], place=LAGOS, oauth=""))], ignore_index=True)
    back = [ev(TODAY + pd.Timedelta(hours=13), user(victim_i), "185.1.2.3", *MTN, place=LAGOS)]
    scores = score_day(h, back)
    kinds = ",".join(scores.loc[scores["actor"] == user(victim_i), "kinds"])
    assert "unvouched_return" in kinds and "risky_return" in kinds
    assert actor_score(scores, user(victim_i)) >= 0.5


def test_travel_discount_only_abroad():
    """A first visit to a network abroad while the phone works elsewhere reads as a trip; at home it does not."""
    victim_i = 10
    h = _home_line_history(victim_i)
    t = TODAY + pd.Timedelta(hours=12)
    phone = ev(t - pd.Timedelta(hours=1), user(victim_i), "80.9.9.9", *CARRIER, app="slack_access", action="access",
               device=PHONE)
    abroad = ev(t, user(victim_i), "105.112.1.1", *MTN, place=LAGOS)
    local = ev(t, user(victim_i), "91.64.1.1", 31334, "Kabel Deutschland", place=("DE", "Cologne", 50.94, 6.96))

    def points(rows, ip):
        s = score_day(h, rows)
        return json.loads(s.loc[s["ip"] == ip, "context"].iloc[0])["points"]

    # abroad, the phone working elsewhere lowers the story's points (away_from_home, -1)
    assert points([phone, abroad], "105.112.1.1") == pytest.approx(points([abroad], "105.112.1.1") - 0.5)
    # at home, no travel discount at all (not even fixed_lines_quiet)
    assert points([phone, local], "91.64.1.1") == pytest.approx(points([local], "91.64.1.1"))


def test_a_new_dynamic_address_on_the_home_line_still_places_the_user():
    """Home lines get a new address every few days; the ISP and the city stay, so the user is still at home."""
    victim_i = 12
    h = _home_line_history(victim_i)  # the victim kept 87.1.2.3 for the whole history: a steady line
    asn, org = HOME_ISPS[victim_i % len(HOME_ISPS)]
    t = TODAY + pd.Timedelta(hours=7)
    # 5 h later, 5,000 km away: too slow for "impossible travel", too fast to have flown there
    abroad = ev(t + pd.Timedelta(hours=5), user(victim_i), "105.112.1.1", *MTN, place=LAGOS)
    today_new_address = ev(t, user(victim_i), "87.1.77.77", asn, org)
    scores = score_day(h, [today_new_address, abroad])
    top = scores[scores["ip"] == "105.112.1.1"].iloc[0]
    assert "home_presence" in top["kinds"].split(",")
    assert top["score"] >= 0.5
    # the ordinary history changes the home address every day: no steady line, so a new address places nobody
    kinds = ",".join(score_day(history(), [today_new_address, abroad])["kinds"])
    assert "home_presence" not in kinds


def test_a_failed_attempt_does_not_place_the_user():
    from watch_pipeline.core.scoring import DEFAULT_CONFIG, _impossible_travel

    singapore, dubai = ("SG", "Singapore", 1.29, 103.85), ("AE", "Dubai", 25.2, 55.27)
    t = TODAY + pd.Timedelta(hours=3)
    guess = ev(t, user(13), "128.199.1.1", 14061, "DigitalOcean, LLC", place=singapore, outcome="failure",
               action="login_failure")
    hotel = ev(t + pd.Timedelta(hours=1), user(13), "94.207.0.11", 5384, "Etisalat", place=dubai)
    networks = pd.DataFrame(columns=["users", "roaming"])
    assert _impossible_travel(pd.DataFrame([guess, hotel]), None, networks, DEFAULT_CONFIG) == {}
    # had the Singapore sign-in succeeded, Dubai an hour later would be impossible
    succeeded = dict(guess, outcome="success", action="login_success")
    assert hotel["event_id"] in _impossible_travel(pd.DataFrame([succeeded, hotel]), None, networks, DEFAULT_CONFIG)


def test_a_device_like_the_users_does_not_vouch_across_an_impossible_trip():
    victim_i = 14
    h = history()
    asn, org = HOME_ISPS[victim_i % len(HOME_ISPS)]
    t = TODAY + pd.Timedelta(hours=8)
    at_home = ev(t, user(victim_i), f"10{victim_i % 3}.{victim_i}.1.{TODAY.day}", asn, org)
    # the attacker's browser has the same family as the victim's laptop (Chrome on Windows)
    attacker = [ev(t + pd.Timedelta(minutes=40 + k), user(victim_i), "105.112.1.1", *MTN, place=LAGOS,
                   app="slack_audit", action="file_downloaded", outcome="info", device=LAPTOP) for k in range(3)]
    scores = score_day(h, [at_home] + attacker)
    top = scores[scores["ip"] == "105.112.1.1"].iloc[0]
    assert "impossible_travel" in top["kinds"] and "the trip here is impossible" in top["reasons"]
    assert top["score"] >= 0.5
    # without the sign-in at home 40 minutes earlier the same laptop family abroad vouches (a trip)
    assert actor_score(score_day(h, attacker), user(victim_i)) < 0.5


M247 = (9009, "M247 Europe SRL")


def _vpn_user_history(victim_i: int) -> pd.DataFrame:
    """The history, with the victim also working through a commercial VPN (M247) from their own laptop every day."""
    rows = [ev(START + pd.Timedelta(days=d, hours=14), user(victim_i), f"146.70.2.{d}", *M247, app="slack_audit",
               action="file_downloaded", outcome="info", device=LAPTOP, place=("NL", "Amsterdam", 52.37, 4.9))
            for d in range(HISTORY_DAYS)]
    return pd.concat([history(), pd.DataFrame(rows)], ignore_index=True)


def test_a_shared_vpn_exit_in_a_stuffing_run():
    """Attackers rent the same VPN exits as the user: a sign-in there that brings nothing new is the user's."""
    victim_i = 15
    h = _vpn_user_history(victim_i)
    t = TODAY + pd.Timedelta(hours=9)
    ams = ("NL", "Amsterdam", 52.37, 4.9)
    campaign = [ev(t + pd.Timedelta(minutes=k), user(i), "146.70.1.1", *M247, place=ams, outcome="failure",
                   action="login_failure") for k, i in enumerate(range(20, 28))]
    mine = ev(t + pd.Timedelta(minutes=30), user(victim_i), "146.70.1.1", *M247, place=ams)
    scores = score_day(h, campaign + [mine])
    top = scores[scores["actor"] == user(victim_i)].iloc[0]
    assert "campaign_success" in top["kinds"] and "shared VPN or proxy exit" not in top["reasons"]  # shown: > 0 only
    assert top["score"] < 0.5
    # the same sign-in followed by an OAuth grant from that address is a takeover
    grant = ev(t + pd.Timedelta(minutes=33), user(victim_i), "146.70.1.1", *M247, place=ams, app="token",
               action="authorize", oauth="rclone")
    assert actor_score(score_day(h, campaign + [mine, grant]), user(victim_i)) >= 0.5


def test_day_two_of_a_trip_reads_like_day_one():
    victim_i = 16
    h = _home_line_history(victim_i)
    hotel, lisbon = (12345, "Hotel Lisboa Wifi"), ("PT", "Lisbon", 38.72, -9.14)
    yesterday = TODAY - pd.Timedelta(days=1)
    h = pd.concat([h, pd.DataFrame([ev(yesterday + pd.Timedelta(hours=19), user(victim_i), "85.1.1.1", *hotel,
                                       place=lisbon)])], ignore_index=True)

    def story(place, asn_org):
        t = TODAY + pd.Timedelta(hours=9)
        phone = ev(t - pd.Timedelta(hours=1), user(victim_i), "80.9.9.9", *CARRIER, app="slack_access",
                   action="access", device=PHONE)
        rows = [phone, ev(t, user(victim_i), "85.1.1.1", *asn_org, place=place),
                ev(t + pd.Timedelta(minutes=2), user(victim_i), "85.1.1.1", *asn_org, place=place,
                   app="slack_audit", action="user_login", device=NEW_DEVICE)]  # the hotel's computer
        s = score_day(h, rows)
        return s[s["ip"] == "85.1.1.1"].iloc[0]

    abroad = story(lisbon, hotel)
    assert "unvouched_return" not in abroad["kinds"] and abroad["score"] < 0.5
    # the same return at home is no trip: a network that came back without the user's devices
    local = story(("DE", "Cologne", 50.94, 6.96), hotel)
    assert "unvouched_return" in local["kinds"] and local["score"] > abroad["score"]


def test_a_common_network_does_not_excuse_a_stranger_device():
    """Many colleagues use the ISP, which explains the user being there, not a device none of theirs accompany."""
    victim_i = 17
    versatel = (8881, "1&1 Versatel")
    colleagues = [ev(START + pd.Timedelta(days=d, hours=10), user(i), f"91.1.{i}.{d}", *versatel)
                  for d in range(HISTORY_DAYS) for i in range(0, 10)]
    h = pd.concat([history(), pd.DataFrame(colleagues)], ignore_index=True)
    t = TODAY + pd.Timedelta(hours=14)

    def on_versatel(device):
        rows = [ev(t, user(victim_i), "91.9.9.9", *versatel)]
        rows += [ev(t + pd.Timedelta(minutes=5 + k), user(victim_i), "91.9.9.9", *versatel, app="slack_audit",
                    action="file_downloaded", outcome="info", device=device) for k in range(5)]
        return actor_score(score_day(h, rows), user(victim_i))

    assert on_versatel(NEW_DEVICE) >= 0.5
    assert on_versatel(LAPTOP) < 0.5  # the user's own laptop there: a friend's flat, a new ISP


def test_a_new_device_at_an_hour_worked_only_once_on_a_familiar_network(hist):
    victim_i = 18
    asn, org = HOME_ISPS[victim_i % 3]
    home = f"10{victim_i % 3}.{victim_i}.1"

    def night_with(history_nights: int) -> float:
        extra = [ev(START + pd.Timedelta(days=d, hours=1), user(victim_i), f"{home}.{d + 1}", asn, org)
                 for d in range(history_nights)]
        h = pd.concat([hist, pd.DataFrame(extra)], ignore_index=True) if extra else hist
        t = TODAY + pd.Timedelta(hours=1)
        rows = [ev(t, user(victim_i), f"{home}.{TODAY.day}", asn, org)]
        rows += [ev(t + pd.Timedelta(minutes=5 + k), user(victim_i), f"{home}.{TODAY.day}", asn, org,
                    app="slack_audit", action="file_downloaded", outcome="info", device=NEW_DEVICE) for k in range(4)]
        return actor_score(score_day(h, rows), user(victim_i))

    assert night_with(0) >= 0.5
    assert night_with(1) >= 0.5  # one late night before does not make 01h a working hour
    assert night_with(4) < 0.5  # four do


def _fit_state(scorer: RiskScorer) -> dict:
    return {k: getattr(scorer, k) for k in ("networks_", "apps_", "active_users_", "pairs_", "blocks_", "home_lines_",
                                            "home_city_", "home_country_", "devices_", "dev_major_")}


def _assert_same_state(a: dict, b: dict) -> None:
    for k, v in a.items():
        w = b[k]
        if isinstance(v, pd.DataFrame):
            pd.testing.assert_frame_equal(v.sort_index(), w.sort_index(), check_dtype=False, obj=k)
        elif isinstance(v, pd.Series):
            pd.testing.assert_series_equal(v.sort_index(), w.sort_index(), check_dtype=False, check_names=False, obj=k)
        else:
            assert v == w, k


def test_fit_on_folded_history_equals_fit_on_events(hist):
    """The pipeline fits on the history folded per (day, combination) with counts; the state must be the same as
    from the events, in any storage order. The extra user's home city is decided by counts, not by rows: one
    steady line in Hamburg with many events a day against two lines in Berlin with one event each."""
    from watch_pipeline.core.scoring import aggregate_history

    extra = []
    for d in range(HISTORY_DAYS):
        day = START + pd.Timedelta(days=d)
        extra += [ev(day + pd.Timedelta(hours=9, minutes=k), user(40), "2001:db8:40:1::7", 3320,
                     "Deutsche Telekom AG", app="slack_audit", action="file_downloaded", outcome="info",
                     device=LAPTOP, place=("DE", "Hamburg", 53.55, 9.99)) for k in range(6)]
        extra += [ev(day + pd.Timedelta(hours=12 + k), user(40), f"10.40.{k}.1", 3209, "Vodafone GmbH")
                  for k in range(2)]
        extra += [ev(day + pd.Timedelta(hours=13 + k), user(40), f"10.41.{k}.1", 6805, "Telefonica Germany")
                  for k in range(2)]
        extra.append(ev(day + pd.Timedelta(hours=15), user(40), "192.0.2.9", 3209, "Vodafone GmbH",
                        outcome="failure", action="login_failure"))
    h = pd.concat([hist, pd.DataFrame(extra)], ignore_index=True)
    folded = aggregate_history(h)
    assert len(folded) < 0.6 * len(h) and int(folded["n"].sum()) == len(h)
    from_events = _fit_state(RiskScorer().fit(h))
    _assert_same_state(from_events, _fit_state(RiskScorer().fit(folded)))
    _assert_same_state(from_events, _fit_state(RiskScorer().fit(h.sample(frac=1.0, random_state=3))))
    assert from_events["home_city_"][user(40)] == "Hamburg"


def test_ipv6_blocks_are_what_ipaddress_gives():
    """The /64 of an IPv6 address comes from the C socket functions; it must be the text ipaddress gives."""
    import ipaddress

    from watch_pipeline.core.scoring import _address_block, _v6_block

    addresses = ["::", "::1", "1:0:0:0:0:0:0:1", "2001:db8:0:0:1::", "2001:0:0:1::", "::ffff:1.2.3.4",
                 "2001:DB8::FFFF:1.2.3.4", "1:0:2:0::", "1:0:0:2:3:4:5:6", "0:1:0:0:2:0:0:0", "fe80::1%eth0",
                 "2a02:810d:4b40:1a00:7d2c:1234:5678:9abc", "2001:0db8:0000:0000:0000:ff00:0042:8329"]
    for a in addresses:
        assert _v6_block(a) == str(ipaddress.ip_network(f"{a}/64", strict=False)), a
    with pytest.raises(ValueError):
        _v6_block("2001:db8::zz")
    blocks = _address_block(pd.Series(["10.0.0.1", "2001:db8:0:0:1::5", "2001:db8::6"]))
    assert blocks.tolist() == ["10.0.0.1", "2001:db8::/64", "2001:db8::/64"]


def test_text_of_arrow_and_object_strings_is_the_same():
    from watch_pipeline.core.scoring import _text

    values = [" a ", None, "", "b", "\tc\n", float("nan")]
    arrow = pd.DataFrame({"x": pd.Series(values, dtype="str")})
    objects = pd.DataFrame({"x": pd.Series(values, dtype=object)})
    pd.testing.assert_series_equal(_text(arrow, "x"), _text(objects, "x"))
    assert _text(arrow, "x").tolist() == ["a", "", "", "b", "c", ""]


@pytest.mark.parametrize("values, dtype", [
    (["120", "121", None, "", "x", "7.5", "120"], "str"), (["120", "121", "120"], "str"), (["1", "x"], "str"),
    (["120", None, 3, 4.5], object), ([1, 2, None], None), ([], "str"), ([None, None], object),
])
def test_numbers_parse_like_to_numeric(values, dtype):
    from watch_pipeline.core.scoring import _numbers

    s = pd.Series(values, dtype=dtype, name="ua_browser_major")
    pd.testing.assert_series_equal(_numbers(s), pd.to_numeric(s, errors="coerce"))


def _prior_days_by_hand(profile_scores: pd.DataFrame, ev: pd.DataFrame) -> dict[str, list]:
    """The rule of ``_prior_days`` row by row: rows in (event_time, event_id) order, the value's first row of the
    day gives its earlier days, an event takes its first row of each field."""
    ids = set(ev["event_id"])
    rows = sorted((r for r in profile_scores.to_dict("records") if r["event_id"] in ids),
                  key=lambda r: (r["event_time"], r["event_id"]))
    first: dict = {}
    out: dict[str, list] = {}
    for r in rows:
        prior = first.setdefault((r["actor"], r["field"], r["value"]), float(r["days_seen"]))
        values = out.setdefault(r["field"], {})
        values.setdefault(r["event_id"], prior)
    return {f: [v.get(e, float("nan")) for e in ev["event_id"]] for f, v in out.items()}


@pytest.mark.parametrize("shifted", [False, True], ids=["rows carry their event's time", "some rows do not"])
def test_prior_days_follow_the_time_order_of_the_rows(shifted):
    from watch_pipeline.core.scoring import _prior_days

    hist = history(days=4)
    today = pd.DataFrame([r for i in range(N_USERS) for r in ordinary_day(TODAY, i)])
    scores = ActorProfiles().fit(hist).score_samples(today)
    # shuffled, with repeated rows that disagree, and rows of events that are not today's
    extra = scores.iloc[::7].assign(days_seen=lambda f: f["days_seen"] + 5)
    other = scores.iloc[:5].assign(event_id="not-today")
    ps = pd.concat([scores, extra, other], ignore_index=True).sample(frac=1, random_state=2).reset_index(drop=True)
    if shifted:  # then positions do not give the order: the rows' own times do
        ps.loc[ps.index[::3], "event_time"] = ps["event_time"].iloc[::3] + pd.Timedelta(hours=5)
    day = today.assign(event_time=pd.to_datetime(today["event_time"]).astype("datetime64[ns]"))
    day = day.sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)
    got = _prior_days(ps, day)
    want = _prior_days_by_hand(ps, day)
    assert set(got) == set(want) and len(want) >= 4
    for field, values in want.items():
        assert got[field].tolist() == pytest.approx(values, nan_ok=True), field


def test_fit_window_keeps_the_folds_it_was_sent_and_fits_like_the_whole_window(hist):
    """A helper process fits each day's scorer from the partitions' folds it keeps (``fit_window``); it must fit
    what the window's concatenated folds give, drop the folds the window left, and refuse a window it lacks."""
    from watch_pipeline.core.scoring import _WINDOW_FOLDS, aggregate_history, fit_window

    fit_window([], {}, history=hist.head(0))  # (clears what an earlier test left in this process)
    day = pd.to_datetime(hist["event_time"]).dt.normalize()
    folds = {d.date(): aggregate_history(hist[day == d]) for d in sorted(day.unique())}
    parts = list(folds)
    window, sent = 3, set()
    for end in range(window, len(parts) + 1):
        days = parts[end - window:end]
        new = {d: folds[d] for d in days if d not in sent}
        sent |= set(new)
        assert len(new) == (window if end == window else 1)
        got = fit_window(days, new)
        want = RiskScorer().fit(pd.concat([folds[d] for d in days], ignore_index=True))
        _assert_same_state(_fit_state(want), _fit_state(got))
        assert set(_WINDOW_FOLDS) == set(days)  # only the window's partitions are kept
    with pytest.raises(RuntimeError, match="no folded history kept"):
        fit_window(parts[:window], {})
    whole = fit_window(parts[-window:], {}, history=hist)
    _assert_same_state(_fit_state(RiskScorer().fit(hist)), _fit_state(whole))
    assert not _WINDOW_FOLDS
