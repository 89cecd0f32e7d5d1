"""DuckDBWarehouse reads results through Arrow where it can: the frames must be exactly what DuckDB's ``.df()`` gives."""

from __future__ import annotations

import pandas as pd
import pytest

from watch_pipeline.warehouse import DuckDBWarehouse

QUERIES = [
    "SELECT * FROM t",  # a BLOB column: read by .df()
    "SELECT * EXCLUDE (blob) FROM t",
    "SELECT * EXCLUDE (blob) FROM t WHERE 1 = 0",
    "SELECT * EXCLUDE (blob) FROM t WHERE i = 1",  # columns that are all NULL
    "SELECT i, COUNT(*) AS n, SUM(x) AS sx, MAX(d) AS md, MIN(ts) AS mt FROM t GROUP BY i ORDER BY i",
    "SELECT MAX(d) AS d FROM t WHERE 1 = 0",
    "SELECT SUM(i) AS s, AVG(x) AS a FROM t",  # HUGEINT: read by .df()
    "SELECT CAST(ts AS TIMESTAMPTZ) AS tz FROM t",
]


@pytest.fixture()
def wh(tmp_path):
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    wh.execute("CREATE TABLE t (i BIGINT, j BIGINT, b BOOLEAN, bb BOOLEAN, x DOUBLE, s VARCHAR, sn VARCHAR, d DATE, "
               "ts TIMESTAMP, blob BLOB, ii INTEGER, dn DATE, sm SMALLINT, tn TINYINT)")
    wh.execute("INSERT INTO t VALUES (1, NULL, true, NULL, 1.5, 'a', NULL, '2026-10-01', '2026-10-01 01:02:03.456789', "
               "'abc'::BLOB, 3, NULL, NULL, 1), (2, 5, false, true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 7, "
               "NULL), (3, 6, true, false, -0.0, 'ü, \"q\"', NULL, '2026-10-02', '2026-10-02 00:00:00', '', 4, NULL, 8, 2)")
    yield wh
    wh.close()


@pytest.mark.parametrize("sql", QUERIES)
def test_query_df_gives_what_duckdb_df_gives(wh, sql):
    expected = wh._con.execute(sql).df()  # DuckDB's own conversion
    got = wh.query_df(sql)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_strings_come_back_as_pandas_default_strings(wh):
    got = wh.query_df("SELECT s, sn FROM t ORDER BY i")
    assert isinstance(got["s"].dtype, pd.StringDtype) and got["s"].isna().tolist() == [False, True, False]
    assert got["sn"].dtype == object and got["sn"].isna().all()


def test_write_behind_writes_in_order_and_waits_for_them(wh):
    import threading
    import time

    wh.execute("CREATE TABLE w (i BIGINT)")
    threads = set()

    def slow_insert(i):
        threads.add(threading.current_thread().name)
        time.sleep(0.01)
        wh.execute("INSERT INTO w VALUES (?)", [i])

    with wh.write_behind(max_pending=2) as write:
        for i in range(10):
            write(slow_insert, i)
    # all done when the block ends, in submission order, on the one writer thread
    assert wh.query_df("SELECT i FROM w")["i"].tolist() == list(range(10))
    assert len(threads) == 1 and threads != {threading.current_thread().name}


def test_write_behind_raises_a_failed_write_and_skips_the_later_ones(wh):
    wh.execute("CREATE TABLE w (i BIGINT)")

    def insert(i):
        if i == 3:
            raise ValueError("disk full")
        wh.execute("INSERT INTO w VALUES (?)", [i])

    with pytest.raises(ValueError, match="disk full"):
        with wh.write_behind(max_pending=100) as write:
            for i in range(8):
                write(insert, i)
    assert wh.query_df("SELECT i FROM w ORDER BY i")["i"].tolist() == [0, 1, 2]


def test_write_behind_finishes_submitted_writes_when_the_block_fails(wh):
    wh.execute("CREATE TABLE w (i BIGINT)")
    with pytest.raises(KeyError):
        with wh.write_behind() as write:
            write(wh.execute, "INSERT INTO w VALUES (1)")
            raise KeyError("computing the next day failed")
    assert wh.query_df("SELECT i FROM w")["i"].tolist() == [1]


