"""Compatibility mode: VMware telemetry-peak-analyzer 0.1.6 arithmetic, bit for bit.

Written from ``../shared/design/telemetry-peak-analyzer-spec.md`` (sections 3-6 and 8). The peer's quirks are kept on
purpose because the point of this module is parity: integer running means with banker's rounding, a ratcheting
threshold, first-sighting inference of a whole window as one window, sample standard deviation, the three-way peak
rule, the ``-t`` override, the cold-start "backend stats" path and the positional JSON formats.

Two deliberate differences, both switchable: timestamps are bucketed in UTC (the peer uses the host's local zone;
``local_time=True`` restores that), and "now" for the cold-start path can be injected.

Tables are plain nested dicts ``{dim0: {dim1: value}}`` like the peer's; values are the named tuples below, which
serialise to the peer's positional JSON lists.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import glob
import json
import os
import statistics
import sys
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

# The peer's constants (analyzers/__init__.py of 0.1.6, per the spec).
LOCAL_MIN_COUNT = 50  # samp_sub_ratio is only computed above this many submissions
PEAK_GLOBAL_COUNT_WEIGHT = 0.8
PEAK_MIN_SAMP_SUB_RATIO = 0.5
DEFAULT_GLOBAL_TABLE_AGE = dt.timedelta(days=7)
FILE_DIMENSIONS = ("task.severity", "file.llfile_type")
FILE_INDEX = ("utc_timestamp", "file.sha1")
FILE_DIMENSION_THRESHOLDS = {"malicious": 90, "benign": 500}  # anything else -> 0
NETWORK_DIMENSIONS = ("event.impact", "threat.name.keyword")
NETWORK_INDEX = ("utc_timestamp", "event.id")

Tables = dict[str, dict[str, Any]]


class LocalTableStats(NamedTuple):
    """Per-key statistics of one local window (the peer's LST columns)."""

    sub_count: int
    samp_count: int
    samp_sub_count_max: int
    samp_sub_count_mean: float
    samp_sub_count_std: float
    samp_sub_ratio: float


class GlobalTable(NamedTuple):
    """One GST entry; serialised positionally in this order."""

    start_ts: dt.datetime
    end_ts: dt.datetime
    window_count: int
    sub_count_avg: int
    sub_count_max: int
    samp_count_avg: int
    samp_count_max: int
    samp_sub_count_avg: int
    samp_sub_count_max: float
    threshold_suggested: int


class TelemetryPeak(NamedTuple):
    """One reported peak; serialised positionally in this order."""

    sub_count: int
    samp_count: int
    samp_sub_count_max: int
    samp_sub_count_mean: float
    samp_sub_count_std: float
    samp_sub_ratio: float
    global_samp_sub_count_max: float
    global_threshold_suggested: int


def window_count(start: dt.datetime, end: dt.datetime) -> int:
    """The peer's window count: days when the span is whole days, hours otherwise, at least 1 (spec L9)."""
    hours = int((end - start).total_seconds()) // 3600
    count = hours // 24 if hours % 24 == 0 else hours
    return count or 1


class TpaAnalyzer:
    """The peer's two-index, two-dimension analyser (``FileTypePeakAnalyzer`` by default).

    Records are flat dicts with dotted keys, as in the peer's JSON files. Windows are ``[start, end)`` naive datetimes.
    """

    def __init__(
        self,
        dimensions: tuple[str, str] = FILE_DIMENSIONS,
        index: tuple[str, str] = FILE_INDEX,
        dimension_thresholds: Mapping[str, int] | None = None,
        local_time: bool = False,
    ) -> None:
        self.dimensions = tuple(dimensions)
        self.index = tuple(index)
        self.dimension_thresholds = dict(
            FILE_DIMENSION_THRESHOLDS if dimension_thresholds is None else dimension_thresholds
        )
        self.local_time = local_time

    # -- time -----------------------------------------------------------------------------------------------------
    def record_time(self, record: Mapping[str, Any]) -> dt.datetime:
        """The record's time as a naive datetime (UTC, or host-local like the peer when ``local_time``)."""
        seconds = record[self.index[0]] / 1000  # float division, like the peer
        if self.local_time:
            return dt.datetime.fromtimestamp(seconds)
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)

    def dimension_threshold(self, dim0: str) -> int:
        return self.dimension_thresholds.get(dim0, 0)

    # -- local statistics (spec 3) --------------------------------------------------------------------------------
    def local_tables(
        self, records: Iterable[Mapping[str, Any]], start: dt.datetime, end: dt.datetime
    ) -> dict[str, dict[str, collections.Counter]]:
        """Submissions per sample for each key, for records in ``[start, end)``."""
        d0, d1 = self.dimensions
        sample = self.index[1]
        tables: dict[str, dict[str, collections.Counter]] = collections.defaultdict(dict)
        for rec in records:
            if start <= self.record_time(rec) < end:
                per_key = tables[rec[d0]].setdefault(rec[d1], collections.Counter())
                per_key[rec[sample]] += 1
        return dict(tables)

    @staticmethod
    def stats_from_counts(counts: Iterable[int]) -> LocalTableStats:
        """The six LST columns from the submissions-per-sample counts of one key."""
        c = list(counts)
        sub = sum(c)
        top = max(c) if c else 0
        mean = statistics.mean(c) if c else 0.0  # stays an int when exact, like the peer's JSON shows
        std = statistics.stdev(c) if len(c) >= 2 else 0.0
        ratio = round(top / sub, 2) if sub > LOCAL_MIN_COUNT else 0.0
        return LocalTableStats(sub, len(c), top, mean, std, ratio)

    def local_tables_stats(self, local_tables: Mapping[str, Mapping[str, Mapping[str, int]]]) -> Tables:
        return {
            d0: {d1: self.stats_from_counts(samples.values()) for d1, samples in per_d0.items()}
            for d0, per_d0 in local_tables.items()
        }

    # -- global statistics (spec 4) -------------------------------------------------------------------------------
    def infer_global_table(
        self, dim0: str, counts: Mapping[str, int], start: dt.datetime, end: dt.datetime
    ) -> GlobalTable:
        """First sighting of a key: the whole local window becomes one window (spec 4.1)."""
        sub, samp = sum(counts.values()), len(counts)
        ratio = int(round(sub / samp)) if samp else 0
        return GlobalTable(start, end, 1, sub, sub, samp, samp, ratio, ratio, max(sub, self.dimension_threshold(dim0)))

    @staticmethod
    def update_global_table(table: GlobalTable, counts: Mapping[str, int], end: dt.datetime) -> GlobalTable:
        """Fold one local window into the running integer means (spec 4.4)."""
        sub, samp = sum(counts.values()), len(counts)
        ratio = int(round(sub / samp)) if samp else 0
        n = table.window_count
        sub_avg = int(round((table.sub_count_avg * n + sub) / (n + 1)))
        samp_avg = int(round((table.samp_count_avg * n + samp) / (n + 1)))
        ratio_avg = int(round((table.samp_sub_count_avg * n + ratio) / (n + 1)))
        return GlobalTable(
            table.start_ts,
            end,
            n + 1,
            sub_avg,
            max(table.sub_count_max, sub),
            samp_avg,
            max(table.samp_count_max, samp),
            ratio_avg,
            max(table.samp_sub_count_max, ratio),
            max(table.threshold_suggested, sub_avg),
        )

    def refresh_global_tables(
        self,
        global_tables: Tables,
        local_tables: Mapping[str, Mapping[str, Mapping[str, int]]],
        start: dt.datetime,
        end: dt.datetime,
    ) -> Tables:
        """Union of GST and LST keys: keep, update (window starts at/after the GST end) or infer (spec 6)."""
        out: Tables = {}
        for d0 in set(global_tables) | set(local_tables):
            for d1 in set(global_tables.get(d0, {})) | set(local_tables.get(d0, {})):
                table = global_tables.get(d0, {}).get(d1)
                counts = local_tables.get(d0, {}).get(d1)
                if table and counts:
                    new = table if start < table.end_ts else self.update_global_table(table, counts, end)
                elif table:
                    new = table
                elif counts:
                    new = self.infer_global_table(d0, counts, start, end)
                else:
                    continue
                out.setdefault(d0, {})[d1] = new
        return out

    def backend_global_tables(self, records: list[Mapping[str, Any]], now: dt.datetime) -> Tables:
        """Cold start without a GST file: daily stats over ``[now - 7 days, now)`` (spec 4.2, JsonBackend.stats)."""
        start, end = now - DEFAULT_GLOBAL_TABLE_AGE, now
        d0k, d1k = self.dimensions
        sample = self.index[1]
        times = [self.record_time(r) for r in records]
        dates = {t.date() for t in times if start <= t < end}
        # Per date: the cross product of that day's dim0 x dim1 values; records are matched by date only (L9).
        daily: dict[dt.date, dict[tuple[str, str], tuple[int, int, float]]] = {}
        all_d0: set[str] = set()
        all_d1: set[str] = set()
        for day in sorted(dates):
            subs: collections.Counter = collections.Counter()
            samples: dict[tuple[str, str], set] = collections.defaultdict(set)
            for rec, t in zip(records, times):
                if t.date() == day:
                    subs[(rec[d0k], rec[d1k])] += 1
                    samples[(rec[d0k], rec[d1k])].add(rec[sample])
            day_d0 = {k[0] for k in subs}
            day_d1 = {k[1] for k in subs}
            daily[day] = {}
            for a in day_d0:
                for b in day_d1:
                    n_sub, n_samp = subs.get((a, b), 0), len(samples.get((a, b), ()))
                    daily[day][(a, b)] = (n_sub, n_samp, n_sub / n_samp if n_samp else 0)
            all_d0 |= day_d0
            all_d1 |= day_d1
        wc = window_count(start, end)
        out: Tables = {}
        for a in all_d0:
            for b in all_d1:
                rows = [daily[day].get((a, b), (0, 0, 0)) for day in dates]
                sub_avg = statistics.mean([r[0] for r in rows])
                samp_avg = statistics.mean([r[1] for r in rows])
                ratio_avg = int(round(sub_avg / samp_avg)) if samp_avg else 0
                out.setdefault(a, {})[b] = GlobalTable(
                    start,
                    end,
                    wc,
                    int(round(sub_avg)),
                    int(max(r[0] for r in rows)),
                    int(round(samp_avg)),
                    int(max(r[1] for r in rows)),
                    ratio_avg,
                    max(r[2] for r in rows),  # a float, not rounded (spec L8)
                    max(int(round(sub_avg)), self.dimension_threshold(a)),
                )
        return out

    # -- peaks (spec 5) -------------------------------------------------------------------------------------------
    @staticmethod
    def is_peak(stats: LocalTableStats, global_samp_sub_count_max: float, threshold: float) -> bool:
        """The three-way rule: volume at threshold and one of multiplicity / top-sample share / outlier sample."""
        if stats.sub_count < threshold:
            return False
        return (
            stats.samp_sub_count_mean > PEAK_GLOBAL_COUNT_WEIGHT * global_samp_sub_count_max
            or stats.samp_sub_ratio > PEAK_MIN_SAMP_SUB_RATIO
            or stats.samp_sub_count_max > stats.samp_sub_count_mean + stats.samp_sub_count_std
        )

    def get_peaks(self, global_tables: Tables, local_stats: Tables, threshold: int | None = None) -> Tables:
        """Peaks of keys present in both tables; ``threshold`` (the CLI ``-t``) overrides when truthy."""
        peaks: Tables = {}
        for d0, per_d0 in local_stats.items():
            for d1, stats in per_d0.items():
                table = global_tables.get(d0, {}).get(d1)
                if table is None:
                    continue  # never-seen keys are silently skipped (spec L5)
                thr = threshold if threshold else table.threshold_suggested
                if self.is_peak(stats, table.samp_sub_count_max, thr):
                    peaks.setdefault(d0, {})[d1] = TelemetryPeak(*stats, table.samp_sub_count_max, thr)
        return peaks


