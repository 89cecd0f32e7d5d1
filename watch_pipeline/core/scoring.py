"""The default risk scorer: per-user novelty read in the light of organisation context, one story per network.

An account takeover rarely shows as one odd value. It shows as a *story*: the account is used from a network the
user does not know, which few colleagues use, by a device the user never had, and that device then grants a rare
OAuth app or downloads a pile of files. Benign novelty tells a different story: on a business trip, in a café or
through a new VPN the user's *own* devices show up on the new network ("vouched"), or the network is one many
colleagues use (carriers, the corporate VPN).

So :class:`RiskScorer` groups a day's events per (actor, network) and adds evidence in log-odds points:

* network unfamiliar to the user (seen on at most one earlier day), rare in the organisation, new country;
* not vouched by a device the user has used on >= 2 earlier days, and devices new to the user on it;
* strong signals: success from an IP failing for many accounts (spray / stuffing), rare OAuth grant, downloads by
  the new device, a Slack session that jumps to a new IP and device, impossible travel (ignoring networks whose IPs
  churn or whose users appear in many cities), activity in an hour bucket the user never works, vendor flags;
* where the user physically is: their own fixed lines (an address the user had on an earlier day, or a new dynamic
  address in the home city on a line where the user keeps addresses for days; not a VPN) in use too far away to
  have flown there ("home_presence": the victim keeps working at home while someone signs in abroad), or silent
  while the user's own devices work elsewhere ("away_from_home": consistent with a trip); a network that comes
  back after a visit that brought a stranger device or an OAuth grant ("risky_return");
* a campaign IP on a VPN exit the user's own devices use, bringing nothing new, is a shared exit ("own_network").

``score = sigmoid(points - offset)``. While a user is learning, per-user novelty points are dropped, so only the
organisation-level, physical and vendor signals can raise the score. Every point comes with a reason that carries
its numbers.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import socket

import numpy as np
import pandas as pd

from watch_pipeline.core.frames import sort_by_time_and_id

SCORE_COLUMNS = ["event_id", "actor", "event_time", "ip", "score", "kinds", "reasons", "model_state", "context"]
# What a story (one actor on one network for a day) reads of the day's events.
STORY_COLUMNS = [
    "event_id", "actor", "network", "event_time", "ip", "outcome_s", "action_l", "device", "asn", "asn_org",
    "geo_country", "geo_city", "oauth_client", "vendor_reasons", "model_state", "ua_browser", "ua_os", "net_days",
    "prior_geo_country", "prior_ua_device_key", "prior_hour_bucket", "_jump", "_travel", "_campaign_ok", "_forest",
    "_vendor", "_oauth", "geo_lat", "geo_lon",
]

DEFAULT_CONFIG: dict = {
    "offset": 4.0,  # points at which the score is 0.5
    "min_score": 0.05,  # rows below are not returned
    "familiar_days": 2,  # a network / device seen on >= this many earlier days is familiar
    "vouch_days": 2,  # a device seen on >= this many earlier days vouches for a network
    "rare_org_users": 2,  # a network used by at most this many other actors in the history window is rare
    "common_org_share": 0.05,  # ... by at least this share of active actors is common
    "rare_app_users": 2,  # an OAuth client granted by at most this many other actors is rare
    "campaign_min_accounts": 5,  # an IP that failed for this many accounts today is a campaign IP ...
    "campaign_max_recovered": 0.5,  # ... unless most of them then signed in from it
    "download_actions": ("file_downloaded", "download", "file_download", "download_file", "export"),
    "rare_hour_days": 1,  # a new device on a familiar network at an hour bucket seen on at most this many days
    "impossible_speed_kmh": 1500.0,  # airliners do ~900; IP geolocation is coarse
    "impossible_min_km": 500.0,
    "roaming_ips_per_user_day": 1.5,  # networks whose users get this many IPs a day churn (carriers, CGNAT)
    "roaming_cities_per_user": 1.5,  # ... or whose users appear in this many cities
    "roaming_away_share": 0.5,  # ... or whose users are mostly elsewhere (VPN / egress providers)
    # where the user physically is: their own fixed networks (home ISP, office) in use around the story's time
    "flight_kmh": 900.0,  # door to door, a traveller covers at most this (airliner cruise) ...
    "flight_overhead_hours": 1.5,  # ... plus this (airports): a generous bound, real trips take longer
    "presence_window_hours": 12.0,  # no own fixed network within this many hours: the user may be travelling
    "weights": {
        "new_network": 1.0,
        "rare_in_org": 1.0,
        "common_in_org": -1.5,
        "new_country": 0.5,
        "unvouched": 1.0,
        "vouched": -2.5,
        "new_device": 1.0,
        "downloads": 1.5,  # >= 3 downloads by an unfamiliar device on the network
        "mass_downloads": 2.0,  # >= 20
        "unvouched_return": 1.5,
        "rare_oauth": 2.0,
        "campaign_success": 4.5,
        "session_jump": 3.0,
        "impossible_travel": 2.5,
        "odd_hours": 1.75,
        "vendor_flag": 1.0,
        "forest": 0.5,
        "home_presence": 2.0,  # the user's own fixed network is in use too far away to have travelled
        "away_from_home": -1.0,  # own devices active, fixed networks silent around it (consistent with travel)
        "fixed_lines_quiet": -0.5,  # fixed networks silent around it
        "risky_return": 1.5,  # a network whose earlier visit brought a stranger device or an OAuth grant
        "own_network": -2.5,  # a campaign IP on a network the user's own devices use (a shared VPN exit)
    },
}

# per-user novelty: dropped while the user is learning
NOVELTY_KINDS = {"new_network", "rare_in_org", "new_country", "unvouched", "new_device", "downloads",
                 "mass_downloads", "odd_hours", "common_in_org", "vouched", "forest", "unvouched_return",
                 "away_from_home", "fixed_lines_quiet", "risky_return"}
EARTH_RADIUS_KM = 6371.0


def _text(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    s = frame[col]
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        num = pd.to_numeric(s, errors="coerce")
        # formatted once per distinct value (an ASN column of a month of history has ~1e6 rows, ~1e3 values)
        codes, uniques = pd.factorize(num, use_na_sentinel=True)
        labels = np.array([str(int(v)) if float(v).is_integer() else str(v) for v in uniques] + [""], dtype=object)
        return pd.Series(labels[codes], index=s.index, dtype=object)
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.na_value is np.nan:
        # the same strings, without a round trip through Python objects (called for every column, ~1e6 rows)
        return s.fillna("").str.strip()
    return s.astype(object).where(s.notna(), "").astype(str).str.strip()


def _numbers(s: pd.Series) -> pd.Series:
    """``pd.to_numeric(s, errors="coerce")``, parsing each distinct text once (browser versions: ~1e6 rows a
    month, a few dozen values)."""
    if s.dtype.kind in "biuf":
        return pd.to_numeric(s, errors="coerce")
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    parsed = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce").to_numpy()
    if (codes < 0).any():  # missing values: float with NaN, as to_numeric gives
        parsed = np.append(parsed.astype(float), np.nan)
    return pd.Series(parsed[codes], index=s.index, name=s.name)


def network_key(events: pd.DataFrame) -> pd.Series:
    """The network of each event: ASN number, else ASN organisation, else the IP."""
    asn, org, ip = _text(events, "asn"), _text(events, "asn_org"), _text(events, "ip")
    return asn.where(asn != "", org.where(org != "", ip))


# The profile fields whose "seen on how many earlier days" the scorer reads (profile_scores rows, columns).
PRIOR_FIELDS = ("asn", "asn_org", "ua_device_key", "geo_country", "hour_bucket", "session_id")
PRIOR_COLUMNS = ("event_id", "actor", "event_time", "field", "value", "days_seen")
# What ``RiskScorer.fit`` reads of the history window.
HISTORY_FIELDS = ["actor", "event_time", "ip", "asn", "asn_org", "geo_city", "geo_country", "oauth_client",
                  "ua_device_key", "ua_browser_major", "outcome"]


def aggregate_history(events: pd.DataFrame) -> pd.DataFrame:
    """Fold history events into one row per (day, HISTORY_FIELDS but the time): the first ``event_time`` of the
    combination and its count ``n``, ordered by time (then the fields). ``RiskScorer.fit`` learns the same state from
    this as from the events; the warehouse computes the same fold in SQL (``history_sql``)."""
    keys = [c for c in HISTORY_FIELDS if c != "event_time" and c in events]
    ev = events[keys + ["event_time"]].assign(_day=pd.to_datetime(events["event_time"]).dt.normalize())
    if "outcome" in ev:  # fit only asks whether an attempt failed
        ev["outcome"] = np.where(ev["outcome"].to_numpy(dtype=object) == "failure", "failure", "")
    out = (ev.groupby(["_day"] + keys, dropna=False, sort=False)["event_time"].agg(["min", "size"])
           .reset_index().rename(columns={"min": "event_time", "size": "n"}))
    out = out.sort_values(["event_time"] + keys, kind="stable", na_position="first")
    return out[HISTORY_FIELDS[:1] + ["event_time"] + keys[1:] + ["n"]].reset_index(drop=True)


def history_sql(table: str = "events", param: str = "?", by_partition: bool = False) -> str:
    """The warehouse's :func:`aggregate_history` over ``partition_date >= start AND < end`` (portable SQL).

    ``by_partition`` also groups by ``partition_date`` and returns it (column ``partition``), so that each
    partition's fold can be kept and reused; while every event lies on its partition's day (as the pipeline
    writes them) the groups and the order are the same."""
    keys = ", ".join(c for c in HISTORY_FIELDS if c != "event_time")
    failed = "CASE WHEN outcome = 'failure' THEN 'failure' ELSE '' END"
    select = keys.removeprefix("actor, ").replace("outcome", f"{failed} AS outcome")
    partition = ("partition_date AS partition, ", "partition_date, ") if by_partition else ("", "")
    return (f"SELECT {partition[0]}actor, MIN(event_time) AS event_time, {select}, COUNT(*) AS n "
            f'FROM "{table}" WHERE partition_date >= {param} AND partition_date < {param} '
            f"GROUP BY {partition[1]}CAST(event_time AS DATE), {keys.replace('outcome', failed)} "
            f"ORDER BY event_time, {', '.join(k + ' NULLS FIRST' for k in keys.split(', '))}")


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(v, dtype=float)) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _merge_config(config: dict | None) -> dict:
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    cfg["weights"] = {**DEFAULT_CONFIG["weights"], **((config or {}).get("weights") or {})}
    return cfg


class RiskScorer:
    """Scores one day of events for account takeover (sklearn style: ``fit`` on history, ``score_samples``)."""

    def __init__(self, config: dict | None = None):
        self.config = config
        self.cfg_ = _merge_config(config)
        self.networks_ = pd.DataFrame(columns=["network", "users", "roaming", "asn_org"]).set_index("network")
        self.apps_ = pd.Series(dtype="int64")
        self.active_users_ = 0
        self.pairs_ = pd.DataFrame(columns=["days", "vouched", "stranger"])  # (actor, network) in the history window
        self.blocks_ = pd.Series(dtype="datetime64[ns]")  # actor + address block -> first day used
        self.home_lines_ = pd.Series(dtype="datetime64[ns]")  # (actor, network) of a fixed line -> first day
        self.home_city_ = pd.Series(dtype=object)  # actor -> most frequent city on the user's steady lines
        self.home_country_ = pd.Series(dtype=object)  # actor -> most frequent country there
        self.devices_: set = set()  # (actor, device key) seen on >= vouch_days days
        self.dev_major_ = pd.Series(dtype=float)  # (actor, device key) -> newest browser major

    # -- organisation context --------------------------------------------------------------------------------------

    def fit(self, history_events: pd.DataFrame | None) -> "RiskScorer":
        """Learn organisation context from the history window: users per network and OAuth app, roaming networks.

        ``history_events`` are events (HISTORY_FIELDS), or the same events folded by :func:`aggregate_history`
        (one row per distinct combination and day, with its first ``event_time`` and a count ``n``): both give the
        same state, and the folded form is a third of the rows of a month of history."""
        cfg = self.cfg_
        if history_events is None or len(history_events) == 0:
            return self
        h = history_events[history_events["actor"].notna()] if history_events["actor"].isna().any() else history_events
        # Time order: "the first" of anything (a pair's first city) is the earliest, whatever the storage order.
        # (The warehouse's fold comes in time order already: reordering ~1e6 values of Arrow strings costs.)
        t = pd.to_datetime(h["event_time"], utc=True).dt.tz_localize(None).to_numpy()  # datetime64, not Timestamps
        if len(t) > 1 and not (t[1:] >= t[:-1]).all():
            h = h.iloc[np.argsort(t, kind="stable")]
        # Every groupby runs on integer codes of its keys, made once per column (sorted where a result's order
        # matters: the codes sort as their texts do); texts come back only for the results' labels. (Groupbys on
        # the strings re-factorized them each time: ~20 of them on ~1e6 rows a month.)
        net, networks = _codes(network_key(h))
        if len(networks) and networks[0] == "":  # events without a network ("" sorts first) are no context
            keep = net > 0
            h, net, networks = h[keep], net[keep] - 1, networks[1:]
        actor, actors = _codes(h["actor"])
        self.active_users_ = len(actors)
        day, days = _codes(pd.to_datetime(h["event_time"]).dt.normalize())
        dated, n_day = day >= 0, max(len(days), 1)  # (NaT: -1)
        counts = h["n"].to_numpy() if "n" in h else np.ones(len(h), dtype=np.int64)
        city, cities = _text_codes(h, "geo_city")
        located = (cities != "")[city]
        ip, ips = _text_codes(h, "ip", sort=False)
        ok = (_text(h, "outcome") != "failure").to_numpy() if "outcome" in h else np.ones(len(h), dtype=bool)
        n_net = len(networks)
        pair, pair_keys = pd.factorize(actor * max(n_net, 1) + net, sort=True)  # (actor, network), in that order
        pair_actor, pair_net = np.divmod(pair_keys, max(n_net, 1))
        n_pair = len(pair_keys)
        # users of a network: accounts that did something there (campaign targets only failed there)
        users = np.bincount(pair_net[np.bincount(pair[ok], minlength=n_pair) > 0], minlength=n_net)
        ips_per_user_day = _mean_distinct(pair[dated] * n_day + day[dated], ip[dated], len(ips),
                                          lambda g: pair_net[g // n_day], n_net, 1.0)
        cities_per_user = _mean_distinct(pair[located], city[located], len(cities), lambda g: pair_net[g], n_net, 1.0)
        # The user's steady lines: networks where the user keeps an address block (IPv4 address, IPv6 /64) for days
        # on end (home and office lines, dynamic ones included). A carrier's CGNAT hands out a new address nearly
        # every time and geolocates to its head office, so it must not decide where the user lives.
        block, blocks = _blocks(ip, ips)
        okl = located & ok
        seen = np.bincount(pair[okl], minlength=n_pair) > 0
        pair_days = np.bincount(_distinct(pair[okl & dated], day[okl & dated], n_day), minlength=n_pair)
        pair_blocks = np.bincount(_distinct(pair[okl], block[okl], len(blocks)), minlength=n_pair)
        steady = seen & (pair_days >= 2) & (pair_blocks <= 0.5 * pair_days)
        # the home city (country): the most events located on the user's steady lines, or anywhere without one
        votes = located & (steady[pair] | (np.bincount(pair_actor[steady], minlength=len(actors)) == 0)[actor])
        home = _most(actor[votes], city[votes], counts[votes], len(actors), len(cities))  # actor -> city, or -1
        country, countries = _text_codes(h, "geo_country")
        voted = votes & (countries != "")[country]
        top = _most(actor[voted], country[voted], counts[voted], len(actors), len(countries))
        # VPN / egress: most of the network's users live somewhere else (their home city differs)
        first = np.flatnonzero(located)[~pd.Series(pair[located]).duplicated().to_numpy()]  # a pair's first city
        away = np.bincount(pair_net[pair[first]], weights=city[first] != home[actor[first]], minlength=n_net)
        located_pairs = np.bincount(pair_net[pair[first]], minlength=n_net)
        away_share = np.divide(away, located_pairs, out=np.zeros(n_net), where=located_pairs > 0)
        order = pd.unique(net)  # the networks in the order they first appear
        nets = pd.DataFrame({"users": users[order]}, index=_index(networks[order].rename("network")))
        nets["ips_per_user_day"] = ips_per_user_day[order]
        nets["cities_per_user"] = cities_per_user[order]
        nets["away_share"] = away_share[order]
        nets["roaming"] = (
            (nets["ips_per_user_day"] >= cfg["roaming_ips_per_user_day"])
            | (nets["cities_per_user"] >= cfg["roaming_cities_per_user"])
            | ((nets["away_share"] >= cfg["roaming_away_share"]) & (nets["users"] >= 2))
        )
        # VPN / egress providers: an address there says nothing about where the user sits
        nets["egress"] = (nets["away_share"] >= cfg["roaming_away_share"]) & (nets["users"] >= 2)
        if "asn_org" in h:  # the network's first organisation name
            named = np.flatnonzero(h["asn_org"].notna().to_numpy())
            named = named[~pd.Series(net[named]).duplicated().to_numpy()]
            nets["asn_org"] = h["asn_org"].iloc[named].set_axis(net[named]).reindex(order).set_axis(nets.index)
        else:
            nets["asn_org"] = ""
        self.networks_ = nets
        self.home_city_ = pd.Series(_index(cities[home[home >= 0]]), index=_index(actors[home >= 0]), name="city")
        self.home_country_ = (pd.Series(_index(countries[top[top >= 0]]), index=_index(actors[top >= 0]),
                                        name="level_1" if countries.name is None else countries.name)  # as it was
                              if (top >= 0).any() else pd.Series(dtype=object))
        # per (actor, network): days used, and whether a device of the user's (seen on >= vouch_days days) was there
        device, devices = _text_codes(h, "ua_device_key")
        has_device = (devices != "")[device]
        device_names = devices.to_numpy(dtype=object)
        self.dev_major_ = pd.Series(dtype=float)
        if "ua_browser_major" in h:
            # a build older than one the user already ran on that device key is another machine of the same kind
            # (an attacker's stale Chrome on Linux is not the victim's up-to-date Chrome on Linux)
            major = _numbers(h["ua_browser_major"])
            m = major.to_numpy()
            rows = np.flatnonzero(dated & ~pd.isna(m))  # (the others are no older build)
            user_device = actor[rows] * len(devices) + device[rows]
            daily, daily_keys = pd.factorize(user_device * n_day + day[rows], sort=True)  # (actor, device, day)
            newest = np.full(len(daily_keys), -np.inf)
            np.maximum.at(newest, daily, m[rows])
            # the newest build on earlier days: a running maximum within each (actor, device), one day behind
            daily_ud = daily_keys // n_day
            newest = pd.Series(newest).groupby(daily_ud).cummax().to_numpy()
            before = np.full(len(newest), np.nan)
            before[1:] = newest[:-1]
            before[np.diff(daily_ud, prepend=-1) != 0] = np.nan
            older = np.zeros(len(h), dtype=bool)
            older[rows] = (m[rows] < before[daily]) & has_device[rows]
            if older.any():  # another machine: "<device key> v<build>", a device of its own
                renamed = device_names[device[older]] + " v" + \
                    pd.Series(m[older]).astype(int).astype(str).to_numpy(dtype=object)
                codes, device_names = pd.factorize(np.concatenate([device_names, renamed]))
                device = device.copy()
                device[older] = codes[len(devices):]
            last = np.diff(daily_ud, append=-1) != 0
            # (levels typed from all the rows, as the groupby over them did)
            self.dev_major_ = pd.Series(newest[last].astype(m.dtype), name=major.name, index=pd.MultiIndex.from_arrays(
                [_index(actors)[daily_ud[last] // len(devices)], _index(devices)[daily_ud[last] % len(devices)]],
                names=["actor", "device"]))
        user_device, user_devices = pd.factorize(np.where(has_device, actor * len(device_names) + device, -1))
        dev_days = np.bincount(_distinct(user_device[has_device & dated], day[has_device & dated], n_day),
                               minlength=len(user_devices))
        familiar = (dev_days >= cfg["vouch_days"]) & (user_devices >= 0)
        self.devices_ = set(zip(actors[user_devices[familiar] // len(device_names)].tolist(),
                                device_names[user_devices[familiar] % len(device_names)].tolist()))
        own_device = familiar[user_device]
        # a stranger on the pair: a device the user never had, or an OAuth grant (what a takeover leaves behind)
        app = _text(h, "oauth_client")
        granted = (app != "").to_numpy()
        stranger = (has_device & ~own_device) | granted
        self.pairs_ = pd.DataFrame({
            "days": np.bincount(_distinct(pair[ok & dated], day[ok & dated], n_day), minlength=n_pair),
            "vouched": np.bincount(pair[own_device], minlength=n_pair) > 0,
            "stranger": np.bincount(pair[stranger], minlength=n_pair) > 0,
        }, index=pd.MultiIndex.from_arrays([_index(actors[pair_actor]), _index(networks[pair_net])],
                                           names=["actor", "network"]))
        # the user's fixed lines: an address block (IPv4 address, IPv6 /64) the user had on an earlier day; a
        # carrier's CGNAT hands out a new address nearly every time, so phones on the move rarely repeat one
        # keyed "actor\x1fblock" in order of first use (a lookup: no need to sort ~1e5 keys)
        held, held_keys = pd.factorize(actor[ok] * max(len(blocks), 1) + block[ok])
        held_actor, held_block = np.divmod(held_keys, max(len(blocks), 1))
        self.blocks_ = pd.Series(_first_day(held, len(held_keys), day[ok], days),
                                 index=_joined(actors, held_actor, blocks, held_block), name="day")
        # A dynamic home line gets a new address every few days; the ISP and the city stay. So in the user's home
        # city a new address on one of their steady lines also places them (not on a VPN / egress provider).
        egress = np.zeros(n_net, dtype=bool)
        egress[order] = nets["egress"].to_numpy()
        seen = np.flatnonzero(seen)  # (cut from all the pairs the steady test saw: levels typed as they were)
        first_used = pd.Series(_first_day(pair[okl], n_pair, day[okl], days)[seen], name="first", index=pd.MultiIndex
                               .from_arrays([_index(actors[pair_actor[seen]]), _index(networks[pair_net[seen]])],
                                            names=["actor", "network"]))
        self.home_lines_ = first_used[(steady & ~egress[pair_net])[seen]]
        self.apps_ = pd.Series(dtype="int64")
        if granted.any():
            app, apps = _codes(app[granted])
            self.apps_ = pd.Series(np.bincount(_distinct(app, actor[granted], len(actors)), minlength=len(apps)),
                                   index=_index(apps), name="actor")
        return self

    # -- scoring ---------------------------------------------------------------------------------------------------

    def score_samples(
        self,
        events_day: pd.DataFrame,
        *,
        profile_scores: pd.DataFrame,
        learning: pd.DataFrame | None,
        peaks: pd.DataFrame | None = None,
        forest_scores: pd.DataFrame | None = None,
        previous_events: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """One row per risky event (score >= min_score): SCORE_COLUMNS."""
        cfg = self.cfg_
        if events_day is None or len(events_day) == 0:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORE_COLUMNS})
        ev = events_day[events_day["actor"].notna()].copy()
        ev["event_time"] = pd.to_datetime(ev["event_time"]).astype("datetime64[ns]")
        ev = sort_by_time_and_id(ev).reset_index(drop=True)
        ev["event_id"] = ev["event_id"].astype(str).astype(object)  # object strings: see _isin
        ev["network"] = network_key(ev)
        ev["device"] = _text(ev, "ua_device_key")
        ev["device"] = ev["device"].where(~ev["device"].isin(["", "Other|Other|Other"]), "")
        ev["action_l"] = _text(ev, "action").str.lower()
        ev["outcome_s"] = _text(ev, "outcome")

        prior = _prior_days(profile_scores, ev)
        older = _older_versions(ev, previous_events)
        if older.any():
            # an older browser build than the user already runs is someone else's machine with the same family
            ev.loc[older, "device"] = ev.loc[older, "device"] + " v" + _text(ev.loc[older], "ua_browser_major")
        for f in PRIOR_FIELDS:
            ev[f"prior_{f}"] = prior.get(f, pd.Series(np.nan, index=ev.index))
        # ... unless that older machine is itself one the user has had for days (a second, stale computer)
        own_older = pd.Series([(a, d) in self.devices_ for a, d in zip(ev.loc[older, "actor"], ev.loc[older, "device"])],
                              index=ev.index[older], dtype=bool)
        ev.loc[own_older.index[~own_older.to_numpy()], "prior_ua_device_key"] = 0.0
        ev.loc[own_older.index[own_older.to_numpy()], "prior_ua_device_key"] = float(cfg["vouch_days"])
        # the network's familiarity: by ASN, else by organisation
        ev["net_days"] = ev["prior_asn"].where(ev["prior_asn"].notna(), ev["prior_asn_org"])

        state = {}
        if learning is not None and len(learning):
            state = dict(zip(learning["actor"].astype(str), learning["state"].astype(str)))
        ev["model_state"] = ev["actor"].map(lambda a: state.get(a, "learning"))

        campaign_ips, campaign_actors, campaign_reason = _campaigns(ev, peaks, cfg)
        jumps = _session_jumps(ev, previous_events)
        travel = _impossible_travel(ev, previous_events, self.networks_, cfg)
        self._presence = _home_presence(ev, previous_events, self.blocks_, self.networks_, self.home_lines_,
                                        self.home_city_)
        self._own_devices = _own_device_times(ev, previous_events, self.devices_, self.dev_major_)

        # Only (actor, network) pairs with something to tell get a story: an established user on an unfamiliar
        # network, or an org-level / physical / vendor signal (keeps a day of a large org fast).
        special = (
            ev["event_id"].isin(jumps.keys()) | ev["event_id"].isin(travel.keys())
            | ((ev["outcome_s"] == "success") & ev["ip"].astype(str).isin(campaign_ips))
            | ev["actor"].isin(campaign_actors)
            | (ev["vendor_suspicious"].fillna(False).astype(bool) if "vendor_suspicious" in ev else False)
        )
        forest_flagged = _forest_outliers(forest_scores)
        special |= ev["event_id"].isin(forest_flagged)
        established = ev["model_state"] == "established"
        unfamiliar = (~(ev["net_days"] >= cfg["familiar_days"]) | ev["prior_ua_device_key"].lt(cfg["familiar_days"])
                      | older) & established
        pair_keys = [ev["actor"], ev["network"]]
        candidate = (special | unfamiliar).groupby(pair_keys).transform("any")
        # failures alone are the org-level detectors' business (spray / stuffing peaks): no story (most of the
        # candidates of a day with a campaign are its targets, and a story costs a few row filters)
        candidate &= (ev["outcome_s"] != "failure").groupby(pair_keys).transform("any")
        # Per-event flags once for the day, and only the columns a story reads: filtering a wide frame by a large
        # dict for every (actor, network) pair was what made a big organisation's day slow.
        ev["_jump"] = ev["event_id"].isin(set(jumps))
        ev["_travel"] = ev["event_id"].isin(set(travel))
        ev["_campaign_ok"] = (ev["outcome_s"] == "success") & ev["ip"].astype(str).isin(set(campaign_ips))
        ev["_forest"] = ev["event_id"].isin(set(forest_flagged or ()))
        ev["_vendor"] = ev["vendor_suspicious"].fillna(False).astype(bool) if "vendor_suspicious" in ev else False
        ev["_oauth"] = _text(ev, "oauth_client") != ""
        story_cols = [c for c in STORY_COLUMNS if c in ev.columns]
        rows = []
        story_rows = ev.loc[candidate, story_cols]
        # Text columns as plain object columns in one block: each of a story's row filters is then one take instead
        # of one per Arrow-backed column (halves a 5,000-people day's scoring; same output).
        story_rows = pd.DataFrame({
            c: pd.Series(story_rows[c].to_numpy(dtype=object), index=story_rows.index, dtype=object)
            if story_rows[c].dtype.kind not in "biufMm" else story_rows[c]
            for c in story_cols
        })
        for (actor, net), g in story_rows.groupby(["actor", "network"], sort=False):
            story = self._story(actor, net, g, ev, campaign_ips, campaign_actors, campaign_reason, jumps, travel,
                                forest_flagged)
            if story is None:
                continue
            points, kinds, reasons, evidence = story
            established = g["model_state"].iloc[0] == "established"
            if not established:
                keep = [i for i, k in enumerate(kinds) if k not in NOVELTY_KINDS]
                points = [points[i] for i in keep]
                kinds = [kinds[i] for i in keep]
                reasons = [reasons[i] for i in keep]
            if not kinds:
                continue
            total = float(sum(points))
            score = 1.0 / (1.0 + math.exp(-(total - cfg["offset"])))
            if score < cfg["min_score"]:
                continue
            shown = [r for p, r in sorted(zip(points, reasons), key=lambda x: -x[0]) if p > 0 and r]
            first = g.iloc[0]
            context = {
                "country": _s(first.get("geo_country")), "city": _s(first.get("geo_city")),
                "asn": _s(first.get("asn")), "asn_org": _s(first.get("asn_org")),
                "ua_browser": _s(g["ua_browser"].replace("", np.nan).dropna().iloc[0]) if "ua_browser" in g and
                g["ua_browser"].replace("", np.nan).notna().any() else "",
                "ua_os": _s(g["ua_os"].replace("", np.nan).dropna().iloc[0]) if "ua_os" in g and
                g["ua_os"].replace("", np.nan).notna().any() else "",
                "points": round(total, 2),
            }
            pos_kinds = [k for p, k in zip(points, kinds) if p > 0]
            sel = g.loc[g["event_id"].isin(evidence)] if evidence is not None else g
            for r in sel.itertuples(index=False):
                rows.append({
                    "event_id": r.event_id, "actor": actor, "event_time": r.event_time, "ip": _s(r.ip),
                    "score": round(score, 4), "kinds": ",".join(dict.fromkeys(pos_kinds)),
                    "reasons": json.dumps(shown), "model_state": "established" if established else "learning",
                    "context": json.dumps(context),
                })
        if not rows:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORE_COLUMNS})
        out = pd.DataFrame(rows, columns=SCORE_COLUMNS)
        out["event_time"] = out["event_time"].astype("datetime64[ns]")
        return out

    def _story(self, actor, net, g, ev, campaign_ips, campaign_actors, campaign_reason, jumps, travel, forest):
        """(points, kinds, reasons, evidence event ids | None) of one actor on one network for the day."""
        cfg, w = self.cfg_, self.cfg_["weights"]
        # score_samples passes only pairs with an attempt that did not fail (failures alone are the org-level
        # detectors' business). A row filter costs ~0.4 ms on a story's frame: flags are tested before rows are cut.
        points, kinds, reasons = [], [], []

        def add(kind, reason):
            points.append(w[kind])
            kinds.append(kind)
            reasons.append(reason)

        first = g.iloc[0]
        org = _s(first.get("asn_org"))
        asn = _s(first.get("asn"))
        country = _s(first.get("geo_country"))
        label = f"AS{asn} ({org})" if asn else (org or _s(first.get("ip")))
        where = f" in {country}" if country else ""
        net_days = g["net_days"].iloc[0]
        familiar = pd.notna(net_days) and net_days >= cfg["familiar_days"]
        pair = (actor, net)
        seen_before = len(self.pairs_) and pair in self.pairs_.index
        if seen_before:  # the history window knows better: failed attempts (campaign targets) do not count
            familiar = int(self.pairs_.at[pair, "days"]) >= cfg["familiar_days"]
            net_days = int(self.pairs_.at[pair, "days"])
        if not familiar and seen_before and bool(self.pairs_.at[pair, "vouched"]):
            familiar = True  # e.g. day 2 of a trip: the user's laptop used the hotel network yesterday
        # Abroad: outside the user's home country (day 2 of a trip included), else a country never seen for the user.
        cdays = g["prior_geo_country"].iloc[0]
        home_country = self.home_country_.get(actor) if len(self.home_country_) else None
        abroad = (country != home_country) if home_country and country else not (pd.notna(cdays) and cdays > 0)
        came_back = pd.notna(net_days) and net_days > 0
        risky = bool(seen_before and self.pairs_.at[pair, "stranger"])
        # A return abroad after visits that brought no stranger reads like the first visit (day 2 of a trip).
        harmless_return = came_back and seen_before and not risky and abroad
        if not familiar and seen_before and net_days > 0 and not harmless_return:
            add("unvouched_return", f"{label} was first used by this account {int(self.pairs_.at[pair, 'days'])} "
                "day(s) before, never from the user's own devices")
            if risky:
                add("risky_return", f"on its earlier day(s) {label} brought this account a device the user never had "
                    "or an OAuth grant")
        if not familiar:
            add("new_network", f"activity from {label}{where}: seen for this user on {int(net_days or 0)} earlier "
                "day(s)")
            users = int(self.networks_["users"].get(net, 0)) if len(self.networks_) else 0
            others = max(0, users - int(pd.notna(net_days) and net_days > 0))  # the user may be among them
            if self.active_users_:
                if others <= cfg["rare_org_users"]:
                    add("rare_in_org", f"{others} of {self.active_users_} colleagues used {label} in the history window")
                elif others >= cfg["common_org_share"] * self.active_users_:
                    add("common_in_org", f"{others} of {self.active_users_} colleagues use {label}")
            cdays = g["prior_geo_country"].iloc[0]
            if country and (pd.isna(cdays) or cdays == 0):
                add("new_country", f"country {country} never seen for this user")
            # (masks over the story's rows as numpy arrays: a pandas row filter costs ~0.4 ms, ~100 stories a day)
            device = g["device"].to_numpy(dtype=object)
            device_days = g["prior_ua_device_key"].fillna(0).to_numpy()
            has_device = device != ""
            vouching = device[has_device & (device_days >= cfg["vouch_days"])]
            travel_hit = g["_travel"].any()
            if len(vouching) and not travel_hit:
                add("vouched", f"the user's own device {vouching[0]} is on this network too")
            elif len(vouching):  # the user's own machine cannot be on both ends of an impossible trip
                add("unvouched", f"a device like the user's {vouching[0]} is on this network, but "
                    "the trip here is impossible")
            else:
                add("unvouched", "none of the user's known devices used this network")
            new_device = has_device & (device_days < cfg["familiar_days"])
            if new_device.any():
                names = ", ".join(list(dict.fromkeys(device[new_device]))[:2])
                add("new_device", f"device {names} new for this user")
                if not len(vouching) and "common_in_org" in kinds:
                    # Colleagues on the network explain the user being there, not a device the user never had
                    # that none of their own devices accompany.
                    i = kinds.index("common_in_org")
                    del points[i], kinds[i], reasons[i]
                downloads = int((new_device & g["action_l"].isin(cfg["download_actions"]).to_numpy()).sum())
                if downloads >= 20:
                    add("mass_downloads", f"{downloads} downloads by the new device")
                elif downloads >= 3:
                    add("downloads", f"{downloads} downloads by the new device")
            odd = np.flatnonzero(g["prior_hour_bucket"].fillna(0).to_numpy() == 0)
            if len(odd) and not abroad:  # abroad, other hours are the time zone's doing
                h = int(g["event_time"].iloc[odd[0]].hour)
                add("odd_hours", f"active at {h:02d}h UTC, an hour bucket never seen for this user")
            # rare OAuth grants on the unfamiliar network
            grants = g["_oauth"].to_numpy(dtype=bool)
            for app in dict.fromkeys(g["oauth_client"].astype(str).to_numpy()[grants]) if grants.any() else ():
                n_users = int(self.apps_.get(app, 0)) if len(self.apps_) else 0
                if n_users <= cfg["rare_app_users"] and (len(self.apps_) or self.active_users_):
                    add("rare_oauth", f"OAuth grant to '{app}' ({n_users} colleagues granted it) from {label}")
                    break
        else:  # a familiar network: only a new device at hours the user never works tells a story
            device = g["device"].to_numpy(dtype=object)
            new_device = (device != "") & (g["prior_ua_device_key"].fillna(0).to_numpy() < cfg["familiar_days"])
            hour_days = g["prior_hour_bucket"].fillna(0).to_numpy()
            night = np.flatnonzero(new_device & (hour_days <= cfg["rare_hour_days"]))
            if len(night):
                i = night[0]
                seen = int(hour_days[i])
                add("new_device", f"device {device[i]} new for this user, on {label}")
                add("odd_hours", f"active at {int(g['event_time'].iloc[i].hour):02d}h UTC, an hour bucket "
                    + (f"seen on only {seen} earlier day(s)" if seen else "never seen") + " for this user")
                downloads = int((new_device & g["action_l"].isin(cfg["download_actions"]).to_numpy()).sum())
                if downloads >= 3:
                    add("downloads", f"{downloads} downloads by the new device")
        # org-level / physical / vendor signals, on any network
        ok = _rows(g, g["_campaign_ok"])
        if len(ok) or (actor in campaign_actors and not familiar):
            ip = ok["ip"].iloc[0] if len(ok) else _s(first.get("ip"))
            add("campaign_success", f"successful sign-in from {ip}: {campaign_reason.get(ip, 'an IP in a failing-login campaign')}")
            # Commercial VPN exits are shared: attackers rent the same ones the user's own devices use daily. A
            # sign-in there that brings no stranger (a new device or an OAuth grant from that address) is the user's.
            from_ip = g[g["ip"].astype(str) == str(ip)]
            stranger = ((from_ip["device"] != "") & (from_ip["prior_ua_device_key"].fillna(0) < cfg["vouch_days"])).any() \
                or from_ip["_oauth"].any() or from_ip["action_l"].eq("authorize").any()
            if familiar and seen_before and bool(self.pairs_.at[pair, "vouched"]) and not stranger:
                add("own_network", f"the user's own devices have used {label} on {net_days} earlier day(s) and "
                    f"nothing new came from {ip}: a shared VPN or proxy exit")
        j = _rows(g, g["_jump"])
        if len(j):
            add("session_jump", jumps[j["event_id"].iloc[0]])
        t = _rows(g, g["_travel"])
        if len(t) and not familiar:
            add("impossible_travel", travel[t["event_id"].iloc[0]])
        if not familiar:
            # Travel explains a new network abroad (a first visit, or a harmless return); at home, another local
            # network is not a trip.
            self._where(actor, g, add, skip_presence=bool(len(t)),
                        may_travel=abroad and (not came_back or harmless_return))
        vend = _rows(g, g["_vendor"])
        if len(vend):
            why = _s(vend["vendor_reasons"].iloc[0]) if "vendor_reasons" in vend else ""
            add("vendor_flag", f"vendor flagged the activity{': ' + why if why else ''} ({len(vend)} event(s))")
        if g["_forest"].any():
            add("forest", "the user's isolation forest finds these events unusual")
        if not any(p > 0 for p in points):
            return None
        return points, kinds, reasons, None


    def _where(self, actor, g, add, skip_presence: bool, may_travel: bool) -> None:
        """Where the user physically was: own fixed network in use too far away (someone else is on this network),
        or none in use around it (consistent with the user travelling)."""
        cfg = self.cfg_
        if "geo_lat" not in g:
            return
        # (numpy masks, not pandas row filters: this runs for most stories)
        lat, lon = g["geo_lat"].to_numpy(dtype=float), g["geo_lon"].to_numpy(dtype=float)
        located = ~np.isnan(lat) & ~np.isnan(lon)
        if not located.any():
            return
        lat, lon, times = lat[located], lon[located], g["event_time"].to_numpy(dtype="datetime64[ns]")[located]
        home = self._presence.get(actor)
        win = pd.Timedelta(hours=cfg["presence_window_hours"]).to_timedelta64()
        t0, t1 = times.min() - win, times.max() + win
        near = None
        if home is not None:
            home_times = home["event_time"].to_numpy(dtype="datetime64[ns]")
            nearby = (home_times >= t0) & (home_times <= t1) & (home["network"].to_numpy(dtype=object)
                                                                 != g["network"].iloc[0])
            near = home[nearby] if nearby.any() else None
        if near is None:
            # Travel explains the network only where the story allows it (``may_travel``) and without physical
            # evidence against it. Travelling, the user's own laptop or phone usually keeps working elsewhere
            # (hotel, roaming carrier): that is stronger evidence than mere silence.
            if skip_presence or not may_travel:
                return
            own = self._own_devices.get(actor)
            own_times = own["t"].to_numpy(dtype="datetime64[ns]") if own is not None else None
            if own is not None and ((own_times >= t0) & (own_times <= t1)).any():
                add("away_from_home", f"the user's own devices were active but none of their fixed networks within "
                    f"{cfg['presence_window_hours']:.0f} h (consistent with travel)")
            else:
                add("fixed_lines_quiet", f"none of the user's fixed networks was in use within "
                    f"{cfg['presence_window_hours']:.0f} h (consistent with travel)")
            return
        if skip_presence:
            return
        km = haversine_km(lat[:, None], lon[:, None],
                          near["geo_lat"].to_numpy()[None, :], near["geo_lon"].to_numpy()[None, :])
        gap = np.abs((times[:, None] - near["event_time"].to_numpy(dtype="datetime64[ns]")[None, :])
                     / np.timedelta64(1, "h"))
        need = km / cfg["flight_kmh"] + cfg["flight_overhead_hours"]
        hit = (km >= cfg["impossible_min_km"]) & (gap < need)
        if hit.any():
            i, j = np.unravel_index(np.argmin(np.where(hit, gap, np.inf)), hit.shape)
            h = near.iloc[j]
            add("home_presence", f"the user's own network {h['label']} in {h['where']} was in use "
                f"{gap[i, j] * 60:.0f} min apart, {km[i, j]:,.0f} km away (a trip takes >= {need[i, j]:.1f} h)")


def _own_device_times(ev, previous, devices: set, newest: pd.Series) -> "_ByActor | dict":
    """actor -> times ``t`` of events (today and the day before) by a device the user has had on several days."""
    if not devices:
        return {}
    frames = []
    for f in ([previous] if previous is not None and len(previous) else []) + [ev]:
        dev = _text(f, "ua_device_key")
        pairs = pd.MultiIndex.from_arrays([f["actor"].astype(str), dev])
        keep = pairs.isin(list(devices)) & (dev != "").to_numpy()
        if len(newest) and "ua_browser_major" in f:  # not an older build than the user runs
            keep &= ~(_numbers(f["ua_browser_major"]).to_numpy() < newest.reindex(pairs).to_numpy())
        frames.append(pd.DataFrame({"actor": f["actor"].astype(str).to_numpy()[keep],
                                    "t": pd.to_datetime(f["event_time"]).astype("datetime64[ns]").to_numpy()[keep]}))
    return _ByActor(pd.concat(frames, ignore_index=True), "t")


def _address_block(ips: pd.Series) -> pd.Series:
    """IPv4 address, or the /64 of an IPv6 address (privacy extensions change the rest daily)."""
    ips = ips.astype(str)
    v6 = ips.str.contains(":", regex=False)
    if not v6.any():
        return ips
    out = ips.copy()
    distinct = pd.unique(ips[v6].to_numpy(dtype=object))  # parsed once per address
    nets = {x: _v6_block(x) for x in distinct}
    out[v6] = ips[v6].map(nets)
    return out


def _codes(values: pd.Series, sort: bool = True) -> tuple[np.ndarray, pd.Index]:
    """Codes of the values (missing: -1) and the distinct values, sorted: a groupby on the codes comes out in the
    order of the values. (Results take their labels through :func:`_index`.)"""
    codes, labels = pd.factorize(values, sort=sort)
    return codes, labels.rename(values.name)


def _index(labels: pd.Index) -> pd.Index:
    """Labels as a groupby on the values gives them: it infers the dtype of object keys (strings: ``str``)."""
    return pd.Index(labels.to_numpy(), name=labels.name) if labels.dtype == object else labels


def _text_codes(frame: pd.DataFrame, col: str, sort: bool = True) -> tuple[np.ndarray, pd.Index]:
    """``_codes(_text(frame, col))``, the text made once per distinct value."""
    if col not in frame:
        return np.zeros(len(frame), dtype=np.intp), pd.Index([""], dtype=object)
    codes, uniques = pd.factorize(frame[col], sort=sort, use_na_sentinel=False)
    text = _text(pd.DataFrame({col: uniques}), col)
    if text.dtype == uniques.dtype and (text.array == uniques.array).all():  # nothing stripped or filled
        return codes, pd.Index(text)
    text_codes, labels = _codes(text, sort=sort)
    return text_codes[codes], labels


def _blocks(ip: np.ndarray, ips: pd.Index) -> tuple[np.ndarray, pd.Index]:
    """The address block of each address code: codes and texts (:func:`_address_block` once per distinct IPv6
    address; an IPv4 address is its own block)."""
    v6 = np.asarray(ips.str.contains(":", regex=False), dtype=bool)
    if not v6.any():
        return ip, ips
    block = np.arange(len(ips))
    net6, nets6 = pd.factorize(_address_block(pd.Series(ips[v6])))
    block[v6] = len(ips) + net6
    return block[ip], ips.append(nets6)


def _distinct(group: np.ndarray, value: np.ndarray, n_values: int) -> np.ndarray:
    """The group of each distinct (group, value) pair (codes >= 0): np.bincount of it counts distinct values."""
    return pd.unique(group.astype(np.int64) * max(n_values, 1) + value) // max(n_values, 1)


def _mean_distinct(group: np.ndarray, value: np.ndarray, n_values: int, network_of, n_nets: int,
                   fill: float) -> np.ndarray:
    """Per network: the mean over its groups of their numbers of distinct values (a groupby nunique, then a mean per
    network: the same float, the sums being integers); ``fill`` for networks without groups."""
    values = np.bincount(network_of(_distinct(group, value, n_values)), minlength=n_nets)
    groups = np.bincount(network_of(pd.unique(group)), minlength=n_nets)
    return np.divide(values, groups, out=np.full(n_nets, fill), where=groups > 0)


def _most(actor: np.ndarray, value: np.ndarray, counts: np.ndarray, n_actors: int, n_values: int) -> np.ndarray:
    """actor code -> the value with the largest sum of counts (ties: the first value), -1 for actors without."""
    group, keys = pd.factorize(actor.astype(np.int64) * max(n_values, 1) + value)
    sums = np.zeros(len(keys), dtype=np.result_type(counts.dtype, np.int64))
    np.add.at(sums, group, counts)
    who, what = np.divmod(keys, max(n_values, 1))
    best = np.lexsort((what, -sums, who))
    best = best[np.diff(who[best], prepend=-1) != 0]
    out = np.full(n_actors, -1)
    out[who[best]] = what[best]
    return out


def _first_day(group: np.ndarray, n_groups: int, day: np.ndarray, days: pd.Index) -> np.ndarray:
    """The earliest day of each group (``day``: codes into the sorted ``days``, -1 for NaT), NaT where none."""
    first = np.full(n_groups, len(days))
    np.minimum.at(first, group, np.where(day >= 0, day, len(days)))
    return days.take(np.where(first < len(days), first, -1), allow_fill=True).to_numpy()


def _joined(first: pd.Index, i: np.ndarray, second: pd.Index, j: np.ndarray) -> pd.Index:
    """``pd.Index(first[i].astype(str) + "\\x1f" + second[j])`` of Python strings (dtype str), joined in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(i):
        return pd.Index(np.empty(0, dtype=object))
    a, b = (pc.take(pa.array(labels.astype(str).array, type=pa.large_string()), k)
            for labels, k in ((first, i), (second, j)))
    return pd.Index(pd.array(pc.binary_join_element_wise(a, b, pa.scalar("\x1f", pa.large_string())), dtype="str"))


