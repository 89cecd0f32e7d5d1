"""Tokens and keys never reach logs, exception texts, reprs, stats or the poll_state table."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import pytest
from pollerfakes import ACCESS_TOKEN, PagedAPI, json_response

from watch_pipeline.core.windows import daily_window
from watch_pipeline.pollers.google import GoogleReportsClient
from watch_pipeline.pollers.http import PollError
from watch_pipeline.pollers.live import poll_google, poll_slack_access, poll_slack_audit
from watch_pipeline.pollers.slack import SlackAccessLogsClient, SlackAuditClient
from watch_pipeline.settings import SlackAuditSettings

SLACK_TOKEN = "xoxp-SECRET-4242-do-not-log"


def entry(i):
    return {"id": f"id-{i}", "date_create": 1521214344 - i, "action": "user_login",
            "actor": {"type": "user", "user": {"id": "W1", "email": "a@example.org"}},
            "context": {"ip_address": "81.2.69.142", "ua": "Chrome"}}


def test_no_secret_in_logs_errors_reprs_or_metadata(httpserver, google_key, fast_retry, warehouse, caplog):
    caplog.set_level(logging.DEBUG)
    key_json, _ = google_key
    private_key_body = json.loads(key_json)["private_key"].splitlines()[5]
    secrets = [SLACK_TOKEN, ACCESS_TOKEN, private_key_body, "0123456789abcdef"]
    texts: list[str] = []

    # Slack audit: a 429, a 500, success; then a 401.
    limited = json_response({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": "0"})
    boom = json_response({"ok": False, "error": "fatal_error"}, 500)
    audit_api = PagedAPI({None: {"ok": True, "entries": [entry(0)], "response_metadata": {"next_cursor": "n"}},
                          "n": {"ok": True, "entries": [entry(1)], "response_metadata": {"next_cursor": ""}}},
                         "cursor", faults={None: [limited], "n": [boom]})
    httpserver.expect_request("/audit/v1/logs").respond_with_handler(audit_api)
    audit = SlackAuditClient.from_settings(
        SlackAuditSettings(base_url=httpserver.url_for("/audit/v1/")), {"SLACK_AUDIT_TOKEN": SLACK_TOKEN}, retry=fast_retry
    )
    stats = poll_slack_audit(warehouse, audit, daily_window("2018-03-16"), now=datetime(2018, 3, 17))
    texts += [repr(audit), repr(stats), str(stats.as_metadata())]
    audit_api.faults[None] = [json_response({"ok": False, "error": "invalid_auth"}, 401)]
    with pytest.raises(PollError) as info:
        audit.fetch_window(*daily_window("2018-03-16"))
    texts += [str(info.value), repr(info.value)]

    # accessLogs: an invalid_auth.
    httpserver.expect_request("/api/team.accessLogs").respond_with_handler(
        PagedAPI({None: {"ok": False, "error": "invalid_auth"}}, "cursor")
    )
    access = SlackAccessLogsClient(SLACK_TOKEN, httpserver.url_for("/api/"), retry=fast_retry)
    with pytest.raises(PollError) as info:
        poll_slack_access(warehouse, access)
    texts += [str(info.value), repr(access)]

    # Google: token exchange, a 500, success; then a 401.
    g_api = PagedAPI({None: {"items": []}}, "pageToken", faults={None: [json_response({}, 500)]})
    httpserver.expect_request("/admin/reports/v1/activity/users/all/applications/login").respond_with_handler(g_api)
    google = GoogleReportsClient(key_json, "admin@example.org", httpserver.url_for("/"), ["login"], retry=fast_retry)
    gstats = poll_google(warehouse, google, "login", daily_window("2024-05-01"), now=datetime(2024, 5, 2))
    texts += [repr(google), repr(gstats)]
    g_api.faults[None] = [json_response({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, 401)] * 3
    with pytest.raises(PollError) as info:
        google.fetch_window("login", *daily_window("2024-05-01"))
    texts += [str(info.value), repr(info.value)]

    # The secrets were really in play (sent to the servers)...
    assert audit_api.requests[0]["auth"] == f"Bearer {SLACK_TOKEN}"
    assert g_api.requests[0]["auth"] == f"Bearer {ACCESS_TOKEN}"
    assert "retrying" in caplog.text  # ...and the pollers did log
    # ...yet none of them shows up anywhere.
    poll_state = warehouse.read_table("poll_state").to_csv()
    haystack = "\n".join(texts + [caplog.text, poll_state] + [r.getMessage() for r in caplog.records])
    for secret in secrets:
        assert secret not in haystack
