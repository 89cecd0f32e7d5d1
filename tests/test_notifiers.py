"""Channel senders and the delivery ledger: exactly once across crashes, retries and refusals (loopback only)."""

from __future__ import annotations

import csv
import json
from datetime import timedelta

import pandas as pd
import pytest
import tenacity
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from tests.fake_services import FakeSlack, FakeWebhook, _module_server, local_server, make_alert  # noqa: F401
from watch_pipeline import notifiers
from watch_pipeline.core import notify
from watch_pipeline.notifiers import (
    CsvNotifier,
    DeliveryLedger,
    MissingSecretError,
    SlackNotifier,
    WebhookNotifier,
    deliver_alerts,
    load_alerts,
    make_notifier,
)
from watch_pipeline.settings import NotifierSettings
from watch_pipeline.warehouse import DuckDBWarehouse

NOW = timedelta(0)  # reconcile every pending row at once: the "restart" in these tests


@pytest.fixture
def wh(tmp_path):
    w = DuckDBWarehouse(tmp_path / "wh.duckdb")
    yield w
    w.close()


def write_alerts(wh, rows, day="2026-10-01"):
    wh.replace_partitions("alerts", pd.DataFrame(rows), [day])
    return load_alerts(wh, partition_keys=[day])


@pytest.fixture
def slack(local_server):
    return FakeSlack(local_server)


@pytest.fixture
def slack_notifier(slack, monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    settings = NotifierSettings.model_validate(
        {"slack": {"enabled": True, "channel": "C0123456789", "base_url": slack.base_url}})
    return make_notifier("slack", settings)


@pytest.fixture
def webhook(local_server):
    return FakeWebhook(local_server)


@pytest.fixture
def webhook_notifier(webhook):
    return WebhookNotifier(webhook.url, "hook-secret", wait=tenacity.wait_none(), attempts=4)


class Crash(BaseException):
    """Stands in for the process dying (not an Exception, so nothing on the way catches it)."""


def crash_on_confirm(monkeypatch, times=1):
    """The process dies after the message left and before the ledger said 'sent'."""
    real = DeliveryLedger.confirm
    state = {"left": times}

    def confirm(self, *args, **kwargs):
        if state["left"] > 0:
            state["left"] -= 1
            raise Crash()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DeliveryLedger, "confirm", confirm)


def ledger(wh, channel):
    return DeliveryLedger(wh, channel).rows()


# -- Slack --------------------------------------------------------------------------------------------------------


def test_slack_client_has_rate_limit_handler(slack_notifier):
    assert any(isinstance(h, RateLimitErrorRetryHandler) for h in slack_notifier.client.retry_handlers)


def test_slack_delivers_each_alert_once(wh, slack, slack_notifier):
    alerts = write_alerts(wh, [make_alert(f"a{i}", actor=f"u{i}@example.com") for i in range(3)])
    report = deliver_alerts(wh, slack_notifier, alerts)
    assert sorted(report.sent) == ["a0", "a1", "a2"]
    assert sorted(slack.posted_keys()) == ["a0", "a1", "a2"]
    assert all(m["blocks"][0]["type"] == "header" for m in slack.posts)
    rows = ledger(wh, "slack")
    assert {r["status"] for r in rows.values()} == {"sent"}
    assert json.loads(rows["a0"]["response"])["ts"]
    again = deliver_alerts(wh, slack_notifier, alerts)
    assert again.sent == [] and again.skipped == 3
    assert len(slack.posts) == 3


def test_slack_crash_between_send_and_confirm_is_reconciled_from_history(wh, slack, slack_notifier, monkeypatch):
    alerts = write_alerts(wh, [make_alert("a0"), make_alert("a1", actor="bob@example.com")])
    crash_on_confirm(monkeypatch)
    with pytest.raises(Crash):
        deliver_alerts(wh, slack_notifier, alerts)
    assert len(slack.posts) == 1
    assert ledger(wh, "slack")["a0"]["status"] == "pending"
    # restart
    report = deliver_alerts(wh, slack_notifier, alerts, reconcile_after=NOW)
    assert report.reconciled == ["a0"] and report.sent == ["a1"]
    assert sorted(slack.posted_keys()) == ["a0", "a1"]
    assert slack.history_requests >= 1
    assert {r["status"] for r in ledger(wh, "slack").values()} == {"sent"}


