"""Late data: raw rows landed after their day's events were built, and the range of days to build again.

The live poll keeps landing stragglers for past days (Google's Reports API lags by minutes to hours, sometimes
days). Rows landed after a day's `events` partition was built are not in its events, scores or alerts until the
day is built again; and since profiles carry state forward day by day, every later day that was built depends on
it too. So the rerun covers the first late day through the newest built day, as one range run.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd


def late_days(landed: pd.DataFrame, built_at: Mapping[str, pd.Timestamp]) -> list[str]:
    """Days (ISO) whose newest raw row landed after the day's events were last built; unbuilt days are not late.

    ``landed`` has one row per day: ``partition_date`` and ``last_ingest`` (UTC, naive or aware). ``built_at`` maps a
    day to the UTC time its events were last materialized.
    """
    out = []
    for day, last in zip(landed["partition_date"], landed["last_ingest"]):
        key = pd.Timestamp(day).date().isoformat()
        built = built_at.get(key)
        if built is not None and pd.notna(last) and _utc(last) > _utc(built):
            out.append(key)
    return sorted(set(out))


def rerun_range(late: list[str], built_days: list[str]) -> tuple[str, str] | None:
    """(first late day, newest built day): the days whose results the late rows can change."""
    if not late:
        return None
    return min(late), max([*built_days, *late])


def newest_landing(landed: pd.DataFrame, days: list[str]) -> pd.Timestamp:
    """The newest `last_ingest` (UTC) of these days: what a rebuild request is keyed on."""
    mine = [pd.Timestamp(d).date().isoformat() in set(days) for d in landed["partition_date"]]
    return _utc(pd.to_datetime(landed.loc[mine, "last_ingest"]).max())


def _utc(t) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC")
