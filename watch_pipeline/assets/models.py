"""Behaviour models: actor_profiles (decayed value-frequency counts), user_models (per-user isolation forests),
event_scores (every event scored against the models as they stood before its day).

State is kept per day (a snapshot of the profiles at the end of each day), so running days one by one or as a range
gives the same tables: day D always starts from the snapshot of day D-1.
"""

from datetime import timedelta

import dagster as dg
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from joblib.externals.loky import get_reusable_executor

from watch_pipeline.assets.baseline import EVENT_COLUMNS_NO_RAW, day_events, peaks
from watch_pipeline.assets.common import daily_asset, count_table, markdown_preview, partition_days
from watch_pipeline.assets.events import events
from watch_pipeline.core import schema
from watch_pipeline.core.busybody import UserForest, deserialize, fit_user_models, serialize
from watch_pipeline.core.profiles import ACTIVITY_FIELD, SCORE_COLUMNS, STATE_COLUMNS, ActorProfiles, learning_state
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource
from watch_pipeline.warehouse import Warehouse, register_table

C = schema.Column
_STATE_TYPES = {"actor": "VARCHAR", "field": "VARCHAR", "value": "VARCHAR", "count": "DOUBLE", "events": "BIGINT",
                "days": "BIGINT", "first_seen": "TIMESTAMP", "last_seen": "TIMESTAMP", "as_of": "TIMESTAMP"}
_SCORE_TYPES = {"event_id": "VARCHAR", "actor": "VARCHAR", "event_time": "TIMESTAMP", "field": "VARCHAR",
                "value": "VARCHAR", "count": "DOUBLE", "total": "DOUBLE", "distinct": "BIGINT", "events_seen": "BIGINT",
                "days_seen": "BIGINT", "score": "DOUBLE", "first_seen": "BOOLEAN", "days_since_last_seen": "DOUBLE",
                "actor_events": "BIGINT", "actor_days": "BIGINT"}
register_table("profile_state", (C("partition_date", "DATE", "snapshot day (state at its end)"),)
               + tuple(C(n, _STATE_TYPES[n], n) for n in STATE_COLUMNS))
register_table("profile_scores", (C("partition_date", "DATE", "day of the scored events"),)
               + tuple(C(n, _SCORE_TYPES.get(n, "VARCHAR"), n) for n in SCORE_COLUMNS))
register_table("user_models", (
    C("partition_date", "DATE", "day the model was fitted for (trained on the days before it)"),
    C("actor", "VARCHAR", "canonical actor"),
    C("version", "VARCHAR", "model version: fit day and format"),
    C("state", "VARCHAR", "learning | established"),
    C("n_train", "BIGINT", "training events"),
    C("threshold", "DOUBLE", "calibrated score_samples threshold"),
    C("blob", "BLOB", "serialised UserForest"),
))
register_table("forest_scores", (
    C("partition_date", "DATE", "day of the scored events"),
    C("event_id", "VARCHAR", "event"),
    C("actor", "VARCHAR", "actor"),
    C("forest_score", "DOUBLE", "score_samples (lower = more abnormal)"),
    C("threshold", "DOUBLE", "the model's threshold"),
    C("state", "VARCHAR", "learning | established"),
))
EVENT_SCORE_COLUMNS = (
    C("partition_date", "DATE", "day of the event"),
    C("event_id", "VARCHAR", "event"),
    C("actor", "VARCHAR", "canonical actor"),
    C("event_time", "TIMESTAMP", "UTC"),
    C("ip", "VARCHAR", "source IP"),
    C("score", "DOUBLE", "risk 0..1"),
    C("kinds", "VARCHAR", "comma-separated signal kinds"),
    C("reasons", "VARCHAR", "JSON list of reasons with the numbers"),
    C("model_state", "VARCHAR", "learning | established"),
    C("context", "VARCHAR", "JSON geo/ASN/UA summary"),
)
register_table("event_scores", EVENT_SCORE_COLUMNS)

