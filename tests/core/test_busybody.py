"""Busybody features (spec), the fixed UserForest, parallel fitting, blobs, and the faithful baseline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from watch_pipeline.core.busybody import (
    BusybodyFeatures,
    UserForest,
    deserialize,
    faithful_busybody_alerts,
    fit_user_models,
    serialize,
    strip_ua_versions,
    unit_sphere,
)

CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/61.0.3163.100 Safari/537.36"
)
T0 = pd.Timestamp("2026-03-02 08:00:00")


# ----------------------------------------------------------------------------------------------------------------
# Feature construction against the spec
# ----------------------------------------------------------------------------------------------------------------


def test_strip_ua_versions_spec_examples():
    assert strip_ua_versions("Chrome/61.0.3163.100") == "Chrome/"
    assert strip_ua_versions("Win64") == ""
    assert strip_ua_versions("x64)") == ""
    stripped = strip_ua_versions(CHROME_WIN)
    assert not any(ch.isdigit() for ch in stripped)
    assert stripped == "Mozilla/ (Windows NT ; ;  AppleWebKit/ (KHTML, like Gecko) Chrome/ Safari/"
    assert strip_ua_versions("google_password") == "google_password"
    assert strip_ua_versions("") == ""


def test_browser_update_leaves_stripped_ua_unchanged():
    assert strip_ua_versions(CHROME_WIN.replace("61.0.3163.100", "120.0.6099.71")) == strip_ua_versions(CHROME_WIN)


@pytest.mark.parametrize(
    "lat, lon, expected",
    [
        (90.0, 0.0, (0.0, 1.0, 0.0)),  # north pole: phi = 0
        (-90.0, 10.0, (0.0, -1.0, 0.0)),
        (0.0, 0.0, (1.0, 0.0, 0.0)),  # phi = 90, theta = 180: x = -cos(180) = 1
        (0.0, 90.0, (0.0, 0.0, -1.0)),  # theta = 270: z = sin(270) = -1
        (0.0, -180.0, (-1.0, 0.0, 0.0)),  # theta = 0
    ],
)
def test_unit_sphere_formulas(lat, lon, expected):
    np.testing.assert_allclose(np.array(unit_sphere(lat, lon), dtype=float), expected, atol=1e-12)


def test_unit_sphere_general_point_and_norm():
    lat, lon = 52.52, 13.40
    phi, theta = math.radians(90 - lat), math.radians(lon + 180)
    x, y, z = unit_sphere([lat], [lon])
    np.testing.assert_allclose(
        [x[0], y[0], z[0]], [-math.sin(phi) * math.cos(theta), math.cos(phi), math.sin(phi) * math.sin(theta)]
    )
    lats, lons = np.linspace(-89, 89, 7), np.linspace(-179, 179, 7)
    np.testing.assert_allclose(np.linalg.norm(np.column_stack(unit_sphere(lats, lons)), axis=1), 1.0)


def _login(i: int, **overrides) -> dict:
    row = {
        "event_id": f"e{i:05d}",
        "actor": "alice@example.com",
        "event_time": T0 + pd.Timedelta(hours=6 * i),
        "app": "login",
        "action": "login_success",
        "ip": "203.0.113.7",
        "geo_lat": 52.52,
        "geo_lon": 13.40,
        "geo_country": "DE",
        "asn": 3320,
        "asn_org": "Deutsche Telekom AG",
        "user_agent": CHROME_WIN,
        "ua_device_key": "Chrome|Windows|Other",
        "login_type": "google_password",
    }
    row.update(overrides)
    return row


def test_faithful_features_layout_and_binary_tfidf():
    ev = pd.DataFrame(
        [
            _login(0),
            _login(1, asn_org="Comcast Cable Comcast Cable", geo_lat=40.7, geo_lon=-74.0),
            _login(2, user_agent=""),  # Google event without UA: Busybody used login_type
        ]
    )
    features = BusybodyFeatures(faithful=True)
    X = features.fit_transform(ev)
    names = features.feature_names()
    assert names[:3] == ["x", "y", "z"]
    assert names[3:] == [
        "asn_org:ag",
        "asn_org:cable",
        "asn_org:comcast",
        "asn_org:deutsche",
        "asn_org:telekom",
        "ua:applewebkit",
        "ua:chrome",
        "ua:gecko",
        "ua:google_password",
        "ua:khtml",
        "ua:like",
        "ua:mozilla",
        "ua:nt",
        "ua:safari",
        "ua:windows",
    ]
    np.testing.assert_allclose(X[:, :3], np.column_stack(unit_sphere(ev["geo_lat"], ev["geo_lon"])))
    # binary tf: "Comcast Cable Comcast Cable" -> both tokens weigh the same (same idf), unit L2 norm
    asn = X[1, 3:8]
    np.testing.assert_allclose(asn, [0, 1 / math.sqrt(2), 1 / math.sqrt(2), 0, 0])
    # smoothed idf: token in 2 of 3 docs -> idf = ln(4/3) + 1; all three Telekom tokens equal, L2-normalised
    np.testing.assert_allclose(X[0, 3:8], [1 / math.sqrt(3), 0, 0, 1 / math.sqrt(3), 1 / math.sqrt(3)])
    ua_row2 = X[2, 8:]
    assert ua_row2[names[8:].index("ua:google_password")] == pytest.approx(1.0)
    assert np.linalg.norm(X[0, 8:]) == pytest.approx(1.0)
    assert X[0, 8 + names[8:].index("ua:google_password")] == 0.0


def test_fixed_features_use_training_vocabulary_and_unseen_flags():
    train = pd.DataFrame([_login(i) for i in range(5)] + [_login(5, asn_org="Vodafone GmbH", asn=3209)])
    features = BusybodyFeatures()
    X_train = features.fit_transform(train)
    names = features.feature_names()
    unseen_asn = names.index("unseen_asn_org")
    # leave-one-out in training: the value seen once counts as unseen, the common one not
    assert list(X_train[:, unseen_asn]) == [0, 0, 0, 0, 0, 1]
    new = pd.DataFrame([_login(9, asn_org="Evil Hosting Ltd", ua_device_key="Firefox|Linux|Other"), _login(10)])
    X_new = features.transform(new)
    assert X_new.shape[1] == len(names)  # vocabulary from training only: no columns for "evil", "hosting"
    assert not any("evil" in n for n in names)
    assert list(X_new[:, unseen_asn]) == [1, 0]
    assert list(X_new[:, names.index("unseen_ua_key")]) == [1, 0]
    assert list(X_new[:, names.index("unseen_country")]) == [0, 0]


def test_empty_vocabulary_and_missing_coordinates_do_not_crash():
    blank = {"asn_org": "", "user_agent": "", "login_type": "", "geo_lat": None, "geo_lon": None}
    ev = pd.DataFrame([_login(i, **blank) for i in range(3)])
    for faithful in (True, False):
        X = BusybodyFeatures(faithful=faithful).fit_transform(ev)
        assert X.shape[0] == 3 and np.isfinite(X).all()
        np.testing.assert_allclose(X[:, :3], 0.0)


# ----------------------------------------------------------------------------------------------------------------
# UserForest
# ----------------------------------------------------------------------------------------------------------------


def _history(actor: str, n: int, seed: int) -> pd.DataFrame:
    """A user who works from two home networks with small location jitter, plus a phone."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        phone = rng.random() < 0.3
        rows.append(
            _login(
                i,
                event_id=f"{actor}-{i:04d}",
                actor=actor,
                geo_lat=52.52 + rng.normal(0, 0.05),
                geo_lon=13.40 + rng.normal(0, 0.05),
                asn_org="Telefonica Germany" if phone else rng.choice(["Deutsche Telekom AG", "Vodafone GmbH"]),
                user_agent="Slack/4.33.90 (iOS 17.1)" if phone else CHROME_WIN,
                ua_device_key="Slack|iOS|iPhone" if phone else "Chrome|Windows|Other",
            )
        )
    return pd.DataFrame(rows)


