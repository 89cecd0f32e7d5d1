"""Google Reports API poller against a loopback server replaying grove's activities pages."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pandas as pd
import pytest
from pollerfakes import ACCESS_TOKEN, PagedAPI, chain, json_response, load_pages

from watch_pipeline.core.raw import google_record
from watch_pipeline.core.windows import daily_window
from watch_pipeline.pollers.google import SCOPE, GoogleReportsClient
from watch_pipeline.pollers.http import CredentialsRejected, TransientHTTPError
from watch_pipeline.pollers.live import fetch_google_day, last_window_end, next_live_window, poll_google

APP_PATH = "/admin/reports/v1/activity/users/all/applications/{app}"
DAY = "2021-10-27"  # the grove pages' day


def set_page_token(page, token):
    page.pop("nextPageToken", None)
    if token:
        page["nextPageToken"] = token


def grove_api(peer_data, **kwargs) -> PagedAPI:
    """grove's three activities pages chained 001 -AAAA-> 002 -BBBB-> 003."""
    pages = chain(load_pages(peer_data, "grove", "tests", "fixtures", "gsuite", "activities"), set_page_token, ["AAAA", "BBBB"])
    return PagedAPI(pages, "pageToken", **kwargs)


def make_client(httpserver, google_key, retry, apps=("admin",)) -> GoogleReportsClient:
    key_json, _ = google_key
    return GoogleReportsClient(
        key_json, "admin@example.org", httpserver.url_for("/"), list(apps), max_results=2, retry=retry
    )


def serve(httpserver, api, app="admin"):
    httpserver.expect_request(APP_PATH.format(app=app), method="GET").respond_with_handler(api)


def test_all_pages_once_with_the_right_window_and_delegated_token(httpserver, google_key, fast_retry, peer_data):
    api = grove_api(peer_data)
    serve(httpserver, api)
    client = make_client(httpserver, google_key, fast_retry)
    records, stats = fetch_google_day(client, "admin", DAY)

    expected = [google_record(item) for page in load_pages(peer_data, "grove", "tests", "fixtures", "gsuite", "activities") for item in page["items"]]
    assert sorted(r.record_key for r in records) == sorted(r.record_key for r in expected)
    assert len({r.record_key for r in records}) == 3
    assert (stats.pages, stats.items, stats.quarantined) == (3, 3, 0)
    # Every page asked for exactly the UTC day, with the page token chain.
    assert [r["args"].get("pageToken") for r in api.requests] == [None, "AAAA", "BBBB"]
    for r in api.requests:
        assert r["args"]["startTime"] == "2021-10-27T00:00:00.000Z"
        assert r["args"]["endTime"] == "2021-10-28T00:00:00.000Z"
        assert r["args"]["maxResults"] == "2"
        assert r["auth"] == f"Bearer {ACCESS_TOKEN}"
    # The token was obtained by domain-wide delegation for the admin, with the audit scope only.
    claims = google_key[1].claims[0]
    assert claims["sub"] == "admin@example.org" and claims["scope"] == SCOPE


def test_429_with_retry_after_then_success(httpserver, google_key, fast_retry, sleeps, peer_data):
    limited = json_response({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}, 429, {"Retry-After": "1"})
    api = grove_api(peer_data, faults={"AAAA": [limited]})
    serve(httpserver, api)
    records, stats = make_client(httpserver, google_key, fast_retry).fetch_window("admin", *daily_window(DAY))
    assert len(records) == 3 and stats.pages == 3
    assert len(api.requests) == 4
    assert len(sleeps.waits) == 1 and 1.0 <= sleeps.waits[0] <= 1.0 + fast_retry.jitter


def test_500_then_success_backs_off(httpserver, google_key, fast_retry, sleeps, peer_data):
    boom = json_response({"error": {"code": 503, "message": "backend"}}, 503)
    api = grove_api(peer_data, faults={None: [boom, boom]})
    serve(httpserver, api)
    records, _ = make_client(httpserver, google_key, fast_retry).fetch_window("admin", *daily_window(DAY))
    assert len(records) == 3
    # Exponential: 0.5 * 2**0, then 0.5 * 2**1, each plus up to `jitter`.
    assert len(sleeps.waits) == 2
    assert 0.5 <= sleeps.waits[0] <= 0.75 and 1.0 <= sleeps.waits[1] <= 1.25


