"""The command line: a thin wrapper over Dagster that runs the whole graph over a date range."""

import pandas as pd
import pytest

from watch_pipeline.cli import main
from watch_pipeline.core.schema import ALERT_CSV_COLUMNS


@pytest.fixture()
def cli_env(pipeline_env, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(pipeline_env / "dagster_home"))
    return pipeline_env


def test_run_whole_graph_writes_alerts_csv(cli_env, small_org, capsys):
    out = cli_env / "alerts.csv"
    rc = main(["run", "--archive", str(small_org.archive_dir), "--start", small_org.start.isoformat(),
               "--end", small_org.end.isoformat(), "--alerts-csv", str(out), "--log-level", "WARNING"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    alerts = pd.read_csv(out)
    assert list(alerts.columns[: len(ALERT_CSV_COLUMNS)]) == list(ALERT_CSV_COLUMNS)
    assert len(alerts) > 0
    assert alerts["alert_id"].is_unique
    assert alerts["score"].between(0, 1).all()
    assert "events:" in printed and "alerts:" in printed and "quarantined:" in printed
    # the same range again: same alerts, same ids
    rc = main(["run", "--archive", str(small_org.archive_dir), "--start", small_org.start.isoformat(),
               "--end", small_org.end.isoformat(), "--alerts-csv", str(out), "--log-level", "WARNING"])
    assert rc == 0
    again = pd.read_csv(out)
    assert sorted(again["alert_id"]) == sorted(alerts["alert_id"])


def test_clear_errors(cli_env, tmp_path, capsys):
    assert main(["run", "--archive", str(tmp_path / "nope"), "--start", "2026-10-01", "--end", "2026-10-02"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("geoip:\n  citydb: x.mmdb\n")
    assert main(["run", "--archive", str(tmp_path), "--start", "2026-10-01", "--end", "2026-10-02", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "geoip.citydb" in err and "unknown key" in err
    with pytest.raises(SystemExit):
        main(["run", "--archive", str(tmp_path), "--start", "2026-13-01", "--end", "2026-10-02"])


def test_missing_geoip_file_names_the_setting(cli_env, small_org, tmp_path, capsys):
    cfg = tmp_path / "w.yaml"
    cfg.write_text(f"geoip:\n  city_db: {tmp_path / 'missing.mmdb'}\n")
    rc = main(["run", "--archive", str(small_org.archive_dir), "--start", small_org.start.isoformat(),
               "--end", small_org.start.isoformat(), "--config", str(cfg), "--alerts-csv", str(tmp_path / "a.csv"),
               "--log-level", "ERROR"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "geoip.city_db" in captured.out + captured.err
