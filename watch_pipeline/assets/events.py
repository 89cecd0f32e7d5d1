"""events: one row per audit event in the normalised schema, enriched; quarantine for what cannot be."""


from datetime import datetime

import dagster as dg
import pandas as pd

from watch_pipeline.assets.common import column_schema, daily_asset, count_table, markdown_preview, partition_days
from watch_pipeline.assets.ingest import RAW_KEYS
from watch_pipeline.core import schema
from watch_pipeline.core.enrich import enrich_events
from watch_pipeline.core.geo import GeoIPLookup
from watch_pipeline.core.identity import IdentityMapper
from watch_pipeline.core.normalize import (
    ACCESS_COMBO, ACCESS_STATE_COLUMNS, access_combos, access_frame, access_state, normalise, normalise_records,
    with_raw_text,
)
from watch_pipeline.core.schema import SOURCE_SLACK_AUDIT
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource
from watch_pipeline.warehouse import Warehouse, register_table

IDENTITY_COLUMNS = (
    schema.Column("source", "VARCHAR", "where the id was seen"),
    schema.Column("actor_id", "VARCHAR", "vendor user id (Slack U.../W...)"),
    schema.Column("email", "VARCHAR", "email learned from the entries themselves"),
    schema.Column("partition_date", "DATE", "day it was learned"),
)
register_table("identities", IDENTITY_COLUMNS)
_ACCESS_TYPES = {"date_first": "DOUBLE", "date_last": "DOUBLE", "count": "BIGINT"}
register_table(
    "access_state",
    (schema.Column("partition_date", "DATE", "day whose accessLogs rows brought these combinations"),)
    + tuple(schema.Column(c, _ACCESS_TYPES.get(c, "VARCHAR"), c) for c in ACCESS_STATE_COLUMNS),
)


def open_geoip(cfg, log) -> GeoIPLookup | None:
    if not cfg.geoip.city_db and not cfg.geoip.asn_db:
        log.warning("no GeoIP database configured (geoip.city_db / geoip.asn_db): geo columns stay empty")
        return None
    return GeoIPLookup(cfg.geoip.city_db, cfg.geoip.asn_db, setting_names=("geoip.city_db", "geoip.asn_db"))


def _day_frame(wh: Warehouse, table: str, day: str) -> pd.DataFrame:
    return wh.read_table(table, f"partition_date = {wh.param()}", [pd.Timestamp(day).date()])


