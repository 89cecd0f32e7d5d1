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