def test_403_quota_is_retried_but_403_forbidden_fails_at_once(httpserver, google_key, fast_retry, peer_data):
    quota = json_response({"error": {"code": 403, "errors": [{"reason": "userRateLimitExceeded"}]}}, 403)
    api = grove_api(peer_data, faults={None: [quota]})
    serve(httpserver, api)
    assert len(make_client(httpserver, google_key, fast_retry).fetch_window("admin", *daily_window(DAY))[0]) == 3

    forbidden = json_response(
        {"error": {"code": 403, "message": "Not Authorized to access this resource/api", "status": "PERMISSION_DENIED"}}, 403
    )
    api2 = PagedAPI({None: {"items": []}}, "pageToken", faults={None: [forbidden] * 5})
    serve(httpserver, api2, app="login")
    with pytest.raises(CredentialsRejected, match="GOOGLE_SERVICE_ACCOUNT_JSON was rejected \\(403 PERMISSION_DENIED"):
        make_client(httpserver, google_key, fast_retry).fetch_window("login", *daily_window(DAY))
    assert len(api2.requests) == 1


def test_401_gives_clear_error_naming_the_env_var(httpserver, google_key, fast_retry, sleeps):
    unauth = json_response({"error": {"code": 401, "message": "Invalid Credentials", "status": "UNAUTHENTICATED"}}, 401)
    api = PagedAPI({None: {"items": []}}, "pageToken", faults={None: [unauth] * 5})
    serve(httpserver, api)
    with pytest.raises(CredentialsRejected) as info:
        make_client(httpserver, google_key, fast_retry).fetch_window("admin", *daily_window(DAY))
    assert "GOOGLE_SERVICE_ACCOUNT_JSON was rejected (401 UNAUTHENTICATED" in str(info.value)
    # google-auth re-fetches the token on a 401 (twice at most); we add no backoff retries of our own.
    assert len(api.requests) == 3 and sleeps.waits == []


def test_token_endpoint_refusal_is_a_credentials_error(httpserver, google_key, fast_retry):
    _, endpoint = google_key
    endpoint.fail_with = json_response({"error": "unauthorized_client", "error_description": "DWD not granted"}, 401)
    serve(httpserver, PagedAPI({None: {"items": []}}, "pageToken"))
    with pytest.raises(CredentialsRejected, match="GOOGLE_SERVICE_ACCOUNT_JSON was rejected by the token endpoint"):
        make_client(httpserver, google_key, fast_retry).fetch_window("admin", *daily_window(DAY))


def test_bad_key_json_names_the_env_var_not_the_content():
    with pytest.raises(CredentialsRejected) as info:
        GoogleReportsClient('{"type": "service_account", "private_key": "SECRET-PEM"}', "a@b", "http://127.0.0.1:1", ["login"])
    assert "GOOGLE_SERVICE_ACCOUNT_JSON" in str(info.value) and "SECRET-PEM" not in str(info.value)


