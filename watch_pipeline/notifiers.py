"""Delivering alerts exactly once: channel senders (Slack, webhook, CSV) and the delivery ledger.

Every delivery is *claim -> send -> confirm*: the ledger row for (alert_id, channel) is set to ``pending`` in its own
transaction before anything leaves the process, then to ``sent`` (or ``failed`` with the error for permanent
refusals). A process that dies between send and confirm leaves a ``pending`` row; the next delivery run reconciles
it instead of re-sending blindly:

* Slack — the alert's delivery key travels in the message ``metadata``; ``conversations.history`` with
  ``include_all_metadata`` tells whether the message was posted.
* Webhook — resent with the same ``Idempotency-Key``; the receiver drops the duplicate.
* CSV — the file is read to see whether it holds the row already.

Transient errors (network, 429, 5xx after the retries) leave the row ``pending`` with the error in ``response``,
so the next run reconciles it the same way. Secrets come from environment variables named in the settings and are
never logged.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import requests
import tenacity
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from watch_pipeline.core import notify
from watch_pipeline.core.schema import Column
from watch_pipeline.settings import (
    CsvNotifierSettings,
    NotifierSettings,
    SlackNotifierSettings,
    WebhookNotifierSettings,
)
from watch_pipeline.warehouse import Warehouse, register_table

DELIVERY_TABLE = "alert_deliveries"
DELIVERY_COLUMNS = tuple(Column(*c) for c in (
    ("alert_id", "VARCHAR", "the alert"),
    ("channel", "VARCHAR", "slack | webhook | csv"),
    ("status", "VARCHAR", "pending (claimed, outcome unknown) | sent | failed (permanent refusal)"),
    ("attempts", "BIGINT", "how many times a version of this alert was claimed for sending"),
    ("claimed_at", "TIMESTAMP", "UTC time of the last claim"),
    ("sent_at", "TIMESTAMP", "UTC time the last version was confirmed sent"),
    ("response", "VARCHAR", "the channel's answer (Slack ts, HTTP status) or the error"),
    ("severity", "VARCHAR", "severity of the version claimed/sent"),
    ("previous_severity", "VARCHAR", "severity of the version sent before (set for updates)"),
    ("fingerprint", "VARCHAR", "notify.alert_fingerprint of the version claimed/sent"),
    ("delivery_key", "VARCHAR", "Idempotency-Key / Slack metadata key of the version (digest:… for digests)"),
))
register_table(DELIVERY_TABLE, DELIVERY_COLUMNS)

ALERTS_TABLE = "alerts"
CHANNELS = ("slack", "webhook", "csv")


def utcnow() -> datetime:
    return pd.Timestamp.now(tz="UTC").tz_localize(None).to_pydatetime()


class SendError(Exception):
    """A delivery did not succeed.

    `permanent`: this message is refused (bad request, invalid blocks); it is marked failed and not retried.
    `blocked`: the channel itself is unusable (bad token, unknown channel or URL); nothing more is sent this run
    and the rows stay pending, so they go out once the configuration is fixed.
    Neither: transient (network, 429, 5xx after retries); the row stays pending and is reconciled later.
    """

    def __init__(self, message: str, permanent: bool, blocked: bool = False):
        super().__init__(message)
        self.permanent = permanent and not blocked
        self.blocked = blocked


class MissingSecretError(RuntimeError):
    """The environment variable that should hold a secret is unset (its name is in the message, never a value)."""


def secret_from_env(name: str, env: Mapping[str, str] | None = None) -> str:
    value = (os.environ if env is None else env).get(name, "")
    if not value:
        raise MissingSecretError(f"environment variable {name} is not set")
    return value


# ----------------------------------------------------------------------------------------------------------------
# Ledger
# ----------------------------------------------------------------------------------------------------------------


class DeliveryLedger:
    """The `alert_deliveries` rows of one channel, with compare-and-set claims."""

    def __init__(self, warehouse: Warehouse, channel: str):
        self.wh = warehouse
        self.channel = channel
        warehouse.ensure_table(DELIVERY_TABLE)

    def rows(self, alert_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Ledger rows by alert id (all of this channel's when `alert_ids` is None)."""
        p = self.wh.param()
        sql = f'SELECT * FROM "{DELIVERY_TABLE}" WHERE channel = {p}'
        params: list[Any] = [self.channel]
        if alert_ids is not None:
            if not alert_ids:
                return {}
            sql += f" AND alert_id IN ({', '.join([p] * len(alert_ids))})"
            params += list(alert_ids)
        df = self.wh.query_df(sql, params)
        return {r["alert_id"]: _clean(r) for r in df.to_dict("records")}

    def pending(self, claimed_before: datetime | None = None) -> list[dict[str, Any]]:
        p = self.wh.param()
        df = self.wh.query_df(f'SELECT * FROM "{DELIVERY_TABLE}" WHERE channel = {p} AND status = {p}',
                              [self.channel, "pending"])
        rows = [_clean(r) for r in df.to_dict("records")]
        if claimed_before is not None:
            rows = [r for r in rows if r["claimed_at"] is None or pd.Timestamp(r["claimed_at"]) <= claimed_before]
        return rows

    def claim(self, alert: Mapping[str, Any], key: str, previous: Mapping[str, Any] | None,
              now: datetime | None = None) -> bool:
        """Mark `alert` pending under `key`, unless its row changed since `previous` was read (then False)."""
        p = self.wh.param()
        alert_id = str(alert["alert_id"])
        with self.wh.transaction() as cur:
            if self.wh.dialect == "postgres":
                # serialise claims of concurrent runs; the compare below then sees committed state
                cur.execute(f'LOCK TABLE "{DELIVERY_TABLE}" IN SHARE ROW EXCLUSIVE MODE')
            cur.execute(f'SELECT status, fingerprint, attempts FROM "{DELIVERY_TABLE}" '
                        f"WHERE alert_id = {p} AND channel = {p}", [alert_id, self.channel])
            current = cur.fetchone()
            if previous is None and current is not None:
                return False
            if previous is not None and (current is None or (current[0], current[1]) !=
                                         (previous.get("status"), previous.get("fingerprint"))):
                return False
            attempts = int(current[2] or 0) + 1 if current is not None else 1
            was_sent = previous is not None and previous.get("status") == "sent"
            self._write(cur, {
                "alert_id": alert_id, "status": "pending", "attempts": attempts,
                "claimed_at": now or utcnow(),
                "sent_at": previous.get("sent_at") if previous else None, "response": None,
                "severity": alert.get("severity"),
                "previous_severity": previous.get("severity") if was_sent else None,
                "fingerprint": notify.alert_fingerprint(alert), "delivery_key": key,
            })
        return True

    def confirm(self, alert_ids: Sequence[str], response: str, now: datetime | None = None) -> None:
        self._set(alert_ids, status="sent", response=response, sent_at=now or utcnow())

    def fail(self, alert_ids: Sequence[str], error: str) -> None:
        self._set(alert_ids, status="failed", response=error)

    def note_error(self, alert_ids: Sequence[str], error: str) -> None:
        """A transient error: the row stays pending (outcome unknown) and is reconciled by the next run."""
        self._set(alert_ids, status="pending", response=error)

    def _set(self, alert_ids: Sequence[str], **values: Any) -> None:
        if not alert_ids:
            return
        p = self.wh.param()
        assignments = ", ".join(f'"{k}" = {p}' for k in values)
        marks = ", ".join([p] * len(alert_ids))
        self.wh.execute(
            f'UPDATE "{DELIVERY_TABLE}" SET {assignments} WHERE channel = {p} AND alert_id IN ({marks})',
            [*values.values(), self.channel, *alert_ids],
        )

    def _write(self, cur: Any, row: Mapping[str, Any]) -> None:
        p = self.wh.param()
        cur.execute(f'DELETE FROM "{DELIVERY_TABLE}" WHERE alert_id = {p} AND channel = {p}',
                    [row["alert_id"], self.channel])
        names = [c.name for c in DELIVERY_COLUMNS]
        values = [self.channel if n == "channel" else row.get(n) for n in names]
        cols = ", ".join(f'"{n}"' for n in names)
        cur.execute(f'INSERT INTO "{DELIVERY_TABLE}" ({cols}) VALUES ({", ".join([p] * len(names))})', values)


