"""The warehouse: a DuckDB file by default, PostgreSQL when a URL is given. The assets do not know which.

Every table is declared in :mod:`watch_pipeline.core.schema`; this module turns those declarations into DDL for the
engine at hand and offers the few operations the pipeline needs: replace a window of a table in one transaction,
upsert by key, and read a query into a DataFrame. All engine differences live here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from watch_pipeline.core import schema

# Tables the pipeline owns, with their columns. Other modules may register more with `register_table`.
TABLES: dict[str, tuple[schema.Column, ...]] = {
    "raw_google": schema.RAW_COLUMNS,
    "raw_slack_audit": schema.RAW_COLUMNS,
    "raw_slack_access": schema.RAW_COLUMNS,
    "events": schema.EVENT_COLUMNS,
    "quarantine": schema.QUARANTINE_COLUMNS,
    "alerts": schema.ALERT_COLUMNS,
}

# DuckDB's buffer pool limit and write-ahead log size that triggers a checkpoint (environment variables override).
DUCKDB_MEMORY_LIMIT = "512MB"
DUCKDB_CHECKPOINT_THRESHOLD = "256MB"


def _size_bytes(size: str) -> float:
    """Bytes of a size as DuckDB reads it: KB, MB, ... are powers of 1000; KiB, MiB, ... powers of 1024."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT])(i?)B", size.strip(), flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size like 512MB or 2GB: {size!r}")
    return float(m.group(1)) * (1024 if m.group(3) else 1000) ** ("KMGT".index(m.group(2).upper()) + 1)


def _size_setting(name: str, default: str) -> str:
    value = os.environ.get(name, default).strip()
    try:
        _size_bytes(value)
    except ValueError:
        raise ValueError(f"{name} must look like 512MB or 2GB, not {value!r}") from None
    return value

_PG_TYPES = {"DOUBLE": "DOUBLE PRECISION", "VARCHAR": "TEXT", "BLOB": "BYTEA"}


def register_table(name: str, columns: Sequence[schema.Column]) -> None:
    """Declare a table (idempotent); it is created on first use."""
    TABLES[name] = tuple(columns)


def default_home() -> Path:
    return Path(os.environ.get("WATCH_HOME", ".watch")).resolve()


