"""A day's accessLogs rows are parsed once and walked from object columns: same events, same state."""

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from watch_pipeline.core import normalize
from watch_pipeline.core.accesslogs import access_events
from watch_pipeline.core.normalize import _access_input, access_frame, access_state, normalise, slack_access_events
from watch_pipeline.core.raw import records_frame, slack_access_record

T0 = 1759276800  # 2025-10-01 00:00 UTC


def _row(user, ip, first, last, count, **extra):
    row = {"user_id": user, "username": user.lower(), "ip": ip, "user_agent": "Slack/4.3", "date_first": first,
           "date_last": last, "count": count, "isp": "X", "country": "US"}
    row.update(extra)
    return row


def _raw(rows, day=1):
    return records_frame([slack_access_record(r) for r in rows], f"poll{day}", datetime(2026, 1, day))


@pytest.fixture
def days():
    earlier = _raw([_row("U1", "1.1.1.1", T0, T0 + 50, 2), _row("U2", None, T0, T0 + 60, 1),
                    _row("U3", "3.3.3.3", T0, T0 + 70, 1, user_agent=None)], day=1)
    today = _raw([_row("U1", "1.1.1.1", T0, T0 + 86400, 5), _row("U2", None, T0, T0 + 86500, 3),
                  _row("U3", "3.3.3.3", T0, T0 + 70, 1, user_agent=None),  # unchanged: no event
                  _row("U4", "4.4.4.4", T0 + 86400, T0 + 86400, 4, username=None),
                  _row("U5", "5.5.5.5", T0 + 86400, T0 + 86401.5, 1)], day=2)
    return earlier, today


def test_a_parsed_frame_is_not_parsed_again(days, monkeypatch):
    _, today = days
    rows = access_frame(today)
    assert "user_id" in rows.columns and len(rows) == len(today)
    monkeypatch.setattr(normalize.json, "loads", lambda text: pytest.fail("parsed twice"))
    assert access_frame(rows) is rows


def test_events_from_parsed_rows_equal_events_from_raw_rows(days):
    earlier, today = days
    empty = today.iloc[0:0]
    from_raw = normalise(empty, empty, today, earlier)
    from_parsed = normalise(empty, empty, access_frame(today), earlier)
    pd.testing.assert_frame_equal(from_raw.events, from_parsed.events)
    assert len(from_raw.events) == 5  # U1 +3, U2 +2, U4 first seen + 3 more, U5 first seen
    state_raw = access_state(access_frame(earlier), today)
    state_parsed = access_state(access_frame(earlier), access_frame(today))
    pd.testing.assert_frame_equal(state_raw, state_parsed)


def test_access_events_see_the_same_rows_from_object_columns(days):
    earlier, today = days
    rows, prior = access_frame(today), access_frame(earlier)
    walked = _access_input(rows)
    assert "raw" not in walked.columns and "ingest_time" not in walked.columns
    assert all(walked[c].dtype == object for c in ("user_id", "username", "ip", "user_agent", "record_key"))
    for c in walked.columns:
        assert [v if isinstance(v, str) or not pd.isna(v) else None for v in walked[c]] == \
            [v if isinstance(v, str) or not pd.isna(v) else None for v in rows[c]]
    pd.testing.assert_frame_equal(access_events(walked, _access_input(prior)), access_events(rows, prior))


def test_slack_access_events_with_a_state_snapshot_as_prior(days):
    earlier, today = days
    state = access_state(None, earlier)
    a = slack_access_events(today, state, [])
    b = slack_access_events(access_frame(today), state, [])
    pd.testing.assert_frame_equal(a, b)
    assert sorted(a["actor_raw"]) == ["U1", "U2", "U4", "U4", "U5"]
    assert np.array_equal(np.sort(a["access_count"].to_numpy()), np.array([1, 1, 2, 3, 3]))
