"""A 7-day backfill launched through GraphQL `launchPartitionBackfill` on a live, PostgreSQL-backed instance."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from tests.ops.conftest import free_port
from tests.ops.ops_support import (
    REPO_ROOT,
    assert_same_tables,
    dagster_server,
    day_keys,
    graphql,
    materialize_days,
    snapshot,
    subprocess_env,
)

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
    ... on InvalidSubsetError { message }
    ... on PartitionSetNotFoundError { message }
  }
}"""

STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions error { message } }
    ... on PythonError { message }
  }
}"""

TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
# The daemon's runs execute their steps in one process: the multiprocess default pays 5-8 s of imports per step.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def _asset_keys() -> list[dict]:
    from watch_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    return [{"path": list(k.path)} for k in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())]


@pytest.mark.slow
def test_graphql_backfill_on_postgres_equals_day_by_day(ops_env, ops_org, postgres_server, pg_dagster_home,
                                                         monkeypatch, tmp_path):
    keys = day_keys(ops_org, 7)
    warehouse_url = postgres_server.create_database("warehouse")
    env = subprocess_env(WATCH_HOME=str(ops_env / "home_pg"), WATCH_CONFIG=str(ops_env / "watch.yaml"),
                         WATCH_WAREHOUSE_URL=warehouse_url, DAGSTER_HOME=str(pg_dagster_home))
    port = free_port()
    args = ["dagster", "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    log = tmp_path / "dagster_dev.log"
    with dagster_server(args, port, env, cwd=tmp_path, log=log):
        launched = graphql(port, LAUNCH, {"params": {
            "partitionNames": keys,
            "assetSelection": _asset_keys(),
            "runConfigData": IN_PROCESS,
            "title": "ops test: 7-day backfill",
        }})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]
        deadline, status = time.monotonic() + 300, None
        while time.monotonic() < deadline:
            status = graphql(port, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            if status.get("status") in TERMINAL:
                break
            time.sleep(2)
        assert status and status.get("status") in {"COMPLETED", "COMPLETED_SUCCESS"}, f"{status}\n{log.read_text()[-5000:]}"
        assert status["numPartitions"] == 7

    monkeypatch.setenv("DAGSTER_HOME", str(pg_dagster_home))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
        materialized = instance.get_materialized_partitions(dg.AssetKey("alerts"))
    assert materialized == set(keys)
    backfilled = snapshot(url=warehouse_url)

    # The same seven days, one run per day, on a fresh DuckDB warehouse.
    with dg.instance_for_test() as instance:
        materialize_days(instance, keys, as_range=False)
    daily = snapshot(path=ops_env / "home" / "warehouse.duckdb")

    assert len(daily["events"]) > 1
    assert_same_tables(daily, backfilled, "7-day GraphQL backfill (PostgreSQL) vs day-by-day (DuckDB)")
