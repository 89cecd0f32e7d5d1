"""The one partitioning of the pipeline: UTC days."""

import os

import dagster as dg

# The first day the pipeline knows about. Google keeps 180 days of activity reports; set WATCH_START_DATE to the
# first day you want to backfill.
START_DATE = os.environ.get("WATCH_START_DATE", "2026-01-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone="UTC")
