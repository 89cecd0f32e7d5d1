"""Global baseline and peaks, ``seasonal`` mode (the default; ``core.tpa`` is the peer-compatible mode).

Two steps, both pure pandas:

1. :func:`daily_key_stats` turns one day of audit events into one row per (view, key): the peer's local statistics
   (``sub_count``, ``samp_count``, ``samp_sub_count_*``) plus the hour-of-day profile and the top actors / IPs the peer
   throws away. The ``global_baseline`` asset stores these rows per day (delete-then-insert the day), so a refresh
   reads only the new partition.
2. :func:`detect_peaks` compares today's rows with the stored rows of the previous ``window_days`` days (a true
   sliding window: older rows are ignored even when passed in). The baseline is per day type (weekday / weekend, or
   day of week), robust (median and trimmed mean, MAD) and dispersion-aware: today's count is scored with a
   negative-binomial tail (Poisson when the key is not over-dispersed) whose mean and variance are widened when the
   window holds few days. Keys never seen in the window are reported as ``new_series``.

:func:`attack_patterns` looks at the events of the day for three attack shapes the per-key counters cannot name:
password spraying, credential stuffing and mass downloads. Only these kinds can reach high / critical severity;
statistical peaks alone are capped at medium, and dispersed failures (e.g. an org-wide forced password change) at low.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from watch_pipeline.core.schema import OUTCOME_FAILURE, OUTCOME_SUCCESS, SEVERITIES, Column

DEFAULT_DIMS = ("source", "app", "action", "outcome")
VIEWS = ("actor", "ip")
KEY_SEP = "|"

KEY_STATS_COLUMNS = (
    Column("day", "DATE", "UTC day the row describes"),
    Column("view", "VARCHAR", "the sample of this row: 'actor' or 'ip' (or any column name)"),
    Column("key", "VARCHAR", "dimension values joined by '|', e.g. google|login|login_failure|failure"),
    Column("sub_count", "BIGINT", "events of this key on the day"),
    Column("samp_count", "BIGINT", "distinct samples (actors or IPs)"),
    Column("samp_sub_count_max", "BIGINT", "events of the busiest sample"),
    Column("samp_sub_count_mean", "DOUBLE", "events per sample"),
    Column("samp_sub_count_std", "DOUBLE", "sample std (n-1) of events per sample, 0 when < 2 samples"),
    Column("samp_sub_ratio", "DOUBLE", "share of the busiest sample, round(.,2), 0 when sub_count <= 50 (peer rule)"),
    Column("hourly", "VARCHAR", "JSON list of 24 event counts per UTC hour"),
    Column("top_samples", "VARCHAR", "JSON [[sample, events], ...] of the busiest samples"),
    Column("top_actors", "VARCHAR", "JSON [[actor, events], ...]"),
    Column("top_ips", "VARCHAR", "JSON [[ip, events], ...]"),
)

PEAK_COLUMNS = (
    Column("view", "VARCHAR", "actor | ip | ..."),
    Column("key", "VARCHAR", "the key that peaked"),
    Column("day", "DATE", "UTC day"),
    Column("criterion", "VARCHAR", "rule that fired: volume, distinct, concentration, new_series, or the attack kind"),
    Column("observed", "DOUBLE", "today's value of the criterion's metric"),
    Column("expected", "DOUBLE", "baseline value (per day)"),
    Column("threshold", "DOUBLE", "value at which the rule fires"),
    Column("z", "DOUBLE", "(observed - expected) / predictive sd"),
    Column("p_value", "DOUBLE", "upper-tail probability under the baseline"),
    Column("score", "DOUBLE", "0..1"),
    Column("severity", "VARCHAR", "low | medium | high | critical"),
    Column("kind", "VARCHAR", "volume_spike, new_series, dispersed_failures, password_spray, credential_stuffing, ..."),
    Column("actor", "VARCHAR", "actor concerned, '*' for org-level"),
    Column("top_samples", "VARCHAR", "JSON"),
    Column("top_actors", "VARCHAR", "JSON"),
    Column("top_ips", "VARCHAR", "JSON"),
    Column("reason", "VARCHAR", "short human explanation with the numbers"),
)

# Networks whose traffic is rarely a person at home or in the office: clouds, hosting, VPNs, Tor.
HOSTING_MARKERS = (
    "amazon", "aws", "google cloud", "microsoft", "azure", "digitalocean", "ovh", "hetzner", "linode", "akamai",
    "vultr", "choopa", "m247", "leaseweb", "contabo", "datacamp", "cdn77", "hostinger", "scaleway", "oracle",
    "alibaba", "tencent", "vpn", "proxy", "hosting", "datacenter", "data center", "server", "tor ", "tor-exit",
    "mullvad", "nordvpn", "proton", "expressvpn", "private internet", "surfshark", "zenlayer", "psychz", "colocrossing",
)
DOWNLOAD_ACTIONS = ("download", "file_downloaded", "file_download", "download_file", "export")


@dataclass
class PeakConfig:
    """Knobs of the seasonal detector; defaults suit a daily run over audit events."""

    dims: tuple[str, ...] = DEFAULT_DIMS
    window_days: int = 28
    seasonality: str = "weekday_weekend"  # or "day_of_week" or "none"
    min_same_type_days: int = 3  # fewer same-type days in the window -> use all days
    min_history_days: int = 7  # no volume peaks (and no new series) before this many days of history
    alpha: float = 1e-4  # upper-tail probability at which a count is a peak
    min_cv: float = 0.10  # day-to-day variation is never assumed below 10 % of the mean
    min_count: int = 10  # today's count must reach this
    min_ratio: float = 1.5  # ... and be this many times the baseline
    new_series_min_count: int = 20
    top_n: int = 10
    # forced-password-change guard: failures spread over many actors, each failing a little
    dispersed_max_per_actor: int = 3
    dispersed_max_ip_share: float = 0.2
    # attack patterns
    spray_min_accounts: int = 10
    spray_max_success_share: float = 0.5
    stuffing_min_accounts: int = 10
    stuffing_min_ips: int = 2
    mass_download_min_count: int = 50
    mass_download_min_share: float = 0.5
    mass_download_factor: float = 5.0
    hosting_markers: tuple[str, ...] = HOSTING_MARKERS
    download_actions: tuple[str, ...] = DOWNLOAD_ACTIONS
    generic_max_severity: str = "medium"


# ----------------------------------------------------------------------------------------------------------------
# 1. daily key statistics
# ----------------------------------------------------------------------------------------------------------------


def _top_json(counts: pd.Series | dict, n: int) -> str:
    # Ties are broken by the key, not by row order: warehouses do not promise an order.
    items = heapq.nsmallest(n, ((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0]))
    return json.dumps([[k, v] for k, v in items])


def _day_of(events: pd.DataFrame, day: dt.date | str | None) -> dt.date:
    if day is not None:
        return pd.Timestamp(day).date()
    col = "partition_date" if "partition_date" in _names(events) and len(events) else "event_time"
    if _is_arrow(events):  # the first value as pandas sees it, without converting the whole column
        first = events[col][0]
        if getattr(first.type, "tz", None) is None and getattr(first.type, "unit", None) in ("s", "ms", "us"):
            return pd.Timestamp(first.as_py()).date()  # a naive timestamp: its datetime
        return pd.Timestamp(events[col].slice(0, 1).to_pandas().iloc[0]).date()
    return pd.Timestamp(events[col].iloc[0]).date()


def _is_arrow(obj) -> bool:
    """A pyarrow Table or ChunkedArray (told by its module, so that pyarrow is imported only where it is used)."""
    return type(obj).__module__.partition(".")[0] == "pyarrow"


def _names(events) -> list[str]:
    return events.column_names if _is_arrow(events) else list(events.columns)


def _key_labels(uniques: pd.DataFrame) -> list[str]:
    return [KEY_SEP.join("" if pd.isna(v) else str(v) for v in t) for t in uniques.itertuples(index=False)]


def make_key(frame: pd.DataFrame, dims: Sequence[str]) -> pd.Series:
    """'google|login|login_failure|failure' from the dimension columns."""
    codes, labels = _key_codes(frame, dims)
    return pd.Series(np.array(labels, dtype=object)[codes], index=frame.index, dtype=object)


def _key_codes(events: pd.DataFrame, dims: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Integer key code per event and the key labels, by combining per-column factorisations (cheap on 1e6 rows)."""
    combined = np.zeros(len(events), dtype=np.int64)
    uniques, radix = [], 1
    for d in dims:
        codes, u = _factorize(events[d])
        radix *= max(len(u), 1)
        if radix >= 2**62:  # too many combinations for one int64: let pandas group instead
            if _is_arrow(events):
                events = events.select(list(dims)).to_pandas()
            codes = events.groupby(list(dims), sort=False, dropna=False).ngroup().to_numpy()
            return codes, _key_labels(events[list(dims)].drop_duplicates())
        combined = combined * max(len(u), 1) + codes
        uniques.append(u)
    if radix <= max(len(events), 1 << 16):  # few combinations: a bincount finds the present ones, no hashing
        present = np.flatnonzero(np.bincount(combined, minlength=radix))
        lookup = np.zeros(radix, dtype=np.int64)
        lookup[present] = np.arange(len(present))
        key_codes = lookup[combined]
    else:
        key_codes, present = pd.factorize(combined)
    parts = []
    rest = present.copy()
    for u in reversed(uniques):
        parts.append(np.asarray(u, dtype=object)[rest % max(len(u), 1)])
        rest //= max(len(u), 1)
    parts.reverse()
    labels = [KEY_SEP.join("" if pd.isna(v) else str(v) for v in t) for t in zip(*parts)]
    return key_codes.astype(np.int64, copy=False), labels


