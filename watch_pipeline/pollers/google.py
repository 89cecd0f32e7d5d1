"""Google Workspace Reports API (``activities.list``) via a service account with domain-wide delegation."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import datetime

import requests
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account

from watch_pipeline.core.raw import RawRecord, google_record
from watch_pipeline.core.schema import SOURCE_GOOGLE
from watch_pipeline.core.windows import PollStats, rfc3339_ms
from watch_pipeline.pollers.http import CredentialsRejected, PollError, RetryPolicy, get_json
from watch_pipeline.pollers.live import build_records

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/admin.reports.audit.readonly"
DEFAULT_KEY_ENV = "GOOGLE_SERVICE_ACCOUNT_JSON"


class GoogleReportsClient:
    """Reads audit activities for whole time windows, all pages, or raises (then nothing is returned)."""

    def __init__(
        self,
        key_json: str,
        admin_email: str,
        base_url: str,
        applications: Sequence[str],
        customer_id: str | None = None,
        max_results: int = 1000,
        session: requests.Session | None = None,
        *,
        key_env: str = DEFAULT_KEY_ENV,
        retry: RetryPolicy | None = None,
    ):
        self.admin_email = admin_email
        self.base_url = base_url.rstrip("/")
        self.applications = list(applications)
        self.customer_id = customer_id
        self.max_results = max_results
        self.key_env = key_env
        self.retry = retry or RetryPolicy()
        if session is None:
            try:
                info = json.loads(key_json)
                credentials = service_account.Credentials.from_service_account_info(
                    info, scopes=[SCOPE], subject=admin_email
                )
            except (ValueError, TypeError, KeyError, GoogleAuthError):
                # The message of the original error may quote the key; say only where to look.
                raise CredentialsRejected(
                    f"{key_env} does not hold a valid service-account key JSON "
                    "(needs type, client_email, private_key and token_uri)"
                ) from None
            session = AuthorizedSession(credentials)
        self._session = session

    @classmethod
    def from_settings(cls, settings, environ: Mapping[str, str] | None = None, **kwargs) -> "GoogleReportsClient":
        """Build from :class:`watch_pipeline.settings.GoogleSettings`; the key comes from ``settings.key_env``."""
        environ = os.environ if environ is None else environ
        key_json = environ.get(settings.key_env)
        if not key_json:
            raise CredentialsRejected(f"environment variable {settings.key_env} (service-account key JSON) is not set")
        if not settings.admin_email:
            raise PollError("google.admin_email is not set (the admin the service account impersonates)")
        return cls(
            key_json,
            settings.admin_email,
            settings.base_url,
            settings.applications,
            customer_id=settings.customer_id,
            max_results=settings.max_results,
            key_env=settings.key_env,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"GoogleReportsClient(admin_email={self.admin_email!r}, base_url={self.base_url!r}, "
            f"applications={self.applications!r})"
        )

    def activities_url(self, app: str) -> str:
        return f"{self.base_url}/admin/reports/v1/activity/users/all/applications/{app}"

    def fetch_window(self, app: str, start: datetime, end: datetime) -> tuple[list[RawRecord], PollStats]:
        """Every activity of `app` with ``start <= id.time < end``, following ``nextPageToken`` to the end.

        Items that cannot be landed are counted in ``stats.quarantined`` with their rows in ``stats.quarantine``.
        """
        params: dict[str, object] = {
            "startTime": rfc3339_ms(start),
            "endTime": rfc3339_ms(end),
            "maxResults": self.max_results,
        }
        if self.customer_id:
            params["customerId"] = self.customer_id
        url = self.activities_url(app)
        stats = PollStats()
        items: list[object] = []
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            page_params = dict(params, pageToken=token) if token else params
            try:
                body = get_json(
                    self._session,
                    url,
                    page_params,
                    policy=self.retry,
                    secret_env=self.key_env,
                    transient=(TransportError,),
                )
            except RefreshError as exc:
                if getattr(exc, "retryable", False):
                    # google-auth already retried the token endpoint; the next run tries again.
                    raise PollError(f"the token endpoint of {self.key_env}'s service account is unavailable") from None
                # Token exchange refused: DWD not granted, wrong subject, disabled key. Keep the key out of the text.
                raise CredentialsRejected(
                    f"{self.key_env} was rejected by the token endpoint ({_refresh_reason(exc)}); check the key, "
                    f"domain-wide delegation for scope {SCOPE} and admin_email"
                ) from None
            stats.pages += 1
            if not isinstance(body, dict):
                raise PollError(f"Reports API page {stats.pages} of {app} is not a JSON object")
            page_items = body.get("items") or []
            items.extend(page_items)
            token = body.get("nextPageToken")
            log.debug("google %s page %d: %d items", app, stats.pages, len(page_items))
            if not token:
                break
            if token in seen_tokens:
                raise PollError(f"Reports API repeated page token on page {stats.pages} of {app}; giving up")
            seen_tokens.add(token)
        records = build_records(items, google_record, SOURCE_GOOGLE, f"poll:{app}", start, end, stats)
        return records, stats


def _refresh_reason(exc: RefreshError) -> str:
    # RefreshError args: (message, response body); the message is e.g. "invalid_grant: Not a valid email".
    text = str(exc.args[0]) if exc.args else "refresh failed"
    return text.split(":", 1)[0][:80]
