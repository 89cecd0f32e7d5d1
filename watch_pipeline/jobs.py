"""Jobs: the whole daily pipeline (partitioned), usable for one day, a range, or a backfill."""

import dagster as dg

from watch_pipeline.partitions import daily_partitions

# Every asset of the graph, partition by partition. Notifications are not part of it: sensors send them.
daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    description="Land, normalise, baseline, model, score and alert for one UTC day (or a range).",
)

ALL_JOBS = [daily_pipeline_job]
