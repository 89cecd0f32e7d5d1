"""One small job per notifier channel: deliver the alerts of the given `alerts` partitions exactly once.

The notifier sensors (:mod:`watch_pipeline.sensors`) request these runs, one per `alerts` materialization (one per
backfill or partition-range run, as a digest). The op reads the current rows of those partitions, so a
re-materialized partition is judged by its latest content, and the delivery ledger decides what goes out.

Runs of one channel should not overlap: each op runs in the concurrency pool `watch_notify_<channel>`; set its
limit to 1 (`dagster instance concurrency set watch_notify_slack 1`, likewise for webhook and csv).
"""


from datetime import timedelta

import dagster as dg

from watch_pipeline.notifiers import CHANNELS, deliver_alerts, load_alerts, make_notifier
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource
from watch_pipeline.warehouse import default_home


class NotifyConfig(dg.Config):
    """Which `alerts` partitions a delivery run covers (None: the whole table)."""

    partition_keys: list[str] | None = None
    storage_ids: list[int] = []
    backfill: bool = False
    reconcile_after_seconds: float = 60.0


def op_name(channel: str) -> str:
    return f"deliver_{channel}_alerts"


def job_name(channel: str) -> str:
    return f"notify_{channel}_job"


def run_config(channel: str, config: NotifyConfig | dict) -> dict:
    """The run config of `notify_<channel>_job` for this NotifyConfig (or dict of its fields)."""
    values = config.model_dump() if isinstance(config, NotifyConfig) else dict(config)
    return {"ops": {op_name(channel): {"config": values}}}


# Transient failures and crashes leave ledger rows pending; the retry reconciles them. The delay exceeds the
# default `reconcile_after_seconds` so the retry does not mistake its own pending rows for a live run's.
DEFAULT_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=90, backoff=dg.Backoff.EXPONENTIAL)


def make_notify_job(channel: str, retry_policy: dg.RetryPolicy | None = DEFAULT_RETRY_POLICY) -> dg.JobDefinition:
    """`notify_<channel>_job`: one op that delivers the alerts of the configured partitions."""

    @dg.op(
        name=op_name(channel),
        description=f"Deliver new and escalated alerts to {channel}, exactly once (claim, send, confirm).",
        retry_policy=retry_policy,
        pool=f"watch_notify_{channel}",
    )
    def deliver(context: dg.OpExecutionContext, config: NotifyConfig, warehouse: WarehouseResource,
                settings: SettingsResource) -> dg.Output[dict]:
        notifier_settings = settings.load().notifiers
        channel_settings = getattr(notifier_settings, channel)
        if not channel_settings.enabled:
            context.log.info(f"{channel} notifier is disabled in the settings; nothing sent")
            return dg.Output({}, metadata={"disabled": True})
        extra: dict = {"run_id": context.run_id} if channel == "slack" else {}
        if channel == "csv":
            extra["base_dir"] = default_home()
        notifier = make_notifier(channel, notifier_settings, **extra)
        wh = warehouse.get()
        alerts = load_alerts(wh, partition_keys=config.partition_keys)
        report = deliver_alerts(
            wh, notifier, alerts,
            min_severity=channel_settings.min_severity,
            digest=config.backfill and notifier_settings.backfill_digest,
            reconcile_after=timedelta(seconds=config.reconcile_after_seconds),
        )
        summary = report.as_metadata()
        context.log.info(f"{channel}: {summary}")
        for alert_id, error in report.failed.items():
            context.log.warning(f"{channel}: alert {alert_id} failed permanently: {error}")
        if report.pending:
            raise dg.Failure(
                description=f"{len(report.pending)} {channel} deliveries did not complete; they stay pending "
                            f"and are reconciled on retry",
                metadata={k: dg.MetadataValue.int(v) for k, v in summary.items()},
            )
        return dg.Output(summary, metadata={k: dg.MetadataValue.int(v) for k, v in summary.items()})

    @dg.job(name=job_name(channel), tags={"watch/notify_channel": channel},
            description=f"Deliver alerts to {channel} (requested by notify_{channel}_sensor).")
    def notify_job() -> None:
        deliver()

    return notify_job


NOTIFY_JOBS: dict[str, dg.JobDefinition] = {channel: make_notify_job(channel) for channel in CHANNELS}
notify_slack_job = NOTIFY_JOBS["slack"]
notify_webhook_job = NOTIFY_JOBS["webhook"]
notify_csv_job = NOTIFY_JOBS["csv"]
NOTIFIER_JOBS = [notify_slack_job, notify_webhook_job, notify_csv_job]
