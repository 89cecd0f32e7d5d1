"""The archived-log reader: real payloads, overlaps, quarantine of bad records, and a property test."""

import gzip
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watch_pipeline.core.archive import classify_item, read_bytes, read_file, scan_archive
from watch_pipeline.core.normalize import normalise
from watch_pipeline.core.raw import records_frame

GROVE = "saas-logs/grove/tests/fixtures"
ELASTIC = "saas-logs/elastic-integrations/packages"


def _google_item(i: int, t: str = "2026-10-01T10:00:00.000Z", n_events: int = 1) -> dict:
    return {
        "kind": "admin#reports#activity",
        "id": {"time": t, "uniqueQualifier": str(-1000 - i), "applicationName": "login", "customerId": "C0"},
        "actor": {"email": f"user{i}@acme.example", "profileId": str(i)},
        "ipAddress": "81.2.69.142",
        "events": [{"type": "login", "name": "login_success", "parameters": [{"name": "login_type", "value": "google_password"}]}] * n_events,
    }


def _page(items, token=None) -> dict:
    page = {"kind": "admin#reports#activities", "items": items}
    if token:
        page["nextPageToken"] = token
    return page


def test_grove_google_pages_give_every_event(peer_data):
    folder = peer_data / GROVE / "gsuite/activities"
    # Independent count: items and their events[] straight from the JSON files.
    pages = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    items = {(i["id"]["applicationName"], i["id"]["uniqueQualifier"], i["id"]["time"]) for pg in pages for i in pg["items"]}
    expected_events = sum(len(i["events"]) for pg in pages for i in pg["items"])
    scan = scan_archive(folder)
    assert scan.count("google") == len(items)
    assert not scan.quarantined
    raw = records_frame(scan.records["google"], "x", None)
    norm = normalise(raw, raw.iloc[0:0])
    assert len(norm.events) == expected_events
    assert norm.events["event_id"].is_unique


def test_grove_slack_audit_pages(peer_data):
    folder = peer_data / GROVE / "slack/audit"
    ids = {e["id"] for p in sorted(folder.glob("*.json")) for e in json.loads(p.read_text())["entries"]}
    scan = scan_archive(folder)
    assert scan.count("slack_audit") == len(ids)
    raw = records_frame(scan.records["slack_audit"], "x", None)
    norm = normalise(raw.iloc[0:0], raw)
    assert len(norm.events) == len(ids)
    assert set(norm.events["action"]) == {"user_login"}


def test_elastic_fixtures_exact_counts(peer_data):
    root = peer_data / ELASTIC
    logs = sorted(root.rglob("*.log"))
    lines = [json.loads(ln) for p in logs for ln in p.read_text().splitlines() if ln.strip()]
    google_lines = {json.dumps(x, sort_keys=True) for x in lines if "kind" in x}
    slack_lines = {x["id"] for x in lines if "date_create" in x}
    scan = scan_archive(root)
    assert scan.count("google") == len(google_lines)
    assert scan.count("slack_audit") == len(slack_lines)
    raw_g = records_frame(scan.records["google"], "x", None)
    raw_a = records_frame(scan.records["slack_audit"], "x", None)
    norm = normalise(raw_g, raw_a)
    # Elastic's files are pre-split (one event object per line): one event per distinct line.
    assert len(norm.events) == len(google_lines) + len(slack_lines)
    by_name = norm.events.set_index("action")
    assert bool(by_name.loc["anomaly", "vendor_suspicious"]) is True
    assert by_name.loc["anomaly", "vendor_reasons"] == "asn,ip_address"
    assert by_name.loc["file_downloaded", "session_id"] != ""
    # int64 parameters arrive as strings or numbers; both parse.
    assert set(norm.events.loc[norm.events["source"] == "google", "outcome"]) >= {"success", "failure", "warning", "challenge"}


def test_overlapping_pages_are_deduplicated(tmp_path):
    items = [_google_item(i) for i in range(5)]
    (tmp_path / "a.json").write_text(json.dumps(_page(items[:3], "T")))
    (tmp_path / "b.json").write_text(json.dumps(_page(items[2:])))  # item 2 in both pages
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        for it in items[3:]:
            f.write(json.dumps(it) + "\n")
    scan = scan_archive(tmp_path)
    assert scan.count("google") == 5
    assert not scan.quarantined


