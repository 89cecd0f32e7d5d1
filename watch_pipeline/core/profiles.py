"""Per-actor value-frequency profiles: ScryWarden's model, with time decay and without its batch-boundary bug.

Three parts:

* the reporters :class:`Mandatory` and :class:`Optional`, exactly as ScryWarden specifies them (see
  ``scrywarden-spec.md``), as small vectorised scoring functions over its quantities ``G, S, c0, c, N, G', null_count``;
  :func:`score_batch_faithful` reproduces ScryWarden's batch semantics (for the spec's examples and bug 3);
* :class:`ExponentialDecayAnalyzer`, the same formula and defaults, but counting *events* per actor (spec bug 6);
* :class:`ActorProfiles`, an sklearn-style estimator holding decayed per-(actor, field, value) counts. Every event is
  scored against the state as of *before* it (all earlier events, ordered by ``event_time`` then ``event_id``), so
  scores do not depend on how the events were cut into batches. Everything is vectorised (sort + groupby cumsum).

Missing values (``None``/NaN/``''``) are not counted and not scored: ScryWarden's "missing scores 1.0" (bug 4) would
page on every Google event without a session id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from watch_pipeline.core.frames import sort_by_time_and_id, take_strings

# Pseudo-field counting every event of an actor (value "*"): gives event and active-day totals for cold start.
ACTIVITY_FIELD = "*"
HOUR_BUCKET_FIELD = "hour_bucket"

DEFAULT_FIELDS: tuple[str, ...] = (
    "geo_country",
    "asn",
    "asn_org",
    "ua_device_key",
    HOUR_BUCKET_FIELD,
    "login_type",
    "oauth_client",
    "session_id",
)

STATE_COLUMNS = ["actor", "field", "value", "count", "events", "days", "first_seen", "last_seen", "as_of"]

SCORE_COLUMNS = [
    "event_id",
    "actor",
    "event_time",
    "field",
    "value",
    "count",  # decayed count of this value for the actor before the event
    "total",  # decayed count of all values of the field for the actor before the event
    "distinct",  # distinct values seen before the event
    "events_seen",  # raw (undecayed) number of earlier events with this value
    "days_seen",  # distinct UTC days on which the value was seen before
    "score",  # Mandatory score on the state before the event
    "first_seen",  # True when the actor never had this value before
    "days_since_last_seen",  # NaN when first seen
    "actor_events",  # raw number of earlier events of the actor (any field)
    "actor_days",  # distinct days with earlier events of the actor
]

_NS_PER_DAY = 86_400 * 10**9
# Keep 2**exponent well inside float64 range; longer spans are processed in consecutive windows.
_MAX_EXPONENT = 400.0
_SEP = "\x1f"  # joins actor, field and value into one key


# ----------------------------------------------------------------------------------------------------------------
# Reporters (ScryWarden, exactly as specified)
# ----------------------------------------------------------------------------------------------------------------


def _result(values: np.ndarray, scalar: bool):
    return float(values) if scalar else values


@dataclass(frozen=True)
class Mandatory:
    """Scores a value rarer than the actor's average value; new or missing values score 1.0 (times weight).

    Quantities per (field, actor): ``G`` stored distinct values, ``S`` sum of stored counts, ``c0`` stored count of
    the value, ``c`` count including earlier rows of the batch, ``N`` total including earlier rows, ``G_prime``
    distinct values including earlier first sightings. Scalars or numpy arrays.
    """

    weight: float = 1.0

    def score(self, *, missing=False, G=0, S=0, c0=0, c=0, N=0, G_prime=0, null_count=0):
        scalar = np.ndim(c) == 0 and np.ndim(missing) == 0
        G, S, c0, c, N, Gp = (np.asarray(v, dtype=float) for v in (G, S, c0, c, N, G_prime))
        missing = np.asarray(missing, dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            prev = np.where(G > 1, np.where(c0 > 0, (S - c0) / (G - 1), S / G), 0.0)
            m = np.where(Gp > 0, prev + (c - prev) / Gp, prev)
            # c < m, tolerant of float noise in decayed counts (integer counts are unaffected)
            rare = np.where(c < m * (1 - 1e-9), 1.0 - c / N, 0.0)
        out = np.where(missing | (c == 0), 1.0, rare) * self.weight
        return _result(out, scalar)


@dataclass(frozen=True)
class Optional:
    """Scores an unseen value by how often the field was missing (times weight); missing or seen values score 0."""

    weight: float = 1.0

    def score(self, *, missing=False, G=0, S=0, c0=0, c=0, N=0, G_prime=0, null_count=0):
        scalar = np.ndim(c) == 0 and np.ndim(missing) == 0
        c, N, nulls = (np.asarray(v, dtype=float) for v in (c, N, null_count))
        missing = np.asarray(missing, dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            unseen = np.where(N == 0, 1.0, nulls / N)
        out = np.where(missing | (c > 0), 0.0, unseen) * self.weight
        return _result(out, scalar)


def score_batch_faithful(reporter, stored: dict[str, float], values: Sequence[str]) -> list[float]:
    """ScryWarden's scores for one (actor, field): ``values`` scored as one batch against ``stored`` counts.

    Reproduces its batch semantics, including bug 3 (stored counts of other values are frozen during a batch).
    ``''`` stands for a missing value. For spec reproduction only; :class:`ActorProfiles` is the real model.
    """
    G = sum(1 for v in stored.values() if v > 0)
    S = float(sum(stored.values()))
    earlier: dict[str, int] = {}
    new_values = 0
    scores = []
    for value in values:
        c0 = float(stored.get(value, 0))
        seen_before = earlier.get(value, 0)
        scores.append(
            reporter.score(
                missing=value == "",
                G=G,
                S=S,
                c0=c0,
                c=c0 + seen_before,
                N=S + sum(earlier.values()),
                G_prime=G + new_values,
                null_count=float(stored.get("", 0)) + earlier.get("", 0),
            )
        )
        if c0 == 0 and seen_before == 0:
            new_values += 1
        earlier[value] = seen_before + 1
    return scores


# ----------------------------------------------------------------------------------------------------------------
# Analyzer
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExponentialDecayAnalyzer:
    """Flags actors whose anomalies are strong or many: ``mean - weight * (1 - decay) ** (count - 1) >= threshold``.

    ``count`` is the number of distinct anomalous *events* of the actor (ScryWarden counted field rows, bug 6);
    ``faithful=True`` counts rows as ScryWarden did.
    """

    weight: float = 0.2
    decay: float = 0.1
    threshold: float = 0.5
    faithful: bool = False

    def summarize(self, anomalies: pd.DataFrame) -> pd.DataFrame:
        """Per actor: mean (of anomaly scores > 0), count, weighted_mean, malicious. Takes actor, event_id, score."""
        rows = anomalies[anomalies["score"] > 0]
        cols = ["actor", "mean", "count", "weighted_mean", "malicious"]
        if rows.empty:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(cols, [object, float, int, float, bool])})
        g = rows.groupby("actor", sort=True)
        out = pd.DataFrame({"mean": g["score"].mean(), "count": g.size() if self.faithful else g["event_id"].nunique()})
        out["weighted_mean"] = out["mean"] - self.weight * (1 - self.decay) ** (out["count"] - 1)
        # Round away float noise so that an exact spec value (0.5) is not missed by 1e-16.
        out["malicious"] = out["weighted_mean"].round(12) >= self.threshold
        return out.reset_index()[cols]

    def select(self, anomalies: pd.DataFrame) -> pd.DataFrame:
        """The anomaly rows (score > 0) of the actors judged malicious; empty when none."""
        summary = self.summarize(anomalies)
        flagged = set(summary.loc[summary["malicious"], "actor"])
        rows = anomalies[(anomalies["score"] > 0) & anomalies["actor"].isin(flagged)]
        return rows.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# Actor profiles
# ----------------------------------------------------------------------------------------------------------------


def _as_text(values: pd.Series) -> np.ndarray:
    """Values as strings for counting (object array); missing and blank -> None. Integral floats (ASN with NaN)
    print as ints."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        finite = num[~np.isnan(num)]
        integral = bool((finite == np.floor(finite)).all())
        return np.array(
            [None if x != x else (str(int(x)) if integral else str(x)) for x in num.tolist()], dtype=object
        )
    if isinstance(values.dtype, pd.StringDtype):  # strings or missing: strip in one vectorised pass
        text = values.str.strip()
        return text.where(text.notna() & (text != ""), None).to_numpy(dtype=object, na_value=None)
    out = []
    for v in values.to_numpy(dtype=object).tolist():
        if v is None or v is pd.NA or (isinstance(v, float) and v != v) or v is pd.NaT:
            out.append(None)
        else:
            text = str(v).strip()
            out.append(text or None)
    return np.array(out, dtype=object)


