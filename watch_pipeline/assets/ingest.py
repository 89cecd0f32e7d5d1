"""Landing: the raw_* tables, one asset per source, fed by the archive reader and the live pollers.

What the APIs returned is kept verbatim with its dedupe key. Landing is append-only and keyed: re-materializing a
day or a range adds only records not landed before, so runs are idempotent and nothing a live poll landed is lost.
Records that cannot be landed go to quarantine.
"""


import os
import pickle
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import datetime

import dagster as dg
import pandas as pd

from watch_pipeline.assets.common import column_schema, count_table, markdown_preview, partition_days
from watch_pipeline.core import schema
from watch_pipeline.core.archive import FileScan, ReadFiles, archive_files, plan_archive, read_files, read_files_into
from watch_pipeline.core.raw import RAW_TABLE, RawRecord, first_copies, record_rows
from watch_pipeline.core.schema import RAW_COLUMNS, RAW_SOURCES, stable_id
from watch_pipeline.partitions import daily_partitions
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource
from watch_pipeline.warehouse import Warehouse, register_table

RAW_KEYS = {source: dg.AssetKey(RAW_TABLE[source]) for source in RAW_SOURCES}
# Records held in memory before they are written: bounds memory on a long range, whatever the archive's size.
FLUSH_RECORDS = 100_000
# Archive files read per task (read_files): a few tasks in flight hold little memory.
READ_CHUNK_FILES = 8
# A run with at least this much to read (bytes on disk) reads it in a helper process too. Its start-up costs ~1 s of
# CPU, which this process spends reading; one more day of a 5,000 people organisation is ~15 MB and stays here.
ARCHIVE_AHEAD_MIN_BYTES = 32 << 20
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


class _ArchiveReader:
    """The run's archive files in order. Those to read are read by ``read_files`` in chunks of READ_CHUNK_FILES, in
    this process or, with at least ARCHIVE_AHEAD_MIN_BYTES to read, in a helper process too, ahead of landing. That
    work (JSON parse, record keys, quarantine, the rows) is most of landing's cost and needs no state; what does
    (the first copy wins, the batches and their writes) stays in this process.

    The helper gets chunks once it has started (~1 s), up to `depth` queued, and hands each over in a file
    (``read_files_into``). Rather than wait for it, this process reads the next chunk nobody has taken yet: on two
    cores both read, and the busier side takes fewer chunks. All chunks read and not landed yet are within `window`
    chunks of the one landing, which bounds memory."""

    def __init__(self, entries: list, wanted: frozenset[str], sources: list[str], now: datetime,
                 depth: int = 3, window: int = 16):
        self.entries = entries  # plan_archive's: a FileScan (not read) or (path, stamp) to read
        to_read = [e for e in entries if not isinstance(e, FileScan)]
        self.chunks = [to_read[i:i + READ_CHUNK_FILES] for i in range(0, len(to_read), READ_CHUNK_FILES)]
        self.args = (wanted, sources, now)
        self.size = sum(stamp[0] for _, stamp in to_read if stamp is not None)
        self.depth, self.window = depth, window
        self.read_here = 0  # chunks this process read beside the helper (the rest were the helper's)
        self._pool = None
        self._ahead: dict[int, Future | ReadFiles] = {}  # chunks given out: the helper's future, or read here
        self._next = 0  # the first chunk not given out
        if self.size >= ARCHIVE_AHEAD_MIN_BYTES:
            from joblib.externals.loky import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=1)
            self._handover = tempfile.TemporaryDirectory(prefix="watch-archive-")  # the helper's answers
            self._started = self._pool.submit(read_files, [], *self.args)  # done once it can read (imports made)

    @property
    def ahead(self) -> bool:
        return self._pool is not None

    def _queue_helper(self, i: int) -> None:
        """Gives the helper chunks up to `depth` not done yet, within the window from chunk i."""
        while (self._started.done() and self._next < min(i + self.window, len(self.chunks))
               and sum(isinstance(a, Future) and not a.done() for a in self._ahead.values()) < self.depth):
            path = os.path.join(self._handover.name, f"{self._next}.pickle")
            self._ahead[self._next] = self._pool.submit(read_files_into, path, self.chunks[self._next], *self.args)
            self._next += 1

    def _take(self, i: int) -> ReadFiles:
        if self._pool is None:
            return read_files(self.chunks[i], *self.args)
        self._queue_helper(i)
        if i == self._next:  # not given out: the helper has not started yet
            self._next += 1
            self.read_here += 1
            return read_files(self.chunks[i], *self.args)
        got = self._ahead.pop(i)
        while isinstance(got, Future) and not got.done() and self._next < min(i + self.window, len(self.chunks)):
            # the helper is still at it: read the next chunk here rather than wait
            self._ahead[self._next] = read_files(self.chunks[self._next], *self.args)
            self._next += 1
            self.read_here += 1
            self._queue_helper(i)
        if isinstance(got, Future):
            with open(got.result(), "rb") as fh:
                got = pickle.load(fh)
            os.unlink(fh.name)
        self._queue_helper(i + 1)
        return got

    def __iter__(self) -> Iterator[tuple[FileScan, ReadFiles | None, int]]:
        """(scan, read, i) per file: a file that was read is file i of `read`, which holds its records as rows."""
        read, i, chunk = None, 0, 0
        for entry in self.entries:
            if isinstance(entry, FileScan):
                yield entry, None, 0
                continue
            if read is None or i == len(read.scans):
                read, i = self._take(chunk), 0
                chunk += 1
            yield read.scans[i], read, i
            i += 1

    def close(self) -> None:
        if self._pool is not None:
            for future in self._ahead.values():  # after an error: the chunks not started are not read
                if isinstance(future, Future):
                    future.cancel()
            try:
                self._pool.shutdown(wait=True)
            finally:
                self._handover.cleanup()