class Warehouse:
    """Engine-neutral access to the warehouse. Use :func:`open_warehouse` to get one."""

    dialect: str = ""

    # -- to implement per engine ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:  # pragma: no cover - abstract
        raise NotImplementedError
        yield

    def _execute(self, cur: Any, sql: str, params: Sequence[Any] | None = None) -> None:
        raise NotImplementedError

    def _insert_frame(self, cur: Any, table: str, df: pd.DataFrame) -> None:
        raise NotImplementedError

    def query_df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- shared -----------------------------------------------------------------------------------------------
    def sql_type(self, portable: str) -> str:
        return _PG_TYPES.get(portable, portable) if self.dialect == "postgres" else portable

    # Tables known to exist: asked about before every read and write (~100 times a day of a range), and the catalog
    # query costs 5-15 ms while the writer thread holds the connection. Only the pipeline's own tables are ever
    # dropped or altered, through `execute`, which then forgets them all.
    _existing: set[str]

    def _known(self) -> set[str]:
        if "_existing" not in self.__dict__:
            self._existing = set()
        return self._existing

    def ensure_table(self, table: str) -> None:
        if table in self._known():
            return
        cols = ", ".join(f'"{c.name}" {self.sql_type(c.sql_type)}' for c in TABLES[table])
        with self.transaction() as cur:
            self._execute(cur, f'CREATE TABLE IF NOT EXISTS "{table}" ({cols})')
        self._known().add(table)

    def ensure_tables(self, tables: Sequence[str] | None = None) -> None:
        for t in tables or list(TABLES):
            self.ensure_table(t)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        if sql.lstrip()[:5].upper() in ("DROP ", "ALTER"):
            self._known().clear()
        with self.transaction() as cur:
            self._execute(cur, sql, params)

    def conform(self, table: str, df: pd.DataFrame) -> pd.DataFrame:
        """Columns of `table` in order, missing ones added as nulls, types coerced."""
        out = pd.DataFrame(index=df.index)
        for c in TABLES[table]:
            s = df[c.name] if c.name in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)
            if c.sql_type == "TIMESTAMP":
                s = pd.to_datetime(s, utc=True, errors="coerce").dt.tz_localize(None)
            elif c.sql_type == "DATE":
                s = _dates(s)
            elif c.sql_type == "DOUBLE":
                s = pd.to_numeric(s, errors="coerce").astype("float64")
            elif c.sql_type == "BIGINT":
                s = pd.to_numeric(s, errors="coerce").astype("Int64")
            elif c.sql_type == "BOOLEAN":
                s = s.astype("boolean")
            elif c.sql_type == "VARCHAR" and not _nan_strings(s):
                s = s.astype(object).where(s.notna(), None)  # (pandas' own strings go in as they are: NaN is NULL)
            out[c.name] = s
        return out.reset_index(drop=True)

    def replace_window(
        self,
        table: str,
        df: pd.DataFrame,
        where: str,
        params: Sequence[Any] | None = None,
    ) -> int:
        """Delete the rows matching `where` and insert `df`, in one transaction. Returns rows inserted.

        Where the engine can count the frame's rows in the window (DuckDB), the window is counted back after the
        insert, by a scan: a load that does not read back (see `_staged`) is done again without the fast path, and
        if that fails too the write fails and rolls back, naming the counts."""
        self.ensure_table(table)
        frame = self.conform(table, df)
        with self.transaction() as cur:
            self._execute(cur, f'DELETE FROM "{table}" WHERE {where}', params)
            expected = self._frame_rows_where(cur, frame, where, params) if len(frame) else None

            def attempt(load) -> int:
                load(cur, table, frame)
                found = self._scalar(cur, f'SELECT COUNT(*) FROM "{table}" WHERE {where}', params)
                if found != expected:
                    self._execute(cur, f'DELETE FROM "{table}" WHERE {where}', params)
                return found

            if expected is not None:
                self._load_read_back(attempt, expected, lambda found: (
                    f"writing {len(frame)} rows into table {table!r} read back {found} of the {expected} in the "
                    f"window {where}"))
            elif len(frame):  # (an engine that cannot count the frame in place: as written)
                self._insert_frame(cur, table, frame)
        return len(frame)

    def _load_read_back(self, attempt, expected: int, what) -> None:
        """Load with the engine's fast path, then without it: `attempt(load)` loads, reads back by a scan and undoes
        a load that is short; the second attempt follows a short first one, and a short second one fails the
        write (its transaction rolls back). `what(found)` names the write in the warning and the error."""
        for load in (self._insert_frame, self._insert_frame_plain):
            found = attempt(load)
            if found == expected:
                return
            logging.getLogger(__name__).warning("%s: loading them again", what(found))
        raise RuntimeError(f"{what(found)}: nothing was written")

    def _scalar(self, cur: Any, sql: str, params: Sequence[Any] | None = None) -> int:
        self._execute(cur, sql, params)
        return int(cur.fetchall()[0][0])

    def _frame_rows_where(self, cur: Any, frame: pd.DataFrame, where: str, params: Sequence[Any] | None) -> int | None:
        """How many rows of `frame` match `where`, or None when the engine cannot count them in place."""
        return None

    def replace_partitions(self, table: str, df: pd.DataFrame, days: Sequence[str], column: str = "partition_date") -> int:
        """Replace whole daily partitions (ISO dates) of `table` with `df`."""
        if not days:
            return 0
        marks = ", ".join(["?"] * len(days)) if self.dialect == "duckdb" else ", ".join(["%s"] * len(days))
        cast = [pd.Timestamp(d).date() for d in days]
        return self.replace_window(table, df, f'"{column}" IN ({marks})', cast)

    @contextlib.contextmanager
    def _staged(self, table: str, frame: pd.DataFrame, key: str) -> Iterator[tuple[Any, str]]:
        """A transaction with `frame` loaded into a new temporary copy of `table`'s columns: (cursor, stage name).

        The stage is read back before it is used: with DuckDB 2.0.0, a stage loaded from an Arrow table counted a
        batch's 113,737 rows (``COUNT(*)``, from its metadata) while a scan found none of them, and the batch's
        records were never landed (6 of 27 landings of 60 days; docs/performance.md, runs P-S). So its distinct
        keys are counted with a scan; a stage that does not give them all back is dropped and the frame loaded into
        a new one without the fast path, and if that fails too the write fails and rolls back, naming the counts."""
        expected = int(frame[key].nunique())
        with self.transaction() as cur:
            stage = ""

            def attempt(load) -> int:
                nonlocal stage
                stage = f"_stage_{table}_{uuid.uuid4().hex[:12]}"  # a new stage for each load
                self._execute(cur, f'CREATE TEMP TABLE "{stage}" AS SELECT * FROM "{table}" WHERE 1=0')
                load(cur, stage, frame)
                found = self._scalar(cur, f'SELECT COUNT(DISTINCT "{key}") FROM "{stage}"')
                if found != expected:
                    self._execute(cur, f'DROP TABLE "{stage}"')
                return found

            self._load_read_back(attempt, expected, lambda found: (
                f"staging {len(frame)} rows ({expected} keys) for table {table!r} read back {found} keys"))
            yield cur, stage
            self._execute(cur, f'DROP TABLE "{stage}"')

    def _insert_frame_plain(self, cur: Any, table: str, df: pd.DataFrame) -> None:
        """``_insert_frame`` without the engine's fast path (the fallback of a stage that did not read back)."""
        self._insert_frame(cur, table, df)

    def insert_new(self, table: str, df: pd.DataFrame, key: str) -> int:
        """Insert rows whose `key` is not in the table yet (keeps the first copy). Returns rows inserted."""
        self.ensure_table(table)
        frame = self.conform(table, df).drop_duplicates(subset=[key], keep="first")
        if frame.empty:
            return 0
        with self._staged(table, frame, key) as (cur, stage):
            before = self._count(cur, table)
            self._execute(
                cur,
                f'INSERT INTO "{table}" SELECT s.* FROM "{stage}" s '
                f'WHERE NOT EXISTS (SELECT 1 FROM "{table}" t WHERE t."{key}" = s."{key}")',
            )
            after = self._count(cur, table)
        return after - before

    def upsert(self, table: str, df: pd.DataFrame, key: str) -> int:
        """Insert `df`'s rows, replacing the rows of the same `key` (the last copy in `df` wins). Returns rows written."""
        self.ensure_table(table)
        frame = self.conform(table, df).drop_duplicates(subset=[key], keep="last")
        if frame.empty:
            return 0
        with self._staged(table, frame, key) as (cur, stage):
            self._execute(cur, f'DELETE FROM "{table}" WHERE "{key}" IN (SELECT "{key}" FROM "{stage}")')
            self._execute(cur, f'INSERT INTO "{table}" SELECT * FROM "{stage}"')
        return len(frame)

    def _count(self, cur: Any, table: str) -> int:
        return self._scalar(cur, f'SELECT COUNT(*) FROM "{table}"')

    def table_exists(self, table: str) -> bool:
        if table in self._known():
            return True
        if self.dialect == "duckdb":
            q = "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_name = ?"
        else:
            q = "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_name = %s"
        exists = bool(self.query_df(q, [table])["n"].iloc[0])
        if exists:
            self._known().add(table)
        return exists

    def read_table(self, table: str, where: str = "", params: Sequence[Any] | None = None, columns: str = "*",
                   order_by: str = "") -> pd.DataFrame:
        """Read a table (or an empty frame with its columns when it does not exist yet)."""
        if not self.table_exists(table):
            return self.conform(table, pd.DataFrame())
        sql = f'SELECT {columns} FROM "{table}"' + (f" WHERE {where}" if where else "") + \
            (f" ORDER BY {order_by}" if order_by else "")
        return self.query_df(sql, params)

    def read_matching(self, table: str, keys: pd.DataFrame, where: str = "", params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Rows of `table` (filtered by `where`) whose `keys.columns` equal one row of `keys`, NULL matching ''.

        The keys go to a scratch table so that the database does the join: the table may be far larger than the
        keys (a month of state rows against one day's combinations)."""
        if not self.table_exists(table):
            return self.conform(table, pd.DataFrame())
        cols = list(keys.columns)
        frame = pd.DataFrame({c: keys[c].astype(object).where(keys[c].notna(), "").map(str).to_numpy(dtype=object)
                              for c in cols}).drop_duplicates()
        scratch = f"_match_{uuid.uuid4().hex[:16]}"
        columns = ", ".join(f'"{c}" {self.sql_type("VARCHAR")}' for c in cols)
        with self.transaction() as cur:
            self._execute(cur, f'CREATE TABLE "{scratch}" ({columns})')
            if len(frame):
                self._insert_frame(cur, scratch, frame)
        try:
            on = " AND ".join(f"COALESCE(t.\"{c}\", '') = k.\"{c}\"" for c in cols)
            sql = f'SELECT t.* FROM "{table}" t JOIN "{scratch}" k ON {on}' + (f" WHERE {where}" if where else "")
            return self.query_df(sql, params)
        finally:
            with self.transaction() as cur:  # (never a known table: the cache stays)
                self._execute(cur, f'DROP TABLE "{scratch}"')

    @contextlib.contextmanager
    def page_cache_at_most(self, size: str) -> Iterator[None]:
        """Run the block with the engine's in-process page cache limited to `size` (like ``256MB``), then put the
        limit back. Only DuckDB keeps its cache in this process; elsewhere nothing changes."""
        yield

    @staticmethod
    def write_now(fn, *args, **kwargs):
        """Run a write at once, with the future-like result `write_behind`'s submit gives (the default writer)."""
        from concurrent.futures import Future

        done: Future = Future()
        done.set_result(fn(*args, **kwargs))
        return done

    @contextlib.contextmanager
    def write_behind(self, max_pending: int = 2) -> Iterator[Any]:
        """``submit(fn, *args)`` runs warehouse writes in order on one background thread while the caller computes
        the next day (DuckDB and pandas do most of a write's work without holding the GIL, so on two cores the
        write costs next to nothing). At most `max_pending` writes wait; the block ends when all are done. After a
        failed write the later ones are skipped, and the error is raised (at the next submit, or at the end).
        A write something in the block reads back must be waited for first: ``submit`` returns its future."""
        from concurrent.futures import ThreadPoolExecutor, wait

        pending: list = []
        failed = threading.Event()

        def guarded(fn, args, kwargs):
            if failed.is_set():
                return None
            try:
                return fn(*args, **kwargs)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="warehouse-writer") as pool:
            def submit(fn, *args, **kwargs):
                future = pool.submit(guarded, fn, args, kwargs)
                pending.append(future)
                while len(pending) > max_pending or (pending and pending[0].done()):
                    pending.pop(0).result()  # raises a failed write's error here, in the caller
                return future  # .result() waits for this write (and, in order, those before it)

            try:
                yield submit
            except BaseException:
                wait(pending)  # the writes already submitted finish (or fail) before the error propagates
                raise
            for future in pending:
                future.result()

    def latest_partition_before(self, table: str, day, column: str = "partition_date"):
        """The newest `column` value of `table` strictly before `day` (a date), or None."""
        if not self.table_exists(table):
            return None
        d = self.query_df(f'SELECT MAX("{column}") AS d FROM "{table}" WHERE "{column}" < {self.param()}',
                          [pd.Timestamp(day).date()])["d"].iloc[0]
        return None if d is None or pd.isna(d) else pd.Timestamp(d).date()

    def param(self) -> str:
        """The placeholder of this engine's driver."""
        return "?" if self.dialect == "duckdb" else "%s"


class DuckDBWarehouse(Warehouse):
    dialect = "duckdb"

    def __init__(self, path: str | Path):
        import duckdb

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(self.path))
        # DuckDB caches table pages up to 80 % of the machine's RAM by default: in a long run that cache, not the
        # pipeline's frames, was most of the process's memory. Larger operations spill to disk beyond the limit.
        self._memory_limit = _size_setting("WATCH_DUCKDB_MEMORY_LIMIT", DUCKDB_MEMORY_LIMIT)
        self._con.execute(f"SET memory_limit = '{self._memory_limit}'")
        # DuckDB checkpoints (rewrites the file's metadata, fsyncs) whenever the write-ahead log passes 16 MB: a day
        # of events is more than that, and on a multi-GB file each checkpoint cost seconds. Fewer, larger ones.
        threshold = _size_setting("WATCH_DUCKDB_CHECKPOINT_THRESHOLD", DUCKDB_CHECKPOINT_THRESHOLD)
        self._con.execute(f"SET checkpoint_threshold = '{threshold}'")
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def page_cache_at_most(self, size: str) -> Iterator[None]:
        # Lowering the limit evicts pages at once and gives their memory back (512 -> 256 MB: ~250 MB less RSS).
        if _size_bytes(size) >= _size_bytes(self._memory_limit):
            yield
            return
        with self._lock:
            self._con.execute(f"SET memory_limit = '{size}'")
        try:
            yield
        finally:
            with self._lock:
                self._con.execute(f"SET memory_limit = '{self._memory_limit}'")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._lock:
            cur = self._con.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _execute(self, cur: Any, sql: str, params: Sequence[Any] | None = None) -> None:
        cur.execute(sql, list(params) if params is not None else None)

    def _insert_frame(self, cur: Any, table: str, df: pd.DataFrame) -> None:
        self._insert_scan(cur, table, _as_arrow(df), df.columns)

    def _frame_rows_where(self, cur: Any, frame: pd.DataFrame, where: str, params: Sequence[Any] | None) -> int | None:
        # only the columns `where` names (a name that merely occurs in it costs a column, nothing else)
        # (as Arrow where it converts exactly: DuckDB scans date objects in a frame one by one, ~4x slower)
        cur.register("_window_check", _as_arrow(frame[[c for c in frame.columns if c in where] or list(frame.columns[:1])]))
        try:
            return self._scalar(cur, f"SELECT COUNT(*) FROM _window_check WHERE {where}", params)
        finally:
            cur.unregister("_window_check")

    def _insert_frame_plain(self, cur: Any, table: str, df: pd.DataFrame) -> None:
        self._insert_scan(cur, table, df, df.columns)  # the frame, not _as_arrow's Arrow table

    @staticmethod
    def _insert_scan(cur: Any, table: str, data: Any, columns) -> None:
        cur.register("_frame", data)
        try:
            cols = ", ".join(f'"{c}"' for c in columns)
            cur.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM _frame')
        finally:
            cur.unregister("_frame")

    def query_df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        with self._lock:
            cur = self._con.cursor()
            try:
                relation = cur.sql(sql, params=list(params) if params is not None else None)
                if relation is None:  # not a query (it has run)
                    return pd.DataFrame()
                # Through Arrow where every column type allows: DuckDB's own conversion makes a Python object of
                # every string and pandas then turns them back into Arrow strings (3-7x slower on a day of events).
                if all(str(t) in _ARROW_READABLE for t in relation.types):
                    return _frame_from_arrow(relation.to_arrow_table())
                return relation.df()
            finally:
                cur.close()

    def close(self) -> None:
        self._con.close()


