"""What the notifiers say, and whether they should say it: pure functions, no I/O.

* :func:`slack_alert_message` / :func:`slack_digest_message` build Block Kit payloads that respect Slack's
  documented limits (≤ 50 blocks, header ≤ 150, section text ≤ 3000, ≤ 10 fields × 2000, context ≤ 10 elements)
  and stay well under the ~13 k characters at which Slack answers ``msg_blocks_too_long``.
* :func:`webhook_body` / :func:`webhook_digest_body` and :func:`sign_body` build the signed JSON body.
* :func:`csv_row` formats one alert as a CSV row (:data:`CSV_COLUMNS`).
* :func:`should_send` decides from the delivery ledger: a new alert, or a changed incident whose severity rose.
* :func:`delivery_key` names one delivered version of an alert (the webhook's Idempotency-Key, the Slack
  metadata key used to reconcile after a crash).

An *alert* here is a mapping with the columns of :data:`watch_pipeline.core.schema.ALERT_COLUMNS`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from watch_pipeline.core.schema import ALERT_CSV_COLUMNS, SEVERITIES, stable_id

# Slack limits (docs.slack.dev, Block Kit reference) -------------------------------------------------------------
MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_BLOCK_ID = 255
MAX_FALLBACK_TEXT = 3000  # Slack truncates at 40 k; a notification line should be short anyway
# Slack rejects messages with `msg_blocks_too_long` at ~13 k characters of blocks (bolt-js #2509).
BLOCK_CHAR_BUDGET = 11_000
REASONS_CHAR_BUDGET = 6_000
FIELD_CHAR_BUDGET = 400  # per field: fields are glanced at, the reasons carry the detail

SLACK_EVENT_TYPE = "watch_alert"
SLACK_DIGEST_EVENT_TYPE = "watch_alert_digest"

CSV_COLUMNS = ALERT_CSV_COLUMNS

_SEVERITY_EMOJI = {"low": ":large_blue_circle:", "medium": ":warning:", "high": ":rotating_light:",
                   "critical": ":fire:"}


# ----------------------------------------------------------------------------------------------------------------
# Deciding
# ----------------------------------------------------------------------------------------------------------------


def severity_rank(severity: object) -> int:
    """0 (low) .. 3 (critical); unknown severities rank below low (-1)."""
    try:
        return SEVERITIES.index(str(severity).lower())
    except ValueError:
        return -1


def at_least(severity: object, minimum: str) -> bool:
    return severity_rank(severity) >= severity_rank(minimum)


def alert_fingerprint(alert: Mapping[str, Any]) -> str:
    """Changes whenever the incident changes (new evidence, other reasons, another score or severity)."""
    score = alert.get("score")
    score = None if _missing(score) else round(float(score), 4)
    return stable_id(
        alert.get("alert_id"), alert.get("severity"), score, _iso(alert.get("first_seen")),
        _iso(alert.get("last_seen")), alert.get("evidence_event_ids"), alert.get("reasons"), length=16,
    )


def should_send(previous: Mapping[str, Any] | None, alert: Mapping[str, Any]) -> bool:
    """Whether `alert` goes out, given this channel's ledger row for it (None when never handled).

    New alert -> yes. A pending entry -> no (it is reconciled, not re-sent). Otherwise only a changed incident whose
    severity rose above the one last handled is sent, as an update; equal or lower severity is news to no one.
    """
    if previous is None:
        return True
    if previous.get("status") == "pending":
        return False
    if previous.get("fingerprint") == alert_fingerprint(alert):
        return False
    return severity_rank(alert.get("severity")) > severity_rank(previous.get("severity"))


def delivery_key(alert_id: str, severity: str, update: bool) -> str:
    """The key of one delivered version: the alert id for the first message, `id@severity` for an update.

    Updates need their own key, otherwise an idempotent receiver would swallow them; severity identifies the
    version because an update is only sent when severity rises.
    """
    return f"{alert_id}@{severity}" if update else str(alert_id)


def digest_key(keys: Iterable[str]) -> str:
    """One key for a digest of several alert versions (stable for the same set)."""
    return "digest:" + stable_id(*sorted(keys), length=24)


# ----------------------------------------------------------------------------------------------------------------
# Slack Block Kit
# ----------------------------------------------------------------------------------------------------------------


def clip(text: object, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis."""
    s = "" if _missing(text) else str(text)
    return s if len(s) <= limit else s[: max(0, limit - 1)] + "…"


def reason_lines(alert: Mapping[str, Any]) -> list[str]:
    """The 'why this fired' bullets (newline-separated in the alerts table)."""
    raw = alert.get("reasons")
    if _missing(raw):
        return []
    return [line.strip().lstrip("•-* ").strip() for line in str(raw).splitlines() if line.strip()]


