"""Landing: the raw_* tables, one asset per source, fed by the archive reader and the live pollers.

What the APIs returned is kept verbatim with its dedupe key. Landing is append-only and keyed: re-materializing a
day or a range adds only records not landed before, so runs are idempotent and nothing a live poll landed is lost.
Records that cannot be landed go to quarantine.
"""


from datetime import datetime

import dagster as dg
import pandas as pd

from watch_pipeline.assets.common import column_schema, count_table, markdown_preview, partition_days
from watch_pipeline.core import schema
from watch_pipeline.core.archive import archive_files, iter_archive
from watch_pipeline.core.raw import RAW_TABLE, RawRecord, records_frame
from watch_pipeline.core.schema import RAW_COLUMNS, RAW_SOURCES, stable_id
from watch_pipeline.partitions import daily_partitions
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource
from watch_pipeline.warehouse import Warehouse, register_table

RAW_KEYS = {source: dg.AssetKey(RAW_TABLE[source]) for source in RAW_SOURCES}
# Records held in memory before they are written: bounds memory on a long range, whatever the archive's size.
FLUSH_RECORDS = 100_000
ARCHIVE_FILES_TABLE = "archive_files"
register_table(
    ARCHIVE_FILES_TABLE,
    (
        schema.Column("path", "VARCHAR", "archive file as found under archive.dir"),
        schema.Column("size", "BIGINT", "its size in bytes when read"),
        schema.Column("mtime_ns", "BIGINT", "its modification time (ns) when read"),
        schema.Column("days", "VARCHAR", "the UTC days it holds records of, comma separated"),
        schema.Column("scanned_at", "TIMESTAMP", "when it was read"),
    ),
)
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


def _known_files(wh: Warehouse) -> dict[str, tuple[int, int, frozenset[str]]]:
    """Archive files read by earlier runs: path -> (size, mtime_ns, days it holds)."""
    if not wh.table_exists(ARCHIVE_FILES_TABLE):
        return {}
    df = wh.query_df(f'SELECT path, size, mtime_ns, days FROM "{ARCHIVE_FILES_TABLE}"')
    return {
        p: (int(size), int(mtime), frozenset(d for d in (days or "").split(",") if d))
        for p, size, mtime, days in zip(df["path"], df["size"], df["mtime_ns"], df["days"])
    }