# Snapshots older than this many days before the newest are dropped (re-running older days rebuilds from there).
SNAPSHOT_KEEP_DAYS = 35
# A forest is refitted only for actors with a network or country they never used: the scorer needs its opinion
# there, and fitting every active user every day would dominate the pipeline's cost.
NOVELTY_FIELDS = ("asn_org", "geo_country")
FOREST_PARAMS = {"n_estimators": 50}
REFIT_DAYS = 7  # a user's forest is reused for a week before it is refitted on the sliding window


def _day(d) -> "pd.Timestamp":
    return pd.Timestamp(d).date()


def latest_snapshot(wh: Warehouse, before_day: str, fields: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, str | None]:
    """The newest profile snapshot strictly before `before_day` (state and its day), only `fields` when given
    (the learning state needs only the activity field: ~5 k of a large organisation's ~200 k rows)."""
    d = wh.latest_partition_before("profile_state", before_day)
    if d is None:
        return pd.DataFrame(columns=STATE_COLUMNS), None
    p = wh.param()
    where = f"partition_date = {p}" + (f" AND field IN ({', '.join([p] * len(fields))})" if fields else "")
    state = wh.read_table("profile_state", where, [_day(d)] + list(fields or ()))
    return state[STATE_COLUMNS], pd.Timestamp(d).date().isoformat()


def profiles_model(cfg, state: pd.DataFrame) -> ActorProfiles:
    return ActorProfiles.from_frame(state, half_life_days=cfg.models.half_life_days)


@daily_asset(
    deps=[events],
    group_name="models",
    description="Per-actor value-frequency profiles (country, ASN, ASN organisation, device, hour bucket, login type, "
    "OAuth client, Slack session) with time decay — ScryWarden's model without its batch-boundary bug. Each day "
    "stores the scores of its events against the state before them, and a snapshot of the state at its end.",
)
def actor_profiles(context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: SettingsResource) -> dg.MaterializeResult:
    cfg = settings.load()
    wh = warehouse.get()
    days = partition_days(context)
    state, state_day = latest_snapshot(wh, days[0])
    # Fold any days between the newest snapshot and the first requested day, so a gap never loses history.
    if state_day is not None:
        gap = pd.date_range(pd.Timestamp(state_day) + pd.Timedelta(days=1), pd.Timestamp(days[0]) - pd.Timedelta(days=1))
        days = [d.date().isoformat() for d in gap] + days
        if len(gap):
            context.log.info(f"folding {len(gap)} day(s) since the snapshot of {state_day}")
    model = profiles_model(cfg, state)
    scored = 0
    # only the columns the profiles read (hour buckets come from event_time)
    event_columns = {c.name for c in schema.EVENT_COLUMNS}
    columns = ", ".join(f'"{c}"' for c in dict.fromkeys(["event_id", "actor", "event_time", *model.fields])
                        if c in event_columns)
    # A day's scores and snapshot are written while the next day is computed (nothing here reads them back), and
    # the next day's events are read on the same writer thread meanwhile (this step does not write events).
    with wh.write_behind() as write:
        upcoming = write(day_events, wh, days[0], columns, in_time_order=True)
        for i, day in enumerate(days):
            ev = upcoming.result()
            if i + 1 < len(days):
                upcoming = write(day_events, wh, days[i + 1], columns, in_time_order=True)
            scores = model.score_and_update(ev)  # in (event_time, event_id) order, whatever the storage order
            scores.insert(0, "partition_date", _day(day))
            write(wh.replace_partitions, "profile_scores", scores, [day])
            scored += len(scores)
            snap = model.to_frame()
            snap.insert(0, "partition_date", _day(day))
            write(wh.replace_partitions, "profile_state", snap, [day])
            context.log.info(f"actor_profiles {day}: {len(ev):,} events, state {len(snap):,} rows")
    cutoff = _day(pd.Timestamp(days[-1]) - pd.Timedelta(days=SNAPSHOT_KEEP_DAYS))
    wh.execute(f'DELETE FROM "profile_state" WHERE partition_date < {wh.param()}', [cutoff])
    learning = learning_state(model.to_frame(), cfg.models.min_events, cfg.models.min_days) if len(model.to_frame()) else pd.DataFrame(columns=["state"])
    states = learning["state"].value_counts().to_dict() if len(learning) else {}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(scored),
            "actors": dg.MetadataValue.int(len(learning)),
            "model_states": count_table({k: int(v) for k, v in states.items()}, "state", "actors"),
            "state_rows": dg.MetadataValue.int(len(model.to_frame())),
            "preview": markdown_preview(learning.sort_values("events", ascending=False) if len(learning) else learning),
        }
    )


