#!/usr/bin/env bash
# Set everything up and run the demo end to end: generate the demo organisation, materialize every asset over
# its date range through Dagster, write alerts.csv and print a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WATCH_HOME=${WATCH_HOME:-$PWD/.watch}
export DAGSTER_HOME=${DAGSTER_HOME:-$WATCH_HOME/dagster_home}
rm -rf "$WATCH_HOME/demo" "$WATCH_HOME/warehouse.duckdb" "$WATCH_HOME/warehouse.duckdb.wal"
exec .venv/bin/watch-pipeline demo "$@"
