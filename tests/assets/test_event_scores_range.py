"""event_scores over a range fits each day's scorer ahead in a helper process (score_jobs: 1, the default) or scores
the days in parallel worker processes (score_jobs: 2); the table must be what scoring each day on its own in this
process gives."""

import dagster as dg
import pandas as pd
import pytest

from watch_pipeline.assets import models
from watch_pipeline.definitions import defs
from watch_pipeline.settings import load_settings
from watch_pipeline.warehouse import DuckDBWarehouse, open_warehouse


@pytest.mark.parametrize("score_jobs", [1, 2])
def test_range_equals_day_by_day_scoring(pipeline_env, small_org, score_jobs, monkeypatch):
    config = pipeline_env / "watch.yaml"
    config.write_text(config.read_text() + f"models:\n  score_jobs: {score_jobs}\n")
    assert load_settings().models.score_jobs == score_jobs
    days = [d.isoformat() for d in pd.date_range(small_org.start, small_org.end).date]
    assert len(days) >= models.PARALLEL_MIN_DAYS  # the range path runs, not the one for a few days
    taken = []
    take = models.FitsAhead.take
    monkeypatch.setattr(models.FitsAhead, "take", lambda self, i: taken.append(i) or take(self, i))
    caps = []
    cap = DuckDBWarehouse.page_cache_at_most
    monkeypatch.setattr(DuckDBWarehouse, "page_cache_at_most", lambda self, size: caps.append(size) or cap(self, size))
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
    assert taken == (list(range(len(days))) if score_jobs == 1 else [])  # which path ran
    assert caps == [models.SCORING_PAGE_CACHE]  # DuckDB's page cache is smaller while the step scores
    key = ["event_id"]
    pd.testing.assert_frame_equal(stored.sort_values(key).reset_index(drop=True),
                                  expected.sort_values(key).reset_index(drop=True), check_dtype=False)
