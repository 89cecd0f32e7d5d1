"""Slack Audit Logs and team.accessLogs pollers against loopback servers replaying the real payload shapes."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from datetime import datetime

import pandas as pd
import pytest
from pollerfakes import SAAS, PagedAPI, chain, json_response, load_pages

from watch_pipeline.core.accesslogs import replay_access_events
from watch_pipeline.core.raw import slack_audit_record
from watch_pipeline.core.windows import daily_window
from watch_pipeline.pollers.http import CredentialsRejected, TransientHTTPError
from watch_pipeline.pollers.live import fetch_slack_audit_day, poll_slack_access, poll_slack_audit
from watch_pipeline.pollers.slack import SlackAccessLogsClient, SlackAuditClient, SlackPaidPlanRequired

TOKEN = "xoxp-test-audit-token-81f2"
DAY = "2018-03-16"  # grove's audit entries: 2018-03-16 15:32 UTC
DAY_OLDEST, DAY_LATEST = "1521158400", str(1521158400 + 86399)


def set_cursor(page, cursor):
    page["response_metadata"] = {"next_cursor": cursor or ""}


def grove_audit_pages(peer_data):
    return load_pages(peer_data, "grove", "tests", "fixtures", "slack", "audit")


def entries(peer_data, n, start=1521200000, step=600, prefix="e"):
    """`n` distinct user_login entries shaped like grove's, newest first (the API's order)."""
    template = grove_audit_pages(peer_data)[0]["entries"][0]
    out = []
    for i in range(n):
        e = copy.deepcopy(template)
        e["id"] = f"{prefix}-{i:04d}"
        e["date_create"] = start + i * step
        out.append(e)
    return out[::-1]


def three_pages(peer_data, items):
    pages = [{"ok": True, "entries": items[i::3]} for i in range(3)]
    return chain(pages, set_cursor, ["c1", "c2"])


def audit_client(httpserver, retry, limit=200):
    return SlackAuditClient(TOKEN, httpserver.url_for("/audit/v1/"), limit, retry=retry)


def serve_audit(httpserver, api):
    httpserver.expect_request("/audit/v1/logs", method="GET").respond_with_handler(api)


def test_grove_pages_follow_the_cursor_and_repeat_oldest_latest(httpserver, fast_retry, peer_data):
    pages = grove_audit_pages(peer_data)[:2]
    api = PagedAPI({None: pages[0], "CURSOR_VALUE": pages[1]}, "cursor")
    serve_audit(httpserver, api)
    records, stats = fetch_slack_audit_day(audit_client(httpserver, fast_retry), DAY)
    assert sorted(r.record_key for r in records) == sorted(slack_audit_record(p["entries"][0]).record_key for p in pages)
    assert stats.pages == 2
    assert [r["args"].get("cursor") for r in api.requests] == [None, "CURSOR_VALUE"]
    for r in api.requests:
        assert (r["args"]["oldest"], r["args"]["latest"], r["args"]["limit"]) == (DAY_OLDEST, DAY_LATEST, "200")
        assert r["auth"] == f"Bearer {TOKEN}"


def test_three_pages_every_item_once_with_429_and_500_on_the_way(httpserver, fast_retry, sleeps, peer_data):
    items = entries(peer_data, 9)
    limited = json_response({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": "1"})
    boom = json_response({"ok": False, "error": "fatal_error"}, 500)
    api = PagedAPI(three_pages(peer_data, items), "cursor", faults={"c1": [limited], "c2": [boom]})
    serve_audit(httpserver, api)
    records, stats = audit_client(httpserver, fast_retry).fetch_window(*daily_window(DAY))
    assert sorted(r.record_key for r in records) == sorted(slack_audit_record(e).record_key for e in items)
    assert (stats.pages, stats.items) == (3, 9)
    assert [r["args"].get("cursor") for r in api.requests] == [None, "c1", "c1", "c2", "c2"]
    assert all(r["args"]["oldest"] == DAY_OLDEST and r["args"]["latest"] == DAY_LATEST for r in api.requests)
    assert len(sleeps.waits) == 2
    assert 1.0 <= sleeps.waits[0] <= 1.0 + fast_retry.jitter  # Retry-After honoured
    assert 0.5 <= sleeps.waits[1] <= 0.5 + fast_retry.jitter  # first exponential step


def test_a_read_timeout_is_retried(httpserver, fast_retry, sleeps, peer_data):
    items = entries(peer_data, 3)
    fast_retry = dataclasses.replace(fast_retry, timeout=0.5)

    def slow(request):
        time.sleep(fast_retry.timeout + 0.15)  # the server is single-threaded: keep the retry's wait short
        return json_response({"ok": True, "entries": []})

    api = PagedAPI(three_pages(peer_data, items), "cursor", faults={"c2": [slow]})
    serve_audit(httpserver, api)
    records, _ = audit_client(httpserver, fast_retry).fetch_window(*daily_window(DAY))
    assert len(records) == 3 and len(sleeps.waits) == 1


def test_401_fails_at_once_naming_the_env_var(httpserver, fast_retry, sleeps):
    api = PagedAPI({None: {}}, "cursor", faults={None: [json_response({"ok": False, "error": "invalid_authentication"}, 401)]})
    serve_audit(httpserver, api)
    with pytest.raises(CredentialsRejected, match=r"SLACK_AUDIT_TOKEN was rejected \(401 invalid_authentication\)"):
        audit_client(httpserver, fast_retry).fetch_window(*daily_window(DAY))
    assert len(api.requests) == 1 and sleeps.waits == []


def test_killed_after_page_2_of_3_writes_nothing(httpserver, fast_retry, warehouse, peer_data):
    client = audit_client(httpserver, fast_retry)
    serve_audit(httpserver, PagedAPI({None: {"ok": True, "entries": entries(peer_data, 2, prefix="old")}}, "cursor"))
    poll_slack_audit(warehouse, client, daily_window(DAY), now=datetime(2018, 3, 17, 1))
    before = warehouse.read_table("raw_slack_audit").sort_values("record_key").reset_index(drop=True)

    httpserver.clear()
    api = PagedAPI(three_pages(peer_data, entries(peer_data, 9)), "cursor", broken={"c2"})
    serve_audit(httpserver, api)
    with pytest.raises(TransientHTTPError):
        poll_slack_audit(warehouse, client, daily_window(DAY), now=datetime(2018, 3, 17, 2))
    assert sum(r["args"].get("cursor") == "c2" for r in api.requests) == fast_retry.attempts
    after = warehouse.read_table("raw_slack_audit").sort_values("record_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert sorted(warehouse.read_table("poll_state")["status"]) == ["failed", "ok"]


def test_overlapping_polls_and_a_late_entry_land_once(httpserver, fast_retry, warehouse, peer_data):
    base = entries(peer_data, 6, start=1521190000, step=600)  # 2018-03-16 08:46 .. 09:36
    first, second = base[1:], base[:3]  # entries 0-4, then 3-5: overlap on 3 and 4
    late = entries(peer_data, 1, start=1521190000 + 300, prefix="late")  # inside poll 1's window
    api = PagedAPI({None: {"ok": True, "entries": first}}, "cursor")
    serve_audit(httpserver, api)
    client = audit_client(httpserver, fast_retry)
    w1 = (datetime(2018, 3, 16, 8), datetime(2018, 3, 16, 9, 30))
    w2 = (datetime(2018, 3, 16, 8, 30), datetime(2018, 3, 16, 11))
    s1 = poll_slack_audit(warehouse, client, w1, now=datetime(2018, 3, 16, 9, 32))
    api.pages = {None: {"ok": True, "entries": second + late}}
    s2 = poll_slack_audit(warehouse, client, w2, now=datetime(2018, 3, 16, 11, 2))
    assert (s1.new, s1.duplicates, s1.late_arrivals) == (5, 0, 0)
    # Entry 5 (09:36) is new but after poll 1's end (09:30); the late one (08:51) lies inside poll 1's window.
    assert (s2.new, s2.duplicates, s2.late_arrivals) == (2, 2, 1)
    raw = warehouse.read_table("raw_slack_audit")
    assert len(raw) == 7 and raw["record_key"].is_unique
    assert api.requests[1]["args"]["oldest"] == str(int(pd.Timestamp(w2[0]).timestamp()))


# ------------------------------------------------------------------------------------------------------------
# team.accessLogs
# ------------------------------------------------------------------------------------------------------------

ACCESS_TOKEN_SLACK = "xoxp-test-access-token-77aa"


def access_client(httpserver, retry, team_id=None):
    return SlackAccessLogsClient(ACCESS_TOKEN_SLACK, httpserver.url_for("/api/"), team_id=team_id, limit=2, retry=retry)


def serve_access(httpserver, api):
    httpserver.expect_request("/api/team.accessLogs").respond_with_handler(api)


def test_access_logs_example_payload_with_cursor_paging(httpserver, fast_retry, peer_data):
    example = json.loads((peer_data / SAAS / "api-examples" / "slack_team_accessLogs_response.json").read_text())
    page1 = dict(example, logins=example["logins"][:1], response_metadata={"next_cursor": "dXNlcjpVMEc5V0ZYTlo="})
    page2 = dict(example, logins=example["logins"][1:], response_metadata={"next_cursor": ""})
    api = PagedAPI({None: page1, "dXNlcjpVMEc5V0ZYTlo=": page2}, "cursor")
    serve_access(httpserver, api)
    records, stats = access_client(httpserver, fast_retry, team_id="T1").fetch(before=1422922900)
    assert stats.pages == 2 and len(records) == 2
    assert {json.loads(r.raw)["username"] for r in records} == {"alice", "white_rabbit"}
    for r in api.requests:
        assert (r["args"]["limit"], r["args"]["team_id"], r["args"]["before"]) == ("2", "T1", "1422922900")


def test_paid_only_names_the_plan_requirement(httpserver, fast_retry, peer_data):
    error = json.loads((peer_data / SAAS / "api-examples" / "slack_team_accessLogs_error_paid_only.json").read_text())
    serve_access(httpserver, PagedAPI({None: error}, "cursor"))
    with pytest.raises(SlackPaidPlanRequired, match="paid Slack plans only") as info:
        access_client(httpserver, fast_retry).fetch()
    assert "paid_only" in str(info.value)


def test_access_invalid_auth_in_a_200_names_the_env_var(httpserver, fast_retry):
    serve_access(httpserver, PagedAPI({None: {"ok": False, "error": "invalid_auth"}}, "cursor"))
    with pytest.raises(CredentialsRejected, match=r"SLACK_ACCESS_TOKEN was rejected \(invalid_auth\)"):
        access_client(httpserver, fast_retry).fetch()


def login(user, ip, first, last, count):
    return {
        "user_id": user, "username": user.lower(), "date_first": first, "date_last": last, "count": count, "ip": ip,
        "user_agent": "SlackWeb Mozilla/5.0", "isp": "BigCo ISP", "country": "US", "region": "CA",
    }


def test_three_access_polls_into_the_warehouse_give_the_expected_events(httpserver, fast_retry, warehouse):
    polls = [
        [login("U1", "81.2.69.142", 1000, 1000, 1), login("U2", "89.160.20.112", 2000, 5000, 3)],
        [login("U1", "81.2.69.142", 1000, 7000, 4), login("U2", "89.160.20.112", 2000, 5000, 3)],
        [login("U1", "81.2.69.142", 1000, 9000, 4), login("U2", "89.160.20.112", 2000, 5000, 3),
         login("U2", "175.16.199.64", 8000, 8500, 2)],
    ]
    api = PagedAPI({}, "cursor")
    serve_access(httpserver, api)
    client = access_client(httpserver, fast_retry)
    got, incremental = [], []
    for i, rows in enumerate(polls):
        # Two pages per poll, newest first, as the API serves them.
        rows = sorted(rows, key=lambda r: -r["date_last"])
        api.pages = chain([{"ok": True, "logins": rows[:2]}, {"ok": True, "logins": rows[2:]}], set_cursor, ["next"])
        stats, events = poll_slack_access(warehouse, client, now=datetime(2024, 1, 1, i))
        incremental.append(events)
        got.append(sorted((e.user_id, e.ip, int(pd.Timestamp(e.event_time).timestamp()), e.access_count, e.kind)
                          for e in events.itertuples()))
    t = lambda s: s  # noqa: E731 - epoch seconds, as hand-computed
    assert got[0] == sorted([("U1", "81.2.69.142", t(1000), 1, "first_seen"), ("U2", "89.160.20.112", t(2000), 1, "first_seen"),
                             ("U2", "89.160.20.112", t(5000), 2, "delta")])
    assert got[1] == [("U1", "81.2.69.142", t(7000), 3, "delta")]
    assert got[2] == sorted([("U1", "81.2.69.142", t(9000), 1, "delta"), ("U2", "175.16.199.64", t(8000), 1, "first_seen"),
                             ("U2", "175.16.199.64", t(8500), 1, "delta")])
    # Every observed state is kept once: 2 + 1 + 2 rows.
    landed = warehouse.read_table("raw_slack_access")
    assert len(landed) == 5
    # The events can be rebuilt from the raw table alone.
    replayed = replay_access_events(landed)
    key = ["record_key", "event_index"]
    pd.testing.assert_frame_equal(
        replayed.sort_values(key).reset_index(drop=True),
        pd.concat(incremental).sort_values(key).reset_index(drop=True),
    )
