"""Landing fetched windows into the raw tables: nothing lost, nothing twice.

A fetch returns only after every page arrived, so a failed poll writes nothing. Landing inserts only records whose
key is not in the table yet (the first ``ingest_time`` is kept), counts new records, duplicates and late arrivals
(new records older than the previous poll's window end) and appends one row to ``poll_state``. The next live window
starts no later than the last successful window end, so a failed run's window is read again.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from watch_pipeline.core.accesslogs import access_events, access_rows
from watch_pipeline.core.raw import RAW_TABLE, RawRecord, RecordError, records_frame
from watch_pipeline.core.schema import (
    QUARANTINE_COLUMNS,
    SOURCE_GOOGLE,
    SOURCE_SLACK_ACCESS,
    SOURCE_SLACK_AUDIT,
    Column,
    stable_id,
)
from watch_pipeline.core.windows import PollStats, catch_up_window, daily_window, to_naive_utc
from watch_pipeline.pollers.http import PollError
from watch_pipeline.warehouse import Warehouse, register_table

log = logging.getLogger(__name__)

POLL_STATE_TABLE = "poll_state"
POLL_STATE_COLUMNS = (
    Column("poll_id", "VARCHAR", "unique id of the poll"),
    Column("source", "VARCHAR", "google | slack_audit | slack_access"),
    Column("app", "VARCHAR", "Google application, or the Slack source name"),
    Column("window_start", "TIMESTAMP", "UTC start of the polled window (inclusive)"),
    Column("window_end", "TIMESTAMP", "UTC end of the polled window (exclusive); the last one is the next start bound"),
    Column("polled_at", "TIMESTAMP", "UTC time the poll was landed"),
    Column("pages", "BIGINT", "pages fetched"),
    Column("items", "BIGINT", "items returned by the API"),
    Column("new", "BIGINT", "records landed for the first time"),
    Column("duplicates", "BIGINT", "records already landed"),
    Column("late_arrivals", "BIGINT", "new records older than the previous poll's window end"),
    Column("quarantined", "BIGINT", "items that could not be landed"),
    Column("status", "VARCHAR", "ok | failed (a failed window wrote nothing and is read again by the next run)"),
    Column("error", "VARCHAR", "why a failed poll failed (never holds secrets)"),
)
register_table(POLL_STATE_TABLE, POLL_STATE_COLUMNS)


# ----------------------------------------------------------------------------------------------------------------
# Items -> records (shared by the clients)
# ----------------------------------------------------------------------------------------------------------------


def build_records(
    items: Iterable[Any],
    builder: Callable[[Any], RawRecord],
    source: str,
    origin: str,
    start: datetime | None,
    end: datetime | None,
    stats: PollStats,
    now: datetime | None = None,
) -> list[RawRecord]:
    """Build records through `builder`; bad items become quarantine rows, out-of-window ones are skipped.

    Items outside ``[start, end)`` belong to a neighbouring window (which reads them itself), so a daily partition
    holds exactly its day.
    """
    now = now or datetime.utcnow()
    records: list[RawRecord] = []
    for position, item in enumerate(items):
        stats.items += 1
        try:
            record = builder(item)
        except RecordError as exc:
            stats.quarantined += 1
            stats.quarantine.append(_quarantine_row(item, position, source, origin, str(exc), now))
            continue
        if (start is not None and record.record_time < start) or (end is not None and record.record_time >= end):
            stats.out_of_window += 1
            continue
        records.append(record)
    return records


def _quarantine_row(item: Any, position: int, source: str, origin: str, reason: str, now: datetime) -> dict:
    try:
        text = json.dumps(item, separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(item)
    return {
        "quarantine_id": stable_id(origin, position, text),
        "partition_date": None,
        "stage": "poll",
        "source": source,
        "origin": f"{origin}#{position}",
        "reason": reason,
        "raw_text": text,
        "quarantined_at": now,
    }


def quarantine_frame(stats: PollStats) -> pd.DataFrame:
    """The quarantine rows of a fetch as a frame with the quarantine table's columns."""
    return pd.DataFrame(stats.quarantine, columns=[c.name for c in QUARANTINE_COLUMNS])


