import pytest
import pandas as pd

from watch_pipeline.assets.models import candidate_actors


def _scores(rows):
    return pd.DataFrame(rows, columns=["actor", "field", "value", "first_seen"])


def test_candidates_are_new_and_rare_networks_only():
    rows = [("a", "asn_org", "Evil VPS", True), ("b", "asn_org", "Home ISP", False), ("c", "ua_device_key", "x", True)]
    # five colleagues move to the new office network on the same day: shared, not a candidate
    rows += [(f"u{i}", "asn_org", "New Office", True) for i in range(5)]
    assert candidate_actors(_scores(rows)) == ["a"]


def test_network_known_to_many_in_state_is_not_a_candidate():
    scores = _scores([("a", "asn_org", "Carrier", True)])
    state = pd.DataFrame({"actor": [f"u{i}" for i in range(6)], "field": "asn_org", "value": "Carrier"})
    assert candidate_actors(scores, state) == []
    assert candidate_actors(scores, state.head(2)) == ["a"]


def _events(day: str, n: int, shift_hours: float = 0.0) -> pd.DataFrame:
    t = pd.Timestamp(day) + pd.to_timedelta([6 + i % 12 + shift_hours for i in range(n)], unit="h")
    return pd.DataFrame({
        "event_id": [f"{day}-{i}" for i in range(n)], "partition_date": pd.Timestamp(day).date(), "event_time": t,
        "actor": [f"u{i % 3}@acme.example" for i in range(n)], "ip": [f"10.0.0.{i % 4}" for i in range(n)],
        "asn": 64500 + (pd.Series(range(n)) % 2), "asn_org": "Example Net", "geo_city": "Paris", "geo_country": "FR",
        "outcome": ["failure" if i % 5 == 0 else "success" for i in range(n)], "ua_device_key": "Chrome|Mac|Other",
    })


def _window(wh, day: str, days_back: int = 3):
    from watch_pipeline.core.scoring import history_sql

    start = (pd.Timestamp(day) - pd.Timedelta(days=days_back)).date()
    return wh.query_df(history_sql("events", wh.param()), [start, pd.Timestamp(day).date()])


def test_scoring_inputs_reuse_folded_days_and_events_across_a_range(tmp_path):
    """Consecutive days read through one ScoringInputs (a range) get what a fresh read of each day gets: the
    history window from the partitions' folds kept across days, the day before's events from the day before."""
    from types import SimpleNamespace

    from watch_pipeline.assets.models import ScoringInputs
    from watch_pipeline.warehouse import open_warehouse

    wh = open_warehouse(path=tmp_path / "wh.duckdb")
    cfg = SimpleNamespace(baseline=SimpleNamespace(window_days=3), models=SimpleNamespace(min_events=5, min_days=2))
    days = [d.date().isoformat() for d in pd.date_range("2026-10-01", "2026-10-06")]
    for i, day in enumerate(days):
        wh.replace_partitions("events", _events(day, 20 + 7 * i), [day])
    read = ScoringInputs(wh, cfg)
    for day in days[1:]:
        got = read(day)
        pd.testing.assert_frame_equal(got["history"], _window(wh, day))
        fresh = ScoringInputs(wh, cfg)(day)
        for key in ("events_day", "previous_events"):
            a, b = (x.sort_values("event_id").reset_index(drop=True) for x in (got[key], fresh[key]))
            pd.testing.assert_frame_equal(a, b)
        assert set(got["previous_events"]["partition_date"].astype(str)) == {
            (pd.Timestamp(day) - pd.Timedelta(days=1)).date().isoformat()}
    # only the window's partitions are kept
    assert len(read._folds) == 3


def test_scoring_inputs_fall_back_to_the_window_query_when_events_lie_off_their_partition(tmp_path):
    from types import SimpleNamespace

    from watch_pipeline.assets.models import ScoringInputs
    from watch_pipeline.warehouse import open_warehouse

    wh = open_warehouse(path=tmp_path / "wh.duckdb")
    cfg = SimpleNamespace(baseline=SimpleNamespace(window_days=3), models=SimpleNamespace(min_events=5, min_days=2))
    wh.replace_partitions("events", _events("2026-10-01", 30), ["2026-10-01"])
    # late events of the 1st filed under the 2nd: the 1st's fold spans two partitions
    wh.replace_partitions("events", _events("2026-10-02", 30, shift_hours=-12), ["2026-10-02"])
    wh.replace_partitions("events", _events("2026-10-03", 30), ["2026-10-03"])
    folds = wh.query_df("SELECT COUNT(*) AS n FROM events WHERE CAST(event_time AS DATE) <> partition_date")
    assert folds["n"].iloc[0] > 0
    got = ScoringInputs(wh, cfg)("2026-10-04")["history"]
    pd.testing.assert_frame_equal(got, _window(wh, "2026-10-04"))


def _same_fit(a, b) -> None:
    for k in ("networks_", "apps_", "active_users_", "pairs_", "blocks_", "home_lines_", "home_city_",
              "home_country_", "devices_", "dev_major_"):
        v, w = getattr(a, k), getattr(b, k)
        if isinstance(v, pd.DataFrame):
            pd.testing.assert_frame_equal(v, w, obj=k)
        elif isinstance(v, pd.Series):
            pd.testing.assert_series_equal(v, w, obj=k)
        else:
            assert v == w, k


@pytest.mark.parametrize("off_partition", [False, True])
def test_fits_ahead_in_a_helper_equal_fitting_each_day_in_process(tmp_path, off_partition):
    """A range's scorers are fitted one day ahead in a helper process that keeps the window's folds (FitsAhead):
    each must equal the scorer fitted here on the day's history, also when events lie off their partition's day
    (then the helper is sent the whole window's history)."""
    from types import SimpleNamespace

    from watch_pipeline.assets.models import FitsAhead, ScoringInputs
    from watch_pipeline.core.scoring import RiskScorer
    from watch_pipeline.warehouse import open_warehouse

    wh = open_warehouse(path=tmp_path / "wh.duckdb")
    cfg = SimpleNamespace(baseline=SimpleNamespace(window_days=3), models=SimpleNamespace(min_events=5, min_days=2))
    days = [d.date().isoformat() for d in pd.date_range("2026-10-01", "2026-10-07")]
    for i, day in enumerate(days):
        shift = -12 if off_partition and i == 2 else 0  # (late events of the day before filed under this one)
        wh.replace_partitions("events", _events(day, 20 + 7 * i, shift_hours=shift), [day])
    scored = days[1:]
    whole_windows = []

    class Counted(ScoringInputs):
        def read_history(self, window):
            whole_windows.append(window)
            return super().read_history(window)

    fits = FitsAhead(Counted(wh, cfg), scored)
    try:
        for i, day in enumerate(scored):
            got = fits.take(i)
            assert got.active_users_ > 0
            _same_fit(RiskScorer().fit(ScoringInputs(wh, cfg)(day)["history"]), got)
        # a window with the late events went whole (3 of them hold 10-03); the others went fold by fold
        assert len(whole_windows) == (3 if off_partition else 0)
        assert fits._sent == set(ScoringInputs(wh, cfg).window(scored[-1]))
    finally:
        fits.close()
