"""The accessLogs state the events step reads (today's combinations only, from the rows earlier days stored) gives the
events that diffing against the whole landed history gives: day by day, with a day never built in between, and
with combinations forgotten after ``history_limit``."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import pandas as pd
import pytest

from watch_pipeline.assets.events import build_events_for_day
from watch_pipeline.core.normalize import normalise
from watch_pipeline.core.raw import records_frame, slack_access_record
from watch_pipeline.warehouse import DuckDBWarehouse

DAY = 86400
T0 = int(pd.Timestamp("2026-03-01").timestamp())
DAYS = [f"2026-03-0{d}" for d in range(1, 7)]


def _row(user, ip, first, last, count, ua="Slack/4.3"):
    return {"user_id": user, "username": user.lower(), "ip": ip, "user_agent": ua, "date_first": first,
            "date_last": last, "count": count}


def _polls() -> dict[int, list[dict]]:
    """Per day index: the accessLogs rows seen that day (a phone with a new address each day, a laptop whose
    count grows, a combination that comes back after days of silence, a user agent that is null)."""
    polls = {d: [] for d in range(len(DAYS))}
    for d in range(len(DAYS)):
        t = T0 + d * DAY
        polls[d].append(_row("U1", "10.0.0.1", T0 + 60, t + 3600, 3 + d))  # the laptop: same combination daily
        polls[d].append(_row("U2", f"100.64.{d}.9", t + 7200, t + 7300, 2, ua="Slack iOS"))  # carrier churn
        polls[d].append(_row("U3", "192.0.2.1", T0 + 30, t + 60, d + 1, ua=None))
    polls[4].append(_row("U4", "198.51.100.7", T0 + 100, T0 + 4 * DAY + 50, 2))  # silent since day 0, back on day 4
    polls[0].append(_row("U4", "198.51.100.7", T0 + 100, T0 + 200, 1))
    return polls


def _land(wh, polls) -> dict[int, pd.DataFrame]:
    raws = {}
    for d, rows in polls.items():
        raws[d] = records_frame([slack_access_record(r) for r in rows], f"poll{d}", datetime(2026, 3, 1 + d, 23))
        wh.insert_new("raw_slack_access", raws[d], "record_key")
    return raws


def _oracle(raws, history_limit: int) -> pd.DataFrame:
    """Events from diffing each day against every earlier landed row still inside the horizon."""
    empty = raws[0].iloc[0:0]
    out = []
    for d in sorted(raws):
        keep_since = T0 + (d - 1) * DAY - history_limit
        earlier = [raws[k] for k in raws if k < d]
        earlier = pd.concat(earlier, ignore_index=True) if earlier else empty
        if len(earlier):
            last = earlier["raw"].map(lambda t: pd.read_json(pd.io.common.StringIO(f"[{t}]"))["date_last"].iloc[0])
            # a combination whose newest earlier row is older than the horizon is forgotten
            combo = earlier["raw"].map(lambda t: tuple(pd.read_json(pd.io.common.StringIO(f"[{t}]"))[["user_id", "ip"]].iloc[0]))
            newest = last.groupby(combo).transform("max")
            earlier = earlier[(newest >= keep_since).to_numpy()]
        out.append(normalise(empty, empty, raws[d], earlier).events)
    return pd.concat(out, ignore_index=True)


def _built(wh, days, history_limit) -> pd.DataFrame:
    cfg = SimpleNamespace(history_limit=history_limit, user_domain=None, user_map={})
    for day in days:
        build_events_for_day(wh, cfg, None, day, datetime(2026, 3, 10))
    return wh.read_table("events")


def _compare(got: pd.DataFrame, want: pd.DataFrame) -> None:
    cols = ["event_id", "actor_raw", "ip", "event_time", "access_count"]
    a = got[cols].sort_values("event_id").reset_index(drop=True)
    b = want[cols].sort_values("event_id").reset_index(drop=True)
    assert len(b) > len(DAYS)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


@pytest.mark.parametrize("history_limit", [30 * DAY, 2 * DAY])
def test_day_by_day_matches_the_full_history(tmp_path, history_limit):
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    raws = _land(wh, _polls())
    got = _built(wh, DAYS, history_limit)
    _compare(got, _oracle(raws, history_limit))
    u4 = got[got["actor_raw"] == "U4"].sort_values("event_time")
    # remembered for 30 days: one more access on day 4; forgotten after 2: a first sighting again, plus that access
    assert list(u4["access_count"]) == ([1, 1] if history_limit == 30 * DAY else [1, 1, 1])
    # only the combinations a day saw are stored for it, not the whole state
    per_day = wh.query_df("SELECT partition_date, COUNT(*) AS n FROM access_state GROUP BY partition_date")
    assert per_day["n"].max() <= max(len(r) for r in _polls().values())


def test_a_day_never_built_is_read_from_its_raw_rows(tmp_path):
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    raws = _land(wh, _polls())
    got = _built(wh, DAYS[:2] + DAYS[3:], 30 * DAY)  # day 3 landed, never built
    want = _oracle(raws, 30 * DAY)
    want = want[pd.to_datetime(want["partition_date"]).dt.strftime("%Y-%m-%d") != DAYS[2]]
    _compare(got, want)