def _frames_for_every_column_type():
    import datetime as dt

    import numpy as np

    base = pd.DataFrame({
        "s": pd.Series(["a", None, "c\u00e9 \U0001F600", ""], dtype=object),
        "a": pd.Series(["x", np.nan, "", "y"], dtype="str"),
        "f": [1.5, np.nan, -0.0, np.inf],
        "i": pd.array([1, None, 3, 2**62], dtype="Int64"),
        "n": [1, 2, 3, -4],
        "b": pd.array([True, None, False, True], dtype="boolean"),
        "nb": [True, False, True, False],
        "d": pd.Series([dt.date(2026, 1, 1), pd.NaT, dt.date(2026, 1, 2), None], dtype=object),
        "ts": pd.to_datetime(["2026-01-01 00:00:00.123456789", None, "2026-01-02 00:00:00.000000001",
                              "1969-12-31 23:59:59.999999999"], format="mixed").astype("datetime64[ns]"),
        "tu": pd.to_datetime(["2026-01-01 00:00:00.5", None, "2026-01-02", "2026-01-03"], format="mixed").astype("datetime64[us]"),
        "x": pd.Series([b"\x00\x01", None, b"", b"abc"], dtype=object),
    })
    yield "every type", base
    yield "numbers as objects", base.assign(s=pd.Series([1, None, 2.5, 7], dtype=object))
    yield "mixed objects", base.assign(s=pd.Series(["a", 1, None, 2.5], dtype=object))
    yield "all NULL", base.assign(s=pd.Series([None] * 4, dtype=object), d=pd.Series([None] * 4, dtype=object))
    yield "no rows", base.iloc[:0]


@pytest.mark.parametrize("case", [name for name, _ in _frames_for_every_column_type()])
def test_inserts_store_what_duckdb_stores_from_the_frame(tmp_path, case):
    """Frames go to DuckDB through Arrow where every column converts exactly; either way the stored rows must be
    the ones DuckDB stores from the frame itself."""
    from watch_pipeline.warehouse import _as_arrow

    frame = dict(_frames_for_every_column_type())[case]
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    try:
        ddl = "(s VARCHAR, a VARCHAR, f DOUBLE, i BIGINT, n BIGINT, b BOOLEAN, nb BOOLEAN, d DATE, ts TIMESTAMP, tu TIMESTAMP, x BLOB)"
        wh.execute(f"CREATE TABLE via_arrow {ddl}")
        wh.execute(f"CREATE TABLE via_frame {ddl}")
        with wh.transaction() as cur:
            wh._insert_frame(cur, "via_arrow", frame)
        wh._con.register("_plain", frame)  # DuckDB's own scan of the frame
        wh._con.execute("INSERT INTO via_frame SELECT * FROM _plain")
        wh._con.unregister("_plain")
        for a, b in (("via_arrow", "via_frame"), ("via_frame", "via_arrow")):
            left = wh.query_df(f"SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}")
            assert left.empty, (case, left)
        assert wh.query_df("SELECT COUNT(*) AS n FROM via_arrow")["n"].iloc[0] == len(frame)
        # NaN is stored as NULL on both paths (not as a NaN double)
        if len(frame):
            assert wh.query_df("SELECT COUNT(*) AS n FROM via_arrow WHERE f IS NULL")["n"].iloc[0] == 1
    finally:
        wh.close()
    converted = type(_as_arrow(frame)).__name__
    assert converted == ("DataFrame" if case in ("numbers as objects", "mixed objects") else "Table")


def test_known_tables_are_not_asked_for_again_and_a_drop_forgets_them(wh, monkeypatch):
    from watch_pipeline.warehouse import register_table
    from watch_pipeline.core.schema import Column

    register_table("cache_probe", (Column("k", "VARCHAR", "key"),))
    assert not wh.table_exists("cache_probe")  # a missing table is asked about every time
    wh.replace_window("cache_probe", pd.DataFrame({"k": ["a"]}), "1 = 1")
    assert wh.table_exists("t")  # (made by hand: asked about once)
    asked = []
    real = wh.query_df
    monkeypatch.setattr(wh, "query_df", lambda sql, params=None: asked.append(sql) or real(sql, params))
    assert wh.table_exists("cache_probe") and wh.table_exists("t")
    wh.replace_window("cache_probe", pd.DataFrame({"k": ["b"]}), "1 = 1")  # no CREATE ... IF NOT EXISTS either
    wh.read_matching("cache_probe", pd.DataFrame({"k": ["b"]}))  # its scratch table's drop keeps what is known
    assert wh.table_exists("cache_probe")
    assert not [q for q in asked if "information_schema" in q]
    wh.execute('DROP TABLE "cache_probe"')
    assert not wh.table_exists("cache_probe")
    assert wh.read_table("cache_probe").empty  # (read as an empty frame, not a missing-table error)


