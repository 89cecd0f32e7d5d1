"""accessLogs aggregates -> events, over three successive polls, against hand-computed expectations."""

import json

import pandas as pd

from watch_pipeline.core.accesslogs import EVENT_COLUMNS, access_events, access_rows


def row(user, ip, ua, first, last, count, key):
    return {
        "user_id": user, "username": user.lower(), "ip": ip, "user_agent": ua, "date_first": first,
        "date_last": last, "count": count, "isp": "ISP", "country": "US", "region": "CA", "record_key": key,
    }


A = ("U1", "81.2.69.142", "SlackWeb Chrome")
B = ("U1", "89.160.20.112", "SlackWeb Chrome")
C = ("U2", "175.16.199.64", "Slack iOS")
D = ("U3", None, "curl/8")  # null IP is a value of its own

POLL1 = [row(*A, 1000, 1000, 1, "a1"), row(*B, 2000, 5000, 3, "b1")]
POLL2 = [row(*A, 1000, 7000, 4, "a2"), row(*B, 2000, 5000, 3, "b1"), row(*C, 6000, 6000, 1, "c1")]
POLL3 = [
    row(*A, 1000, 9000, 4, "a3"),  # only date_last moved -> 1
    row(*B, 2000, 5000, 10, "b2"),  # only count grew -> 7 at date_last
    row(*C, 6000, 6000, 1, "c1"),  # unchanged
    row(*D, 300, 400, 5, "d2"),  # two rows of a new combo in one poll, given out of order
    row(*D, 100, 200, 2, "d1"),
]


def t(seconds):
    return pd.Timestamp(seconds, unit="s")


def events_as_tuples(df):
    return sorted(
        (r.user_id, r.ip, r.event_time, r.access_count, r.kind, r.record_key, r.event_index) for r in df.itertuples()
    )


def test_three_polls_give_the_hand_computed_events():
    first = access_events(pd.DataFrame(POLL1), pd.DataFrame())
    assert list(first.columns) == list(EVENT_COLUMNS)
    assert events_as_tuples(first) == sorted([
        ("U1", A[1], t(1000), 1, "first_seen", "a1", 0),
        ("U1", B[1], t(2000), 1, "first_seen", "b1", 0),
        ("U1", B[1], t(5000), 2, "delta", "b1", 1),
    ])

    second = access_events(pd.DataFrame(POLL2), pd.DataFrame(POLL1))
    assert events_as_tuples(second) == sorted([
        ("U1", A[1], t(7000), 3, "delta", "a2", 0),
        ("U2", C[1], t(6000), 1, "first_seen", "c1", 0),
    ])

    third = access_events(pd.DataFrame(POLL3), pd.DataFrame(POLL1 + POLL2))
    assert events_as_tuples(third) == sorted([
        ("U1", A[1], t(9000), 1, "delta", "a3", 0),
        ("U1", B[1], t(5000), 7, "delta", "b2", 0),
        ("U3", None, t(100), 1, "first_seen", "d1", 0),
        ("U3", None, t(200), 1, "delta", "d1", 1),
        ("U3", None, t(400), 3, "delta", "d2", 0),
    ])
    # Accesses add up to the final counts, plus 1 for A's date_last-only move (count stayed 4).
    total = sum(int(df["access_count"].sum()) for df in (first, second, third))
    assert total == (4 + 1) + 10 + 1 + 5


def test_event_ids_are_unique_and_times_naive():
    out = access_events(pd.DataFrame(POLL3), pd.DataFrame(POLL1 + POLL2))
    assert not out.duplicated(["record_key", "event_index"]).any()
    assert str(out["event_time"].dtype) == "datetime64[ns]"


def test_unchanged_snapshot_emits_nothing():
    out = access_events(pd.DataFrame(POLL2), pd.DataFrame(POLL1 + POLL2))
    assert out.empty and list(out.columns) == list(EVENT_COLUMNS)
    assert access_events(pd.DataFrame(), pd.DataFrame()).empty


def test_latest_prior_state_wins_and_older_rows_do_not_reemit():
    prior = pd.DataFrame([row(*A, 1000, 9000, 8, "late"), row(*A, 1000, 3000, 2, "early")])
    # A stale observation (older than the state) emits nothing; a newer one diffs against the latest state.
    out = access_events(pd.DataFrame([row(*A, 1000, 5000, 4, "stale"), row(*A, 1000, 9500, 9, "new")]), prior)
    assert events_as_tuples(out) == [("U1", A[1], t(9500), 1, "delta", "new", 0)]


def test_access_rows_parses_raw_json():
    raw = pd.DataFrame({"record_key": ["k"], "raw": [json.dumps(row(*C, 6000, 6000, 1, "ignored"))]})
    rows = access_rows(raw)
    assert rows.loc[0, "user_id"] == "U2" and rows.loc[0, "record_key"] == "k" and rows.loc[0, "count"] == 1


def test_datetime_inputs_are_accepted():
    rows = pd.DataFrame([row(*A, 1000, 1000, 1, "a1")])
    rows["date_first"] = pd.to_datetime(rows["date_first"], unit="s", utc=True)
    rows["date_last"] = pd.to_datetime(rows["date_last"], unit="s", utc=True)
    out = access_events(rows, pd.DataFrame())
    assert out.loc[0, "event_time"] == t(1000)


def test_replay_from_landed_rows_matches_the_incremental_polls():
    from watch_pipeline.core.accesslogs import replay_access_events

    def landed(rows, hour):
        return pd.DataFrame({
            "record_key": [r["record_key"] for r in rows],
            "raw": [json.dumps({k: v for k, v in r.items() if k != "record_key"}) for r in rows],
            "ingest_time": pd.Timestamp(2024, 1, 1, hour),
        })

    # What the warehouse keeps: only rows whose state was new at each poll (b1 and c1 are not landed twice).
    table = pd.concat([landed(POLL1, 0), landed([POLL2[0], POLL2[2]], 1), landed([POLL3[0], POLL3[1], POLL3[3], POLL3[4]], 2)])
    incremental = pd.concat([
        access_events(pd.DataFrame(POLL1), pd.DataFrame()),
        access_events(pd.DataFrame(POLL2), pd.DataFrame(POLL1)),
        access_events(pd.DataFrame(POLL3), pd.DataFrame(POLL1 + POLL2)),
    ])
    assert events_as_tuples(replay_access_events(table.sample(frac=1, random_state=3))) == events_as_tuples(incremental)
