"""Live pollers for the Google Reports API, the Slack Audit Logs API and Slack team.accessLogs.

Clients fetch whole windows (every page, or an exception and nothing); :mod:`.live` lands them into the raw tables
with key dedupe and per-poll stats.
"""

from watch_pipeline.pollers.google import GoogleReportsClient
from watch_pipeline.pollers.http import CredentialsRejected, PollError, RetryPolicy, TransientHTTPError
from watch_pipeline.pollers.live import (
    POLL_STATE_TABLE,
    PollRunFailed,
    fetch_days,
    fetch_google_day,
    fetch_slack_audit_day,
    land_window,
    last_window_end,
    next_live_window,
    poll_google,
    poll_live,
    poll_slack_access,
    poll_slack_audit,
    quarantine_frame,
)
from watch_pipeline.pollers.slack import SlackAccessLogsClient, SlackAuditClient, SlackPaidPlanRequired

__all__ = [
    "CredentialsRejected",
    "GoogleReportsClient",
    "POLL_STATE_TABLE",
    "PollError",
    "PollRunFailed",
    "RetryPolicy",
    "SlackAccessLogsClient",
    "SlackAuditClient",
    "SlackPaidPlanRequired",
    "TransientHTTPError",
    "fetch_days",
    "fetch_google_day",
    "fetch_slack_audit_day",
    "land_window",
    "last_window_end",
    "next_live_window",
    "poll_google",
    "poll_live",
    "poll_slack_access",
    "poll_slack_audit",
    "quarantine_frame",
]
