"""Fixtures for the operations tests: a real PostgreSQL 15 server, free ports, and a PG-backed DAGSTER_HOME.

The server runs in a temp dir on a free loopback port with trust auth and is stopped at the end of the session.
`initdb` refuses to run as root, so as root (CI) the server runs as the `postgres` system user (created when the
Debian package did not create it). Without the binaries the tests that need it skip with the reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ops.ops_support import free_port, write_pg_dagster_yaml

PG_BIN_DIRS = ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"]
PG_USER = "watch"


def _pg_bin() -> Path | None:
    for d in PG_BIN_DIRS:
        if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists():
            return Path(d)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _runas_prefix() -> tuple[list[str], str | None]:
    """Command prefix to run the server binaries as a non-root user (root only), and that user's name."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True, capture_output=True)
    return ["runuser", "-u", "postgres", "--"], "postgres"


@dataclass
class PostgresServer:
    """A running throwaway PostgreSQL server; `create_database` hands out fresh, empty databases."""

    bin_dir: Path
    data_dir: Path
    port: int
    prefix: list[str]

    def url(self, database: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "db") -> str:
        """Create an empty database and return its URL."""
        import psycopg2

        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        con = psycopg2.connect(self.url("postgres"))
        con.autocommit = True
        try:
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on 127.0.0.1:<free port> for the whole session (skips without the binaries)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's postgresql package")
    try:
        prefix, user = _runas_prefix()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot get a non-root user to run PostgreSQL as: {exc}")
    # Not under pytest's tmp dir: that one is 0700 root, and the server may run as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="watch-pg-"))
    data = root / "data"
    if user:
        shutil.chown(root, user)
    port = free_port()
    run = lambda *cmd: subprocess.run([*prefix, *map(str, cmd)], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(bin_dir / "initdb", "-D", data, "--username", PG_USER, "--auth", "trust", "--encoding", "UTF8",
            "--locale", "C", "--no-sync")
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off " \
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        run(bin_dir / "pg_ctl", "-D", data, "-l", root / "server.log", "-o", opts, "-w", "-t", "60", "start")
    except subprocess.CalledProcessError as exc:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr}\n{log}")
    server = PostgresServer(bin_dir=bin_dir, data_dir=data, port=port, prefix=prefix)
    try:
        yield server
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def pg_dagster_home(tmp_path, postgres_server) -> Path:
    """A DAGSTER_HOME whose instance storage is a fresh PostgreSQL database."""
    home = tmp_path / "dagster_home"
    write_pg_dagster_yaml(home, postgres_server.create_database("dagster"))
    return home


@pytest.fixture(scope="session")
def ops_org(tmp_path_factory):
    """A demo organisation small enough for whole-graph runs in servers (12 people x 8 days, with attacks)."""
    from watch_pipeline.demo import generate_org

    return generate_org(tmp_path_factory.mktemp("ops_org"), people=12, days=8, seed=5)


@pytest.fixture()
def ops_env(tmp_path, monkeypatch, ops_org) -> Path:
    """WATCH_HOME and WATCH_CONFIG over `ops_org` (DuckDB warehouse unless a test sets WATCH_WAREHOUSE_URL)."""
    from tests.ops.ops_support import write_watch_config

    monkeypatch.setenv("WATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WATCH_CONFIG", str(write_watch_config(tmp_path / "watch.yaml", ops_org)))
    monkeypatch.delenv("WATCH_WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("WATCH_ARCHIVE_DIR", raising=False)
    return tmp_path
