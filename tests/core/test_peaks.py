"""Seasonal peaks on small generated audit-event frames."""

from __future__ import annotations

import datetime as dt
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from watch_pipeline.core import peaks as pk

START = dt.date(2026, 9, 1)  # a Tuesday
N_USERS = 60
ISP = "Comcast Cable Communications, LLC"


def _user(i: int) -> str:
    return f"user{i:02d}@example.com"


def _home_ip(i: int) -> str:
    return f"73.1.{i // 250}.{i % 250 + 1}"


def _ev(day, minute, app, action, outcome, actor, ip, asn_org=ISP, target=""):
    t = pd.Timestamp(day) + pd.Timedelta(minutes=int(minute))
    return {
        "event_id": f"{actor}-{ip}-{t.value}-{action}-{np.random.random()}",
        "partition_date": day,
        "event_time": t,
        "source": "google",
        "app": app,
        "action": action,
        "outcome": outcome,
        "actor": actor,
        "ip": ip,
        "asn": 7922 if asn_org == ISP else 14061,
        "asn_org": asn_org,
        "target": target,
    }


def normal_day(day: dt.date, seed: int) -> list[dict]:
    """Working-day logins, a few typos and downloads per user; weekends are quiet."""
    rng = np.random.default_rng(seed)
    weekend = day.weekday() >= 5
    rows = []
    for i in range(N_USERS):
        if rng.random() < (0.15 if weekend else 0.9):
            for _ in range(rng.integers(1, 3)):
                m = rng.integers(7 * 60, 19 * 60)
                if rng.random() < 0.08:
                    rows.append(_ev(day, m - 1, "login", "login_failure", "failure", _user(i), _home_ip(i)))
                rows.append(_ev(day, m, "login", "login_success", "success", _user(i), _home_ip(i)))
            for _ in range(rng.poisson(2)):
                rows.append(_ev(day, rng.integers(8 * 60, 18 * 60), "drive", "download", "info", _user(i), _home_ip(i),
                                target=f"file{rng.integers(1000)}"))
    return rows


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["partition_date"] = pd.to_datetime(df["partition_date"]).dt.date
    return df


@pytest.fixture(scope="module")
def history():
    """Stored key stats of 28 normal days before the test day (START + 28 = a Tuesday)."""
    parts = [pk.daily_key_stats(frame(normal_day(START + dt.timedelta(days=d), d))) for d in range(28)]
    return pd.concat(parts, ignore_index=True)


TEST_DAY = START + dt.timedelta(days=28)


def run_day(rows, history, config=None):
    return pk.find_peaks(frame(rows), history, config)


def test_daily_key_stats_columns_and_numbers():
    day = dt.date(2026, 9, 1)
    rows = [_ev(day, 60 * 3 + k, "login", "login_failure", "failure", "a@x", "1.1.1.1") for k in range(3)]
    rows.append(_ev(day, 60 * 5, "login", "login_failure", "failure", "b@x", "2.2.2.2"))
    stats = pk.daily_key_stats(frame(rows), day=day)
    assert list(stats.columns) == [c.name for c in pk.KEY_STATS_COLUMNS]
    assert set(stats["view"]) == {"actor", "ip"}
    a = stats.loc[stats["view"] == "actor"].iloc[0]
    assert a["key"] == "google|login|login_failure|failure"
    assert (a["sub_count"], a["samp_count"], a["samp_sub_count_max"]) == (4, 2, 3)
    assert a["samp_sub_count_mean"] == 2.0 and math.isclose(a["samp_sub_count_std"], math.sqrt(2))
    assert a["samp_sub_ratio"] == 0.0  # peer rule: only above 50 events
    hourly = json.loads(a["hourly"])
    assert len(hourly) == 24 and hourly[3] == 3 and hourly[5] == 1
    assert json.loads(a["top_samples"])[0] == ["a@x", 3]
    assert json.loads(a["top_ips"])[0] == ["1.1.1.1", 3]
    ip_row = stats.loc[stats["view"] == "ip"].iloc[0]
    assert json.loads(ip_row["top_samples"])[0] == ["1.1.1.1", 3]
    assert json.loads(ip_row["top_actors"])[0] == ["a@x", 3]
    # events of another day are dropped when a day is given
    other = frame(rows + [_ev(day + dt.timedelta(days=1), 10, "login", "login_failure", "failure", "c@x", "3.3.3.3")])
    assert pk.daily_key_stats(other, day=day)["sub_count"].max() == 4