def _factorize(values: pd.Series):
    """(codes, uniques with .take) of a column, missing values included as a value.

    Uniques may hold values absent from the column (unused categories): callers count pairs of codes that occur.
    A categorical column is already factorised (its codes); Arrow-backed strings are dictionary-encoded by Arrow
    directly, about twice as fast as going through pandas for 1e5 distinct hashes. An Arrow column (a pyarrow
    ChunkedArray) is factorised the same way without becoming a Series; other Arrow columns (nulls, numbers, ...)
    are converted to pandas, so that any column gives the values pandas would see.
    """
    if _is_arrow(values):
        factorized = _factorize_arrow(values)
        if factorized is not None:
            return factorized
        values = values.to_pandas()
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        if not len(codes) or codes.min() >= 0:  # a missing value (code -1) is left to pandas, which makes it a value
            return codes.astype(np.int64), values.cat.categories
    arrow = getattr(values.array, "_pa_array", None)
    if arrow is not None and arrow.null_count == 0 and len(values):
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(arrow).combine_chunks()
        return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary
    return pd.factorize(values, use_na_sentinel=False)


def _factorize_arrow(values):
    """(codes, dictionary) of a string or dictionary ChunkedArray without nulls, else None.

    The codes are Arrow's indices as they are (int8 to int32, no copy): callers combine them with int64 arrays."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if values.null_count or not len(values):
        return None
    if pa.types.is_dictionary(values.type):  # a categorical column: its indices, if its dictionary is a plain one
        if values.num_chunks != 1:
            return None
        chunk = values.chunk(0)
        dictionary = chunk.dictionary
        distinct = len(set(dictionary.to_pylist())) if len(dictionary) <= 256 else pc.count_distinct(dictionary).as_py()
        if dictionary.null_count or distinct != len(dictionary):
            return None
        return chunk.indices.to_numpy(zero_copy_only=False), dictionary
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        encoded = pc.dictionary_encode(values).combine_chunks()
        return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary
    return None


def _pair_counts(key_codes: np.ndarray, vcodes: np.ndarray, n_values: int):
    """(key, value, count) of every (key code, value code) pair that occurs, in no particular order.

    Counted rather than sorted: a value (a sample) usually occurs under one key only, so one representative key per
    value and a bincount cover most rows; only the rows of values seen under a second key are sorted.
    """
    rep = np.zeros(n_values, dtype=np.int64)
    rep[vcodes] = key_codes  # any of the value's keys
    other = rep[vcodes] != key_codes
    mixed = bool(other.any())
    counts = np.bincount(vcodes[~other] if mixed else vcodes, minlength=n_values)
    value = np.flatnonzero(counts)
    key, count = rep[value], counts[value]
    if mixed:
        pairs, extra = np.unique(key_codes[other] * n_values + vcodes[other], return_counts=True)
        key = np.concatenate([key, pairs // n_values])
        value = np.concatenate([value, pairs % n_values])
        count = np.concatenate([count, extra])
    return key, value, count


class _PairCounts:
    """Events per (key, value) pair from integer key codes and a value column (a Series or an Arrow column)."""

    def __init__(self, key_codes: np.ndarray, n_keys: int, values: pd.Series) -> None:
        vcodes, self.uniques = _factorize(values)
        key_codes = key_codes.astype(np.int64, copy=False)
        self.key, self.value, self.count = _pair_counts(key_codes, vcodes, max(len(self.uniques), 1))
        self.n_keys = n_keys

    def aggregates(self) -> dict[str, np.ndarray]:
        k, c = self.key, self.count.astype(float)
        sub = np.bincount(k, weights=c, minlength=self.n_keys)
        samp = np.bincount(k, minlength=self.n_keys).astype(float)
        sumsq = np.bincount(k, weights=c * c, minlength=self.n_keys)
        cmax = np.zeros(self.n_keys)
        np.maximum.at(cmax, k, c)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = sub / samp
            std = np.sqrt(np.maximum(sumsq - sub * sub / samp, 0.0) / (samp - 1))
        std = np.where(samp >= 2, std, 0.0)
        ratio = np.where(sub > 50, np.round(cmax / np.maximum(sub, 1), 2), 0.0)  # the peer's LOCAL_MIN_COUNT
        return {
            "sub_count": sub.astype(np.int64), "samp_count": samp.astype(np.int64),
            "samp_sub_count_max": cmax.astype(np.int64), "samp_sub_count_mean": mean,
            "samp_sub_count_std": std, "samp_sub_ratio": ratio,
        }

    def top_json(self, n: int) -> list[str]:
        """JSON [[value, events], ...] of the ``n`` busiest values per key; equal counts are ordered by the value.

        Ties are broken by the value itself, never by row order (warehouses promise no order). Only the values whose
        count ties with the n-th are compared, and a large tie (a million samples seen once) costs one linear pass.
        """
        key, value, count = self.key, self.value, self.count
        stride = int(count.max()) + 1 if len(count) else 1
        if len(count) and self.n_keys * stride <= max(4 * len(count), 1 << 16):
            # Only the candidates are sorted: per key, the values whose count reaches the key's n-th largest count,
            # found from a histogram of counts per key (values with fewer events cannot make the top n).
            hist = np.bincount(key * stride + count, minlength=self.n_keys * stride).reshape(self.n_keys, stride)
            at_least = hist[:, ::-1].cumsum(axis=1)[:, ::-1]  # [k, c]: values of key k with >= c events
            nth = (at_least >= np.minimum(n, at_least[:, 0])[:, None]).sum(axis=1) - 1
            cand = np.flatnonzero(count >= nth[key])
            key, value, count = key[cand], value[cand], count[cand]
        # One integer sort key: by key, then count (desc). Labels are compared later, and only where counts tie.
        rank = key * stride - count
        order = np.argsort(rank, kind="stable")
        key, value, count, rank = key[order], value[order], count[order], rank[order]
        keys = np.arange(self.n_keys)
        starts = np.searchsorted(key, keys)
        m = np.minimum(n, np.searchsorted(key, keys, side="right") - starts)
        # Per key, [start, above): counts above the n-th (fewer than n); [above, tie_end): the tie group at the n-th.
        kth = np.where(m > 0, count[np.minimum(starts + m - 1, len(count) - 1)], 0) if len(count) else m
        base = keys * stride
        above = np.searchsorted(rank, base - kth, side="left")
        tie_end = np.searchsorted(rank, base - kth, side="right")
        tie_end = np.where(m > 0, tie_end, starts)
        above = np.where(m > 0, above, starts)
        picked = np.concatenate([np.arange(a, b) for a, b in zip(starts, tie_end)]) if self.n_keys else np.array([], int)
        # Only the labels needed leave the (possibly Arrow-backed) uniques, in one take.
        taken = self.uniques.take(value[picked])
        labels = [v if type(v) is str else str(v) for v in (taken.to_pylist() if _is_arrow(taken) else taken.tolist())]
        counts = count[picked].tolist()
        plain = _json_plain("".join(labels))
        out, pos = [], 0
        for s, a, t, mk in zip(starts.tolist(), above.tolist(), tie_end.tolist(), m.tolist()):
            n_above, n_tied = a - s, t - a
            head = sorted(zip((-c for c in counts[pos : pos + n_above]), labels[pos : pos + n_above]))
            tied = labels[pos + n_above : pos + n_above + n_tied]
            need = mk - n_above
            tied = heapq.nsmallest(need, tied) if n_tied > 4 * need else sorted(tied)[:need]
            kc = counts[pos + n_above] if n_tied else 0
            pairs = [(v, -c) for c, v in head] + [(v, kc) for v in tied]
            out.append(_json_pairs(pairs) if plain else json.dumps([[v, c] for v, c in pairs]))
            pos += n_above + n_tied
        return out


def _json_plain(text: str) -> bool:
    """True if JSON writes ``text`` as it is: printable ASCII without quotes or backslashes (hashes, accounts, IPs)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def _json_pairs(pairs: list[tuple[str, int]]) -> str:
    """``json.dumps([[label, count], ...])`` for plain labels (:func:`_json_plain`), without the encoder's per-call
    set-up (a tenth of a millisecond per day and key view)."""
    return "[" + ", ".join([f'["{v}", {c}]' for v, c in pairs]) + "]"


