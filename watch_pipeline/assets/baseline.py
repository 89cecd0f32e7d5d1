"""global_baseline and peaks: the organisation's normal volumes per dimension, and today's peaks against them.

`global_baseline` stores one day of per-key statistics per partition (delete-then-insert the day), so a refresh
reads only the new partition. `peaks` compares a day with the sliding window of earlier days (default 28) in the
seasonal mode of :mod:`watch_pipeline.core.peaks`, and adds the attack patterns (password spraying, credential
stuffing, mass downloads) with their top IPs and actors.
"""

import dagster as dg
import pandas as pd

from watch_pipeline.assets.common import daily_asset, markdown_preview, partition_days
from watch_pipeline.assets.events import events
from watch_pipeline.core import schema
from watch_pipeline.core.peaks import (
    KEY_STATS_COLUMNS,
    PEAK_COLUMNS,
    PeakConfig,
    attack_patterns,
    baseline_markdown,
    daily_key_stats,
    detect_peaks,
)
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource
from watch_pipeline.warehouse import Warehouse, register_table

register_table("baseline_daily", KEY_STATS_COLUMNS)
register_table("peaks", PEAK_COLUMNS)

_EVENT_COLUMNS_FOR_PEAKS = "event_id, partition_date, event_time, source, app, action, outcome, actor, ip, asn, asn_org, target, geo_country"


def peak_config(cfg) -> PeakConfig:
    return PeakConfig(dims=tuple(cfg.baseline.dimensions), window_days=cfg.baseline.window_days)


# Every events column but the raw JSON text: no model reads it, and it is most of the bytes of a day of events.
EVENT_COLUMNS_NO_RAW = ", ".join(f'"{c.name}"' for c in schema.EVENT_COLUMNS if c.name != "raw")


def day_events(wh: Warehouse, day: str, columns: str = EVENT_COLUMNS_NO_RAW, in_time_order: bool = False) -> pd.DataFrame:
    """A day's events; ``in_time_order``: sorted by (event_time, event_id) in the database, for the detectors that
    process them in that order (their own sort then has nothing to do)."""
    return wh.read_table("events", f"partition_date = {wh.param()}", [pd.Timestamp(day).date()], columns=columns,
                         order_by="event_time, event_id" if in_time_order else "")


def window_rows(wh: Warehouse, table: str, day: str, days_back: int, column: str = "day") -> pd.DataFrame:
    """Rows of `table` for the `days_back` days before `day` (the sliding window; older days are evicted)."""
    end = pd.Timestamp(day).date()
    start = (pd.Timestamp(day) - pd.Timedelta(days=days_back)).date()
    p = wh.param()
    return wh.read_table(table, f'"{column}" >= {p} AND "{column}" < {p}', [start, end])


@daily_asset(
    deps=[events],
    group_name="baseline",
    description="Per-day statistics per key (source, app, action, outcome, ...) seen by actor and by IP: volumes, "
    "distinct samples, concentration, hourly profile and top contributors. The sliding window of `peaks` reads these.",
)
def global_baseline(context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: SettingsResource) -> dg.MaterializeResult:
    cfg = settings.load()
    wh = warehouse.get()
    conf = peak_config(cfg)
    rows = 0
    last = pd.DataFrame()
    for day in partition_days(context):
        ev = day_events(wh, day, _EVENT_COLUMNS_FOR_PEAKS)
        stats = daily_key_stats(ev, dims=conf.dims, day=day, top_n=conf.top_n)
        rows += wh.replace_partitions("baseline_daily", stats, [day], column="day")
        last = stats if len(stats) else last
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(rows),
            "keys_last_day": dg.MetadataValue.int(int(last["key"].nunique()) if len(last) else 0),
            "preview": markdown_preview(last, ["view", "key", "sub_count", "samp_count", "samp_sub_count_max"]),
        }
    )


@daily_asset(
    deps=[global_baseline, events],
    group_name="baseline",
    description="Peaks of a day against the sliding-window baseline (seasonal, dispersion-aware, new series) and "
    "attack patterns: password spraying, credential stuffing, mass downloads — each with the rule that fired, the "
    "baseline numbers and the top actors / IPs.",
)
def peaks(context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: SettingsResource) -> dg.MaterializeResult:
    cfg = settings.load()
    wh = warehouse.get()
    conf = peak_config(cfg)
    total = 0
    found = pd.DataFrame()
    chart = "_no days_"
    for day in partition_days(context):
        today = wh.read_table("baseline_daily", f"day = {wh.param()}", [pd.Timestamp(day).date()])
        history = window_rows(wh, "baseline_daily", day, conf.window_days)
        ev = day_events(wh, day, _EVENT_COLUMNS_FOR_PEAKS)
        day_peaks = pd.concat([detect_peaks(today, history, conf), attack_patterns(ev, history, conf)], ignore_index=True)
        total += wh.replace_partitions("peaks", day_peaks, [day], column="day")
        if len(day_peaks):
            found = pd.concat([found, day_peaks], ignore_index=True)
        chart = baseline_markdown(today, history, conf)
        context.log.info(f"peaks {day}: {len(day_peaks)} ({', '.join(sorted(set(day_peaks['kind']))) if len(day_peaks) else '-'})")
    by_kind = found["kind"].value_counts().to_dict() if len(found) else {}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(total),
            "by_kind": dg.MetadataValue.json({k: int(v) for k, v in by_kind.items()}),
            "today_vs_baseline": dg.MetadataValue.md(chart),
            "preview": markdown_preview(
                found.sort_values("score", ascending=False) if len(found) else found,
                ["day", "kind", "severity", "key", "observed", "expected", "reason"],
            ),
        }
    )
