"""Late data: rows landed after their day was built trigger one range rebuild, and only once."""

import dagster as dg
import pandas as pd

from watch_pipeline.core.late import late_days, rerun_range
from watch_pipeline.definitions import defs
from watch_pipeline.resources.warehouse import WarehouseResource
from watch_pipeline.sensors import late_data_sensor
from watch_pipeline.warehouse import open_warehouse

INGEST = dg.AssetSelection.assets("raw_google", "raw_slack_audit", "raw_slack_access", "events")


def test_late_days_and_rerun_range():
    landed = pd.DataFrame({
        "partition_date": pd.to_datetime(["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"]),
        "last_ingest": pd.to_datetime(["2026-10-02 03:00", "2026-10-03 09:00", "2026-10-04 03:00", "2026-10-05 01:00"]),
    })
    built = {  # day 4 was never built: the schedule will build it, it is not late
        "2026-10-01": pd.Timestamp("2026-10-02 04:10", tz="UTC"),  # built after its last row: fine
        "2026-10-02": pd.Timestamp("2026-10-03 04:10", tz="UTC"),  # a straggler landed at 09:00: late
        "2026-10-03": pd.Timestamp("2026-10-04 04:10", tz="UTC"),
    }
    assert late_days(landed, built) == ["2026-10-02"]
    # cumulative state flows forward: from the late day through the newest built day
    assert rerun_range(["2026-10-02"], sorted(built)) == ("2026-10-02", "2026-10-03")
    assert rerun_range([], sorted(built)) is None


def _run(instance, tags):
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    result = dg.materialize(assets, instance=instance, resources=defs.resources, selection=INGEST, tags=tags)
    assert result.success


def _tick(instance):
    with dg.build_sensor_context(instance=instance, resources={"warehouse": WarehouseResource()}) as ctx:
        return late_data_sensor(ctx)


def test_sensor_requests_one_rebuild_for_a_late_row(pipeline_env, small_org):
    days = [(small_org.start + pd.Timedelta(days=i)).isoformat() for i in range(3)]
    with dg.instance_for_test() as instance:
        _run(instance, {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[2]})
        first = _tick(instance)
        assert not first.run_requests and "no late rows" in first.skip_reason.skip_message

        # a row of the middle day lands now, after that day was built (as a live poll's straggler would)
        wh = open_warehouse()
        try:
            wh.execute(
                "UPDATE raw_google SET ingest_time = ? WHERE record_key = "
                "(SELECT MIN(record_key) FROM raw_google WHERE partition_date = ?)",
                [pd.Timestamp.now(tz="UTC").tz_localize(None), pd.Timestamp(days[1]).date()],
            )
        finally:
            wh.close()
        second = _tick(instance)
        assert len(second.run_requests) == 1
        request = second.run_requests[0]
        assert request.tags["dagster/asset_partition_range_start"] == days[1]
        assert request.tags["dagster/asset_partition_range_end"] == days[2]  # later days carry state from it
        assert request.run_key.startswith(f"late:{days[1]}..{days[2]}:")

        _run(instance, dict(request.tags))  # the rebuild the sensor asked for
        third = _tick(instance)
        assert not third.run_requests
