"""End-to-end performance of the whole pipeline through Dagster, per asset step, plus a scaling run.

    PYTHONPATH=. python bench/end_to_end.py [--people 5000] [--days 60] [--seed 5] [--workdir DIR] [--keep]
    PYTHONPATH=. python bench/end_to_end.py --scaling [--scaling-people 250,500,1000] [--scaling-days 14]
    PYTHONPATH=. python bench/end_to_end.py --scaling --scaling-people 2500 --scaling-days 10,20,40 --png ...

One measurement: generate a demo organisation of N people x (D + 1) days with the project's generator (timed),
materialize the ``daily_pipeline`` job over the first D days as ONE in-process range run (BackfillPolicy.single_run,
exactly what ``watch-pipeline run`` does), then materialize the last day alone (the incremental case). Per asset
step it prints wall time (STEP_START .. STEP_SUCCESS from the run's event log), CPU time of the process over the
same interval (all threads, DuckDB's included), normalised events per wall second and the peak RSS sampled from
/proc/self/status while the step ran. Each measurement runs in a fresh subprocess, so peak RSS and CPU belong to
that run alone. The last line printed is ``SUMMARY ...``.

``--scaling`` repeats the measurement at 1x, 2x, 4x events (people varied, days fixed; or, with one people value and
several ``--scaling-days``, days varied), prints time per event per stage with the 4x/1x ratio and saves
``bench/results/scaling.png`` (time vs events per stage).

Targets (issue 10; 2 cores, 24 GB): 5,000 x 60 (~2.7 M events) <= 5 min end to end and <= 2 GB peak RSS; one more
daily partition <= 20 s; time per event flat within +-25 % from 1x to 4x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS_DIR = REPO / "bench" / "results"
TARGET_TOTAL_S = 300.0
TARGET_RSS_MB = 2048.0
TARGET_INCREMENTAL_S = 20.0
TARGET_FLATNESS = 0.25


# --------------------------------------------------------------------------------------------- sampling


_TICKS = os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int | str, field: str) -> int:
    """A kB field of /proc/<pid>/status (VmRSS, RssAnon, ...); 0 when the process is gone. Cheap, unlike smaps."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kb(pid: int | str = "self") -> int:
    """Resident set size (VmRSS) of a process, in kB."""
    return _status_kb(pid, "VmRSS")


