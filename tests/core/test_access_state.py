"""accessLogs state snapshots give the same events as diffing against the full landed history."""

import json
from datetime import datetime

import pandas as pd
import pytest

from watch_pipeline.core.normalize import access_state, normalise
from watch_pipeline.core.raw import records_frame, slack_access_record

DAY = 86400
T0 = 1759276800  # 2025-10-01 00:00 UTC


def _row(user, ip, first, last, count):
    return {"user_id": user, "username": user.lower(), "ip": ip, "user_agent": "Slack/4.3", "date_first": first,
            "date_last": last, "count": count}


def _raw(rows):
    return records_frame([slack_access_record(r) for r in rows], "test", datetime(2026, 1, 1))


def test_snapshots_equal_full_history():
    polls = {
        0: [_row("U1", "1.1.1.1", T0 + 100, T0 + 200, 2), _row("U2", "2.2.2.2", T0 + 300, T0 + 300, 1)],
        1: [_row("U1", "1.1.1.1", T0 + 100, T0 + DAY + 50, 5), _row("U2", "2.2.2.2", T0 + 300, T0 + 300, 1)],
        2: [_row("U1", "1.1.1.1", T0 + 100, T0 + 2 * DAY + 9, 6), _row("U3", "3.3.3.3", T0 + 2 * DAY, T0 + 2 * DAY + 1, 1)],
    }
    raws = {d: _raw(rows) for d, rows in polls.items()}
    empty = raws[0].iloc[0:0]
    full, snap_events = [], []
    state = None
    for d in sorted(raws):
        today = raws[d]
        earlier = pd.concat([raws[k] for k in raws if k < d], ignore_index=True) if d else empty
        full.append(normalise(empty, empty, today, earlier).events)
        snap_events.append(normalise(empty, empty, today, state).events)
        state = access_state(state, today)
    a = pd.concat(full, ignore_index=True).sort_values("event_id").reset_index(drop=True)
    b = pd.concat(snap_events, ignore_index=True).sort_values("event_id").reset_index(drop=True)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)
    # U1: first sighting (1 at date_first + 1 at date_last), +3 on day 1, +1 on day 2
    u1 = a[a["actor_raw"] == "U1"].sort_values("event_time")
    assert list(u1["access_count"]) == [1, 1, 3, 1]


def test_state_keeps_newest_row_and_forgets_old_combos():
    rows = pd.DataFrame([_row("U1", "1.1.1.1", 0, 10, 1), _row("U1", "1.1.1.1", 0, 20, 4), _row("U2", "x", 0, 5, 1)])
    rows["record_key"] = ["a", "b", "c"]
    st = access_state(rows, None, keep_since=8)
    assert list(st["record_key"]) == ["b"]
    assert json.loads(json.dumps(st.to_dict("records")))[0]["count"] == 4


@pytest.mark.parametrize("count, ok", [(3, True), (3.0, True), ("3", True), (None, True), (0, True),
                                       (1e-05, False), (2.5, False), (-1, False), ("x", False), (True, False),
                                       (float("inf"), False), (float("nan"), False)])
def test_access_rows_need_a_whole_count(count, ok):
    from watch_pipeline.core.raw import RecordError

    row = {"user_id": "U1", "ip": "1.2.3.4", "user_agent": "ua", "date_first": 1790000000, "date_last": 1790000060}
    if count is not None:
        row["count"] = count
    if ok:
        assert slack_access_record(row).record_key
    else:
        with pytest.raises(RecordError, match="count is not a whole number"):
            slack_access_record(row)
