"""Sensors: the notifiers (one plain sensor per channel, following every `alerts` materialization) and late data.

Not `@asset_sensor`: that one only sees the newest materialization since its cursor and would skip partitions
materialized between two ticks. Here the cursor is the `storage_id` of the last handled materialization and every
newer one is read in order. Each becomes a run of `notify_<channel>_job` with `run_key=f"{channel}:{storage_id}"`
(Dagster never launches a run key twice); materializations of one backfill, or of one run that covered a
partition range, become one run that sends a digest. The delivery ledger behind the jobs makes delivery
exactly-once even when the same alerts come back.
"""


from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    BACKFILL_ID_TAG,
)

from watch_pipeline.core.late import late_days, newest_landing, rerun_range
from watch_pipeline.jobs import daily_pipeline_job
from watch_pipeline.notifiers import CHANNELS
from watch_pipeline.notify_jobs import NOTIFIER_JOBS, NOTIFY_JOBS, NotifyConfig, run_config
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource
from watch_pipeline.warehouse import open_warehouse

ALERTS_KEY = dg.AssetKey("alerts")
MAX_MATERIALIZATIONS_PER_TICK = 200


@dataclass
class _Batch:
    storage_ids: list[int] = field(default_factory=list)
    partition_keys: list[str | None] = field(default_factory=list)
    backfill: bool = False


def _backfill_group(tags: dict[str, str], run_id: str) -> str | None:
    """A group id when the materialization came from a backfill or a partition-range run, else None."""
    if tags.get(BACKFILL_ID_TAG):
        return f"backfill:{tags[BACKFILL_ID_TAG]}"
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if start and end and start != end:
        return f"run:{run_id}"
    return None


def plan_run_requests(channel: str, instance: dg.DagsterInstance, records: Sequence) -> list[dg.RunRequest]:
    """RunRequests of `notify_<channel>_job` for these materialization records (ascending storage ids)."""
    batches: dict[str, _Batch] = {}
    run_tags: dict[str, dict[str, str]] = {}
    for record in records:
        if record.run_id not in run_tags:
            run = instance.get_run_by_id(record.run_id)
            run_tags[record.run_id] = dict(run.tags) if run is not None else {}
        group = _backfill_group(run_tags[record.run_id], record.run_id)
        batch = batches.setdefault(group or f"single:{record.storage_id}", _Batch(backfill=group is not None))
        batch.storage_ids.append(record.storage_id)
        batch.partition_keys.append(record.partition_key)

    requests = []
    for batch in batches.values():
        ids = batch.storage_ids
        run_key = f"{channel}:{ids[0]}" if len(ids) == 1 else f"{channel}:{ids[0]}..{ids[-1]}"
        keys = None if None in batch.partition_keys else sorted(set(batch.partition_keys))
        config = NotifyConfig(partition_keys=keys, storage_ids=ids, backfill=batch.backfill)
        requests.append(dg.RunRequest(
            run_key=run_key,
            run_config=run_config(channel, config),
            tags={"watch/notify_channel": channel, "watch/alerts_storage_ids": ",".join(map(str, ids))[:200]},
        ))
    return requests


def _make_sensor(channel: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"notify_{channel}_sensor",
        job=NOTIFY_JOBS[channel],
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description=f"Requests one {channel} delivery run per new `alerts` materialization (cursor: storage id).",
    )
    def notify_sensor(context: dg.SensorEvaluationContext, settings: SettingsResource) -> dg.SensorResult:
        after = int(context.cursor) if context.cursor else None
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=ALERTS_KEY, after_storage_id=after),
            limit=MAX_MATERIALIZATIONS_PER_TICK,
            ascending=True,
        ).records
        if not records:
            return dg.SensorResult(skip_reason=dg.SkipReason("no new alerts materializations"), cursor=context.cursor)
        cursor = str(records[-1].storage_id)
        if not getattr(settings.load().notifiers, channel).enabled:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"{channel} notifier disabled; passed {len(records)} materializations"),
                cursor=cursor,
            )
        return dg.SensorResult(run_requests=plan_run_requests(channel, context.instance, records), cursor=cursor)

    return notify_sensor


NOTIFY_SENSORS: dict[str, dg.SensorDefinition] = {channel: _make_sensor(channel) for channel in CHANNELS}
notify_slack_sensor = NOTIFY_SENSORS["slack"]
notify_webhook_sensor = NOTIFY_SENSORS["webhook"]
notify_csv_sensor = NOTIFY_SENSORS["csv"]
NOTIFIER_SENSORS = [notify_slack_sensor, notify_webhook_sensor, notify_csv_sensor]