def _reference_stats(events: pd.DataFrame, view: str, n: int) -> dict[str, tuple]:
    """The LST columns and top list per key, computed the obvious way (dicts and sorted), for comparison."""
    out = {}
    keys = events[["source", "app", "action", "outcome"]].astype(str).agg("|".join, axis=1)
    for key, grp in events.groupby(keys):
        counts = grp[view].astype(str).value_counts()
        c = counts.to_numpy(dtype=float)
        std = float(np.std(c, ddof=1)) if len(c) >= 2 else 0.0
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        out[key] = (int(c.sum()), len(c), int(c.max()), float(c.mean()), std, [[k, int(v)] for k, v in top])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_daily_key_stats_match_a_plain_reference_with_ties_and_any_row_order(seed):
    """Counts, moments and top lists equal a dict-based computation; ties are ordered by value, not by row order."""
    rng = np.random.default_rng(seed)
    day = dt.date(2026, 9, 1)
    rows = []
    for k in range(3000):
        action, outcome = [("login_failure", "failure"), ("login_success", "success"), ("download", "info")][
            rng.integers(3)
        ]
        # a long tail of values seen once or twice (big ties at the n-th count) and a few busy ones
        who = int(rng.zipf(1.6)) % 400 if rng.random() < 0.5 else int(rng.integers(400, 4000))
        rows.append(_ev(day, rng.integers(24 * 60), "login", action, outcome, f"u{who}@x", f"10.0.{who % 7}.{who % 251}"))
    events = frame(rows)
    stats = pk.daily_key_stats(events, top_n=10)
    for view in ("actor", "ip"):
        expected = _reference_stats(events, view, 10)
        got = stats.loc[stats["view"] == view].set_index("key")
        assert set(got.index) == set(expected)
        for key, (sub, samp, mx, mean, std, top) in expected.items():
            r = got.loc[key]
            assert (r["sub_count"], r["samp_count"], r["samp_sub_count_max"]) == (sub, samp, mx)
            assert math.isclose(r["samp_sub_count_mean"], mean) and math.isclose(r["samp_sub_count_std"], std, abs_tol=1e-9)
            assert json.loads(r["top_samples"]) == top, (view, key)
    shuffled = events.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    pd.testing.assert_frame_equal(pk.daily_key_stats(shuffled, top_n=10), stats)


def test_daily_key_stats_same_frame_from_object_arrow_and_categorical_columns():
    """Categorical columns are factorised from their codes, Arrow strings by Arrow: the frame must not change,
    with unused categories, missing values (a key part '' and a sample 'nan'), and tz-aware UTC times."""
    rng = np.random.default_rng(7)
    day = dt.date(2026, 9, 1)
    rows = [
        _ev(day, rng.integers(24 * 60), ["login", "drive"][k % 2], "login_failure", "failure",
            f"u{int(rng.zipf(1.5)) % 300}@x", f"10.0.0.{int(rng.integers(40))}")
        for k in range(2000)
    ]
    events = frame(rows)
    events.loc[events.index[::97], "app"] = None  # missing dimension value
    events.loc[events.index[::89], "actor"] = None  # missing sample
    cols = ["source", "app", "action", "outcome", "actor", "ip"]
    as_object = events.astype({c: object for c in cols})
    expected = pk.daily_key_stats(as_object, top_n=10)
    assert (expected["key"].str.split("|").str[1] == "").any()
    as_arrow = events.astype({c: "str" for c in cols})
    as_category = events.astype({c: "category" for c in cols})
    as_category["action"] = as_category["action"].cat.add_categories(["never_seen"])
    complete = events.dropna(subset=["app", "actor"])  # categorical columns without a missing value use their codes
    as_utc = events.assign(event_time=events["event_time"].dt.tz_localize("UTC"))
    for variant in (as_arrow, as_category, as_utc):
        pd.testing.assert_frame_equal(pk.daily_key_stats(variant, top_n=10), expected, check_exact=True)
    pd.testing.assert_frame_equal(
        pk.daily_key_stats(complete.astype({c: "category" for c in cols}), top_n=10),
        pk.daily_key_stats(complete.astype({c: object for c in cols}), top_n=10),
        check_exact=True,
    )


