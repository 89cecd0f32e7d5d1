"""global_baseline + peaks through a real Dagster instance, on events written straight into the warehouse."""

import datetime as dt

import dagster as dg
import pandas as pd

from tests.core.test_peaks import _ev, _user, frame, normal_day
from watch_pipeline.definitions import defs
from watch_pipeline.warehouse import open_warehouse

BASELINE = dg.AssetSelection.assets("global_baseline", "peaks")
START = dt.date(2026, 9, 1)
N_DAYS = 9  # 8 ordinary days of history, then the spray day
SPRAY_IP = "185.220.101.7"


def _assets():
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)] + list(defs.asset_checks or [])


def _events() -> pd.DataFrame:
    rows = []
    for d in range(N_DAYS):
        rows += normal_day(START + dt.timedelta(days=d), d)
    spray_day = START + dt.timedelta(days=N_DAYS - 1)
    rows += [_ev(spray_day, 120 + i, "login", "login_failure", "failure", _user(i), SPRAY_IP, "M247 Ltd") for i in range(40)]
    ev = frame(rows)
    ev["geo_country"] = "US"
    return ev


def _seed_events(ev: pd.DataFrame) -> None:
    wh = open_warehouse()
    try:
        wh.ensure_tables(["events"])
        wh.replace_partitions("events", ev, sorted({d.isoformat() for d in ev["partition_date"]}))
    finally:
        wh.close()


def _table(name: str) -> pd.DataFrame:
    wh = open_warehouse()
    try:
        return wh.read_table(name)
    finally:
        wh.close()


def test_baseline_and_peaks_find_the_spray_and_are_idempotent(pipeline_env):
    _seed_events(_events())
    keys = [(START + dt.timedelta(days=d)).isoformat() for d in range(N_DAYS)]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            _assets(), instance=instance, resources=defs.resources, selection=BASELINE,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        )
        assert result.success
        stats, found = _table("baseline_daily"), _table("peaks")
        assert sorted(pd.to_datetime(stats["day"]).dt.date.astype(str).unique()) == keys
        spray = found.loc[found["kind"] == "password_spray"]
        assert len(spray) == 1 and SPRAY_IP in spray["top_ips"].iloc[0]
        assert pd.Timestamp(spray["day"].iloc[0]).date().isoformat() == keys[-1]
        assert "40 accounts failed" in spray["reason"].iloc[0]

        mats = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
        peaks_meta = next(m.metadata for m in mats if m.asset_key == dg.AssetKey("peaks"))
        chart = peaks_meta["today_vs_baseline"].value
        assert "`google · login · login_success · success`" in chart and "█" in chart
        assert peaks_meta["by_kind"].value.get("password_spray") == 1

        # the last day again on its own: delete-then-insert gives the same rows
        again = dg.materialize(
            _assets(), instance=instance, resources=defs.resources, selection=BASELINE, partition_key=keys[-1]
        )
        assert again.success
        pd.testing.assert_frame_equal(
            _table("peaks").sort_values(["day", "kind", "key"]).reset_index(drop=True),
            found.sort_values(["day", "kind", "key"]).reset_index(drop=True),
        )
