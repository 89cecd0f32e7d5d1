"""The normalised tables of watch-pipeline, described in one place.

Every table the pipeline writes is declared here as an ordered list of columns with a portable SQL type; the
warehouse turns these into DuckDB or PostgreSQL DDL. Times are stored as naive ``TIMESTAMP`` values in UTC and
handled in pandas as naive ``datetime64[ns]`` (UTC by convention) so both engines round-trip them identically.

The README's "Event schema" section is generated from :data:`EVENT_COLUMNS` (see ``docs/schema.md``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# ----------------------------------------------------------------------------------------------------------------
# Sources and apps
# ----------------------------------------------------------------------------------------------------------------

SOURCE_GOOGLE = "google"  # Google Workspace Reports API activities
SOURCE_SLACK_AUDIT = "slack_audit"  # Slack Audit Logs API entries
SOURCE_SLACK_ACCESS = "slack_access"  # Slack team.accessLogs rows (aggregates per user, IP, UA)
RAW_SOURCES = (SOURCE_GOOGLE, SOURCE_SLACK_AUDIT, SOURCE_SLACK_ACCESS)

# `app` values: Google's applicationName as returned (login, token, saml, admin, drive, ...), or these two.
APP_SLACK_AUDIT = "slack_audit"
APP_SLACK_ACCESS = "slack_access"

# `outcome` values
OUTCOME_SUCCESS = "success"
OUTCOME_FAILURE = "failure"
OUTCOME_CHALLENGE = "challenge"
OUTCOME_WARNING = "warning"  # vendor account warnings (suspicious_login, anomaly, ...)
OUTCOME_INFO = "info"  # everything that is neither (downloads, admin changes, logouts, ...)
OUTCOMES = (OUTCOME_SUCCESS, OUTCOME_FAILURE, OUTCOME_CHALLENGE, OUTCOME_WARNING, OUTCOME_INFO)


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # portable: VARCHAR, BIGINT, DOUBLE, BOOLEAN, TIMESTAMP, DATE
    doc: str


def _cols(*rows: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*r) for r in rows)


# ----------------------------------------------------------------------------------------------------------------
# Landing tables: raw_google, raw_slack_audit, raw_slack_access (same columns)
# ----------------------------------------------------------------------------------------------------------------

RAW_COLUMNS = _cols(
    ("record_key", "VARCHAR", "dedupe key of the landed record (see raw_record_key)"),
    ("source", "VARCHAR", "google | slack_audit | slack_access"),
    ("record_time", "TIMESTAMP", "UTC time of the record (Google id.time, Slack date_create, accessLogs date_last)"),
    ("partition_date", "DATE", "UTC day of record_time: the daily partition that owns the row"),
    ("ingest_time", "TIMESTAMP", "UTC time the record was first landed (kept on re-polls)"),
    ("origin", "VARCHAR", "where it came from: archive file path or 'poll:<app>'"),
    ("raw", "VARCHAR", "the record exactly as the API returned it (JSON text)"),
)

# ----------------------------------------------------------------------------------------------------------------
# events: one row per audit event, normalised and enriched
# ----------------------------------------------------------------------------------------------------------------

EVENT_BASE_COLUMNS = _cols(
    ("event_id", "VARCHAR", "stable dedupe key: sha256 of the source key plus event index/name (32 hex chars)"),
    ("partition_date", "DATE", "UTC day of the raw record that produced the event"),
    ("source", "VARCHAR", "google | slack_audit | slack_access"),
    ("app", "VARCHAR", "login, token, saml, admin, drive, ... (Google) | slack_audit | slack_access"),
    ("event_type", "VARCHAR", "Google event type (login, account_warning, ...) or Slack entity type"),
    ("action", "VARCHAR", "event name: login_success, authorize, user_login, file_downloaded, access, ..."),
    ("outcome", "VARCHAR", "success | failure | challenge | warning | info"),
    ("event_time", "TIMESTAMP", "UTC time of the event"),
    ("actor_raw", "VARCHAR", "the actor as the log names it (email, or Slack user id)"),
    ("actor", "VARCHAR", "canonical actor after user_domain / user_map, lower-case email"),
    ("actor_id", "VARCHAR", "vendor id of the actor (Google profileId, Slack user id)"),
    ("ip", "VARCHAR", "source IP as logged"),
    ("user_agent", "VARCHAR", "user agent string ('' when the source has none)"),
    ("session_id", "VARCHAR", "Slack session id ('' when none)"),
    ("login_type", "VARCHAR", "Google login_type (google_password, saml, reauth, ...)"),
    ("oauth_client", "VARCHAR", "OAuth app name or client id (Google token authorize)"),
    ("target", "VARCHAR", "object acted on: file id, app name, affected user ('' when none)"),
    ("access_count", "BIGINT", "how many accesses the row stands for (1; accessLogs count deltas)"),
    ("vendor_suspicious", "BOOLEAN", "the vendor flagged it: Google is_suspicious/account_warning, Slack anomaly"),
    ("vendor_reasons", "VARCHAR", "vendor's reasons, comma-separated (Slack anomaly details.reason, warning name)"),
    ("challenge_method", "VARCHAR", "Google login_challenge_method (comma-separated)"),
    ("challenge_status", "VARCHAR", "Google login_challenge_status"),
    ("failure_type", "VARCHAR", "Google login_failure_type / SAML failure_type"),
    ("previous_ip", "VARCHAR", "Slack anomaly details.previous_ip_address"),
    ("previous_ua", "VARCHAR", "Slack anomaly details.previous_ua"),
    ("ingest_time", "TIMESTAMP", "UTC time the raw record was landed"),
    ("raw", "VARCHAR", "the raw record (JSON text) the event came from"),
)

EVENT_ENRICHMENT_COLUMNS = _cols(
    ("ip_internal", "BOOLEAN", "private, loopback, link-local or reserved address"),
    ("geo_country", "VARCHAR", "ISO country code (GeoIP2 City)"),
    ("geo_subdivision", "VARCHAR", "ISO subdivision code"),
    ("geo_city", "VARCHAR", "city name (English)"),
    ("geo_lat", "DOUBLE", "latitude"),
    ("geo_lon", "DOUBLE", "longitude"),
    ("geo_accuracy_km", "DOUBLE", "accuracy radius in km"),
    ("asn", "BIGINT", "autonomous system number (GeoIP2 ASN)"),
    ("asn_org", "VARCHAR", "autonomous system organisation"),
    ("geo_network", "VARCHAR", "the matched network (CIDR) of the ASN database, else of the City database"),
    ("ua_browser", "VARCHAR", "browser / client family (ua-parser, Slack clients recognised)"),
    ("ua_browser_major", "VARCHAR", "browser major version"),
    ("ua_os", "VARCHAR", "OS family"),
    ("ua_device", "VARCHAR", "device family"),
    ("ua_device_key", "VARCHAR", "version-free device key: browser family | OS family | device family"),
)

EVENT_COLUMNS = EVENT_BASE_COLUMNS + EVENT_ENRICHMENT_COLUMNS

QUARANTINE_COLUMNS = _cols(
    ("quarantine_id", "VARCHAR", "sha256 of origin, position and raw text"),
    ("partition_date", "DATE", "the day the record belongs to, when it could be told; NULL otherwise"),
    ("stage", "VARCHAR", "archive | poll | normalise | enrich"),
    ("source", "VARCHAR", "the source, when it could be told ('' otherwise)"),
    ("origin", "VARCHAR", "file path (and line/item) or poll"),
    ("reason", "VARCHAR", "why the record was not ingested"),
    ("raw_text", "VARCHAR", "the record as read (invalid UTF-8 replaced by U+FFFD)"),
    ("quarantined_at", "TIMESTAMP", "UTC time it was quarantined"),
)

# ----------------------------------------------------------------------------------------------------------------
# alerts and delivery ledger
# ----------------------------------------------------------------------------------------------------------------

ALERT_COLUMNS = _cols(
    ("alert_id", "VARCHAR", "stable id of the incident (same incident -> same id on re-runs and backfills)"),
    ("partition_date", "DATE", "the day whose materialization produced the alert"),
    ("actor", "VARCHAR", "canonical actor; '*' for org-level alerts (spray campaign, ...)"),
    ("first_seen", "TIMESTAMP", "UTC time of the earliest evidence"),
    ("last_seen", "TIMESTAMP", "UTC time of the latest evidence"),
    ("score", "DOUBLE", "0..1"),
    ("severity", "VARCHAR", "low | medium | high | critical"),
    ("kinds", "VARCHAR", "comma-separated detector kinds that contributed"),
    ("reasons", "VARCHAR", "'why this fired': newline-separated bullets with the numbers"),
    ("evidence_event_ids", "VARCHAR", "comma-separated event ids"),
    ("model_state", "VARCHAR", "learning | established | org"),
    ("ips", "VARCHAR", "comma-separated source IPs in the evidence"),
    ("context", "VARCHAR", "JSON: geo / ASN / UA summary for notifiers"),
    ("suppressed", "BOOLEAN", "matched an allowlist entry"),
    ("suppressed_reason", "VARCHAR", "which allowlist entry, when suppressed"),
)

ALERT_CSV_COLUMNS = ("actor", "first_seen", "last_seen", "score", "severity", "reasons", "alert_id")

SEVERITIES = ("low", "medium", "high", "critical")


_SHA256 = hashlib.sha256


def stable_id(*parts: object, length: int = 32) -> str:
    """A short, stable hex id from the given parts (None -> '')."""
    try:
        text = "\x1f".join(parts)  # all text: the common case, ~2.5x faster (a few million calls in a backfill)
    except TypeError:
        text = "\x1f".join("" if p is None else str(p) for p in parts)
    return _SHA256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def schema_markdown() -> str:
    """docs/schema.md, generated from the declarations above (a test keeps the file in step)."""
    parts = [
        "# Tables of watch-pipeline\n",
        "Generated from `watch_pipeline/core/schema.py` by `python -m watch_pipeline.core.schema > docs/schema.md`.",
        "Times are UTC (stored as naive TIMESTAMP).\n",
    ]
    for title, cols in (
        ("raw_google, raw_slack_audit, raw_slack_access (landing)", RAW_COLUMNS),
        ("events (normalised)", EVENT_BASE_COLUMNS),
        ("events (enrichment)", EVENT_ENRICHMENT_COLUMNS),
        ("quarantine", QUARANTINE_COLUMNS),
        ("alerts", ALERT_COLUMNS),
    ):
        parts.append(f"## {title}\n\n| column | type | meaning |\n|---|---|---|")
        parts.extend(f"| `{c.name}` | {c.sql_type} | {_cell(c.doc)} |" for c in cols)
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    print(schema_markdown(), end="")
