"""Helpers of the operations tests: environments, in-process runs, Dagster servers and table snapshots."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]



# Tables the daily graph writes, and the columns that differ from run to run by design (wall-clock times, pickles).
PIPELINE_TABLES = ["raw_google", "raw_slack_audit", "raw_slack_access", "events", "quarantine", "identities",
                   "baseline_daily", "peaks", "profile_state", "profile_scores", "user_models", "forest_scores",
                   "event_scores", "alerts", "access_state"]
VOLATILE_COLUMNS = {"ingest_time", "quarantined_at", "polled_at", "blob"}


def write_watch_config(path: Path, org) -> Path:
    """A watch.yaml reading the demo org's archive with its GeoIP databases."""
    import yaml

    path.write_text(yaml.safe_dump({
        "user_domain": org.domain,
        "geoip": {"city_db": str(org.city_db), "asn_db": str(org.asn_db)},
        "archive": {"dir": str(org.archive_dir)},
    }))
    return path


def day_keys(org, n: int) -> list[str]:
    """The first `n` partition keys of the demo org."""
    return [(pd.Timestamp(org.start) + pd.Timedelta(days=i)).date().isoformat() for i in range(n)]


def all_assets():
    import dagster as dg

    from watch_pipeline.definitions import defs

    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)] + list(defs.asset_checks or [])


def materialize_days(instance, keys: list[str], as_range: bool) -> None:
    """The whole graph over `keys`: one range run, or one run per day in order. Fails the test on a failed run."""
    import dagster as dg

    from watch_pipeline.definitions import defs

    batches = [{"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}] \
        if as_range else [{"dagster/asset_partition_range_start": k, "dagster/asset_partition_range_end": k} for k in keys]
    for tags in batches:
        result = dg.materialize(all_assets(), instance=instance, resources=defs.resources, tags=tags,
                                raise_on_error=False)
        failures = [e for e in result.all_events if e.is_step_failure]
        assert result.success, f"run {tags} failed: " + "\n".join(str(e.event_specific_data.error) for e in failures)


def _plain(value):
    """One cell as a comparable plain value: floats rounded, times as ISO text, every null as None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return pd.Timestamp(value).isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return value


def table_snapshot(warehouse, table: str) -> list[tuple]:
    """The rows of `table` (volatile columns dropped) as sorted tuples of plain values, engine-independent."""
    df = warehouse.read_table(table)
    cols = sorted(c for c in df.columns if c not in VOLATILE_COLUMNS)
    rows = [tuple(_plain(v) for v in row) for row in df[cols].astype(object).itertuples(index=False, name=None)]
    return [tuple(cols)] + sorted(rows, key=repr)


def snapshot(url: str | None = None, path: Path | None = None, tables=PIPELINE_TABLES) -> dict[str, list[tuple]]:
    """Snapshots of the pipeline's tables in one warehouse (PostgreSQL `url`, or the DuckDB file `path`)."""
    from watch_pipeline.warehouse import DuckDBWarehouse, PostgresWarehouse

    # Not open_warehouse: it prefers $WATCH_WAREHOUSE_URL over the path, and tests compare both engines.
    assert (url is None) != (path is None), "give exactly one of url and path"
    wh = PostgresWarehouse(url) if url else DuckDBWarehouse(path)
    try:
        return {t: table_snapshot(wh, t) for t in tables}
    finally:
        wh.close()


def assert_same_tables(left: dict, right: dict, what: str) -> None:
    for table in left:
        assert left[table][0] == right[table][0], f"{what}: columns of {table} differ"
        assert len(left[table]) == len(right[table]), f"{what}: {table} has {len(left[table]) - 1} vs {len(right[table]) - 1} rows"
        assert left[table] == right[table], f"{what}: rows of {table} differ\n" + first_differences(left[table], right[table])


# ---------------------------------------------------------------------------------------------------------------
# Dagster instances and servers
# ---------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pg_dagster_yaml(dagster_home: Path, url: str, max_concurrent_runs: int = 1) -> Path:
    """A dagster.yaml keeping runs, events and schedules in PostgreSQL (`url`), like deploy/dagster.yaml."""
    import yaml
    from urllib.parse import urlparse

    u = urlparse(url)
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "username": u.username,
                    "password": u.password or "",
                    "hostname": u.hostname,
                    "port": u.port,
                    "db_name": u.path.lstrip("/"),
                    "scheme": "postgresql+psycopg2",
                }
            }
        },
        # One run at a time: the run queue serialises writers (needed by DuckDB, harmless for PostgreSQL).
        "concurrency": {"runs": {"max_concurrent_runs": max_concurrent_runs}},
        "telemetry": {"enabled": False},
    }
    path = dagster_home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------------------------
# Dagster servers as subprocesses
# ---------------------------------------------------------------------------------------------------------------


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCH_", "DAGSTER_"))}
    env.update({"PYTHONPATH": str(REPO_ROOT), "DAGSTER_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def wait_for_webserver(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until the webserver answers and the code location is loaded (fails with the log when it dies or times out)."""
    deadline = time.monotonic() + timeout
    query = '{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus ' \
            'locationOrLoadError { __typename } } } } }'
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dagster exited with {proc.returncode}:\n{log.read_text()[-5000:]}")
        try:
            body = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=5).json()
            entries = body["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                kinds = [e["locationOrLoadError"]["__typename"] for e in entries]
                assert kinds == ["RepositoryLocation"] * len(kinds), f"code location failed to load: {kinds}\n{log.read_text()[-5000:]}"
                return
        except (requests.RequestException, KeyError, TypeError, ValueError):
            pass
        time.sleep(1)
    raise AssertionError(f"dagster did not come up on port {port} in {timeout}s:\n{log.read_text()[-5000:]}")


def _descendants(pid: int) -> list[int]:
    """Ids of the processes below `pid` (Linux /proc), children first found by parent id."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group (dagster dev forwards it to webserver, daemon and code server), then SIGKILL.

    Processes that left the group (a code server in its own session) are found by parent id beforehand and killed
    by id when they outlive the group.
    """
    if proc.poll() is not None:
        return
    below = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    time.sleep(1)
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@contextmanager
def dagster_server(args: list[str], port: int, env: dict[str, str], cwd: Path, log: Path):
    """Start `python -m dagster ...` (or any module) in its own process group, wait for it, stop it afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for_webserver(port, proc, log)
        yield proc
    finally:
        stop_process_group(proc)


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    resp = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables or {}},
                         timeout=60)
    resp.raise_for_status()
    body = resp.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def first_differences(left: list[tuple], right: list[tuple], n: int = 3) -> str:
    """The first rows only one side has (for failure messages)."""
    a, b = set(left[1:]), set(right[1:])
    return f"columns {left[0]}\nonly left: {sorted(a - b, key=repr)[:n]}\nonly right: {sorted(b - a, key=repr)[:n]}"