def test_source_recognised_from_content_not_name(tmp_path):
    entry = {"id": "e1", "date_create": 1759312800, "action": "user_login", "actor": {"user": {"id": "U1", "email": "a@b.c"}}}
    (tmp_path / "google-login.json").write_text(json.dumps({"entries": [entry], "response_metadata": {"next_cursor": ""}}))
    row = {"user_id": "U1", "username": "a", "date_first": 1759312800, "date_last": 1759316400, "count": 3, "ip": "1.2.3.4", "user_agent": "x"}
    (tmp_path / "slack.json").write_text(json.dumps({"ok": True, "logins": [row], "paging": {"count": 1, "total": 1, "page": 1, "pages": 1}}))
    scan = scan_archive(tmp_path)
    assert scan.count("slack_audit") == 1 and scan.count("slack_access") == 1 and scan.count("google") == 0
    assert classify_item(_google_item(1)) == "google"


def test_truncated_page_keeps_complete_items(tmp_path):
    text = json.dumps(_page([_google_item(i) for i in range(4)], "TOKEN"))
    cut = text[: text.find('"user3@')]  # cut inside the fourth item
    path = tmp_path / "cut.json"
    path.write_text(cut)
    result = read_file(path)
    assert len(result.records) == 3
    assert len(result.quarantined) == 1
    assert "truncated" in result.quarantined[0].reason


def test_item_without_time_is_quarantined_others_ingested(tmp_path):
    items = [_google_item(i) for i in range(3)]
    del items[1]["id"]["time"]
    (tmp_path / "p.json").write_text(json.dumps(_page(items)))
    result = read_file(tmp_path / "p.json")
    assert len(result.records) == 2
    assert [q.reason for q in result.quarantined] == ["activity has no id.time"]
    assert "user1@" in result.quarantined[0].raw_text


def test_invalid_utf8_quarantines_only_the_bad_record(tmp_path):
    good = [json.dumps(_google_item(i)).encode() for i in range(3)]
    bad = json.dumps(_google_item(9)).encode().replace(b"user9", b"us\xff\xfeer9")
    (tmp_path / "lines.jsonl").write_bytes(b"\n".join([good[0], bad, good[1], good[2]]) + b"\n")
    page = b'{"kind": "admin#reports#activities", "items": [' + b",".join([good[0], bad]) + b"]}"
    (tmp_path / "page.json").write_bytes(page)
    r1 = read_file(tmp_path / "lines.jsonl")
    assert len(r1.records) == 3 and len(r1.quarantined) == 1
    assert r1.quarantined[0].reason == "invalid UTF-8 in record"
    assert "\ufffd" in r1.quarantined[0].raw_text
    r2 = read_file(tmp_path / "page.json")
    assert len(r2.records) == 1 and len(r2.quarantined) == 1


def test_slack_date_create_epoch_and_google_int_strings():
    entry = {"id": "x", "date_create": 1759312800, "action": "user_login", "actor": {"user": {"id": "U1", "email": "a@b.c"}}}
    r = read_bytes(json.dumps(entry).encode(), "mem")
    assert r.records[0].record_time.isoformat() == "2025-10-01T10:00:00"
    bad = dict(entry, date_create="yesterday")
    r = read_bytes(json.dumps(bad).encode(), "mem")
    assert not r.records and "date_create" in r.quarantined[0].reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)

# Items that look like the real thing, with any field possibly broken.
plausible = st.fixed_dictionaries(
    {"kind": st.just("admin#reports#activity"), "id": st.dictionaries(st.sampled_from(["time", "uniqueQualifier", "applicationName"]), json_values | st.just("2026-10-01T00:00:00Z"))},
    optional={"actor": json_values, "events": json_values},
) | st.fixed_dictionaries({"id": json_values, "date_create": json_values, "action": json_values}) | st.fixed_dictionaries(
    {"user_id": json_values, "date_first": json_values, "date_last": json_values}
)


def _record_count(doc) -> int:
    if isinstance(doc, dict):
        for key in ("items", "entries", "logins"):
            if isinstance(doc.get(key), list):
                return len(doc[key])
        if doc.get("kind") == "admin#reports#activities":
            return 0
        return 1
    if isinstance(doc, list):
        return len(doc)
    return 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values | plausible, max_size=6), st.sampled_from(["items", "entries", "logins", None]))
def test_property_any_json_is_ingested_or_quarantined(values, key):
    doc = {key: values} if key else values
    result = read_bytes(json.dumps(doc).encode(), "prop")
    assert len(result.records) + len(result.quarantined) == _record_count(doc)
    # And the records that landed normalise or quarantine without crashing.
    recs = records_frame(result.records, "prop", None)
    g = recs[recs["source"] == "google"] if len(recs) else recs
    a = recs[recs["source"] == "slack_audit"] if len(recs) else recs
    norm = normalise(g, a)
    # Every landed record is either normalised into events or quarantined, never both, never neither.
    with_events = set(norm.events["raw"]) if len(norm.events) else set()
    quarantined = set(norm.quarantined["raw_text"]) if len(norm.quarantined) else set()
    landed = set(g["raw"]) | set(a["raw"]) if len(recs) else set()
    assert with_events | quarantined == landed
    assert not (with_events & quarantined)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_property_any_bytes_never_crash(data):
    result = read_bytes(data, "bytes")
    assert all(r.record_key for r in result.records)
    for q in result.quarantined:
        q.raw_text.encode("utf-8")  # quarantine text is always valid UTF-8


