"""Detection quality at the actor-day level on a generated organisation (labels never reach the pipeline).

    python bench/quality.py --seed 11 --people 300 --days 45            # through the CLI (watch-pipeline run)
    python bench/quality.py --seed 11 --no-pipeline                      # library mode: core functions on frames

Prints precision, recall (overall and per scenario), PR-AUC from the alert score, false positives per 1,000 active
user-days and the false positives on benign look-alike days by kind, for the pipeline's alerts, two naive baselines
(a country / ASN never seen before for the user) and the Busybody-style isolation forest, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from watch_pipeline.core.replay import load_events, replay  # noqa: E402

WARMUP_DAYS = 7  # naive baselines and the forest need some history; they are judged from this day on


# ----------------------------------------------------------------------------------------------------------------
# actor-day evaluation
# ----------------------------------------------------------------------------------------------------------------


def alert_actor_days(alerts: pd.DataFrame) -> pd.Series:
    """(actor, date) -> max score, counting each alert on every UTC day from first_seen to last_seen."""
    if alerts is None or alerts.empty:
        return pd.Series(dtype=float)
    a = alerts[alerts["actor"].astype(str) != "*"]
    if "suppressed" in a:
        a = a[~a["suppressed"].astype(str).str.lower().isin(["true", "1"])]
    out: dict[tuple[str, str], float] = {}
    for r in a.itertuples(index=False):
        first, last = pd.Timestamp(r.first_seen).normalize(), pd.Timestamp(r.last_seen).normalize()
        for d in pd.date_range(first, last, freq="D"):
            key = (str(r.actor), d.date().isoformat())
            out[key] = max(out.get(key, 0.0), float(r.score))
    return pd.Series(out, dtype=float)


def evaluate(name: str, predicted: pd.Series, labels: dict, active_days: set, since: str | None = None) -> dict:
    """Actor-day metrics of one method. ``predicted`` maps (actor, date) -> score (> 0 means alerted)."""
    from sklearn.metrics import average_precision_score

    attacks = {(a["actor"], a["date"]): a["scenario"] for a in labels["attacks"]}
    benign: dict[tuple, list] = {}
    for b in labels["benign"]:
        benign.setdefault((b["actor"], b["date"]), []).append(b["kind"])
    universe = set(active_days) | set(attacks)
    if since:
        universe = {k for k in universe if k[1] >= since}
        attacks = {k: v for k, v in attacks.items() if k[1] >= since}
    pred = {k: float(v) for k, v in predicted.items() if k in universe and v > 0}
    tp = [k for k in pred if k in attacks]
    fp = [k for k in pred if k not in attacks]
    per_scenario = {}
    for s in sorted(set(attacks.values())):
        days = [k for k, v in attacks.items() if v == s]
        per_scenario[s] = (sum(k in pred for k in days), len(days))
    keys = sorted(universe)
    y = np.array([k in attacks for k in keys], dtype=int)
    sc = np.array([pred.get(k, 0.0) for k in keys])
    fp_kinds = Counter(kind for k in fp for kind in benign.get(k, ["(none)"]))
    return {
        "method": name,
        "alerted": len(pred),
        "tp": len(tp),
        "fp": len(fp),
        "precision": len(tp) / len(pred) if pred else float("nan"),
        "recall": len(tp) / len(attacks) if attacks else float("nan"),
        "pr_auc": float(average_precision_score(y, sc)) if y.any() else float("nan"),
        "fp_per_1000": 1000.0 * len(fp) / max(1, len(universe)),
        "user_days": len(universe),
        "per_scenario": per_scenario,
        "fp_kinds": dict(fp_kinds.most_common()),
        "fp_days": sorted(fp)[:20],
    }


# ----------------------------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------------------------


def naive_new_value(events: pd.DataFrame, column: str) -> pd.Series:
    """Alert on an actor-day with a `column` value never seen before for the user (successful / info events)."""
    ev = events[(events["outcome"] != "failure") & events[column].notna() & (events[column].astype(str) != "")]
    ev = ev.sort_values("event_time", kind="stable")
    day = ev["event_time"].dt.date.astype(str)
    first = ev.assign(day=day).groupby(["actor", column], sort=False)["day"].min()
    user_first = ev.assign(day=day).groupby("actor")["day"].min()
    out = {}
    for (actor, _), d in first.items():
        if d > user_first[actor]:  # a user's very first day is all new: nobody would page on it
            out[(actor, d)] = 1.0
    return pd.Series(out, dtype=float)


def busybody(events: pd.DataFrame, cutoff: pd.Timestamp) -> pd.Series:
    from watch_pipeline.core.busybody import faithful_busybody_alerts

    alerts = faithful_busybody_alerts(events, cutoff)
    if alerts.empty:
        return pd.Series(dtype=float)
    alerts["day"] = pd.to_datetime(alerts["event_time"]).dt.date.astype(str)
    return alerts.groupby(["actor", "day"])["score"].max()


# ----------------------------------------------------------------------------------------------------------------
# running the pipeline
# ----------------------------------------------------------------------------------------------------------------


def run_cli(org, work: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``watch-pipeline run`` over the archive with a fresh WATCH_HOME / DAGSTER_HOME; (alerts CSV, events)."""
    home = work / "home"
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    alerts_csv = work / "alerts.csv"
    config = work / "settings.yaml"
    config.write_text(json.dumps({
        "user_domain": org.domain,
        "geoip": {"city_db": str(org.city_db), "asn_db": str(org.asn_db)},
        "archive": {"dir": str(org.archive_dir)},
    }, indent=2))  # JSON is YAML
    env = {**os.environ, "WATCH_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "watch_pipeline.cli", "run", "--archive", str(org.archive_dir),
           "--start", org.start.isoformat(), "--end", org.end.isoformat(), "--config", str(config),
           "--alerts-csv", str(alerts_csv)]
    subprocess.run(cmd, check=True, env=env)
    alerts = pd.read_csv(alerts_csv) if alerts_csv.exists() else pd.DataFrame()
    events = None
    try:
        import duckdb

        db = next(home.rglob("*.duckdb"))
        with duckdb.connect(str(db), read_only=True) as con:
            events = con.execute("SELECT * FROM events").df()
    except (StopIteration, Exception) as exc:  # the events table is only needed for the baselines
        print(f"(could not read the events table: {exc}; re-reading the archive)", file=sys.stderr)
    if events is None:
        events = load_events(org.archive_dir, org.city_db, org.asn_db, org.domain)
    return alerts, events


