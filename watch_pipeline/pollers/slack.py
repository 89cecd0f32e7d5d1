"""Slack Audit Logs API (``/audit/v1/logs``) and Web API ``team.accessLogs``.

Plain requests with the shared retry policy (:mod:`watch_pipeline.pollers.http`) rather than slack-sdk: the SDK's
built-in retry handlers retry only 500/503 and connection errors, add up to a second of fixed jitter and cannot be
made fast in tests, and the Audit Logs client returns HTTP errors instead of raising them. One policy covers all
three APIs the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import requests

from watch_pipeline.core.raw import RawRecord, slack_access_record, slack_audit_record
from watch_pipeline.core.schema import SOURCE_SLACK_ACCESS, SOURCE_SLACK_AUDIT
from watch_pipeline.core.windows import PollStats, epoch_bounds, epoch_seconds
from watch_pipeline.pollers.http import (
    CredentialsRejected,
    PollError,
    RetryPolicy,
    TransientHTTPError,
    get_json,
    parse_retry_after,
)
from watch_pipeline.pollers.live import build_records

log = logging.getLogger(__name__)

# Slack's `error` values that mean the token itself is wrong, revoked or lacks the scope.
AUTH_ERRORS = {
    "invalid_auth", "not_authed", "invalid_authentication", "token_revoked", "token_expired", "account_inactive",
    "missing_scope", "not_allowed_token_type", "no_permission", "not_authorized", "feature_not_enabled",
    "ekm_access_denied", "team_access_not_granted",
}


class SlackPaidPlanRequired(PollError):
    """team.accessLogs answered ``paid_only``: the workspace is on the free plan."""


def _session(token: str) -> requests.Session:
    session = requests.Session()
    # The token lives only in this header; requests never logs headers and our errors never quote them.
    session.headers["Authorization"] = f"Bearer {token}"
    session.headers["Accept"] = "application/json"
    return session


def _slack_check(token_env: str, method: str):
    def check(resp: requests.Response, body: Any) -> None:
        if not isinstance(body, dict):
            raise PollError(f"{method} returned a non-object JSON body")
        if body.get("ok", True):
            return
        error = str(body.get("error") or "unknown_error")
        if error == "ratelimited":
            raise TransientHTTPError(f"{method} rate limited", parse_retry_after(resp.headers.get("Retry-After")))
        if error in ("internal_error", "fatal_error", "service_unavailable", "request_timeout"):
            raise TransientHTTPError(f"{method} failed with {error}")
        if error == "paid_only":
            raise SlackPaidPlanRequired(
                f"{method} is available on paid Slack plans only (Pro, Business+ or Enterprise); the workspace "
                "answered 'paid_only'. Upgrade the plan or set slack_access.enabled: false."
            )
        if error in AUTH_ERRORS:
            status = "" if resp.status_code == 200 else f"{resp.status_code} "
            raise CredentialsRejected(
                f"{token_env} was rejected ({status}{error}) by {method}; check the token in environment "
                f"variable {token_env} and its scopes"
            )
        raise PollError(f"{method} failed with error {error!r}")

    return check


def _token_from_env(token_env: str, environ: Mapping[str, str] | None) -> str:
    environ = os.environ if environ is None else environ
    token = environ.get(token_env)
    if not token:
        raise CredentialsRejected(f"environment variable {token_env} (Slack token) is not set")
    return token


class SlackAuditClient:
    """Audit Logs API reader: whole windows, all pages, or an exception (then nothing is returned)."""

    def __init__(
        self,
        token: str,
        base_url: str = "https://api.slack.com/audit/v1/",
        limit: int = 9999,
        *,
        token_env: str = "SLACK_AUDIT_TOKEN",
        retry: RetryPolicy | None = None,
        action: str | None = None,
    ):
        self.base_url = base_url.rstrip("/") + "/"
        self.limit = limit
        self.token_env = token_env
        self.retry = retry or RetryPolicy()
        self.action = action
        self._session = _session(token)

    @classmethod
    def from_settings(cls, settings, environ: Mapping[str, str] | None = None, **kwargs) -> "SlackAuditClient":
        """Build from :class:`watch_pipeline.settings.SlackAuditSettings`; the token comes from ``token_env``."""
        token = _token_from_env(settings.token_env, environ)
        return cls(token, settings.base_url, settings.limit, token_env=settings.token_env, **kwargs)

    def __repr__(self) -> str:
        return f"SlackAuditClient(base_url={self.base_url!r}, limit={self.limit})"

    def fetch_window(self, oldest: datetime, latest: datetime) -> tuple[list[RawRecord], PollStats]:
        """Every entry with ``oldest <= date_create < latest``.

        ``oldest``/``latest`` go out on every page: the API does not remember them behind a cursor.
        """
        low, high = epoch_bounds(oldest, latest)
        params: dict[str, Any] = {"oldest": low, "latest": high, "limit": self.limit}
        if self.action:
            params["action"] = self.action
        url = self.base_url + "logs"
        check = _slack_check(self.token_env, "audit logs")
        stats = PollStats()
        entries: list[Any] = []
        for body in _cursor_pages(self._session, url, params, self.retry, self.token_env, check, stats):
            entries.extend(body.get("entries") or [])
        records = build_records(
            entries, slack_audit_record, SOURCE_SLACK_AUDIT, "poll:slack_audit", oldest, latest, stats
        )
        return records, stats


class SlackAccessLogsClient:
    """team.accessLogs reader (paid plans, user token with the ``admin`` scope)."""

    def __init__(
        self,
        token: str,
        base_url: str = "https://slack.com/api/",
        team_id: str | None = None,
        limit: int = 1000,
        *,
        token_env: str = "SLACK_ACCESS_TOKEN",
        retry: RetryPolicy | None = None,
        max_pages: int = 1000,
    ):
        self.base_url = base_url.rstrip("/") + "/"
        self.team_id = team_id
        self.limit = limit
        self.token_env = token_env
        self.retry = retry or RetryPolicy()
        self.max_pages = max_pages
        self._session = _session(token)

    @classmethod
    def from_settings(cls, settings, environ: Mapping[str, str] | None = None, **kwargs) -> "SlackAccessLogsClient":
        """Build from :class:`watch_pipeline.settings.SlackAccessSettings`; the token comes from ``token_env``."""
        token = _token_from_env(settings.token_env, environ)
        return cls(token, settings.base_url, settings.team_id, settings.limit, token_env=settings.token_env, **kwargs)

    def __repr__(self) -> str:
        return f"SlackAccessLogsClient(base_url={self.base_url!r}, team_id={self.team_id!r}, limit={self.limit})"

    def fetch(self, before: datetime | int | None = None) -> tuple[list[RawRecord], PollStats]:
        """All rows (newest first), cursor-paged; `before` (inclusive) walks back in time."""
        params: dict[str, Any] = {"limit": self.limit}
        if before is not None:
            params["before"] = int(before) if isinstance(before, (int, float)) else int(epoch_seconds(before))
        if self.team_id:
            params["team_id"] = self.team_id
        check = _slack_check(self.token_env, "team.accessLogs")
        stats = PollStats()
        rows: list[Any] = []
        url = self.base_url + "team.accessLogs"
        pages = _cursor_pages(self._session, url, params, self.retry, self.token_env, check, stats)
        for body in pages:
            rows.extend(body.get("logins") or [])
            if stats.pages >= self.max_pages:
                raise PollError(f"team.accessLogs did not end after {self.max_pages} pages")
        records = build_records(rows, slack_access_record, SOURCE_SLACK_ACCESS, "poll:slack_access", None, None, stats)
        return records, stats


def _cursor_pages(session, url, params, policy, token_env, check, stats: PollStats):
    """Yield page bodies, re-sending `params` with each ``cursor`` until ``next_cursor`` is empty."""
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        page_params = dict(params, cursor=cursor) if cursor else dict(params)
        body = get_json(session, url, page_params, policy=policy, secret_env=token_env, check=check)
        stats.pages += 1
        yield body
        cursor = (body.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor:
            return
        if cursor in seen:
            raise PollError(f"cursor repeated after page {stats.pages}; giving up")
        seen.add(cursor)
