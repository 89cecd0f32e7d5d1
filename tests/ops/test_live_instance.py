"""A live Dagster (`dagster dev`: webserver + daemon + code server) over a PostgreSQL-backed instance and warehouse.

One server for the module: an 8-day backfill launched through GraphQL `launchPartitionBackfill`, then the asset graph
in headless Chromium. The server runs in its own process group and is stopped with it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from tests.ops.ops_support import (
    REPO_ROOT,
    assert_same_tables,
    dagster_server,
    free_port,
    day_keys,
    graphql,
    materialize_days,
    snapshot,
    subprocess_env,
    write_pg_dagster_yaml,
    write_watch_config,
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


@dataclass
class LiveDagster:
    port: int
    dagster_home: Path
    warehouse_url: str
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def live_dagster(tmp_path_factory, ops_org, postgres_server):
    """`dagster dev -w workspace.yaml -h 127.0.0.1 -p <free port>` with runs, events and the warehouse in PostgreSQL."""
    root = tmp_path_factory.mktemp("live")
    home = root / "dagster_home"
    write_pg_dagster_yaml(home, postgres_server.create_database("dagster"))
    live = LiveDagster(port=free_port(), dagster_home=home, warehouse_url=postgres_server.create_database("warehouse"),
                       log=root / "dagster_dev.log")
    env = subprocess_env(WATCH_HOME=str(root / "watch_home"), WATCH_CONFIG=str(write_watch_config(root / "watch.yaml", ops_org)),
                         WATCH_WAREHOUSE_URL=live.warehouse_url, DAGSTER_HOME=str(home))
    args = ["dagster", "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(live.port)]
    with dagster_server(args, live.port, env, cwd=root, log=live.log):
        # The UI greets a first visitor on 127.0.0.1 with a newsletter dialog (and an iframe from dagster.io) over
        # every page; mark it seen, as clicking "Skip" would.
        graphql(live.port, "mutation { setNuxSeen }")
        yield live


def _asset_keys() -> list[dict]:
    from watch_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    return [{"path": list(k.path)} for k in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())]


@pytest.mark.slow
def test_graphql_backfill_on_postgres_equals_day_by_day(live_dagster, ops_env, ops_org, monkeypatch):
    keys = day_keys(ops_org, 8)  # all 8 days: the first week is cold start, alerts come on day 8
    launched = graphql(live_dagster.port, LAUNCH, {"params": {
        "partitionNames": keys,
        "assetSelection": _asset_keys(),
        "title": "ops test: 8-day backfill",
    }})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    # While the daemon works: the same seven days, one run per day, in this process on a fresh DuckDB warehouse.
    with dg.instance_for_test() as instance:
        materialize_days(instance, keys, as_range=False)
    daily = snapshot(path=ops_env / "home" / "warehouse.duckdb")

    deadline, status = time.monotonic() + 300, None
    while time.monotonic() < deadline:
        status = graphql(live_dagster.port, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if status.get("status") in TERMINAL:
            break
        time.sleep(2)
    assert status and status.get("status") in {"COMPLETED", "COMPLETED_SUCCESS"}, \
        f"{status}\n{live_dagster.log.read_text()[-5000:]}"
    assert status["numPartitions"] == 8

    monkeypatch.setenv("DAGSTER_HOME", str(live_dagster.dagster_home))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
        for key in _asset_keys():
            assert instance.get_materialized_partitions(dg.AssetKey(key["path"])) == set(keys), key
    backfilled = snapshot(url=live_dagster.warehouse_url)

    assert len(daily["events"]) > 1 and len(daily["alerts"]) > 1, "the 8 days should raise alerts"
    assert_same_tables(daily, backfilled, "8-day GraphQL backfill (PostgreSQL) vs day-by-day (DuckDB)")


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _local_only(route) -> None:
    """Requests to anything but the local webserver are aborted: tests talk to 127.0.0.1 only."""
    if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
        route.continue_()
    else:
        route.abort()


def _groups() -> dict[str, list[str]]:
    from watch_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    out: dict[str, list[str]] = {}
    for key in graph.get_all_asset_keys():
        out.setdefault(graph.get(key).group_name, []).append(key.to_user_string())
    return out


@pytest.mark.slow
def test_asset_graph_in_a_browser(live_dagster, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not executable:
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it as root)")
    groups = _groups()
    shots = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.route("**/*", _local_only)
            page = context.new_page()
            # The catalog lists every asset by name, with its description, group and kinds.
            page.goto(f"{live_dagster.base_url}/assets", wait_until="domcontentloaded")
            for name in sorted(n for names in groups.values() for n in names):
                page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=60_000)
            shots.append(tmp_path / "assets_catalog.png")
            page.screenshot(path=str(shots[-1]), full_page=True)

            # The global lineage shows one node per group (collapsed); each group's lineage shows its assets.
            page.goto(f"{live_dagster.base_url}/asset-groups", wait_until="domcontentloaded")
            for group in groups:
                page.get_by_text(group, exact=True).first.wait_for(state="visible", timeout=60_000)
            shots.append(tmp_path / "global_lineage.png")
            page.screenshot(path=str(shots[-1]))
            for group, names in sorted(groups.items()):
                page.goto(f"{live_dagster.base_url}/locations/watch_pipeline/asset-groups/{group}/lineage",
                          wait_until="domcontentloaded")
                for name in names:
                    page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=30_000)
                shots.append(tmp_path / f"lineage_{group}.png")
                page.screenshot(path=str(shots[-1]))

            # One asset as a person opens it: description, metadata of the last materialization, checks.
            for name in ("peaks", "global_baseline", "alerts"):
                page.goto(f"{live_dagster.base_url}/assets/{name}", wait_until="domcontentloaded")
                page.get_by_text("Description", exact=True).first.wait_for(state="visible", timeout=30_000)
                page.wait_for_timeout(2_000)
                shots.append(tmp_path / f"asset_{name}.png")
                page.screenshot(path=str(shots[-1]), full_page=True)
        finally:
            browser.close()
    for shot in shots:
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
