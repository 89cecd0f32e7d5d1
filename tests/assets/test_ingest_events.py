"""ingest + events through a real Dagster instance: idempotent partitions, quarantine, metadata."""

import json
import shutil
from datetime import datetime
from pathlib import Path

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


def test_range_landed_by_the_helper_process_equals_landing_in_this_process(pipeline_env, small_org, tmp_path, monkeypatch):
    """A range with much to read has a helper process read the archive (ingest._ArchiveReader); the raw tables,
    quarantine, archive_files and the counts reported must be those of reading it all here. Copies of records in
    other files (the first file in order wins, with its origin), malformed records and batch ends inside chunks of
    files included."""
    import watch_pipeline.assets.ingest as ingest

    archive = tmp_path / "archive"
    shutil.copytree(small_org.archive_dir, archive)
    day = small_org.start.isoformat()
    page = json.loads((archive / "slack" / "audit" / day / "page-0001.json").read_text())
    (archive / "aaa-first.json").write_text(json.dumps({"entries": page["entries"][:30]}))  # read first: its copies win
    (archive / "zzz-last.json").write_text(json.dumps({"entries": page["entries"][10:40] + [{"id": "x"}]}))
    (archive / "zzz-cut.json").write_text(json.dumps(page)[:-300])  # a truncated page: its last entry quarantined
    cfg = tmp_path / "watch.yaml"
    cfg.write_text(cfg.read_text().replace(str(small_org.archive_dir), str(archive)))
    keys = [(small_org.start + pd.Timedelta(days=i)).isoformat() for i in range(5)]
    rng = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    raw = dg.AssetSelection.assets("raw_google", "raw_slack_audit", "raw_slack_access")
    tables = ["raw_google", "raw_slack_audit", "raw_slack_access", "quarantine", "archive_files"]
    readers, options = [], {}
    init = ingest._ArchiveReader.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **{k: v for k, v in options.items() if k != "started"}, **kwargs)
        if options.get("started"):
            self._started.result()  # the helper is up before the first chunk: this process reads none
        readers.append(self)

    monkeypatch.setattr(ingest._ArchiveReader, "__init__", recording_init)
    monkeypatch.setattr(ingest, "FLUSH_RECORDS", 40)  # many batches, most ending inside a chunk of files

    def land(home, helper, **reader_options):
        monkeypatch.setattr(ingest, "ARCHIVE_AHEAD_MIN_BYTES", 0 if helper else 1 << 60)
        monkeypatch.setattr(ingest, "READ_CHUNK_FILES", 3 if helper else 8)
        monkeypatch.setenv("WATCH_HOME", str(tmp_path / home))
        options.clear()
        options.update(reader_options)
        with dg.instance_for_test() as instance:
            result = _materialize(instance, raw, tags=rng)
            assert result.success
            metas = {m.asset_key.path[-1]: {k: v.value for k, v in m.metadata.items() if k != "preview"}
                     for m in result.asset_materializations_for_node("raw_landing")}
        wh = open_warehouse()
        try:
            out = {}
            for n in tables:
                df = wh.read_table(n).drop(columns=["ingest_time", "quarantined_at", "scanned_at"], errors="ignore")
                out[n] = df.sort_values(list(df.columns)).reset_index(drop=True)
        finally:
            wh.close()
        return out, metas

    # every chunk read by the helper (started first; this process may not read ahead of its queue), then shared
    by_helper = land("home_helper", helper=True, depth=2, window=2, started=True)
    assert readers[-1].ahead and readers[-1].read_here == 0 and len(readers[-1].chunks) > 10
    assert not Path(readers[-1]._handover.name).exists()  # the files it handed over are gone
    shared = land("home_shared", helper=True, started=True)
    assert readers[-1].ahead and readers[-1].read_here < len(readers[-1].chunks)
    here, here_meta = land("home_here", helper=False)
    assert not readers[-1].ahead

    first = here["raw_slack_audit"].set_index("record_key")["origin"]
    assert (first.str.endswith("aaa-first.json")).sum() == 30 and not first.str.endswith("zzz-last.json").any()
    reasons = "\n".join(here["quarantine"]["reason"])
    assert "date_create is missing" in reasons and "truncated or invalid JSON after" in reasons
    assert len(here["archive_files"]) == len(list(p for p in archive.rglob("*") if p.is_file()))
    for ahead, ahead_meta in (by_helper, shared):
        for name in tables:
            pd.testing.assert_frame_equal(ahead[name], here[name], check_dtype=False)
        assert ahead_meta == here_meta


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