# -- JSON formats (spec 8) ---------------------------------------------------------------------------------------
def dumps(tables: Tables) -> str:
    """The peer's ``save_to_json`` text: sorted keys, indent 2, datetimes via ``str``, tuples positional."""
    return json.dumps(tables, indent=2, sort_keys=True, default=str)


def save_json(tables: Tables, path: str) -> None:
    with open(path, "w") as f:
        f.write(dumps(tables))


def _parse_ts(text: str) -> dt.datetime:
    return dt.datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S")


def load_global_tables(path: str) -> Tables:
    """Parse a GST file (no recomputation; microseconds dropped like the peer)."""
    with open(path) as f:
        raw = json.load(f)
    return {
        d0: {d1: GlobalTable(_parse_ts(v[0]), _parse_ts(v[1]), *v[2:]) for d1, v in per_d0.items()}
        for d0, per_d0 in raw.items()
    }


def load_records(pattern_or_paths: str | Iterable[str]) -> list[dict[str, Any]]:
    """All records of the peer's JSON files (each a top-level array); a glob pattern or a list of paths."""
    paths = sorted(glob.glob(pattern_or_paths)) if isinstance(pattern_or_paths, str) else list(pattern_or_paths)
    records: list[dict[str, Any]] = []
    for path in paths:
        with open(path) as f:
            records.extend(json.load(f))
    return records


