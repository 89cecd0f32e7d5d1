"""The demo organisation: deterministic, in the exact API shapes, every IP in the .mmdb files, labelled stories."""

from __future__ import annotations

import gzip
import ipaddress
import json
import math
import re
import uuid
from collections import Counter, defaultdict
from datetime import date, datetime, timezone

import geoip2.database
import pytest

from watch_pipeline.demo import generate_org, world
from watch_pipeline.demo.__main__ import main
from watch_pipeline.demo.scenarios import SCENARIOS

START = date(2026, 10, 1)
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
VALUE_KEYS = {"value", "boolValue", "intValue", "multiValue", "multiIntValue", "messageValue", "multiMessageValue"}


@pytest.fixture(scope="module")
def org(tmp_path_factory):
    return generate_org(tmp_path_factory.mktemp("org"), people=20, days=10, seed=11, start=START)


@pytest.fixture(scope="module")
def records(org):
    """Every record of the archive, classified by shape alone: (kind, record, file)."""
    out = []
    for f in sorted(p for p in org.archive_dir.rglob("*") if p.is_file()):
        data = (gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()).decode("utf-8")
        if ".jsonl" in f.name:
            docs, page = [json.loads(line) for line in data.splitlines() if line.strip()], False
        else:
            docs, page = [json.loads(data)], True
        for doc in docs:
            if page and doc.get("kind") == "admin#reports#activities":
                assert "nextPageToken" not in doc or isinstance(doc["nextPageToken"], str)
                out += [("google", item, f) for item in doc.get("items", [])]
            elif page and set(doc) == {"entries", "response_metadata"}:
                assert isinstance(doc["response_metadata"]["next_cursor"], str)
                out += [("slack", e, f) for e in doc["entries"]]
            elif page and doc.get("ok") is True and "logins" in doc:
                assert set(doc["paging"]) == {"count", "total", "page", "pages"}
                out += [("access", row, f) for row in doc["logins"]]
            elif not page and doc.get("kind") == "admin#reports#activity":
                out.append(("google", doc, f))
            elif not page and "date_create" in doc and "action" in doc:
                out.append(("slack", doc, f))
            else:
                pytest.fail(f"unrecognised record shape in {f}: {str(doc)[:200]}")
    return out


def _files(org):
    return {p.relative_to(org.out_dir).as_posix(): p.read_bytes() for p in org.out_dir.rglob("*") if p.is_file()}


def test_same_seed_gives_byte_identical_files(org, tmp_path):
    world._MMDB_CACHE.clear()  # rebuild the .mmdb files too instead of reusing this process's copy
    again = generate_org(tmp_path / "again", people=20, days=10, seed=11, start=START)
    first, second = _files(org), _files(again)
    assert sorted(first) == sorted(second)
    assert [k for k in first if first[k] != second[k]] == []



def test_another_seed_gives_another_org(tmp_path):
    a = _files(generate_org(tmp_path / "a", people=8, days=3, seed=1, start=START, attacks=False))
    b = _files(generate_org(tmp_path / "b", people=8, days=3, seed=2, start=START, attacks=False))
    assert any(a[k] != b.get(k) for k in a if k.startswith("archive/"))
    assert a["GeoIP2-City-Demo.mmdb"] == b["GeoIP2-City-Demo.mmdb"]  # the world does not depend on the seed


def test_demo_org_describes_what_was_written(org, records):
    assert org.archive_dir.is_dir() and org.city_db.is_file() and org.asn_db.is_file()
    assert (org.start, org.end, org.domain) == (START, date(2026, 10, 10), "acme.example")
    assert org.counts["events"] > 20 * 5 * 2  # people keep working most days
    assert org.counts["late_events"] == 0
    assert org.counts["files"] == sum(1 for p in org.archive_dir.rglob("*") if p.is_file())


def test_google_items_have_the_reports_api_shape(org, records):
    items = [r for k, r, _ in records if k == "google"]
    assert items
    apps = Counter()
    for it in items:
        assert it["kind"] == "admin#reports#activity"
        assert RFC3339_MS.match(it["id"]["time"])
        q = it["id"]["uniqueQualifier"]
        assert isinstance(q, str) and -(2 ** 63) <= int(q) < 2 ** 63
        apps[it["id"]["applicationName"]] += 1
        assert it["actor"]["email"].endswith("@" + org.domain) and it["actor"]["callerType"] == "USER"
        ipaddress.ip_address(it["ipAddress"])
        assert it["events"]
        for ev in it["events"]:
            assert ev["name"] and ev["type"]
            for prm in ev["parameters"]:
                assert len(set(prm) & VALUE_KEYS) == 1, prm
    assert set(apps) == {"login", "token"}
    assert any(int(it["id"]["uniqueQualifier"]) < 0 for it in items)
    assert any(len(it["events"]) > 1 for it in items)  # several events under one id exist


