"""Read archived API responses: a directory tree of saved pages or JSON Lines, gzipped or not.

Each file is one response page exactly as the API returned it (Reports API ``{"kind": "admin#reports#activities",
"items": [...]}``, Slack Audit Logs ``{"entries": [...]}``, Slack ``team.accessLogs`` ``{"ok": true, "logins":
[...]}``), or JSON Lines of single items / entries / rows. The source is recognised from the content, never from
the file name. Nothing is lost: whatever cannot be landed goes to quarantine with a reason, and one bad record never
takes the rest of its file down (a truncated page keeps the items before the cut).
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from watch_pipeline.core.raw import (
    RECORD_BUILDERS, RawRecord, RecordError, _dump, dump_floatless, gc_paused, record_rows,
)
from watch_pipeline.core.schema import (
    RAW_SOURCES,
    SOURCE_GOOGLE,
    SOURCE_SLACK_ACCESS,
    SOURCE_SLACK_AUDIT,
)

ARCHIVE_SUFFIXES = {".json", ".jsonl", ".ndjson", ".log", ".txt"}
_PAGE_ARRAYS = {"items": SOURCE_GOOGLE, "entries": SOURCE_SLACK_AUDIT, "logins": SOURCE_SLACK_ACCESS}
_MAX_RAW_TEXT = 100_000  # quarantine keeps at most this many characters of one record


@dataclass
class Quarantined:
    origin: str
    reason: str
    raw_text: str
    source: str = ""
    stage: str = "archive"
    partition_date: str | None = None


@dataclass
class FileResult:
    path: str
    records: list[RawRecord] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return len(self.records) + len(self.quarantined)


def archive_files(root: str | Path) -> list[Path]:
    """Candidate files under `root` (sorted, hidden files skipped): JSON/JSONL/log files, optionally gzipped.

    The order is that of sorted Paths (part by part); symlinked directories are not entered, as ``Path.rglob``
    does not. One ``scandir`` per directory: regular files need no ``stat`` of their own."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"archive directory not found: {root}")
    if root.is_file():
        return [root]
    found: list[tuple[str, ...]] = []
    _scan_dir(str(root), (), found)
    found.sort()
    out = []
    for parts in found:
        p = root.joinpath(*parts)
        suffixes = [s.lower() for s in p.suffixes]
        if suffixes and suffixes[-1] == ".gz":
            suffixes = suffixes[:-1]
        if suffixes and suffixes[-1] in ARCHIVE_SUFFIXES:
            out.append(p)
    return out


def _scan_dir(path: str, parts: tuple[str, ...], found: list[tuple[str, ...]]) -> None:
    """The non-hidden files under `path` (symlinks to files included) as their parts below the root."""
    try:
        entries = list(os.scandir(path))
    except PermissionError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                _scan_dir(entry.path, parts + (entry.name,), found)
            elif entry.is_file():
                found.append(parts + (entry.name,))
        except OSError:
            continue


def classify_item(item: Any) -> str | None:
    """Which source a single item / entry / row belongs to, from its content."""
    if not isinstance(item, dict):
        return None
    if item.get("kind") == "admin#reports#activity" or (
        isinstance(item.get("id"), dict) and ("applicationName" in item["id"] or "uniqueQualifier" in item["id"])
    ):
        return SOURCE_GOOGLE
    if "date_create" in item and ("action" in item or "actor" in item):
        return SOURCE_SLACK_AUDIT
    if "user_id" in item and ("date_first" in item or "date_last" in item):
        return SOURCE_SLACK_ACCESS
    if "events" in item and "actor" in item:  # a Reports activity missing its id: still Google's, quarantined later
        return SOURCE_GOOGLE
    return None


def _text(data: bytes) -> str:
    # surrogateescape keeps invalid bytes visible per record, so only the records that hold them are quarantined.
    return data.decode("utf-8", errors="surrogateescape")