def test_slack_crash_before_send_is_resent_once(wh, slack, slack_notifier, monkeypatch):
    alerts = write_alerts(wh, [make_alert("a0")])

    def die(*args, **kwargs):
        raise Crash()

    monkeypatch.setattr(SlackNotifier, "send", die)
    with pytest.raises(Crash):
        deliver_alerts(wh, slack_notifier, alerts)
    monkeypatch.undo()
    assert slack.posts == [] and ledger(wh, "slack")["a0"]["status"] == "pending"
    report = deliver_alerts(wh, slack_notifier, alerts, reconcile_after=NOW)
    assert report.reconciled == ["a0"]
    assert slack.posted_keys() == ["a0"]


def test_young_pending_entries_are_left_to_their_run(wh, slack, slack_notifier, monkeypatch):
    alerts = write_alerts(wh, [make_alert("a0")])
    crash_on_confirm(monkeypatch)
    with pytest.raises(Crash):
        deliver_alerts(wh, slack_notifier, alerts)
    report = deliver_alerts(wh, slack_notifier, alerts, reconcile_after=timedelta(hours=1))
    assert report.reconciled == [] and report.skipped == 1
    assert ledger(wh, "slack")["a0"]["status"] == "pending"
    assert len(slack.posts) == 1


def test_slack_429_retry_after_then_success(wh, slack, slack_notifier):
    slack.rate_limit_next = 1
    report = deliver_alerts(wh, slack_notifier, write_alerts(wh, [make_alert("a0")]))
    assert report.sent == ["a0"]
    assert slack.post_requests == 2 and slack.posted_keys() == ["a0"]


def test_slack_permanent_error_fails_one_and_delivers_the_rest(wh, slack, slack_notifier):
    slack.refuse = {"a1"}
    alerts = write_alerts(wh, [make_alert(f"a{i}", actor=f"u{i}@example.com") for i in range(3)])
    report = deliver_alerts(wh, slack_notifier, alerts)
    assert sorted(report.sent) == ["a0", "a2"] and list(report.failed) == ["a1"]
    rows = ledger(wh, "slack")
    assert rows["a1"]["status"] == "failed" and "invalid_blocks" in rows["a1"]["response"]
    # a refused alert is not retried for the same incident
    assert deliver_alerts(wh, slack_notifier, alerts).failed == {}
    assert slack.post_requests == 3


def test_severity_rise_is_sent_as_update_and_fall_is_not(wh, slack, slack_notifier):
    deliver_alerts(wh, slack_notifier, write_alerts(wh, [make_alert("a0", severity="medium")]))
    higher = write_alerts(wh, [make_alert("a0", severity="high", evidence="e1,e2,e3")])
    report = deliver_alerts(wh, slack_notifier, higher)
    assert report.updates == ["a0"] and report.sent == []
    assert slack.posted_keys() == ["a0", "a0@high"]
    assert "Severity raised" in slack.posts[-1]["blocks"][0]["text"]["text"]
    assert "was MEDIUM" in json.dumps(slack.posts[-1]["blocks"][1])
    same = write_alerts(wh, [make_alert("a0", severity="high", evidence="e1,e2,e3,e4")])
    lower = write_alerts(wh, [make_alert("a0", severity="low", evidence="e1,e2,e3,e4,e5")])
    assert deliver_alerts(wh, slack_notifier, same).skipped == 1
    assert deliver_alerts(wh, slack_notifier, lower).skipped == 1
    assert len(slack.posts) == 2
    assert ledger(wh, "slack")["a0"]["severity"] == "high"


def test_suppressed_and_below_minimum_are_not_sent(wh, slack, slack_notifier):
    alerts = write_alerts(wh, [make_alert("a0", suppressed=True), make_alert("a1", severity="low"),
                               make_alert("a2", severity="medium")])
    report = deliver_alerts(wh, slack_notifier, alerts, min_severity="medium")
    assert report.sent == ["a2"] and slack.posted_keys() == ["a2"]


