"""archive_files lists what sorted(Path.rglob("*")) filtered to visible archive files listed; RawRecord's day."""

import os
from datetime import datetime
from pathlib import Path

import pytest

from watch_pipeline.core.archive import ARCHIVE_SUFFIXES, archive_files
from watch_pipeline.core.raw import RawRecord


def _rglob_listing(root: Path) -> list[Path]:
    """archive_files as it was written before (rglob, stat per entry)."""
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        suffixes = [s.lower() for s in p.suffixes]
        if suffixes and suffixes[-1] == ".gz":
            suffixes = suffixes[:-1]
        if suffixes and suffixes[-1] in ARCHIVE_SUFFIXES:
            out.append(p)
    return out


def test_listing_equals_the_rglob_listing(tmp_path):
    names = ["a/b.json", "a-c.json", "a.json", "A/x.JSON.GZ", "a/b/c/d.jsonl", "a/.hidden/x.json", ".top/y.json",
             "a/.h.json", "z/noext", "z/x.", "z/y.json.", "z/.json", "z/w.tar.gz", "z/v.ndjson.gz", "z/u.log", "z/t.TXT",
             "z/s.gz", "m/2026-10-01/page-0001.json", "m/2026-10-01/page-0010.json", "m/2026-10-01/page-0002.json",
             "m/2026-10-01/items.jsonl.gz", "\u00e9/\u00e8.json", "sp ace/f.json", "dir.json/inner.json"]
    for name in names:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{}")
    os.symlink(tmp_path / "a.json", tmp_path / "z" / "link.json")  # a symlink to a file is listed
    os.symlink(tmp_path / "a", tmp_path / "linked_dir")  # a symlinked directory is not entered
    os.symlink(tmp_path / "missing.json", tmp_path / "z" / "broken.json")  # nor is a broken link listed
    got = archive_files(tmp_path)
    assert got == _rglob_listing(tmp_path)
    assert tmp_path / "z" / "link.json" in got and not any("linked_dir" in str(p) for p in got)
    assert got.index(tmp_path / "a" / "b.json") < got.index(tmp_path / "a-c.json")  # part by part, not as text


def test_listing_of_a_single_file_and_a_missing_root(tmp_path):
    f = tmp_path / "one.json"
    f.write_text("{}")
    assert archive_files(f) == [f]
    with pytest.raises(FileNotFoundError):
        archive_files(tmp_path / "nope")


def test_raw_record_day_is_computed_once_and_not_part_of_equality():
    r = RawRecord("k", "google", datetime(2026, 10, 5, 23, 59), "{}")
    assert r.partition_date == "2026-10-05"
    assert r == RawRecord("k", "google", datetime(2026, 10, 5, 23, 59), "{}")
    assert hash(r) == hash(RawRecord("k", "google", datetime(2026, 10, 5, 23, 59), "{}"))
    assert "partition_date" not in repr(r)
    with pytest.raises(TypeError):
        RawRecord("k", "google", datetime(2026, 10, 5), "{}", "2026-10-05")