def _descendants(pid: int) -> list[int]:
    """Live child processes (joblib/loky workers, ...) of ``pid``, recursively."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids = [int(x) for x in fh.read().split()]
        except OSError:
            continue
        for kid in kids:
            found.append(kid)
            found.extend(_descendants(kid))
    return found


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


class Sampler:
    """Samples every ``interval`` s in a background thread: wall time, RSS kB of this process, that plus the
    anonymous RSS of its live children (joblib workers fit the user models), CPU seconds of this process (all threads) and of
    its live children. Children's CPU is cumulative per live child; a child that exits takes its CPU with it, so
    the children's share is a lower bound when workers come and go."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int, int, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._pid = os.getpid()

    def _take(self) -> None:
        own = _rss_kb()
        kids = _descendants(self._pid)
        # Workers' anonymous memory is theirs alone; their libraries are file pages shared with the parent.
        total = own + sum(_status_kb(k, "RssAnon") for k in kids)
        kids_cpu = sum(_cpu_s(k) for k in kids)
        self.samples.append((time.time(), own, total, time.process_time(), kids_cpu))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._take()
            self._stop.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def window(self, t0: float, t1: float) -> dict:
        """Peak RSS (own, with children) in MB and CPU seconds (own, children) between wall times t0 and t1."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        before = [s for s in self.samples if s[0] <= t0]
        after = [s for s in self.samples if s[0] >= t1]
        edge = ([before[-1]] if before else []) + inside + ([after[0]] if after else [])
        if not edge:
            return {"peak_rss_mb": 0.0, "peak_total_mb": 0.0, "cpu_s": 0.0, "children_cpu_s": 0.0}
        pool = inside or edge
        kids = max(0.0, max(s[4] for s in edge) - edge[0][4])  # live workers' CPU gained over the window
        return {"peak_rss_mb": max(s[1] for s in pool) / 1024, "peak_total_mb": max(s[2] for s in pool) / 1024,
                "cpu_s": edge[-1][3] - edge[0][3], "children_cpu_s": kids}


# --------------------------------------------------------------------------------------------- one run


def _step_times(instance, run_id: str) -> list[dict]:
    """Per step (in start order): start, end and status, from STEP_START / STEP_SUCCESS / STEP_FAILURE."""
    steps: dict[str, dict] = {}
    for entry in instance.all_logs(run_id):
        ev = entry.dagster_event
        if ev is None or not ev.step_key:
            continue
        kind = ev.event_type_value
        if kind == "STEP_START":
            steps.setdefault(ev.step_key, {"step": ev.step_key})["start"] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            s = steps.setdefault(ev.step_key, {"step": ev.step_key})
            s["end"] = entry.timestamp
            s["status"] = "ok" if kind == "STEP_SUCCESS" else "FAILED"
    out = [s for s in steps.values() if "start" in s and "end" in s]
    return sorted(out, key=lambda s: s["start"])


def _timed_run(start, end, sampler: Sampler) -> dict:
    """Materialize [start, end] in process; wall, CPU, success and the per-step figures."""
    import dagster as dg

    from watch_pipeline.cli import materialize_range

    t0 = time.time()
    ok = materialize_range(start, end, log_level="WARNING")
    wall = time.time() - t0
    instance = dg.DagsterInstance.get()
    run = instance.get_runs(limit=1)[0]  # the run just made: the newest on this private instance
    steps = [{"step": s["step"], "status": s["status"], "wall_s": s["end"] - s["start"],
              **sampler.window(s["start"], s["end"])} for s in _step_times(instance, run.run_id)]
    return {"ok": ok, "wall_s": wall, **sampler.window(t0, t0 + wall), "steps": steps}


def _count_events(start, end) -> int:
    from watch_pipeline.warehouse import open_warehouse

    wh = open_warehouse()
    try:
        p = wh.param()
        n = wh.query_df(f'SELECT COUNT(*) AS n FROM "events" WHERE partition_date BETWEEN {p} AND {p}', [start, end])
        return int(n["n"].iloc[0])
    finally:
        wh.close()


def generate(people: int, days: int, seed: int, workdir: Path) -> dict:
    """Generate the org and write the settings file; returns its figures (timed in this process)."""
    import yaml

    from watch_pipeline.demo import generate_org

    workdir.mkdir(parents=True, exist_ok=True)
    t0, cpu0 = time.time(), time.process_time()
    org = generate_org(workdir / "org", people=people, days=days, seed=seed)
    wall, cpu = time.time() - t0, time.process_time() - cpu0
    config = workdir / "watch.yaml"
    config.write_text(yaml.safe_dump({"user_domain": org.domain,
                                      "geoip": {"city_db": str(org.city_db), "asn_db": str(org.asn_db)},
                                      "archive": {"dir": str(org.archive_dir)}}))
    return {"wall_s": wall, "cpu_s": cpu, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "raw_records": sum(v for k, v in org.counts.items() if k.startswith("records_")),
            "start": org.start.isoformat(), "end": org.end.isoformat(), "config": str(config)}


def run_pipeline(gen: dict, workdir: Path, incremental: bool) -> dict:
    """Run the range (all days but the last when ``incremental``) then the last day alone, in this process."""
    from datetime import date

    os.environ.update(WATCH_HOME=str(workdir / "home"), WATCH_CONFIG=gen["config"],
                      DAGSTER_HOME=str(workdir / "dagster_home"))
    for var in ("WATCH_WAREHOUSE_URL", "WATCH_ARCHIVE_DIR"):
        os.environ.pop(var, None)
    from watch_pipeline.cli import ensure_dagster_home

    ensure_dagster_home()
    t0 = time.time()
    import watch_pipeline.definitions  # noqa: F401  (loading the code is not part of a run: timed apart)

    import_s = time.time() - t0
    start, end = date.fromisoformat(gen["start"]), date.fromisoformat(gen["end"])
    range_end = end - timedelta(days=1) if incremental else end
    with Sampler() as sampler:
        rng = _timed_run(start, range_end, sampler)
        rng["events"] = _count_events(start, range_end)
        inc = None
        if incremental:
            inc = _timed_run(end, end, sampler)
            inc["events"] = _count_events(end, end)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"start": start.isoformat(), "range_end": range_end.isoformat(), "import_s": import_s, "machine": machine(),
            "code": code_version(),
            "range": rng, "incremental": inc,
            "process": {"maxrss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}}


def measure_in_subprocess(people: int, days: int, seed: int, workdir: Path, incremental: bool,
                          timeout: float | None) -> dict:
    """Generation, then the pipeline, each in a fresh interpreter, so peak RSS and CPU time are the stage's own."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONWARNINGS="ignore")  # Dagster's beta warnings would bury the figures
    gen_days = days + (1 if incremental else 0)
    base = [sys.executable, __file__, "--people", str(people), "--days", str(gen_days), "--seed", str(seed),
            "--workdir", str(workdir)]
    for stage in ("generate", "run"):
        extra = ["--no-incremental"] if not incremental else []
        try:
            proc = subprocess.run(base + ["--_stage", stage] + extra, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"\n{stage} at {people} people x {days} days passed the {timeout:.0f} s timeout; steps finished:")
            partial_report(workdir)
            raise SystemExit(f"timed out after {timeout:.0f} s") from None
        if proc.returncode != 0 or not (workdir / f"{stage}.json").exists():
            raise SystemExit(f"{stage} at {people} people x {days} days failed (exit {proc.returncode})")
    gen = json.loads((workdir / "generate.json").read_text())
    result = json.loads((workdir / "run.json").read_text())
    result.update(people=people, days=days, seed=seed, generate=gen)
    return result


