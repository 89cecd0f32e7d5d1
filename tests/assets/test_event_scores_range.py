"""event_scores over a range scores the days in parallel worker processes; the table must be what scoring each day
on its own in this process gives."""

import dagster as dg
import pandas as pd

from watch_pipeline.assets import models
from watch_pipeline.definitions import defs
from watch_pipeline.settings import load_settings
from watch_pipeline.warehouse import open_warehouse


def test_parallel_range_equals_day_by_day_scoring(pipeline_env, small_org):
    config = pipeline_env / "watch.yaml"
    config.write_text(config.read_text() + "models:\n  score_jobs: 2\n")
    assert load_settings().models.score_jobs == 2
    days = [d.isoformat() for d in pd.date_range(small_org.start, small_org.end).date]
    assert len(days) >= models.PARALLEL_MIN_DAYS  # the parallel path runs (score_jobs: 2 below)
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    with dg.instance_for_test() as instance:
        result = dg.materialize(assets, instance=instance, resources=defs.resources,
                                tags={"dagster/asset_partition_range_start": days[0],
                                      "dagster/asset_partition_range_end": days[-1]})
        assert result.success
    wh = open_warehouse()
    try:
        cfg = load_settings()
        stored = wh.read_table("event_scores")
        stored["partition_date"] = pd.to_datetime(stored["partition_date"]).dt.strftime("%Y-%m-%d")
        expected = pd.concat([models.score_day(models.scoring_inputs(wh, cfg, day))[0].assign(partition_date=day)
                              for day in days], ignore_index=True)[list(stored.columns)]
    finally:
        wh.close()
    assert len(expected) > 0
    key = ["event_id"]
    pd.testing.assert_frame_equal(stored.sort_values(key).reset_index(drop=True),
                                  expected.sort_values(key).reset_index(drop=True), check_dtype=False)