class _Lander:
    """Writes records in batches: quarantine first, then each selected raw table, then the files read."""

    def __init__(self, wh: Warehouse, selected: set, now: datetime):
        self.wh, self.selected, self.now = wh, selected, now
        self.records: dict[str, list[RawRecord]] = {s: [] for s in RAW_SOURCES}
        self.origins: dict[str, list[str]] = {s: [] for s in RAW_SOURCES}
        self.quarantined: list = []
        self.files: list[dict] = []
        self.pending = 0
        # what the materializations report
        self.rows = {s: 0 for s in RAW_SOURCES}
        self.written = {s: 0 for s in RAW_SOURCES}
        self.per_day: dict[str, dict[str, int]] = {s: {} for s in RAW_SOURCES}
        self.preview: dict[str, pd.DataFrame] = {}
        self.reasons: dict[str, int] = {}
        self.quarantined_by_source: dict[str, int] = {}

    def add(self, rec: RawRecord, origin: str) -> None:
        self.records[rec.source].append(rec)
        self.origins[rec.source].append(origin)
        self.pending += 1

    def add_quarantined(self, items) -> None:
        self.quarantined.extend(items)
        self.pending += len(items)

    def add_file(self, scan) -> None:
        if scan.stamp is not None and not scan.skipped:  # a skipped file's row is already right
            self.files.append({"path": scan.path, "size": scan.stamp[0], "mtime_ns": scan.stamp[1],
                               "days": ",".join(sorted(scan.days)), "scanned_at": self.now})

    def flush(self, write=Warehouse.write_now) -> None:
        """Write the batch: at once, or through `write` (a `Warehouse.write_behind` submit) while the next batch is
        read; the writes stay in order either way."""
        quarantine = quarantine_frame(self.quarantined, self.now) if self.quarantined else None
        for q in self.quarantined:
            self.reasons[q.reason[:80]] = self.reasons.get(q.reason[:80], 0) + 1
            self.quarantined_by_source[q.source] = self.quarantined_by_source.get(q.source, 0) + 1
        frames = {}
        for s in RAW_SOURCES:
            if RAW_KEYS[s] not in self.selected or not self.records[s]:
                continue
            frame = frames[s] = records_frame(self.records[s], self.origins[s], self.now)
            self.rows[s] += len(frame)
            for day, n in frame.groupby("partition_date").size().items():
                self.per_day[s][str(day)] = self.per_day[s].get(str(day), 0) + int(n)
            if s not in self.preview:
                self.preview[s] = frame.head(5)
        files = pd.DataFrame(self.files) if self.files else None

        def store() -> None:
            # Quarantine first: ids are content hashes, so re-reading the same archive adds nothing twice.
            if quarantine is not None:
                self.wh.insert_new("quarantine", quarantine, "quarantine_id")
            # Landing is append-only: a record already landed (by an earlier run, an earlier batch or a live poll)
            # keeps its row and its first ingest_time, and nothing is ever deleted. accessLogs state in particular
            # cannot be fetched again.
            for s, frame in frames.items():
                self.written[s] += self.wh.insert_new(RAW_TABLE[s], frame, "record_key")
            # Only now are the files' records and quarantine rows stored: a later run may skip these files.
            if files is not None:
                self.wh.upsert(ARCHIVE_FILES_TABLE, files, "path")

        write(store)
        self.records = {s: [] for s in RAW_SOURCES}
        self.origins = {s: [] for s in RAW_SOURCES}
        self.quarantined, self.files, self.pending = [], [], 0


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
    """Land the day(s) from the archive directory and the live pollers (append-only, keyed by record_key).

    Archive files are read one at a time and written in batches of about FLUSH_RECORDS records, so memory does not
    grow with the range. Files read before that are unchanged and hold none of the days are not read again."""
    cfg = settings.load()
    days = partition_days(context)
    wh = warehouse.get()
    now = datetime.utcnow()
    lander = _Lander(wh, set(context.selected_asset_keys), now)
    files = skipped = 0
    if cfg.archive.dir:
        context.log.info(f"scanning archive {cfg.archive.dir} for {days[0]}..{days[-1]}")
        listed = archive_files(cfg.archive.dir)
        total = len(listed)
        known = _known_files(wh)
        # a batch is written while the next one is read (one batch waits at most: memory stays bounded)
        with wh.write_behind(max_pending=1) as write:
            # Within a run the first copy of a record wins (file order); insert_new keeps it across batches too.
            for scan in iter_archive(cfg.archive.dir, days, known=known, files=listed):
                files += 1
                skipped += scan.skipped
                for rec in scan.records:
                    lander.add(rec, scan.path)
                lander.add_quarantined(scan.quarantined)
                lander.add_file(scan)
                if lander.pending >= FLUSH_RECORDS:
                    lander.flush(write)
                if files % 200 == 0 or files == total:
                    context.log.info(f"archive: {files}/{total} files ({skipped} unchanged and of other days: not read)")
    if cfg.google.enabled or cfg.slack_audit.enabled or cfg.slack_access.enabled:
        live, live_q = _live_records(cfg, days, context.log)
        # after the archive's records: an archived copy of a polled record keeps the archive as its origin
        for s in RAW_SOURCES:
            for rec in live.get(s, []):
                lander.add(rec, f"poll:{s}")
        lander.add_quarantined(live_q)
    if not cfg.archive.dir and not (cfg.google.enabled or cfg.slack_audit.enabled or cfg.slack_access.enabled):
        context.log.warning("no source configured: set archive.dir or enable a live poller in the settings file")
    lander.flush()

    n_quarantined = sum(lander.reasons.values())
    if n_quarantined:
        context.log.warning(f"{n_quarantined} archived records quarantined: {dict(list(lander.reasons.items())[:5])}")

    for s in RAW_SOURCES:
        if RAW_KEYS[s] not in lander.selected:
            continue
        preview = lander.preview.get(s, pd.DataFrame(columns=["record_time", "origin", "raw"]))
        yield dg.MaterializeResult(
            asset_key=RAW_KEYS[s],
            metadata={
                "dagster/row_count": dg.MetadataValue.int(lander.rows[s]),
                "new_rows": dg.MetadataValue.int(lander.written[s]),
                "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
                "rows_per_day": count_table(dict(sorted(lander.per_day[s].items())), "day", "rows"),
                "archive_files": dg.MetadataValue.int(files),
                "archive_files_not_read": dg.MetadataValue.int(skipped),
                "quarantined_in_archive": dg.MetadataValue.int(
                    lander.quarantined_by_source.get(s, 0) + lander.quarantined_by_source.get("", 0)
                ),
                "preview": markdown_preview(preview, ["record_time", "origin", "raw"], rows=5),
            },
        )