@settings(max_examples=100, deadline=None)
@given(st.lists(json_values | plausible, min_size=1, max_size=5))
def test_property_json_lines_count_adds_up(values):
    data = "\n".join(json.dumps(v) for v in values).encode()
    result = read_bytes(data, "lines")
    if len(values) == 1:
        expected = _record_count(values[0])
    else:
        expected = sum(_record_count(v) for v in values)
    assert len(result.records) + len(result.quarantined) == expected


def test_lone_surrogate_escape_is_quarantined_not_a_crash(tmp_path):
    # "\ud800" alone parses into a string that cannot be UTF-8: that record is quarantined, the rest lands
    good = json.dumps(_google_item(1))
    bad = json.dumps(_google_item(2)).replace("user2", "us\\ud800er2")
    (tmp_path / "page.json").write_text('{"kind": "admin#reports#activities", "items": [' + good + "," + bad + "]}")
    result = read_file(tmp_path / "page.json")
    assert len(result.records) == 1 and "user1@" in result.records[0].raw
    assert [q.reason for q in result.quarantined] == ["invalid UTF-8 in record"]
    result.quarantined[0].raw_text.encode("utf-8")
    # an emoji written as a surrogate pair is valid and lands
    emoji = json.dumps(_google_item(3)).replace("user3", "user\\ud83d\\ude003")
    r = read_bytes(emoji.encode(), "mem")
    assert len(r.records) == 1 and "user\U0001F6003@" in r.records[0].raw


text_with_anything = st.text(st.characters(codec=None, categories=None), max_size=12)
any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text_with_anything,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text_with_anything, children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(any_json)
def test_canonical_text_is_json_dumps_sorted_compact(value):
    from watch_pipeline.core.raw import _dump

    assert _dump(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=__import__("datetime").datetime(1650, 1, 1), max_value=__import__("datetime").datetime(2300, 1, 1)),
    st.sampled_from(["", ".1", ".123", ".123456", ".1234567"]),
    st.sampled_from(["Z", "+00:00", "-00:00", "+05:30", "-11:00", "+14:00"]),
)
def test_rfc3339_fast_path_agrees_with_pandas(when, fraction, zone):
    import pandas as pd

    from watch_pipeline.core.raw import RecordError, parse_rfc3339

    text = when.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone
    try:
        ts = pd.Timestamp(text)
        expected = ts.tz_convert("UTC").tz_localize(None).to_pydatetime(warn=False)
    except (ValueError, TypeError):
        expected = None
    try:
        got = parse_rfc3339(text)
    except RecordError:
        got = None
    assert got == expected


def test_unchanged_files_of_other_days_are_not_read_again(tmp_path):
    import os

    from watch_pipeline.core.archive import iter_archive

    (tmp_path / "d1.json").write_text(json.dumps(_page([_google_item(i, "2026-10-01T10:00:00Z") for i in range(3)])))
    (tmp_path / "d2.json").write_text(json.dumps(_page([_google_item(i, "2026-10-02T10:00:00Z") for i in range(3, 5)])))
    (tmp_path / "bad.json").write_text('{"items": [{"kind": "admin#reports#activity", "id": {}}]}')
    first = list(iter_archive(tmp_path, ["2026-10-01"]))
    assert not any(f.skipped for f in first)
    assert {Path(f.path).name: len(f.records) for f in first} == {"bad.json": 0, "d1.json": 3, "d2.json": 0}
    known = {f.path: (*f.stamp, f.days) for f in first}
    assert known[str(tmp_path / "d2.json")][2] == {"2026-10-02"}

    second = {Path(f.path).name: f for f in iter_archive(tmp_path, ["2026-10-02"], known=known)}
    assert second["d1.json"].skipped and not second["d1.json"].records
    assert second["bad.json"].skipped  # its quarantine rows were landed by the first run
    assert not second["d2.json"].skipped and len(second["d2.json"].records) == 2
    # a file that changed is read again, whatever it held before
    (tmp_path / "d1.json").write_text(json.dumps(_page([_google_item(9, "2026-10-02T11:00:00Z")])))
    st_ = os.stat(tmp_path / "d1.json")
    os.utime(tmp_path / "d1.json", ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000))
    third = {Path(f.path).name: f for f in iter_archive(tmp_path, ["2026-10-02"], known=known)}
    assert not third["d1.json"].skipped and len(third["d1.json"].records) == 1
    # without a day filter everything is read
    assert not any(f.skipped for f in iter_archive(tmp_path, None, known=known))