def read_raw_day(wh: Warehouse, day: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The day's rows of raw_google, raw_slack_audit and raw_slack_access."""
    return tuple(_day_frame(wh, t, day) for t in ("raw_google", "raw_slack_audit", "raw_slack_access"))


def _known_slack_ids(wh: Warehouse, day: str) -> dict[str, str]:
    """Slack id -> email learned up to `day`, the latest day's email per id (the database picks it, so only one
    row per id crosses into Python however long the history)."""
    if not wh.table_exists("identities"):
        return {}
    ids = wh.query_df(
        "SELECT actor_id, email FROM (SELECT actor_id, email, ROW_NUMBER() OVER "
        "(PARTITION BY actor_id ORDER BY partition_date DESC) AS n FROM identities "
        f"WHERE partition_date <= {wh.param()}) AS latest WHERE n = 1",
        [pd.Timestamp(day).date()],
    )
    return dict(zip(ids["actor_id"], ids["email"]))


def prior_access_state(wh: Warehouse, day: str, today_raw: pd.DataFrame, history_limit: int) -> pd.DataFrame:
    """accessLogs state before `day` for the (user, IP, UA) combinations in today's raw rows (as landed, or parsed by
    ``access_frame``): the newest earlier row of each, forgetting combinations last active more than `history_limit`
    seconds before the day before.

    Each built day stores the newest rows of the combinations it saw (``access_state``), so the state is the newest
    of those rows over the horizon; raw rows of days not built yet count too. Only today's combinations are read:
    a month of a large organisation's state is ~0.5 M combinations (phones get a new address each time), a day ~10 k.
    """
    p = wh.param()
    date = pd.Timestamp(day).date()
    keep_since = (pd.Timestamp(day) - pd.Timedelta(days=1) - pd.Timedelta(seconds=history_limit)).timestamp()
    since = (pd.Timestamp(day) - pd.Timedelta(days=2) - pd.Timedelta(seconds=history_limit)).date()
    today = access_frame(today_raw) if len(today_raw) else pd.DataFrame(columns=list(ACCESS_COMBO))
    if today.empty:
        return pd.DataFrame(columns=list(ACCESS_STATE_COLUMNS))
    keys = today.reindex(columns=list(ACCESS_COMBO))
    window = f"partition_date >= {p} AND partition_date < {p}"
    stored = wh.read_matching("access_state", keys, window, [since, date])
    # Days whose raw rows landed but that were never built have no state rows: their raw rows stand in.
    unbuilt = _partition_days(wh, "raw_slack_access", window, [since, date]) - \
        _partition_days(wh, "access_state", window, [since, date])
    parts = [stored.drop(columns=["partition_date"])]
    if unbuilt:
        rows = access_frame(wh.read_table("raw_slack_access", f"partition_date IN ({', '.join([p] * len(unbuilt))})",
                                          sorted(unbuilt)))
        parts.append(rows[access_combos(rows).isin(access_combos(keys))])
    state = access_state(pd.concat([f for f in parts if len(f)] or parts, ignore_index=True), None)
    return state[pd.to_numeric(state["date_last"], errors="coerce") >= keep_since].reset_index(drop=True)


def _partition_days(wh: Warehouse, table: str, where: str, params: list) -> set:
    if not wh.table_exists(table):
        return set()
    days = wh.query_df(f'SELECT DISTINCT partition_date FROM "{table}" WHERE {where}', params)["partition_date"]
    return {pd.Timestamp(d).date() for d in days}


def build_events_for_day(wh: Warehouse, cfg, geo: GeoIPLookup | None, day: str, now: datetime, write=Warehouse.write_now,
                         stored_before=None, raw=None, records=None, geo_known=None) -> dict:
    """Normalise + enrich one day and replace its partition of events, quarantine, identities and access state.

    `write` runs the writes (at once, or a `Warehouse.write_behind` submit); `stored_before` is the future of the
    day before's state writes (access state, identities), which this day reads. `raw` (``read_raw_day``, its
    accessLogs rows maybe parsed by ``access_frame``), `records` (``normalise_records`` of it) and `geo_known`
    (``GeoIPLookup.lookup_rows`` of its addresses) are given when they were read or computed already."""
    raw_g, raw_a, raw_x = raw if raw is not None else read_raw_day(wh, day)
    rows_x = access_frame(raw_x) if len(raw_x) else raw_x  # parsed once for the three uses below
    if stored_before is not None:
        stored_before.result()
    prior_x = prior_access_state(wh, day, rows_x, cfg.history_limit)
    norm = normalise(raw_g, raw_a, rows_x, prior_x, records=records)
    keep_since = (pd.Timestamp(day) - pd.Timedelta(seconds=cfg.history_limit)).timestamp()
    state_x = access_state(prior_x, rows_x, keep_since=keep_since)

    mapper = IdentityMapper(cfg.user_domain, cfg.user_map)
    known = _known_slack_ids(wh, day)
    known.update(norm.slack_ids)
    ids = pd.Series(list(known.keys()), dtype=object)
    mapper.learn_ids(ids, pd.Series([known[i] for i in ids], dtype=object))
    enriched = enrich_events(norm.events, geo, mapper, geo_known=geo_known)

    q = [norm.quarantined]
    if len(enriched.quarantined):
        eq = enriched.quarantined
        q.append(
            pd.DataFrame(
                {
                    "quarantine_id": [schema.stable_id("enrich", e, r) for e, r in zip(eq["event_id"], eq["reason"])],
                    "partition_date": eq["partition_date"],
                    "stage": "enrich",
                    "source": eq["source"],
                    "origin": eq["event_id"],
                    "reason": eq["reason"],
                    "raw_text": eq["raw"],
                }
            )
        )
    quarantined = pd.concat([f for f in q if len(f)], ignore_index=True) if any(len(f) for f in q) else pd.DataFrame()
    if len(quarantined):
        quarantined["quarantined_at"] = now

    date = pd.Timestamp(day).date()
    p = wh.param()
    with_day = f"partition_date = {p}"
    events = enriched.events
    learned = pd.DataFrame(
        {"source": SOURCE_SLACK_AUDIT, "actor_id": list(norm.slack_ids), "email": list(norm.slack_ids.values()), "partition_date": date}
    )
    # the state the next day reads first, then the day's events and quarantine
    write(wh.replace_window, "access_state", state_x.assign(partition_date=date), with_day, [date])
    stored = write(wh.replace_window, "identities", learned, with_day, [date])
    write(wh.replace_window, "events", events, with_day, [date])
    write(wh.replace_window, "quarantine", quarantined, f"partition_date = {p} AND stage IN ('normalise', 'enrich')", [date])
    return {
        "stored": stored,
        "events": len(events),
        "quarantined": len(quarantined),
        "raw": len(raw_g) + len(raw_a) + len(raw_x),
        "stats": enriched.stats,
        "frame": events,
        "unresolved": list(enriched.stats.get("unresolved_sample") or []),
    }


# A range of at least this many days normalises the next day's records in a helper process (start-up ~1 s).
RECORDS_AHEAD_MIN_DAYS = 4

_HELPER_GEO: dict[tuple, GeoIPLookup] = {}


def prepare_day(raw_google: pd.DataFrame, raw_slack_audit: pd.DataFrame, raw_slack_access: pd.DataFrame,
                geo_paths: tuple[str | None, str | None] | None) -> dict:
    """The part of a day's build that needs no state, run in the helper process: the activities' and audit entries'
    events (``normalise_records``), the accessLogs rows parsed (``access_frame``) and the GeoIP lookups of every
    address among them (``GeoIPLookup.lookup_rows``). The raw texts the caller has are not sent back: the events
    and rows come without them (``with_raw_text`` puts them back)."""
    records = normalise_records(raw_google, raw_slack_audit, raw_text=False)  # (the caller has the texts)
    access_rows = access_frame(raw_slack_access).drop(columns=["raw"]) if len(raw_slack_access) else None
    geo_rows = None
    if geo_paths is not None:
        if geo_paths not in _HELPER_GEO:  # opened once per helper process
            _HELPER_GEO[geo_paths] = GeoIPLookup(*geo_paths)
        ips = [f["ip"] for f in records[0] if len(f)]
        if access_rows is not None and "ip" in access_rows:
            ips.append(access_rows["ip"])
        geo_rows = _HELPER_GEO[geo_paths].lookup_rows(pd.concat(ips, ignore_index=True).dropna().tolist()) if ips else {}
    return {"records": records, "access_rows": access_rows, "geo_rows": geo_rows}


class _RecordsAhead:
    """Has a helper process do the stateless part of the next days (``prepare_day``: the per-record JSON work,
    which is most of a day's cost, and the GeoIP lookups) while this process builds the current one; the
    accessLogs diff and the identities need state, and stay here. Each day's raw rows are read on the warehouse's
    writer thread, after the writes already queued, so this process never waits for the database lock; `depth`
    days are in flight (the helper holds ~0.25 GB a day at 5,000 people)."""

    def __init__(self, wh: Warehouse, days: list[str], write, depth: int = 2, geo: GeoIPLookup | None = None) -> None:
        from joblib.externals.loky import ProcessPoolExecutor

        self.wh, self.days, self.write, self.depth = wh, days, write, depth
        self.geo_paths = (geo.city_db, geo.asn_db) if geo is not None and geo.configured else None
        self._pool = ProcessPoolExecutor(max_workers=1)
        self._queued = {i: self._queue(i) for i in range(min(depth, len(days)))}

    def _queue(self, i: int):
        return self.write(self._read_and_submit, self.days[i])

    def _read_and_submit(self, day: str):
        raw = read_raw_day(self.wh, day)
        return raw, self._pool.submit(prepare_day, *raw, self.geo_paths)

    def take(self, i: int):
        """(raw rows with the accessLogs rows parsed, normalised records, GeoIP lookups) of day i; queues day
        i + depth."""
        (raw_g, raw_a, raw_x), future = self._queued.pop(i).result()
        if i + self.depth < len(self.days):
            self._queued[i + self.depth] = self._queue(i + self.depth)
        prepared = future.result()
        records = with_raw_text(prepared["records"], raw_g, raw_a)
        if prepared["access_rows"] is not None:  # the raw text went to the helper, and comes back from here
            rows = prepared["access_rows"]
            rows["raw"] = raw_x["raw"].tolist()  # as access_frame sets it
            raw_x = rows
        return (raw_g, raw_a, raw_x), records, prepared["geo_rows"]

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@daily_asset(
    deps=list(RAW_KEYS.values()),
    group_name="events",
    metadata=column_schema(schema.EVENT_COLUMNS),
    description=(
        "One row per audit event in the normalised schema (docs/schema.md), enriched with GeoIP2 City + ASN, "
        "parsed user agent, canonical identity and vendor risk signals. Unusable records go to `quarantine`."
    ),
)
def events(context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: SettingsResource) -> dg.MaterializeResult:
    cfg = settings.load()
    wh = warehouse.get()
    geo = open_geoip(cfg, context.log)
    now = datetime.utcnow()
    days = partition_days(context)
    totals = {"events": 0, "quarantined": 0, "raw": 0}
    per_day, by_app, unresolved, geo_stats = {}, {}, set(), {}
    last = pd.DataFrame()
    stored = None
    # A day's tables are written while the next day is normalised; that day waits only for the state it reads.
    # In a range, a helper process turns the next day's activities and audit entries into events, parses its
    # accessLogs rows and looks its addresses up meanwhile (no state needed; the accessLogs diff needs it, and
    # stays here).
    ahead = None
    try:
        with wh.write_behind() as write:
            ahead = _RecordsAhead(wh, days, write, geo=geo) if len(days) >= RECORDS_AHEAD_MIN_DAYS else None
            for n, day in enumerate(days, start=1):
                raw, records, geo_known = ahead.take(n - 1) if ahead is not None else (None, None, None)
                r = build_events_for_day(wh, cfg, geo, day, now, write=write, stored_before=stored, raw=raw,
                                         records=records, geo_known=geo_known)
                stored = r["stored"]
                for k in totals:
                    totals[k] += r[k]
                per_day[day] = r["events"]
                if len(r["frame"]):
                    for app, c in r["frame"]["app"].value_counts().items():
                        by_app[app] = by_app.get(app, 0) + int(c)
                    last = r["frame"]
                unresolved.update(r["unresolved"])
                for k, v in (r["stats"] or {}).items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        geo_stats[k] = geo_stats.get(k, 0) + v
                context.log.info(f"events {day}: {r['events']:,} events, {r['quarantined']:,} quarantined ({n}/{len(days)})")
    finally:
        if ahead is not None:
            ahead.close()
    share = totals["quarantined"] / max(1, totals["events"] + totals["quarantined"])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(totals["events"]),
            "quarantined": dg.MetadataValue.int(totals["quarantined"]),
            "quarantined_share": dg.MetadataValue.float(round(share, 6)),
            "raw_records": dg.MetadataValue.int(totals["raw"]),
            "events_per_day": count_table(per_day, "day", "events"),
            "events_per_app": count_table(dict(sorted(by_app.items(), key=lambda kv: -kv[1])), "app", "events"),
            "enrichment": count_table({k: int(v) for k, v in geo_stats.items()}, "stat", "value"),
            "unresolved_identities": dg.MetadataValue.int(len(unresolved)),
            "unresolved_sample": dg.MetadataValue.text(", ".join(sorted(unresolved)[:20]) or "-"),
            "preview": markdown_preview(
                last, ["event_time", "app", "action", "outcome", "actor", "ip", "geo_country", "asn_org", "ua_browser"]
            ),
        }
    )


@dg.asset_check(asset=events, description="Warns when the quarantined share of the partition passes quarantine.warn_share.")
def quarantine_share(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, settings: SettingsResource) -> dg.AssetCheckResult:
    cfg = settings.load()
    wh = warehouse.get()
    ev = wh.query_df('SELECT partition_date, COUNT(*) AS n FROM "events" GROUP BY partition_date') if wh.table_exists("events") else pd.DataFrame(columns=["partition_date", "n"])
    q = wh.query_df('SELECT partition_date, COUNT(*) AS n FROM "quarantine" GROUP BY partition_date') if wh.table_exists("quarantine") else pd.DataFrame(columns=["partition_date", "n"])
    n_events, n_q = int(ev["n"].sum()), int(q["n"].sum())
    share = n_q / max(1, n_events + n_q)
    return dg.AssetCheckResult(
        passed=share <= cfg.quarantine.warn_share,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quarantined": n_q, "events": n_events, "share": round(share, 6), "threshold": cfg.quarantine.warn_share},
    )