_ZERO_HOST = bytes(8)


@functools.lru_cache(maxsize=1 << 18)
def _v6_block(address: str) -> str:
    # Cached across calls: consecutive days of a range run fit on windows that share all but one day.
    # The C socket functions give the text `ipaddress` gives (RFC 5952) at ~1/20 of its cost; whatever they
    # cannot parse (a zone index, garbage) goes the ipaddress way, errors included.
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, address)[:8] + _ZERO_HOST) + "/64"
    except (OSError, ValueError):
        return str(ipaddress.ip_network(f"{address}/64", strict=False)) if address else address


def _home_presence(ev, previous, blocks: pd.Series, networks, home_lines: pd.Series | None = None,
                   home_city: pd.Series | None = None) -> dict:
    """actor -> located, successful events from the user's fixed lines, today and the day before: where the user
    physically was. A fixed line is an address block the user had on an earlier day (not a VPN / egress provider),
    or a new dynamic address in the user's home city on a network where the user kept a fixed line before."""
    if blocks is None or len(blocks) == 0:
        return {}
    cols = ["actor", "event_time", "network", "geo_lat", "geo_lon", "geo_city", "geo_country", "asn", "asn_org"]
    frames = []
    for f in ([previous] if previous is not None and len(previous) else []) + [ev]:
        if "geo_lat" not in f:
            continue
        # only the columns read below: each filter copies every column it keeps (a day's events are ~50 wide)
        f = f[[c for c in dict.fromkeys(cols + ["ip", "outcome", "ip_internal"]) if c in f and c != "network"]]
        f = f[f["actor"].notna() & f["geo_lat"].notna() & f["geo_lon"].notna()]
        if "outcome" in f:
            f = f[_text(f, "outcome") != "failure"]
        if "ip_internal" in f:
            f = f[~f["ip_internal"].fillna(False).astype(bool)]
        f = f.assign(network=network_key(f), event_time=pd.to_datetime(f["event_time"]).astype("datetime64[ns]"),
                     block=_address_block(_text(f, "ip")))
        frames.append(f[[c for c in cols + ["block"] if c in f]])
    if not frames:
        return {}
    allv = pd.concat(frames, ignore_index=True)
    first = blocks.reindex((allv["actor"].astype(str) + "\x1f" + allv["block"]).to_numpy()).to_numpy()
    day = allv["event_time"].dt.normalize().to_numpy()
    keep = pd.Series(first < day, index=allv.index)  # NaT: False
    if home_lines is not None and len(home_lines) and home_city is not None and len(home_city):
        line = home_lines.reindex(pd.MultiIndex.from_arrays([allv["actor"].astype(str), allv["network"]])).to_numpy()
        at_home = (_text(allv, "geo_city") == allv["actor"].astype(str).map(home_city).fillna("")).to_numpy()
        keep |= (line < day) & at_home & (_text(allv, "geo_city") != "").to_numpy()
    if len(networks) and "egress" in networks:
        keep &= ~allv["network"].isin(set(networks.index[networks["egress"].astype(bool)]))
    allv = allv[keep]
    if allv.empty:
        return {}
    asn = _text(allv, "asn")
    allv = allv.assign(label=("AS" + asn).where(asn != "", _text(allv, "asn_org")) + " (" + _text(allv, "asn_org") + ")",
                       where=_text(allv, "geo_city").where(_text(allv, "geo_city") != "", _text(allv, "geo_country")))
    return _ByActor(allv.assign(actor=allv["actor"].astype(str)), "event_time")