def test_user_forest_flags_takeover_and_reports_unseen_values():
    history = _history("alice@example.com", 80, seed=1)
    model = UserForest(random_state=7).fit(history)
    assert model.state == "established" and np.isfinite(model.threshold_)
    normal = _history("alice@example.com", 5, seed=2).assign(event_id=lambda f: "n" + f["event_id"])
    attack = pd.DataFrame(
        [
            _login(
                999,
                event_id="attack",
                geo_lat=6.45,
                geo_lon=3.39,
                geo_country="NG",
                asn_org="Evil Hosting Ltd",
                user_agent="python-requests/2.31",
                ua_device_key="Python Requests|Other|Other",
            )
        ]
    )
    assert model.predict(attack)[0] == -1
    assert (model.predict(normal) == 1).all()
    assert model.score_samples(attack)[0] < model.score_samples(normal).min()
    why = model.explain(attack).iloc[0]
    assert why["unseen_asn_org"] and why["unseen_ua_key"] and why["unseen_country"] and why["outlier"]
    assert not model.explain(normal)[["unseen_asn_org", "unseen_ua_key", "unseen_country"]].any().any()


def test_constant_behaviour_is_not_flagged():
    history = pd.DataFrame([_login(i) for i in range(30)])
    model = UserForest().fit(history)
    assert (model.predict(history) == 1).all()
    assert model.predict(pd.DataFrame([_login(50)]))[0] == 1


