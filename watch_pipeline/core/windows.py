"""Poll windows and per-poll statistics.

A daily partition reads exactly its UTC day, ``[day 00:00, next day 00:00)``. The live schedule re-reads an
overlapping window ``[now - lag_window, now - delay]`` on every run because the Reports API delivers events late and
out of order; the overlap is harmless since landing dedupes on the record key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import pandas as pd


def to_naive_utc(moment: datetime | pd.Timestamp | str) -> datetime:
    """Any datetime (aware or naive-UTC) or ISO text -> naive UTC datetime."""
    ts = pd.Timestamp(moment)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def daily_window(day: date | datetime | str) -> tuple[datetime, datetime]:
    """Exactly the UTC day: (midnight, next midnight), naive UTC, end exclusive."""
    start = pd.Timestamp(day).normalize().to_pydatetime().replace(tzinfo=None)
    return start, start + timedelta(days=1)


def live_window(now: datetime, lag_window: timedelta, delay: timedelta) -> tuple[datetime, datetime]:
    """The overlapping live window ``(now - lag_window, now - delay)``, naive UTC."""
    if lag_window <= delay:
        raise ValueError(f"lag_window ({lag_window}) must be longer than delay ({delay})")
    now = to_naive_utc(now)
    return now - lag_window, now - delay


def catch_up_window(
    now: datetime,
    lag_window: timedelta,
    delay: timedelta,
    last_end: datetime | None,
    max_catch_up: timedelta = timedelta(days=3),
) -> tuple[datetime, datetime]:
    """The live window, widened back to the last successful poll's end when runs were missed or failed.

    The start never goes further back than ``max_catch_up`` so one poll stays bounded; older gaps are the daily
    partitions' job.
    """
    start, end = live_window(now, lag_window, delay)
    if last_end is not None:
        start = min(start, to_naive_utc(last_end))
    return max(start, end - max_catch_up), end


def rfc3339_ms(moment: datetime) -> str:
    """Naive-UTC datetime -> RFC 3339 with milliseconds and Z (the Reports API's format)."""
    moment = to_naive_utc(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch_seconds(moment: datetime) -> float:
    return to_naive_utc(moment).replace(tzinfo=timezone.utc).timestamp()


def epoch_bounds(start: datetime, end: datetime) -> tuple[int, int]:
    """Half-open ``[start, end)`` -> inclusive whole-second bounds ``(oldest, latest)`` for Slack's API."""
    return math.ceil(epoch_seconds(start)), math.ceil(epoch_seconds(end)) - 1


@dataclass
class PollStats:
    """What one poll saw. ``new``/``duplicates``/``late_arrivals`` are filled in when the window is landed."""

    pages: int = 0
    items: int = 0  # items the API returned (before dedupe)
    new: int = 0  # records landed for the first time
    duplicates: int = 0  # records already in the table (overlap, re-polls)
    late_arrivals: int = 0  # new records whose time lies before the previous poll's window end
    quarantined: int = 0  # items that could not be turned into records
    out_of_window: int = 0  # items outside the requested window (left to the neighbouring window)
    # Quarantine rows (QUARANTINE_COLUMNS) for the items counted in `quarantined`.
    quarantine: list[dict] = field(default_factory=list, repr=False, compare=False)

    def as_metadata(self) -> dict[str, int]:
        """The counters, for asset metadata and the poll_state table."""
        return {
            k: getattr(self, k)
            for k in ("pages", "items", "new", "duplicates", "late_arrivals", "quarantined", "out_of_window")
        }
