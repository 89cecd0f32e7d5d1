import dagster as dg
from tests.ops.ops_support import day_keys, all_assets
from watch_pipeline.definitions import defs
from watch_pipeline.warehouse import open_warehouse

def run(keys):
    with dg.instance_for_test() as inst:
        r = dg.materialize(all_assets(), instance=inst, resources=defs.resources, selection=dg.AssetSelection.assets("raw_google","raw_slack_audit","raw_slack_access","events"),
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
        assert r.success
    wh = open_warehouse()
    out = {t: list(wh.read_table(t)[c]) for t, c in [("raw_google","record_key"),("raw_slack_audit","record_key"),("raw_slack_access","record_key"),("events","event_id")]}
    wh.close(); return out

def test_order(ops_env, ops_org, postgres_server, monkeypatch):
    keys = day_keys(ops_org, 1)
    a = run(keys)
    monkeypatch.setenv("WATCH_WAREHOUSE_URL", postgres_server.create_database("w"))
    b = run(keys)
    for t in a:
        print(t, len(a[t]), a[t] == b[t], sorted(a[t]) == sorted(b[t]))
