from datetime import date, datetime, timedelta, timezone

import pytest

from watch_pipeline.core.windows import (
    PollStats,
    catch_up_window,
    daily_window,
    epoch_bounds,
    live_window,
    rfc3339_ms,
)


def test_daily_window_is_exactly_the_utc_day():
    assert daily_window(date(2024, 2, 28)) == (datetime(2024, 2, 28), datetime(2024, 2, 29))
    assert daily_window("2024-02-29") == (datetime(2024, 2, 29), datetime(2024, 3, 1))
    # A datetime inside the day still gives the whole day.
    assert daily_window(datetime(2024, 12, 31, 17, 5)) == (datetime(2024, 12, 31), datetime(2025, 1, 1))


def test_live_window_defaults_and_aware_now():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))  # 10:00 UTC
    start, end = live_window(now, timedelta(hours=3), timedelta(minutes=2))
    assert (start, end) == (datetime(2024, 5, 1, 7, 0), datetime(2024, 5, 1, 9, 58))
    assert start.tzinfo is None and end.tzinfo is None


def test_live_window_rejects_delay_longer_than_lag():
    with pytest.raises(ValueError):
        live_window(datetime(2024, 5, 1), timedelta(minutes=1), timedelta(minutes=2))


def test_catch_up_goes_back_to_last_end_but_not_beyond_the_cap():
    now = datetime(2024, 5, 1, 12)
    lag, delay = timedelta(hours=3), timedelta(minutes=2)
    assert catch_up_window(now, lag, delay, None) == (datetime(2024, 5, 1, 9), datetime(2024, 5, 1, 11, 58))
    # Last success 5 h ago: start goes back to it.
    assert catch_up_window(now, lag, delay, datetime(2024, 5, 1, 7))[0] == datetime(2024, 5, 1, 7)
    # Recent success: the overlapping lag window still applies.
    assert catch_up_window(now, lag, delay, datetime(2024, 5, 1, 11, 50))[0] == datetime(2024, 5, 1, 9)
    # Capped.
    assert catch_up_window(now, lag, delay, datetime(2024, 4, 1), timedelta(days=1))[0] == datetime(2024, 4, 30, 11, 58)


def test_rfc3339_ms_and_epoch_bounds():
    assert rfc3339_ms(datetime(2021, 10, 27, 23, 59, 31, 657999)) == "2021-10-27T23:59:31.657Z"
    assert rfc3339_ms(datetime(2021, 10, 28)) == "2021-10-28T00:00:00.000Z"
    # [2018-03-16 00:00, 2018-03-17 00:00) -> inclusive seconds
    assert epoch_bounds(datetime(2018, 3, 16), datetime(2018, 3, 17)) == (1521158400, 1521158400 + 86399)
    assert epoch_bounds(datetime(2018, 3, 16, 0, 0, 0, 500000), datetime(2018, 3, 16, 0, 0, 10, 200000)) == (
        1521158401,
        1521158410,
    )


def test_poll_stats_metadata_holds_only_counters():
    stats = PollStats(pages=2, items=5, quarantined=1, quarantine=[{"raw_text": "x"}])
    meta = stats.as_metadata()
    assert meta["pages"] == 2 and meta["items"] == 5 and meta["quarantined"] == 1
    assert "quarantine" not in meta