def _clean(text: str) -> str:
    """Quarantine text: invalid bytes shown as U+FFFD, lone surrogates (from ``\\udxxx`` escapes) as escapes, capped."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:_MAX_RAW_TEXT]
    except UnicodeEncodeError:  # a surrogate surrogateescape cannot map back to a byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")[:_MAX_RAW_TEXT]


# A JSON escape of a UTF-16 surrogate (\ud800-\udfff): unpaired, it parses into a string that cannot be UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _text_is_clean(text: str) -> bool:
    """True when no record parsed from `text` can hold a lone surrogate, so no per-record check is needed.

    Lone surrogates come from invalid bytes (decoded with surrogateescape) or from surrogate escapes; a text with
    neither is clean. Paired escapes (emoji) also send the file down the per-record check, which is only slower."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return _SURROGATE_ESCAPE.search(text) is None


def _has_bad_bytes(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}  # as json reads them


class _Reader:
    def __init__(self, origin: str):
        self.result = FileResult(origin)
        self.clean = False  # set by read_bytes once the file's text is known to hold no invalid characters
        # json's own parser, told when a float or NaN / Infinity goes by: the items of a document without any are
        # written with the faster dump_floatless (same text), the others with _dump.
        self.floats = False
        self.decoder = json.JSONDecoder(parse_float=self._float, parse_constant=self._constant)

    def _float(self, text: str) -> float:
        self.floats = True
        return float(text)

    def _constant(self, name: str) -> float:
        self.floats = True
        return _CONSTANTS[name]

    def loads(self, text: str) -> Any:
        """json.loads(text), noting in :attr:`floats` whether the document holds a float."""
        self.floats = False
        if text.startswith("\ufeff"):
            return json.loads(text)  # raises json's own error about the byte order mark
        return self.decoder.decode(text)

    def raw_decode(self, text: str, pos: int) -> tuple[Any, int]:
        self.floats = False
        return self.decoder.raw_decode(text, pos)

    def quarantine(self, where: str, reason: str, raw: Any, source: str = "") -> None:
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
        self.result.quarantined.append(Quarantined(f"{self.result.path}{where}", reason, _clean(text), source))

    def item(self, obj: Any, where: str, source: str | None = None) -> None:
        source = source or classify_item(obj)
        if source is None:
            self.quarantine(where, "unrecognised record: not a Reports activity, Slack audit entry or accessLogs row", obj)
            return
        if not self.clean and _has_bad_bytes(obj):
            self.quarantine(where, "invalid UTF-8 in record", obj, source)
            return
        try:
            self.result.records.append(RECORD_BUILDERS[source](obj, _dump if self.floats else dump_floatless))
        except RecordError as exc:
            self.quarantine(where, str(exc), obj, source)

    def document(self, doc: Any, where: str = "") -> None:
        """A whole JSON document: an API page, a list of items, or a single item."""
        if isinstance(doc, list):
            for i, obj in enumerate(doc):
                self.item(obj, f"{where}[{i}]")
            return
        if isinstance(doc, dict):
            if doc.get("ok") is False:
                self.quarantine(where, f"saved error response: {doc.get('error', 'unknown error')}", doc)
                return
            for key, source in _PAGE_ARRAYS.items():
                if isinstance(doc.get(key), list):
                    for i, obj in enumerate(doc[key]):
                        self.item(obj, f"{where}:{key}[{i}]", source)
                    return
            if doc.get("kind") == "admin#reports#activities":  # an empty last page has no items
                return
            if classify_item(doc):
                self.item(doc, where)
                return
        self.quarantine(where, "unrecognised document: not an API page, item list or item", doc)

    def salvage(self, text: str, error: json.JSONDecodeError) -> bool:
        """A page cut short: keep the complete items of its array, quarantine the rest. False if not a page."""
        for key, source in _PAGE_ARRAYS.items():
            marker = text.find(f'"{key}"')
            if marker < 0:
                continue
            pos = text.find("[", marker)
            if pos < 0:
                continue
            pos += 1
            index = 0
            while True:
                while pos < len(text) and text[pos] in " \t\r\n,":
                    pos += 1
                if pos >= len(text) or text[pos] == "]":
                    break
                try:
                    obj, end = self.raw_decode(text, pos)
                except json.JSONDecodeError:
                    break
                self.item(obj, f":{key}[{index}]", source)
                index += 1
                pos = end
            rest = text[pos:]
            if rest.strip().rstrip("]}").strip():
                self.quarantine(
                    f":{key}[{index}]",
                    f"truncated or invalid JSON after {index} complete {key} (line {error.lineno}: {error.msg})",
                    rest,
                    source,
                )
            return True
        return False

    def lines(self, text: str) -> None:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = self.loads(line)
            except json.JSONDecodeError as exc:
                self.quarantine(f":{lineno}", f"invalid JSON on line {lineno}: {exc.msg}", line)
                continue
            self.document(obj, f":{lineno}")


