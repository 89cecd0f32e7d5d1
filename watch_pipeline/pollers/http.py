"""One HTTP GET with the retry policy all pollers share.

429 waits for ``Retry-After``; 5xx, timeouts and dropped connections back off exponentially with jitter (tenacity);
401/403 fail at once with an error naming the environment variable that holds the rejected secret. Nothing here
ever puts a header, token or key into a log line or an exception message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import tenacity

log = logging.getLogger(__name__)


class PollError(RuntimeError):
    """A poll failed; nothing of its window was written."""


class CredentialsRejected(PollError):
    """The API refused the configured secret (401/403, invalid_auth, ...); retrying will not help."""


class TransientHTTPError(PollError):
    """A failure worth retrying: 429, 5xx, timeout or dropped connection."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter; injectable so tests stay fast."""

    attempts: int = 6  # total tries per request
    backoff: float = 2.0  # first wait in seconds, doubled each retry
    max_wait: float = 120.0  # cap of one backoff wait
    jitter: float = 1.0  # uniform extra 0..jitter seconds
    max_retry_after: float = 600.0  # never sleep longer than this on a Retry-After
    timeout: float = 60.0  # per-request (connect, read) timeout
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; HTTP dates fall back to backoff)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


class _Wait:
    """Retry-After when the server sent one, else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.backoff = tenacity.wait_exponential_jitter(
            multiplier=policy.backoff, max=policy.max_wait, jitter=policy.jitter
        )

    def __call__(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientHTTPError) and exc.retry_after is not None:
            # Honour the server's wait, plus a little jitter so parallel pollers do not retry in lockstep.
            jitter = tenacity.wait_random(0, self.policy.jitter)(state)
            return min(exc.retry_after, self.policy.max_retry_after) + jitter
        return self.backoff(state)


def _where(url: str) -> str:
    """Host and path only: query strings are kept out of messages."""
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0
    log.warning("retrying after %s (attempt %d, waiting %.2fs)", exc, state.attempt_number, wait)


def get_json(
    session: requests.Session,
    url: str,
    params: Mapping[str, Any],
    *,
    policy: RetryPolicy,
    secret_env: str,
    check: Callable[[requests.Response, Any], None] | None = None,
    transient: tuple[type[BaseException], ...] = (),
) -> Any:
    """GET `url` and return the decoded JSON body, retrying per `policy`.

    `check(response, body)` may raise for API-level errors carried in a 200 (Slack's ``ok: false``).
    `transient` names further exception types to retry (google-auth's TransportError when the token endpoint
    cannot be reached).
    """
    where = _where(url)

    def once() -> Any:
        try:
            resp = session.get(url, params=dict(params), timeout=policy.timeout)
        except requests.Timeout:
            raise TransientHTTPError(f"timeout from {where}") from None
        except requests.ConnectionError:
            raise TransientHTTPError(f"connection to {where} failed") from None
        except transient as exc:
            raise TransientHTTPError(f"{type(exc).__name__} while calling {where}") from None
        status = resp.status_code
        if status == 429:
            raise TransientHTTPError(
                f"HTTP 429 rate limited by {where}", parse_retry_after(resp.headers.get("Retry-After"))
            )
        if status >= 500:
            raise TransientHTTPError(f"HTTP {status} from {where}", parse_retry_after(resp.headers.get("Retry-After")))
        if status == 403 and _is_quota_error(resp):
            # Google reports some quota exhaustion as 403 rateLimitExceeded: wait, do not give up.
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            raise TransientHTTPError(f"HTTP 403 quota exceeded at {where}", retry_after)
        if status in (401, 403):
            raise CredentialsRejected(
                f"{secret_env} was rejected ({status} {_error_reason(resp)}) by {where}; check the secret in "
                f"environment variable {secret_env} and its scopes"
            )
        if status >= 400:
            raise PollError(f"HTTP {status} from {where}: {_error_reason(resp)}")
        try:
            body = resp.json()
        except ValueError:
            raise TransientHTTPError(f"malformed JSON from {where}") from None
        if check is not None:
            check(resp, body)
        return body

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=_Wait(policy),
        retry=tenacity.retry_if_exception_type(TransientHTTPError),
        sleep=policy.sleep,
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(once)


def _error_reason(resp: requests.Response) -> str:
    """A short reason from an error body (Google ``error.status``/``message``, Slack ``error``), never headers."""
    try:
        body = resp.json()
    except ValueError:
        return resp.reason or "error"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, str):
            return err
        if isinstance(err, dict):
            bits = [str(err.get(k)) for k in ("status", "message") if err.get(k)]
            if bits:
                return ": ".join(bits)[:300]
    return resp.reason or "error"


_QUOTA_REASONS = {"ratelimitexceeded", "userratelimitexceeded", "quotaexceeded", "dailylimitexceeded"}


def _is_quota_error(resp: requests.Response) -> bool:
    try:
        err = resp.json().get("error")
        reasons = {str(e.get("reason", "")).lower() for e in err.get("errors", [])}
    except (ValueError, AttributeError, TypeError):
        return False
    return bool(reasons & _QUOTA_REASONS)
