"""ScryWarden reporters and analyzer (spec examples), and ActorProfiles (decay, batch invariance, state table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from watch_pipeline.core.profiles import (
    ACTIVITY_FIELD,
    STATE_COLUMNS,
    ActorProfiles,
    ExponentialDecayAnalyzer,
    Mandatory,
    Optional,
    learning_state,
    score_batch_faithful,
)

T0 = pd.Timestamp("2026-03-02 08:00:00")


def _events(rows: list[dict]) -> pd.DataFrame:
    """Events with the given columns; event ids in order, defaults for the rest."""
    frame = pd.DataFrame(rows)
    if "event_id" not in frame:
        frame["event_id"] = [f"e{i:05d}" for i in range(len(frame))]
    if "actor" not in frame:
        frame["actor"] = "alice@example.com"
    return frame


# ----------------------------------------------------------------------------------------------------------------
# Reporters: the spec's worked examples
# ----------------------------------------------------------------------------------------------------------------

STORED = {"hello": 2, "howdy": 1, "yo": 10}


@pytest.mark.parametrize(
    "value, expected",
    [("hello", 1 - 2 / 13), ("howdy", 1 - 1 / 13), ("yo", 0.0), ("brand-new", 1.0), ("", 1.0)],
)
def test_mandatory_stored_examples(value, expected):
    assert score_batch_faithful(Mandatory(), STORED, [value]) == [pytest.approx(expected)]


def test_mandatory_stored_examples_rounded_as_in_spec():
    scores = [score_batch_faithful(Mandatory(), STORED, [v])[0] for v in ("hello", "howdy", "yo")]
    assert [round(s, 3) for s in scores] == [0.846, 0.923, 0.0]


def test_mandatory_quantities_directly():
    # hello: G=3, S=13, c0=c=2, N=13, G'=3
    assert Mandatory().score(G=3, S=13, c0=2, c=2, N=13, G_prime=3) == pytest.approx(1 - 2 / 13)
    assert Mandatory().score(G=3, S=13, c0=0, c=0, N=13, G_prime=3) == 1.0
    assert Mandatory().score(missing=True, G=3, S=13, c0=2, c=2, N=13, G_prime=3) == 1.0
    assert Mandatory(weight=0.5).score(G=3, S=13, c0=1, c=1, N=13, G_prime=3) == pytest.approx(0.5 * (1 - 1 / 13))


def test_mandatory_new_actor_batch():
    assert score_batch_faithful(Mandatory(), {}, ["a", "a", "b", "a", "b", "c", ""]) == [1, 0, 1, 0, 0, 1, 1]


@pytest.mark.parametrize("count", [1, 5, 1000])
def test_mandatory_single_stored_value_is_never_anomalous(count):
    assert score_batch_faithful(Mandatory(), {"x": count}, ["x", "x", "x"]) == [0, 0, 0]


def test_mandatory_vectorised_equals_scalar():
    G = np.array([0, 1, 3, 3, 3])
    S = np.array([0, 5, 13, 13, 13])
    c = np.array([0, 5, 2, 1, 10])
    vec = Mandatory().score(G=G, S=S, c0=c, c=c, N=S, G_prime=G)
    scalar = [Mandatory().score(G=g, S=s, c0=k, c=k, N=s, G_prime=g) for g, s, k in zip(G, S, c)]
    np.testing.assert_allclose(vec, scalar)


def test_optional_examples():
    stored = {"x": 6, "": 4}
    assert score_batch_faithful(Optional(), stored, ["new"]) == [pytest.approx(0.4)]
    assert score_batch_faithful(Optional(), stored, ["x"]) == [0.0]
    assert score_batch_faithful(Optional(), stored, [""]) == [0.0]
    assert score_batch_faithful(Optional(), {}, ["first"]) == [1.0]
    assert Optional(weight=2).score(c=0, N=10, null_count=4) == pytest.approx(0.8)


def test_optional_unseen_value_scores_zero_when_field_always_reported():
    # spec bug 5, reproduced as specified
    assert score_batch_faithful(Optional(), {"x": 10}, ["y"]) == [0.0]


def test_faithful_batches_reproduce_batch_boundary_bug():
    stored = {"x": 1, "z": 1}
    in_one_batch = score_batch_faithful(Mandatory(), stored, ["y", "y", "y", "y", "x"])
    assert in_one_batch[-1] == 0.0
    counts = dict(stored)
    one_at_a_time = []
    for value in ["y", "y", "y", "y", "x"]:
        one_at_a_time += score_batch_faithful(Mandatory(), counts, [value])
        counts[value] = counts.get(value, 0) + 1
    assert one_at_a_time[-1] == pytest.approx(1 - 1 / 6)  # 0.833


# ----------------------------------------------------------------------------------------------------------------
# Analyzer
# ----------------------------------------------------------------------------------------------------------------


def _anomalies(actor: str, scores: list[float], per_event: int = 1) -> pd.DataFrame:
    return pd.DataFrame(
        {"actor": actor, "event_id": [f"{actor}-{i // per_event}" for i in range(len(scores))], "score": scores}
    )


def test_analyzer_single_anomaly_of_one_is_flagged_at_0_8():
    summary = ExponentialDecayAnalyzer().summarize(_anomalies("a", [1.0]))
    assert summary.loc[0, "weighted_mean"] == pytest.approx(0.8)
    assert bool(summary.loc[0, "malicious"])


def test_analyzer_mean_0_6_needs_eight_events():
    analyzer = ExponentialDecayAnalyzer()
    seven = analyzer.summarize(_anomalies("a", [0.6] * 7))
    eight = analyzer.summarize(_anomalies("a", [0.6] * 8))
    assert seven.loc[0, "weighted_mean"] == pytest.approx(0.6 - 0.2 * 0.9**6)
    assert not bool(seven.loc[0, "malicious"])
    assert bool(eight.loc[0, "malicious"])


def test_analyzer_counts_events_not_field_rows():
    one_event_eight_fields = _anomalies("a", [0.6] * 8, per_event=8)
    assert ExponentialDecayAnalyzer().summarize(one_event_eight_fields).loc[0, "count"] == 1
    assert not bool(ExponentialDecayAnalyzer().summarize(one_event_eight_fields).loc[0, "malicious"])
    assert bool(ExponentialDecayAnalyzer(faithful=True).summarize(one_event_eight_fields).loc[0, "malicious"])


def test_analyzer_select_and_empty():
    rows = pd.concat([_anomalies("a", [1.0]), _anomalies("b", [0.3, 0.0])], ignore_index=True)
    selected = ExponentialDecayAnalyzer().select(rows)
    assert list(selected["actor"]) == ["a"]
    assert ExponentialDecayAnalyzer().select(rows.iloc[0:0]).empty
    assert ExponentialDecayAnalyzer().summarize(_anomalies("c", [0.0, 0.0])).empty


# ----------------------------------------------------------------------------------------------------------------
# ActorProfiles
# ----------------------------------------------------------------------------------------------------------------

NO_DECAY = 1e9  # half-life in days: decay negligible


def test_profile_scores_against_earlier_events_only():
    countries = ["US", "US", "US", "US", "GB", "GB"]
    ev = _events([{"event_time": T0 + pd.Timedelta(hours=i), "geo_country": c} for i, c in enumerate(countries)])
    scores = ActorProfiles(fields=["geo_country"], half_life_days=NO_DECAY).score_samples(ev)
    assert list(scores["first_seen"]) == [True, False, False, False, True, False]
    assert list(scores["distinct"]) == [0, 1, 1, 1, 1, 2]
    np.testing.assert_allclose(scores["count"], [0, 1, 2, 3, 0, 1])
    np.testing.assert_allclose(scores["total"], [0, 1, 2, 3, 4, 5])
    # last GB: c=1, N=5, G=2 -> mean 2.5 > 1 -> 1 - 1/5
    np.testing.assert_allclose(scores["score"], [1, 0, 0, 0, 1, 1 - 1 / 5])
    assert list(scores["actor_events"]) == [0, 1, 2, 3, 4, 5]


def test_profile_fixes_batch_boundary_bug():
    history = _events([{"event_time": T0, "geo_country": "X"}, {"event_time": T0, "geo_country": "Z"}])
    batch = _events(
        [{"event_time": T0 + pd.Timedelta(minutes=i + 1), "geo_country": c} for i, c in enumerate("YYYYX")]
    ).assign(event_id=lambda f: "b" + f["event_id"])
    profiles = ActorProfiles(fields=["geo_country"], half_life_days=NO_DECAY).fit(history)
    assert profiles.score_samples(batch)["score"].iloc[-1] == pytest.approx(1 - 1 / 6)


def test_missing_values_are_not_counted_or_scored():
    ev = _events(
        [
            {"event_time": T0, "session_id": ""},
            {"event_time": T0 + pd.Timedelta(hours=1), "session_id": None},
            {"event_time": T0 + pd.Timedelta(hours=2), "session_id": "s1"},
        ]
    )
    scores = ActorProfiles(fields=["session_id"]).score_samples(ev)
    assert list(scores["value"]) == ["s1"]
    assert scores["total"].iloc[0] == 0 and scores["actor_events"].iloc[0] == 2


def test_numeric_asn_and_hour_bucket_values():
    ev = _events(
        [
            {"event_time": pd.Timestamp("2026-03-02 09:30"), "asn": 64500.0},
            {"event_time": pd.Timestamp("2026-03-02 23:59"), "asn": np.nan},
        ]
    )
    scores = ActorProfiles(fields=["asn", "hour_bucket"], hour_bucket_hours=4).score_samples(ev)
    values = set(zip(scores["field"], scores["value"]))
    assert values == {("asn", "64500"), ("hour_bucket", "08h"), ("hour_bucket", "20h")}


def test_decay_halves_counts_every_half_life():
    ev = _events(
        [
            {"event_time": pd.Timestamp("2026-03-01 10:00"), "geo_country": "US"},
            {"event_time": pd.Timestamp("2026-03-01 23:00"), "geo_country": "FR"},
            {"event_time": pd.Timestamp("2026-03-05 00:30"), "geo_country": "US"},
        ]
    )
    scores = ActorProfiles(fields=["geo_country"], half_life_days=2).score_samples(ev)
    last = scores.iloc[-1]
    assert last["count"] == pytest.approx(0.25)  # seen 4 days (two half-lives) earlier
    assert last["total"] == pytest.approx(0.5)
    assert last["events_seen"] == 1 and not last["first_seen"]
    assert last["days_since_last_seen"] == pytest.approx(3 + 14.5 / 24)


def _random_events(n: int, seed: int, days: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, days * 86_400, n))
    seconds[5:9] = seconds[5]  # ties in event_time, broken by event_id
    return pd.DataFrame(
        {
            "event_id": [f"ev{i:05d}" for i in rng.permutation(n)],
            "actor": rng.choice(["a@x", "b@x", "c@x", "d@x"], n, p=[0.5, 0.3, 0.15, 0.05]),
            "event_time": T0 + pd.to_timedelta(seconds, unit="s"),
            "geo_country": rng.choice(["US", "US", "US", "GB", "FR", None], n),
            "asn": rng.choice([7922.0, 7922.0, 3320.0, 15169.0, np.nan], n),
            "asn_org": rng.choice(["Comcast", "Comcast", "DTAG", "Google", ""], n),
            "ua_device_key": rng.choice(["Chrome|Mac OS X|Mac", "Slack|iOS|iPhone"], n),
            "login_type": rng.choice(["google_password", "", "saml"], n),
            "oauth_client": rng.choice(["", "", "", "Zoom", "Miro"], n),
            "session_id": rng.choice(["", "s1", "s2", "s3"], n),
        }
    )


def _reference_scores(events: pd.DataFrame, fields: list[str], half_life: float) -> pd.DataFrame:
    """Slow, obviously correct oracle: every event against all earlier ones, counts decayed by whole days."""
    ev = events.sort_values(["event_time", "event_id"]).reset_index(drop=True)
    rows = []
    for i, event in ev.iterrows():
        earlier = ev.iloc[:i]
        earlier = earlier[earlier["actor"] == event["actor"]]
        day = event["event_time"].normalize()
        for field in fields:
            value = event[field]
            if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
                continue
            known = earlier[earlier[field].notna() & (earlier[field] != "")]
            weights = 0.5 ** ((day - known["event_time"].dt.normalize()) / pd.Timedelta(days=1) / half_life)
            same = (known[field] == value).to_numpy()
            c, n, g = weights[same].sum(), weights.sum(), known[field].nunique()
            rows.append(
                {
                    "event_id": event["event_id"],
                    "field": field,
                    "count": c,
                    "total": n,
                    "distinct": g,
                    "first_seen": not same.any(),
                    "score": Mandatory().score(G=g, S=n, c0=c, c=c, N=n, G_prime=g) if same.any() else 1.0,
                }
            )
    return pd.DataFrame(rows)


def test_profile_matches_slow_reference():
    fields = ["geo_country", "asn_org", "oauth_client"]
    ev = _random_events(150, seed=3)
    got = ActorProfiles(fields=fields, half_life_days=3).score_samples(ev)
    want = _reference_scores(ev, fields, half_life=3)
    assert list(got["event_id"]) == list(want["event_id"])
    assert list(got["field"]) == list(want["field"])
    for col in ("count", "total", "score"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-9, atol=1e-12, err_msg=col)
    assert list(got["distinct"]) == list(want["distinct"])
    assert list(got["first_seen"]) == list(want["first_seen"])


def _assert_scores_equal(a: pd.DataFrame, b: pd.DataFrame):
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        if pd.api.types.is_float_dtype(a[col]):
            np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-12, err_msg=col)
        else:
            assert list(a[col]) == list(b[col]), col


@pytest.mark.parametrize("batch_size, n_events", [(1, 80), (7, 400), (500, 1100)])
def test_scores_do_not_depend_on_batch_size(batch_size, n_events):
    ev = _random_events(n_events, seed=11).sort_values(["event_time", "event_id"]).reset_index(drop=True)
    all_at_once = ActorProfiles(half_life_days=5).score_samples(ev)
    profiles = ActorProfiles(half_life_days=5)
    parts = []
    for start in range(0, len(ev), batch_size):
        chunk = ev.iloc[start : start + batch_size]
        parts.append(profiles.score_samples(chunk))
        profiles.partial_fit(chunk)
    _assert_scores_equal(pd.concat(parts, ignore_index=True), all_at_once)


def test_daily_update_from_stored_state_equals_fitting_all_days():
    ev = _random_events(400, seed=5)
    day = ev["event_time"].dt.normalize()
    last_day = day.max()
    full = ActorProfiles(half_life_days=4).fit(ev).to_frame()

    earlier = ActorProfiles(half_life_days=4).fit(ev[day < last_day])
    stored = earlier.to_frame()
    assert list(stored.columns) == STATE_COLUMNS
    restored = ActorProfiles.from_frame(stored, half_life_days=4)
    scores_from_state = restored.score_and_update(ev[day == last_day])
    _assert_scores_equal(restored.to_frame(), full)
    scores_all = ActorProfiles(half_life_days=4).score_samples(ev)
    scored_last_day = scores_all[scores_all["event_time"].dt.normalize() == last_day]
    _assert_scores_equal(scores_from_state, scored_last_day)


def test_score_samples_does_not_change_state():
    ev = _random_events(50, seed=1)
    profiles = ActorProfiles().fit(ev.iloc[:25])
    before = profiles.to_frame()
    profiles.score_samples(ev.iloc[25:])
    _assert_scores_equal(profiles.to_frame(), before)


def test_long_history_with_short_half_life_stays_finite():
    ev = _random_events(120, seed=2, days=900)
    profiles = ActorProfiles(fields=["geo_country"], half_life_days=0.5)
    scores = profiles.score_and_update(ev)
    assert np.isfinite(scores[["count", "total", "score"]].to_numpy()).all()
    assert np.isfinite(profiles.to_frame()["count"]).all()
    want = _reference_scores(ev, ["geo_country"], half_life=0.5)
    np.testing.assert_allclose(scores["count"], want["count"], rtol=1e-9, atol=1e-12)


def test_long_gap_after_stored_state_stays_finite():
    old = _events([{"event_time": T0, "geo_country": "US"}])
    later = _events([{"event_time": T0 + pd.Timedelta(days=2000), "geo_country": "US"}]).assign(event_id="late")
    profiles = ActorProfiles(fields=["geo_country"], half_life_days=0.5).fit(old)
    scores = profiles.score_and_update(later)
    assert not scores["first_seen"].iloc[0] and scores["count"].iloc[0] == 0.0  # forgotten weight, still known
    assert scores["days_since_last_seen"].iloc[0] == pytest.approx(2000)
    state = profiles.to_frame()
    assert np.isfinite(state["count"]).all() and state["count"].iloc[-1] == pytest.approx(1.0)


def test_learning_state():
    rows = []
    for d in range(6):
        rows += [{"actor": "busy@x", "event_time": T0 + pd.Timedelta(days=d, minutes=m)} for m in range(10)]
    rows += [{"actor": "new@x", "event_time": T0 + pd.Timedelta(minutes=m)} for m in range(80)]
    ev = _events(rows).assign(geo_country="US")
    profiles = ActorProfiles(fields=["geo_country"]).fit(ev)
    states = learning_state(profiles, min_events=50, min_days=5)
    assert states.to_dict("records") == [
        {"actor": "busy@x", "state": "established", "events": 60, "active_days": 6},
        {"actor": "new@x", "state": "learning", "events": 80, "active_days": 1},
    ]
    assert list(learning_state(profiles.to_frame(), min_events=70, min_days=1)["state"]) == ["learning", "established"]
    assert (profiles.to_frame()["field"] == ACTIVITY_FIELD).sum() == 2


def test_profile_values_are_read_alike_from_arrow_and_object_strings():
    """Text fields are stripped, and blank or missing values are not counted, whether the column holds pandas'
    Arrow-backed strings (what the warehouse returns) or Python objects."""
    values = [" FR", "FR ", "", None, "  ", "DE", "\tFR\n", None, "DE"]
    rows = [{"event_time": T0 + pd.Timedelta(hours=i), "geo_country": v, "actor": ["a@x", "b@x"][i % 2]}
            for i, v in enumerate(values)]
    arrow = _events(rows).astype({"geo_country": "str", "actor": "str"})
    objects = _events(rows).astype({"geo_country": object, "actor": object})
    assert isinstance(arrow["geo_country"].dtype, pd.StringDtype)
    results = []
    for frame in (arrow, objects):
        model = ActorProfiles(fields=("geo_country",))
        results.append((model.score_and_update(frame), model.to_frame()))
    pd.testing.assert_frame_equal(results[0][0], results[1][0])
    pd.testing.assert_frame_equal(results[0][1], results[1][1])
    scores = results[0][0]
    assert sorted(set(scores["value"])) == ["DE", "FR"]  # stripped; blanks and missing not counted
    assert len(scores) == 5
