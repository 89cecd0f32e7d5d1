"""Events built as row tuples, columns made in one transposition: the same frame and quarantine as dict by dict."""

import gc
import json
from datetime import datetime
from operator import itemgetter

import numpy as np
import pandas as pd
import pytest

from watch_pipeline.core import normalize
from watch_pipeline.core.normalize import (
    BASE_COLUMNS, BUILT_COLUMNS, _FROM_RAW, _per_record, _quarantine_row, _raw_row, google_event_rows,
    google_events, normalise, normalise_records, slack_audit_event, slack_audit_row, with_raw_text,
)
from watch_pipeline.core.normalize import (  # what the reference builders below use
    _SLACK_FAILURE, _SLACK_SUCCESS, NormaliseError, _join, flatten_parameters, google_outcome, schema,
)
from watch_pipeline.core.raw import gc_paused, google_record, records_frame, slack_audit_record
from watch_pipeline.core.raw import loads_json as _loads  # what normalise parses the raw texts with
from watch_pipeline.core.schema import (
    OUTCOME_FAILURE, OUTCOME_INFO, OUTCOME_SUCCESS, OUTCOME_WARNING, SOURCE_GOOGLE, SOURCE_SLACK_AUDIT, stable_id,
)

WHEN = datetime(2026, 10, 5, 10)


def _activity(uq, **kw):
    item = {"kind": "admin#reports#activity",
            "id": {"time": "2026-10-05T10:00:00.000Z", "uniqueQualifier": uq, "applicationName": "login", "customerId": "C1"},
            "actor": {"email": "a@acme.example", "profileId": "1184"}, "ipAddress": "73.1.83.24",
            "events": [{"type": "login", "name": "login_verification",
                        "parameters": [{"name": "login_challenge_method", "multiValue": ["password", "google_prompt"]},
                                       {"name": "login_challenge_status", "value": "Challenge Failed"},
                                       {"name": "is_suspicious", "boolValue": True}]},
                       {"type": "account_warning", "name": "suspicious_login",
                        "parameters": [{"name": "affected_email_address", "value": "a@acme.example"},
                                       {"name": "n", "intValue": "12"}]},
                       {"type": "auth", "name": "authorize", "parameters": [{"name": "app_name", "value": "Zoom"},
                                                                            {"name": "client_id", "value": "77"}]}]}
    item.update(kw)
    return item


def _entry(i, **kw):
    entry = {"id": f"e-{i}", "date_create": 1791194400 + i, "action": "user_login",
             "actor": {"type": "user", "user": {"id": "W1", "email": "a@acme.example"}},
             "entity": {"type": "file", "file": {"id": "F1", "name": "x"}},
             "context": {"ua": "UA", "ip_address": "95.112.98.50", "session_id": 12345, "app": {"name": "Zapier"}},
             "details": {"reason": ["a", "b"], "previous_ip_address": "1.2.3.4", "previous_ua": "old"}}
    entry.update(kw)
    return entry


# The builders as they were (dict literals), kept here as the reference the row builders are held to.
def _orig_google_events(item: dict, raw_row: dict) -> list[dict]:
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
            {
                "event_id": stable_id(app, ident.get("customerId"), ident.get("time"), ident.get("uniqueQualifier"), position, name),
                "source": SOURCE_GOOGLE,
                "app": app,
                "event_type": etype,
                "action": name,
                "outcome": google_outcome(etype, name, params),
                "event_time": raw_row["record_time"],
                "actor_raw": actor_raw,
                "actor_id": actor_id,
                "ip": item.get("ipAddress") or "",
                "user_agent": "",
                "session_id": "",
                "login_type": _join(params.get("login_type")),
                "oauth_client": _join(params.get("app_name") or params.get("client_id") or ""),
                "target": _join(params.get("affected_email_address") or params.get("doc_id") or params.get("app_name") or ""),
                "access_count": 1,
                "vendor_suspicious": suspicious,
                "vendor_reasons": reasons,
                "challenge_method": _join(params.get("login_challenge_method")),
                "challenge_status": _join(params.get("login_challenge_status")),
                "failure_type": _join(params.get("login_failure_type") or params.get("failure_type")),
                "previous_ip": "",
                "previous_ua": "",
            }
        )
    return rows