def test_daily_key_stats_same_frame_from_an_arrow_table():
    """A pyarrow Table (a parquet partition as read) gives the frame of its to_pandas(): string, dictionary,
    missing values, tz-aware times, samples shared by several keys, the ``day`` filter and an empty table."""
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(11)
    day = dt.date(2026, 9, 1)
    rows = [
        _ev(day + dt.timedelta(days=int(k % 7 == 0)), rng.integers(24 * 60), ["login", "drive"][k % 2],
            ["login_failure", "login_success"][k % 3 == 0], ["failure", "success"][k % 3 == 0],
            f"u{int(rng.zipf(1.5)) % 300}@x", f"10.0.0.{int(rng.integers(40))}")
        for k in range(3000)
    ]
    events = frame(rows)
    events.loc[events.index[::97], "app"] = None
    events.loc[events.index[::89], "actor"] = None
    cols = ["source", "app", "action", "outcome", "actor", "ip"]
    complete = events.dropna(subset=["app", "actor"])
    variants = [
        events.astype({c: object for c in cols}), events.astype({c: "str" for c in cols}),
        events.astype({c: "category" for c in cols}), complete.astype({c: "category" for c in cols}),
        complete.astype({c: "str" for c in cols}), complete.assign(event_time=complete["event_time"].dt.tz_localize("UTC")),
    ]
    for variant in variants:
        table = pa.Table.from_pandas(variant, preserve_index=False)
        for kwargs in ({}, {"sample": "actor"}, {"day": day}, {"top_n": 3}):
            expected = pk.daily_key_stats(table.to_pandas(), **kwargs)
            pd.testing.assert_frame_equal(pk.daily_key_stats(table, **kwargs), expected, check_exact=True)
    empty = pa.Table.from_pandas(events.iloc[:0], preserve_index=False)
    pd.testing.assert_frame_equal(pk.daily_key_stats(empty), pk.daily_key_stats(events.iloc[:0]))
    # as_arrow: the table pa.Table.from_pandas would make of the frame
    for kwargs in ({}, {"sample": "actor"}, {"day": day}):
        frame_ = pk.daily_key_stats(variants[0], **kwargs)
        table = pk.daily_key_stats(pa.Table.from_pandas(variants[0], preserve_index=False), as_arrow=True, **kwargs)
        assert table.schema.equals(pa.Table.from_pandas(frame_, preserve_index=False).schema, check_metadata=False)
        pd.testing.assert_frame_equal(table.to_pandas(), frame_, check_exact=True)
    assert pk.daily_key_stats(events.iloc[:0], as_arrow=True).num_rows == 0