class PostgresWarehouse(Warehouse):
    """PostgreSQL through psycopg2: COPY for bulk inserts, frames typed the way DuckDB's ``.df()`` types them."""

    dialect = "postgres"

    # Type OIDs of the result columns that need converting (the others come back as Python objects pandas keeps).
    _DATETIME_OIDS = {1082, 1114, 1184}  # date, timestamp, timestamptz
    _INT_OIDS = {20, 21, 23}  # int8, int2, int4
    _FLOAT_OIDS = {700, 701, 1700}  # float4, float8, numeric (SUM/AVG of integers)
    _BOOL_OID, _BYTEA_OID = 16, 17

    def __init__(self, url: str):
        import psycopg2

        self.url = url
        # SQLAlchemy-style URLs (postgresql+psycopg2://, as in dagster.yaml) are accepted too.
        dsn = url.replace("postgresql+psycopg2://", "postgresql://", 1).replace("postgres://", "postgresql://", 1)
        self._con = psycopg2.connect(dsn, application_name="watch-pipeline")
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._lock:
            cur = self._con.cursor()
            try:
                yield cur
            except BaseException:
                self._con.rollback()
                raise
            else:
                self._con.commit()
            finally:
                cur.close()

    def _execute(self, cur: Any, sql: str, params: Sequence[Any] | None = None) -> None:
        cur.execute(self._sql(sql, params), list(params) if params else None)

    @staticmethod
    def _sql(sql: str, params: Sequence[Any] | None) -> str:
        # psycopg2 reads every "%" as a placeholder when parameters are passed (e.g. LIKE 'a%'), and "?" is DuckDB's.
        if not params:
            return sql
        if "?" in sql and "%s" not in sql:
            sql = sql.replace("%", "%%").replace("?", "%s")
        return sql

    def _insert_frame(self, cur: Any, table: str, df: pd.DataFrame) -> None:
        # COPY is an order of magnitude faster than INSERT for the event volumes we land.
        buf = io.StringIO()
        self._copy_ready(df).to_csv(buf, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%d %H:%M:%S.%f")
        buf.seek(0)
        cols = ", ".join(f'"{c}"' for c in df.columns)
        cur.copy_expert(f"COPY \"{table}\" ({cols}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)

    @staticmethod
    def _copy_ready(df: pd.DataFrame) -> pd.DataFrame:
        """The frame with values COPY's CSV format reads back as they were: booleans as t/f, bytes as \\x hex."""
        out = df.copy()
        for c in out.columns:
            s = out[c]
            if s.dtype == bool or str(s.dtype) == "boolean":
                out[c] = s.map({True: "t", False: "f"}).astype(object)
            elif s.dtype == object:
                out[c] = s.map(_copy_value)
        return out

    def query_df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        with self._lock:
            cur = self._con.cursor()
            try:
                cur.execute(self._sql(sql, params), list(params) if params else None)
                description = cur.description or []
                rows = cur.fetchall() if description else []
                self._con.commit()
            except BaseException:
                self._con.rollback()
                raise
            finally:
                cur.close()
        cols = [d[0] for d in description]
        df = pd.DataFrame.from_records(rows, columns=cols) if rows else pd.DataFrame({c: [] for c in cols})
        for i, d in enumerate(description):
            df.isetitem(i, self._typed(df.iloc[:, i], d[1]))
        return df

    def _typed(self, s: pd.Series, oid: int) -> pd.Series:
        """A result column typed like DuckDB's `.df()` would type it, so assets see the same frames on both."""
        if oid in self._DATETIME_OIDS:  # DuckDB gives DATE and TIMESTAMP both as naive datetime64[us]
            out = pd.to_datetime(s, utc=(oid == 1184))
            return (out.dt.tz_localize(None) if oid == 1184 else out).astype("datetime64[us]")
        if oid in self._INT_OIDS:
            return s.astype("Int64") if s.isna().any() else s.astype("int64")
        if oid in self._FLOAT_OIDS:
            return pd.to_numeric(s, errors="coerce").astype("float64")
        if oid == self._BOOL_OID:
            return s.astype("boolean") if s.isna().any() else s.astype(bool)
        if oid == self._BYTEA_OID:
            return s.map(lambda v: bytes(v) if v is not None else None).astype(object)
        return s

    def close(self) -> None:
        self._con.close()


# DuckDB column types that `_frame_from_arrow` turns into the frame `.df()` gives (others go through `.df()`).
_ARROW_READABLE = {"VARCHAR", "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "BOOLEAN", "DOUBLE", "DATE", "TIMESTAMP"}


def _frame_from_arrow(table) -> pd.DataFrame:
    """The DataFrame DuckDB's ``.df()`` gives for a result of `_ARROW_READABLE` columns, from its Arrow table:
    strings as pandas' default (Arrow-backed) str, or object None when a column is empty or all NULL; integers and
    booleans with NULLs as pandas' masked Int / boolean; dates and timestamps as datetime64[us]."""
    import pyarrow as pa

    columns = {}
    for name, col in zip(table.column_names, table.columns):
        typ, nulls, n = col.type, col.null_count, len(col)
        if pa.types.is_string(typ) or pa.types.is_large_string(typ):
            if nulls == n:
                values = pd.Series([None] * n, dtype=object)
            else:
                values = col.to_pandas(types_mapper={typ: pd.StringDtype("pyarrow", na_value=np.nan)}.get)
        elif pa.types.is_integer(typ) and nulls:
            values = col.to_pandas(types_mapper={typ: pd.api.types.pandas_dtype(f"Int{typ.bit_width}")}.get)
        elif pa.types.is_boolean(typ) and nulls:
            values = col.to_pandas(types_mapper={typ: pd.BooleanDtype()}.get)
        elif pa.types.is_date(typ) or pa.types.is_timestamp(typ):
            values = col.to_pandas(date_as_object=False).astype("datetime64[us]")
        else:
            values = col.to_pandas()
        columns[name] = pd.Series(values, copy=False).reset_index(drop=True)
    return pd.DataFrame(columns)


# What an object column may hold to go to DuckDB through Arrow with the values the frame itself gives.
_ARROW_SAFE_OBJECTS = {"string", "empty", "date", "bytes"}


def _as_arrow(df: pd.DataFrame):
    """`df` as an Arrow table for DuckDB to insert, when every column converts to the values DuckDB stores from the
    frame itself (text, numbers, booleans, dates, naive times, bytes; NaN and NaT as NULL); else `df`.

    DuckDB scans an Arrow table without the GIL and ~1.5x faster than a frame (a day of events: 0.42 s instead of
    0.71 s), so a `write_behind` write really runs beside the next day's work. Object columns of anything else
    (numbers or booleans as objects, mixed values) keep DuckDB's own conversion of the frame, whatever it is."""
    import pyarrow as pa

    if not all(_converts_exactly(df[name]) for name in df.columns):
        return df
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except Exception:  # noqa: BLE001 - anything Arrow cannot take goes in as the frame, as it always did
        return df


def _converts_exactly(s: pd.Series) -> bool:
    """Whether DuckDB stores the same values from the column as an Arrow array as from the frame (tested)."""
    dtype = s.dtype
    if isinstance(dtype, (pd.StringDtype, pd.BooleanDtype)):
        return True
    if isinstance(dtype, (pd.CategoricalDtype, pd.DatetimeTZDtype)):
        return False
    if dtype == object:
        return pd.api.types.infer_dtype(s, skipna=True) in _ARROW_SAFE_OBJECTS
    if pd.api.types.is_extension_array_dtype(dtype):  # masked Int64 / Float64
        return pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype)
    return dtype.kind in "biufM"  # numpy numbers, booleans and naive datetimes


def _dates(s: pd.Series) -> pd.Series:
    """``pd.to_datetime(s).dt.date`` (NaT where missing), one date object per distinct day: a frame usually holds
    one or a few days in 1e5 rows, and converting every row was most of the cost of loading it."""
    days = pd.to_datetime(s, errors="coerce").dt.normalize()
    codes, uniques = pd.factorize(days)
    objects = np.array([d.date() for d in uniques] + [pd.NaT], dtype=object)
    return pd.Series(objects[codes], index=s.index, dtype=object)


def _nan_strings(s: pd.Series) -> bool:
    """pandas' default string dtype (missing = NaN): both engines' loaders take it as is, NaN as NULL."""
    return isinstance(s.dtype, pd.StringDtype) and s.dtype.na_value is not pd.NA


def _copy_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, bool):
        return "t" if value else "f"
    return value


def open_warehouse(url: str | None = None, path: str | Path | None = None) -> Warehouse:
    """PostgreSQL at `url`, or the DuckDB file `path`; with neither given, WATCH_WAREHOUSE_URL if set, else
    $WATCH_HOME/warehouse.duckdb (default .watch/warehouse.duckdb)."""
    if url is None and path is None:
        url = os.environ.get("WATCH_WAREHOUSE_URL") or None
    if url:
        return PostgresWarehouse(url)
    return DuckDBWarehouse(path or default_home() / "warehouse.duckdb")
