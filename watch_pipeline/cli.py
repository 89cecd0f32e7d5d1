"""Command line for people outside the UI: a thin wrapper over Dagster, not a second pipeline.

    watch-pipeline run --archive DIR --start YYYY-MM-DD --end YYYY-MM-DD [--config FILE] [--alerts-csv FILE]
    watch-pipeline demo [--people 200 --days 30 --seed 7]

`run` materializes the whole asset graph over the date range on the configured Dagster instance ($DAGSTER_HOME,
else .watch/dagster_home) as one run per asset step (BackfillPolicy.single_run), then writes the alerts CSV.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
import yaml

from watch_pipeline.core.schema import ALERT_CSV_COLUMNS


def _home() -> Path:
    return Path(os.environ.get("WATCH_HOME", ".watch")).resolve()


def ensure_dagster_home() -> Path:
    """$DAGSTER_HOME, or .watch/dagster_home with an embedded SQLite instance."""
    home = os.environ.get("DAGSTER_HOME")
    path = Path(home) if home else _home() / "dagster_home"
    path.mkdir(parents=True, exist_ok=True)
    cfg = path / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(path.resolve())
    return path


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def materialize_range(start: date, end: date, log_level: str = "INFO") -> bool:
    """Run the daily_pipeline job over [start, end] as a single run, in process, on the configured instance."""
    import dagster as dg

    from watch_pipeline.definitions import defs

    if end < start:
        raise SystemExit(f"--end {end} is before --start {start}")
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("daily_pipeline")
    result = job.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": start.isoformat(),
            "dagster/asset_partition_range_end": end.isoformat(),
            "watch/origin": "cli",
        },
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        raise_on_error=False,
    )
    return result.success


def write_alerts_csv(path: Path, start: date, end: date) -> pd.DataFrame:
    from watch_pipeline.warehouse import open_warehouse

    wh = open_warehouse()
    try:
        p = wh.param()
        alerts = wh.read_table("alerts", f"partition_date BETWEEN {p} AND {p}", [start, end])
        alerts = alerts[~alerts["suppressed"].fillna(False).astype(bool)] if len(alerts) else alerts
        alerts = alerts.sort_values(["score", "first_seen"], ascending=[False, True]) if len(alerts) else alerts
        out = alerts.reindex(columns=list(ALERT_CSV_COLUMNS) + ["kinds", "model_state"])
        path.parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(path, index=False)
        return alerts
    finally:
        wh.close()


def summary(start: date, end: date, alerts: pd.DataFrame) -> str:
    from watch_pipeline.warehouse import open_warehouse

    wh = open_warehouse()
    try:
        p = wh.param()
        ev = wh.query_df(f'SELECT COUNT(*) AS n FROM "events" WHERE partition_date BETWEEN {p} AND {p}', [start, end])
        q = wh.query_df(f'SELECT COUNT(*) AS n FROM "quarantine" WHERE partition_date BETWEEN {p} AND {p} OR partition_date IS NULL', [start, end]) if wh.table_exists("quarantine") else pd.DataFrame({"n": [0]})
    finally:
        wh.close()
    lines = [
        f"days:        {start} .. {end} ({(end - start).days + 1})",
        f"events:      {int(ev['n'].iloc[0]):,}",
        f"quarantined: {int(q['n'].iloc[0]):,}",
        f"alerts:      {len(alerts):,}",
    ]
    if len(alerts):
        kinds: dict[str, int] = {}
        for ks in alerts["kinds"].fillna(""):
            for k in filter(None, str(ks).split(",")):
                kinds[k] = kinds.get(k, 0) + 1
        sev = alerts["severity"].value_counts().to_dict()
        lines.append("  by severity: " + ", ".join(f"{k} {sev[k]}" for k in ("critical", "high", "medium", "low") if k in sev))
        lines.append("  by kind:     " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    if args.config:
        os.environ["WATCH_CONFIG"] = str(Path(args.config).resolve())
    if args.archive:
        if not Path(args.archive).is_dir():
            print(f"error: --archive {args.archive} is not a directory", file=sys.stderr)
            return 2
        os.environ["WATCH_ARCHIVE_DIR"] = str(Path(args.archive).resolve())
    from watch_pipeline.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not settings.archive.dir and not (settings.google.enabled or settings.slack_audit.enabled or settings.slack_access.enabled):
        print("error: nothing to ingest: pass --archive DIR or enable a live poller in the settings file", file=sys.stderr)
        return 2
    home = ensure_dagster_home()
    print(f"watch-pipeline: {args.start} .. {args.end} on the Dagster instance at {home}", flush=True)
    t0 = time.time()
    ok = materialize_range(args.start, args.end, log_level=args.log_level)
    if not ok:
        print("error: the pipeline run failed; see the log above (or the run in the Dagster UI)", file=sys.stderr)
        return 1
    alerts = write_alerts_csv(Path(args.alerts_csv), args.start, args.end)
    print(f"\ndone in {time.time() - t0:.0f} s; alerts written to {args.alerts_csv}\n")
    print(summary(args.start, args.end, alerts))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from watch_pipeline.demo import generate_org

    home = _home()
    out = home / "demo"
    t0 = time.time()
    print(f"generating the demo organisation ({args.people} people x {args.days} days, seed {args.seed}) in {out}", flush=True)
    org = generate_org(out, people=args.people, days=args.days, seed=args.seed)
    print(f"  generated in {time.time() - t0:.1f} s: {org.archive_dir}", flush=True)
    config = out / "watch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "user_domain": org.domain,
                "geoip": {"city_db": str(org.city_db), "asn_db": str(org.asn_db)},
                "archive": {"dir": str(org.archive_dir)},
                "notifiers": {"csv": {"enabled": True, "path": str(home / "notified-alerts.csv")}},
            },
            sort_keys=False,
        )
    )
    ns = argparse.Namespace(
        archive=str(org.archive_dir), start=org.start, end=org.end, config=str(config),
        alerts_csv=args.alerts_csv, log_level=args.log_level,
    )
    rc = cmd_run(ns)
    if rc == 0:
        print(
            "\nopen the UI:\n"
            f"  DAGSTER_HOME={os.environ['DAGSTER_HOME']} WATCH_CONFIG={config} WATCH_HOME={home} "
            f"{Path(sys.executable).parent / 'dagster'} dev -w workspace.yaml\n"
            f"ground truth of the demo (never read by the pipeline): {org.labels_path}"
        )
    return rc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="watch-pipeline", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="ingest an archive and materialize the whole graph over a date range")
    run.add_argument("--archive", help="directory of archived API responses")
    run.add_argument("--start", type=_date, required=True)
    run.add_argument("--end", type=_date, required=True)
    run.add_argument("--config", help="settings YAML (default: $WATCH_CONFIG)")
    run.add_argument("--alerts-csv", default="alerts.csv")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="generate the demo organisation and run the pipeline over it")
    demo.add_argument("--people", type=int, default=200)
    demo.add_argument("--days", type=int, default=30)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--alerts-csv", default="alerts.csv")
    demo.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