def candidate_actors(scores: pd.DataFrame, state: pd.DataFrame | None = None, shared_min: int = 5) -> list[str]:
    """Actors with a network or country they never used that is also rare in the organisation (fewer than
    `shared_min` actors on it, before or today): the only ones whose forest we need. A network many colleagues use
    (a new office, the corporate VPN's new egress) needs no per-user forest to be explained."""
    if scores.empty:
        return []
    novel = scores["field"].isin(NOVELTY_FIELDS)
    new = scores[novel & scores["first_seen"].fillna(False).astype(bool)]
    if new.empty:
        return []
    users = scores[novel].groupby(["field", "value"])["actor"].nunique()
    if state is not None and len(state):
        known = state[state["field"].isin(NOVELTY_FIELDS)].groupby(["field", "value"])["actor"].nunique()
        users = users.add(known, fill_value=0)
    shared = users[users >= shared_min].index
    keys = pd.MultiIndex.from_frame(new[["field", "value"]].astype(str))
    rare = new[~keys.isin(shared)]
    return sorted(rare["actor"].dropna().unique().tolist())


@daily_asset(
    deps=[actor_profiles, events],
    group_name="models",
    kinds={"python", "scikitlearn"},
    description="Per-user isolation forests (Busybody's features with its bugs fixed: unit-sphere location, binary "
    "tf-idf of ASN organisation and version-free user agent, unseen-value features, calibrated threshold), fitted on "
    "the `history_limit` window before the day for the users with something new that day; versioned blobs.",
)
def user_models(context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: SettingsResource) -> dg.MaterializeResult:
    cfg = settings.load()
    wh = warehouse.get()
    fitted_total, established = 0, 0
    reused_total = 0
    for day in partition_days(context):
        p = wh.param()
        # candidate_actors reads only the novelty fields' rows (a third of a day's scores)
        scores = wh.read_table("profile_scores", f"partition_date = {p} AND field IN ({', '.join([p] * len(NOVELTY_FIELDS))})",
                               [_day(day), *NOVELTY_FIELDS], columns="actor, field, value, first_seen")
        state, _ = latest_snapshot(wh, day, (ACTIVITY_FIELD,) + NOVELTY_FIELDS)
        learning = learning_state(state, cfg.models.min_events, cfg.models.min_days)
        established_actors = set(learning.loc[learning["state"] == "established", "actor"])
        # Learning users get no forest (cold start): their model could not be trusted anyway.
        actors = [a for a in candidate_actors(scores, state) if a in established_actors]
        recent = recent_models(wh, actors, day)
        to_fit = [a for a in actors if a not in recent]
        models: dict[str, UserForest] = {}
        train = pd.DataFrame()
        if to_fit:
            start = _day(pd.Timestamp(day) - pd.Timedelta(days=cfg.history_days))
            marks = ", ".join([p] * len(to_fit))
            train = wh.read_table("events", f"partition_date >= {p} AND partition_date < {p} AND actor IN ({marks})",
                                  [start, _day(day)] + to_fit, columns=EVENT_COLUMNS_NO_RAW)
            if len(train):
                # Process start-up costs more than a few small fits: go parallel only when it pays.
                n_jobs = cfg.models.n_jobs if len(to_fit) >= 8 else 1
                models = fit_user_models(train, cfg.history_days, n_jobs=n_jobs,
                                         min_events=cfg.models.min_events, min_days=cfg.models.min_days,
                                         **FOREST_PARAMS)
        rows, fs = [], []
        scored = {**recent, **models}
        # only the events of the users with a forest (a handful of a day's thousands of actors)
        marks = ", ".join([p] * len(scored))
        today = wh.read_table("events", f"partition_date = {p} AND actor IN ({marks})", [_day(day), *scored],
                              columns=EVENT_COLUMNS_NO_RAW) if scored else pd.DataFrame()
        for actor, model in models.items():
            rows.append({"partition_date": _day(day), "actor": actor, "version": f"{day}/v1", "state": model.state,
                         "n_train": int((train["actor"] == actor).sum()), "threshold": getattr(model, "threshold_", np.nan),
                         "blob": serialize(model)})
        for actor, model in scored.items():
            mine = today[today["actor"] == actor] if len(today) else today
            if len(mine) and model.state == "established":
                established += 1
                fs.append(pd.DataFrame({"partition_date": _day(day), "event_id": mine["event_id"].to_numpy(), "actor": actor,
                                        "forest_score": model.score_samples(mine), "threshold": model.threshold_, "state": model.state}))
        fitted_total += wh.replace_partitions("user_models", pd.DataFrame(rows), [day])
        reused_total += len(recent)
        wh.replace_partitions("forest_scores", pd.concat(fs, ignore_index=True) if fs else pd.DataFrame(), [day])
        context.log.info(f"user_models {day}: {len(models)} fitted, {len(recent)} reused for {len(actors)} candidate actors")
    return dg.MaterializeResult(
        metadata={"dagster/row_count": dg.MetadataValue.int(fitted_total), "reused": dg.MetadataValue.int(reused_total),
                  "scored_with_forest": dg.MetadataValue.int(established)}
    )


