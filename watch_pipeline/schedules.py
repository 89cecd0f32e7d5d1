"""Schedules: yesterday's full pipeline every day (after Google's lag has settled)."""

import dagster as dg

from watch_pipeline.jobs import daily_pipeline_job

# Runs at 04:00 UTC for the previous UTC day: Google's Reports API delivers most events within 3 hours.
daily_pipeline_schedule = dg.build_schedule_from_partitioned_job(
    daily_pipeline_job,
    hour_of_day=4,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

ALL_SCHEDULES = [daily_pipeline_schedule]