# ----------------------------------------------------------------------------------------------------------------
# late data
# ----------------------------------------------------------------------------------------------------------------

EVENTS_KEY = dg.AssetKey("events")
RAW_TABLES = ("raw_google", "raw_slack_audit", "raw_slack_access")
LATE_LOOKBACK_DAYS = 30
_ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
           dg.DagsterRunStatus.STARTED]


def landed_per_day(wh, since) -> pd.DataFrame:
    """partition_date, last_ingest: the newest landing time of any raw row per day since `since`."""
    parts = [
        wh.query_df(
            f'SELECT partition_date, MAX(ingest_time) AS last_ingest FROM "{t}" '
            f"WHERE partition_date >= {wh.param()} GROUP BY partition_date",
            [since],
        )
        for t in RAW_TABLES
        if wh.table_exists(t)
    ]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=["partition_date", "last_ingest"])
    return pd.concat(parts).groupby("partition_date", as_index=False)["last_ingest"].max()


def events_built_at(instance: dg.DagsterInstance, days: list[str]) -> dict[str, pd.Timestamp]:
    """UTC time of the newest `events` materialization of each of these days (days never built are left out)."""
    if not days:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=EVENTS_KEY, asset_partitions=days), limit=10_000, ascending=False
    ).records
    out: dict[str, pd.Timestamp] = {}
    for r in records:
        if r.partition_key and r.partition_key not in out:
            out[r.partition_key] = pd.Timestamp(r.timestamp, unit="s", tz="UTC")
    return out


@dg.sensor(
    name="late_data_sensor",
    job=daily_pipeline_job,
    minimum_interval_seconds=900,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Rebuilds the days whose raw rows the live poll landed after they were built (first late day through "
    "the newest built day, one range run). Turn it on together with the live poll.",
)
def late_data_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    active = context.instance.get_run_records(
        dg.RunsFilter(job_name=daily_pipeline_job.name, statuses=_ACTIVE), limit=1
    )
    if active:
        # one writer at a time (a DuckDB file takes one), and the running build may already include the rows
        return dg.SensorResult(skip_reason=dg.SkipReason("a daily_pipeline run is in progress"))
    built_days = sorted(context.instance.get_materialized_partitions(EVENTS_KEY))
    if not built_days:
        return dg.SensorResult(skip_reason=dg.SkipReason("no events partition built yet"))
    since = (pd.Timestamp(built_days[-1]) - pd.Timedelta(days=LATE_LOOKBACK_DAYS)).date()
    try:
        # A connection of its own, closed at once: an open DuckDB file would lock the runs out.
        wh = open_warehouse(url=warehouse.url, path=warehouse.path)
    except Exception as exc:  # a run holds the DuckDB file: try again at the next tick
        return dg.SensorResult(skip_reason=dg.SkipReason(f"warehouse busy: {type(exc).__name__}"))
    try:
        landed = landed_per_day(wh, since)
    finally:
        wh.close()
    days = sorted({pd.Timestamp(d).date().isoformat() for d in landed["partition_date"]})
    built = events_built_at(context.instance, days)
    late = late_days(landed, built)
    span = rerun_range(late, built_days)
    if span is None:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"no late rows in the {LATE_LOOKBACK_DAYS} days up to {built_days[-1]}")
        )
    newest = newest_landing(landed, late)
    context.log.info(f"late rows for {', '.join(late)}: rebuilding {span[0]}..{span[1]}")
    return dg.SensorResult(run_requests=[dg.RunRequest(
        run_key=f"late:{span[0]}..{span[1]}:{newest.isoformat()}",
        tags={ASSET_PARTITION_RANGE_START_TAG: span[0], ASSET_PARTITION_RANGE_END_TAG: span[1],
              "watch/trigger": "late_data", "watch/late_days": ",".join(late)[:200]},
    )])


ALL_SENSORS = [*NOTIFIER_SENSORS, late_data_sensor]

__all__ = ["ALL_SENSORS", "NOTIFIER_JOBS", "NOTIFIER_SENSORS", "late_data_sensor", "notify_csv_sensor",
           "notify_slack_sensor", "notify_webhook_sensor", "plan_run_requests"]