def alert_context(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert's `context` JSON as a dict ({} when absent or not JSON)."""
    raw = alert.get("context")
    if isinstance(raw, Mapping):
        return dict(raw)
    if _missing(raw) or not str(raw).strip():
        return {}
    try:
        value = json.loads(str(raw))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _values(value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in items:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        text = str(v).strip()
        # ASNs may arrive as floats ("29518.0") from nullable integer columns
        if text.endswith(".0") and text[:-2].isdigit():
            text = text[:-2]
        if text and text not in out:
            out.append(text)
    return out


def _listed(items: Sequence[str], limit: int = 3) -> str:
    extra = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + extra


def _context_sources(ctx: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The context itself plus its per-network summaries (`networks`: list of dicts), if any."""
    nets = ctx.get("networks")
    return [ctx] + ([n for n in nets if isinstance(n, Mapping)] if isinstance(nets, list) else [])


def _collect(ctx: Mapping[str, Any], *keys: str) -> list[str]:
    out: list[str] = []
    for source in _context_sources(ctx):
        for k in keys:
            for v in _values(source.get(k)):
                if v not in out:
                    out.append(v)
    return out


def network_summary(alert: Mapping[str, Any]) -> tuple[str, str]:
    """('IP / ASN' text, 'Geo' text) from the alert's `ips` and `context` JSON (tolerant of missing keys).

    Reads `asn`/`asns`, `asn_org`/`asn_orgs`, `country`/`countries`/`geo_country`, `city`/`cities`/`geo_city`,
    `ua_browser`/`ua_family`/`ua_families`, at the top level or in each item of a `networks` list.
    """
    ctx = alert_context(alert)
    ips = [] if _missing(alert.get("ips")) else _values(str(alert["ips"]).split(","))
    if not ips:
        ips = _collect(ctx, "top_ips")
    asn_parts: list[str] = []
    for source in _context_sources(ctx):
        asns = _values(source.get("asns", source.get("asn")))
        orgs = _values(source.get("asn_orgs", source.get("asn_org")))
        for i, a in enumerate(asns):
            label = f"AS{a.removeprefix('AS')}" + (f" {orgs[i]}" if i < len(orgs) else "")
            if label not in asn_parts:
                asn_parts.append(label)
        if not asns:
            asn_parts += [o for o in orgs if o not in asn_parts]
    ip_asn = " / ".join(p for p in (_listed(ips), _listed(asn_parts)) if p) or "n/a"
    geo = ", ".join(p for p in (_listed(_collect(ctx, "cities", "city", "geo_city")),
                                _listed(_collect(ctx, "countries", "country", "geo_country"))) if p)
    ua = _collect(ctx, "ua_families", "ua_family", "ua_browser")
    if ua:
        geo = (geo + " · " if geo else "") + f"UA {_listed(ua, 2)}"
    return ip_asn, geo or "n/a"


def fallback_text(alert: Mapping[str, Any], update_from: str | None = None) -> str:
    """The notification line shown where blocks are not (push, screen readers)."""
    sev = str(alert.get("severity") or "").upper()
    reasons = reason_lines(alert)
    what = reasons[0] if reasons else str(alert.get("kinds") or "suspicious activity")
    prefix = f"[{sev}] " + (f"(raised from {update_from.upper()}) " if update_from else "")
    return clip(f"{prefix}{_actor_label(alert)}: {what} — score {_score(alert)} (alert {alert.get('alert_id')})",
                MAX_FALLBACK_TEXT)


def slack_alert_message(
    alert: Mapping[str, Any], *, key: str | None = None, update_from: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """chat.postMessage arguments (text, blocks, metadata) for one alert.

    `update_from` is the severity previously delivered when this is an update; `key` is the delivery key carried
    in the message metadata so a restart can find the message in the channel history.
    """
    alert_id = str(alert.get("alert_id"))
    key = key or delivery_key(alert_id, str(alert.get("severity")), update_from is not None)
    sev = str(alert.get("severity") or "").lower()
    emoji = _SEVERITY_EMOJI.get(sev, ":grey_question:")
    title = "Severity raised" if update_from else ("Org-level alert" if alert.get("actor") == "*" else
                                                    "Possible account takeover")
    header = clip(f"{emoji} [{sev.upper()}] {title} — {_actor_label(alert)}", MAX_HEADER)
    ip_asn, geo = network_summary(alert)
    severity_text = sev.upper() + (f" (was {update_from.upper()})" if update_from else "")
    fields = [
        ("Severity", severity_text),
        ("Score", _score(alert)),
        ("Actor", _actor_label(alert)),
        ("When (UTC)", _when(alert)),
        ("IP / ASN", ip_asn),
        ("Geo", geo),
        ("Detectors", str(alert.get("kinds") or "n/a")),
        ("User model", str(alert.get("model_state") or "n/a")),
    ]
    accounts = _collect(alert_context(alert), "top_actors")
    if accounts:  # org-level alerts name the accounts involved
        fields.append(("Accounts", _listed(accounts, 5)))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {"type": "section", "fields": [_field(name, value) for name, value in fields][:MAX_FIELDS]},
    ]
    blocks += _bullet_sections("*Why this fired*", reason_lines(alert), max_sections=MAX_BLOCKS - len(blocks) - 1)
    evidence = [] if _missing(alert.get("evidence_event_ids")) else str(alert["evidence_event_ids"]).split(",")
    ctx_elements = [f"alert_id `{clip(alert_id, 200)}`", f"{len([e for e in evidence if e])} evidence events"]
    if run_id:
        ctx_elements.append(f"run `{clip(run_id, 100)}`")
    blocks.append({"type": "context",
                   "elements": [{"type": "mrkdwn", "text": clip(t, 300)} for t in ctx_elements]})
    return {
        "text": fallback_text(alert, update_from),
        "blocks": blocks,
        "metadata": {"event_type": SLACK_EVENT_TYPE,
                     "event_payload": {"alert_id": alert_id, "delivery_key": key, "severity": sev}},
    }


def slack_digest_message(alerts: Sequence[Mapping[str, Any]], *, key: str, title: str = "Backfill digest") -> dict:
    """One message summarising many alerts (a backfill), newest severity first, within the limits."""
    ordered = sorted(alerts, key=lambda a: (-severity_rank(a.get("severity")), -_float(a.get("score"))))
    counts = pd.Series([str(a.get("severity")) for a in alerts], dtype=object).value_counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITIES) if s in counts) or "none"
    header = clip(f":card_index_dividers: {title}: {len(alerts)} alerts ({summary})", MAX_HEADER)
    lines = [
        f"*{str(a.get('severity')).upper()}* {_actor_label(a)} · score {_score(a)} · {_when(a)} — "
        + clip((reason_lines(a) or [str(a.get("kinds") or "")])[0], 200)
        + f" (`{a.get('alert_id')}`)"
        for a in ordered
    ]
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}]
    blocks += _bullet_sections("*Alerts*", lines, max_sections=MAX_BLOCKS - 2)
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(f"digest `{key}`", 2000)}]})
    text = clip(f"{title}: {len(alerts)} alerts ({summary})", MAX_FALLBACK_TEXT)
    return {"text": text, "blocks": blocks,
            "metadata": {"event_type": SLACK_DIGEST_EVENT_TYPE,
                         "event_payload": {"delivery_key": key, "alert_count": len(alerts)}}}


def block_problems(blocks: Sequence[Mapping[str, Any]]) -> list[str]:
    """The documented Block Kit limits this message breaks ([] when it is fine)."""
    problems = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks > {MAX_BLOCKS}")
    total = 0
    for i, b in enumerate(blocks):
        if len(str(b.get("block_id", ""))) > MAX_BLOCK_ID:
            problems.append(f"block {i}: block_id too long")
        if b["type"] == "header":
            n = len(b["text"]["text"])
            total += n
            if b["text"]["type"] != "plain_text" or n > MAX_HEADER:
                problems.append(f"block {i}: header must be plain_text ≤ {MAX_HEADER} (got {n})")
        elif b["type"] == "section":
            if "text" in b:
                n = len(b["text"]["text"])
                total += n
                if n > MAX_SECTION_TEXT:
                    problems.append(f"block {i}: section text {n} > {MAX_SECTION_TEXT}")
            fields = b.get("fields", [])
            if len(fields) > MAX_FIELDS:
                problems.append(f"block {i}: {len(fields)} fields > {MAX_FIELDS}")
            for f in fields:
                total += len(f["text"])
                if len(f["text"]) > MAX_FIELD_TEXT:
                    problems.append(f"block {i}: field text {len(f['text'])} > {MAX_FIELD_TEXT}")
        elif b["type"] == "context":
            if len(b["elements"]) > MAX_CONTEXT_ELEMENTS:
                problems.append(f"block {i}: {len(b['elements'])} context elements > {MAX_CONTEXT_ELEMENTS}")
            total += sum(len(e.get("text", "")) for e in b["elements"])
    if total > BLOCK_CHAR_BUDGET:
        problems.append(f"{total} characters of blocks > budget {BLOCK_CHAR_BUDGET}")
    return problems


def _bullet_sections(title: str, lines: Sequence[str], max_sections: int) -> list[dict[str, Any]]:
    """Bullets packed into sections of ≤ 3000 characters, within a character budget; the rest is counted."""
    if not lines:
        return [_mrkdwn_section(f"{title}\n_no reasons recorded_")]
    sections: list[list[str]] = []
    current = [title]
    used = shown = 0
    for line in lines:
        bullet = "• " + clip(line.replace("\n", " "), 500)
        if used + len(bullet) > REASONS_CHAR_BUDGET:
            break
        # keep room for the "… and N more" line
        if len("\n".join(current + [bullet])) > MAX_SECTION_TEXT - 60:
            if len(sections) + 1 >= max_sections:
                break
            sections.append(current)
            current = []
        current.append(bullet)
        used += len(bullet)
        shown += 1
    if shown < len(lines):
        current.append(f"_… and {len(lines) - shown} more_")
    sections.append(current)
    return [_mrkdwn_section("\n".join(s)) for s in sections]


def _mrkdwn_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, MAX_SECTION_TEXT)}}


def _field(name: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": clip(f"*{name}:*\n{value}", min(FIELD_CHAR_BUDGET, MAX_FIELD_TEXT))}


def _actor_label(alert: Mapping[str, Any]) -> str:
    actor = alert.get("actor")
    return "organisation (*)" if actor == "*" else ("unknown actor" if _missing(actor) else str(actor))


def _score(alert: Mapping[str, Any]) -> str:
    s = _float(alert.get("score"))
    return "n/a" if math.isnan(s) else f"{s:.2f}"


def _when(alert: Mapping[str, Any]) -> str:
    first, last = _iso(alert.get("first_seen"), " "), _iso(alert.get("last_seen"), " ")
    if first and last and first != last:
        return f"{first} → {last}"
    return first or last or "n/a"


# ----------------------------------------------------------------------------------------------------------------
# Webhook
# ----------------------------------------------------------------------------------------------------------------


def alert_record(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as plain JSON-able values (times ISO-8601 UTC with Z, lists split, context parsed)."""
    out: dict[str, Any] = {}
    for k, v in alert.items():
        if k in ("first_seen", "last_seen"):
            out[k] = _iso(v) or None
        elif k in ("evidence_event_ids", "ips", "kinds"):
            out[k] = [] if _missing(v) else [p.strip() for p in str(v).split(",") if p.strip()]
        elif k == "reasons":
            out[k] = reason_lines(alert)
        elif k == "context":
            out[k] = alert_context(alert)
        elif k == "partition_date":
            out[k] = None if _missing(v) else str(pd.Timestamp(v).date())
        elif k == "score":
            f = _float(v)
            out[k] = None if math.isnan(f) else f
        elif k == "suppressed":
            out[k] = None if _missing(v) else bool(v)
        else:
            out[k] = None if _missing(v) else (v.item() if hasattr(v, "item") else v)
    return out


def webhook_body(alert: Mapping[str, Any], *, key: str, update_from: str | None = None) -> bytes:
    """The JSON body for one alert (compact, sorted keys: the bytes that are signed)."""
    payload = {"type": "watch_alert", "delivery_key": key, "update": update_from is not None,
               "previous_severity": update_from, "alert": alert_record(alert)}
    return _dumps(payload)


def webhook_digest_body(alerts: Sequence[Mapping[str, Any]], *, key: str) -> bytes:
    payload = {"type": "watch_alert_digest", "delivery_key": key, "count": len(alerts),
               "alerts": [alert_record(a) for a in alerts]}
    return _dumps(payload)


def sign_body(body: bytes, secret: str) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the exact body bytes with the shared secret."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: str, header: str) -> bool:
    """Constant-time check of a `X-Watch-Signature` header (what a receiver does)."""
    return hmac.compare_digest(sign_body(body, secret), header or "")


# ----------------------------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------------------------


def csv_row(alert: Mapping[str, Any]) -> dict[str, str]:
    """One CSV row (:data:`CSV_COLUMNS`); reasons joined with ' | ' to stay on one line."""
    row = {}
    for col in CSV_COLUMNS:
        v = alert.get(col)
        if col in ("first_seen", "last_seen"):
            row[col] = _iso(v)
        elif col == "score":
            f = _float(v)
            row[col] = "" if math.isnan(f) else f"{f:.4f}"
        elif col == "reasons":
            row[col] = " | ".join(reason_lines(alert))
        else:
            row[col] = "" if _missing(v) else str(v)
    return row


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _missing(v: object) -> bool:
    if v is None or v is pd.NaT:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _float(v: object) -> float:
    try:
        return float("nan") if _missing(v) else float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _iso(v: object, sep: str = "T") -> str:
    if _missing(v):
        return ""
    ts = pd.Timestamp(v)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + ("Z" if sep == "T" else " UTC")


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()
