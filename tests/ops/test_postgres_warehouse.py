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


def test_pandas_strings_load_like_python_strings(engines):
    """Text columns in pandas' own string dtype (what the warehouse reads back) are loaded as they are: the same
    rows as from Python objects, NaN as NULL, on both engines."""
    names = ['comma, "quote"\nnewline', "", None, "back\\slash \\N", "ünï"]
    rows = pd.DataFrame({"partition_date": [date(2026, 10, 3)] * len(names), "name": names})
    for wh in engines:
        got = []
        for dtype in (object, "str"):
            wh.replace_partitions("_ops_roundtrip", rows.astype({"name": dtype}), ["2026-10-03"])
            got.append(wh.read_table("_ops_roundtrip", "partition_date = " + wh.param(), [date(2026, 10, 3)])["name"])
        assert got[0].tolist()[:2] == got[1].tolist()[:2] == names[:2] and got[1].tolist()[3:] == names[3:]
        assert got[0].isna().tolist() == got[1].isna().tolist() == [False, False, True, False, False]
        assert got[0].fillna("<null>").tolist() == got[1].fillna("<null>").tolist()


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


def test_history_fold_sql_matches_pandas_on_both_engines(engines):
    """The scorer's history window is folded in the warehouse (``history_sql``); both engines must return exactly
    what ``aggregate_history`` computes from the events, order included (NULLs, ties, failures folded)."""
    from watch_pipeline.core.scoring import aggregate_history, history_sql

    t0 = datetime(2026, 10, 1, 8, 0)
    rows = []
    for i in range(40):
        day = i % 3
        rows.append({
            "event_id": f"e{i}", "partition_date": date(2026, 10, 1 + day), "source": "google", "app": "login",
            "action": "login_success", "outcome": ["success", "failure", "info", None][i % 4],
            "event_time": t0 + pd.Timedelta(days=day, minutes=i % 5),
            "actor": f"u{i % 4}@acme.example", "ip": ["10.0.0.1", "2001:db8::1", None][i % 3],
            "asn": [3320, None][i % 2], "asn_org": ["Telekom", None, ""][i % 3], "geo_city": ["Berlin", None][i % 2],
            "geo_country": "DE", "oauth_client": ["", "zoom"][i % 7 == 0], "ua_device_key": ["", "Chrome|Windows|Other"][i % 2],
            "ua_browser_major": ["140", ""][i % 2],
        })
    events = pd.DataFrame(rows)
    days = ["2026-10-01", "2026-10-02", "2026-10-03"]
    for wh in engines:
        wh.replace_partitions("events", events, days)
        stored = wh.read_table("events")
        want = aggregate_history(stored.sort_values("event_id").reset_index(drop=True))
        got = wh.query_df(history_sql("events", wh.param()), [date(2026, 10, 1), date(2026, 10, 4)])
        assert int(got["n"].sum()) == len(events) and len(got) < len(events)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False)


def test_read_matching_joins_on_keys_with_nulls_as_empty(engines):
    keys = pd.DataFrame({"name": ['comma, "quote"\nnewline', "", "absent"], "n": ["1", "", "7"]})
    got = []
    for wh in engines:
        wh.replace_partitions("_ops_roundtrip", ROWS, ["2026-10-01", "2026-10-02"])
        rows = wh.read_matching("_ops_roundtrip", keys.rename(columns={"n": "name2"}).iloc[:, :1], "partition_date >= ?",
                                [date(2026, 10, 1)])
        got.append(sorted(rows["name"].fillna("<null>")))
        assert not [t for t in wh.query_df("SELECT table_name FROM information_schema.tables")["table_name"]
                    if t.startswith("_match_")]  # the scratch table is gone
    # '' matches the empty name and the NULL one; the quoted name matches itself; 'absent' nothing
    assert got[0] == got[1] == sorted(["", "<null>", 'comma, "quote"\nnewline'])


def test_a_short_stage_is_loaded_again_on_postgres(engines, monkeypatch):
    """A stage that does not read back is loaded again (the shared `_staged` fallback): on PostgreSQL the second
    load is COPY again (`Warehouse._insert_frame_plain`), not DuckDB's frame registration."""
    _, pg = engines
    register_table("_ops_stage", (Column("k", "VARCHAR", "key"), Column("v", "BIGINT", "value")))
    real, loads = PostgresWarehouse._insert_frame, []

    def first_short(self, cur, table, df):  # the first stage load loses a row
        loads.append(table)
        short = table.startswith("_stage_") and len(loads) == 1
        return real(self, cur, table, df.iloc[:-1] if short else df)

    monkeypatch.setattr(PostgresWarehouse, "_insert_frame", first_short)
    assert pg.insert_new("_ops_stage", pd.DataFrame({"k": ["a", "b"], "v": [1, 2]}), "k") == 2
    assert len(loads) == 2 and all(t.startswith("_stage_") for t in loads)  # loaded twice, into new stages
    got = pg.read_table("_ops_stage").sort_values("k")
    assert got["k"].tolist() == ["a", "b"] and got["v"].tolist() == [1, 2]
