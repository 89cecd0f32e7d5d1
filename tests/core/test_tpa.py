"""Parity of the telemetry-peak-analyzer compatibility mode with the peer's reference outputs (exact JSON text)."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest

from watch_pipeline.core import tpa

DAY = dt.datetime(2021, 9, 1)
NEXT_DAY = dt.datetime(2021, 9, 2)
S4_NOW = dt.datetime(2026, 11, 22, 11, 44, 58, 200198)
S4_SHIFT_MS = 1907 * 86_400_000


@pytest.fixture(scope="module")
def tpa_dir(peer_data):
    return peer_data / "telemetry-peak-analyzer"


@pytest.fixture(scope="module")
def records(tpa_dir):
    return tpa.load_records(str(tpa_dir / "telemetry_example_*.json"))


def reference(tpa_dir, name: str) -> str:
    return (tpa_dir / "reference_outputs" / name).read_text()


def roundtrip(tables, tmp_path):
    """Save and reload a GST the way consecutive CLI runs do (string datetimes, microseconds dropped)."""
    path = tmp_path / "gst.json"
    tpa.save_json(tables, str(path))
    return tpa.load_global_tables(str(path))


def test_inputs_are_the_documented_files(records):
    assert len(records) == 1000


def test_b1_cold_start_gives_no_peaks_and_infers_every_key(records, tpa_dir):
    # The 2021 data lies outside "now - 7 days", so the backend GST is empty and no key can be a peak.
    peaks, gst = tpa.run(records, DAY, NEXT_DAY, None, threshold=10, now=S4_NOW)
    assert peaks == {}
    assert tpa.dumps(gst) == reference(tpa_dir, "B1_global_table_inferred.json")


@pytest.mark.parametrize("threshold, name", [(10, "B2_peaks_t10.json"), (None, "B3_peaks_no_t.json")])
def test_b2_b3_second_run_on_same_window(records, tpa_dir, tmp_path, threshold, name):
    _, gst = tpa.run(records, DAY, NEXT_DAY, None, threshold=10, now=S4_NOW)
    gst = roundtrip(gst, tmp_path)
    peaks, gst2 = tpa.run(records, DAY, NEXT_DAY, gst, threshold=threshold)
    assert tpa.dumps(peaks) == reference(tpa_dir, name)
    # Same window again: start < GST end, so the GST is kept unchanged.
    assert tpa.dumps(gst2) == reference(tpa_dir, "B1_global_table_inferred.json")


def test_s5_sub_day_windows(records, tpa_dir):
    analyzer = tpa.TpaAnalyzer()
    t0, t6, t7 = DAY, DAY.replace(hour=6), DAY.replace(hour=7)
    gst1 = analyzer.refresh_global_tables({}, analyzer.local_tables(records, t0, t6), t0, t6)
    assert tpa.dumps(gst1) == reference(tpa_dir, "S5_step1_global_table.json")

    local = analyzer.local_tables(records, t6, t7)
    stats = analyzer.local_tables_stats(local)
    assert tpa.dumps(analyzer.get_peaks(gst1, stats)) == reference(tpa_dir, "S5_step2_peaks_no_t.json")
    assert tpa.dumps(analyzer.get_peaks(gst1, stats, threshold=10)) == reference(tpa_dir, "S5_step2_peaks_t10.json")
    gst2 = analyzer.refresh_global_tables(gst1, local, t6, t7)
    assert tpa.dumps(gst2) == reference(tpa_dir, "S5_step2_global_table_refreshed.json")


def test_s4_cold_start_backend_stats_path(records, tpa_dir):
    shifted = copy.deepcopy(records)
    for rec in shifted:
        rec["utc_timestamp"] += S4_SHIFT_MS
    start = dt.datetime(2026, 11, 21)
    end = dt.datetime(2026, 11, 22)  # the CLI's default window: yesterday..today
    analyzer = tpa.TpaAnalyzer()
    gst = analyzer.backend_global_tables(shifted, S4_NOW)
    assert tpa.dumps(gst) == reference(tpa_dir, "S4_global_table_backend_stats.json")
    for threshold, name in [(None, "S4_peaks_no_t.json"), (10, "S4_peaks_t10.json")]:
        peaks, _ = tpa.run(shifted, start, end, None, threshold=threshold, now=S4_NOW)
        assert tpa.dumps(peaks) == reference(tpa_dir, name)


def test_typing_is_preserved_int_vs_float(records, tpa_dir):
    # An exact mean stays an int (JSON `1`), the backend path keeps g_max as a float (JSON `1.0`).
    ref = json.loads(reference(tpa_dir, "S4_peaks_no_t.json"))
    html = ref["suspicious"]["HtmlTextFile"]
    assert isinstance(html[3], int) and isinstance(html[6], float)


def test_readme_step2_numbers_are_a_peak():
    """README: sub 11083 (1 day) against a 3-day inferred threshold of 629 and g_max 2 -> a peak."""
    stats = tpa.LocalTableStats(11083, 3028, 426, 3.66, 11.54, 0.04)
    assert tpa.TpaAnalyzer.is_peak(stats, global_samp_sub_count_max=2, threshold=629)
    # each half of the rule matters: below threshold, or all three disjuncts false -> not a peak
    assert not tpa.TpaAnalyzer.is_peak(stats, global_samp_sub_count_max=2, threshold=11084)
    flat = tpa.LocalTableStats(11083, 3028, 4, 1.5, 11.54, 0.04)
    assert not tpa.TpaAnalyzer.is_peak(flat, global_samp_sub_count_max=2, threshold=629)


def test_update_uses_bankers_rounding():
    start, end = dt.datetime(2021, 1, 1), dt.datetime(2021, 1, 2)
    table = tpa.GlobalTable(start, end, 1, 3, 3, 3, 3, 1, 1, 3)
    new = tpa.TpaAnalyzer.update_global_table(table, {"a": 5, "b": 1}, end + dt.timedelta(days=1))
    # (3 + 6) / 2 = 4.5 -> 4 ; (3 + 2) / 2 = 2.5 -> 2 ; ratio round(6/2)=3 -> (1+3)/2 = 2
    assert (new.window_count, new.sub_count_avg, new.samp_count_avg, new.samp_sub_count_avg) == (2, 4, 2, 2)
    assert new.threshold_suggested == 4 and new.sub_count_max == 6 and new.end_ts == end + dt.timedelta(days=1)


def test_window_count():
    t = dt.datetime(2021, 1, 1)
    assert tpa.window_count(t, t + dt.timedelta(days=7)) == 7
    assert tpa.window_count(t, t + dt.timedelta(hours=6)) == 6
    assert tpa.window_count(t, t + dt.timedelta(minutes=5)) == 1


def test_cli_writes_peer_files(tpa_dir, tmp_path):
    gst, out = tmp_path / "gst.json", tmp_path / "peaks.json"
    args = ["-n", str(tpa_dir / "telemetry_example_*.json"), "-s", "2021-09-01", "-e", "2021-09-02"]
    assert tpa.main(args + ["-t", "10", "-m", str(gst), "--now", "2026-11-22 11:44:58.200198"]) == 0
    assert gst.read_text() == reference(tpa_dir, "B1_global_table_inferred.json")
    assert tpa.main(args + ["-t", "10", "-m", str(gst), "-o", str(out)]) == 0
    assert out.read_text() == reference(tpa_dir, "B2_peaks_t10.json")