def run_library(org) -> tuple[pd.DataFrame, pd.DataFrame]:
    events = load_events(org.archive_dir, org.city_db, org.asn_db, org.domain)
    result = replay(events)
    return result.alerts, events


def fmt(m: dict) -> str:
    return (f"{m['method']:<22} {m['alerted']:>7} {m['tp']:>4} {m['fp']:>6} {m['precision']:>9.3f} {m['recall']:>7.3f} "
            f"{m['pr_auc']:>7.3f} {m['fp_per_1000']:>8.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--people", type=int, default=300)
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("--start", type=date.fromisoformat, default=date(2026, 10, 1))
    ap.add_argument("--no-pipeline", action="store_true", help="library mode: replay the core functions on frames")
    ap.add_argument("--no-busybody", action="store_true")
    ap.add_argument("--org-dir", type=Path, help="reuse / keep the generated organisation here")
    ap.add_argument("--json", type=Path, help="write the figures as JSON")
    args = ap.parse_args(argv)

    from watch_pipeline.demo.generator import generate_org

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        work = args.org_dir or Path(tmp)
        org = generate_org(work / "org", people=args.people, days=args.days, seed=args.seed, start=args.start)
        labels = json.loads(Path(org.labels_path).read_text())
        alerts, events = run_library(org) if args.no_pipeline else run_cli(org, work)
        events = events.copy()
        events["event_time"] = pd.to_datetime(events["event_time"])
        active = set(zip(events["actor"].astype(str), events["event_time"].dt.date.astype(str)))
        since = (pd.Timestamp(org.start) + pd.Timedelta(days=WARMUP_DAYS)).date().isoformat()
        results = [evaluate("pipeline", alert_actor_days(alerts), labels, active)]
        results.append(evaluate(f"pipeline (from {since})", alert_actor_days(alerts), labels, active, since))
        results.append(evaluate("naive: new country", naive_new_value(events, "geo_country"), labels, active, since))
        results.append(evaluate("naive: new ASN", naive_new_value(events, "asn"), labels, active, since))
        if not args.no_busybody:
            results.append(evaluate("busybody forest", busybody(events, pd.Timestamp(since)), labels, active, since))
    elapsed = time.perf_counter() - t0

    mode = "library" if args.no_pipeline else "cli"
    print(f"\nseed {args.seed}, {args.people} people x {args.days} days ({mode} mode, {elapsed:.0f} s); "
          f"{len(labels['attacks'])} attack actor-days, {len(active)} active user-days")
    print(f"{'method':<22} {'alerted':>7} {'tp':>4} {'fp':>6} {'precision':>9} {'recall':>7} {'pr_auc':>7} {'fp/1000':>8}")
    for m in results:
        print(fmt(m))
    main_m = results[0]
    print("\npipeline recall per scenario: " + ", ".join(f"{s} {a}/{b}" for s, (a, b) in main_m["per_scenario"].items()))
    print("pipeline false positives by benign look-alike kind: " + (json.dumps(main_m["fp_kinds"]) or "none"))
    if main_m["fp_days"]:
        print("pipeline false-positive actor-days (first 20): " + ", ".join(f"{a} {d}" for a, d in main_m["fp_days"]))
    naive_best = max(r["precision"] for r in results if r["method"].startswith("naive"))
    print(f"precision margin over the best naive baseline: {main_m['precision'] - naive_best:+.3f}")
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "mode": mode, "results": results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
