"""Raw landed records -> events in the normalised schema (before enrichment), plus quarantine rows.

Google activities can carry several ``events[]`` under one ``id``: they are exploded and the event's index and name
go into the key. Slack accessLogs rows are aggregates: they become events by diffing against earlier rows
(:mod:`watch_pipeline.core.accesslogs`). A record that lacks what the schema requires (time, actor, id) is
quarantined with the reason; the others go on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from watch_pipeline.core import schema
from watch_pipeline.core.raw import gc_paused, loads_json
from watch_pipeline.core.schema import (
    OUTCOME_CHALLENGE,
    OUTCOME_FAILURE,
    OUTCOME_INFO,
    OUTCOME_SUCCESS,
    OUTCOME_WARNING,
    SOURCE_GOOGLE,
    SOURCE_SLACK_ACCESS,
    SOURCE_SLACK_AUDIT,
    stable_id,
)

BASE_COLUMNS = [c.name for c in schema.EVENT_BASE_COLUMNS]


class NormaliseError(ValueError):
    pass


# ----------------------------------------------------------------------------------------------------------------
# Google Reports activities
# ----------------------------------------------------------------------------------------------------------------


def param_value(param: dict) -> Any:
    """The value of a Reports API parameter, whichever of the seven value kinds carries it."""
    for key in ("value", "boolValue", "intValue", "multiValue", "multiIntValue"):
        if key in param:
            v = param[key]
            if key == "intValue":
                return _int(v)
            if key == "multiIntValue":
                return [_int(x) for x in v] if isinstance(v, list) else v
            return v
    if "messageValue" in param:
        return flatten_parameters((param["messageValue"] or {}).get("parameter", []))
    if "multiMessageValue" in param:
        return [flatten_parameters((m or {}).get("parameter", [])) for m in param["multiMessageValue"] or []]
    return None


def _int(v: Any) -> Any:
    # int64 values arrive as JSON strings (they exceed JavaScript's safe integers).
    try:
        return int(v)
    except (TypeError, ValueError):
        return v


def flatten_parameters(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(params, list):
        for p in params:
            if isinstance(p, dict) and isinstance(p.get("name"), str):
                out[p["name"]] = param_value(p)
    return out


_GOOGLE_FAILURE = ("login_failure", "risky_sensitive_action_blocked")
_GOOGLE_CHALLENGE = ("login_challenge", "login_verification")


def google_outcome(event_type: str, name: str, params: dict) -> str:
    if event_type == "account_warning" or name.startswith("suspicious_") or name.startswith("account_disabled"):
        return OUTCOME_WARNING
    if name in _GOOGLE_FAILURE or name.endswith("_failure"):
        return OUTCOME_FAILURE
    if name in _GOOGLE_CHALLENGE:
        status = str(params.get("login_challenge_status", "")).lower()
        if status and "pass" not in status:
            return OUTCOME_FAILURE
        return OUTCOME_CHALLENGE
    if name in ("login_success", "authorize") or name.endswith("_success"):
        return OUTCOME_SUCCESS
    return OUTCOME_INFO


def _join(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


# The columns the record builders fill, in the order of their rows. event_time is the raw row's record_time; the
# driver fills it (and partition_date, ingest_time, raw) from the raw table by position, so its rows carry None.
BUILT_COLUMNS = (
    "event_id", "source", "app", "event_type", "action", "outcome", "event_time", "actor_raw", "actor_id", "ip",
    "user_agent", "session_id", "login_type", "oauth_client", "target", "access_count", "vendor_suspicious",
    "vendor_reasons", "challenge_method", "challenge_status", "failure_type", "previous_ip", "previous_ua",
)


def google_event_rows(item: dict, when: Any = None) -> list[tuple]:
    """The events of one Reports API activity as rows of :data:`BUILT_COLUMNS` (event_time: `when`)."""
    ident = item.get("id") or {}
    actor = item.get("actor") or {}
    actor_raw = actor.get("email") or actor.get("key") or ""
    actor_id = str(actor.get("profileId") or "")
    if not actor_raw and not actor_id:
        raise NormaliseError("activity has no actor (actor.email, actor.profileId or actor.key)")
    if not actor_raw:
        actor_raw = actor_id
    events = item.get("events")
    presplit = isinstance(events, dict)  # Elastic's archives split events[] into one line each
    if presplit:
        events = [events]
    if not isinstance(events, list) or not events:
        raise NormaliseError("activity has no events")
    app = str(ident.get("applicationName") or "")
    rows = []
    for index, ev in enumerate(events):
        if not isinstance(ev, dict) or not isinstance(ev.get("name"), str):
            raise NormaliseError(f"event {index} has no name")
        name = ev["name"]
        etype = str(ev.get("type") or "")
        params = flatten_parameters(ev.get("parameters"))
        position = f"split:{stable_id(json.dumps(ev, sort_keys=True), length=12)}" if presplit else index
        suspicious = bool(params.get("is_suspicious") is True) or etype == "account_warning"
        reasons = name if etype == "account_warning" else ("is_suspicious" if params.get("is_suspicious") is True else "")
        rows.append(
            (
                stable_id(app, ident.get("customerId"), ident.get("time"), ident.get("uniqueQualifier"), position, name),
                SOURCE_GOOGLE,
                app,
                etype,
                name,
                google_outcome(etype, name, params),
                when,
                actor_raw,
                actor_id,
                item.get("ipAddress") or "",
                "",
                "",
                _join(params.get("login_type")),
                _join(params.get("app_name") or params.get("client_id") or ""),
                _join(params.get("affected_email_address") or params.get("doc_id") or params.get("app_name") or ""),
                1,
                suspicious,
                reasons,
                _join(params.get("login_challenge_method")),
                _join(params.get("login_challenge_status")),
                _join(params.get("login_failure_type") or params.get("failure_type")),
                "",
                "",
            )
        )
    return rows


def google_events(item: dict, raw_row: dict) -> list[dict]:
    """The events of one Reports API activity, one dict per event (event_time: the raw row's record_time)."""
    return [dict(zip(BUILT_COLUMNS, row)) for row in google_event_rows(item, raw_row["record_time"])]


# ----------------------------------------------------------------------------------------------------------------
# Slack Audit Logs entries
# ----------------------------------------------------------------------------------------------------------------

_SLACK_SUCCESS = {"user_login"}
_SLACK_FAILURE = {"user_login_failed"}


def slack_audit_row(entry: dict, when: Any = None) -> tuple:
    """One Slack Audit Logs entry as a row of :data:`BUILT_COLUMNS` (event_time: `when`)."""
    actor = entry.get("actor") or {}
    user = actor.get("user") or {}
    actor_raw = user.get("email") or user.get("id") or ""
    if not actor_raw:
        raise NormaliseError("audit entry has no actor user (actor.user.email or actor.user.id)")
    ctx = entry.get("context") or {}
    details = entry.get("details") or {}
    entity = entry.get("entity") or {}
    etype = str(entity.get("type") or "")
    target_obj = entity.get(etype) if isinstance(entity.get(etype), dict) else {}
    action = str(entry.get("action") or "")
    if not action:
        raise NormaliseError("audit entry has no action")
    reasons = details.get("reason") if isinstance(details, dict) else None
    if action == "anomaly":
        outcome = OUTCOME_WARNING
    elif action in _SLACK_SUCCESS:
        outcome = OUTCOME_SUCCESS
    elif action in _SLACK_FAILURE or action.endswith("_failed"):
        outcome = OUTCOME_FAILURE
    else:
        outcome = OUTCOME_INFO
    return (
        stable_id(SOURCE_SLACK_AUDIT, entry.get("id")),
        SOURCE_SLACK_AUDIT,
        schema.APP_SLACK_AUDIT,
        etype,
        action,
        outcome,
        when,
        actor_raw,
        str(user.get("id") or ""),
        ctx.get("ip_address") or "",
        ctx.get("ua") or "",
        str(ctx.get("session_id") or ""),
        "",
        str((ctx.get("app") or {}).get("name") or "") if isinstance(ctx.get("app"), dict) else "",
        str(target_obj.get("id") or target_obj.get("name") or "") if isinstance(target_obj, dict) else "",
        1,
        action == "anomaly",
        _join(reasons) if isinstance(reasons, list) else (str(reasons) if reasons else ""),
        "",
        "",
        "",
        str(details.get("previous_ip_address") or "") if isinstance(details, dict) else "",
        str(details.get("previous_ua") or "") if isinstance(details, dict) else "",
    )


def slack_audit_event(entry: dict, raw_row: dict) -> dict:
    """One Slack Audit Logs entry as an event dict (event_time: the raw row's record_time)."""
    return dict(zip(BUILT_COLUMNS, slack_audit_row(entry, raw_row["record_time"])))


def _slack_audit_rows(entry: dict) -> list[tuple]:
    return [slack_audit_row(entry)]


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class NormaliseResult:
    events: pd.DataFrame  # EVENT_BASE_COLUMNS
    quarantined: pd.DataFrame  # QUARANTINE_COLUMNS (without quarantined_at)
    slack_ids: dict[str, str]  # Slack user id -> email learned from audit entries


def _quarantine_row(raw_row: dict, reason: str, stage: str = "normalise") -> dict:
    return {
        "quarantine_id": stable_id("normalise", raw_row.get("record_key"), reason),
        "partition_date": raw_row.get("partition_date"),
        "stage": stage,
        "source": raw_row.get("source", ""),
        "origin": raw_row.get("origin") or "",
        "reason": reason,
        "raw_text": raw_row.get("raw", ""),
    }


# Columns copied from the raw row onto each of its events, by position (never per event in Python).
_FROM_RAW = {"event_time": "record_time", "partition_date": "partition_date", "ingest_time": "ingest_time", "raw": "raw"}


def _raw_row(raw: pd.DataFrame, i: int) -> dict:
    """Row `i` of a raw-table frame as a dict (only for the few records that are quarantined)."""
    return {c: raw[c].iloc[i] for c in raw.columns}


def _gather(values: pd.Series, positions: np.ndarray) -> pd.Series:
    """``values`` at `positions` (the raw row of each event), indexed 0..n-1."""
    one_each = len(positions) == len(values) and np.array_equal(positions, np.arange(len(values)))  # no gather
    return (values if one_each else values.take(positions)).reset_index(drop=True)


def _per_record(raw: pd.DataFrame, build: Callable[[dict], list[tuple]], quarantined: list,
                raw_text: bool = True) -> pd.DataFrame:
    """Build the events of every raw row (`build`: rows of :data:`BUILT_COLUMNS`); rows that cannot be normalised
    go to `quarantined`.

    Only the JSON text is walked in Python, into tuples that become columns in one transposition; the raw row's
    time, day, ingest time and text are gathered onto the events by position afterwards (without `raw_text`, the
    ``raw`` column holds the position instead: see :func:`with_raw_text`)."""
    if raw is None or raw.empty:
        return pd.DataFrame(columns=BASE_COLUMNS)
    texts = raw["raw"].tolist()
    rows: list[tuple] = []
    positions: list[int] = []
    failed: list[tuple[int, str]] = []
    with gc_paused():
        for i, text in enumerate(texts):
            try:
                built = build(loads_json(text))
            except (NormaliseError, json.JSONDecodeError, TypeError, AttributeError) as exc:
                failed.append((i, str(exc) or type(exc).__name__))
                continue
            rows.extend(built)
            positions.extend([i] * len(built))
        columns = list(zip(*rows))
    quarantined.extend(_quarantine_row(_raw_row(raw, i), reason) for i, reason in failed)
    if not rows:
        return pd.DataFrame(columns=BASE_COLUMNS)
    frame = pd.DataFrame({c: list(values) for c, values in zip(BUILT_COLUMNS, columns) if c not in _FROM_RAW})
    take = np.asarray(positions, dtype=np.intp)
    for col, raw_col in _FROM_RAW.items():
        if col == "raw" and not raw_text:
            frame[col] = take
            continue
        values = raw[raw_col] if raw_col in raw.columns else pd.Series([None] * len(raw), dtype=object)
        frame[col] = _gather(values, take)
    return frame.reindex(columns=BASE_COLUMNS)  # actor: NaN, as when the events were built from dicts


def with_raw_text(records: tuple[list[pd.DataFrame], list[dict]], raw_google: pd.DataFrame,
                  raw_slack_audit: pd.DataFrame) -> tuple[list[pd.DataFrame], list[dict]]:
    """``normalise_records(..., raw_text=False)`` made what ``normalise_records(...)`` gives: each event's raw
    text gathered from the raw rows by the position its ``raw`` column holds (so a helper process that normalised
    the records need not send the texts back)."""
    parts, quarantined = records
    for frame, raw in zip(parts, (raw_google, raw_slack_audit)):
        if len(frame):
            frame["raw"] = _gather(raw["raw"], frame["raw"].to_numpy(dtype=np.intp))
    return parts, quarantined


def normalise_records(raw_google: pd.DataFrame, raw_slack_audit: pd.DataFrame,
                      raw_text: bool = True) -> tuple[list[pd.DataFrame], list[dict]]:
    """The events of the Reports API activities and of the Slack Audit Logs entries ([google, audit]), and the
    quarantine rows of those that cannot be normalised: the per-record part of :func:`normalise`, which needs no
    state (the accessLogs part does). Without `raw_text`, the events' ``raw`` column holds the position of their
    raw row (:func:`with_raw_text`)."""
    quarantined: list[dict] = []
    parts = [
        _per_record(raw_google, google_event_rows, quarantined, raw_text),
        _per_record(raw_slack_audit, _slack_audit_rows, quarantined, raw_text),
    ]
    return parts, quarantined


def normalise(
    raw_google: pd.DataFrame,
    raw_slack_audit: pd.DataFrame,
    raw_slack_access: pd.DataFrame | None = None,
    prior_slack_access: pd.DataFrame | None = None,
    records: tuple[list[pd.DataFrame], list[dict]] | None = None,
) -> NormaliseResult:
    """Raw-table frames of one or more partitions -> base events + quarantine rows.

    `records` is what ``normalise_records(raw_google, raw_slack_audit)`` gives, when it was computed already (in a
    helper process, while the day before was built)."""
    parts, quarantined = records if records is not None else normalise_records(raw_google, raw_slack_audit)
    parts, quarantined = list(parts), list(quarantined)
    audit = parts[1]
    slack_ids: dict[str, str] = {}
    if len(audit):
        pairs = (audit["actor_id"] != "") & audit["actor_raw"].str.contains("@", regex=False)
        slack_ids = dict(zip(audit["actor_id"][pairs].tolist(), audit["actor_raw"][pairs].tolist()))  # the last pairing wins
    if raw_slack_access is not None and len(raw_slack_access):
        parts.append(slack_access_events(raw_slack_access, prior_slack_access, quarantined))
    parts = [f for f in parts if len(f)]
    if parts:
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        frame = frame.drop_duplicates("event_id", keep="first").reset_index(drop=True)
    else:
        frame = pd.DataFrame(columns=BASE_COLUMNS)
    q = pd.DataFrame(quarantined, columns=[c.name for c in schema.QUARANTINE_COLUMNS if c.name != "quarantined_at"])
    return NormaliseResult(frame, q, slack_ids)


def access_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """accessLogs raw-table rows -> one column per JSON field, plus the landed row's key, day, ingest time and text.

    A frame that is parsed already (an accessLogs state snapshot, or this function's own output: every landed row
    has a ``user_id``, a raw table has no such column) is returned as it is, so a day's rows are parsed once."""
    if "raw" not in raw.columns or "user_id" in raw.columns:
        return raw
    texts = raw["raw"].tolist()
    with gc_paused():
        out = pd.DataFrame([loads_json(t) for t in texts]) if texts else pd.DataFrame()
    # the landed row's columns win over same-named JSON fields
    for col in ("record_key", "partition_date", "ingest_time"):
        out[col] = raw[col].to_numpy() if col in raw.columns else None
    out["raw"] = texts
    return out


def _access_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns of `frame` that access_events reads, string columns as object columns of the same values.

    access_events walks its rows in Python: from an Arrow-backed string column every value costs a call into pandas,
    from an object column none, and the values seen are the same (str, NaN for missing). The other columns (the raw
    text above all) would only widen every row it walks."""
    from watch_pipeline.core.accesslogs import ROW_COLUMNS

    return pd.DataFrame({c: frame[c].astype(object) if isinstance(frame[c].dtype, pd.StringDtype) else frame[c]
                         for c in ROW_COLUMNS if c in frame.columns}, index=frame.index)


def slack_access_events(raw: pd.DataFrame, prior: pd.DataFrame | None, quarantined: list) -> pd.DataFrame:
    """accessLogs aggregate rows -> access events by diffing against earlier rows of the same (user, IP, UA).

    `prior` is either raw-table rows (JSON in `raw`) or an already parsed state (see :func:`access_state`)."""
    from watch_pipeline.core.accesslogs import access_events

    rows = access_frame(raw)
    prior_rows = access_frame(prior) if prior is not None and len(prior) else None
    with gc_paused():  # access_events walks the rows in Python
        diff = access_events(_access_input(rows), _access_input(prior_rows if prior_rows is not None else rows.iloc[0:0]))
    if diff.empty:
        return pd.DataFrame(columns=BASE_COLUMNS)
    meta = rows[["record_key", "partition_date", "ingest_time", "raw"]].drop_duplicates("record_key")
    d = diff.merge(meta, on="record_key", how="left")
    n = len(d)
    empty = [""] * n
    frame = pd.DataFrame(
        {
            "event_id": [
                stable_id(SOURCE_SLACK_ACCESS, k, i, kind)
                for k, i, kind in zip(d["record_key"], d.get("event_index", pd.Series([0] * n)), d.get("kind", pd.Series([""] * n)))
            ],
            "partition_date": d["partition_date"],
            "source": SOURCE_SLACK_ACCESS,
            "app": schema.APP_SLACK_ACCESS,
            "event_type": "access",
            "action": "access",
            "outcome": OUTCOME_SUCCESS,
            "event_time": d["event_time"],
            "actor_raw": d["user_id"].fillna(""),
            "actor_id": d["user_id"].fillna(""),
            "ip": d["ip"].fillna(""),
            "user_agent": d["user_agent"].fillna(""),
            "session_id": empty,
            "login_type": empty,
            "oauth_client": empty,
            "target": empty,
            "access_count": d["access_count"].fillna(1).astype(int),
            "vendor_suspicious": False,
            "vendor_reasons": empty,
            "challenge_method": empty,
            "challenge_status": empty,
            "failure_type": empty,
            "previous_ip": empty,
            "previous_ua": empty,
            "ingest_time": d["ingest_time"],
            "raw": d["raw"],
        }
    )
    return frame.reindex(columns=BASE_COLUMNS)


ACCESS_STATE_COLUMNS = ("user_id", "username", "ip", "user_agent", "date_first", "date_last", "count", "record_key")
ACCESS_COMBO = ("user_id", "ip", "user_agent")


def access_combos(frame: pd.DataFrame) -> pd.MultiIndex:
    """The (user, IP, UA) combination of each row; a null is its own value, ''."""
    cols = frame.reindex(columns=list(ACCESS_COMBO))
    return pd.MultiIndex.from_arrays([cols[c].astype(object).where(cols[c].notna(), "").astype(str).to_numpy(dtype=object)
                                      for c in ACCESS_COMBO])


def access_state(prior: pd.DataFrame | None, raw_today: pd.DataFrame | None, keep_since: float | None = None) -> pd.DataFrame:
    """The newest observed row per (user, IP, user agent) after adding today's raw rows to `prior`.

    This is all a later day needs to diff against: each day stores these rows for the combinations it saw, and a
    later day reads them back for its own combinations only.
    Combinations last active before `keep_since` (epoch seconds) are dropped; one that comes back is new again."""
    parts = [f for f in (prior, access_frame(raw_today) if raw_today is not None and len(raw_today) else None) if f is not None and len(f)]
    if not parts:
        return pd.DataFrame(columns=list(ACCESS_STATE_COLUMNS))
    frame = pd.concat([p.reindex(columns=list(ACCESS_STATE_COLUMNS)) for p in parts], ignore_index=True)
    last = pd.to_numeric(frame["date_last"], errors="coerce")
    count = pd.to_numeric(frame["count"], errors="coerce")
    frame = frame.assign(_last=last, _count=count)
    frame = frame.sort_values(["_last", "_count"], kind="stable")
    newest = frame[~access_combos(frame).duplicated(keep="last")]
    if keep_since is not None:
        newest = newest[newest["_last"] >= keep_since]
    return newest[list(ACCESS_STATE_COLUMNS)].reset_index(drop=True)