def partial_report(workdir: Path) -> None:
    """Wall time of the steps that finished, from the event log of the worker's Dagster instance (after a timeout)."""
    if not (workdir / "dagster_home").is_dir():
        print("  (no run started)")
        return
    os.environ["DAGSTER_HOME"] = str(workdir / "dagster_home")
    import dagster as dg

    instance = dg.DagsterInstance.get()
    for run in reversed(instance.get_runs()):
        tags = run.tags
        print(f"  run {run.run_id[:8]} {tags.get('dagster/asset_partition_range_start')} .. "
              f"{tags.get('dagster/asset_partition_range_end')}: {run.status.value}")
        for s in _step_times(instance, run.run_id):
            print(f"    {s['step']:<26}{s['end'] - s['start']:>9.2f} s  {s['status']}")


# --------------------------------------------------------------------------------------------- reporting


def code_version() -> str:
    """The commit measured, with '+dirty' when the work tree has uncommitted changes (read-only git calls)."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    mem_gb = 0.0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"nproc={os.cpu_count()} mem={mem_gb:.1f}GB loadavg={load}"


def _cpu(x: dict) -> float:
    """CPU seconds of the pipeline process plus its live worker processes."""
    return x["cpu_s"] + x.get("children_cpu_s", 0.0)


def peak_rss_mb(r: dict) -> float:
    """Peak memory of the pipeline: the process's own max RSS, or the sampled process + workers peak if higher."""
    runs = [x for x in (r["range"], r["incremental"]) if x]
    return max([r["process"]["maxrss_mb"]] + [x["peak_total_mb"] for x in runs])


def print_run(title: str, run: dict) -> None:
    n = run["events"]
    print(f"\n{title}: {n:,} events, wall {run['wall_s']:.1f} s, cpu {_cpu(run):.1f} s "
          f"(workers {run['children_cpu_s']:.1f}), peak RSS {run['peak_rss_mb']:.0f} MB "
          f"(with workers {run['peak_total_mb']:.0f} MB), {'ok' if run['ok'] else 'RUN FAILED'}")
    print(f"  {'step':<26}{'wall s':>8}{'cpu s':>8}{'share':>7}{'events/s':>11}{'us/event':>10}"
          f"{'RSS MB':>8}{'+wkrs':>8}")
    for s in run["steps"]:
        rate = n / s["wall_s"] if s["wall_s"] > 0 else float("inf")
        per = 1e6 * s["wall_s"] / n if n else float("nan")
        flag = "" if s["status"] == "ok" else "  FAILED"
        print(f"  {s['step']:<26}{s['wall_s']:>8.2f}{_cpu(s):>8.2f}{s['wall_s'] / run['wall_s']:>7.0%}"
              f"{rate:>11,.0f}{per:>10.1f}{s['peak_rss_mb']:>8.0f}{s['peak_total_mb']:>8.0f}{flag}")
    overhead = run["wall_s"] - sum(s["wall_s"] for s in run["steps"])
    print(f"  {'(run outside the steps)':<26}{overhead:>8.2f}{'':>8}{overhead / run['wall_s']:>7.0%}")


def summary_line(r: dict) -> str:
    rng, inc = r["range"], r["incremental"]
    eps = rng["events"] / rng["wall_s"] if rng["wall_s"] else 0
    parts = [f"people={r['people']}", f"days={r['days']}", f"events={rng['events']}",
             f"generate_s={r['generate']['wall_s']:.1f}", f"total_s={rng['wall_s']:.1f}", f"cpu_s={_cpu(rng):.1f}",
             f"events_per_s={eps:.0f}", f"peak_rss_mb={peak_rss_mb(r):.0f}"]
    if inc:
        parts += [f"incremental_day_s={inc['wall_s']:.1f}", f"incremental_day_events={inc['events']}"]
    parts.append("ok=" + str(rng["ok"] and (inc is None or inc["ok"])).lower())
    return "SUMMARY " + " ".join(parts)