def _orig_slack_audit_event(entry: dict, raw_row: dict) -> dict:
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
    return {
        "event_id": stable_id(SOURCE_SLACK_AUDIT, entry.get("id")),
        "source": SOURCE_SLACK_AUDIT,
        "app": schema.APP_SLACK_AUDIT,
        "event_type": etype,
        "action": action,
        "outcome": outcome,
        "event_time": raw_row["record_time"],
        "actor_raw": actor_raw,
        "actor_id": str(user.get("id") or ""),
        "ip": ctx.get("ip_address") or "",
        "user_agent": ctx.get("ua") or "",
        "session_id": str(ctx.get("session_id") or ""),
        "login_type": "",
        "oauth_client": str((ctx.get("app") or {}).get("name") or "") if isinstance(ctx.get("app"), dict) else "",
        "target": str(target_obj.get("id") or target_obj.get("name") or "") if isinstance(target_obj, dict) else "",
        "access_count": 1,
        "vendor_suspicious": action == "anomaly",
        "vendor_reasons": _join(reasons) if isinstance(reasons, list) else (str(reasons) if reasons else ""),
        "challenge_method": "",
        "challenge_status": "",
        "failure_type": "",
        "previous_ip": str(details.get("previous_ip_address") or "") if isinstance(details, dict) else "",
        "previous_ua": str(details.get("previous_ua") or "") if isinstance(details, dict) else "",
    }



def _old_per_record(raw, build, quarantined):
    """The driver as it was: one dict per event, one pass per column."""
    texts = raw["raw"].tolist()
    events, positions = [], []
    for i, text in enumerate(texts):
        try:
            rows = build(json.loads(text), {"record_time": None})
        except (normalize.NormaliseError, json.JSONDecodeError, TypeError, AttributeError) as exc:
            quarantined.append(_quarantine_row(_raw_row(raw, i), str(exc) or type(exc).__name__))
            continue
        events.extend(rows)
        positions.extend([i] * len(rows))
    names = [c for c in BASE_COLUMNS if c not in _FROM_RAW and c in events[0]]
    frame = pd.DataFrame({c: list(map(itemgetter(c), events)) for c in names})
    take = np.asarray(positions, dtype=np.intp)
    for col, raw_col in _FROM_RAW.items():
        frame[col] = raw[raw_col].take(take).reset_index(drop=True)
    return frame.reindex(columns=BASE_COLUMNS)


@pytest.fixture
def raw_google():
    items = [_activity("1"), _activity("2", actor={"profileId": "99"}), _activity("3", actor={}),
             _activity("4", events=[]), _activity("5", events={"type": "login", "name": "login_success"}),
             _activity("6", events=[{"type": "login"}]), _activity("7", ipAddress=None),
             _activity("8", events=[{"type": "login", "name": "login_failure",
                                     "parameters": [{"name": "login_failure_type", "value": "login_failure_invalid_password"}]}])]
    frame = records_frame([google_record(i) for i in items], "g", datetime(2026, 10, 6))
    broken = frame.iloc[:2].copy()
    broken["raw"] = ["{not json", "[1, 2]"]
    broken["record_key"] = ["k1", "k2"]
    return pd.concat([frame, broken], ignore_index=True)


@pytest.fixture
def raw_audit():
    entries = [_entry(0), _entry(1, action="anomaly", details={"reason": "odd"}), _entry(2, action="user_login_failed"),
               _entry(3, actor={}), _entry(4, action=""), _entry(5, context={"app": "not a dict"}, details=None),
               _entry(6, entity={"type": "user"}), _entry(7, actor={"user": {"id": "U7"}})]
    return records_frame([slack_audit_record(e) for e in entries], "a", datetime(2026, 10, 6))


def test_google_rows_make_the_frame_dicts_made(raw_google):
    q_old, q_new = [], []
    old = _old_per_record(raw_google, _orig_google_events, q_old)
    new = _per_record(raw_google, google_event_rows, q_new)
    pd.testing.assert_frame_equal(new, old)
    assert q_new == q_old and len(q_new) == 5  # no actor, no events, no name, two broken texts
    assert set(new["outcome"]) == {"failure", "warning", "success"}