def recent_models(wh: Warehouse, actors: list[str], day: str) -> dict[str, UserForest]:
    """Each actor's newest model fitted in the REFIT_DAYS before `day` (a model is refitted at most weekly)."""
    if not actors or not wh.table_exists("user_models"):
        return {}
    p = wh.param()
    start = _day(pd.Timestamp(day) - pd.Timedelta(days=REFIT_DAYS))
    marks = ", ".join([p] * len(actors))
    rows = wh.read_table("user_models", f"partition_date >= {p} AND partition_date < {p} AND actor IN ({marks})",
                         [start, _day(day)] + list(actors))
    if rows.empty:
        return {}
    newest = rows.sort_values("partition_date").groupby("actor").tail(1)
    return {a: deserialize(bytes(b)) for a, b in zip(newest["actor"], newest["blob"])}


# A range of at least this many days is scored with helper or worker processes (their start-up costs seconds).
PARALLEL_MIN_DAYS = 4
# DuckDB's page cache while scoring: the step reads a day at a time, and its peak (this process, the fitting
# helper) is the run's; halving the cache gave back ~250 MB at 6,250 people, at the same speed.
SCORING_PAGE_CACHE = "256MB"


class ScoringInputs:
    """The risk scorer's inputs, read from the warehouse day after day: ``inputs(day)`` -> dict for `score_day`.

    Consecutive days of a range share most of what they read: a day's events are the next day's "day before", and
    the history window moves by one day. So each day's events and each partition's folded history are read once
    and kept while a later day still needs them (a 60-day range read every partition of its window 28 times)."""

    def __init__(self, wh: Warehouse, cfg) -> None:
        self.wh, self.cfg = wh, cfg
        self._events: dict = {}  # day -> that day's events (the last two days asked for)
        self._folds: dict = {}  # partition day -> its folded history (the days of the current window)

    def _day_events(self, day) -> pd.DataFrame:
        if day not in self._events:
            self._events[day] = day_events(self.wh, day.isoformat(), in_time_order=True)
        return self._events[day]

    def window(self, day: str) -> list:
        """The partition days of ``day``'s history window, oldest first."""
        start = _day(pd.Timestamp(day) - pd.Timedelta(days=self.cfg.baseline.window_days))
        return [start + timedelta(days=i) for i in range((_day(day) - start).days)]

    def read_folds(self, days: list) -> dict | None:
        """Partition day -> its folded history, for ``days`` (one query); None unless every fold row lies on its
        partition's day (how the pipeline writes events): only then is a window's fold the partitions' folds in
        day order, groups and order alike, and each partition one slice of the time-ordered rows."""
        from watch_pipeline.core.scoring import history_sql

        wh = self.wh
        rows = wh.query_df(history_sql("events", wh.param(), by_partition=True), [min(days), max(days) + timedelta(days=1)])
        part = pd.to_datetime(rows.pop("partition")).to_numpy().astype("datetime64[D]")
        if not (pd.to_datetime(rows["event_time"]).to_numpy().astype("datetime64[D]") == part).all():
            return None
        folds = {}
        for d in days:
            lo, hi = np.searchsorted(part, [np.datetime64(d, "D"), np.datetime64(d + timedelta(days=1), "D")])
            folds[d] = rows.iloc[lo:hi]
        return folds

    def read_history(self, days: list) -> pd.DataFrame:
        """The folded history of the partitions ``days`` (consecutive) in one query over the whole window: right
        whether or not the events lie on their partitions' days."""
        from watch_pipeline.core.scoring import history_sql

        p = self.wh.param()
        return self.wh.query_df(history_sql("events", p), [days[0], days[-1] + timedelta(days=1)])

    def _history(self, day: str) -> pd.DataFrame | None:
        """The folded history of ``day``'s window: one query for the partitions not kept yet."""
        if not self.wh.table_exists("events"):
            return None
        days = self.window(day)
        kept = set(days)
        self._folds = {d: f for d, f in self._folds.items() if d in kept}
        missing = [d for d in days if d not in self._folds]
        if missing:
            folds = self.read_folds(missing)
            if folds is None:
                self._folds = {}
                return self.read_history(days)
            self._folds.update(folds)
        return pd.concat([self._folds[d] for d in days], ignore_index=True)

    def __call__(self, day: str, with_history: bool = True) -> dict:
        """The day's inputs; ``with_history=False`` leaves the history out (a helper fits on it: `FitsAhead`)."""
        from watch_pipeline.core.scoring import PRIOR_COLUMNS, PRIOR_FIELDS

        wh, cfg, p = self.wh, self.cfg, self.wh.param()
        today = _day(day)
        yesterday = _day(pd.Timestamp(day) - pd.Timedelta(days=1))
        self._events = {d: f for d, f in self._events.items() if d in (today, yesterday)}
        state, _ = latest_snapshot(wh, day, (ACTIVITY_FIELD,))
        inputs = {
            "events_day": self._day_events(today),
            "profile_scores": wh.read_table(
                "profile_scores", f"partition_date = {p} AND field IN ({', '.join([p] * len(PRIOR_FIELDS))})",
                [today, *PRIOR_FIELDS], columns=", ".join(PRIOR_COLUMNS)),
            "learning": learning_state(state, cfg.models.min_events, cfg.models.min_days),
            "peaks": wh.read_table("peaks", f"day = {p}", [today]),
            "forest_scores": wh.read_table("forest_scores", f"partition_date = {p}", [today]),
            "previous_events": self._day_events(yesterday),
        }
        if with_history:
            # Organisation context (users per network, roaming networks, OAuth apps) from the window before the
            # day, folded per (day, combination) in the warehouse: a third of the rows of a month of events.
            inputs["history"] = self._history(day)
        return inputs


