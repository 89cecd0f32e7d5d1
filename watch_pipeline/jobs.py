"""Jobs: the whole daily pipeline (partitioned, for one day, a range or a backfill) and the live poll."""

import dagster as dg

from watch_pipeline.partitions import daily_partitions
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource

# Every asset of the graph, partition by partition. Notifications are not part of it: sensors send them.
daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    description="Land, normalise, baseline, model, score and alert for one UTC day (or a range).",
)


@dg.op(description="Poll every enabled live source over its overlapping window [now - lag, now - delay] and land "
       "what is new (dedupe on the full key; first ingest time kept). A failed source writes nothing for its window; "
       "the next run reads it again.")
def poll_live_sources(context: dg.OpExecutionContext, warehouse: WarehouseResource, settings: SettingsResource) -> dict:
    from watch_pipeline.pollers.live import PollRunFailed, poll_live

    cfg = settings.load()
    if not (cfg.google.enabled or cfg.slack_audit.enabled or cfg.slack_access.enabled):
        context.log.warning("no live source is enabled in the settings (google / slack_audit / slack_access): nothing to poll")
        return {}
    try:
        results, _ = poll_live(warehouse.get(), cfg)
    except PollRunFailed as exc:
        for name, stats in exc.results.items():
            context.log.info(f"{name}: {stats.as_metadata()}")
        raise
    summary = {name: stats.as_metadata() for name, stats in results.items()}
    for name, stats in summary.items():
        context.log.info(f"{name}: {stats}")
    context.add_output_metadata({name: dg.MetadataValue.json(stats) for name, stats in summary.items()})
    return summary


@dg.job(description="Hourly live poll of the Google Reports API and Slack into the raw_* tables.",
        tags={"watch/kind": "live_poll"})
def live_poll():
    poll_live_sources()


ALL_JOBS = [daily_pipeline_job, live_poll]
