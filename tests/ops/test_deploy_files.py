"""The files under deploy/: the instance config works against a real PostgreSQL; compose and workspace agree."""

from __future__ import annotations

import shutil
from urllib.parse import urlparse

import dagster as dg
import yaml

from tests.ops.ops_support import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"


def test_deploy_dagster_yaml_runs_on_postgres(postgres_server, tmp_path, monkeypatch):
    url = urlparse(postgres_server.create_database("dagster"))
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    for name, value in {"DAGSTER_PG_USERNAME": url.username, "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_HOST": url.hostname,
                        "DAGSTER_PG_DB": url.path.lstrip("/")}.items():
        monkeypatch.setenv(name, value)
    # The file says port 5432 (the compose service); here the test server's port is patched in.
    text = (home / "dagster.yaml").read_text().replace("port: 5432", f"port: {url.port}")
    (home / "dagster.yaml").write_text(text)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.get_concurrency_config().run_queue_config
        assert limits.max_concurrent_runs == 4
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits.tag_concurrency_limits
        # Storage really works: a run written through the instance is read back from PostgreSQL.
        run = instance.create_run_for_job(dg.GraphDefinition(name="noop", node_defs=[]).to_job())
        assert instance.get_run_by_id(run.run_id) is not None


def test_compose_services_and_workspace_agree():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "code", "webserver", "daemon"}
    assert services["postgres"]["image"] == "postgres:15"
    # One image for code server, webserver and daemon: they must run the same Dagster and pipeline version.
    assert len({services[s]["image"] for s in ("code", "webserver", "daemon")}) == 1
    for s in ("code", "webserver", "daemon"):
        env = services[s]["environment"]
        assert env["DAGSTER_PG_HOST"] == "postgres" and env["WATCH_WAREHOUSE_URL"].endswith("@postgres:5432/watch")
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    assert services["webserver"]["command"][0] == "dagster-webserver"

    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    grpc = workspace["load_from"][0]["grpc_server"]
    assert grpc["host"] == "code"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f'"-p", "{grpc["port"]}"' in dockerfile and "watch_pipeline.definitions" in dockerfile
    assert "CREATE DATABASE watch" in (DEPLOY / "initdb" / "10-watch-db.sql").read_text()