def run(
    records: list[Mapping[str, Any]],
    start: dt.datetime,
    end: dt.datetime,
    global_tables: Tables | None,
    threshold: int | None = None,
    now: dt.datetime | None = None,
    analyzer: TpaAnalyzer | None = None,
) -> tuple[Tables, Tables]:
    """One CLI run (spec 2): GST (given, or cold start from the records), detect, then refresh. -> (peaks, new GST)."""
    analyzer = analyzer or TpaAnalyzer()
    if global_tables is None:
        now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        global_tables = analyzer.backend_global_tables(records, now)
    local = analyzer.local_tables(records, start, end)
    peaks = analyzer.get_peaks(global_tables, analyzer.local_tables_stats(local), threshold)
    return peaks, analyzer.refresh_global_tables(global_tables, local, start, end)


def main(argv: list[str] | None = None) -> int:
    """``python -m watch_pipeline.core.tpa``: the peer's CLI flags (JsonBackend only)."""
    ap = argparse.ArgumentParser(description="telemetry-peak-analyzer compatible run")
    ap.add_argument("-n", "--backend-input", required=True, help="glob of JSON array files")
    ap.add_argument("-s", "--start-date", help="YYYY-MM-DD")
    ap.add_argument("-e", "--end-date", help="YYYY-MM-DD")
    ap.add_argument("-d", "--delta", type=int, default=1)
    ap.add_argument("-k", "--delay", type=int, default=0)
    ap.add_argument("-t", "--threshold", type=int, default=None)
    ap.add_argument("-m", "--global-table", default="global_table.json")
    ap.add_argument("-o", "--output-file", default=None)
    ap.add_argument("-a", "--analyzer", default="file",
                    help="'file' or 'network' (the peer's analyzer class paths work too)")
    ap.add_argument("--now", help="inject 'now' for the cold-start path, 'YYYY-MM-DD HH:MM:SS[.ffffff]'")
    ap.add_argument("--local-time", action="store_true", help="bucket by host-local time like the peer")
    args = ap.parse_args(argv)

    now = dt.datetime.fromisoformat(args.now) if args.now else dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    if args.start_date and args.end_date:  # both or neither, like the peer
        start = dt.datetime.strptime(args.start_date, "%Y-%m-%d")
        end = dt.datetime.strptime(args.end_date, "%Y-%m-%d")
        if end <= start:
            raise ValueError("end date must be after start date")
    else:
        end = dt.datetime.combine(now.date() - dt.timedelta(days=args.delay), dt.time())
        start = end - dt.timedelta(days=args.delta)
    if "network" in args.analyzer.lower():
        analyzer = TpaAnalyzer(NETWORK_DIMENSIONS, NETWORK_INDEX, {}, local_time=args.local_time)
    else:
        analyzer = TpaAnalyzer(local_time=args.local_time)
    records = load_records(args.backend_input)
    try:
        gst: Tables | None = load_global_tables(args.global_table)
    except OSError:
        gst = None
    peaks, new_gst = run(records, start, end, gst, args.threshold, now, analyzer)
    for d0, per_d0 in peaks.items():
        for d1, peak in per_d0.items():
            fields = "".join(f"\n\t{k}: {round(v, 2)}" for k, v in peak._asdict().items())
            print(f"TelemetryPeak({d0}, {d1}){fields}", file=sys.stderr)
    if args.output_file:
        save_json(peaks, args.output_file)
    # Atomic write, unlike the peer (spec L12).
    tmp = args.global_table + ".tmp"
    save_json(new_gst, tmp)
    os.replace(tmp, args.global_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