def test_audit_rows_make_the_frame_dicts_made(raw_audit):
    q_old, q_new = [], []
    old = _old_per_record(raw_audit, lambda e, r: [_orig_slack_audit_event(e, r)], q_old)
    new = _per_record(raw_audit, normalize._slack_audit_rows, q_new)
    pd.testing.assert_frame_equal(new, old)
    assert q_new == q_old and len(q_new) == 2


def test_dict_builders_are_the_dicts_they_were():
    for item in (_activity("1"), _activity("5", events={"type": "login", "name": "login_success"})):
        assert google_events(item, {"record_time": WHEN}) == _orig_google_events(item, {"record_time": WHEN})
        assert [tuple(e.values()) for e in google_events(item, {"record_time": WHEN})] == google_event_rows(item, WHEN)
    for entry in (_entry(0), _entry(1, action="anomaly", details={"reason": "odd"}), _entry(5, context={"app": "x"}, details=None)):
        assert slack_audit_event(entry, {"record_time": WHEN}) == _orig_slack_audit_event(entry, {"record_time": WHEN})
        assert list(slack_audit_event(entry, {"record_time": WHEN})) == list(BUILT_COLUMNS)


def test_normalise_frame_unchanged_by_the_row_builders(raw_google, raw_audit, monkeypatch):
    new = normalise(raw_google, raw_audit)
    monkeypatch.setattr(normalize, "_per_record", lambda raw, build, q, raw_text=True: _old_per_record(
        raw, _orig_google_events if build is google_event_rows else (lambda e, r: [_orig_slack_audit_event(e, r)]), q))
    old = normalise(raw_google, raw_audit)
    pd.testing.assert_frame_equal(new.events, old.events)
    pd.testing.assert_frame_equal(new.quarantined, old.quarantined)
    assert new.slack_ids == old.slack_ids


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, null]}', ' {"a": 1} ', "\ufeff{}", "{bad", "[1] x", "", b'{"b": 2}', None, 5])
def test_loads_is_json_loads(text):
    def outcome(f):
        try:
            return "ok", f(text)
        except Exception as exc:  # noqa: BLE001 - the exception itself is what is compared
            return type(exc), str(exc)
    assert outcome(_loads) == outcome(json.loads)


def test_gc_paused_restores_the_collector():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError):
        with gc_paused():
            raise KeyError("x")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


def test_one_event_per_record_takes_the_raw_columns_as_they_are(raw_audit, raw_google):
    valid = raw_audit.iloc[[0, 1, 2, 5, 6, 7]].reset_index(drop=True)  # one event each, nothing quarantined
    q = []
    new = _per_record(valid, normalize._slack_audit_rows, q)
    pd.testing.assert_frame_equal(new, _old_per_record(valid, lambda e, r: [_orig_slack_audit_event(e, r)], []))
    assert not q and new["raw"].tolist() == valid["raw"].tolist()
    # one event for most records and two for one, one record quarantined: as many events as records, gathered
    mixed = pd.concat([raw_google.iloc[[6]], raw_audit.iloc[[3]]], ignore_index=True)
    mixed["raw"] = [json.dumps(_activity("x", events=_activity("x")["events"][:2])), mixed["raw"][1]]
    q = []
    new = _per_record(mixed, google_event_rows, q)
    assert len(new) == len(mixed) == 2 and len(q) == 1
    assert new["raw"].tolist() == [mixed["raw"][0]] * 2


def test_records_without_raw_text_get_it_back_by_position(raw_google, raw_audit):
    """A helper process normalises without the raw texts (events.prepare_day); with_raw_text gathers them back."""
    multi = raw_google.copy()
    multi.loc[0, "raw"] = json.dumps(_activity("m", events=_activity("m")["events"] * 3))  # three events, one record
    for g, a in ((multi, raw_audit), (raw_google.iloc[:0], raw_audit), (multi, raw_audit.iloc[:0])):
        whole = normalise_records(g, a)
        bare = normalise_records(g, a, raw_text=False)
        assert all(not len(f) or f["raw"].dtype.kind == "i" for f in bare[0])  # positions, not texts
        back = with_raw_text(bare, g, a)
        for x, y in zip(back[0], whole[0]):
            pd.testing.assert_frame_equal(x, y)
        assert back[1] == whole[1]
    assert len(whole[0][0]) > len(multi) - 5  # (the multi-event record is gathered, not taken one to one)