def test_detect_peaks_same_from_numpy_history_columns(history):
    """The window as a mapping of numpy arrays (DuckDB's fetchnumpy), and today as a pyarrow Table, give the peaks
    of the same rows as DataFrames."""
    rows = normal_day(TEST_DAY, 5) + [
        _ev(TEST_DAY, 600 + k % 300, "login", "login_failure", "failure", _user(k % N_USERS), _home_ip(k % N_USERS))
        for k in range(400)
    ] + [_ev(TEST_DAY, 700, "admin", "CREATE_ROLE", "info", _user(1), _home_ip(1)) for _ in range(30)]
    today = pk.daily_key_stats(frame(rows))
    window = history[["day", "view", "key", "sub_count", "samp_count", "samp_sub_count_max"]]
    as_numpy = {c: window[c].to_numpy() for c in window.columns}
    as_numpy["day"] = pd.to_datetime(window["day"]).to_numpy()
    expected = pk.detect_peaks(today, window)
    assert set(expected["criterion"]) >= {"volume", "new_series"}
    pd.testing.assert_frame_equal(pk.detect_peaks(today, as_numpy), expected, check_exact=True)
    masked = {**as_numpy, "samp_count": np.ma.masked_array(as_numpy["samp_count"], mask=np.zeros(len(window), bool))}
    pd.testing.assert_frame_equal(pk.detect_peaks(today, masked), expected, check_exact=True)
    # today as a pyarrow Table (daily_key_stats(..., as_arrow=True)), with either history
    today_arrow = pk.daily_key_stats(frame(rows), as_arrow=True)
    for hist in (window, as_numpy):
        pd.testing.assert_frame_equal(pk.detect_peaks(today_arrow, hist), expected, check_exact=True)
    assert pk.detect_peaks(today_arrow.slice(0, 0), window).empty


def test_normal_day_has_no_peaks(history):
    _, peaks = run_day(normal_day(TEST_DAY, 999), history)
    assert peaks.empty, peaks[["key", "criterion", "reason"]].to_string()


def test_password_spray_reported_with_the_ip(history):
    spray_ip = "185.220.101.4"
    rows = normal_day(TEST_DAY, 1000)
    victims = [_user(k) for k in range(38)] + [f"x{k}@example.com" for k in range(7)]  # 38 staff + 7 guessed names
    rows += [_ev(TEST_DAY, 600 + k, "login", "login_failure", "failure", victim, spray_ip,
                 asn_org="Zwiebelfreunde e.V. (Tor exit)") for k, victim in enumerate(victims)]
    _, peaks = run_day(rows, history)
    spray = peaks.loc[peaks["kind"] == "password_spray"]
    assert len(spray) == 1
    row = spray.iloc[0]
    assert json.loads(row["top_ips"])[0][0] == spray_ip and row["actor"] == "*"
    assert row["severity"] in ("high", "critical") and "45 accounts failed from 185.220.101.4" in row["reason"]
    # the per-key detector also sees the failure volume
    assert ((peaks["key"] == "google|login|login_failure|failure") & (peaks["kind"] != "password_spray")).any()


def test_credential_stuffing_names_the_succeeding_actors(history):
    rows = normal_day(TEST_DAY, 1001)
    ips = [f"164.92.{k}.10" for k in range(8)]
    winners = {_user(3), _user(17)}
    for k in range(30):
        actor, ip = _user(k), ips[k % len(ips)]
        rows += [_ev(TEST_DAY, 120 + k, "login", "login_failure", "failure", actor, ip, "DigitalOcean, LLC")] * 2
        if actor in winners:
            rows.append(_ev(TEST_DAY, 125 + k, "login", "login_success", "success", actor, ip, "DigitalOcean, LLC"))
    _, peaks = run_day(rows, history)
    stuffing = peaks.loc[peaks["kind"] == "credential_stuffing"]
    assert len(stuffing) == 1
    row = stuffing.iloc[0]
    assert row["severity"] == "critical"
    assert {a for a, _ in json.loads(row["top_actors"])[:2]} == winners
    assert set(row["actor"].split(",")) == winners
    assert json.loads(row["top_ips"])[0][0] in ips