def test_poll_killed_after_page_2_of_3_leaves_the_table_unchanged(httpserver, google_key, fast_retry, warehouse, peer_data):
    client = make_client(httpserver, google_key, fast_retry)
    # An earlier, successful poll of another window.
    earlier = PagedAPI({None: {"items": [activity("login", "2021-10-27T21:00:00.000Z", "9")]}}, "pageToken")
    serve(httpserver, earlier, app="login")
    window0 = (datetime(2021, 10, 27, 20), datetime(2021, 10, 28))
    poll_google(warehouse, client, "login", window0, now=datetime(2021, 10, 28, 0, 5))
    before = warehouse.read_table("raw_google").sort_values("record_key").reset_index(drop=True)
    state_before = warehouse.read_table("poll_state")

    api = grove_api(peer_data, broken={"BBBB"})
    serve(httpserver, api)
    with pytest.raises(TransientHTTPError, match="HTTP 500"):
        poll_google(warehouse, client, "admin", daily_window(DAY), now=datetime(2021, 10, 28, 1))
    assert [r["args"].get("pageToken") for r in api.requests] == [None, "AAAA"] + ["BBBB"] * fast_retry.attempts
    after = warehouse.read_table("raw_google").sort_values("record_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    state = warehouse.read_table("poll_state")
    ok = state[state["status"] == "ok"].reset_index(drop=True)
    pd.testing.assert_frame_equal(state_before.drop(columns="error"), ok.drop(columns="error"), check_dtype=False)
    failed = state[state["status"] == "failed"]
    assert len(failed) == 1 and failed["new"].iloc[0] == 0 and "HTTP 500" in failed["error"].iloc[0]
    assert last_window_end(warehouse, "google", "admin") is None
    # The next live run reads the failed window again, though it lies outside its lag window.
    window = next_live_window(warehouse, "google", "admin", datetime(2021, 10, 28, 6), timedelta(hours=3), timedelta(minutes=2))
    assert window[0] == daily_window(DAY)[0]

    api.broken.clear()
    stats = poll_google(warehouse, client, "admin", daily_window(DAY), now=datetime(2021, 10, 28, 2))
    assert (stats.new, stats.duplicates) == (3, 0)
    assert len(warehouse.read_table("raw_google")) == 1 + 3


def activity(app, when, qualifier, name="login_success"):
    return {
        "kind": "admin#reports#activity",
        "id": {"time": when, "uniqueQualifier": qualifier, "applicationName": app, "customerId": "C0FFEE"},
        "actor": {"email": "alice@example.org", "profileId": "1"},
        "ipAddress": "81.2.69.142",
        "events": [{"type": "login", "name": name, "parameters": [{"name": "login_type", "value": "google_password"}]}],
    }


def test_late_arrival_and_overlapping_polls_land_each_event_once(httpserver, google_key, fast_retry, warehouse):
    a = activity("login", "2024-05-01T09:10:00.000Z", "1")
    b = activity("login", "2024-05-01T09:40:00.000Z", "2")
    late = activity("login", "2024-05-01T09:20:00.000Z", "3")  # happened in poll 1's window, delivered later
    c = activity("login", "2024-05-01T10:30:00.000Z", "4")
    responses = [{None: {"items": [b, a]}}, {None: {"items": [c, b], "nextPageToken": "P2"}, "P2": {"items": [late, a]}}]
    api = PagedAPI(responses[0], "pageToken")
    serve(httpserver, api, app="login")
    client = make_client(httpserver, google_key, fast_retry, apps=["login"])
    lag, delay = timedelta(hours=3), timedelta(minutes=2)

    now1 = datetime(2024, 5, 1, 10, 0)
    w1 = next_live_window(warehouse, "google", "login", now1, lag, delay)
    s1 = poll_google(warehouse, client, "login", w1, now=now1)
    assert (s1.new, s1.duplicates, s1.late_arrivals) == (2, 0, 0)

    api.pages = responses[1]
    now2 = datetime(2024, 5, 1, 11, 0)
    w2 = next_live_window(warehouse, "google", "login", now2, lag, delay)
    assert w2[0] < w1[1]  # overlapping windows
    s2 = poll_google(warehouse, client, "login", w2, now=now2)
    assert (s2.pages, s2.items, s2.new, s2.duplicates, s2.late_arrivals) == (2, 4, 2, 2, 1)

    # A third poll over the same window changes nothing.
    s3 = poll_google(warehouse, client, "login", w2, now=datetime(2024, 5, 1, 11, 1))
    assert (s3.new, s3.duplicates) == (0, 4)

    raw = warehouse.read_table("raw_google")
    assert len(raw) == 4 and raw["record_key"].is_unique
    by_time = {str(t): i for t, i in zip(raw["record_time"], raw["ingest_time"])}
    assert by_time["2024-05-01 09:10:00"] == pd.Timestamp(now1)  # first ingest_time kept
    assert by_time["2024-05-01 09:20:00"] == pd.Timestamp(now2)
    # The requests carried the live windows.
    assert api.requests[0]["args"]["startTime"] == "2024-05-01T07:00:00.000Z"
    assert api.requests[0]["args"]["endTime"] == "2024-05-01T09:58:00.000Z"
    assert api.requests[1]["args"]["endTime"] == "2024-05-01T10:58:00.000Z"


def test_bad_items_are_quarantined_not_fatal(httpserver, google_key, fast_retry):
    good = activity("login", "2024-05-01T09:10:00.000Z", "1")
    api = PagedAPI({None: {"items": [good, {"id": {"uniqueQualifier": "x"}}, "nonsense"]}}, "pageToken")
    serve(httpserver, api, app="login")
    records, stats = make_client(httpserver, google_key, fast_retry, ["login"]).fetch_window(
        "login", *daily_window("2024-05-01")
    )
    assert len(records) == 1 and stats.quarantined == 2 and len(stats.quarantine) == 2
    assert {q["stage"] for q in stats.quarantine} == {"poll"}
    assert "id.time" in stats.quarantine[0]["reason"]
    assert json.loads(stats.quarantine[0]["raw_text"]) == {"id": {"uniqueQualifier": "x"}}
