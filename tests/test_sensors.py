"""Notifier sensors on a real Dagster instance: every alerts materialization handled, each alert delivered once."""


import csv
import os
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from tests.fake_services import FakeSlack, FakeWebhook, _module_server, local_server, make_alert  # noqa: F401
from watch_pipeline.notifiers import DeliveryLedger
from watch_pipeline.notify_jobs import NOTIFY_JOBS, make_notify_job
from watch_pipeline.resources.warehouse import SettingsResource, WarehouseResource
from watch_pipeline.sensors import NOTIFIER_SENSORS, NOTIFY_SENSORS

PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-10-01", timezone="UTC")
# capturing op stdout/stderr to files costs a third of each in-process run; these tests do not read it
NO_COMPUTE_LOGS = {"compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager",
                                    "class": "NoOpComputeLogManager"}}
# what the stand-in alerts asset writes for each partition (set by the tests)
ALERT_ROWS: dict[str, list[dict]] = {}


@dg.asset(key="alerts", partitions_def=PARTITIONS)
def alerts_stand_in(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> None:
    """Stand-in for the lead's alerts asset: replaces the partition's rows of the alerts table."""
    for day in context.partition_keys:
        warehouse.get().replace_partitions("alerts", pd.DataFrame(ALERT_ROWS.get(day, [])), [day])


@pytest.fixture
def fast_dir(tmp_path_factory):
    """Instance storage on tmpfs when there is one: SQLite fsyncs make each in-process run twice as slow on disk."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm) as d:
            yield Path(d)
    else:
        yield tmp_path_factory.mktemp("instance")


@pytest.fixture
def env(tmp_path, fast_dir, local_server, monkeypatch):
    """Instance, resources and fake channels, all local."""
    slack = FakeSlack(local_server)
    webhook = FakeWebhook(local_server)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("WATCH_WEBHOOK_SECRET", "hook-secret")
    csv_path = tmp_path / "alerts.csv"
    settings_path = tmp_path / "watch.yaml"
    settings_path.write_text(yaml.safe_dump({"notifiers": {
        "backfill_digest": True,
        "slack": {"enabled": True, "channel": "C0123456789", "base_url": slack.base_url, "min_severity": "low"},
        "webhook": {"enabled": True, "url": webhook.url},
        "csv": {"enabled": True, "path": str(csv_path)},
    }}))
    resources = {"warehouse": WarehouseResource(path=str(tmp_path / "wh.duckdb")),
                 "settings": SettingsResource(path=str(settings_path))}
    ALERT_ROWS.clear()
    with dg.instance_for_test(temp_dir=str(fast_dir), overrides=NO_COMPUTE_LOGS) as instance:
        yield Env(instance, resources, slack, webhook, csv_path)
    resources["warehouse"].get().close()


class Env:
    def __init__(self, instance, resources, slack, webhook, csv_path):
        self.instance, self.resources = instance, resources
        self.slack, self.webhook, self.csv_path = slack, webhook, csv_path
        self.cursors: dict = {c: None for c in NOTIFY_SENSORS}

    def materialize(self, day: str, rows: list[dict], tags: dict | None = None) -> None:
        ALERT_ROWS[day] = rows
        result = dg.materialize([alerts_stand_in], instance=self.instance, partition_key=day,
                                resources={"warehouse": self.resources["warehouse"]}, tags=tags)
        assert result.success

    def tick(self, channel: str) -> list[dg.RunRequest]:
        """One sensor evaluation; returns its run requests and keeps the cursor."""
        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.cursors[channel],
                                      resources={"settings": self.resources["settings"]})
        result = NOTIFY_SENSORS[channel](ctx)
        self.cursors[channel] = result.cursor
        return list(result.run_requests or [])

    def run(self, channel: str, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        config = request.run_config
        op_config = next(iter(config["ops"].values()))["config"]
        op_config["reconcile_after_seconds"] = 0.0  # the tests play the restart immediately
        result = NOTIFY_JOBS[channel].execute_in_process(run_config=config, instance=self.instance,
                                                         tags=request.tags, resources=self.resources)
        assert result.success
        return result

    def tick_and_run(self, channels=tuple(NOTIFY_SENSORS)) -> dict:
        out = {}
        for channel in channels:
            out[channel] = self.tick(channel)
            for request in out[channel]:
                self.run(channel, request)
        return out

    def csv_ids(self) -> list[str]:
        if not self.csv_path.exists():
            return []
        with open(self.csv_path, newline="") as fh:
            return [r["alert_id"] for r in csv.DictReader(fh)]


DAYS = ["2026-10-01", "2026-10-02", "2026-10-03"]


def day_alerts(day: str, n: int = 2, **kw) -> list[dict]:
    return [make_alert(f"{day}-{i}", day=day, actor=f"user{i}@example.com", **kw) for i in range(n)]


def test_sensor_definitions():
    assert [s.name for s in NOTIFIER_SENSORS] == ["notify_slack_sensor", "notify_webhook_sensor",
                                                  "notify_csv_sensor"]
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in NOTIFIER_SENSORS)
    defs = dg.Definitions(assets=[alerts_stand_in], sensors=NOTIFIER_SENSORS, jobs=list(NOTIFY_JOBS.values()),
                          resources={"warehouse": WarehouseResource(), "settings": SettingsResource()})
    dg.Definitions.validate_loadable(defs)


def test_three_partitions_between_two_ticks_each_alert_once_per_channel(env):
    assert env.tick_and_run() == {c: [] for c in NOTIFY_SENSORS}
    for day in DAYS:
        env.materialize(day, day_alerts(day))
    requests = env.tick_and_run()
    expected = sorted(a["alert_id"] for day in DAYS for a in day_alerts(day))
    for channel, reqs in requests.items():
        assert len(reqs) == 3
        assert len({r.run_key for r in reqs}) == 3 and all(r.run_key.startswith(f"{channel}:") for r in reqs)
    assert sorted(env.slack.posted_keys()) == expected
    assert sorted(env.webhook.keys()) == expected
    assert sorted(env.csv_ids()) == expected
    # the cursor moved past them: the next tick requests nothing
    assert env.tick_and_run() == {c: [] for c in NOTIFY_SENSORS}
    ledger = DeliveryLedger(env.resources["warehouse"].get(), "slack").rows()
    assert sorted(ledger) == expected and {r["status"] for r in ledger.values()} == {"sent"}


def test_rematerialized_partition_sends_nothing_new_and_updates_only_rises(env):
    day = DAYS[0]
    env.materialize(day, day_alerts(day, severity="medium"))
    env.tick_and_run(["slack"])
    env.materialize(day, day_alerts(day, severity="medium"))  # same incidents
    requests = env.tick_and_run(["slack"])
    assert len(requests["slack"]) == 1  # the sensor saw it ...
    assert len(env.slack.posts) == 2  # ... but nothing new went out

    rows = day_alerts(day, severity="medium")
    rows[0] = make_alert(rows[0]["alert_id"], day=day, actor="user0@example.com", severity="high",
                         evidence="e1,e2,e9")  # new evidence, severity rose
    rows[1] = make_alert(rows[1]["alert_id"], day=day, actor="user1@example.com", severity="low",
                         evidence="e1,e2,e8")  # new evidence, severity fell
    env.materialize(day, rows)
    env.tick_and_run(["slack"])
    assert env.slack.posted_keys()[2:] == [f"{rows[0]['alert_id']}@high"]
    assert "Severity raised" in env.slack.posts[-1]["blocks"][0]["text"]["text"]


def test_backfill_goes_out_as_one_digest_per_channel(env):
    for day in DAYS[:2]:
        env.materialize(day, day_alerts(day), tags={"dagster/backfill": "bf1"})
    env.materialize(DAYS[2], day_alerts(DAYS[2]))  # an ordinary run alongside
    requests = env.tick_and_run()
    assert all(len(r) == 2 for r in requests.values())
    run_config = requests["slack"][0].run_config["ops"]["deliver_slack_alerts"]["config"]
    assert run_config["backfill"] is True and run_config["partition_keys"] == DAYS[:2]
    digest, *singles = env.slack.posts
    assert digest["metadata"]["event_type"] == "watch_alert_digest" and "4 alerts" in digest["text"]
    assert sorted(m["metadata"]["event_payload"]["alert_id"] for m in singles) == [f"{DAYS[2]}-0", f"{DAYS[2]}-1"]
    assert len(env.webhook.requests) == 3 and env.webhook.keys()[0].startswith("digest:")
    assert len(env.csv_ids()) == 6  # the CSV gets one row per alert (the digest as one atomic append)


def test_crash_between_send_and_confirm_then_restart_no_duplicate(env, monkeypatch):
    day = DAYS[0]
    env.materialize(day, day_alerts(day))
    real = DeliveryLedger.confirm
    crashed = []

    def confirm(self, *args, **kwargs):
        if not crashed:  # the first confirm dies: the message is out, the ledger still says pending
            crashed.append(self.channel)
            raise RuntimeError("killed between send and confirm")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DeliveryLedger, "confirm", confirm)
    (request,) = env.tick("slack")
    config = request.run_config
    config["ops"]["deliver_slack_alerts"]["config"]["reconcile_after_seconds"] = 0.0
    no_retry = make_notify_job("slack", retry_policy=None)
    failed = no_retry.execute_in_process(run_config=config, instance=env.instance, tags=request.tags,
                                         resources=env.resources, raise_on_error=False)
    assert not failed.success and len(env.slack.posts) == 1 and crashed == ["slack"]
    # restart: Dagster's retry of the op (here with no delay) reconciles the pending row from channel history
    retrying = make_notify_job("slack", retry_policy=dg.RetryPolicy(max_retries=1))
    assert retrying.execute_in_process(run_config=config, instance=env.instance, resources=env.resources).success
    assert sorted(env.slack.posted_keys()) == sorted(a["alert_id"] for a in day_alerts(day))
    assert env.slack.history_requests >= 1


def test_disabled_channel_advances_cursor_without_runs(env, tmp_path):
    settings_path = tmp_path / "off.yaml"
    settings_path.write_text(yaml.safe_dump({"notifiers": {"slack": {"enabled": False}}}))
    env.materialize(DAYS[0], day_alerts(DAYS[0]))
    off = SettingsResource(path=str(settings_path))
    ctx = dg.build_sensor_context(instance=env.instance, resources={"settings": off})
    result = NOTIFY_SENSORS["slack"](ctx)
    assert not result.run_requests and result.cursor is not None and "disabled" in result.skip_reason.skip_message


def test_partition_range_run_is_one_digest_request(env):
    for day in DAYS:
        ALERT_ROWS[day] = day_alerts(day)
    result = dg.materialize([alerts_stand_in], instance=env.instance,
                            resources={"warehouse": env.resources["warehouse"]},
                            tags={"dagster/asset_partition_range_start": DAYS[0],
                                  "dagster/asset_partition_range_end": DAYS[-1]})
    assert result.success
    (request,) = env.tick("slack")
    config = request.run_config["ops"]["deliver_slack_alerts"]["config"]
    assert config["backfill"] is True and config["partition_keys"] == DAYS and len(config["storage_ids"]) == 3
    assert request.run_key == f"slack:{config['storage_ids'][0]}..{config['storage_ids'][-1]}"