def daily_key_stats(
    events: pd.DataFrame,
    dims: Sequence[str] = DEFAULT_DIMS,
    sample: str | None = None,
    day: dt.date | str | None = None,
    views: Sequence[str] = VIEWS,
    top_n: int = 10,
    as_arrow: bool = False,
) -> pd.DataFrame:
    """One row per (view, key) for one day of events: the peer's LST columns, hourly profile, top actors / IPs.

    ``sample`` picks a single view (the sample column); otherwise every column of ``views`` present in ``events``.
    When ``day`` is given only events of that UTC day (``partition_date``, else ``event_time``) are used.
    Vectorised (one factorisation per column), so a day of a million events takes about a second.

    ``events`` may also be a pyarrow Table (e.g. a parquet partition as read): the frame is the one its
    ``to_pandas()`` would give, without that conversion (string and dictionary columns are factorised by Arrow).
    ``as_arrow`` returns the rows as a pyarrow Table instead of a DataFrame (the table ``pa.Table.from_pandas`` would
    make of the frame: date32, large_string, int64, double), for a warehouse that takes Arrow without a DataFrame.
    """
    if _is_arrow(events) and (day is not None or not events.num_rows or not events.num_columns):
        events = events.to_pandas()  # the rare paths (a day to select, nothing to count) go through pandas
    names = _names(events)
    views = (sample,) if sample else tuple(v for v in views if v in names)
    cols = [c.name for c in KEY_STATS_COLUMNS]
    if not len(events) or not names or not views:
        return _key_stats_table(None) if as_arrow else pd.DataFrame(columns=cols)
    the_day = _day_of(events, day)
    if day is not None:
        col = "partition_date" if "partition_date" in events else "event_time"
        events = events.loc[pd.to_datetime(events[col]).dt.date == the_day]
        if events.empty:
            return _key_stats_table(None) if as_arrow else pd.DataFrame(columns=cols)
    key_codes, keys = _key_codes(events, dims)
    # Keys in label order, so that the same events in any row order give the same frame.
    order = sorted(range(len(keys)), key=keys.__getitem__)
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys))
    key_codes, keys = rank[key_codes], [keys[i] for i in order]
    n_keys = len(keys)
    hourly = np.bincount(key_codes * 24 + _utc_hours(events["event_time"]), minlength=n_keys * 24)
    hourly_json = [str(row) for row in hourly.reshape(n_keys, 24).tolist()]  # a list of ints: str() is its JSON

    pair_counts = {c: _PairCounts(key_codes, n_keys, events[c]) for c in set(views) | ({"actor", "ip"} & set(names))}
    tops = {c: pc.top_json(top_n) for c, pc in pair_counts.items()}
    empty = ["[]"] * n_keys
    # One frame built from whole columns (the views stacked): inserts and a concat cost more than the statistics.
    per_view = [pair_counts[view].aggregates() for view in views]
    columns = {"day": [the_day] * (n_keys * len(views)), "view": [v for v in views for _ in range(n_keys)],
               "key": keys * len(views)}
    columns.update({c: np.concatenate([agg[c] for agg in per_view]) for c in per_view[0]})
    columns.update({
        "hourly": hourly_json * len(views), "top_samples": [j for view in views for j in tops[view]],
        "top_actors": tops.get("actor", empty) * len(views), "top_ips": tops.get("ip", empty) * len(views),
    })
    return _key_stats_table(columns) if as_arrow else pd.DataFrame(columns, columns=cols)