def _empty_state() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "actor": pd.Series(dtype=object),
            "field": pd.Series(dtype=object),
            "value": pd.Series(dtype=object),
            "count": pd.Series(dtype=float),
            "events": pd.Series(dtype="int64"),
            "days": pd.Series(dtype="int64"),
            "first_seen": pd.Series(dtype="datetime64[ns]"),
            "last_seen": pd.Series(dtype="datetime64[ns]"),
            "as_of": pd.Series(dtype="datetime64[ns]"),
        }
    )


def _day_number(times: pd.Series) -> np.ndarray:
    """Whole UTC days since the epoch (decay is applied on day boundaries)."""
    return (times.to_numpy(dtype="datetime64[ns]").astype("int64") // _NS_PER_DAY).astype(float)


class ActorProfiles:
    """Decayed per-actor value-frequency counts over event fields, scored before update (sklearn style).

    ``fit(events)`` / ``partial_fit(events)`` update the counts; ``score_samples(events)`` scores each (event, field)
    against the state as of before that event without changing the state; ``score_and_update`` does both in one pass.
    Counts decay with a half-life (days) on UTC day boundaries: a value seen on day d counts 2**-((D - d) / h) on
    day D. ``partial_fit`` expects events not older than the state's day (late events are folded in, but their
    distinct-day counts may be off by one).
    """

    def __init__(
        self,
        fields: Iterable[str] = DEFAULT_FIELDS,
        half_life_days: float = 30.0,
        hour_bucket_hours: int = 4,
        reporter: Mandatory | None = None,
    ):
        self.fields = tuple(fields)
        self.half_life_days = float(half_life_days)
        self.hour_bucket_hours = int(hour_bucket_hours)
        self.reporter = reporter or Mandatory()
        if self.half_life_days <= 0:
            raise ValueError("half_life_days must be > 0")
        if not 1 <= self.hour_bucket_hours <= 24:
            raise ValueError("hour_bucket_hours must be within 1..24")
        self._state = _empty_state()

    # -- estimator API ---------------------------------------------------------------------------------------------

    def fit(self, events: pd.DataFrame) -> "ActorProfiles":
        self._state = _empty_state()
        return self.partial_fit(events)

    def partial_fit(self, events: pd.DataFrame) -> "ActorProfiles":
        _, self._state = self._process(events, self._state)
        return self

    def score_samples(self, events: pd.DataFrame) -> pd.DataFrame:
        """One row per (event, field with a value): the SCORE_COLUMNS, in event order. The state is not changed."""
        scores, _ = self._process(events, self._state)
        return scores

    def score_and_update(self, events: pd.DataFrame) -> pd.DataFrame:
        """``score_samples`` then ``partial_fit`` in one pass."""
        scores, self._state = self._process(events, self._state)
        return scores

    # -- state as a table ------------------------------------------------------------------------------------------

    @property
    def as_of(self) -> pd.Timestamp | None:
        return None if self._state.empty else pd.Timestamp(self._state["as_of"].iloc[0])

    def to_frame(self) -> pd.DataFrame:
        """The state: STATE_COLUMNS, ``count`` decayed to the day of ``as_of``; field '*' counts all events."""
        # Sorted once and kept sorted (any row order is a valid state): repeated calls stay cheap.
        self._state = self._state.sort_values(["actor", "field", "value"], kind="stable").reset_index(drop=True)
        return self._state.copy()

    @classmethod
    def from_frame(cls, state: pd.DataFrame, **params) -> "ActorProfiles":
        model = cls(**params)
        if state is not None and len(state):
            frame = state[STATE_COLUMNS].copy()
            for col in ("actor", "field", "value"):
                frame[col] = frame[col].astype(object)
            frame["count"] = frame["count"].astype(float)
            frame["events"] = frame["events"].astype("int64")
            frame["days"] = frame["days"].astype("int64")
            for col in ("first_seen", "last_seen", "as_of"):
                frame[col] = pd.to_datetime(frame[col]).astype("datetime64[ns]")
            frame["as_of"] = frame["as_of"].max()  # one state, one time
            model._state = frame.reset_index(drop=True)
        return model

    # -- internals -------------------------------------------------------------------------------------------------

    def _field_values(self, events: pd.DataFrame, field: str) -> np.ndarray:
        if field == HOUR_BUCKET_FIELD and field not in events.columns:
            hours = events["event_time"].dt.hour.to_numpy() // self.hour_bucket_hours * self.hour_bucket_hours
            return np.array([f"{h:02d}h" for h in hours.tolist()], dtype=object)
        if field not in events.columns:
            raise KeyError(f"events have no column {field!r}")
        return _as_text(events[field])

    def _long(self, events: pd.DataFrame) -> dict[str, np.ndarray]:
        """Arrays order (the event's row), actor, event_time, field, value: one row per field with a value plus the
        '*' field, in processing order (event order, then field order)."""
        n = len(events)
        order = np.arange(n)
        actor = events["actor"].to_numpy(dtype=object)
        times = events["event_time"].to_numpy(dtype="datetime64[ns]")
        rows = [order]
        fields = [np.full(n, ACTIVITY_FIELD, dtype=object)]
        values = [np.full(n, ACTIVITY_FIELD, dtype=object)]
        for name in self.fields:
            vals = self._field_values(events, name)
            keep = np.flatnonzero(np.not_equal(vals, None))
            rows.append(keep)
            fields.append(np.full(len(keep), name, dtype=object))
            values.append(vals[keep])
        row = np.concatenate(rows)
        rank = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)])
        sort = np.lexsort((rank, row))
        row = row[sort]
        return {
            "order": row,
            "actor": actor[row],
            "event_time": times[row],
            "field": np.concatenate(fields)[sort],
            "value": np.concatenate(values)[sort],
        }

    def _prepare(self, events: pd.DataFrame) -> pd.DataFrame:
        # only the columns the profiles read: a day of events has ~40, and each is copied and reordered below
        wanted = ["event_id", "actor", "event_time", *self.fields]
        events = events[[c for c in dict.fromkeys(wanted) if c in events.columns]]
        ev = events[events["actor"].notna() & events["event_time"].notna()].copy()
        ev["event_time"] = pd.to_datetime(ev["event_time"]).astype("datetime64[ns]")
        ev["event_id"] = ev["event_id"].astype(str)
        ev["actor"] = ev["actor"].astype(str)
        return sort_by_time_and_id(ev).reset_index(drop=True)

    def _process(self, events: pd.DataFrame, state: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Score events against ``state`` (each before itself) and return (scores, updated state)."""
        ev = self._prepare(events) if len(events) else events
        if len(ev) == 0:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORE_COLUMNS}), state
        days = _day_number(ev["event_time"])
        ref = days.min()
        if len(state):
            ref = max(ref, float(_day_number(state["as_of"].iloc[:1])[0]))
        limit = ref + _MAX_EXPONENT * self.half_life_days
        if days.max() > limit:  # very long history with a short half-life: process in consecutive windows
            head = days <= max(limit, days.min())
            first, state = self._process_window(ev[head], state)
            rest, state = self._process(ev[~head], state)
            return pd.concat([first, rest], ignore_index=True), state
        return self._process_window(ev, state)

    def _process_window(self, ev: pd.DataFrame, state: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        # Plain numpy on factorized keys: pandas merges and multi-column groupbys cost too much per small batch.
        h = self.half_life_days
        long = self._long(ev)
        actor, field, value, times = long["actor"], long["field"], long["value"], long["event_time"]
        day = (times.astype("int64") // _NS_PER_DAY).astype(float)
        # (actor, field) and (actor, field, value) as int64 keys, the state's and the batch's alike: each string is
        # hashed once, where joined text keys were built and hashed three times over (codes follow first
        # appearance, so every factorize below numbers the groups exactly as on the text keys).
        n_state = len(state)
        a_code, a_uniq = pd.factorize(np.concatenate([state["actor"].to_numpy(dtype=object), actor]))
        f_code, f_uniq = pd.factorize(np.concatenate([state["field"].to_numpy(dtype=object), field]))
        v_code, v_uniq = pd.factorize(np.concatenate([state["value"].to_numpy(dtype=object), value]))
        all_field_key = a_code.astype("int64") * max(len(f_uniq), 1) + f_code
        all_value_key = all_field_key * max(len(v_uniq), 1) + v_code
        s_field_key, field_key = all_field_key[:n_state], all_field_key[n_state:]
        s_value_key, value_key = all_value_key[:n_state], all_value_key[n_state:]
        s_count = state["count"].to_numpy(dtype=float)
        s_events = state["events"].to_numpy(dtype="int64")
        s_days = state["days"].to_numpy(dtype="int64")
        s_first = state["first_seen"].to_numpy(dtype="datetime64[ns]")
        s_last = state["last_seen"].to_numpy(dtype="datetime64[ns]")
        if len(state):
            # Reference day: the state's day, or the batch's first day after a long gap (keeps 2**x finite).
            state_day = float(_day_number(state["as_of"].iloc[:1])[0])
            ref = max(state_day, float(day.min()))
            s_count = s_count * np.exp2(-(ref - state_day) / h)  # stored counts, decayed to the reference day
            old_as_of = state["as_of"].iloc[0]
        else:
            ref, old_as_of = float(day.min()), pd.NaT

        at = pd.Index(s_value_key).get_indexer(value_key)
        known = at >= 0
        st_count = _take(s_count, at, 0.0)
        st_events = _take(s_events, at, 0)
        st_days = _take(s_days, at, 0)
        st_last = _take(s_last, at, np.datetime64("NaT", "ns"))
        # grouped by dense codes: pandas sums groups of sparse int64 keys in another order (last-bit differences)
        s_field_code, s_fields = pd.factorize(s_field_key)
        field_totals = pd.Series(s_count).groupby(s_field_code).agg(["sum", "size"])  # row i: code i
        at_field = pd.Index(s_fields).get_indexer(field_key) if len(field_totals) else np.full(len(actor), -1)
        st_total = _take(field_totals["sum"].to_numpy(dtype=float), at_field, 0.0)
        st_distinct = _take(field_totals["size"].to_numpy(dtype="int64"), at_field, 0)

        value_code = pd.factorize(value_key)[0]
        field_code = pd.factorize(field_key)[0]
        # Weights in units of the reference day; a count on day d is (sum of weights) * 2**-((d - ref) / h).
        w = np.exp2((day - ref) / h)
        scale = np.exp2(-(day - ref) / h)
        by_value = pd.Series(w).groupby(value_code)
        earlier = by_value.cumcount().to_numpy()
        is_new = (~known) & (earlier == 0)
        count_before = np.where(is_new, 0.0, (st_count + by_value.cumsum().to_numpy() - w) * scale)
        total_before = (st_total + pd.Series(w).groupby(field_code).cumsum().to_numpy() - w) * scale
        new_int = is_new.astype("int64")
        distinct_before = st_distinct + pd.Series(new_int).groupby(field_code).cumsum().to_numpy() - new_int

        prev_pos = _previous_in_group(value_code)
        has_prev = prev_pos >= 0
        last_before = np.where(has_prev, times[prev_pos], st_last)
        last_day_before = np.where(
            has_prev, day[prev_pos], np.where(np.isnat(st_last), np.nan, st_last.astype("int64") // _NS_PER_DAY)
        )
        new_day = (day != last_day_before).astype("int64")  # NaN (never seen) compares unequal
        days_before = st_days + pd.Series(new_day).groupby(value_code).cumsum().to_numpy() - new_day

        score = self.reporter.score(
            G=distinct_before, S=total_before, c0=count_before, c=count_before, N=total_before, G_prime=distinct_before
        )
        order = long["order"]
        events_seen = (st_events + earlier).astype("int64")
        days_seen = days_before.astype("int64")
        # the '*' (activity) rows give each event its actor's totals; the other rows are the scores
        activity = field == ACTIVITY_FIELD
        act_events = np.zeros(len(ev), dtype="int64")
        act_days = np.zeros(len(ev), dtype="int64")
        act_events[order[activity]] = events_seen[activity]
        act_days[order[activity]] = days_seen[activity]
        keep = np.flatnonzero(~activity)  # rows kept before the frame is built: filtering it copied every column
        # Text columns as the frame would infer them (``str``), taken from the distinct values by their codes: a
        # frame built from ~4e5 Python strings a column converted each of them (a quarter of a 5,000-people day).
        batch = slice(n_state, None)
        scores = pd.DataFrame(
            {
                "event_id": take_strings(ev["event_id"], order[keep]),
                "actor": take_strings(a_uniq, a_code[batch][keep]),
                "event_time": times[keep],
                "field": take_strings(f_uniq, f_code[batch][keep]),
                "value": take_strings(v_uniq, v_code[batch][keep]),
                "count": count_before[keep],
                "total": total_before[keep],
                "distinct": distinct_before.astype("int64")[keep],
                "events_seen": events_seen[keep],
                "days_seen": days_seen[keep],
                "score": np.asarray(score, dtype=float)[keep],
                "first_seen": is_new[keep],
                "days_since_last_seen": ((times - last_before) / np.timedelta64(1, "D"))[keep],
                "actor_events": act_events[order[keep]],
                "actor_days": act_days[order[keep]],
            }
        )[SCORE_COLUMNS]

        # -- updated state, counts decayed to the day of the new as_of
        n_keys = value_code.max() + 1
        first_row = np.full(n_keys, len(actor))
        np.minimum.at(first_row, value_code, np.arange(len(actor)))
        b_w = np.bincount(value_code, weights=w, minlength=n_keys)
        b_events = np.bincount(value_code, minlength=n_keys)
        b_days = np.bincount(value_code, weights=new_day, minlength=n_keys).astype("int64")
        t_int = times.astype("int64")
        b_first = np.full(n_keys, np.iinfo("int64").max)
        np.minimum.at(b_first, value_code, t_int)
        b_last = np.full(n_keys, np.iinfo("int64").min)
        np.maximum.at(b_last, value_code, t_int)
        in_state = at[first_row]

        batch_max = times.max()
        new_as_of = pd.Timestamp(batch_max)
        if not pd.isna(old_as_of):
            new_as_of = max(pd.Timestamp(old_as_of), new_as_of)
        decay = float(np.exp2(-(float(_day_number(pd.Series([new_as_of]))[0]) - ref) / h))

        count = s_count.copy()
        events_total = s_events.copy()
        days_total = s_days.copy()
        first = s_first.astype("int64").copy()
        last = s_last.astype("int64").copy()
        old = in_state >= 0
        rows = in_state[old]
        count[rows] += b_w[old]
        events_total[rows] += b_events[old]
        days_total[rows] += b_days[old]
        first[rows] = np.minimum(first[rows], b_first[old])
        last[rows] = np.maximum(last[rows], b_last[old])
        fresh = first_row[~old]
        new_state = pd.DataFrame(
            {
                # (text from the codes, as the scores above)
                "actor": take_strings(a_uniq, np.concatenate([a_code[:n_state], a_code[batch][fresh]])),
                "field": take_strings(f_uniq, np.concatenate([f_code[:n_state], f_code[batch][fresh]])),
                "value": take_strings(v_uniq, np.concatenate([v_code[:n_state], v_code[batch][fresh]])),
                "count": np.concatenate([count, b_w[~old]]) * decay,
                "events": np.concatenate([events_total, b_events[~old]]).astype("int64"),
                "days": np.concatenate([days_total, b_days[~old]]).astype("int64"),
                "first_seen": np.concatenate([first, b_first[~old]]).astype("datetime64[ns]"),
                "last_seen": np.concatenate([last, b_last[~old]]).astype("datetime64[ns]"),
            }
        )
        new_state["as_of"] = np.datetime64(new_as_of.to_datetime64(), "ns")
        return scores, new_state  # unsorted: sorting a large state on every batch costs more than the update


def _take(values: np.ndarray, positions: np.ndarray, fill) -> np.ndarray:
    """values[positions], with ``fill`` where the position is -1 (not found)."""
    found = positions >= 0
    out = np.full(len(positions), fill, dtype=values.dtype)
    out[found] = values[positions[found]]
    return out


def _previous_in_group(codes: np.ndarray) -> np.ndarray:
    """Position of the previous row with the same code (rows in processing order), -1 for the first."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    prev = np.full(len(codes), -1)
    same = np.r_[False, sorted_codes[1:] == sorted_codes[:-1]]
    prev[order[same]] = order[np.flatnonzero(same) - 1]
    return prev


# ----------------------------------------------------------------------------------------------------------------
# Cold start
# ----------------------------------------------------------------------------------------------------------------


def learning_state(source: ActorProfiles | pd.DataFrame, min_events: int = 50, min_days: int = 5) -> pd.DataFrame:
    """Per actor: ``state`` 'established' once it has >= min_events events over >= min_days days, else 'learning'.

    ``source`` is an :class:`ActorProfiles` or its ``to_frame()`` table. Returns actor, state, events, active_days.
    """
    frame = source.to_frame() if isinstance(source, ActorProfiles) else source
    rows = frame[frame["field"] == ACTIVITY_FIELD]
    out = pd.DataFrame(
        {
            "actor": rows["actor"].astype(object).to_numpy(),
            "events": rows["events"].astype("int64").to_numpy(),
            "active_days": rows["days"].astype("int64").to_numpy(),
        }
    )
    established = (out["events"] >= min_events) & (out["active_days"] >= min_days)
    out.insert(1, "state", np.where(established, "established", "learning"))
    return out.sort_values("actor", kind="stable").reset_index(drop=True)