def test_mass_download_reported_with_the_actor(history):
    rows = normal_day(TEST_DAY, 1002)
    thief = _user(42)
    rows += [_ev(TEST_DAY, 23 * 60 + k % 50, "drive", "download", "info", thief, "45.9.20.1", "M247 Europe SRL",
                 target=f"doc{k}") for k in range(400)]
    _, peaks = run_day(rows, history)
    mass = peaks.loc[peaks["kind"] == "mass_download"]
    assert len(mass) == 1
    assert mass.iloc[0]["actor"] == thief and mass.iloc[0]["severity"] in ("high", "critical")
    top_actor, top_count = json.loads(mass.iloc[0]["top_actors"])[0]
    assert top_actor == thief and top_count >= 400  # plus the thief's ordinary downloads of the day
    span = int(re.search(r"in (\d+) min", mass.iloc[0]["reason"]).group(1))
    assert span <= 50  # the burst, not the whole day
    # and the actor-view concentration is a statistical peak too
    conc = peaks.loc[(peaks["view"] == "actor") & (peaks["key"] == "google|drive|download|info")
                     & (peaks["kind"] != "mass_download")]
    assert len(conc) == 1 and json.loads(conc.iloc[0]["top_samples"])[0][0] == thief


def test_forced_password_change_is_not_high_severity(history):
    rows = normal_day(TEST_DAY, 1003)
    rng = np.random.default_rng(5)
    for i in range(N_USERS):
        m = int(rng.integers(6 * 60, 22 * 60))
        rows.append(_ev(TEST_DAY, m, "login", "login_failure", "failure", _user(i), _home_ip(i)))
        rows.append(_ev(TEST_DAY, m + 2, "login", "login_success", "success", _user(i), _home_ip(i)))
    _, peaks = run_day(rows, history)
    fail = peaks.loc[peaks["key"] == "google|login|login_failure|failure"]
    assert len(fail) >= 1  # it is unusual, and shown...
    assert set(fail["kind"]) == {"dispersed_failures"} and set(fail["severity"]) == {"low"}
    assert not peaks["severity"].isin(["high", "critical"]).any()  # ... but pages nobody


def test_new_series_reported_but_not_tiny_ones(history):
    rows = normal_day(TEST_DAY, 1004)
    rows += [_ev(TEST_DAY, 600 + k, "admin", "CREATE_ROLE", "info", _user(1), _home_ip(1)) for k in range(25)]
    rows += [_ev(TEST_DAY, 700 + k, "token", "authorize", "info", _user(2), _home_ip(2)) for k in range(3)]
    _, peaks = run_day(rows, history)
    new = peaks.loc[peaks["criterion"] == "new_series"]
    assert set(new["key"]) == {"google|admin|CREATE_ROLE|info"}
    assert set(new["view"]) == {"actor", "ip"} and (new["severity"] != "critical").all()


def _stats_rows(day: dt.date, counts: dict[str, int], view: str = "actor") -> list[dict]:
    return [
        {"day": day, "view": view, "key": k, "sub_count": n, "samp_count": n, "samp_sub_count_max": 1,
         "samp_sub_count_mean": 1.0, "samp_sub_count_std": 0.0, "samp_sub_ratio": 0.0, "hourly": "[]",
         "top_samples": "[]", "top_actors": "[]", "top_ips": "[]"}
        for k, n in counts.items()
    ]


def _series(days: list[dt.date], value) -> pd.DataFrame:
    return pd.DataFrame([r for d in days for r in _stats_rows(d, {"k": value(d)})])


def test_sliding_window_evicts_old_days():
    today = dt.date(2026, 10, 1)
    recent = [today - dt.timedelta(days=d) for d in range(1, 29)]
    old = [today - dt.timedelta(days=d) for d in range(29, 120)]
    config = pk.PeakConfig(seasonality="none")
    todays = pd.DataFrame(_stats_rows(today, {"k": 100}))
    # The key used to be busy long ago, quiet in the last 28 days: today's 100 is a peak only if old days are evicted.
    hist = pd.concat([_series(old, lambda d: 100), _series(recent, lambda d: 20)], ignore_index=True)
    assert len(pk.detect_peaks(todays, hist, config)) == 1
    assert pk.detect_peaks(todays, hist, pk.PeakConfig(seasonality="none", window_days=120)).empty