# ----------------------------------------------------------------------------------------------------------------
# Poll state
# ----------------------------------------------------------------------------------------------------------------


def last_window_end(warehouse: Warehouse, source: str, app: str) -> datetime | None:
    """End of the latest successfully landed window of (source, app), or None before the first success."""
    return _poll_state_value(warehouse, "MAX(window_end)", source, app, "status = 'ok' OR status IS NULL")


def _poll_state_value(warehouse: Warehouse, expr: str, source: str, app: str, where: str, extra: list | None = None):
    if not warehouse.table_exists(POLL_STATE_TABLE):
        return None
    p = warehouse.param()
    df = warehouse.query_df(
        f'SELECT {expr} AS v FROM "{POLL_STATE_TABLE}" WHERE source = {p} AND app = {p} AND ({where})',
        [source, app, *(extra or [])],
    )
    value = df["v"].iloc[0] if len(df) else None
    return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()


def next_live_window(
    warehouse: Warehouse,
    source: str,
    app: str,
    now: datetime,
    lag_window: timedelta,
    delay: timedelta,
    max_catch_up: timedelta = timedelta(days=3),
) -> tuple[datetime, datetime]:
    """``[now - lag_window, now - delay]``, widened back after missed or failed runs.

    The start goes back to the last successful window end, and to the start of any failed window that ended
    after it, so a window that failed is read again (bounded by `max_catch_up`).
    """
    last_ok = last_window_end(warehouse, source, app)
    p = warehouse.param()
    if last_ok is None:
        failed_start = _poll_state_value(warehouse, "MIN(window_start)", source, app, "status = 'failed'")
    else:
        failed_start = _poll_state_value(
            warehouse, "MIN(window_start)", source, app, f"status = 'failed' AND window_end > {p}", [last_ok]
        )
    bounds = [b for b in (last_ok, failed_start) if b is not None]
    return catch_up_window(now, lag_window, delay, min(bounds) if bounds else None, max_catch_up)


def _record_poll(
    warehouse: Warehouse,
    source: str,
    app: str,
    window: tuple,
    stats: PollStats,
    now: datetime,
    error: BaseException | None = None,
) -> None:
    start, end = window
    row = {
        "poll_id": uuid.uuid4().hex,
        "source": source,
        "app": app,
        "window_start": start,
        "window_end": end,
        "polled_at": now,
        **{k: v for k, v in stats.as_metadata().items() if k != "out_of_window"},
        "status": "ok" if error is None else "failed",
        "error": None if error is None else f"{type(error).__name__}: {error}"[:500],
    }
    warehouse.insert_new(POLL_STATE_TABLE, pd.DataFrame([row]), "poll_id")


def _fetch_or_record_failure(warehouse, source, app, window, now, fetch):
    """Run `fetch`; on failure note the window as failed in poll_state (so it is read again) and re-raise."""
    try:
        return fetch()
    except Exception as exc:
        _record_poll(warehouse, source, app, window, PollStats(), now, error=exc)
        raise


# ----------------------------------------------------------------------------------------------------------------
# Landing
# ----------------------------------------------------------------------------------------------------------------


