"""Slack team.accessLogs rows -> access events.

accessLogs is not an event log: each row aggregates one (user, IP, user agent) combination with ``date_first``,
``date_last`` and a running ``count``. Events are what changed since the earlier polls:

* a combination never seen before is an access at ``date_first`` (count 1), plus, when ``count > 1``, an access at
  ``date_last`` carrying the other ``count - 1``;
* a moved ``date_last`` or a grown ``count`` is an access at ``date_last`` carrying the count delta (at least 1);
* an unchanged row emits nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from watch_pipeline.core.raw import loads_json

ROW_COLUMNS = (
    "user_id", "username", "ip", "user_agent", "date_first", "date_last", "count", "isp", "country", "region",
    "record_key",
)
EVENT_COLUMNS = (
    "user_id", "username", "ip", "user_agent", "event_time", "access_count", "kind", "record_key", "event_index",
)
KIND_FIRST_SEEN = "first_seen"
KIND_DELTA = "delta"
COMBO = ("user_id", "ip", "user_agent")


def access_rows(landed: pd.DataFrame) -> pd.DataFrame:
    """Raw-table rows (``record_key``, ``raw`` JSON text) -> one column per accessLogs field."""
    if landed is None or landed.empty:
        return pd.DataFrame(columns=list(ROW_COLUMNS))
    parsed = [loads_json(text) for text in landed["raw"]]
    out = pd.DataFrame({c: [p.get(c) for p in parsed] for c in ROW_COLUMNS if c != "record_key"})
    out["record_key"] = list(landed["record_key"])
    return out[list(ROW_COLUMNS)]


def _times(values: pd.Series) -> pd.Series:
    """Epoch seconds (Slack's form) or datetimes -> naive UTC datetime64."""
    if pd.api.types.is_datetime64_any_dtype(values):
        s = pd.to_datetime(values)
        return s.dt.tz_convert("UTC").dt.tz_localize(None) if s.dt.tz is not None else s
    return pd.to_datetime(pd.to_numeric(values, errors="coerce"), unit="s")


def _prepared(frame: pd.DataFrame) -> pd.DataFrame:
    df = frame.copy()
    for col in ROW_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df["t_first"] = _times(df["date_first"])
    df["t_last"] = _times(df["date_last"])
    df["n_count"] = pd.to_numeric(df["count"], errors="coerce").fillna(1).astype("int64")
    # IP and user agent may be null; a null is its own value of the combination.
    df["combo_key"] = list(zip(*(df[c].where(df[c].notna(), "").astype(str).to_numpy(dtype=object) for c in COMBO)))
    return df


def access_events(rows: pd.DataFrame, prior: pd.DataFrame) -> pd.DataFrame:
    """Events implied by newly observed accessLogs `rows`, given the rows landed by earlier polls (`prior`).

    Both frames carry :data:`ROW_COLUMNS` (``date_first``/``date_last`` as epoch seconds or datetimes). The state of
    a combination is its latest earlier row; several rows of one combination in `rows` are applied in
    ``date_last``/``count`` order. Returns :data:`EVENT_COLUMNS`, ``event_time`` naive UTC.
    """
    if rows is None or rows.empty:
        return _empty_events()
    current = _prepared(rows).sort_values(["t_last", "n_count"], kind="mergesort")
    state: dict[tuple, tuple[pd.Timestamp, int]] = {}
    seen_keys: set = set()
    if prior is not None and not prior.empty:
        # Only the combinations observed now matter: the earlier state of the others is never looked at.
        wanted = set(current["combo_key"])
        earlier = _prepared(prior)
        earlier = earlier[[c in wanted for c in earlier["combo_key"]]]
        earlier = earlier.sort_values(["t_last", "n_count"], kind="mergesort")
        # The last row per combination after sorting is its latest state.
        for combo, last, count in zip(earlier["combo_key"], earlier["t_last"], earlier["n_count"]):
            state[combo] = (last, count)
        seen_keys = set(prior["record_key"].dropna()) if "record_key" in prior.columns else set()

    events: list[dict] = []
    for row in current.itertuples(index=False):
        if row.record_key in seen_keys and row.record_key is not None:
            continue  # this very observation was diffed already
        base = {
            "user_id": row.user_id, "username": _or_none(row.username), "ip": _or_none(row.ip),
            "user_agent": _or_none(row.user_agent), "record_key": row.record_key,
        }
        before = state.get(row.combo_key)
        if before is None:
            events.append(_event(base, row.t_first, 1, KIND_FIRST_SEEN, 0))
            if row.n_count > 1:
                events.append(_event(base, row.t_last, row.n_count - 1, KIND_DELTA, 1))
            state[row.combo_key] = (row.t_last, row.n_count)
            continue
        last_before, count_before = before
        moved = row.t_last > last_before
        grown = row.n_count - count_before
        if moved or grown > 0:
            events.append(_event(base, row.t_last, max(int(grown), 1), KIND_DELTA, 0))
        # Keep the furthest state so an older re-observed row never re-emits later accesses.
        state[row.combo_key] = (max(last_before, row.t_last), max(count_before, row.n_count))

    if not events:
        return _empty_events()
    out = pd.DataFrame(events, columns=list(EVENT_COLUMNS))
    out["event_time"] = pd.to_datetime(out["event_time"]).astype("datetime64[ns]")
    for col in ("user_id", "username", "ip", "user_agent", "kind", "record_key"):
        # pandas 3 would infer a string dtype and turn a null IP into NaN; keep None.
        out[col] = pd.Series([e[col] for e in events], dtype=object)
    out["access_count"] = out["access_count"].astype("int64")
    out["event_index"] = out["event_index"].astype("int64")
    return out.reset_index(drop=True)


def _event(base: dict, when, count: int, kind: str, index: int) -> dict:
    return {**base, "event_time": when, "access_count": int(count), "kind": kind, "event_index": index}


def _or_none(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA else value


def _empty_events() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})
    out["event_time"] = pd.Series(dtype="datetime64[ns]")
    out["access_count"] = pd.Series(dtype=np.int64)
    out["event_index"] = pd.Series(dtype=np.int64)
    return out


def replay_access_events(landed: pd.DataFrame) -> pd.DataFrame:
    """Rebuild the events of landed accessLogs rows, poll by poll in ``ingest_time`` order.

    `landed` holds raw-table rows (``record_key``, ``raw``, ``ingest_time``). Gives the same events the live polls
    produced, so the events can be re-derived from ``raw_slack_access`` at any time.
    """
    if landed is None or landed.empty:
        return _empty_events()
    ordered = landed.sort_values("ingest_time", kind="mergesort")
    prior = access_rows(pd.DataFrame())
    batches = []
    for _, batch in ordered.groupby("ingest_time", sort=True):
        rows = access_rows(batch)
        batches.append(access_events(rows, prior))
        prior = pd.concat([prior, rows], ignore_index=True) if len(prior) else rows
    out = pd.concat(batches, ignore_index=True)
    return out if len(out) else _empty_events()
