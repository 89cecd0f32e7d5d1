"""ingest + events through a real Dagster instance: idempotent partitions, quarantine, metadata."""

import json
import shutil
from datetime import datetime

import dagster as dg
import pandas as pd
import pytest

from watch_pipeline.definitions import defs
from watch_pipeline.warehouse import open_warehouse

INGEST = dg.AssetSelection.assets("raw_google", "raw_slack_audit", "raw_slack_access", "events")


def _assets():
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)] + list(defs.asset_checks or [])


def _materialize(instance, selection, partition_key=None, tags=None):
    return dg.materialize(
        _assets(), instance=instance, resources=defs.resources, selection=selection,
        partition_key=partition_key, tags=tags or {},
    )


def _tables(names):
    wh = open_warehouse()
    try:
        out = {}
        for n in names:
            df = wh.read_table(n)
            sort = [c for c in ("record_key", "event_id", "quarantine_id") if c in df.columns][:1]
            out[n] = df.drop(columns=[c for c in ("ingest_time", "quarantined_at") if c in df.columns]).sort_values(sort).reset_index(drop=True)
        return out
    finally:
        wh.close()


def test_same_partition_twice_gives_identical_tables(pipeline_env, small_org):
    day = small_org.start.isoformat()
    with dg.instance_for_test() as instance:
        assert _materialize(instance, INGEST, partition_key=day).success
        first = _tables(["raw_google", "raw_slack_audit", "events", "quarantine"])
        assert len(first["events"]) > 0
        assert set(first["events"]["partition_date"].astype(str)) == {day}
        assert _materialize(instance, INGEST, partition_key=day).success
        second = _tables(["raw_google", "raw_slack_audit", "events", "quarantine"])
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name], check_dtype=False)


def test_range_run_equals_day_by_day(pipeline_env, small_org, tmp_path, monkeypatch):
    """A range normalises the next days' records in a helper process (events._RecordsAhead); one day at a time
    does it all in this process. The tables must not tell them apart."""
    from watch_pipeline.assets import events as events_module

    days = [small_org.start + pd.Timedelta(days=i) for i in range(5)]
    keys = [d.isoformat() for d in days]
    assert len(keys) >= events_module.RECORDS_AHEAD_MIN_DAYS  # the helper runs for the range
    with dg.instance_for_test() as instance:
        result = _materialize(instance, INGEST, tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
        assert result.success
        ranged = _tables(["events", "quarantine", "identities"])
    monkeypatch.setenv("WATCH_HOME", str(tmp_path / "home2"))
    with dg.instance_for_test() as instance:
        for k in keys:
            assert _materialize(instance, INGEST, partition_key=k).success
        daily = _tables(["events", "quarantine", "identities"])
    assert len(ranged["events"]) > 0 and sorted(ranged["events"]["partition_date"].astype(str).unique()) == keys
    for name in ranged:
        a, b = (t[name].sort_values(list(t[name].columns)).reset_index(drop=True) for t in (ranged, daily))
        pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_landing_in_small_batches_and_skipping_read_files_changes_nothing(pipeline_env, small_org, tmp_path, monkeypatch):
    import watch_pipeline.assets.ingest as ingest

    days = [(small_org.start + pd.Timedelta(days=i)).isoformat() for i in range(3)]
    tables = ["raw_google", "raw_slack_audit", "raw_slack_access", "events", "quarantine"]
    rng = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    with dg.instance_for_test() as instance:
        assert _materialize(instance, INGEST, tags=rng).success
        whole = _tables(tables)
    # the same range written every 40 records: many batches, later ones meeting records landed by earlier ones
    monkeypatch.setattr(ingest, "FLUSH_RECORDS", 40)
    monkeypatch.setenv("WATCH_HOME", str(tmp_path / "home_batches"))
    with dg.instance_for_test() as instance:
        assert _materialize(instance, INGEST, tags=rng).success
        batched = _tables(tables)
        # one more day: the files of the three landed days are not parsed again
        result = _materialize(instance, INGEST, partition_key=(small_org.start + pd.Timedelta(days=3)).isoformat())
        assert result.success
        metas = [m.metadata for m in result.asset_materializations_for_node("raw_landing")]
    assert len(whole["raw_google"]) > 40 and len(whole["events"]) > 0
    for name in tables:
        pd.testing.assert_frame_equal(whole[name], batched[name], check_dtype=False)
    assert all(m["archive_files_not_read"].value > 0 for m in metas)
    assert sum(m["new_rows"].value for m in metas) > 0


def test_bad_records_are_quarantined_and_counted(pipeline_env, small_org, tmp_path, monkeypatch):
    archive = tmp_path / "archive"
    shutil.copytree(small_org.archive_dir, archive)
    day = small_org.start.isoformat()
    good = {"kind": "admin#reports#activity", "id": {"time": f"{day}T09:00:00Z", "uniqueQualifier": "42", "applicationName": "login", "customerId": "C1"},
            "actor": {"email": "carol@acme.example"}, "ipAddress": "81.2.69.142", "events": [{"type": "login", "name": "login_success"}]}
    no_time = json.loads(json.dumps(good))
    del no_time["id"]["time"]
    no_actor = json.loads(json.dumps(good))
    no_actor["id"]["uniqueQualifier"] = "43"
    del no_actor["actor"]
    bad_ip = json.loads(json.dumps(good))
    bad_ip["id"]["uniqueQualifier"] = "44"
    bad_ip["ipAddress"] = "999.1.2.3"
    page = {"kind": "admin#reports#activities", "items": [good, no_time, no_actor, bad_ip]}
    (archive / "extra.json").write_text(json.dumps(page))
    (archive / "cut.json").write_text(json.dumps(page)[:-40])
    # an accessLogs row whose count is no whole number once stopped the events step (writing the access state)
    t0 = int(datetime.fromisoformat(f"{day}T10:00:00+00:00").timestamp())
    login = {"user_id": "UFRAC1", "username": "carol", "date_first": t0, "date_last": t0 + 60, "ip": "81.2.69.142",
             "user_agent": "Mozilla/5.0", "isp": "Example", "country": "GB", "region": "ENG"}
    (archive / "access.json").write_text(json.dumps({"ok": True, "logins": [
        {**login, "count": 1e-05}, {**login, "user_id": "UFRAC2", "count": 3}]}))
    cfg = tmp_path / "watch.yaml"
    text = cfg.read_text().replace(str(small_org.archive_dir), str(archive))
    cfg.write_text(text)
    with dg.instance_for_test() as instance:
        result = _materialize(instance, INGEST, partition_key=day)
        assert result.success
        meta = result.asset_materializations_for_node("events")[0].metadata
    wh = open_warehouse()
    try:
        q = wh.read_table("quarantine")
        ev = wh.read_table("events")
    finally:
        wh.close()
    reasons = "\n".join(q["reason"])
    assert "activity has no id.time" in reasons
    assert "activity has no actor" in reasons
    assert "truncated" in reasons
    assert "count is not a whole number of accesses: 1e-05" in reasons
    assert "UFRAC2" in set(ev["actor_id"].dropna()) or any("UFRAC2" in str(r) for r in ev["raw"])
    assert any("999.1.2.3" in r or "malformed" in r.lower() for r in q["reason"])
    assert "carol@acme.example" in set(ev["actor"])  # the good record of the same file is in
    assert meta["quarantined"].value >= 2  # normalise + enrich stages of this partition
    checks = result.get_asset_check_evaluations()
    assert any(c.check_name == "quarantine_share" for c in checks)


def test_definitions_validate():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