def test_digest_is_one_message(wh, slack, slack_notifier, monkeypatch):
    alerts = write_alerts(wh, [make_alert(f"a{i}", actor=f"u{i}@example.com") for i in range(5)])
    crash_on_confirm(monkeypatch)
    with pytest.raises(Crash):
        deliver_alerts(wh, slack_notifier, alerts, digest=True)
    report = deliver_alerts(wh, slack_notifier, alerts, digest=True, reconcile_after=NOW)
    assert sorted(report.reconciled) == [f"a{i}" for i in range(5)]
    assert len(slack.posts) == 1
    assert slack.posts[0]["metadata"]["event_type"] == "watch_alert_digest"
    rows = ledger(wh, "slack")
    assert {r["status"] for r in rows.values()} == {"sent"}
    assert len({r["delivery_key"] for r in rows.values()}) == 1


def test_missing_secret_names_the_variable(monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    settings = NotifierSettings.model_validate({"slack": {"enabled": True, "channel": "C1"}})
    with pytest.raises(MissingSecretError, match="SLACK_BOT_TOKEN"):
        make_notifier("slack", settings)


# -- Webhook ------------------------------------------------------------------------------------------------------


def test_webhook_signed_post_with_idempotency_key(wh, webhook, webhook_notifier):
    report = deliver_alerts(wh, webhook_notifier, write_alerts(wh, [make_alert("a0"), make_alert("a1")]))
    assert sorted(report.sent) == ["a0", "a1"]
    assert sorted(webhook.keys()) == ["a0", "a1"]
    for r in webhook.requests:
        assert notify.verify_signature(r["body"], "hook-secret", r["signature"])
        assert json.loads(r["body"])["alert"]["alert_id"] == r["key"]
    assert "hook-secret" not in repr(webhook_notifier)


def test_webhook_500_twice_then_success(wh, webhook, webhook_notifier):
    webhook.script["a0"] = [500, 500]
    report = deliver_alerts(wh, webhook_notifier, write_alerts(wh, [make_alert("a0")]))
    assert report.sent == ["a0"]
    assert webhook.keys() == ["a0", "a0", "a0"]
    assert ledger(wh, "webhook")["a0"]["status"] == "sent"


def test_webhook_retries_exhausted_stays_pending_then_reconciles(wh, webhook, webhook_notifier):
    webhook.script["a0"] = [503] * 4
    alerts = write_alerts(wh, [make_alert("a0")])
    report = deliver_alerts(wh, webhook_notifier, alerts)
    assert list(report.pending) == ["a0"]
    row = ledger(wh, "webhook")["a0"]
    assert row["status"] == "pending" and "503" in row["response"]
    report = deliver_alerts(wh, webhook_notifier, alerts, reconcile_after=NOW)
    assert report.reconciled == ["a0"] and list(webhook.processed) == ["a0"]


def test_webhook_permanent_4xx_fails_and_does_not_block_others(wh, webhook, webhook_notifier):
    webhook.refuse = {"a1"}
    alerts = write_alerts(wh, [make_alert(f"a{i}", actor=f"u{i}@example.com") for i in range(3)])
    report = deliver_alerts(wh, webhook_notifier, alerts)
    assert sorted(report.sent) == ["a0", "a2"] and list(report.failed) == ["a1"]
    assert webhook.keys().count("a1") == 1  # no retries on a refusal
    row = ledger(wh, "webhook")["a1"]
    assert row["status"] == "failed" and "HTTP 400" in row["response"] and "unknown alert schema" in row["response"]


def test_webhook_crash_between_send_and_confirm_resends_same_key(wh, webhook, webhook_notifier, monkeypatch):
    alerts = write_alerts(wh, [make_alert("a0"), make_alert("a1", actor="bob@example.com")])
    crash_on_confirm(monkeypatch)
    with pytest.raises(Crash):
        deliver_alerts(wh, webhook_notifier, alerts)
    report = deliver_alerts(wh, webhook_notifier, alerts, reconcile_after=NOW)
    assert report.reconciled == ["a0"] and report.sent == ["a1"]
    assert webhook.keys() == ["a0", "a0", "a1"]  # the resend carries the same Idempotency-Key
    assert sorted(webhook.processed) == ["a0", "a1"]  # so the receiver handled each alert once
    assert deliver_alerts(wh, webhook_notifier, alerts, reconcile_after=NOW).skipped == 2
    assert len(webhook.requests) == 3


def test_webhook_update_uses_a_new_key(wh, webhook, webhook_notifier):
    deliver_alerts(wh, webhook_notifier, write_alerts(wh, [make_alert("a0", severity="low")]))
    deliver_alerts(wh, webhook_notifier, write_alerts(wh, [make_alert("a0", severity="critical", evidence="e7")]))
    assert webhook.keys() == ["a0", "a0@critical"]
    update = webhook.processed["a0@critical"]
    assert update["update"] is True and update["previous_severity"] == "low"


# -- CSV ----------------------------------------------------------------------------------------------------------


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_appends_each_alert_once(wh, tmp_path):
    out = tmp_path / "out" / "alerts.csv"
    n = CsvNotifier(out)
    deliver_alerts(wh, n, write_alerts(wh, [make_alert("a0"), make_alert("a1", actor="bob@example.com")]))
    deliver_alerts(wh, n, write_alerts(wh, [make_alert("a2", day="2026-10-02")], day="2026-10-02"))
    deliver_alerts(wh, n, load_alerts(wh))
    rows = read_csv(out)
    assert [r["alert_id"] for r in rows] == ["a0", "a1", "a2"]
    assert tuple(rows[0]) == notify.CSV_COLUMNS
    assert rows[1]["actor"] == "bob@example.com" and rows[0]["severity"] == "high"
    assert out.read_text().count("alert_id") == 1  # one header
    assert [p.name for p in out.parent.iterdir()] == ["alerts.csv"]  # no temp files left behind


def test_csv_crash_between_send_and_confirm_no_duplicate(wh, tmp_path, monkeypatch):
    out = tmp_path / "alerts.csv"
    n = CsvNotifier(out)
    alerts = write_alerts(wh, [make_alert("a0"), make_alert("a1", actor="bob@example.com")])
    crash_on_confirm(monkeypatch)
    with pytest.raises(Crash):
        deliver_alerts(wh, n, alerts)
    report = deliver_alerts(wh, n, alerts, reconcile_after=NOW)
    assert report.reconciled == ["a0"] and report.sent == ["a1"]
    assert [r["alert_id"] for r in read_csv(out)] == ["a0", "a1"]


def test_csv_failed_write_leaves_file_intact(tmp_path, monkeypatch):
    out = tmp_path / "alerts.csv"
    n = CsvNotifier(out)
    n.send([notify.csv_row(make_alert("a0"))], "a0")
    before = out.read_bytes()

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(notifiers.os, "replace", boom)
    with pytest.raises(OSError):
        n.send([notify.csv_row(make_alert("a1"))], "a1")
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["alerts.csv"]


def test_webhook_unusable_channel_blocks_the_run_then_delivers_once_fixed(wh, webhook, webhook_notifier):
    webhook.refuse_status = 401
    alerts = write_alerts(wh, [make_alert(f"a{i}", actor=f"u{i}@example.com") for i in range(3)])
    report = deliver_alerts(wh, webhook_notifier, alerts)
    assert report.blocked and "401" in report.blocked
    assert len(webhook.requests) == 1  # stopped at the first refusal instead of burning through every alert
    assert report.failed == {} and list(report.pending) == ["a0"]
    webhook.refuse_status = None  # the secret was fixed
    report = deliver_alerts(wh, webhook_notifier, alerts, reconcile_after=NOW)
    assert report.reconciled == ["a0"] and sorted(report.sent) == ["a1", "a2"]
    assert sorted(webhook.processed) == ["a0", "a1", "a2"]


def test_slack_channel_error_is_not_a_permanent_failure(wh, slack, slack_notifier):
    slack_notifier.channel_id = "C_UNKNOWN"
    slack.unknown_channels = {"C_UNKNOWN"}
    alerts = write_alerts(wh, [make_alert("a0"), make_alert("a1", actor="bob@example.com")])
    report = deliver_alerts(wh, slack_notifier, alerts)
    assert "channel_not_found" in report.blocked and report.failed == {}
    assert {r["status"] for r in ledger(wh, "slack").values()} == {"pending"}
    slack_notifier.channel_id = "C0123456789"
    report = deliver_alerts(wh, slack_notifier, alerts, reconcile_after=NOW)
    assert sorted(report.reconciled + report.sent) == ["a0", "a1"]
    assert sorted(slack.posted_keys()) == ["a0", "a1"]
