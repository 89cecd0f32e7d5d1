"""One live run over all enabled sources: windows, catch-up after a failure, poll_state, partial failures."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pollerfakes import PagedAPI, json_response

from watch_pipeline.pollers.http import CredentialsRejected
from watch_pipeline.pollers.live import PollRunFailed, last_window_end, poll_live, quarantine_frame
from watch_pipeline.core.windows import PollStats
from watch_pipeline.settings import Settings

NOW = datetime(2024, 5, 1, 12, 0)


def settings_for(httpserver, **enabled) -> Settings:
    return Settings.model_validate({
        "google": {"enabled": enabled.get("google", False), "applications": ["login", "token"],
                   "admin_email": "admin@example.org", "base_url": httpserver.url_for("/")},
        "slack_audit": {"enabled": enabled.get("slack_audit", False), "base_url": httpserver.url_for("/audit/v1/")},
        "slack_access": {"enabled": enabled.get("slack_access", False), "base_url": httpserver.url_for("/api/")},
    })


def activity(app, when, qualifier):
    return {"id": {"time": when, "uniqueQualifier": qualifier, "applicationName": app, "customerId": "C1"},
            "actor": {"email": "alice@example.org"}, "events": [{"type": "login", "name": "login_success"}]}


def test_live_run_lands_each_source_and_a_failed_one_is_reread_next_time(httpserver, google_key, fast_retry, warehouse):
    key_json, _ = google_key
    env = {"GOOGLE_SERVICE_ACCOUNT_JSON": key_json, "SLACK_AUDIT_TOKEN": "xoxp-a", "SLACK_ACCESS_TOKEN": "xoxp-b"}
    login = PagedAPI({None: {"items": [activity("login", "2024-05-01T11:00:00.000Z", "1")]}}, "pageToken")
    token = PagedAPI({None: {"items": []}}, "pageToken", broken={None})
    audit = PagedAPI({None: {"ok": True, "entries": [], "response_metadata": {"next_cursor": ""}}}, "cursor")
    httpserver.expect_request("/admin/reports/v1/activity/users/all/applications/login").respond_with_handler(login)
    httpserver.expect_request("/admin/reports/v1/activity/users/all/applications/token").respond_with_handler(token)
    httpserver.expect_request("/audit/v1/logs").respond_with_handler(audit)
    httpserver.expect_request("/api/team.accessLogs").respond_with_handler(
        PagedAPI({None: {"ok": False, "error": "paid_only"}}, "cursor")
    )
    from watch_pipeline.pollers.google import GoogleReportsClient
    from watch_pipeline.pollers.slack import SlackAccessLogsClient, SlackAuditClient

    settings = settings_for(httpserver, google=True, slack_audit=True, slack_access=True)
    clients = {
        "google": GoogleReportsClient.from_settings(settings.google, env, retry=fast_retry),
        "slack_audit": SlackAuditClient.from_settings(settings.slack_audit, env, retry=fast_retry),
        "slack_access": SlackAccessLogsClient.from_settings(settings.slack_access, env, retry=fast_retry),
    }
    with pytest.raises(PollRunFailed) as info:
        poll_live(warehouse, settings, now=NOW, clients=clients)
    failed = info.value
    assert set(failed.results) == {"google/login", "slack_audit/slack_audit"}
    assert failed.results["google/login"].new == 1
    assert len(failed.failures) == 2 and "paid Slack plans only" in str(failed)
    # Default live window: [now - 3 h, now - 2 min].
    assert login.requests[0]["args"]["startTime"] == "2024-05-01T09:00:00.000Z"
    assert login.requests[0]["args"]["endTime"] == "2024-05-01T11:58:00.000Z"
    assert last_window_end(warehouse, "google", "login") == datetime(2024, 5, 1, 11, 58)
    assert last_window_end(warehouse, "google", "token") is None

    # Five hours later the token app works again. login's window reaches back to its last end (older than the
    # 3 h lag window); token's reaches back to the start of its failed window.
    token.broken.clear()
    settings = settings_for(httpserver, google=True)
    later = NOW + timedelta(hours=5)
    results, events = poll_live(warehouse, settings, now=later, clients=clients)
    assert set(results) == {"google/login", "google/token"} and events.empty
    assert login.requests[-1]["args"]["startTime"] == "2024-05-01T11:58:00.000Z"  # caught up from the last end
    assert token.requests[-1]["args"]["startTime"] == "2024-05-01T09:00:00.000Z"
    assert last_window_end(warehouse, "google", "token") == datetime(2024, 5, 1, 16, 58)
    # The 11:00 activity lies before the new window: left alone, not landed twice.
    assert (results["google/login"].out_of_window, results["google/login"].new) == (1, 0)
    assert len(warehouse.read_table("raw_google")) == 1


def test_missing_secret_is_reported_by_env_var_name(httpserver, warehouse):
    with pytest.raises(PollRunFailed) as info:
        poll_live(warehouse, settings_for(httpserver, slack_audit=True), now=NOW, environ={})
    assert isinstance(info.value.failures[0], CredentialsRejected)
    assert "SLACK_AUDIT_TOKEN" in str(info.value)


def test_quarantine_frame_has_the_quarantine_columns():
    stats = PollStats(quarantine=[{"quarantine_id": "q", "stage": "poll", "reason": "r", "raw_text": "{}"}])
    frame = quarantine_frame(stats)
    assert list(frame.columns)[:3] == ["quarantine_id", "partition_date", "stage"] and len(frame) == 1


def test_fetch_days_reads_exactly_each_day_of_every_enabled_source(httpserver, google_key, fast_retry):
    key_json, _ = google_key
    env = {"GOOGLE_SERVICE_ACCOUNT_JSON": key_json, "SLACK_AUDIT_TOKEN": "xoxp-a"}
    login = PagedAPI({None: {"items": [activity("login", "2024-05-01T11:00:00.000Z", "1"), {"bad": 1}]}}, "pageToken")
    token = PagedAPI({None: {"items": [activity("token", "2024-05-02T01:00:00.000Z", "2")]}}, "pageToken")
    audit = PagedAPI({None: {"ok": True, "entries": [], "response_metadata": {"next_cursor": ""}}}, "cursor")
    httpserver.expect_request("/admin/reports/v1/activity/users/all/applications/login").respond_with_handler(login)
    httpserver.expect_request("/admin/reports/v1/activity/users/all/applications/token").respond_with_handler(token)
    httpserver.expect_request("/audit/v1/logs").respond_with_handler(audit)
    from watch_pipeline.pollers.live import fetch_days

    settings = settings_for(httpserver, google=True, slack_audit=True)
    records, quarantined = fetch_days(settings, ["2024-05-01", "2024-05-02"], environ=env, retry=fast_retry)
    # The servers ignore the window, so each activity comes back for both days; only its own day keeps it.
    assert sorted(str(r.record_time) for r in records["google"]) == ["2024-05-01 11:00:00", "2024-05-02 01:00:00"]
    assert records["slack_audit"] == [] and records["slack_access"] == []
    assert [r["args"]["startTime"] for r in login.requests] == ["2024-05-01T00:00:00.000Z", "2024-05-02T00:00:00.000Z"]
    assert [r["args"]["oldest"] for r in audit.requests] == ["1714521600", "1714608000"]
    # The bad item is quarantined once per day it was served, as poll-stage items.
    assert len(quarantined) == 2 and {q.stage for q in quarantined} == {"poll"} and quarantined[0].source == "google"