def targets(r: dict) -> None:
    """Targets are defined at 5,000 x 60; at other sizes they are shown for orientation only."""
    rng, inc = r["range"], r["incremental"]
    full = r["people"] >= 5000 and r["days"] >= 60
    note = "" if full else "  (targets are for 5,000 x 60; this run is smaller)"
    print(f"\ntargets{note}:")
    print(f"  end to end <= {TARGET_TOTAL_S:.0f} s: {rng['wall_s']:.1f} s -> {'met' if rng['wall_s'] <= TARGET_TOTAL_S else 'NOT met'}")
    rss = peak_rss_mb(r)
    print(f"  peak RSS <= {TARGET_RSS_MB:.0f} MB: {rss:.0f} MB -> {'met' if rss <= TARGET_RSS_MB else 'NOT met'}")
    if inc:
        print(f"  one more day <= {TARGET_INCREMENTAL_S:.0f} s: {inc['wall_s']:.1f} s -> "
              f"{'met' if inc['wall_s'] <= TARGET_INCREMENTAL_S else 'NOT met'}")


def scaling_report(results: list[dict], png: Path) -> None:
    """Time per event per stage at each size, the 4x/1x ratio, and the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted(results, key=lambda r: r["range"]["events"])
    steps = [s["step"] for s in results[0]["range"]["steps"]]
    events = [r["range"]["events"] for r in results]

    def wall(r: dict, step: str) -> float:
        return next((s["wall_s"] for s in r["range"]["steps"] if s["step"] == step), float("nan"))

    def cpu(r: dict, step: str) -> float:
        return next((_cpu(s) for s in r["range"]["steps"] if s["step"] == step), float("nan"))

    head = "".join(f"{str(r['people']) + 'x' + str(r['days']):>17}" for r in results)
    print(f"\nscaling: wall us/event per stage (cpu us/event in brackets); events {', '.join(f'{e:,}' for e in events)}")
    print(f"  {'step':<26}{head}{'last/first':>12}")
    rows = [(step, [wall(r, step) for r in results], [cpu(r, step) for r in results]) for step in steps]
    rows.append(("TOTAL", [r["range"]["wall_s"] for r in results], [_cpu(r["range"]) for r in results]))
    for step, walls, cpus in rows:
        per = [1e6 * w / e for w, e in zip(walls, events)]
        cells = "".join(f"{p:>9.1f} ({1e6 * c / e:>6.1f})" for p, c, e in zip(per, cpus, events))
        ratio = per[-1] / per[0] if per[0] else float("nan")
        # falling time per event = a fixed per-day / per-run cost being amortised; growing = worse than linear
        flag = "" if abs(ratio - 1) <= TARGET_FLATNESS else ("  <- GROWS" if ratio > 1 else "  <- falls")
        print(f"  {step:<26}{cells}{ratio:>12.2f}{flag}")
    total_ratio = (results[-1]["range"]["wall_s"] / events[-1]) / (results[0]["range"]["wall_s"] / events[0])
    print(f"  target: time per event flat within +-{TARGET_FLATNESS:.0%} from 1x to "
          f"{events[-1] / events[0]:.1f}x: total ratio {total_ratio:.2f} -> "
          f"{'met' if abs(total_ratio - 1) <= TARGET_FLATNESS else 'NOT met'}")

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(18, 5.5))
    for step in steps + ["TOTAL"]:
        if step == "TOTAL":
            walls, cpus = [r["range"]["wall_s"] for r in results], [_cpu(r["range"]) for r in results]
        else:
            walls, cpus = [wall(r, step) for r in results], [cpu(r, step) for r in results]
        style = dict(color="black", linewidth=2.5) if step == "TOTAL" else {}
        ax1.plot(events, walls, marker="o", label=step, **style)
        ax2.plot(events, [1e6 * w / e for w, e in zip(walls, events)], marker="o", label=step, **style)
        ax3.plot(events, [1e6 * c / e for c, e in zip(cpus, events)], marker="o", label=step, **style)
    ax1.set(xlabel="events in the range", ylabel="wall time (s)", title="Wall time per stage vs events",
            xscale="log", yscale="log")
    ax2.set(xlabel="events in the range", ylabel="wall time per event (µs)",
            title="Wall time per event (flat = linear)", xscale="log", yscale="log")
    ax3.set(xlabel="events in the range", ylabel="CPU time per event (µs)",
            title="CPU time per event (less sensitive to machine load)", xscale="log", yscale="log")
    for ax in (ax1, ax2, ax3):
        ax.grid(True, which="both", alpha=0.3)
    ax3.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    sizes = ", ".join(f"{r['people']}x{r['days']}" for r in results)
    fig.suptitle(f"watch-pipeline end to end ({results[-1].get('code', 'code ?')}), people x days = {sizes}; "
                 f"{results[-1].get('machine') or machine()}",
                 fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110, bbox_inches="tight")
    print(f"  plot: {png}")


# --------------------------------------------------------------------------------------------- main


def scaling_points(people: str, days: str) -> list[tuple[int, int]]:
    """(people, days) of each scaling point: one list varies while the other holds one value (or both pair up)."""
    p, d = [int(x) for x in people.split(",")], [int(x) for x in days.split(",")]
    if len(p) == 1:
        p = p * len(d)
    elif len(d) == 1:
        d = d * len(p)
    if len(p) != len(d):
        raise SystemExit(f"--scaling-people ({people}) and --scaling-days ({days}) must pair up, or one be a single value")
    return list(zip(p, d))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=5000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--workdir", type=Path, help="where orgs, warehouses and Dagster instances go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--scaling", action="store_true", help="run at 1x, 2x, 4x events instead")
    ap.add_argument("--scaling-people", default="250,500,1000", help="people per scaling point (comma separated)")
    ap.add_argument("--scaling-days", default="14", help="days per scaling point (comma separated; with one "
                    "people value the days vary: history grows, the organisation stays)")
    ap.add_argument("--png", type=Path, default=RESULTS_DIR / "scaling.png")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--from-json", type=Path, help="re-print and re-plot the figures a --scaling --json run saved")
    ap.add_argument("--timeout", type=float, help="seconds per measurement before giving up")
    ap.add_argument("--no-incremental", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_stage", choices=["generate", "run"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._stage == "generate":  # inside a subprocess: do one stage, write the JSON the parent reads
        result = generate(args.people, args.days, args.seed, args.workdir)
        (args.workdir / "generate.json").write_text(json.dumps(result, indent=1))
        return 0
    if args._stage == "run":
        gen = json.loads((args.workdir / "generate.json").read_text())
        result = run_pipeline(gen, args.workdir, not args.no_incremental)
        (args.workdir / "run.json").write_text(json.dumps(result, indent=1))
        return 0

    if args.from_json:
        scaling_report(json.loads(args.from_json.read_text()), args.png)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="watch-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}  code: {code_version()}", flush=True)
    try:
        if args.scaling:
            results = []
            for n, d in scaling_points(args.scaling_people, args.scaling_days):
                print(f"\n== scaling point: {n} people x {d} days", flush=True)
                r = measure_in_subprocess(n, d, args.seed, workdir / f"p{n}_d{d}", incremental=False,
                                          timeout=args.timeout)
                print(f"generated in {r['generate']['wall_s']:.1f} s (cpu {r['generate']['cpu_s']:.1f} s)")
                print_run(f"range {r['start']} .. {r['range_end']}", r["range"])
                results.append(r)
            scaling_report(results, args.png)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
            print(f"machine at the end: {machine()}")
            last = results[-1]
            points = ",".join(f"{r['people']}x{r['days']}" for r in results)
            print(summary_line(last).replace("SUMMARY", "SUMMARY scaling=" + points, 1))
            return 0 if all(r["range"]["ok"] for r in results) else 1

        print(f"\n== {args.people} people x {args.days} days (+1 day for the incremental case), seed {args.seed}",
              flush=True)
        r = measure_in_subprocess(args.people, args.days, args.seed, workdir / f"p{args.people}_d{args.days}",
                                  incremental=True, timeout=args.timeout)
        g = r["generate"]
        print(f"\ngenerate_org ({args.days + 1} days, own process): wall {g['wall_s']:.1f} s, cpu {g['cpu_s']:.1f} s, "
              f"{g['raw_records']:,} raw records, max RSS {g['maxrss_mb']:.0f} MB")
        print_run(f"range run {r['start']} .. {r['range_end']}", r["range"])
        print_run("one more day after the range (incremental)", r["incremental"])
        print(f"\npipeline process (both runs): max RSS {r['process']['maxrss_mb']:.0f} MB (own), "
              f"cpu {r['process']['cpu_s']:.1f} s (own + reaped children); loading the code took "
              f"{r['import_s']:.1f} s before the runs (not counted)")
        targets(r)
        if args.json:
            args.json.write_text(json.dumps(r, indent=1))
        print(f"machine at the end: {machine()}")
        print(summary_line(r))
        return 0 if r["range"]["ok"] and r["incremental"]["ok"] else 1
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