def test_a_stage_that_does_not_read_back_fails_the_write_and_writes_nothing(wh, monkeypatch):
    """insert_new and upsert stage the frame first; a stage whose keys do not read back as many as the frame holds
    (DuckDB 2.0 once counted a batch it never scanned, and the batch was lost) is loaded again from the frame
    without Arrow, and if that fails too the whole write fails."""
    from watch_pipeline.core.schema import Column
    from watch_pipeline.warehouse import register_table

    register_table("stage_probe", (Column("k", "VARCHAR", "key"), Column("v", "BIGINT", "value")))
    assert wh.insert_new("stage_probe", pd.DataFrame({"k": ["a", "b"], "v": [1, 2]}), "k") == 2
    real = type(wh)._insert_frame

    def short(self, cur, table, df):  # the stage gets one row less than the frame
        return real(self, cur, table, df.iloc[:-1] if table.startswith("_stage_") else df)

    monkeypatch.setattr(type(wh), "_insert_frame", short)
    monkeypatch.setattr(type(wh), "_insert_frame_plain", short)
    for write in (wh.insert_new, wh.upsert):
        with pytest.raises(RuntimeError, match=r"staging 2 rows \(2 keys\) for table 'stage_probe' read back 1 keys"):
            write("stage_probe", pd.DataFrame({"k": ["b", "c"], "v": [5, 3]}), "k")
    # the fast load alone short: the plain load stands in
    monkeypatch.setattr(type(wh), "_insert_frame_plain", real)
    assert wh.insert_new("stage_probe", pd.DataFrame({"k": ["e"], "v": [7]}), "k") == 1
    wh.execute("DELETE FROM stage_probe WHERE k = 'e'")
    monkeypatch.setattr(type(wh), "_insert_frame", real)
    kept = wh.read_table("stage_probe").sort_values("k")
    assert kept["k"].tolist() == ["a", "b"] and kept["v"].tolist() == [1, 2]  # rolled back: nothing written
    assert not [t for t in wh.query_df("SELECT table_name FROM information_schema.tables")["table_name"]
                if t.startswith("_stage_")]  # (temporary stages go with their transaction)
    assert wh.upsert("stage_probe", pd.DataFrame({"k": ["b", "c"], "v": [5, 3]}), "k") == 2
    assert wh.insert_new("stage_probe", pd.DataFrame({"k": ["c", "d"], "v": [9, 4]}), "k") == 1
    assert dict(zip(*wh.read_table("stage_probe")[["k", "v"]].T.values)) == {"a": 1, "b": 5, "c": 3, "d": 4}


def test_a_window_that_does_not_read_back_is_written_again_or_fails(wh, monkeypatch):
    """replace_window counts the window back after the insert (DuckDB): a short load is done again without Arrow;
    when that is short too, the write fails and the window keeps what it had."""
    from watch_pipeline.core.schema import Column
    from watch_pipeline.warehouse import register_table

    register_table("window_probe", (Column("day", "VARCHAR", "day"), Column("v", "BIGINT", "value")))
    day = pd.DataFrame({"day": ["d1", "d1", "d1"], "v": [1, 2, 3]})
    assert wh.replace_window("window_probe", day, "day = ?", ["d1"]) == 3
    real_fast, real_plain = type(wh)._insert_frame, type(wh)._insert_frame_plain

    def short(real):
        return lambda self, cur, table, df: real(self, cur, table, df.iloc[:-1] if table == "window_probe" else df)

    monkeypatch.setattr(type(wh), "_insert_frame", short(real_fast))
    assert wh.replace_window("window_probe", day.assign(v=[4, 5, 6]), "day = ?", ["d1"]) == 3
    assert sorted(wh.read_table("window_probe")["v"]) == [4, 5, 6]  # written again by the plain load
    monkeypatch.setattr(type(wh), "_insert_frame_plain", short(real_plain))
    with pytest.raises(RuntimeError, match=r"writing 3 rows into table 'window_probe' read back 2 of the 3"):
        wh.replace_window("window_probe", day.assign(v=[7, 8, 9]), "day = ?", ["d1"])
    assert sorted(wh.read_table("window_probe")["v"]) == [4, 5, 6]  # rolled back
    # rows of the frame outside the window are not expected in it (the caller's business, as before)
    monkeypatch.setattr(type(wh), "_insert_frame", real_fast)
    assert wh.replace_window("window_probe", pd.DataFrame({"day": ["d2", "d3"], "v": [1, 1]}), "day = ?", ["d2"]) == 2


def test_page_cache_is_capped_for_a_block_and_put_back(wh, monkeypatch, tmp_path):
    """event_scores caps DuckDB's page cache while it runs: the limit drops inside the block, comes back after it
    (after an error too), and a cap above the configured limit never raises it."""
    def limit(w):
        return w.query_df("SELECT current_setting('memory_limit') AS m")["m"].iloc[0]

    configured = limit(wh)
    assert configured == "488.2 MiB"  # the default 512MB, as DuckDB shows it
    with wh.page_cache_at_most("256MB"):
        assert limit(wh) == "244.1 MiB"
        assert wh.query_df("SELECT COUNT(*) AS n FROM t")["n"].iloc[0] == 3  # queries still run
    assert limit(wh) == configured
    with pytest.raises(RuntimeError):
        with wh.page_cache_at_most("128MB"):
            assert limit(wh) == "122.0 MiB"
            raise RuntimeError("a failed step")
    assert limit(wh) == configured
    with wh.page_cache_at_most("4GB"):
        assert limit(wh) == configured
    with pytest.raises(ValueError, match="not a size"):
        with wh.page_cache_at_most("lots"):
            pass
    monkeypatch.setenv("WATCH_DUCKDB_MEMORY_LIMIT", "200MB")  # a smaller configured limit stays as it is
    small = DuckDBWarehouse(tmp_path / "small.duckdb")
    try:
        with small.page_cache_at_most("256MB"):
            assert limit(small) == "190.7 MiB"
    finally:
        small.close()
