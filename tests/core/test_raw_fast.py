"""The faster landing paths write exactly what the plain ones write: canonical text and keys."""

import json
import random

import pytest

from watch_pipeline.core.archive import archive_files, iter_archive, read_bytes
from watch_pipeline.core.raw import _dump, dump_floatless, slack_audit_record

ALL_CHARS = [chr(i) for i in range(0x110000) if not 0xD800 <= i < 0xE000]


def test_dump_floatless_writes_the_canonical_text_of_every_character():
    for start in range(0, len(ALL_CHARS), 20_000):
        chunk = "".join(ALL_CHARS[start:start + 20_000])
        item = {"s": chunk, chunk[:50]: [chunk[50:60], None, True, False, 0, -1]}
        assert dump_floatless(item) == _dump(item)


def test_dump_floatless_sorts_keys_like_the_canonical_text():
    rng = random.Random(5)
    pool = ALL_CHARS[:400] + ALL_CHARS[0x4E00:0x4E80] + ALL_CHARS[-300:] + list("aAzZ_-09")
    for _ in range(3000):
        item = {"".join(rng.choice(pool) for _ in range(rng.randint(0, 4))):
                rng.choice([1, -7, 2**63 - 1, -(2**63), 2**64 - 1, "x", None, True, [], {}, [{"b": 1, "a": [2, {}]}]])
                for _ in range(rng.randint(0, 8))}
        assert dump_floatless({"k": item, "l": [item, item]}) == _dump({"k": item, "l": [item, item]})


@pytest.mark.parametrize("item", [
    {"big": 2**64, "neg": -(2**63) - 1},  # beyond orjson's integers
    {"lone": "a\udc80b"},  # a lone surrogate orjson refuses
    {"deep": json.loads("[" * 300 + "1" + "]" * 300)},  # deeper than orjson nests
])
def test_dump_floatless_hands_what_orjson_refuses_to_the_canonical_dump(item):
    assert dump_floatless(item) == _dump(item)


def test_floats_are_why_dump_floatless_needs_its_precondition():
    # orjson spells these otherwise: the archive reader must never send them down the fast path
    assert dump_floatless({"f": 1e-05}) != _dump({"f": 1e-05})
    assert dump_floatless({"f": float("nan")}) != _dump({"f": float("nan")})


def _entry(i: int, **extra) -> dict:
    entry = {"id": f"e-{i}", "date_create": 1791158400 + i, "action": "user_login",
             "actor": {"type": "user", "user": {"id": "W1", "email": "a@acme.example"}}}
    entry.update(extra)
    return entry


@pytest.mark.parametrize("layout", ["page", "lines", "truncated"])
def test_archive_texts_are_canonical_with_and_without_floats(layout):
    entries = [_entry(0), _entry(1, details={"f": 1e-05, "g": 1.5e-7, "h": 1e16}), _entry(2, details={"n": float("nan")}),
               _entry(3, details={"big": 2**70, "s": "caf\u00e9 \U0001F600 \u0001"}), _entry(4, details={"i": 10**18})]
    if layout == "page":
        text = json.dumps({"entries": entries}, allow_nan=True)
    elif layout == "lines":
        text = "\n".join(json.dumps(e, allow_nan=True) for e in entries)
    else:  # a cut page is salvaged item by item
        text = json.dumps({"entries": entries + [_entry(5)]}, allow_nan=True)[:-40]
    result = read_bytes(text.encode(), "f.json")
    got = {r.record_key: r.raw for r in result.records}
    expected = {slack_audit_record(e).record_key: _dump(e) for e in entries}
    assert got == expected
    assert got[slack_audit_record(entries[1]).record_key].count("1e-05") == 1  # json's spelling, not orjson's


def test_float_flag_is_per_document():
    lines = [json.dumps(_entry(0, details={"f": 2.5e-06})), json.dumps(_entry(1, details={"i": 3}))]
    result = read_bytes("\n".join(lines).encode(), "f.jsonl")
    assert [r.raw for r in result.records] == [_dump(json.loads(line)) for line in lines]


def test_byte_order_mark_is_refused_as_json_refuses_it():
    lines = "\ufeff" + json.dumps(_entry(0)) + "\n" + json.dumps(_entry(1))
    result = read_bytes(lines.encode(), "bom.jsonl")
    assert [r.raw for r in result.records] == [_dump(_entry(1))]
    assert [q.reason for q in result.quarantined] == [
        "invalid JSON on line 1: Unexpected UTF-8 BOM (decode using utf-8-sig)"]


def test_iter_archive_takes_the_listed_files(tmp_path):
    for i in range(3):
        (tmp_path / f"p{i}.jsonl").write_text(json.dumps(_entry(i)) + "\n")
    listed = archive_files(tmp_path)
    assert [s.path for s in iter_archive(tmp_path, files=listed[1:])] == [str(p) for p in listed[1:]]
    assert [s.path for s in iter_archive(tmp_path)] == [str(p) for p in listed]


LOADS_TEXTS = [
    '{"a": 1, "a": 2}', '{"s": "caf\\u00e9 \\ud83d\\ude00 \\u0001", "t": "\\"\\\\/"}', "[0.1, -0.0, 1e-400, 5e-324, "
    "1.7976931348623157e308, 0.30000000000000004, 123456789012345678901234567890.5, 1E5, 2e+3]",
    "[9007199254740993, 18446744073709551615, -9223372036854775808, 999999999999999999]",
    "[12345678901234567890123, -9223372036854775809, 18446744073709551616]",  # beyond 64 bits: json's integers
    '{"id": "1234567890123456789012", "n": 1.5}',  # a long digit run inside a string
    "[NaN, Infinity, -Infinity]", "[1e400, -1e400]", '"\\ud800"', '"a\\udc80b"',  # what orjson refuses
    "[" * 300 + "1" + "]" * 300, '  {"a" : [ true , false , null ] }  ', "{}", "[]", '""', "0", "-0",
]


@pytest.mark.parametrize("text", LOADS_TEXTS)
def test_loads_json_gives_what_json_loads_gives(text):
    from watch_pipeline.core.raw import loads_json

    got, want = loads_json(text), json.loads(text)
    # repr tells int from float, -0.0 from 0.0 and keeps NaN comparable
    assert repr(got) == repr(want)
    assert json.dumps(got) == json.dumps(want)


@pytest.mark.parametrize("text", ['{"a": 1} x', "{'a': 1}", '{"a": 1,}', '"tab\there"', "", "\ufeff{}", b'{"a": 1}',
                                  None])
def test_loads_json_accepts_and_rejects_what_json_loads_does(text):
    from watch_pipeline.core.raw import loads_json

    try:
        want = ("ok", repr(json.loads(text)))
    except Exception as exc:  # noqa: BLE001 - the same error type is the point
        want = ("error", type(exc))
    try:
        got = ("ok", repr(loads_json(text)))
    except Exception as exc:  # noqa: BLE001
        got = ("error", type(exc))
    assert got == want