def scoring_inputs(wh: Warehouse, cfg, day: str) -> dict:
    """Everything the risk scorer needs for one day, read from the warehouse."""
    return ScoringInputs(wh, cfg)(day)


def score_day(inputs: dict, scorer=None) -> tuple[pd.DataFrame, int]:
    """(risky events of the day, events of the day): the pure part of event_scores, run in a worker for ranges.
    ``scorer``: already fitted on the day's history (then ``inputs`` has none)."""
    from watch_pipeline.core.scoring import RiskScorer

    x = dict(inputs)
    if scorer is None:
        scorer = RiskScorer().fit(x.pop("history"))
    events_day = x.pop("events_day")
    return scorer.score_samples(events_day, **x), len(events_day)


class FitsAhead:
    """Has a helper process fit the risk scorer of the next day (``core.scoring.fit_window``) while this process
    scores the current one: the fit is about a third of a day's scoring and needs only the history window, whose
    partitions' folds the helper keeps, so each day sends it one new fold (~4 MB) and takes back the fitted scorer
    (~25 MB pickled, ~0.06 s). The window's folds then live in the helper instead of here."""

    def __init__(self, read: ScoringInputs, days: list[str]) -> None:
        from joblib.externals.loky import ProcessPoolExecutor

        self.read, self.days = read, days
        self._sent: set = set()  # partition days whose folds the helper keeps
        self._pool = ProcessPoolExecutor(max_workers=1)
        self._queued = {0: self._submit(0)}

    def _submit(self, i: int):
        from watch_pipeline.core.scoring import fit_window

        read = self.read
        if not read.wh.table_exists("events"):
            return self._pool.submit(fit_window, [], {}, None)
        window = read.window(self.days[i])
        self._sent &= set(window)  # (the helper drops the others too)
        missing = [d for d in window if d not in self._sent]
        folds = read.read_folds(missing) if missing else {}
        if folds is None:  # events off their partitions' days: the whole window, as in process
            self._sent = set()
            return self._pool.submit(fit_window, window, {}, read.read_history(window))
        self._sent |= set(missing)
        return self._pool.submit(fit_window, window, folds)

    def take(self, i: int):
        """The scorer fitted for day i; submits day i + 1's fit first, so the helper works while day i is scored."""
        if i + 1 < len(self.days):
            self._queued[i + 1] = self._submit(i + 1)
        return self._queued.pop(i).result()

    def close(self) -> None:
        for f in self._queued.values():
            f.cancel()
        self._pool.shutdown(wait=True)


