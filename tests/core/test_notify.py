"""Pure notifier logic: Block Kit limits, should_send, webhook body and signature, CSV rows."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

import pandas as pd
import pytest

from watch_pipeline.core import notify
from watch_pipeline.core.schema import ALERT_CSV_COLUMNS


def alert(**over) -> dict:
    base = {
        "alert_id": "a" * 32, "partition_date": pd.Timestamp("2026-10-01").date(), "actor": "alice@example.com",
        "first_seen": pd.Timestamp("2026-10-01 03:00:00"), "last_seen": pd.Timestamp("2026-10-01 03:20:00"),
        "score": 0.934, "severity": "high", "kinds": "new_asn,new_country",
        "reasons": "login from AS29518 (Bredband2 AB) in SE — never seen for this user in 60 days\n"
                   "0 of 300 colleagues use it",
        "evidence_event_ids": "e1,e2,e3", "model_state": "established", "ips": "89.160.20.112,81.2.69.142",
        "context": json.dumps({"asn": [29518], "asn_org": ["Bredband2 AB"], "country": ["SE"],
                               "city": ["Linköping"], "ua_family": "Firefox"}),
        "suppressed": False, "suppressed_reason": None,
    }
    base.update(over)
    return base


def field_texts(msg: dict) -> list[str]:
    return [f["text"] for b in msg["blocks"] if b["type"] == "section" for f in b.get("fields", [])]


def assert_within_slack_limits(msg: dict) -> None:
    """The documented Block Kit limits, checked here independently of notify.block_problems."""
    blocks = msg["blocks"]
    assert 1 <= len(blocks) <= 50
    assert msg["text"].strip() and len(msg["text"]) <= 40_000
    total = 0
    for b in blocks:
        if b["type"] == "header":
            assert b["text"]["type"] == "plain_text"
            assert len(b["text"]["text"]) <= 150
            total += len(b["text"]["text"])
        elif b["type"] == "section":
            assert "text" in b or "fields" in b
            if "text" in b:
                assert len(b["text"]["text"]) <= 3000
                total += len(b["text"]["text"])
            assert len(b.get("fields", [])) <= 10
            for f in b.get("fields", []):
                assert len(f["text"]) <= 2000
                total += len(f["text"])
        elif b["type"] == "context":
            assert 1 <= len(b["elements"]) <= 10
            total += sum(len(e["text"]) for e in b["elements"])
        else:
            pytest.fail(f"unexpected block type {b['type']}")
    assert total < 13_000  # msg_blocks_too_long observed at ~13 k


def test_alert_message_layout():
    a = alert()
    msg = notify.slack_alert_message(a)
    kinds = [b["type"] for b in msg["blocks"]]
    assert kinds[0] == "header" and kinds[1] == "section" and kinds[-1] == "context"
    assert "alice@example.com" in msg["blocks"][0]["text"]["text"]
    fields = "\n".join(field_texts(msg))
    for expected in ("HIGH", "0.93", "alice@example.com", "2026-10-01 03:00:00", "89.160.20.112", "AS29518",
                     "Bredband2 AB", "SE", "Linköping"):
        assert expected in fields
    why = [b["text"]["text"] for b in msg["blocks"] if b["type"] == "section" and "text" in b]
    assert why[0].startswith("*Why this fired*")
    assert "• 0 of 300 colleagues use it" in why[0]
    assert a["alert_id"] in msg["blocks"][-1]["elements"][0]["text"]
    assert msg["metadata"] == {"event_type": "watch_alert",
                               "event_payload": {"alert_id": a["alert_id"], "delivery_key": a["alert_id"],
                                                 "severity": "high"}}
    assert "HIGH" in msg["text"] and "alice@example.com" in msg["text"]
    assert_within_slack_limits(msg)


def test_block_kit_limits_with_40_reasons_and_long_names():
    reasons = "\n".join(f"reason {i}: login from AS{60000 + i} " + "(Very Long Hosting Provider Name) " * 8
                        for i in range(40))
    a = alert(actor="x" * 300 + "@" + "very-long-subdomain." * 20 + "example.com", reasons=reasons,
              alert_id="b" * 300, ips=",".join(f"203.0.113.{i}" for i in range(200)), kinds="k" * 5000,
              context=json.dumps({"asn": list(range(100)), "asn_org": ["Org " * 200] * 100,
                                  "country": ["NL"] * 50, "city": ["C" * 3000]}))
    msg = notify.slack_alert_message(a, update_from="medium", run_id="r" * 500)
    assert_within_slack_limits(msg)
    assert notify.block_problems(msg["blocks"]) == []
    # every reason is either shown as a bullet or counted in the "… and N more" line
    text = "\n".join(b["text"]["text"] for b in msg["blocks"] if b["type"] == "section" and "text" in b)
    shown = len(re.findall(r"^• reason \d+", text, flags=re.M))
    more = re.search(r"… and (\d+) more", text)
    assert shown >= 5
    assert shown + (int(more.group(1)) if more else 0) == 40


def test_block_problems_detects_violations():
    too_many = [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}] * 51
    assert any("blocks" in p for p in notify.block_problems(too_many))
    long_header = [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]
    assert notify.block_problems(long_header)
    fields = [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}]
    assert notify.block_problems(fields)


def test_digest_message_within_limits_for_many_alerts():
    alerts = [alert(alert_id=f"id{i:04d}", severity=("low", "medium", "high", "critical")[i % 4],
                    actor=f"user{i}@example.com" + "z" * 100) for i in range(300)]
    msg = notify.slack_digest_message(alerts, key="digest:abc")
    assert_within_slack_limits(msg)
    assert "300 alerts" in msg["blocks"][0]["text"]["text"]
    assert "75 critical" in msg["text"]
    assert msg["metadata"]["event_payload"]["delivery_key"] == "digest:abc"
    first_line = msg["blocks"][1]["text"]["text"].splitlines()[1]
    assert first_line.startswith("• *CRITICAL*")  # worst first


def test_org_level_alert_and_missing_context():
    msg = notify.slack_alert_message(alert(actor="*", context=None, ips=None, reasons=None))
    assert "organisation" in msg["blocks"][0]["text"]["text"]
    fields = "\n".join(field_texts(msg))
    assert "*IP / ASN:*\nn/a" in fields and "*Geo:*\nn/a" in fields
    assert_within_slack_limits(msg)


@pytest.mark.parametrize(
    ("previous", "changes", "expected"),
    [
        (None, {}, True),  # new alert
        ({"status": "sent", "severity": "high"}, {}, False),  # same incident again
        ({"status": "sent", "severity": "medium"}, {"evidence_event_ids": "e1,e2,e3,e4"}, True),  # rose
        ({"status": "sent", "severity": "high"}, {"evidence_event_ids": "e1,e2,e3,e4"}, False),  # equal
        ({"status": "sent", "severity": "critical"}, {"evidence_event_ids": "e9"}, False),  # fell
        ({"status": "pending", "severity": "low"}, {"evidence_event_ids": "e9"}, False),  # reconcile instead
        ({"status": "failed", "severity": "medium"}, {"evidence_event_ids": "e9"}, True),  # rose after failure
    ],
)
def test_should_send(previous, changes, expected):
    old = alert()
    new = alert(**changes)
    if previous is not None:
        previous = {**previous, "fingerprint": notify.alert_fingerprint(old)}
    assert notify.should_send(previous, new) is expected


def test_fingerprint_follows_content():
    a = alert()
    assert notify.alert_fingerprint(a) == notify.alert_fingerprint(dict(a))
    assert notify.alert_fingerprint(a) != notify.alert_fingerprint(alert(evidence_event_ids="e1"))
    assert notify.alert_fingerprint(a) != notify.alert_fingerprint(alert(severity="critical"))


def test_delivery_keys():
    assert notify.delivery_key("abc", "high", update=False) == "abc"
    assert notify.delivery_key("abc", "high", update=True) != notify.delivery_key("abc", "critical", update=True)
    assert notify.digest_key(["b", "a"]) == notify.digest_key(["a", "b"]) != notify.digest_key(["a"])


def test_webhook_body_and_signature():
    a = alert()
    body = notify.webhook_body(a, key=a["alert_id"])
    data = json.loads(body)
    assert data["type"] == "watch_alert" and data["update"] is False
    assert data["alert"]["alert_id"] == a["alert_id"]
    assert data["alert"]["first_seen"] == "2026-10-01T03:00:00Z"
    assert data["alert"]["evidence_event_ids"] == ["e1", "e2", "e3"]
    assert data["alert"]["context"]["asn"] == [29518]
    assert data["alert"]["reasons"][1] == "0 of 300 colleagues use it"
    sig = notify.sign_body(body, "s3cret")
    assert sig == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert notify.verify_signature(body, "s3cret", sig)
    assert not notify.verify_signature(body + b" ", "s3cret", sig)
    assert not notify.verify_signature(body, "other", sig)
    digest = json.loads(notify.webhook_digest_body([a, alert(alert_id="z")], key="digest:1"))
    assert digest["count"] == 2 and [x["alert_id"] for x in digest["alerts"]] == [a["alert_id"], "z"]


def test_csv_row():
    row = notify.csv_row(alert())
    assert tuple(row) == ALERT_CSV_COLUMNS
    assert row["first_seen"] == "2026-10-01T03:00:00Z" and row["score"] == "0.9340"
    assert "\n" not in row["reasons"] and "0 of 300 colleagues" in row["reasons"]


def test_context_shapes_of_the_alerts_asset():
    """Per-network contexts (account alerts) and top_ips/top_actors (org alerts), as core.alerts writes them."""
    networks = [{"country": "SE", "city": "Linköping", "asn": "29518.0", "asn_org": "Bredband2 AB",
                 "ua_browser": "Firefox"},
                {"country": "GB", "city": "London", "asn": "", "asn_org": "", "ua_browser": "Firefox"}]
    msg = notify.slack_alert_message(alert(context=json.dumps({"networks": networks, "events": 3})))
    fields = "\n".join(field_texts(msg))
    assert "AS29518 Bredband2 AB" in fields and "29518.0" not in fields
    assert "Linköping, London, SE, GB" in fields and "UA Firefox" in fields
    org = alert(actor="*", ips="", model_state="org",
                context=json.dumps({"top_ips": ["185.1.1.1", "185.1.1.2"], "top_actors": ["a@x.org", "b@x.org"]}))
    fields = "\n".join(field_texts(notify.slack_alert_message(org)))
    assert "185.1.1.1, 185.1.1.2" in fields and "*Accounts:*\na@x.org, b@x.org" in fields