def land_window(
    warehouse: Warehouse,
    source: str,
    app: str,
    records: list[RawRecord],
    stats: PollStats,
    window: tuple[datetime, datetime] | None,
    now: datetime | None = None,
) -> PollStats:
    """Insert the records whose key is new into the source's raw table and fill in the stats.

    `window` is the polled ``(start, end)``; when given the poll is appended to ``poll_state`` and late arrivals
    are counted against the previous poll's window end.
    """
    now = to_naive_utc(now) if now is not None else datetime.utcnow()
    table = RAW_TABLE[source]
    previous_end = last_window_end(warehouse, source, app)
    frame = records_frame(records, f"poll:{app}", now)
    fresh = _not_yet_landed(warehouse, table, frame)
    inserted = warehouse.insert_new(table, frame, "record_key") if len(frame) else 0
    stats.new = inserted
    stats.duplicates = len(records) - inserted
    if previous_end is not None and len(fresh):
        stats.late_arrivals = int((pd.to_datetime(fresh["record_time"]) < pd.Timestamp(previous_end)).sum())
    if window is not None:
        _record_poll(warehouse, source, app, window, stats, now)
    log.info("%s/%s landed: %s", source, app, stats.as_metadata())
    return stats


def _not_yet_landed(warehouse: Warehouse, table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of `frame` whose key is not in `table` (a record's time never changes, so its time range suffices)."""
    if frame.empty or not warehouse.table_exists(table):
        return frame
    p = warehouse.param()
    existing = warehouse.query_df(
        f'SELECT record_key FROM "{table}" WHERE record_time >= {p} AND record_time <= {p}',
        [pd.Timestamp(t).to_pydatetime() for t in (frame["record_time"].min(), frame["record_time"].max())],
    )
    return frame[~frame["record_key"].isin(set(existing["record_key"]))]


def poll_google(
    warehouse: Warehouse, client, app: str, window: tuple[datetime, datetime], now: datetime | None = None
) -> PollStats:
    """Fetch one Reports API window of `app` (all pages) and land it."""
    now = to_naive_utc(now) if now is not None else datetime.utcnow()
    records, stats = _fetch_or_record_failure(
        warehouse, SOURCE_GOOGLE, app, window, now, lambda: client.fetch_window(app, *window)
    )
    return land_window(warehouse, SOURCE_GOOGLE, app, records, stats, window, now)


def poll_slack_audit(
    warehouse: Warehouse, client, window: tuple[datetime, datetime], now: datetime | None = None
) -> PollStats:
    """Fetch one Audit Logs window (all pages) and land it."""
    now = to_naive_utc(now) if now is not None else datetime.utcnow()
    records, stats = _fetch_or_record_failure(
        warehouse, SOURCE_SLACK_AUDIT, SOURCE_SLACK_AUDIT, window, now, lambda: client.fetch_window(*window)
    )
    return land_window(warehouse, SOURCE_SLACK_AUDIT, SOURCE_SLACK_AUDIT, records, stats, window, now)


def poll_slack_access(warehouse: Warehouse, client, now: datetime | None = None) -> tuple[PollStats, pd.DataFrame]:
    """Fetch team.accessLogs, land the rows whose state is new, and return the access events they imply.

    The events come from :func:`watch_pipeline.core.accesslogs.access_events`, diffing the newly landed rows
    against the rows landed by earlier polls for the same (user, IP, user agent).
    """
    now = to_naive_utc(now) if now is not None else datetime.utcnow()
    records, stats = client.fetch()
    table = RAW_TABLE[SOURCE_SLACK_ACCESS]
    frame = records_frame(records, f"poll:{SOURCE_SLACK_ACCESS}", now)
    fresh = _not_yet_landed(warehouse, table, frame)
    prior = _prior_access_rows(warehouse, table, access_rows(fresh))
    window = (pd.Timestamp(frame["record_time"].min()).to_pydatetime(), now) if len(frame) else None
    land_window(warehouse, SOURCE_SLACK_ACCESS, SOURCE_SLACK_ACCESS, records, stats, window, now)
    return stats, access_events(access_rows(fresh), prior)


def _prior_access_rows(warehouse: Warehouse, table: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Earlier-landed accessLogs rows of the users in `rows` (the diff keeps only matching combos).

    The table holds one row per observed state change of a combo, so it stays small next to the event tables;
    the user filter runs in pandas to stay engine-neutral.
    """
    if rows.empty or not warehouse.table_exists(table):
        return access_rows(pd.DataFrame())
    landed = access_rows(warehouse.query_df(f'SELECT record_key, raw FROM "{table}"'))
    return landed[landed["user_id"].isin(set(rows["user_id"]))].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# Daily partitions
# ----------------------------------------------------------------------------------------------------------------


def fetch_google_day(client, app: str, day: date | str) -> tuple[list[RawRecord], PollStats]:
    """All activities of `app` in exactly that UTC day (for the daily raw partitions)."""
    return client.fetch_window(app, *daily_window(day))


def fetch_slack_audit_day(client, day: date | str) -> tuple[list[RawRecord], PollStats]:
    """All Audit Logs entries in exactly that UTC day (for the daily raw partitions)."""
    return client.fetch_window(*daily_window(day))


def _make_clients(settings, environ=None, clients: dict | None = None, retry=None) -> dict:
    """Clients of the enabled sources, built from the settings and the environment (unless given)."""
    from watch_pipeline.pollers.google import GoogleReportsClient
    from watch_pipeline.pollers.slack import SlackAccessLogsClient, SlackAuditClient

    out = dict(clients or {})
    extra = {"retry": retry} if retry is not None else {}
    if settings.google.enabled and "google" not in out:
        out["google"] = GoogleReportsClient.from_settings(settings.google, environ, **extra)
    if settings.slack_audit.enabled and "slack_audit" not in out:
        out["slack_audit"] = SlackAuditClient.from_settings(settings.slack_audit, environ, **extra)
    if settings.slack_access.enabled and "slack_access" not in out:
        out["slack_access"] = SlackAccessLogsClient.from_settings(settings.slack_access, environ, **extra)
    return out


def fetch_days(settings, days, log=None, environ=None, clients: dict | None = None, retry=None):
    """Everything the enabled live sources hold for exactly these UTC days, for the daily raw partitions.

    Returns ``({source: [RawRecord]}, [Quarantined])``. Any failure raises before anything is returned, so a
    partition is never half-written. team.accessLogs has no time window: it is fetched once and its rows are kept
    when their ``date_last`` falls on one of the days (it only ever shows each combination's current state).
    """
    from watch_pipeline.core.archive import Quarantined

    logger = log if log is not None else logging.getLogger(__name__)
    days = [str(pd.Timestamp(d).date()) for d in days]
    clients = _make_clients(settings, environ, clients, retry)
    records: dict[str, list[RawRecord]] = {SOURCE_GOOGLE: [], SOURCE_SLACK_AUDIT: [], SOURCE_SLACK_ACCESS: []}
    quarantined: list = []

    def keep(source: str, got: list[RawRecord], stats: PollStats, what: str) -> None:
        records[source].extend(got)
        quarantined.extend(
            Quarantined(q["origin"], q["reason"], q["raw_text"], source, "poll", None) for q in stats.quarantine
        )
        logger.info(f"{what}: {stats.pages} pages, {len(got)} records, {stats.quarantined} quarantined")

    for day in days:
        if "google" in clients and settings.google.enabled:
            for app in settings.google.applications:
                got, stats = fetch_google_day(clients["google"], app, day)
                keep(SOURCE_GOOGLE, got, stats, f"google/{app} {day}")
        if "slack_audit" in clients and settings.slack_audit.enabled:
            got, stats = fetch_slack_audit_day(clients["slack_audit"], day)
            keep(SOURCE_SLACK_AUDIT, got, stats, f"slack_audit {day}")
    if "slack_access" in clients and settings.slack_access.enabled:
        got, stats = clients["slack_access"].fetch()
        keep(SOURCE_SLACK_ACCESS, [r for r in got if r.partition_date in set(days)], stats, "slack_access")
    return records, quarantined


# ----------------------------------------------------------------------------------------------------------------
# One live run over every enabled source
# ----------------------------------------------------------------------------------------------------------------


def poll_live(
    warehouse: Warehouse,
    settings,
    now: datetime | None = None,
    environ=None,
    clients: dict | None = None,
    max_catch_up: timedelta = timedelta(days=3),
) -> tuple[dict[str, PollStats], pd.DataFrame]:
    """Poll every enabled source once (Google: each application) and land what came back.

    `settings` is :class:`watch_pipeline.settings.Settings`; secrets come from the environment variables it names.
    `clients` may hold ready clients under ``google``, ``slack_audit``, ``slack_access`` (tests, reuse). A failing
    source does not stop the others; after all ran, :class:`PollRunFailed` is raised carrying the stats and events
    of the sources that did land (a failed window was not written; the next run reads it again). Returns stats
    per ``source/app`` and the accessLogs events (also rebuildable from ``raw_slack_access`` with
    :func:`watch_pipeline.core.accesslogs.replay_access_events`).
    """
    from watch_pipeline.pollers.google import GoogleReportsClient
    from watch_pipeline.pollers.slack import SlackAccessLogsClient, SlackAuditClient

    now = to_naive_utc(now) if now is not None else datetime.utcnow()
    clients = dict(clients or {})
    results: dict[str, PollStats] = {}
    events = access_events(pd.DataFrame(), pd.DataFrame())
    failures: list[Exception] = []

    def attempt(name: str, run: Callable[[], Any]) -> Any:
        try:
            return run()
        except Exception as exc:  # noqa: BLE001 - collected and re-raised below
            log.error("poll %s failed: %s", name, exc)
            failures.append(exc)
            return None

    g = settings.google
    if g.enabled:
        client = clients.get("google") or attempt("google", lambda: GoogleReportsClient.from_settings(g, environ))
        lag, delay = timedelta(minutes=g.lag_window_minutes), timedelta(minutes=g.delay_minutes)
        for app in g.applications if client else []:
            window = next_live_window(warehouse, SOURCE_GOOGLE, app, now, lag, delay, max_catch_up)
            stats = attempt(f"google/{app}", lambda: poll_google(warehouse, client, app, window, now))
            if stats is not None:
                results[f"{SOURCE_GOOGLE}/{app}"] = stats
    a = settings.slack_audit
    if a.enabled:
        client = clients.get("slack_audit") or attempt(
            "slack_audit", lambda: SlackAuditClient.from_settings(a, environ)
        )
        if client:
            lag, delay = timedelta(minutes=a.lag_window_minutes), timedelta(minutes=a.delay_minutes)
            window = next_live_window(warehouse, SOURCE_SLACK_AUDIT, SOURCE_SLACK_AUDIT, now, lag, delay, max_catch_up)
            stats = attempt("slack_audit", lambda: poll_slack_audit(warehouse, client, window, now))
            if stats is not None:
                results[f"{SOURCE_SLACK_AUDIT}/{SOURCE_SLACK_AUDIT}"] = stats
    s = settings.slack_access
    if s.enabled:
        client = clients.get("slack_access") or attempt(
            "slack_access", lambda: SlackAccessLogsClient.from_settings(s, environ)
        )
        outcome = attempt("slack_access", lambda: poll_slack_access(warehouse, client, now)) if client else None
        if outcome is not None:
            results[f"{SOURCE_SLACK_ACCESS}/{SOURCE_SLACK_ACCESS}"], events = outcome
    if failures:
        raise PollRunFailed(failures, results, events)
    return results, events


class PollRunFailed(PollError):
    """Some sources of a live run failed; the others were landed (their stats and events are attached)."""

    def __init__(self, failures: list[Exception], results: dict[str, PollStats], events: pd.DataFrame):
        super().__init__(f"{len(failures)} poll(s) failed: " + "; ".join(str(f) for f in failures))
        self.failures = failures
        self.results = results
        self.events = events