def _key_stats_table(columns: dict | None):
    """The key stats as a pyarrow Table with the types of ``pa.Table.from_pandas`` of the frame."""
    import pyarrow as pa

    types = {"DATE": pa.date32(), "VARCHAR": pa.large_string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64()}
    schema = pa.schema([(c.name, types[c.sql_type]) for c in KEY_STATS_COLUMNS])
    if columns is None:
        return schema.empty_table()
    return pa.table([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)


def _utc_hours(times: pd.Series) -> np.ndarray:
    """Hour of day (0-23) per event; naive datetime64 columns (UTC by convention) straight from the integers."""
    if _is_arrow(times):
        import pyarrow as pa

        if pa.types.is_timestamp(times.type) and times.type.tz is None and not times.null_count:
            return _hours(times.to_numpy())
        times = times.to_pandas()
    if isinstance(times.dtype, np.dtype) and times.dtype.kind == "M" and not times.hasnans:  # not tz-aware, no NaT
        return _hours(times.to_numpy())
    return pd.to_datetime(times).dt.hour.to_numpy()


def _hours(times: np.ndarray) -> np.ndarray:
    per_hour = np.timedelta64(1, "h") // np.timedelta64(1, np.datetime_data(times.dtype)[0])
    return times.view(np.int64) // per_hour % 24


# ----------------------------------------------------------------------------------------------------------------
# 2. seasonal, dispersion-aware peaks
# ----------------------------------------------------------------------------------------------------------------

# metric column -> (criterion name, noun used in the reason)
METRICS = {
    "sub_count": ("volume", "events"),
    "samp_count": ("distinct", "distinct {view}s"),
    "samp_sub_count_max": ("concentration", "events from the busiest {view}"),
}


def _day_type(days: Sequence[dt.date], seasonality: str) -> np.ndarray:
    wd = np.array([d.weekday() for d in days])
    if seasonality == "day_of_week":
        return wd
    if seasonality == "weekday_weekend":
        return (wd >= 5).astype(int)
    return np.zeros(len(wd), dtype=int)


def _nb_params(mean: np.ndarray, var: np.ndarray):
    mean = np.maximum(mean, 1e-9)
    over = var > mean * 1.0001
    r = np.where(over, mean**2 / np.maximum(var - mean, 1e-12), 1.0)
    p = np.where(over, mean / np.maximum(var, 1e-12), 0.5)
    return mean, over, r, p


def _tail_p(observed: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Upper-tail p-value P(X >= observed) under NB(mean, var) (Poisson when var <= mean)."""
    mean, over, r, p = _nb_params(mean, var)
    x = np.maximum(observed - 1, -1)
    return np.where(over, sps.nbinom.sf(x, r, p), sps.poisson.sf(x, mean))


def _tail_threshold(mean: np.ndarray, var: np.ndarray, alpha: float) -> np.ndarray:
    """Smallest count whose upper-tail probability is <= alpha (P(X >= thr) <= alpha)."""
    mean, over, r, p = _nb_params(mean, var)
    return np.where(over, sps.nbinom.isf(alpha, r, p), sps.poisson.isf(alpha, mean)) + 1


def _severity(score: float) -> str:
    if score >= 0.9:
        return "critical"
    if score >= 0.75:
        return "high"
    if score >= 0.5:
        return "medium"
    return "low"


def _cap(severity: str, cap: str) -> str:
    return SEVERITIES[min(SEVERITIES.index(severity), SEVERITIES.index(cap))]


def _score_from_p(p: float) -> float:
    # 1e-4 -> 0.33, 1e-8 -> 0.67, <= 1e-12 -> 1
    return float(min(1.0, -math.log10(max(p, 1e-300)) / 12.0))


def _days64(values) -> np.ndarray:
    """A day column as datetime64[D], as ``pd.to_datetime(values)`` gives it, without its per-call cost for the two
    usual cases: a datetime64 column (read back from the warehouse) and Python dates (:func:`daily_key_stats`)."""
    arr = values.to_numpy() if isinstance(values, pd.Series) or _is_arrow(values) else np.asarray(values)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[D]")
    if arr.dtype == object and all(type(v) is dt.date for v in arr):
        return np.array(arr.tolist(), dtype="datetime64[D]")
    return pd.to_datetime(values).to_numpy(dtype="datetime64[D]")


def detect_peaks(today: pd.DataFrame, history: pd.DataFrame | None, config: PeakConfig | None = None) -> pd.DataFrame:
    """Peaks of today's key stats against the stored stats of the previous ``window_days`` days.

    ``today`` and ``history`` have the columns of :func:`daily_key_stats` (``history`` needs only day, view, key
    and the metrics). A day of the window that has rows for a view counts as observed; a key missing on an observed
    day counts as 0 there. Returns one row per peak with :data:`PEAK_COLUMNS`.

    ``history`` may also be a mapping of column name to numpy array, e.g. DuckDB's ``fetchnumpy()`` of the window
    query, and ``today`` a pyarrow Table (``daily_key_stats(..., as_arrow=True)``): the same rows give the same peaks
    as their DataFrames.
    """
    config = config or PeakConfig()
    cols = [c.name for c in PEAK_COLUMNS]
    if today is None or not len(today) or not _names(today):
        return pd.DataFrame(columns=cols)
    history = history if history is not None else pd.DataFrame(columns=_names(today))
    if not isinstance(history, pd.DataFrame) and any(np.ma.isMaskedArray(v) for v in history.values()):
        history = pd.DataFrame(history)  # NULLs (masked values) become missing values, as in a DataFrame
    n_history = len(history) if isinstance(history, pd.DataFrame) else len(history["day"])
    out = []
    # Plain arrays once, and positions instead of sub-frames: a daily run has one day, a view or two and a few dozen
    # keys, so pandas' per-call costs (masks, copies, groupby set-up) would outweigh the statistics themselves.
    h = _Columns(history)
    h_day = _days64(history["day"]) if n_history else np.array([], "datetime64[D]")
    h_view = h.get("view", object) if n_history else np.array([], object)
    t_day = _days64(today["day"])
    t = _Columns(today)
    t_view = t.get("view", object)
    for day64 in np.unique(t_day):
        the_day = day64.item()
        lo = np.datetime64(the_day - dt.timedelta(days=config.window_days), "D")
        in_window = (h_day >= lo) & (h_day < day64)
        on_day = t_day == day64
        for view in sorted(set(t_view[on_day])):
            mask = in_window & (h_view == view)
            rows = np.flatnonzero(on_day & (t_view == view))
            out.extend(_detect_view(today, t, rows, h, mask, h_day[mask], the_day, view, config))
    # (an empty result from one object block: a third of the cost of pd.DataFrame(columns=cols), the same frame)
    return pd.DataFrame(out, columns=cols) if out else pd.DataFrame(np.empty((0, len(cols)), dtype=object), columns=cols)


class _Columns:
    """Numpy arrays of a frame's (or a mapping's) columns, each converted once and only when asked for."""

    def __init__(self, frame) -> None:
        self.frame, self.cache = frame, {}

    def get(self, name: str, dtype=None) -> np.ndarray:
        if (name, dtype) not in self.cache:
            col = self.frame[name]
            if isinstance(col, pd.Series):
                self.cache[name, dtype] = col.to_numpy(dtype=dtype)
            else:  # a numpy array, or an Arrow column
                self.cache[name, dtype] = np.asarray(col.to_numpy() if _is_arrow(col) else col, dtype)
        return self.cache[name, dtype]


def _detect_view(
    today: pd.DataFrame, t: _Columns, rows: np.ndarray, h: _Columns, h_mask: np.ndarray, hv_day: np.ndarray,
    the_day: dt.date, view: str, config: PeakConfig,
) -> list[dict]:
    day_values, h_days = np.unique(hv_day, return_inverse=True)
    days = [d.item() for d in day_values]
    n_days = len(days)
    if n_days < config.min_history_days:
        return []  # too little history to call anything unusual, or new
    types = _day_type(days, config.seasonality)
    today_type = _day_type([the_day], config.seasonality)[0]
    same = types == today_type
    ref = same if same.sum() >= config.min_same_type_days else np.ones(n_days, dtype=bool)
    n_ref = int(ref.sum())
    ref_label = {
        "weekday_weekend": ("weekend" if today_type else "weekday"),
        "day_of_week": the_day.strftime("%A"),
        "none": "",
    }[config.seasonality] if n_ref < n_days else ""

    keys = t.get("key", object)[rows]
    key_index = {k: i for i, k in enumerate(keys)}
    key_codes, key_uniques = pd.factorize(h.get("key", object)[h_mask])
    h_keys = np.array([key_index.get(k, -1) for k in key_uniques], dtype=np.int64)[key_codes]
    known = h_keys >= 0
    seen = set(key_uniques)
    # The three metrics side by side (axis 0): one numpy call per step instead of three.
    metrics = list(METRICS)
    full = np.zeros((len(metrics), len(keys), n_days))
    for j, metric in enumerate(metrics):
        np.add.at(full[j], (h_keys[known], h_days[known]), h.get(metric, float)[h_mask][known])
    mat = np.sort(full[:, :, ref], axis=2)
    obs = np.stack([t.get(metric, float)[rows] for metric in metrics])
    med = np.median(mat, axis=2)
    n_trim = int(0.1 * n_ref)  # trimming drops past spikes from the baseline
    mu = np.maximum(med, mat[:, :, n_trim : n_ref - n_trim].mean(axis=2))
    mad = 1.4826 * np.median(np.abs(mat - med[:, :, None]), axis=2)
    q75, q25 = np.percentile(mat, [75, 25], axis=2)
    sd = np.maximum(mad, (q75 - q25) / 1.349)
    var = np.maximum.reduce([mu, sd**2, (config.min_cv * mu) ** 2])
    # Window-length normalisation: the predictive distribution of a new day given n days is wider when n is small.
    var_pred = var * (1.0 + 1.0 / n_ref)
    mu_pred = mu + np.sqrt(var / n_ref)
    floor = np.maximum(config.min_count, np.ceil(config.min_ratio * mu_pred))
    # The tail probability only where the count reaches the floor: elsewhere nothing can fire, and scipy's
    # distributions cost more per call than the rest of the detector.
    reach = obs >= floor
    pval = np.full(obs.shape, np.nan)
    if reach.any():
        pval[reach] = _tail_p(obs[reach], mu_pred[reach], var_pred[reach])
    fire = reach & (pval <= config.alpha)
    thr = floor.copy()  # the tail threshold (scipy's discrete isf is slow) only where something fired
    if fire.any():
        thr[fire] = np.maximum(floor[fire], _tail_threshold(mu_pred[fire], var_pred[fire], config.alpha))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (obs - mu) / np.sqrt(var_pred)
    results: dict[str, list] = {k: [] for k in keys}
    for j, (criterion, noun) in enumerate(METRICS.values()):
        for i in np.flatnonzero(fire[j]).tolist():
            if keys[i] in seen:
                results[keys[i]].append(
                    (pval[j, i], criterion, obs[j, i], mu[j, i], thr[j, i], z[j, i], med[j, i], mad[j, i],
                     noun.format(view=view))
                )
    sub_counts = t.get("sub_count")[rows]
    out: list[dict] = []
    for i, key in enumerate(keys):
        if key not in seen:
            if sub_counts[i] >= config.new_series_min_count:
                out.append(_new_series_row(_row_dict(today, rows[i]), the_day, view, n_days, config))
            continue
        fired = sorted(results[key], key=lambda f: f[0])
        if not fired:
            continue
        row = _row_dict(today, rows[i])
        p, criterion, o, e, thr_i, z_i, med_i, mad_i, noun = fired[0]
        score = _score_from_p(p)
        kind, severity = f"{criterion}_spike", _cap(_severity(score), config.generic_max_severity)
        reason = (
            f"{o:.0f} {noun} vs baseline {e:.1f}/day ({ref_label + ' ' if ref_label else ''}median {med_i:.1f}, "
            f"MAD {mad_i:.1f}, {n_ref} days); threshold {thr_i:.0f}, p={p:.1e}"
        )
        if len(fired) > 1:
            reason += "; also " + ", ".join(f[1] for f in fired[1:])
        hourly = json.loads(row.get("hourly") or "[]")
        if len(hourly) == 24 and sum(hourly):
            hour = int(np.argmax(hourly))
            reason += f"; busiest hour {hour:02d}:00 UTC ({hourly[hour]} events)"
        if _is_dispersed_failure(row, view, config):
            kind, severity = "dispersed_failures", "low"
            reason += (
                "; failures spread over many accounts and IPs, few each: "
                "an org-wide event (e.g. forced password change), not an attack"
            )
        out.append(
            _row(row, the_day, view, criterion, o, e, thr_i, z_i, p, score, severity, kind, "*", reason)
        )
    return out


def _row_dict(frame, i: int) -> dict:
    """Row ``i`` as a dict of Python values (a DataFrame's or a pyarrow Table's)."""
    return frame.slice(int(i), 1).to_pylist()[0] if _is_arrow(frame) else frame.iloc[i].to_dict()


def _failure_key(key: str, config: PeakConfig) -> bool:
    if "outcome" in config.dims:
        parts = key.split(KEY_SEP)
        idx = list(config.dims).index("outcome")
        return idx < len(parts) and parts[idx] == OUTCOME_FAILURE
    return OUTCOME_FAILURE in key.split(KEY_SEP)


def _top_share(top_json: str, total: float) -> float:
    top = json.loads(top_json or "[]")
    return (top[0][1] / total) if top and total else 0.0


def _is_dispersed_failure(row: dict, view: str, config: PeakConfig) -> bool:
    """Many actors failing a little each, no IP dominating: the shape of a forced password change, not an attack."""
    if not _failure_key(row["key"], config):
        return False
    per_actor_max = (
        row["samp_sub_count_max"] if view == "actor" else (json.loads(row["top_actors"] or "[]") or [[None, 0]])[0][1]
    )
    return (
        per_actor_max <= config.dispersed_max_per_actor
        and _top_share(row["top_ips"], row["sub_count"]) <= config.dispersed_max_ip_share
    )


def _new_series_row(row: dict, the_day: dt.date, view: str, n_days: int, config: PeakConfig) -> dict:
    o = float(row["sub_count"])
    score = float(min(1.0, 0.3 + 0.1 * math.log10(max(o / config.new_series_min_count, 1.0)) * 3))
    severity = _cap(_severity(score), config.generic_max_severity)
    reason = (
        f"new series: {o:.0f} events of a key not seen in the last {n_days} days "
        f"(reported from {config.new_series_min_count})"
    )
    return _row(row, the_day, view, "new_series", o, 0.0, config.new_series_min_count, float("nan"), float("nan"),
                score, severity, "new_series", "*", reason)


def _row(row, the_day, view, criterion, observed, expected, threshold, z, p, score, severity, kind, actor, reason):
    return {
        "view": view,
        "key": row["key"],
        "day": the_day,
        "criterion": criterion,
        "observed": float(observed),
        "expected": float(expected),
        "threshold": float(threshold),
        "z": float(z),
        "p_value": float(p),
        "score": float(score),
        "severity": severity,
        "kind": kind,
        "actor": actor,
        "top_samples": row.get("top_samples", "[]"),
        "top_actors": row.get("top_actors", "[]"),
        "top_ips": row.get("top_ips", "[]"),
        "reason": reason,
    }


# ----------------------------------------------------------------------------------------------------------------
# 3. attack patterns on the events of the day
# ----------------------------------------------------------------------------------------------------------------


def _is_hosting(asn_org: pd.Series, markers: Sequence[str]) -> pd.Series:
    codes, orgs = pd.factorize(asn_org.astype("string").fillna(""))  # a few hundred networks, not every event
    hit = np.array([any(m in str(o).lower() for m in markers) for o in orgs], dtype=bool)
    return pd.Series(hit[codes] if len(orgs) else np.zeros(len(asn_org), bool), index=asn_org.index)


def _span_minutes(times: pd.Series) -> float:
    """Minutes covered by the central 90 % of the events (a burst plus a few ordinary events stays a burst)."""
    if len(times) < 2:
        return 0.0
    sec = (times - times.min()).dt.total_seconds()  # unit-agnostic (pandas 3 may keep us/s resolution)
    lo, hi = sec.quantile(0.05, interpolation="lower"), sec.quantile(0.95, interpolation="higher")
    return float((hi - lo) / 60.0)


def _pairs(counts: pd.Series, n: int) -> str:
    return _top_json(counts, n)


def attack_patterns(
    events_day: pd.DataFrame, history: pd.DataFrame | None = None, config: PeakConfig | None = None
) -> pd.DataFrame:
    """Password spraying, credential stuffing and mass downloads in one day of events (rows of PEAK_COLUMNS).

    ``history`` (stored key stats, optional) gives the usual busiest-actor download count for the mass-download rule.
    """
    config = config or PeakConfig()
    cols = [c.name for c in PEAK_COLUMNS]
    if events_day is None or events_day.empty:
        return pd.DataFrame(columns=cols)
    ev = events_day.copy()
    ev["event_time"] = pd.to_datetime(ev["event_time"])
    ev["key"] = make_key(ev, config.dims)
    for c in ("actor", "ip", "asn_org", "outcome", "action"):
        ev[c] = ev[c].astype("string").fillna("") if c in ev else ""
    the_day = _day_of(ev, None)
    rows = []
    rows += _password_spray(ev, the_day, config)
    rows += _credential_stuffing(ev, the_day, config)
    rows += _mass_download(ev, the_day, history, config)
    return pd.DataFrame(rows, columns=cols)


def _attack_row(the_day, view, key, criterion, observed, expected, threshold, score, severity, kind, actor,
                top_actors, top_ips, reason, top_samples=None):
    return {
        "view": view, "key": key, "day": the_day, "criterion": criterion, "observed": float(observed),
        "expected": float(expected), "threshold": float(threshold), "z": float("nan"), "p_value": float("nan"),
        "score": float(score), "severity": severity, "kind": kind, "actor": actor,
        "top_samples": top_samples if top_samples is not None else (top_ips if view == "ip" else top_actors),
        "top_actors": top_actors, "top_ips": top_ips, "reason": reason,
    }


def _modes(frame: pd.DataFrame, by: str, col: str) -> pd.Series:
    """Per group of ``by``, the most frequent value of ``col`` (the smallest among equals, as ``Series.mode``)."""
    counts = frame.groupby([by, col], sort=False).size().rename("n").reset_index()
    counts = counts.sort_values([by, "n", col], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates(by).set_index(by)[col]


def _password_spray(ev: pd.DataFrame, the_day, config: PeakConfig) -> list[dict]:
    """Few IPs, many distinct accounts failing, few attempts each, and those accounts do not then succeed there."""
    fails = ev.loc[(ev["outcome"] == OUTCOME_FAILURE) & (ev["ip"] != "")]
    if fails.empty:
        return []
    # Grouped once for all IPs: a distributed campaign has hundreds of spraying IPs a day.
    accounts = fails.groupby("ip", sort=False)["actor"].nunique()
    candidates = accounts.index[accounts >= config.spray_min_accounts]
    fails = fails.loc[fails["ip"].isin(candidates)]
    if fails.empty:
        return []
    per_pair = fails.groupby(["ip", "actor"], sort=False).size().rename("attempts").reset_index()
    net = _modes(fails, "ip", "asn_org")
    key = _modes(fails, "ip", "key")
    per_pair["net"] = per_pair["ip"].map(net)
    # Users who then log in from the same IP are people, not a spray. Carrier NAT pools and VPN egress hand one
    # person several IPs a day: a success from the same network counts too.
    succeeded = ev.loc[ev["outcome"] == OUTCOME_SUCCESS]
    ok_ip = succeeded[["ip", "actor"]].drop_duplicates().assign(ok_ip=True)
    ok_net = succeeded.loc[succeeded["asn_org"] != "", ["asn_org", "actor"]].drop_duplicates()
    ok_net = ok_net.rename(columns={"asn_org": "net"}).assign(ok_net=True)
    per_pair = per_pair.merge(ok_ip, on=["ip", "actor"], how="left").merge(ok_net, on=["net", "actor"], how="left")
    per_pair["ok"] = per_pair["ok_ip"].fillna(False).astype(bool) | per_pair["ok_net"].fillna(False).astype(bool)
    by_ip = per_pair.groupby("ip", sort=True).agg(
        accounts=("actor", "size"), success_share=("ok", "mean"), median_attempts=("attempts", "median")
    )
    times = fails.groupby("ip")["event_time"]  # _span_minutes per IP, grouped once
    span = (times.quantile(0.95, interpolation="higher") - times.quantile(0.05, interpolation="lower"))
    events_per_ip = fails.groupby("ip").size()
    by_ip = by_ip.loc[
        (by_ip["success_share"] <= config.spray_max_success_share)
        & (by_ip["median_attempts"] <= config.dispersed_max_per_actor)
    ]
    attempts = {
        ip: dict(zip(g["actor"].tolist(), g["attempts"].tolist()))
        for ip, g in per_pair.loc[per_pair["ip"].isin(by_ip.index), ["ip", "actor", "attempts"]].groupby("ip")
    }
    rows = []
    for ip, r in zip(by_ip.index, by_ip.to_dict("records")):
        accounts_n = int(r["accounts"])
        asn_org = net.get(ip, "")
        mine = attempts[ip]
        span_min = float(span[ip].total_seconds() / 60.0) if events_per_ip[ip] >= 2 else 0.0
        score = min(1.0, 0.75 + 0.05 * math.log2(accounts_n / config.spray_min_accounts + 1))
        reason = (
            f"{accounts_n} accounts failed from {ip}{' (' + asn_org + ')' if asn_org else ''} in {span_min:.0f} min, "
            f"{r['median_attempts']:.0f} attempt(s) each; {r['success_share']:.0%} of them then succeeded from that IP"
        )
        rows.append(_attack_row(
            the_day, "ip", key[ip], "password_spray", accounts_n, 0, config.spray_min_accounts,
            score, _severity(score), "password_spray", "*", _pairs(mine, config.top_n),
            json.dumps([[ip, int(events_per_ip[ip])]]), reason,
        ))
    return rows


def _credential_stuffing(ev: pd.DataFrame, the_day, config: PeakConfig) -> list[dict]:
    """Failures over many accounts from hosting / VPN networks (several IPs), with scattered successes."""
    hosting = _is_hosting(ev["asn_org"], config.hosting_markers)
    hv = ev.loc[hosting & ev["outcome"].isin([OUTCOME_FAILURE, OUTCOME_SUCCESS])]
    fails = hv.loc[hv["outcome"] == OUTCOME_FAILURE]
    if fails["actor"].nunique() < config.stuffing_min_accounts or fails["ip"].nunique() < config.stuffing_min_ips:
        return []
    wins = hv.loc[(hv["outcome"] == OUTCOME_SUCCESS) & hv["actor"].isin(set(fails["actor"]))]
    accounts, ips = fails["actor"].nunique(), fails["ip"].nunique()
    span = _span_minutes(fails["event_time"])
    won = wins.groupby("actor").size()
    severity = "critical" if len(won) else "high"
    score = 0.95 if len(won) else 0.8
    nets = ", ".join(fails["asn_org"].value_counts().head(3).index)
    reason = (
        f"{len(fails)} failures on {accounts} accounts from {ips} hosting/VPN IPs ({nets}) in {span:.0f} min; "
        f"{len(won)} account(s) then succeeded from those networks"
        + (f": {', '.join(won.index[:5])}" if len(won) else "")
    )
    # The succeeding actors first: they are the ones to lock down.
    fail_per_actor = fails.groupby("actor").size()
    top_actors = json.loads(_pairs(won, config.top_n)) + [
        p for p in json.loads(_pairs(fail_per_actor, config.top_n)) if p[0] not in set(won.index)
    ]
    return [_attack_row(
        the_day, "ip", fails["key"].mode().iloc[0], "credential_stuffing", accounts, 0, config.stuffing_min_accounts,
        score, severity, "credential_stuffing", ",".join(won.index[:10]) or "*",
        json.dumps(top_actors[: config.top_n]), _pairs(fails.groupby("ip").size(), config.top_n), reason,
    )]


def _mass_download(ev: pd.DataFrame, the_day, history: pd.DataFrame | None, config: PeakConfig) -> list[dict]:
    """One actor dominating the download actions of the day, far above the usual busiest downloader."""
    action = ev["action"].str.lower()
    dl = ev.loc[action.isin(config.download_actions) | action.str.contains("download", regex=False)]
    rows = []
    for key, d in dl.groupby("key"):
        per_actor = d.groupby("actor").size().sort_values(ascending=False)
        actor, n = per_actor.index[0], int(per_actor.iloc[0])
        share = n / len(d)
        usual = 0.0
        if history is not None and len(history):
            h = history.loc[(history["view"] == "actor") & (history["key"] == key), "samp_sub_count_max"]
            usual = float(h.median()) if len(h) else 0.0
        threshold = max(config.mass_download_min_count, config.mass_download_factor * usual)
        if n < threshold or (share < config.mass_download_min_share and not usual):
            continue
        mine = d.loc[d["actor"] == actor]
        span = _span_minutes(mine["event_time"])
        ratio = n / max(usual, 1.0)
        score = min(1.0, 0.75 + 0.05 * math.log2(max(ratio / config.mass_download_factor, 1.0)))
        reason = (
            f"{actor} downloaded {n} items in {span:.0f} min ({share:.0%} of the day's {len(d)} downloads); "
            f"usual busiest downloader {usual:.0f}/day"
        )
        rows.append(_attack_row(
            the_day, "actor", key, "mass_download", n, usual, threshold, score, _severity(score), "mass_download",
            actor, _pairs(per_actor, config.top_n), _pairs(mine.groupby("ip").size(), config.top_n), reason,
        ))
    return rows


def find_peaks(
    events_day: pd.DataFrame, history: pd.DataFrame | None, config: PeakConfig | None = None,
    day: dt.date | str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convenience for the assets: (today's key stats to store, peaks = statistical peaks + attack patterns)."""
    config = config or PeakConfig()
    if day is not None and "partition_date" in events_day:
        events_day = events_day.loc[pd.to_datetime(events_day["partition_date"]).dt.date == pd.Timestamp(day).date()]
    today = daily_key_stats(events_day, dims=config.dims, day=day, top_n=config.top_n)
    peaks = pd.concat(
        [detect_peaks(today, history, config), attack_patterns(events_day, history, config)], ignore_index=True
    )
    return today, peaks


def baseline_markdown(
    today: pd.DataFrame, history: pd.DataFrame | None, config: PeakConfig | None = None, view: str = "actor",
    top: int = 8,
) -> str:
    """Markdown of today vs baseline for the busiest keys of a view, with a bar each (the asset's metadata chart).

    The baseline is the median per day over the window's days of the same type (weekday / weekend), as the detector
    uses; a key absent from the window shows as ``new``.
    """
    config = config or PeakConfig()
    tv = today.loc[today["view"] == view].nlargest(top, "sub_count") if today is not None and len(today) else today
    if tv is None or tv.empty:
        return "_no events_"
    the_day = pd.Timestamp(tv["day"].iloc[0]).date()
    base: dict[str, float] = {}
    if history is not None and len(history):
        hv = history.loc[history["view"] == view]
        days = pd.to_datetime(hv["day"]).dt.date
        in_window = (days >= the_day - dt.timedelta(days=config.window_days)) & (days < the_day)
        same = _day_type(list(days), config.seasonality) == _day_type([the_day], config.seasonality)[0]
        hv = hv.loc[in_window.to_numpy() & same]
        if len(hv):
            wide = hv.pivot_table(index="key", columns="day", values="sub_count", aggfunc="sum", fill_value=0)
            base = wide.median(axis=1).to_dict()
    scale = max(1.0, float(tv["sub_count"].max()), max(base.values(), default=0.0))
    lines = ["| key | today | baseline median/day | ratio | distinct | today █ vs baseline ░ |", "|---|---:|---:|---:|---:|---|"]
    for r in tv.itertuples(index=False):
        b = base.get(r.key)
        ratio = f"{r.sub_count / b:.1f}x" if b else "new" if b is None else "-"
        bar = "█" * max(1, round(20 * r.sub_count / scale)) + " " + "░" * round(20 * (b or 0) / scale)
        key = str(r.key).replace("|", " · ")  # a raw '|' would split the markdown table's columns
        lines.append(
            f"| `{key}` | {r.sub_count:,} | {'' if b is None else f'{b:,.1f}'} | {ratio} | {r.samp_count:,} | {bar} |"
        )
    return "\n".join(lines)
