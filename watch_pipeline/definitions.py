"""The one dg.Definitions of watch-pipeline: assets, checks, resources, jobs, schedules and sensors."""

from __future__ import annotations

import dagster as dg

from watch_pipeline import assets as asset_modules
from watch_pipeline.jobs import ALL_JOBS
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource
from watch_pipeline.notify_jobs import NOTIFIER_JOBS
from watch_pipeline.schedules import ALL_SCHEDULES
from watch_pipeline.sensors import ALL_SENSORS

# Both resources read their locations from the environment at run time (WATCH_WAREHOUSE_URL / WATCH_HOME,
# WATCH_CONFIG), so no URL or password ever lands in run config or in the UI.
RESOURCES = {"warehouse": WarehouseResource(), "settings": SettingsResource()}

defs = dg.Definitions(
    assets=dg.load_assets_from_package_module(asset_modules),
    asset_checks=dg.load_asset_checks_from_package_module(asset_modules),
    resources=RESOURCES,
    jobs=[*ALL_JOBS, *NOTIFIER_JOBS],
    schedules=ALL_SCHEDULES,
    sensors=ALL_SENSORS,
    # One process per run: the DuckDB warehouse takes one writer at a time, and per-step processes would each pay
    # 5-8 s of imports. Scale-out (PostgreSQL warehouse) can override this per job in run config.
    executor=dg.in_process_executor,
)
