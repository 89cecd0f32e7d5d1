"""Loopback stand-ins for the Slack Web API and an alert webhook receiver (pytest-httpserver on 127.0.0.1)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator

import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response


@pytest.fixture(scope="module")
def _module_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        if server.is_running():
            server.stop()  # werkzeug's shutdown polls every 0.5 s: once per module, not per test


@pytest.fixture
def local_server(_module_server: HTTPServer) -> Iterator[HTTPServer]:
    """A loopback HTTP server with no handlers (cleared after the test)."""
    _module_server.clear()
    yield _module_server
    _module_server.clear()


class FakeSlack:
    """chat.postMessage and conversations.history, with scripted failures.

    `rate_limit_next`: how many chat.postMessage calls answer 429 (Retry-After 1) before success.
    `refuse`: alert ids whose messages are refused with `invalid_blocks` (a permanent error).
    """

    def __init__(self, server: HTTPServer):
        self.server = server
        self.posts: list[dict] = []
        self.post_requests = 0
        self.history_requests = 0
        self.rate_limit_next = 0
        self.refuse: set[str] = set()
        self.unknown_channels: set[str] = set()
        server.expect_request("/chat.postMessage").respond_with_handler(self._post)
        server.expect_request("/conversations.history").respond_with_handler(self._history)

    @property
    def base_url(self) -> str:
        return self.server.url_for("/")

    def _post(self, request: Request) -> Response:
        self.post_requests += 1
        assert request.headers.get("Authorization") == "Bearer xoxb-test-token"
        body = request.get_json()
        if self.rate_limit_next > 0:
            self.rate_limit_next -= 1
            return Response(json.dumps({"ok": False, "error": "ratelimited"}), status=429,
                            headers={"Retry-After": "1"}, content_type="application/json")
        if body.get("channel") in self.unknown_channels:
            return Response(json.dumps({"ok": False, "error": "channel_not_found"}), content_type="application/json")
        alert_id = ((body.get("metadata") or {}).get("event_payload") or {}).get("alert_id")
        if alert_id in self.refuse:
            return Response(json.dumps({"ok": False, "error": "invalid_blocks"}), content_type="application/json")
        ts = f"{time.time():.6f}"
        message = {"type": "message", "ts": ts, "text": body.get("text"), "blocks": body.get("blocks"),
                   "metadata": body.get("metadata")}
        self.posts.append(message)
        return Response(json.dumps({"ok": True, "channel": body.get("channel"), "ts": ts, "message": message}),
                        content_type="application/json")

    def _history(self, request: Request) -> Response:
        self.history_requests += 1
        args = {**request.args, **request.form}
        if args.get("channel") in self.unknown_channels:
            return Response(json.dumps({"ok": False, "error": "channel_not_found"}), content_type="application/json")
        oldest = float(args.get("oldest") or 0)
        include = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        messages = []
        for m in reversed(self.posts):  # newest first, like Slack
            if float(m["ts"]) < oldest:
                continue
            messages.append(m if include else {k: v for k, v in m.items() if k != "metadata"})
        return Response(json.dumps({"ok": True, "messages": messages, "has_more": False,
                                    "response_metadata": {"next_cursor": ""}}), content_type="application/json")

    def posted_keys(self) -> list[str]:
        return [m["metadata"]["event_payload"]["delivery_key"] for m in self.posts]

    def posted_alert_ids(self) -> list[str]:
        return [m["metadata"]["event_payload"].get("alert_id") for m in self.posts]


class FakeWebhook:
    """Records every request; processes each Idempotency-Key once (like a well-behaved receiver).

    `script[key]`: statuses to answer for that key before 200 (e.g. [500, 500]); `refuse`: keys answered 400.
    """

    def __init__(self, server: HTTPServer, path: str = "/hook"):
        self.server = server
        self.path = path
        self.requests: list[dict] = []
        self.processed: dict[str, dict] = {}
        self.script: dict[str, list[int]] = defaultdict(list)
        self.refuse: set[str] = set()
        self.refuse_status: int | None = None  # answer every request with this status (e.g. 401)
        server.expect_request(path, method="POST").respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return self.server.url_for(self.path)

    def _handle(self, request: Request) -> Response:
        key = request.headers.get("Idempotency-Key", "")
        raw = request.get_data()
        self.requests.append({"key": key, "signature": request.headers.get("X-Watch-Signature"), "body": raw})
        if self.refuse_status:
            return Response('{"error": "bad signature"}', status=self.refuse_status)
        if key in self.refuse:
            return Response('{"error": "unknown alert schema"}', status=400, content_type="application/json")
        if self.script.get(key):
            return Response("busy", status=self.script[key].pop(0))
        if key not in self.processed:
            self.processed[key] = json.loads(raw)
        return Response('{"ok": true}', status=200, content_type="application/json")

    def keys(self) -> list[str]:
        return [r["key"] for r in self.requests]


def make_alert(alert_id: str, day: str = "2026-10-01", *, actor: str = "alice@example.com",
               severity: str = "high", score: float = 0.9, reasons: str | None = None,
               evidence: str = "e1,e2", suppressed: bool = False) -> dict:
    """One row of the alerts table."""
    start = pd.Timestamp(day) + pd.Timedelta(hours=3)
    return {
        "alert_id": alert_id, "partition_date": pd.Timestamp(day).date(), "actor": actor,
        "first_seen": start, "last_seen": start + pd.Timedelta(minutes=20), "score": score, "severity": severity,
        "kinds": "new_asn,impossible_travel",
        "reasons": reasons or f"login from AS60068 (Datacamp) in NL — never seen for {actor} in 60 days\n"
                              "0 of 300 colleagues use it",
        "evidence_event_ids": evidence, "model_state": "established", "ips": "89.160.20.112",
        "context": json.dumps({"asn": 29518, "asn_org": "Bredband2 AB", "country": "SE", "city": "Linköping"}),
        "suppressed": suppressed, "suppressed_reason": "user allowlisted" if suppressed else None,
    }