def _clean(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if v is None or v is pd.NaT or (not isinstance(v, (str, bytes)) and pd.api.types.is_scalar(v) and pd.isna(v)):
            out[k] = None
        elif isinstance(v, pd.Timestamp):
            out[k] = v.to_pydatetime()
        else:
            out[k] = v.item() if hasattr(v, "item") else v
    return out


# ----------------------------------------------------------------------------------------------------------------
# Channels
# ----------------------------------------------------------------------------------------------------------------


class Notifier(Protocol):
    channel: str

    def single_payload(self, alert: Mapping[str, Any], key: str, update_from: str | None) -> Any: ...

    def digest_payload(self, alerts: Sequence[Mapping[str, Any]], key: str) -> Any: ...

    def send(self, payload: Any, key: str) -> str:
        """Deliver; return a short description of the answer. Raises SendError."""

    def delivered(self, entries: Sequence[Mapping[str, Any]]) -> set[str]:
        """Of these pending ledger rows, the alert ids the channel demonstrably holds already."""


# Slack errors that go away by themselves.
_SLACK_TRANSIENT = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
# Slack errors that refuse this one message; any other error is about the token or channel and blocks them all.
_SLACK_MESSAGE_ERRORS = {
    "invalid_blocks", "invalid_blocks_format", "msg_too_long", "msg_blocks_too_long", "no_text",
    "too_many_attachments", "invalid_metadata_format", "invalid_metadata_schema", "metadata_too_large",
    "metadata_must_be_sent_from_app", "invalid_arguments", "markdown_text_conflict", "duplicate_message_not_found",
}


class SlackNotifier:
    """chat.postMessage with Block Kit; the delivery key in `metadata` makes posted messages findable."""

    channel = "slack"

    def __init__(self, client: WebClient, channel_id: str, *, run_id: str | None = None,
                 history_pages: int = 10, history_margin: timedelta = timedelta(minutes=10)):
        self.client = client
        self.channel_id = channel_id
        self.run_id = run_id
        self.history_pages = history_pages
        self.history_margin = history_margin

    @classmethod
    def from_settings(cls, settings: SlackNotifierSettings, *, env: Mapping[str, str] | None = None,
                      rate_limit_retries: int = 2, **kwargs: Any) -> SlackNotifier:
        if not settings.channel:
            raise ValueError("notifiers.slack.channel is empty (use the channel ID, e.g. C0123456789)")
        client = WebClient(token=secret_from_env(settings.token_env, env), base_url=settings.base_url)
        # the default handlers only retry connection errors; 429s sleep Retry-After (+ jitter) and retry
        client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=rate_limit_retries))
        return cls(client, settings.channel, **kwargs)

    def single_payload(self, alert: Mapping[str, Any], key: str, update_from: str | None) -> dict[str, Any]:
        return notify.slack_alert_message(alert, key=key, update_from=update_from, run_id=self.run_id)

    def digest_payload(self, alerts: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
        return notify.slack_digest_message(alerts, key=key)

    def send(self, payload: Mapping[str, Any], key: str) -> str:
        try:
            resp = self.client.chat_postMessage(channel=self.channel_id, unfurl_links=False, unfurl_media=False,
                                                **payload)
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            status = exc.response.status_code if exc.response is not None else 0
            transient = error in _SLACK_TRANSIENT or status == 429 or status >= 500
            raise SendError(f"slack HTTP {status}: {error or exc}", permanent=not transient,
                            blocked=not transient and error not in _SLACK_MESSAGE_ERRORS) from None
        except (SlackClientError, OSError) as exc:
            raise SendError(f"slack: {type(exc).__name__}: {exc}", permanent=False) from None
        return json.dumps({"channel": resp.get("channel"), "ts": resp.get("ts")})

    def delivered(self, entries: Sequence[Mapping[str, Any]]) -> set[str]:
        if not entries:
            return set()
        claimed = [pd.Timestamp(e["claimed_at"]) for e in entries if e.get("claimed_at") is not None]
        oldest = (min(claimed) if claimed else pd.Timestamp(utcnow()) - pd.Timedelta(days=1)) - self.history_margin
        keys = self._posted_keys(oldest.tz_localize("UTC").timestamp())
        return {e["alert_id"] for e in entries if e.get("delivery_key") in keys}

    def _posted_keys(self, oldest: float) -> set[str]:
        keys: set[str] = set()
        try:
            pages = self.client.conversations_history(channel=self.channel_id, oldest=f"{oldest:.6f}",
                                                      include_all_metadata=True, limit=200)
            for i, page in enumerate(pages):  # SlackResponse iterates over cursor pages
                for msg in page.get("messages", []):
                    payload = (msg.get("metadata") or {}).get("event_payload") or {}
                    if payload.get("delivery_key"):
                        keys.add(str(payload["delivery_key"]))
                if i + 1 >= self.history_pages:
                    break
        except (SlackApiError, SlackClientError, OSError) as exc:
            # cannot tell: do not resend (a duplicate page is worse than a late one); stay pending
            raise SendError(f"slack history: {exc}", permanent=False) from None
        return keys


def _http_retryable(exc: BaseException) -> bool:
    return isinstance(exc, SendError) and not exc.permanent and not exc.blocked


class WebhookNotifier:
    """JSON POST with `Idempotency-Key` and an HMAC-SHA256 `X-Watch-Signature`; retries 429/5xx with backoff."""

    channel = "webhook"

    def __init__(self, url: str, secret: str, *, session: requests.Session | None = None, attempts: int = 5,
                 wait: tenacity.wait.wait_base | None = None, timeout: float = 10.0):
        self.url = url
        self._secret = secret
        self.session = session or requests.Session()
        self.attempts = attempts
        self.wait = wait if wait is not None else tenacity.wait_random_exponential(multiplier=0.5, max=30)
        self.timeout = timeout

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookNotifier(url={self.url!r})"

    @classmethod
    def from_settings(cls, settings: WebhookNotifierSettings, *, env: Mapping[str, str] | None = None,
                      **kwargs: Any) -> WebhookNotifier:
        if not settings.url:
            raise ValueError("notifiers.webhook.url is empty")
        return cls(settings.url, secret_from_env(settings.secret_env, env), **kwargs)

    def single_payload(self, alert: Mapping[str, Any], key: str, update_from: str | None) -> bytes:
        return notify.webhook_body(alert, key=key, update_from=update_from)

    def digest_payload(self, alerts: Sequence[Mapping[str, Any]], key: str) -> bytes:
        return notify.webhook_digest_body(alerts, key=key)

    def send(self, payload: bytes, key: str) -> str:
        headers = {"Content-Type": "application/json", "Idempotency-Key": key,
                   "X-Watch-Signature": notify.sign_body(payload, self._secret), "User-Agent": "watch-pipeline"}
        retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(self.attempts), wait=self.wait,
                                     retry=tenacity.retry_if_exception(_http_retryable), reraise=True)
        for attempt in retrying:
            with attempt:
                return self._post(payload, headers)
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, body: bytes, headers: Mapping[str, str]) -> str:
        try:
            resp = self.session.post(self.url, data=body, headers=dict(headers), timeout=self.timeout)
        except requests.RequestException as exc:
            raise SendError(f"webhook: {type(exc).__name__}", permanent=False) from None
        if resp.status_code < 300:
            return f"HTTP {resp.status_code}"
        detail = f"webhook HTTP {resp.status_code}: {resp.text[:200]}"
        transient = resp.status_code in (408, 425, 429) or resp.status_code >= 500
        # 401/403/404/410: wrong secret or URL, the receiver would refuse every alert
        raise SendError(detail, permanent=not transient, blocked=resp.status_code in (401, 403, 404, 405, 410))

    def delivered(self, entries: Sequence[Mapping[str, Any]]) -> set[str]:
        # The receiver cannot be asked; resending with the same Idempotency-Key is the safe way to find out.
        return set()


