"""`dagster asset materialize --partition-range` from a clean DAGSTER_HOME (DuckDB), and the same three days on
PostgreSQL (warehouse and Dagster instance storage) giving the same tables."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from tests.ops.ops_support import (
    REPO_ROOT,
    all_assets,
    assert_same_tables,
    day_keys,
    materialize_days,
    snapshot,
    subprocess_env,
    write_watch_config,
)


@dataclass
class CliRun:
    keys: list[str]
    dagster_home: Path
    warehouse: Path
    result: subprocess.CompletedProcess = field(repr=False)


@pytest.fixture(scope="module")
def cli_range_run(tmp_path_factory, ops_org) -> CliRun:
    """Three days of the whole graph in one run through the Dagster CLI, on a DuckDB warehouse."""
    root = tmp_path_factory.mktemp("cli")
    keys = day_keys(ops_org, 3)
    home = root / "dagster_home"
    home.mkdir()  # clean: no dagster.yaml, no storage yet
    env = subprocess_env(DAGSTER_HOME=str(home), WATCH_HOME=str(root / "watch_home"),
                         WATCH_CONFIG=str(write_watch_config(root / "watch.yaml", ops_org)))
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "--select", "*",
           "--partition-range", f"{keys[0]}...{keys[-1]}", "-m", "watch_pipeline.definitions"]
    result = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    return CliRun(keys=keys, dagster_home=home, warehouse=root / "watch_home" / "warehouse.duckdb", result=result)


@pytest.mark.slow
def test_cli_partition_range_from_a_clean_dagster_home(cli_range_run, monkeypatch):
    run = cli_range_run
    output = run.result.stdout + run.result.stderr
    hint = ""
    if "Could not set lock" in output:
        # The multiprocess executor (Dagster's default) runs steps in parallel processes; a DuckDB file takes one
        # writer at a time. `executor=dg.in_process_executor` on the Definitions (or the run config
        # {"execution": {"config": {"in_process": {}}}}) runs the steps in one process.
        hint = "parallel step processes fought over the DuckDB file: the Definitions need executor=in_process_executor\n"
    assert run.result.returncode == 0, hint + output[-5000:]
    monkeypatch.setenv("DAGSTER_HOME", str(run.dagster_home))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS  # one run for the whole range
        assert runs[0].tags["dagster/asset_partition_range_start"] == run.keys[0]
        assert runs[0].tags["dagster/asset_partition_range_end"] == run.keys[-1]
        for asset in all_assets():
            for key in getattr(asset, "keys", []):
                assert instance.get_materialized_partitions(key) == set(run.keys), key
    tables = snapshot(path=run.warehouse, tables=["events"])
    day = tables["events"][0].index("partition_date")
    assert sorted({row[day][:10] for row in tables["events"][1:]}) == run.keys


@pytest.mark.slow
def test_pipeline_on_postgres_equals_duckdb(cli_range_run, ops_env, postgres_server, pg_dagster_home, monkeypatch):
    assert cli_range_run.result.returncode == 0, "the DuckDB run of the CLI test failed (see that test)"
    warehouse_url = postgres_server.create_database("warehouse")
    monkeypatch.setenv("WATCH_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("DAGSTER_HOME", str(pg_dagster_home))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        materialize_days(instance, cli_range_run.keys, as_range=True)
        run_ids = {r.run_id for r in instance.get_runs()}

    duck, pg = snapshot(path=cli_range_run.warehouse), snapshot(url=warehouse_url)
    assert len(duck["events"]) > 1 and len(duck["event_scores"]) > 1
    assert_same_tables(duck, pg, "DuckDB (CLI) vs PostgreSQL (in process)")

    # The runs live in PostgreSQL, not in SQLite files under DAGSTER_HOME.
    assert not list(pg_dagster_home.glob("**/*.db"))
    import yaml

    db = yaml.safe_load((pg_dagster_home / "dagster.yaml").read_text())["storage"]["postgres"]["postgres_db"]["db_name"]
    con = psycopg2.connect(postgres_server.url(db))
    try:
        with con.cursor() as cur:
            cur.execute("SELECT run_id FROM runs")
            assert {r[0] for r in cur.fetchall()} == run_ids != set()
    finally:
        con.close()