class _ByActor:
    """actor -> that actor's rows sorted by `time` (the order a per-actor sort gives), cut out only when asked for.

    Thousands of actors have rows on a large organisation's day, but only the few stories that ask need theirs:
    one sort of the whole frame instead of one groupby slice and sort per actor."""

    def __init__(self, frame: pd.DataFrame, time: str) -> None:
        frame = frame.sort_values(["actor", time], kind="stable").reset_index(drop=True)
        # object strings: a story filters its actor's rows; Arrow columns make every filter a take per column
        frame = frame.astype({c: object for c in frame.columns if isinstance(frame[c].dtype, pd.StringDtype)})
        actors = frame["actor"].to_numpy(dtype=object)
        starts = np.flatnonzero(np.r_[True, actors[1:] != actors[:-1]]) if len(frame) else np.array([], dtype=int)
        ends = np.r_[starts[1:], len(frame)]
        self._frame = frame
        self._span = dict(zip(actors[starts].tolist(), zip(starts.tolist(), ends.tolist())))

    def get(self, actor, default=None):
        span = self._span.get(actor)
        return default if span is None else self._frame.iloc[span[0]:span[1]]


def _texts(values: pd.Series) -> set:
    """The set of ``values.astype(str)``, without iterating an Arrow array value by value."""
    return set(values.astype(str).to_numpy(dtype=object).tolist())