def read_bytes(data: bytes, origin: str) -> FileResult:
    """Parse one archived file's bytes (gzip recognised by its magic number)."""
    reader = _Reader(origin)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            reader.quarantine("", f"corrupt gzip file: {exc}", data[:_MAX_RAW_TEXT].decode("latin-1"))
            return reader.result
    text = _text(data)
    stripped = text.strip()
    if not stripped:
        return reader.result
    reader.clean = _text_is_clean(stripped)
    try:
        doc = reader.loads(stripped)
    except json.JSONDecodeError as exc:
        if "\n" in stripped and _looks_like_lines(stripped):
            reader.lines(stripped)
        elif not reader.salvage(stripped, exc):
            if "\n" in stripped:
                reader.lines(stripped)
            else:
                reader.quarantine("", f"invalid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", stripped)
        return reader.result
    except RecursionError:
        reader.quarantine("", "JSON nested too deeply", stripped)
        return reader.result
    reader.document(doc)
    return reader.result


def _looks_like_lines(text: str) -> bool:
    """JSON Lines when the first non-blank line is a complete JSON value on its own."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    try:
        json.loads(first)
        return True
    except (json.JSONDecodeError, RecursionError):
        return False


def read_file(path: str | Path) -> FileResult:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        r = FileResult(str(path))
        r.quarantined.append(Quarantined(str(path), f"cannot read file: {exc}", ""))
        return r
    return read_bytes(data, str(path))


@dataclass
class ArchiveScan:
    records: dict[str, list[RawRecord]]
    quarantined: list[Quarantined]
    files: int
    origins: dict[str, str]  # record_key -> origin file of its first copy

    def count(self, source: str) -> int:
        return len(self.records[source])


@dataclass
class FileScan:
    """One archive file as :func:`iter_archive` saw it."""

    path: str
    stamp: tuple[int, int] | None  # (size, mtime_ns) when read; None if it could not be stat'ed
    records: list[RawRecord]  # the records of the wanted days, in file order
    quarantined: list[Quarantined]
    days: frozenset[str]  # every UTC day the file holds records of, wanted or not
    skipped: bool = False  # unchanged since an earlier scan and holds none of the wanted days: not read


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file: it counts as unchanged while both stay the same."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _scan_file(path: Path, wanted: frozenset[str] | None, stamp: tuple[int, int] | None) -> FileScan:
    """Read one file and keep the records of the wanted days."""
    with gc_paused():  # a page is thousands of small objects, none in a cycle
        result = read_file(path)
    all_days = frozenset(rec.partition_date for rec in result.records)
    kept = result.records if wanted is None else [r for r in result.records if r.partition_date in wanted]
    return FileScan(result.path, stamp, kept, result.quarantined, all_days)


Stamp = tuple[int, int]  # (size, mtime_ns), see file_stamp
Known = dict[str, tuple[int, int, frozenset[str]]]  # path -> (size, mtime_ns, days) of an earlier scan


def plan_archive(
    files: Iterable[Path], wanted: frozenset[str] | None, known: Known | None = None
) -> Iterator[FileScan | tuple[str, Stamp | None]]:
    """What :func:`iter_archive` does with each file, in order, before reading any: the finished FileScan of a file
    it skips, or ``(path, stamp)`` of a file to read (:func:`_scan_file`, :func:`read_files`)."""
    for path in files:
        name = str(path)
        stamp = file_stamp(path)
        prior = (known or {}).get(name)
        if (wanted is not None and prior is not None and stamp is not None and (prior[0], prior[1]) == stamp
                and not (prior[2] & wanted)):
            yield FileScan(name, stamp, [], [], prior[2], skipped=True)
        else:
            yield name, stamp


def iter_archive(
    root: str | Path,
    days: Iterable[str] | None = None,
    known: Known | None = None,
    files: list[Path] | None = None,
) -> Iterator[FileScan]:
    """Read the files under `root` in order, keeping the records whose UTC day is in `days` (all when None).

    `known` maps a path to ``(size, mtime_ns, days)`` of an earlier scan (:attr:`FileScan.days`): a file that is
    unchanged since and holds none of the wanted days is skipped unread, so landing one more day does not re-parse
    the whole archive. Everything such a file holds was read before (its quarantine rows included).
    `files` is ``archive_files(root)`` when the caller has listed them already."""
    wanted = frozenset(days) if days is not None else None
    for entry in plan_archive(archive_files(root) if files is None else files, wanted, known):
        yield entry if isinstance(entry, FileScan) else _scan_file(Path(entry[0]), wanted, entry[1])


@dataclass
class ReadFiles:
    """Archive files as :func:`read_files` read them: their scans, with the records as rows of a frame per source."""

    scans: list[FileScan]  # in order, each without its records (``records == []``): they are in `frames`
    kept: list[int]  # records kept per file, of every source
    spans: list[dict[str, tuple[int, int]]]  # per file: source -> (start, stop) of its records' rows in frames
    frames: dict[str, pd.DataFrame]  # source -> record_rows of the files' kept records of the sources asked for


def read_files(
    files: list[tuple[str, Stamp | None]], wanted: frozenset[str] | None, sources: Iterable[str], ingest_time: datetime
) -> ReadFiles:
    """Read the files (``(path, stamp)`` from :func:`plan_archive`) and turn their kept records of `sources` into
    raw-table rows (:func:`record_rows`, first copies not picked yet: that takes the files before them).

    Needs no state, so a helper process can run it; what it returns crosses cheaply (a few frames of Arrow strings,
    not an object per record: pickled and unpickled in ~0.2 s per 100,000 records, the RawRecords in ~0.6 s)."""
    records: dict[str, list[RawRecord]] = {s: [] for s in sources}
    origins: dict[str, list[str]] = {s: [] for s in sources}
    out = ReadFiles([], [], [], {})
    with gc_paused():  # the records and their rows are many small objects, none in a cycle
        for path, stamp in files:
            scan = _scan_file(Path(path), wanted, stamp)
            before = {s: len(r) for s, r in records.items()}
            for rec in scan.records:
                if rec.source in records:
                    records[rec.source].append(rec)
                    origins[rec.source].append(scan.path)
            out.spans.append({s: (before[s], len(r)) for s, r in records.items() if len(r) > before[s]})
            out.kept.append(len(scan.records))
            scan.records = []
            out.scans.append(scan)
        out.frames = {s: record_rows(r, origins[s], ingest_time) for s, r in records.items() if r}
    return out


def read_files_into(path: str, *args) -> str:
    """:func:`read_files` in a helper process, its answer pickled into the file `path` (returned).

    Through the pool's pipe, a few MB wait for the receiving process to drain them 64 KB at a time, each time after
    getting the GIL from a busy thread: the helper stood idle ~40 % of the time. A file takes them at once."""
    with open(path, "wb") as fh:
        pickle.dump(read_files(*args), fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def scan_archive(root: str | Path, days: Iterable[str] | None = None, progress=None) -> ArchiveScan:
    """Read every file under `root`; keep records whose UTC day is in `days` (all when None).

    Duplicates across overlapping pages are dropped here (first copy kept, by file order).
    """
    records: dict[str, list[RawRecord]] = {s: [] for s in RAW_SOURCES}
    seen: dict[str, str] = {}
    quarantined: list[Quarantined] = []
    files = archive_files(root)
    for n, scan in enumerate(iter_archive(root, days), start=1):
        for rec in scan.records:
            if rec.record_key in seen:
                continue
            seen[rec.record_key] = scan.path
            records[rec.source].append(rec)
        quarantined.extend(scan.quarantined)
        if progress and (n % 200 == 0 or n == len(files)):
            progress(n, len(files))
    return ArchiveScan(records, quarantined, len(files), seen)


def iter_items(doc: Any) -> Iterator[Any]:
    """The items of a page (used by tests and tools)."""
    if isinstance(doc, dict):
        for key in _PAGE_ARRAYS:
            if isinstance(doc.get(key), list):
                yield from doc[key]
                return
    elif isinstance(doc, list):
        yield from doc
