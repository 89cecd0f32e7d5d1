"""Landing records: what the APIs returned, with a dedupe key and a time, ready for the `raw_*` tables.

Live pollers and the archive reader both turn API items into :class:`RawRecord` through the functions here, so a
record lands under the same key whichever way it arrived.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

import orjson
import pandas as pd

from watch_pipeline.core.schema import (
    RAW_COLUMNS,
    SOURCE_GOOGLE,
    SOURCE_SLACK_ACCESS,
    SOURCE_SLACK_AUDIT,
    stable_id,
)

RAW_TABLE = {
    SOURCE_GOOGLE: "raw_google",
    SOURCE_SLACK_AUDIT: "raw_slack_audit",
    SOURCE_SLACK_ACCESS: "raw_slack_access",
}


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: for loops that turn many JSON texts into Python objects.

    Such loops allocate millions of objects, and each allocation burst starts a collection that walks every object
    the process holds (~15 % of a day's normalisation); they make no reference cycles, so nothing is left for the
    collector that the next collection after the loop would not find."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class RecordError(ValueError):
    """A record that cannot be landed; the message is the quarantine reason."""


@dataclass(frozen=True)
class RawRecord:
    record_key: str
    source: str
    record_time: datetime  # naive UTC
    raw: str  # compact JSON text of the item exactly as returned
    # the UTC day of record_time, ISO: computed once here (a cached_property takes a lock on every read in 3.11)
    partition_date: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "partition_date", self.record_time.date().isoformat())


# The shape the APIs send (``2026-10-01T23:56:34.366Z``): parsed by the C ``fromisoformat``, ~3x faster than
# pd.Timestamp. Anything else (more than microseconds, odd spellings) takes pandas' general parser, as before.
_PLAIN_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})\Z")


def parse_rfc3339(value: Any) -> datetime:
    """RFC 3339 text -> naive UTC datetime; RecordError when it is not one."""
    if not isinstance(value, str) or not value:
        raise RecordError(f"time is missing or not a string: {value!r}")
    if _PLAIN_RFC3339.match(value):
        try:
            when = datetime.fromisoformat(value).astimezone(timezone.utc).replace(tzinfo=None)
        except (ValueError, OverflowError):
            when = None  # e.g. month 13: pandas words the error below
        if when is not None and 1700 <= when.year <= 2200:  # pandas' range is 1677..2262: decide the rest there
            return when
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise RecordError(f"unparseable time {value!r}") from exc
    if ts is pd.NaT:
        raise RecordError(f"unparseable time {value!r}")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").tz_localize(None).to_pydatetime(warn=False)  # the tables keep microseconds


def parse_epoch(value: Any, what: str) -> datetime:
    """Epoch seconds (int, float or digit string) -> naive UTC datetime."""
    if isinstance(value, bool) or value is None:
        raise RecordError(f"{what} is missing or not a number: {value!r}")
    try:
        seconds = float(value)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{what} is not epoch seconds: {value!r}") from exc
    if not (0 < seconds < 32503680000):  # year 3000
        raise RecordError(f"{what} out of range: {value!r}")
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None)


# The canonical text of a record: json.dumps(item, separators=(",", ":"), ensure_ascii=False, sort_keys=True).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)
if c_make_encoder is not None:
    # The encoder's C core, built once and called directly: json.dumps builds one per call and checks for
    # circular references, together ~30 % of the encoding time. Items parsed from JSON text cannot be circular.
    _C_ENCODE = c_make_encoder(None, _ENCODER.default, encode_basestring, None, ":", ",", True, False, True)

    def _dump(item: Any) -> str:
        return "".join(_C_ENCODE(item, 0))
else:  # pragma: no cover - CPython always has the C encoder
    _dump = _ENCODER.encode

_ORJSON_SORTED = orjson.OPT_SORT_KEYS


def dump_floatless(item: Any) -> str:
    """The canonical text of an item that holds no float, NaN or Infinity (the archive reader knows which do),
    about twice as fast as :func:`_dump`.

    orjson writes strings (escapes included), integers, true/false/null, arrays and key-sorted objects exactly as
    the canonical text does; only floats are spelt otherwise (``1e-05`` vs ``0.00001``) and NaN becomes null, hence
    the precondition. What orjson refuses (integers beyond 64 bits, lone surrogates, very deep nesting) takes
    :func:`_dump`. tests/core/test_raw_fast.py holds orjson to this."""
    try:
        return orjson.dumps(item, option=_ORJSON_SORTED).decode()
    except TypeError:  # orjson.JSONEncodeError
        return _dump(item)


_LONG_DIGITS = re.compile(r"[0-9]{19}").search  # an integer token that may not fit 64 bits
_JSON_DECODE = json.JSONDecoder().decode  # what json.loads runs for a str without a byte order mark


def loads_json(text: Any) -> Any:
    """``json.loads(text)``, the same value, about twice as fast for the JSON texts of the raw tables.

    orjson parses what both accept to the same objects (floats are correctly rounded, the last duplicate key wins),
    and refuses NaN, Infinity, lone surrogates and out-of-range floats, which json then parses (or rejects with its
    own error). It silently turns integers beyond 64 bits into floats: a text with a run of 19 digits goes to json.
    tests/core/test_raw_fast.py holds orjson to this."""
    if type(text) is str and not text.startswith("\ufeff"):
        if not _LONG_DIGITS(text):
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                pass
        return _JSON_DECODE(text)
    return json.loads(text)  # bytes, None, a byte order mark: json's own conversion or error


Dump = Callable[[Any], str]


def google_record(item: Any, dump: Dump = _dump) -> RawRecord:
    """A Reports API activity. Key: application, customer, time, uniqueQualifier and its events.

    `dump` writes the canonical text (:func:`dump_floatless` for items known to hold no float)."""
    if not isinstance(item, dict):
        raise RecordError(f"activity is not a JSON object but {type(item).__name__}")
    ident = item.get("id")
    if not isinstance(ident, dict):
        raise RecordError("activity has no id object")
    when = parse_rfc3339(ident.get("time")) if "time" in ident else None
    if when is None:
        raise RecordError("activity has no id.time")
    # The events are part of the key: archives of pre-split activities (Elastic's) hold one line per event under
    # the same id. Overlapping pages of the real API repeat the item whole, so they still collapse.
    key = stable_id(
        SOURCE_GOOGLE,
        ident.get("applicationName"),
        ident.get("customerId"),
        ident.get("time"),
        ident.get("uniqueQualifier"),
        dump(item.get("events")),
    )
    return RawRecord(key, SOURCE_GOOGLE, when, dump(item))


def slack_audit_record(entry: Any, dump: Dump = _dump) -> RawRecord:
    """A Slack Audit Logs entry. Key: its id."""
    if not isinstance(entry, dict):
        raise RecordError(f"audit entry is not a JSON object but {type(entry).__name__}")
    entry_id = entry.get("id")
    if not isinstance(entry_id, str) or not entry_id:
        raise RecordError("audit entry has no id")
    when = parse_epoch(entry.get("date_create"), "date_create")
    return RawRecord(stable_id(SOURCE_SLACK_AUDIT, entry_id), SOURCE_SLACK_AUDIT, when, dump(entry))


def slack_access_record(row: Any, dump: Dump = _dump) -> RawRecord:
    """A team.accessLogs row (an aggregate per user, IP and UA). Key: the whole observed state of the row."""
    if not isinstance(row, dict):
        raise RecordError(f"access log row is not a JSON object but {type(row).__name__}")
    user_id = row.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise RecordError("access log row has no user_id")
    last = parse_epoch(row.get("date_last"), "date_last")
    parse_epoch(row.get("date_first"), "date_first")
    _check_count(row.get("count"))
    key = stable_id(
        SOURCE_SLACK_ACCESS, user_id, row.get("ip"), row.get("user_agent"), row.get("date_first"),
        row.get("date_last"), row.get("count"),
    )
    return RawRecord(key, SOURCE_SLACK_ACCESS, last, dump(row))


def _check_count(value: Any) -> None:
    """An accessLogs ``count`` is a whole number of accesses (missing counts as 1 downstream); anything else would
    only fail later, when the state that holds it is written, and stop the whole day."""
    if value is None:
        return
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not (number == number and number >= 0 and number.is_integer() and number < 2**63):
        raise RecordError(f"access log row's count is not a whole number of accesses: {value!r}")


RECORD_BUILDERS = {
    SOURCE_GOOGLE: google_record,
    SOURCE_SLACK_AUDIT: slack_audit_record,
    SOURCE_SLACK_ACCESS: slack_access_record,
}


def record_rows(records: list[RawRecord], origin: str | list[str], ingest_time: datetime) -> pd.DataFrame:
    """RawRecords -> their rows with the raw table's columns, in order, repeated keys included."""
    cols = [c.name for c in RAW_COLUMNS]
    if not records:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(
        {
            "record_key": [r.record_key for r in records],
            "source": [r.source for r in records],
            "record_time": pd.to_datetime([r.record_time for r in records]),
            "partition_date": [r.partition_date for r in records],
            "ingest_time": ingest_time,
            "origin": origin,
            "raw": [r.raw for r in records],
        },
        columns=cols,
    )


def first_copies(rows: pd.DataFrame | list[pd.DataFrame]) -> pd.DataFrame:
    """The first row of each record_key of `rows` (:func:`record_rows` frames or slices of them, in order), as one
    frame.

    Each part is filtered on its own: taking rows from their concatenation, whose strings are Arrow arrays of many
    chunks, took 0.3-1 s for 140,000 rows, against 0.15 s for this."""
    parts = [rows] if isinstance(rows, pd.DataFrame) else rows
    keys = parts[0]["record_key"] if len(parts) == 1 else pd.concat([p["record_key"] for p in parts], ignore_index=True)
    repeated = keys.duplicated(keep="first").to_numpy()
    kept, start = [], 0
    for part in parts:
        drop = repeated[start:start + len(part)]
        start += len(part)
        kept.append(part[~drop] if drop.any() else part)
    return (kept[0] if len(kept) == 1 else pd.concat(kept, ignore_index=True)).reset_index(drop=True)


def records_frame(records: list[RawRecord], origin: str | list[str], ingest_time: datetime) -> pd.DataFrame:
    """RawRecords -> a DataFrame with the raw table's columns (dedupe by key, keep first)."""
    return first_copies(record_rows(records, origin, ingest_time))