def _rows(frame: pd.DataFrame, mask: pd.Series) -> pd.DataFrame:
    """``frame[mask]``, without the cost of filtering when no row is selected (most flags are off in a story)."""
    return frame[mask] if mask.to_numpy().any() else frame.iloc[:0]


def _isin(values: pd.Series, wanted: set) -> pd.Series:
    """``values.isin(wanted)`` through object strings: pandas' Arrow-string ``isin`` converts every member of the
    set one by one (a second for a day's event ids at 5,000 people)."""
    return values.astype(object).isin(wanted)


def _s(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _older_versions(ev: pd.DataFrame, previous: pd.DataFrame | None) -> pd.Series:
    """Events whose browser major version is below the newest the same user ran on that device key before."""
    none = pd.Series(False, index=ev.index)
    if previous is None or len(previous) == 0 or "ua_browser_major" not in ev or "ua_browser_major" not in previous:
        return none
    prev = pd.DataFrame({"actor": previous["actor"].astype(str).array,
                         "device": _text(previous, "ua_device_key").array,
                         "major": _numbers(previous["ua_browser_major"]).to_numpy()})
    newest = prev.dropna(subset=["major"]).groupby(["actor", "device"])["major"].max()
    if newest.empty:
        return none
    key = pd.MultiIndex.from_arrays([ev["actor"].astype(str), _text(ev, "ua_device_key")])
    known = newest.reindex(key).to_numpy()
    major = _numbers(ev["ua_browser_major"]).to_numpy()
    return pd.Series((major < known) & (ev["device"] != "").to_numpy(), index=ev.index)


def _forest_outliers(forest_scores: pd.DataFrame | None) -> set[str]:
    """Event ids the per-user forest calls outliers: ``forest_score < threshold`` (sklearn: lower = odder), or an
    ``outlier`` / ``anomalous`` flag column."""
    if forest_scores is None or len(forest_scores) == 0 or "event_id" not in forest_scores:
        return set()
    f = forest_scores
    if "forest_score" in f and "threshold" in f:
        flag = pd.to_numeric(f["forest_score"], errors="coerce") < pd.to_numeric(f["threshold"], errors="coerce")
    elif "score" in f and "threshold" in f:
        flag = pd.to_numeric(f["score"], errors="coerce") < pd.to_numeric(f["threshold"], errors="coerce")
    else:
        col = "outlier" if "outlier" in f else ("anomalous" if "anomalous" in f else None)
        if col is None:
            return set()
        flag = f[col].fillna(False).astype(bool)
    return set(f.loc[flag.fillna(False).to_numpy(), "event_id"].astype(str))


def _prior_days(profile_scores: pd.DataFrame | None, ev: pd.DataFrame) -> dict[str, pd.Series]:
    """Per field: for each event, on how many earlier days the user had the event's value (NaN: no value).

    `ev` is in (event_time, event_id) order with a 0..n-1 index (as ``score_samples`` prepares it)."""
    out: dict[str, pd.Series] = {}
    if profile_scores is None or len(profile_scores) == 0:
        return out
    # each row's event in ev (-1: not one of the day's events), one hash lookup for the filter and the placing
    pos = pd.Index(ev["event_id"]).get_indexer(profile_scores["event_id"].astype(str))
    ps = profile_scores.loc[pos >= 0, ["actor", "event_time", "event_id", "field", "value", "days_seen"]]
    pos = pos[pos >= 0]
    # In (event_time, event_id) order. ev is in that order already, so when the rows carry their event's time
    # (they do: the profiles step writes them from the same events) the positions sort them, stably, as a sort on
    # the two columns would, without comparing ~250 k id strings.
    times = pd.to_datetime(ps["event_time"])
    times = (times.dt.tz_convert(None) if times.dt.tz is not None else times).astype("datetime64[ns]").to_numpy()
    if np.array_equal(times, ev["event_time"].to_numpy()[pos]):
        order = np.argsort(pos, kind="stable")
    else:
        order = np.lexsort((ps["event_id"].astype(str).to_numpy(dtype=object), times))
    ps, pos = ps.iloc[order], pos[order]
    # days_seen at the value's first row of the day counts earlier days only
    prior = ps.groupby(["actor", "field", "value"], sort=False)["days_seen"].transform("first").to_numpy(dtype=float)
    fields, names = pd.factorize(ps["field"])
    for k, field in enumerate(names):
        rows = np.flatnonzero(fields == k)
        # an event's first row of the field
        at, first = np.unique(pos[rows], return_index=True)
        s = np.full(len(ev), np.nan)
        s[at] = prior[rows[first]]
        out[str(field)] = pd.Series(s, index=ev.index)
    return out


def _campaigns(ev: pd.DataFrame, peaks: pd.DataFrame | None, cfg: dict):
    """IPs failing for many accounts today (from the events and the spray / stuffing peaks), actors the peaks name."""
    ips: set[str] = set()
    reason: dict[str, str] = {}
    actors: set[str] = set()
    # only the columns read here: each IP's group is taken from this frame (a day's events are ~50 columns wide)
    fails = ev.loc[ev["outcome_s"] == "failure", ["ip", "actor", "event_time"]]
    if len(fails):
        per_ip = fails.groupby(fails["ip"].astype(str))
        accounts = per_ip["actor"].nunique()
        ok = ev.loc[ev["outcome_s"] == "success", ["ip", "actor"]]
        ok_pairs = set(zip(ok["ip"].astype(str).to_numpy(dtype=object).tolist(), ok["actor"].to_numpy(dtype=object).tolist()))
        for ip, n in accounts[accounts >= cfg["campaign_min_accounts"]].items():
            f = per_ip.get_group(ip)
            # people who then sign in from the same address (a forced password change at the office) are not
            # a campaign: in a spray or stuffing run most targeted accounts never succeed
            recovered = sum((ip, a) in ok_pairs for a in f["actor"].unique()) / n
            if recovered > cfg["campaign_max_recovered"]:
                continue
            span = (f["event_time"].max() - f["event_time"].min()).total_seconds() / 60
            ips.add(ip)
            reason[ip] = f"{n} accounts failed from {ip} in {span:.0f} min today"
    if peaks is not None and len(peaks) and "kind" in peaks:
        for p in peaks[peaks["kind"].isin(["password_spray", "credential_stuffing"])].itertuples(index=False):
            try:
                top_ips = [x[0] for x in json.loads(p.top_ips or "[]")]
            except (TypeError, ValueError):
                top_ips = []
            for ip in top_ips:
                ips.add(str(ip))
                reason.setdefault(str(ip), f"{p.kind.replace('_', ' ')}: {p.reason}")
            if p.kind == "credential_stuffing" and p.actor and p.actor != "*":
                actors.update(a for a in str(p.actor).split(",") if a)
    return ips, actors, reason


def _session_jumps(ev: pd.DataFrame, previous: pd.DataFrame | None) -> dict[str, str]:
    """event_id -> reason, for Slack session ids that move to a new network *and* a new device mid-session."""
    cols = ["event_id", "actor", "event_time", "session_id", "network", "device", "ip"]
    today = ev.assign(session_id=_text(ev, "session_id"))[cols]
    frames = [today]
    live = _texts(today["session_id"]) - {""}
    if not live:
        return {}
    if previous is not None and len(previous):
        p = previous[_isin(_text(previous, "session_id"), live).to_numpy()].copy()
        p["network"] = network_key(p)
        p["device"] = _text(p, "ua_device_key")
        p["session_id"] = _text(p, "session_id")
        p["event_id"] = p["event_id"].astype(str)
        p["event_time"] = pd.to_datetime(p["event_time"]).astype("datetime64[ns]")
        frames.insert(0, p[cols])
    allv = pd.concat(frames, ignore_index=True)
    allv = sort_by_time_and_id(allv[(allv["session_id"] != "") & (allv["device"] != "")])
    if allv.empty:
        return {}
    sess = allv["actor"].astype(str) + "\x1f" + allv["session_id"].astype(str)
    # a jump: a row that is neither the session's first, nor on a network or device the session had before
    later = sess.duplicated()
    new_net = ~(sess + "\x1f" + allv["network"].astype(str)).duplicated()
    new_dev = ~(sess + "\x1f" + allv["device"].astype(str)).duplicated()
    hit = allv[later & new_net & new_dev]  # (few rows: today's are kept below)
    hit = hit[_isin(hit["event_id"], set(today["event_id"]))] if len(hit) else hit
    if hit.empty:
        return {}
    origin = allv.assign(sess=sess).drop_duplicates("sess").set_index("sess")
    out: dict[str, str] = {}
    for key, r in zip(sess[hit.index], hit.itertuples(index=False)):
        o = origin.loc[key]
        out[r.event_id] = (f"Slack session {r.session_id} started on {o['device']} at {o['ip']} "
                           f"({o['event_time']:%Y-%m-%d %H:%M}) jumped to {r.device} at {r.ip}")
    return out


def _impossible_travel(ev: pd.DataFrame, previous: pd.DataFrame | None, networks: pd.DataFrame, cfg: dict) -> dict[str, str]:
    """event_id -> reason, for events too far from the user's previous located event to have travelled there."""
    cols = ["event_id", "actor", "event_time", "network", "geo_lat", "geo_lon", "geo_city", "geo_country", "ip"]
    frames = []
    for f in ([previous] if previous is not None and len(previous) else []) + [ev]:
        # only the columns read here (and by network_key): the filter and the copy take every column they keep
        f = f[[c for c in dict.fromkeys(cols + ["asn", "asn_org", "outcome", "ip_internal"]) if c in f and c != "network"]]
        if "outcome" in f:  # a failed attempt (someone guessing the password) does not place the user anywhere
            f = f[_text(f, "outcome") != "failure"]
        f = f.copy()
        f["network"] = network_key(f)
        for c in cols:
            if c not in f:
                f[c] = np.nan
        f["event_id"] = f["event_id"].astype(str)
        f["event_time"] = pd.to_datetime(f["event_time"]).astype("datetime64[ns]")
        frames.append(f[cols + (["ip_internal"] if "ip_internal" in f else [])])
    allv = pd.concat(frames, ignore_index=True).drop_duplicates("event_id")
    allv = allv[allv["geo_lat"].notna() & allv["geo_lon"].notna()]
    if "ip_internal" in allv:
        allv = allv[~allv["ip_internal"].fillna(False).astype(bool)]
    if len(networks):
        roaming = set(networks.index[networks["roaming"].astype(bool)])
        allv = allv[~allv["network"].isin(roaming)]
    allv = allv.sort_values(["actor", "event_time", "event_id"], kind="stable")
    prev = allv.groupby("actor", sort=False).shift()
    km = haversine_km(prev["geo_lat"], prev["geo_lon"], allv["geo_lat"], allv["geo_lon"])
    hours = (allv["event_time"] - prev["event_time"]).dt.total_seconds().to_numpy() / 3600.0
    speed = km / np.maximum(hours, 1.0 / 60)
    hit = (km >= cfg["impossible_min_km"]) & (speed >= cfg["impossible_speed_kmh"]) & (prev["network"] != allv["network"]).to_numpy()
    idx = np.flatnonzero(np.asarray(hit))
    if len(idx):  # (few: the set of the day's ids only then)
        idx = idx[_isin(allv["event_id"].iloc[idx], _texts(ev["event_id"])).to_numpy()]
    # Rows as plain dicts, only for the hits: positional row access on the whole frame was the cost at scale.
    km, hours, speed = np.asarray(km)[idx], np.asarray(hours)[idx], np.asarray(speed)[idx]
    out = {}
    for r, p, k, h, v in zip(allv.iloc[idx].to_dict("records"), prev.iloc[idx].to_dict("records"), km, hours, speed):
        out[r["event_id"]] = (
            f"{k:,.0f} km from {_s(p['geo_city']) or _s(p['geo_country'])} ({_s(p['ip'])}) to "
            f"{_s(r['geo_city']) or _s(r['geo_country'])} ({_s(r['ip'])}) in {h * 60:.0f} min "
            f"({v:,.0f} km/h)"
        )
    return out


# In a helper process that fits the scorer ahead of the day being scored (``fit_window``): partition day -> that
# partition's folded history, for the partitions of the current window only.
_WINDOW_FOLDS: dict = {}


def fit_window(days: list, new_folds: dict, history: pd.DataFrame | None = None) -> RiskScorer:
    """``RiskScorer().fit`` on the folded history of the partitions ``days``, for a long-lived helper process.

    The helper keeps each partition's fold (:func:`history_sql` ``by_partition``) while the window still covers
    it, so the caller sends only the partitions it has not sent yet (``new_folds``: day -> fold): one day's fold
    a day instead of the whole window's. The window's history is the folds in day order, as the caller would
    concatenate them. ``history`` given instead is fitted as it is (and the kept folds are dropped)."""
    if history is not None:
        _WINDOW_FOLDS.clear()
        return RiskScorer().fit(history)
    _WINDOW_FOLDS.update(new_folds)
    wanted = set(days)
    for d in [d for d in _WINDOW_FOLDS if d not in wanted]:
        del _WINDOW_FOLDS[d]
    missing = [d for d in days if d not in _WINDOW_FOLDS]
    if missing:  # (the caller's record of what was sent and this process's folds went apart)
        raise RuntimeError(f"fit_window: no folded history kept for partition(s) {missing[:3]}")
    return RiskScorer().fit(pd.concat([_WINDOW_FOLDS[d] for d in days], ignore_index=True) if days else None)