def test_cold_start_single_event_and_empty_vocab():
    one = pd.DataFrame([_login(0)])
    model = UserForest().fit(one)
    assert model.state == "learning"
    assert np.isnan(model.score_samples(one)).all()
    assert (model.predict(one) == 1).all()
    assert model.explain(one)["state"].iloc[0] == "learning"
    few_days = pd.DataFrame([_login(i, event_time=T0 + pd.Timedelta(minutes=i)) for i in range(40)])
    assert UserForest(min_events=20, min_days=3).fit(few_days).state == "learning"
    blank = pd.DataFrame([_login(i, asn_org="", user_agent="", ua_device_key="") for i in range(30)])
    blank_model = UserForest().fit(blank)
    assert blank_model.state == "established"
    assert np.isfinite(blank_model.score_samples(blank)).all()


def test_deterministic_with_random_state():
    history = _history("bob@example.com", 60, seed=3)
    probe = _history("bob@example.com", 10, seed=4)
    a = UserForest(random_state=3).fit(history).score_samples(probe)
    b = UserForest(random_state=3).fit(history).score_samples(probe)
    c = UserForest(random_state=4).fit(history).score_samples(probe)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def _org() -> pd.DataFrame:
    return pd.concat([_history(f"user{u}@example.com", 40 + 5 * u, seed=u) for u in range(4)], ignore_index=True)


def test_parallel_fit_equals_serial_fit():
    events = _org()
    serial = fit_user_models(events, history_limit_days=60, n_jobs=1, n_estimators=25)
    parallel = fit_user_models(events, history_limit_days=60, n_jobs=2, n_estimators=25)
    assert sorted(serial) == sorted(parallel) == [f"user{u}@example.com" for u in range(4)]
    for actor, model in serial.items():
        probe = events[events["actor"] == actor]
        np.testing.assert_array_equal(model.score_samples(probe), parallel[actor].score_samples(probe))
        assert model.threshold_ == parallel[actor].threshold_
        assert model.forest_.n_estimators == 25 and model.forest_.n_jobs == 1


def test_history_limit_window():
    events = _history("carol@example.com", 60, seed=5)  # 6-hour steps: 15 days
    models = fit_user_models(events, history_limit_days=5, n_jobs=1)
    newest = events["event_time"].max()
    expected = int((events["event_time"] > newest - pd.Timedelta(days=5)).sum())
    assert models["carol@example.com"].n_events_ == expected < len(events)


def test_serialize_round_trip_and_version_check():
    history = _history("dave@example.com", 50, seed=6)
    model = UserForest().fit(history)
    blob = serialize(model)
    assert isinstance(blob, bytes)
    restored = deserialize(blob)
    np.testing.assert_array_equal(restored.score_samples(history), model.score_samples(history))
    import pickle

    payload = pickle.loads(blob)
    payload["version"] = 999
    with pytest.raises(ValueError):
        deserialize(pickle.dumps(payload))
    with pytest.raises(ValueError):
        deserialize(pickle.dumps({"something": "else"}))


# ----------------------------------------------------------------------------------------------------------------
# Faithful baseline
# ----------------------------------------------------------------------------------------------------------------


def test_faithful_alerts_only_new_events_and_survive_edge_cases():
    events = _org()
    cutoff = T0 + pd.Timedelta(days=8)
    newcomer = pd.DataFrame([_login(0, event_id="solo", actor="new@example.com", event_time=cutoff, asn_org="")])
    drive = pd.DataFrame([_login(1, event_id="drive", app="drive", event_time=cutoff)])
    alerts = faithful_busybody_alerts(pd.concat([events, newcomer, drive], ignore_index=True), cutoff)
    assert set(alerts.columns) == {"actor", "event_id", "event_time", "score", "mode"}
    assert (alerts["event_time"] >= cutoff).all()
    assert "drive" not in set(alerts["event_id"])
    assert set(alerts.loc[alerts["actor"] == "new@example.com", "mode"]) <= {"full"}
    # the floor: with contamination='auto' it alerts on a good share of perfectly ordinary new events
    assert len(alerts) > 0
    again = faithful_busybody_alerts(pd.concat([events, newcomer, drive], ignore_index=True), cutoff)
    pd.testing.assert_frame_equal(alerts, again)