class _Lander:
    """Writes records in batches: quarantine first, then each selected raw table, then the files read."""

    def __init__(self, wh: Warehouse, selected: set, now: datetime):
        self.wh, self.selected, self.now = wh, selected, now
        self.records: dict[str, list[RawRecord]] = {s: [] for s in RAW_SOURCES}
        self.origins: dict[str, list[str]] = {s: [] for s in RAW_SOURCES}
        # archive records as rows of read_files' frames: [frame, start, stop] per source, in order
        self.parts: dict[str, list[list]] = {s: [] for s in RAW_SOURCES}
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

    def add_rows(self, read: ReadFiles, i: int) -> None:
        """The records of file i of `read` (rows of its frames), after those added before."""
        for s, (start, stop) in read.spans[i].items():
            parts = self.parts[s]
            if parts and parts[-1][0] is read.frames[s] and parts[-1][2] == start:
                parts[-1][2] = stop  # the next file of the same chunk: one slice of its frame
            else:
                parts.append([read.frames[s], start, stop])
        self.pending += read.kept[i]

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
            if RAW_KEYS[s] not in self.selected or not (self.parts[s] or self.records[s]):
                continue
            # the archive's rows in file order, then the polled records: the first copy of a record wins
            rows = [frame.iloc[start:stop] for frame, start, stop in self.parts[s]]
            if self.records[s]:
                rows.append(record_rows(self.records[s], self.origins[s], self.now))
            frame = frames[s] = first_copies(rows)
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
        self.parts = {s: [] for s in RAW_SOURCES}
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

    Archive files are read in order and written in batches of about FLUSH_RECORDS records, so memory does not grow
    with the range; with much to read, a helper process reads them too (_ArchiveReader). Files read before that are
    unchanged and hold none of the days are not read again."""
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
        entries = list(plan_archive(listed, frozenset(days), _known_files(wh)))
        sources = [s for s in RAW_SOURCES if RAW_KEYS[s] in lander.selected]
        reader = _ArchiveReader(entries, frozenset(days), sources, now)
        if reader.ahead:
            context.log.info(f"archive: {sum(len(c) for c in reader.chunks)} files ({reader.size / 1e6:,.0f} MB) "
                             "to read, with a helper process")
        try:
            # a batch is written while the next one is read (one batch waits at most: memory stays bounded)
            with wh.write_behind(max_pending=1) as write:
                # Within a run the first copy of a record wins (file order); insert_new keeps it across batches too.
                for scan, read, i in reader:
                    files += 1
                    skipped += scan.skipped
                    if read is not None:
                        lander.add_rows(read, i)
                    lander.add_quarantined(scan.quarantined)
                    lander.add_file(scan)
                    if lander.pending >= FLUSH_RECORDS:
                        lander.flush(write)
                    if files % 200 == 0 or files == total:
                        context.log.info(
                            f"archive: {files}/{total} files ({skipped} unchanged and of other days: not read)"
                        )
        finally:
            reader.close()
        if reader.ahead:
            n = len(reader.chunks)
            context.log.info(f"archive: {n - reader.read_here} of {n} chunks of files read by the helper process")
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
