"""``python -m watch_pipeline.demo OUT_DIR [--people N] [--days N] [--seed N] [--start YYYY-MM-DD] [--no-attacks]``"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

from watch_pipeline.demo.generator import generate_org


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m watch_pipeline.demo",
                                 description="Write a synthetic organisation's audit-log archive, GeoIP databases "
                                             "and ground-truth labels.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--people", type=int, default=200)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--start", type=date.fromisoformat, default=date(2026, 10, 1), help="first day, YYYY-MM-DD")
    ap.add_argument("--no-attacks", action="store_true", help="benign life only")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    org = generate_org(args.out_dir, people=args.people, days=args.days, seed=args.seed, start=args.start,
                       attacks=not args.no_attacks)
    c = org.counts
    print(f"demo org {org.domain}: {org.people} people, {org.start} .. {org.end}, {c.get('events', 0)} events "
          f"in {c.get('files', 0)} files, {c.get('attack_actor_days', 0)} attack actor-days, "
          f"{c.get('benign_lookalike_days', 0)} benign look-alike days ({time.perf_counter() - t:.1f} s)")
    print(f"archive: {org.archive_dir}\ncity db: {org.city_db}\nasn db:  {org.asn_db}\nlabels:  {org.labels_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