class CsvNotifier:
    """Appends rows to a CSV file atomically: copy + new rows into a temp file in the same dir, then os.replace."""

    channel = "csv"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def from_settings(cls, settings: CsvNotifierSettings, *, base_dir: str | os.PathLike | None = None) -> CsvNotifier:
        p = Path(settings.path)
        return cls(p if p.is_absolute() or base_dir is None else Path(base_dir) / p)

    def single_payload(self, alert: Mapping[str, Any], key: str, update_from: str | None) -> list[dict[str, str]]:
        return [notify.csv_row(alert)]

    def digest_payload(self, alerts: Sequence[Mapping[str, Any]], key: str) -> list[dict[str, str]]:
        return [notify.csv_row(a) for a in alerts]

    def send(self, payload: Sequence[Mapping[str, str]], key: str) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.path.read_bytes() if self.path.exists() else b""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(notify.CSV_COLUMNS), lineterminator="\n")
        if not existing:
            writer.writeheader()
        elif not existing.endswith(b"\n"):
            buf.write("\n")
        writer.writerows(payload)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(existing)
                fh.write(buf.getvalue().encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return f"{len(payload)} rows -> {self.path.name}"

    def delivered(self, entries: Sequence[Mapping[str, Any]]) -> set[str]:
        held = {(r.get("alert_id"), r.get("severity")) for r in self.read_rows()}
        return {e["alert_id"] for e in entries if (e["alert_id"], e.get("severity")) in held}

    def read_rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))


