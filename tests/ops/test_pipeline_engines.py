"""The whole graph against DuckDB and against PostgreSQL (warehouse and Dagster instance storage): same tables."""

from __future__ import annotations

import dagster as dg
import psycopg2
import pytest

from tests.ops.ops_support import assert_same_tables, day_keys, materialize_days, snapshot


@pytest.mark.slow
def test_pipeline_on_postgres_equals_duckdb(ops_env, ops_org, postgres_server, pg_dagster_home, monkeypatch):
    keys = day_keys(ops_org, 3)

    with dg.instance_for_test() as instance:
        materialize_days(instance, keys, as_range=True)
    duck = snapshot(path=ops_env / "home" / "warehouse.duckdb")

    warehouse_url = postgres_server.create_database("warehouse")
    monkeypatch.setenv("WATCH_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("DAGSTER_HOME", str(pg_dagster_home))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        materialize_days(instance, keys, as_range=True)
        run_ids = {r.run_id for r in instance.get_runs()}
    pg = snapshot(url=warehouse_url)

    assert len(duck["events"]) > 1 and len(duck["event_scores"]) > 1
    day_col = duck["events"][0].index("partition_date")
    assert sorted({row[day_col][:10] for row in duck["events"][1:]}) == keys
    assert_same_tables(duck, pg, "DuckDB vs PostgreSQL")
    # The instance really kept its runs in PostgreSQL (not in a SQLite file next to dagster.yaml).
    dagster_url = next(line.split(": ", 1)[1] for line in (pg_dagster_home / "dagster.yaml").read_text().splitlines()
                       if "db_name" in line)
    assert not list(pg_dagster_home.glob("**/*.db"))
    con = psycopg2.connect(postgres_server.url(dagster_url))
    try:
        with con.cursor() as cur:
            cur.execute("SELECT run_id FROM runs")
            assert {r[0] for r in cur.fetchall()} == run_ids and run_ids
    finally:
        con.close()
