"""alerts: grouped, deduplicated, explained incidents with a stable alert_id (notifier sensors deliver them)."""

import dagster as dg
import pandas as pd

from watch_pipeline.assets.baseline import peaks
from watch_pipeline.assets.common import column_schema, daily_asset, count_table, markdown_preview, partition_days
from watch_pipeline.assets.models import event_scores
from watch_pipeline.core.schema import ALERT_COLUMNS
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource


@daily_asset(
    deps=[event_scores, peaks],
    group_name="alerts",
    metadata=column_schema(ALERT_COLUMNS),
    description="One row per incident: an actor's related signals within the grouping window (or an org-level "
    "campaign, actor '*'), with score, severity, the reasons with their numbers, evidence event ids and the state of "
    "the user's model. Suppressed alerts are kept with the allowlist entry that matched.",
)
def alerts(context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: SettingsResource) -> dg.MaterializeResult:
    from watch_pipeline.core.alerts import build_alerts

    cfg = settings.load()
    wh = warehouse.get()
    total, found = 0, []
    for day in partition_days(context):
        p = wh.param()
        scores = wh.read_table("event_scores", f"partition_date = {p}", [pd.Timestamp(day).date()])
        day_peaks = wh.read_table("peaks", f"day = {p}", [pd.Timestamp(day).date()])
        day_alerts = build_alerts(scores, day_peaks, day, cfg.alerts.model_dump(mode="json"))
        day_alerts["partition_date"] = pd.Timestamp(day).date()
        total += wh.replace_partitions("alerts", day_alerts, [day])
        if len(day_alerts):
            found.append(day_alerts)
        context.log.info(f"alerts {day}: {len(day_alerts)}")
    found_df = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=["severity", "suppressed"])
    active = found_df[~found_df["suppressed"].fillna(False).astype(bool)] if len(found_df) else found_df
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(total),
            "active": dg.MetadataValue.int(len(active)),
            "suppressed": dg.MetadataValue.int(len(found_df) - len(active)),
            "by_severity": count_table({k: int(v) for k, v in active["severity"].value_counts().items()} if len(active) else {}, "severity", "alerts"),
            "preview": markdown_preview(
                active.sort_values("score", ascending=False) if len(active) else active,
                ["actor", "first_seen", "severity", "score", "kinds", "reasons"],
            ),
        }
    )


@dg.asset_check(asset=alerts, description="Every alert_id is unique across the whole alerts table.")
def unique_alert_ids(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    wh = warehouse.get()
    if not wh.table_exists("alerts"):
        return dg.AssetCheckResult(passed=True, metadata={"alerts": 0})
    dup = wh.query_df('SELECT alert_id, COUNT(*) AS n FROM "alerts" GROUP BY alert_id HAVING COUNT(*) > 1')
    return dg.AssetCheckResult(passed=dup.empty, metadata={"duplicated_ids": len(dup), "sample": ", ".join(dup["alert_id"].head(5))})