def make_notifier(channel: str, settings: NotifierSettings, *, env: Mapping[str, str] | None = None,
                  **kwargs: Any) -> Notifier:
    """The sender of `channel` ('slack' | 'webhook' | 'csv') from the notifier settings."""
    if channel == "slack":
        return SlackNotifier.from_settings(settings.slack, env=env, **kwargs)
    if channel == "webhook":
        return WebhookNotifier.from_settings(settings.webhook, env=env, **kwargs)
    if channel == "csv":
        return CsvNotifier.from_settings(settings.csv, **kwargs)
    raise ValueError(f"unknown notifier channel {channel!r}")


# ----------------------------------------------------------------------------------------------------------------
# Delivery
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    """What one delivery run did, by alert id."""

    sent: list[str] = field(default_factory=list)
    updates: list[str] = field(default_factory=list)
    reconciled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    messages: int = 0
    blocked: str | None = None  # why the channel stopped taking messages this run

    def as_metadata(self) -> dict[str, int]:
        return {"sent": len(self.sent), "updates": len(self.updates), "reconciled": len(self.reconciled),
                "failed": len(self.failed), "pending": len(self.pending), "skipped": self.skipped,
                "messages": self.messages, "blocked": int(self.blocked is not None)}


def load_alerts(warehouse: Warehouse, *, partition_keys: Sequence[str] | None = None,
                alert_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Current rows of the `alerts` table for these daily partitions (ISO dates) or alert ids."""
    if not warehouse.table_exists(ALERTS_TABLE):
        return warehouse.conform(ALERTS_TABLE, pd.DataFrame())
    p = warehouse.param()
    if partition_keys is not None:
        if not partition_keys:
            return warehouse.conform(ALERTS_TABLE, pd.DataFrame())
        days = [pd.Timestamp(k).date() for k in partition_keys]
        return warehouse.read_table(ALERTS_TABLE, f"partition_date IN ({', '.join([p] * len(days))})", days)
    if alert_ids is not None:
        if not alert_ids:
            return warehouse.conform(ALERTS_TABLE, pd.DataFrame())
        return warehouse.read_table(ALERTS_TABLE, f"alert_id IN ({', '.join([p] * len(alert_ids))})",
                                    list(alert_ids))
    return warehouse.read_table(ALERTS_TABLE)


def deliver_alerts(
    warehouse: Warehouse,
    notifier: Notifier,
    alerts: pd.DataFrame,
    *,
    min_severity: str = "low",
    digest: bool = False,
    reconcile_after: timedelta = timedelta(seconds=60),
    now: datetime | None = None,
) -> DeliveryReport:
    """Deliver `alerts` (rows of the alerts table) through `notifier`, each at most once per version.

    First reconciles this channel's pending ledger rows claimed more than `reconcile_after` ago (younger ones may
    belong to a run still sending). Then every alert that is not suppressed, reaches `min_severity` and passes
    :func:`notify.should_send` is claimed, sent and confirmed; with `digest`, all of them go out as one message.
    """
    now = now or utcnow()
    ledger = DeliveryLedger(warehouse, notifier.channel)
    report = DeliveryReport()
    _reconcile(warehouse, ledger, notifier, report, claimed_before=now - reconcile_after)

    records = [_clean(r) for r in alerts.to_dict("records")]
    records = [a for a in records if not a.get("suppressed") and notify.at_least(a.get("severity"), min_severity)]
    records.sort(key=lambda a: (a.get("first_seen") or datetime.min, str(a["alert_id"])))
    previous = ledger.rows([str(a["alert_id"]) for a in records])
    todo = []
    for alert in records:
        prev = previous.get(str(alert["alert_id"]))
        if notify.should_send(prev, alert):
            todo.append((alert, prev))
        else:
            report.skipped += 1

    if report.blocked:  # the reconcile found the channel unusable: do not claim anything new
        report.skipped += len(todo)
        return report
    if digest and len(todo) > 1:
        versions = [notify.delivery_key(str(a["alert_id"]), str(a["severity"]), _update_from(p) is not None)
                    for a, p in todo]
        key = notify.digest_key(versions)
        claimed = [a for a, p in todo if ledger.claim(a, key, p, now=now)]
        report.skipped += len(todo) - len(claimed)
        if claimed:
            _send(ledger, notifier, claimed, key, notifier.digest_payload(claimed, key), report, updates=set())
        return report

    for alert, prev in todo:
        if report.blocked:
            report.skipped += 1
            continue
        update_from = _update_from(prev)
        key = notify.delivery_key(str(alert["alert_id"]), str(alert["severity"]), update_from is not None)
        if not ledger.claim(alert, key, prev, now=now):
            report.skipped += 1
            continue
        payload = notifier.single_payload(alert, key, update_from)
        _send(ledger, notifier, [alert], key, payload, report,
              updates={str(alert["alert_id"])} if update_from else set())
    return report


def _update_from(previous: Mapping[str, Any] | None) -> str | None:
    """The severity delivered before, when this send is an update of a delivered alert."""
    if previous is not None and previous.get("status") == "sent":
        return previous.get("severity")
    return None


def _send(ledger: DeliveryLedger, notifier: Notifier, alerts: Sequence[Mapping[str, Any]], key: str,
          payload: Any, report: DeliveryReport, updates: set[str], reconciling: bool = False) -> bool:
    """Send, then confirm or record the failure. True when the channel accepted it."""
    ids = [str(a["alert_id"]) for a in alerts]
    try:
        response = notifier.send(payload, key)
    except SendError as exc:
        if exc.permanent:
            ledger.fail(ids, str(exc))
            report.failed.update({i: str(exc) for i in ids})
        else:
            ledger.note_error(ids, str(exc))
            report.pending.update({i: str(exc) for i in ids})
            if exc.blocked:
                report.blocked = str(exc)
        return False
    ledger.confirm(ids, response)
    report.messages += 1
    for i in ids:
        (report.reconciled if reconciling else report.updates if i in updates else report.sent).append(i)
    return True


def _reconcile(warehouse: Warehouse, ledger: DeliveryLedger, notifier: Notifier, report: DeliveryReport,
               claimed_before: datetime) -> None:
    stale = ledger.pending(claimed_before)
    if not stale:
        return
    try:
        held = notifier.delivered(stale)
    except SendError as exc:
        report.pending.update({e["alert_id"]: str(exc) for e in stale})
        return
    if held:
        ledger.confirm(sorted(held), "reconciled: found in channel")
        report.reconciled += sorted(held)
    remaining = [e for e in stale if e["alert_id"] not in held]
    if not remaining:
        return
    current = {str(r["alert_id"]): _clean(r) for r in
               load_alerts(warehouse, alert_ids=[e["alert_id"] for e in remaining]).to_dict("records")}
    by_key: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for e in remaining:
        by_key[e.get("delivery_key") or e["alert_id"]].append(e)
    for key, entries in by_key.items():
        if report.blocked:
            report.pending.update({e["alert_id"]: report.blocked for e in entries})
            continue
        gone = [e["alert_id"] for e in entries if e["alert_id"] not in current]
        if gone:
            ledger.fail(gone, "alert no longer in the alerts table")
            report.failed.update({i: "alert no longer in the alerts table" for i in gone})
        alerts = [current[e["alert_id"]] for e in entries if e["alert_id"] in current]
        if not alerts:
            continue
        # resend the same version under the same key (the webhook receiver dedupes on it)
        if key.startswith("digest:"):
            payload = notifier.digest_payload(alerts, key)
            updates: set[str] = set()
        else:
            update_from = entries[0].get("previous_severity")
            payload = notifier.single_payload(alerts[0], key, update_from)
            updates = {alerts[0]["alert_id"]} if update_from else set()
        _send(ledger, notifier, alerts, key, payload, report, updates, reconciling=True)
