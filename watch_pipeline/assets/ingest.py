"""Landing: the raw_* tables, one asset per source, fed by the archive reader and the live pollers.

What the APIs returned is kept verbatim with its dedupe key. Landing is append-only and keyed: re-materializing a
day or a range adds only records not landed before, so runs are idempotent and nothing a live poll landed is lost.
Records that cannot be landed go to quarantine.
"""


from datetime import datetime

import dagster as dg
import pandas as pd

from watch_pipeline.assets.common import column_schema, count_table, markdown_preview, partition_days
from watch_pipeline.core.archive import scan_archive
from watch_pipeline.core.raw import RAW_TABLE, RawRecord, records_frame
from watch_pipeline.core.schema import RAW_COLUMNS, RAW_SOURCES, stable_id
from watch_pipeline.partitions import daily_partitions
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource

RAW_KEYS = {source: dg.AssetKey(RAW_TABLE[source]) for source in RAW_SOURCES}
_DESCRIPTIONS = {
    "google": "Google Workspace Reports API activities (login, token, saml, admin, ...) as returned, one row per activity.",
    "slack_audit": "Slack Audit Logs API entries as returned, one row per entry.",
    "slack_access": "Slack team.accessLogs rows (aggregates per user, IP and UA) as observed, one row per observed state.",
}


def quarantine_frame(items, now: datetime) -> pd.DataFrame:
    rows = [
        {
            "quarantine_id": stable_id(q.stage, q.origin, q.reason, q.raw_text),
            "partition_date": q.partition_date,
            "stage": q.stage,
            "source": q.source,
            "origin": q.origin,
            "reason": q.reason,
            "raw_text": q.raw_text,
            "quarantined_at": now,
        }
        for q in items
    ]
    return pd.DataFrame(rows)


def _live_records(settings, days, log) -> tuple[dict[str, list[RawRecord]], list]:
    """Daily polls of the configured live sources (exactly each UTC day)."""
    from watch_pipeline.pollers.live import fetch_days  # the pollers are optional at import time

    return fetch_days(settings, days, log=log)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_KEYS[s],
            description=_DESCRIPTIONS[s],
            group_name="ingest",
            kinds={"python", "duckdb"},
            owners=["team:security-data"],
            tags={"source": s},
            metadata=column_schema(RAW_COLUMNS),
            skippable=True,
        )
        for s in RAW_SOURCES
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
)
def raw_landing(context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: SettingsResource):
    """Land the day(s) from the archive directory and the live pollers, replacing those partitions."""
    cfg = settings.load()
    days = partition_days(context)
    wh = warehouse.get()
    now = datetime.utcnow()
    records: dict[str, list[RawRecord]] = {s: [] for s in RAW_SOURCES}
    origins: dict[str, str] = {}
    quarantined = []
    files = 0
    if cfg.archive.dir:
        context.log.info(f"scanning archive {cfg.archive.dir} for {days[0]}..{days[-1]}")
        scan = scan_archive(
            cfg.archive.dir,
            days,
            progress=lambda n, total: context.log.info(f"archive: {n}/{total} files read"),
        )
        files = scan.files
        for s in RAW_SOURCES:
            records[s].extend(scan.records[s])
        origins.update(scan.origins)
        quarantined.extend(scan.quarantined)
    if cfg.google.enabled or cfg.slack_audit.enabled or cfg.slack_access.enabled:
        live, live_q = _live_records(cfg, days, context.log)
        for s in RAW_SOURCES:
            for rec in live.get(s, []):
                origins.setdefault(rec.record_key, f"poll:{s}")
                records[s].append(rec)
        quarantined.extend(live_q)
    if not cfg.archive.dir and not (cfg.google.enabled or cfg.slack_audit.enabled or cfg.slack_access.enabled):
        context.log.warning("no source configured: set archive.dir or enable a live poller in the settings file")

    # Quarantine first: ids are content hashes, so re-reading the same archive adds nothing twice.
    if quarantined:
        wh.insert_new("quarantine", quarantine_frame(quarantined, now), "quarantine_id")
        reasons: dict[str, int] = {}
        for q in quarantined:
            reasons[q.reason[:80]] = reasons.get(q.reason[:80], 0) + 1
        context.log.warning(f"{len(quarantined)} archived records quarantined: {dict(list(reasons.items())[:5])}")

    selected = set(context.selected_asset_keys)
    for s in RAW_SOURCES:
        if RAW_KEYS[s] not in selected:
            continue
        frame = records_frame(records[s], [origins.get(r.record_key, "") for r in records[s]], now)
        # Landing is append-only: a record already landed (by an earlier run or a live poll) keeps its row and its
        # first ingest_time, and nothing is ever deleted. accessLogs state in particular cannot be fetched again.
        written = wh.insert_new(RAW_TABLE[s], frame, "record_key")
        per_day = frame.groupby("partition_date").size().to_dict() if len(frame) else {}
        yield dg.MaterializeResult(
            asset_key=RAW_KEYS[s],
            metadata={
                "dagster/row_count": dg.MetadataValue.int(len(frame)),
                "new_rows": dg.MetadataValue.int(written),
                "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
                "rows_per_day": count_table({str(k): int(v) for k, v in sorted(per_day.items())}, "day", "rows"),
                "archive_files": dg.MetadataValue.int(files),
                "quarantined_in_archive": dg.MetadataValue.int(sum(1 for q in quarantined if q.source in (s, ""))),
                "preview": markdown_preview(frame, ["record_time", "origin", "raw"], rows=5),
            },
        )