def test_weekday_weekend_seasonality():
    today = dt.date(2026, 10, 5)  # a Monday
    assert today.weekday() == 0
    days = [today - dt.timedelta(days=d) for d in range(1, 29)]
    rng = np.random.default_rng(1)
    level = {d: int(rng.poisson(20 if d.weekday() >= 5 else 100)) for d in days}
    hist = _series(days, lambda d: level[d])
    monday = pd.DataFrame(_stats_rows(today, {"k": 105}))
    assert pk.detect_peaks(monday, hist).empty  # a normal Monday after quiet weekends is not a peak
    # A Saturday at weekday level is a peak against weekends only, not against the pooled days.
    saturday = today + dt.timedelta(days=5)
    sat_days = [saturday - dt.timedelta(days=d) for d in range(1, 29)]
    level2 = {d: int(rng.poisson(20 if d.weekday() >= 5 else 100)) for d in sat_days}
    hist2 = _series(sat_days, lambda d: level2[d])
    busy_sat = pd.DataFrame(_stats_rows(saturday, {"k": 100}))
    found = pk.detect_peaks(busy_sat, hist2)
    assert len(found) == 1 and "weekend" in found.iloc[0]["reason"]
    assert pk.detect_peaks(busy_sat, hist2, pk.PeakConfig(seasonality="none")).empty


def test_short_window_widens_threshold():
    today = dt.date(2026, 10, 1)
    rng = np.random.default_rng(3)
    full = [today - dt.timedelta(days=d) for d in range(1, 29)]
    level = {d: int(rng.poisson(50)) for d in full}
    config = pk.PeakConfig(seasonality="none")
    todays = pd.DataFrame(_stats_rows(today, {"k": 200}))
    thr_long = pk.detect_peaks(todays, _series(full, lambda d: level[d]), config).iloc[0]["threshold"]
    thr_short = pk.detect_peaks(todays, _series(full[:8], lambda d: level[d]), config).iloc[0]["threshold"]
    assert thr_short > thr_long
    # and with too little history nothing is called
    assert pk.detect_peaks(todays, _series(full[:3], lambda d: level[d]), config).empty


def test_quiet_and_busy_keys_are_judged_by_their_own_dispersion():
    today = dt.date(2026, 10, 1)
    days = [today - dt.timedelta(days=d) for d in range(1, 29)]
    rng = np.random.default_rng(4)
    quiet = {d: int(rng.poisson(2)) for d in days}
    busy = {d: int(rng.normal(5000, 250)) for d in days}
    hist = pd.DataFrame([r for d in days for r in _stats_rows(d, {"quiet": quiet[d], "busy": busy[d]})])
    config = pk.PeakConfig(seasonality="none")
    # +12 on a quiet key is huge, +12 (even +500) on a busy key is noise.
    todays = pd.DataFrame(_stats_rows(today, {"quiet": 14, "busy": 5500}))
    assert set(pk.detect_peaks(todays, hist, config)["key"]) == {"quiet"}


def test_baseline_markdown_lists_busiest_keys(history):
    today = pk.daily_key_stats(frame(normal_day(TEST_DAY, 7)))
    text = pk.baseline_markdown(today, history)
    lines = text.splitlines()
    assert lines[0].startswith("| key | today |") and len(lines) >= 4
    # keys are escaped so that each row keeps its 6 columns, and every row has a bar
    assert "`google · login · login_success · success`" in text
    assert all(line.count("|") == 7 for line in lines)
    assert all("█" in line for line in lines[2:])
    busiest = today.loc[today["view"] == "actor"].nlargest(1, "sub_count").iloc[0]
    assert f"| {busiest['sub_count']:,} |" in lines[2]
    assert pk.baseline_markdown(today.iloc[0:0], history) == "_no events_"