@daily_asset(
    deps=[actor_profiles, user_models, peaks, events],
    group_name="models",
    description="Risk of every event of the day against the profiles and models as they stood before it, combined "
    "with organisation context, peaks and vendor signals; each score carries its reasons and numbers.",
)
def event_scores(context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: SettingsResource) -> dg.MaterializeResult:
    cfg = settings.load()
    wh = warehouse.get()
    days = partition_days(context)
    total, last = 0, pd.DataFrame()
    read = ScoringInputs(wh, cfg)
    # Each day's scores depend only on tables already built (events, profiles, forests, peaks). With
    # models.score_jobs > 1 the days of a range are scored in worker processes while this process reads and writes
    # the warehouse (one writer); each worker holds a day's inputs, so that trades memory for time.
    with wh.page_cache_at_most(SCORING_PAGE_CACHE):
        n_jobs = min(cfg.models.score_jobs, len(days)) if len(days) >= PARALLEL_MIN_DAYS else 1
        fits = None
        if n_jobs > 1:
            scored_days = Parallel(n_jobs=n_jobs, return_as="generator", pre_dispatch="n_jobs")(
                delayed(score_day)(read(day)) for day in days)
        elif len(days) >= PARALLEL_MIN_DAYS:
            # One process scores, a helper fits the next day's scorer meanwhile (FitsAhead): both cores, little memory.
            fits = FitsAhead(read, days)
            scored_days = (score_day(read(day, with_history=False), fits.take(i)) for i, day in enumerate(days))
        else:
            scored_days = (score_day(read(day)) for day in days)
        try:
            for day, (scored, n_events) in zip(days, scored_days):
                scored.insert(0, "partition_date", _day(day))
                total += wh.replace_partitions("event_scores", scored, [day])
                last = scored if len(scored) else last
                context.log.info(f"event_scores {day}: {len(scored):,} risky events of {n_events:,}")
        finally:
            if fits is not None:
                fits.close()
            if n_jobs > 1:  # idle workers keep their memory until they time out: give it back now
                get_reusable_executor().shutdown(wait=True)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(total),
            "preview": markdown_preview(last.sort_values("score", ascending=False) if len(last) else last,
                                        ["event_time", "actor", "score", "kinds", "reasons"]),
        }
    )
