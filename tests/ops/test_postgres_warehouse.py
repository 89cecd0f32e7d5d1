"""PostgresWarehouse against a real PostgreSQL: values and dtypes come back as DuckDBWarehouse gives them."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pytest

from watch_pipeline.core.schema import Column
from watch_pipeline.warehouse import DuckDBWarehouse, PostgresWarehouse, register_table

register_table("_ops_roundtrip", (
    Column("partition_date", "DATE", "day"),
    Column("at", "TIMESTAMP", "time"),
    Column("name", "VARCHAR", "text"),
    Column("n", "BIGINT", "integer"),
    Column("x", "DOUBLE", "float"),
    Column("flag", "BOOLEAN", "bool"),
    Column("blob", "BLOB", "bytes"),
))

ROWS = pd.DataFrame({
    "partition_date": [date(2026, 10, 1), date(2026, 10, 1), date(2026, 10, 2)],
    "at": [datetime(2026, 10, 1, 9, 0, 0, 123456), None, datetime(2026, 10, 2, 23, 59, 59)],
    "name": ['comma, "quote"\nnewline', "", None],
    "n": [1, None, 2**40],
    "x": [0.1, float("nan"), -1e-9],
    "flag": [True, None, False],
    "blob": [b"\x00\x80\xffpickle", None, b""],
})


@pytest.fixture()
def engines(postgres_server, tmp_path):
    pg = PostgresWarehouse(postgres_server.create_database("wh").replace("postgresql://", "postgresql+psycopg2://"))
    duck = DuckDBWarehouse(tmp_path / "w.duckdb")
    yield duck, pg
    pg.close()
    duck.close()


def test_roundtrip_matches_duckdb(engines):
    frames = []
    for wh in engines:
        assert wh.replace_partitions("_ops_roundtrip", ROWS, ["2026-10-01", "2026-10-02"]) == 3
        frames.append(wh.read_table("_ops_roundtrip").sort_values("partition_date", kind="stable").reset_index(drop=True))
    duck, pg = frames
    assert list(pg.columns) == list(duck.columns)
    assert dict(pg.dtypes.astype(str)) == dict(duck.dtypes.astype(str))
    pd.testing.assert_frame_equal(pg.drop(columns=["blob"]), duck.drop(columns=["blob"]))
    # Bytes survive COPY's CSV (hex) unchanged; DuckDB hands back bytearray, PostgreSQL bytes.
    assert [None if v is None or v is pd.NA else bytes(v) for v in pg["blob"]] == \
           [None if v is None or v is pd.NA else bytes(v) for v in duck["blob"]] == [b"\x00\x80\xffpickle", None, b""]
    assert pg.loc[0, "name"] == 'comma, "quote"\nnewline' and pg.loc[1, "name"] == "" and pd.isna(pg.loc[2, "name"])


def test_replace_window_is_idempotent_and_insert_new_skips_known_keys(engines):
    _, pg = engines
    pg.replace_partitions("_ops_roundtrip", ROWS, ["2026-10-01", "2026-10-02"])
    pg.replace_partitions("_ops_roundtrip", ROWS.iloc[:2], ["2026-10-01"])
    assert len(pg.read_table("_ops_roundtrip")) == 3
    p = pg.param()
    assert len(pg.read_table("_ops_roundtrip", f"partition_date = {p}", [date(2026, 10, 2)])) == 1
    added = pg.insert_new("_ops_roundtrip", pd.DataFrame({"name": ["new", "", "new"], "n": [7, 8, 9]}), key="name")
    assert added == 1  # "" is known, "new" is new (its duplicate in the frame is dropped)
    assert pg.query_df('SELECT COUNT(*) AS c FROM "_ops_roundtrip" WHERE name LIKE ?', ["ne%"])["c"].tolist() == [1]