def test_parameter_value_kinds_and_int_values_as_strings(records):
    kinds, int_values = Counter(), []

    def walk(params):
        for prm in params:
            kinds.update(set(prm) & VALUE_KEYS)
            if "intValue" in prm:
                int_values.append(prm["intValue"])
            for msg in prm.get("multiMessageValue", []):
                walk(msg["parameter"])

    for k, it, _ in records:
        if k == "google":
            for ev in it["events"]:
                walk(ev["parameters"])
    assert {"value", "boolValue", "intValue", "multiValue", "multiMessageValue"} <= set(kinds)
    assert int_values and all(isinstance(v, str) and re.fullmatch(r"-?\d+", v) for v in int_values)


def test_login_timestamp_matches_the_activity_time(records):
    for k, it, _ in records:
        if k == "google" and it["id"]["applicationName"] == "login":
            for ev in it["events"]:
                for prm in ev["parameters"]:
                    if prm["name"] == "login_timestamp":
                        t = datetime.strptime(it["id"]["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
                        assert abs(int(prm["intValue"]) / 1e6 - t.timestamp()) < 0.001


def test_slack_entries_have_the_audit_logs_shape(org, records):
    entries = [r for k, r, _ in records if k == "slack"]
    actions = Counter(e["action"] for e in entries)
    assert {"user_login", "file_downloaded", "anomaly"} <= set(actions)
    for e in entries:
        assert str(uuid.UUID(e["id"])) == e["id"]
        assert isinstance(e["date_create"], int) and e["date_create"] > 1.7e9
        user = e["actor"]["user"]
        assert user["id"].startswith("W") and user["name"] and user["email"].endswith("@" + org.domain)
        ctx = e["context"]
        assert ctx["ua"] and ctx["location"]["type"] == "enterprise"
        ipaddress.ip_address(ctx["ip_address"])
        if e["action"] == "anomaly":
            assert e["details"]["reason"] and "previous_ip_address" in e["details"]
    access = [r for k, r, _ in records if k == "access"]
    assert access and all(r["date_first"] <= r["date_last"] and r["count"] >= 1 for r in access)


def test_every_ip_resolves_in_both_databases(org, records):
    ips = set()
    for k, r, _ in records:
        if k == "google":
            ips.add(r["ipAddress"])
        elif k == "slack":
            ips.add(r["context"]["ip_address"])
            if r.get("details", {}).get("previous_ip_address"):
                ips.add(r["details"]["previous_ip_address"])
        else:
            ips.add(r["ip"])
    assert any(":" in ip for ip in ips), "dual-stack homes should bring some IPv6"
    with geoip2.database.Reader(str(org.city_db)) as city, geoip2.database.Reader(str(org.asn_db)) as asn:
        for ip in sorted(ips):
            assert not ipaddress.ip_address(ip).is_private
            assert city.city(ip).country.iso_code, ip
            a = asn.asn(ip)
            assert a.autonomous_system_number and a.autonomous_system_organization, ip
        orgs = {asn.asn(ip).autonomous_system_organization for ip in ips}
    assert {"Datacamp Limited", "M247 Europe SRL"} & orgs or any("Tor" in o or "Freiheit" in o for o in orgs) \
        or orgs & {"Amazon.com, Inc.", "DigitalOcean, LLC", "OVH SAS", "Hetzner Online GmbH"}


def test_pages_overlap_like_a_real_archive(records):
    seen = defaultdict(set)
    for k, r, f in records:
        if k == "google":
            seen[("g", r["id"]["time"], r["id"]["uniqueQualifier"])].add(f)
        elif k == "slack":
            seen[("s", r["id"])].add(f)
    assert sum(1 for files in seen.values() if len(files) > 1) > 0


def test_archive_mixes_pages_jsonl_and_gzip(org):
    names = [p.name for p in org.archive_dir.rglob("*") if p.is_file()]
    assert any(n.endswith(".jsonl") for n in names)
    assert sum(n.endswith(".gz") for n in names) >= 2
    assert sum(n.endswith(".json") for n in names) > 10


def _labels(org):
    return json.loads(org.labels_path.read_text())


def test_labels_cover_every_scenario_in_the_second_half(org):
    labels = _labels(org)
    assert {a["scenario"] for a in labels["attacks"]} == set(SCENARIOS)
    for a in labels["attacks"]:
        assert date.fromisoformat(a["date"]) >= date(2026, 10, 6)
    kinds = {b["kind"] for b in labels["benign"]}
    assert {"business_trip", "forced_password_change", "cafe", "late_night", "new_laptop", "first_corp_vpn",
            "oauth_grant", "vendor_flag"} <= kinds
    assert {c["kind"] for c in labels["campaigns"]} >= {"password_spray", "credential_stuffing",
                                                        "forced_password_change"}


def test_attack_and_benign_days_do_not_overlap(org):
    labels = _labels(org)
    attacked = {(a["actor"], a["date"]) for a in labels["attacks"]}
    assert attacked and not attacked & {(b["actor"], b["date"]) for b in labels["benign"]}


def test_the_archive_reader_takes_everything(org):
    """Integration with the pipeline's archive reader: nothing quarantined, overlaps deduplicated exactly."""
    archive = pytest.importorskip("watch_pipeline.core.archive")
    scan = archive.scan_archive(org.archive_dir)
    assert scan.quarantined == []
    assert scan.count("google") == org.counts["records_login"] + org.counts["records_token"]
    assert scan.count("slack_audit") == org.counts["records_slack"]
    assert scan.count("slack_access") > 0


def test_no_attacks_when_disabled(tmp_path):
    calm = generate_org(tmp_path, people=20, days=10, seed=11, start=START, attacks=False)
    labels = _labels(calm)
    assert labels["attacks"] == [] and labels["benign"]
    assert all(c["benign"] for c in labels["campaigns"])


def _by_actor_day(records):
    out = defaultdict(list)
    for k, r, _ in records:
        if k == "google":
            t = datetime.strptime(r["id"]["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
            out[(r["actor"]["email"], t.date().isoformat())].append((t.timestamp(), "g", r))
        elif k == "slack":
            t = r["date_create"]
            d = datetime.fromtimestamp(t, timezone.utc).date().isoformat()
            out[(r["actor"]["user"]["email"], d)].append((t, "s", r))
    return out


def _km(a, b):
    la1, lo1, la2, lo2 = map(math.radians, (a.latitude, a.longitude, b.latitude, b.longitude))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 12742 * math.asin(math.sqrt(h))


def test_attack_stories_are_in_the_data(org, records):
    labels = _labels(org)
    days = _by_actor_day(records)
    with geoip2.database.Reader(str(org.city_db)) as city:
        for a in labels["attacks"]:
            evs = days[(a["actor"], a["date"])]
            assert evs, a
            if a["scenario"] == "impossible_travel":
                logins = sorted((t, r["ipAddress"]) for t, k, r in evs
                                if k == "g" and r["events"][-1]["name"] == "login_success")
                far = [(t1, t2) for (t1, ip1) in logins for (t2, ip2) in logins if 0 < t2 - t1 < 2 * 3600
                       and _km(city.city(ip1).location, city.city(ip2).location) > 3000]
                assert far, a
            if a["scenario"] == "stolen_session":
                seen_before = defaultdict(set)  # session id -> IPs seen on earlier days
                for (actor, d), other in days.items():
                    if actor == a["actor"] and d < a["date"]:
                        for _, k, r in other:
                            if k == "s" and "session_id" in r["context"]:
                                seen_before[r["context"]["session_id"]].add(r["context"]["ip_address"])
                replay = [r for _, k, r in evs if k == "s" and r["action"] == "file_downloaded"
                          and r["context"].get("session_id") in seen_before
                          and r["context"]["ip_address"] not in seen_before[r["context"]["session_id"]]]
                assert replay, a
            if a["scenario"].startswith("phish_"):
                assert any(k == "s" and r["action"] == "file_downloaded" for _, k, r in evs) or \
                    any(k == "g" for _, k, r in evs), a


def test_weekends_are_quiet_and_mobile_ips_churn(records):
    per_day = Counter()
    carrier_ips = defaultdict(set)
    for k, r, _ in records:
        if k == "slack":
            d = datetime.fromtimestamp(r["date_create"], timezone.utc).date()
            per_day[d] += 1
            if "chatlyio" in r["context"]["ua"] or "com.Slack" in r["context"]["ua"]:
                carrier_ips[r["actor"]["user"]["email"]].add(r["context"]["ip_address"])
    weekend = [n for d, n in per_day.items() if d.weekday() >= 5]
    weekday = [n for d, n in per_day.items() if d.weekday() < 5]
    assert max(weekend) * 3 < sum(weekday) / len(weekday)
    assert max(len(v) for v in carrier_ips.values()) >= 5


def test_cli_writes_an_org(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "--people", "6", "--days", "4", "--seed", "3", "--start", "2026-11-02"]) == 0
    assert "6 people" in capsys.readouterr().out
    labels = json.loads((tmp_path / "cli" / "labels.json").read_text())
    assert labels["start"] == "2026-11-02" and labels["end"] == "2026-11-05"
    assert (tmp_path / "cli" / "GeoLite2-ASN-Demo.mmdb").is_file()
