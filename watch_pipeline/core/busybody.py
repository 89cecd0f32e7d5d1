"""Busybody's per-user isolation forest: its features (reproducible), and a fixed model.

See ``busybody-spec.md``. :class:`BusybodyFeatures` builds Busybody's feature matrix ``[x, y, z, tf-idf(ASN org),
tf-idf(version-stripped UA)]`` (``faithful=True``) or that plus explicit novelty features (default).
:class:`UserForest` is the fixed per-user model: vectorisers fit on the training window only, unseen-value features,
a threshold calibrated on training scores (not ``contamination=0``), ``random_state``, one job per model, a minimum
history, and no empty-vocabulary crash. :func:`fit_user_models` fits one model per user in parallel across users;
:func:`serialize` / :func:`deserialize` store models as versioned blobs. :func:`faithful_busybody_alerts` is the
peer's behaviour on modern scikit-learn, kept as a baseline for the quality bench.
"""

from __future__ import annotations

import pickle
import re
import warnings
from typing import Iterable

import numpy as np
import pandas as pd
import sklearn
from joblib import Parallel, delayed
from sklearn.ensemble import IsolationForest
from sklearn.feature_extraction.text import TfidfVectorizer

MODEL_FORMAT = "watch_pipeline.busybody.UserForest"
MODEL_VERSION = 1

# Busybody's version-stripping regex, verbatim: deletes every run of letters/punctuation that contains a digit.
UA_VERSION_RE = re.compile(r"[a-zA-Z:._()-]*([0-9]+[a-zA-Z:._()-]*)+")

# Novelty features of the fixed mode: (feature name, event column).
NOVELTY_COLUMNS = (("unseen_asn_org", "asn_org"), ("unseen_ua_key", "ua_device_key"), ("unseen_country", "geo_country"))


def strip_ua_versions(ua: str) -> str:
    """Busybody's UA normalisation: ``Chrome/61.0.3163.100`` -> ``Chrome/``; ``Win64`` and ``x64)`` vanish."""
    return UA_VERSION_RE.sub("", ua or "")


def unit_sphere(lat, lon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Busybody's point on the unit sphere: phi = (90 - lat) deg, theta = (lon + 180) deg;
    x = -sin(phi) cos(theta), y = cos(phi), z = sin(phi) sin(theta)."""
    phi = np.radians(90.0 - np.asarray(lat, dtype=float))
    theta = np.radians(np.asarray(lon, dtype=float) + 180.0)
    return -np.sin(phi) * np.cos(theta), np.cos(phi), np.sin(phi) * np.sin(theta)


def _text(events: pd.DataFrame, column: str) -> pd.Series:
    if column not in events.columns:
        return pd.Series([""] * len(events), index=events.index, dtype=object)
    return events[column].astype(object).where(events[column].notna(), "").astype(str)


class _Tfidf:
    """``TfidfVectorizer(binary=True)`` (Busybody's settings) that yields zero columns instead of crashing on an
    empty vocabulary (spec bug 6)."""

    def __init__(self):
        self.vectorizer: TfidfVectorizer | None = TfidfVectorizer(binary=True)

    def fit(self, docs: Iterable[str]) -> "_Tfidf":
        try:
            self.vectorizer.fit(list(docs))
        except ValueError:  # empty vocabulary: no token in any document
            self.vectorizer = None
        return self

    def transform(self, docs: Iterable[str]) -> np.ndarray:
        docs = list(docs)
        if self.vectorizer is None:
            return np.zeros((len(docs), 0))
        return self.vectorizer.transform(docs).toarray()

    def names(self, prefix: str) -> list[str]:
        if self.vectorizer is None:
            return []
        return [f"{prefix}:{t}" for t in self.vectorizer.get_feature_names_out()]


class BusybodyFeatures:
    """Busybody's feature matrix for one user's events.

    ``faithful=True``: exactly ``[x, y, z, tf-idf(asn_org), tf-idf(strip_ua_versions(ua))]`` where ``ua`` is the user
    agent, or Google's ``login_type`` when the event has none (as Busybody did). Missing coordinates give 0, 0, 0
    (Busybody crashed on them).

    Default (fixed) mode: the UA text is the user agent only, plus ``geo_missing`` and the unseen-value features
    ``unseen_asn_org``, ``unseen_ua_key``, ``unseen_country`` (1 when the non-empty value was not in the training
    events). ``fit_transform`` computes them leave-one-out on the training events (1 for a value seen only once), so
    the forest has something to split on; ``transform`` compares with the whole training set.
    """

    def __init__(self, faithful: bool = False):
        self.faithful = faithful

    def _ua_docs(self, events: pd.DataFrame) -> list[str]:
        ua = _text(events, "user_agent")
        if self.faithful:
            ua = ua.where(ua != "", _text(events, "login_type"))
        return [strip_ua_versions(u) for u in ua]

    def fit(self, events: pd.DataFrame) -> "BusybodyFeatures":
        self.asn_ = _Tfidf().fit(_text(events, "asn_org"))
        self.ua_ = _Tfidf().fit(self._ua_docs(events))
        if not self.faithful:
            self.seen_ = {col: _text(events, col).value_counts() for _, col in NOVELTY_COLUMNS}
        return self

    def _geo(self, events: pd.DataFrame) -> np.ndarray:
        lat = pd.to_numeric(events.get("geo_lat", pd.Series(np.nan, index=events.index)), errors="coerce")
        lon = pd.to_numeric(events.get("geo_lon", pd.Series(np.nan, index=events.index)), errors="coerce")
        missing = (lat.isna() | lon.isna()).to_numpy()
        xyz = np.column_stack(unit_sphere(lat.fillna(0.0), lon.fillna(0.0)))
        xyz[missing] = 0.0
        if self.faithful:
            return xyz
        return np.column_stack([xyz, missing.astype(float)])

    def _novelty(self, events: pd.DataFrame, leave_one_out: bool) -> np.ndarray:
        cols = []
        for _, col in NOVELTY_COLUMNS:
            values = _text(events, col)
            counts = values.map(self.seen_[col]).fillna(0).to_numpy()
            threshold = 1 if leave_one_out else 0  # leave-one-out: the event itself does not count
            cols.append(((counts <= threshold) & (values != "").to_numpy()).astype(float))
        return np.column_stack(cols)

    def _matrix(self, events: pd.DataFrame, leave_one_out: bool) -> np.ndarray:
        parts = [
            self._geo(events),
            self.asn_.transform(_text(events, "asn_org")),
            self.ua_.transform(self._ua_docs(events)),
        ]
        if not self.faithful:
            parts.append(self._novelty(events, leave_one_out))
        return np.column_stack(parts) if len(events) else np.zeros((0, len(self.feature_names())))

    def transform(self, events: pd.DataFrame) -> np.ndarray:
        return self._matrix(events, leave_one_out=False)

    def fit_transform(self, events: pd.DataFrame) -> np.ndarray:
        return self.fit(events)._matrix(events, leave_one_out=True)

    def feature_names(self) -> list[str]:
        names = ["x", "y", "z"] + ([] if self.faithful else ["geo_missing"])
        names += self.asn_.names("asn_org") + self.ua_.names("ua")
        if not self.faithful:
            names += [name for name, _ in NOVELTY_COLUMNS]
        return names


class UserForest:
    """The fixed per-user isolation forest (sklearn style): ``fit(events_of_one_user)``, ``score_samples(events)``.

    Scores follow scikit-learn (lower = more abnormal): the forest's ``score_samples`` minus ``novelty_weight`` per
    unseen value (ASN organisation, UA device key, country). The penalty is needed because an isolation forest
    cannot isolate a point beyond the training range any better than the training edge, and a feature that is
    constant in training (a never-seen value) is never split on. ``threshold_`` is the ``threshold_quantile`` of the
    training scores (unseen flags leave-one-out) minus ``margin``; ``predict`` gives -1 below it.

    With fewer than ``min_events`` events or ``min_days`` active days the model stays in ``state == 'learning'``:
    scores are NaN and nothing is predicted abnormal (cold start).
    """

    def __init__(
        self,
        min_events: int = 20,
        min_days: int = 3,
        n_estimators: int = 100,
        threshold_quantile: float = 0.01,
        margin: float = 0.05,
        novelty_weight: float = 0.1,
        random_state: int = 0,
    ):
        self.novelty_weight = novelty_weight
        self.min_events = min_events
        self.min_days = min_days
        self.n_estimators = n_estimators
        self.threshold_quantile = threshold_quantile
        self.margin = margin
        self.random_state = random_state
        self.state = "learning"
        self.forest_: IsolationForest | None = None

    def fit(self, events: pd.DataFrame) -> "UserForest":
        actors = events["actor"].dropna().unique() if "actor" in events.columns else []
        self.actor = str(actors[0]) if len(actors) else None
        times = pd.to_datetime(events["event_time"])
        self.n_events_ = int(len(events))
        self.active_days_ = int(times.dt.normalize().nunique())
        self.train_start_ = times.min() if len(events) else pd.NaT
        self.train_end_ = times.max() if len(events) else pd.NaT
        self.forest_ = None
        self.threshold_ = np.nan
        if self.n_events_ < max(self.min_events, 2) or self.active_days_ < self.min_days:
            self.state = "learning"
            return self
        self.features_ = BusybodyFeatures(faithful=False)
        X = self.features_.fit_transform(events)
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators, max_samples="auto", random_state=self.random_state, n_jobs=1
        ).fit(X)
        train_scores = self.forest_.score_samples(X) - self.novelty_weight * self._unseen_count(X)
        self.threshold_ = float(np.quantile(train_scores, self.threshold_quantile) - self.margin)
        self.state = "established"
        return self

    def score_samples(self, events: pd.DataFrame) -> np.ndarray:
        if self.forest_ is None:
            return np.full(len(events), np.nan)
        if len(events) == 0:
            return np.zeros(0)
        X = self.features_.transform(events)
        return self.forest_.score_samples(X) - self.novelty_weight * self._unseen_count(X)

    def _unseen_count(self, X: np.ndarray) -> np.ndarray:
        return X[:, -len(NOVELTY_COLUMNS) :].sum(axis=1)

    def predict(self, events: pd.DataFrame) -> np.ndarray:
        """-1 for an outlier, 1 otherwise (always 1 while learning)."""
        scores = self.score_samples(events)
        return np.where(scores < self.threshold_, -1, 1)  # NaN compares False -> 1

    def explain(self, events: pd.DataFrame) -> pd.DataFrame:
        """Per event: event_id, actor, score, threshold, outlier, unseen_* flags, state."""
        scores = self.score_samples(events)
        out = pd.DataFrame(
            {
                "event_id": events["event_id"].to_numpy() if "event_id" in events.columns else np.arange(len(events)),
                "actor": self.actor,
                "score": scores,
                "threshold": self.threshold_,
                "outlier": scores < self.threshold_,
            }
        )
        for name, col in NOVELTY_COLUMNS:
            if self.forest_ is None:
                out[name] = False
            else:
                values = _text(events, col)
                out[name] = ((~values.isin(self.features_.seen_[col].index)) & (values != "")).to_numpy()
        out["state"] = self.state
        return out


def _fit_one(actor: str, events: pd.DataFrame, params: dict) -> tuple[str, UserForest]:
    return actor, UserForest(**params).fit(events)


def fit_user_models(
    events: pd.DataFrame,
    history_limit_days: int,
    n_jobs: int = 2,
    as_of: pd.Timestamp | None = None,
    **params,
) -> dict[str, UserForest]:
    """One :class:`UserForest` per actor on events newer than ``as_of - history_limit_days`` (``as_of`` defaults to
    the newest event). Parallel across users with joblib; each forest uses one job. ``params`` go to UserForest."""
    if len(events) == 0:
        return {}
    times = pd.to_datetime(events["event_time"])
    as_of = times.max() if as_of is None else pd.Timestamp(as_of)
    window = events[(times > as_of - pd.Timedelta(days=history_limit_days)) & (times <= as_of)]
    window = window[window["actor"].notna()]
    window = window.sort_values(["event_time", "event_id"], kind="stable")
    groups = [(str(actor), frame) for actor, frame in window.groupby("actor", sort=True)]
    if n_jobs == 1:
        fitted = [_fit_one(actor, frame, params) for actor, frame in groups]
    else:
        fitted = Parallel(n_jobs=n_jobs)(delayed(_fit_one)(actor, frame, params) for actor, frame in groups)
    return dict(fitted)


def serialize(model: UserForest) -> bytes:
    """A versioned blob of the model (pickle), for storage in the ``user_models`` asset."""
    payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "sklearn": sklearn.__version__, "model": model}
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def deserialize(blob: bytes) -> UserForest:
    """The model from :func:`serialize`; ValueError for another format or model version (refit instead)."""
    payload = pickle.loads(blob)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError("not a serialized UserForest")
    if payload.get("version") != MODEL_VERSION:
        raise ValueError(f"UserForest version {payload.get('version')} != {MODEL_VERSION}; refit the model")
    if payload.get("sklearn") != sklearn.__version__:
        warnings.warn(f"model pickled with scikit-learn {payload.get('sklearn')}, running {sklearn.__version__}")
    return payload["model"]


def faithful_busybody_alerts(
    events: pd.DataFrame,
    train_cutoff,
    random_state: int | None = 0,
    apps: tuple[str, ...] | None = ("login", "slack_access"),
    history_limit_days: float | None = None,
) -> pd.DataFrame:
    """Busybody's alerts on modern scikit-learn: the quality bench's floor.

    Its inputs (Google login events without ``login_failure``, Slack access rows; ``apps=None`` keeps all), events
    missing an IP or UA text dropped; per user the vectorisers are fit on all the user's events (old and new),
    ``IsolationForest(contamination='auto')`` on events before ``train_cutoff`` ("incremental") or, for a user with
    no earlier events, on the new ones ("full"); alerts where ``predict == -1`` among events at or after the cutoff.
    Busybody's crashes and wrong-index bug are not reproduced; ``random_state`` is set for repeatability.
    Returns actor, event_id, event_time, score (higher = more anomalous), mode.
    """
    cutoff = pd.Timestamp(train_cutoff)
    ev = events
    if apps is not None:
        ev = ev[ev["app"].isin(apps)]
    if "action" in ev.columns:
        ev = ev[ev["action"] != "login_failure"]
    ev = ev[ev["actor"].notna() & ev["event_time"].notna() & (_text(ev, "ip") != "")]
    features = BusybodyFeatures(faithful=True)
    ev = ev[[d != "" or u != "" for d, u in zip(_text(ev, "user_agent"), _text(ev, "login_type"))]]
    if history_limit_days is not None and len(ev):
        ev = ev[ev["event_time"] >= ev["event_time"].max() - pd.Timedelta(days=history_limit_days)]
    ev = ev.sort_values(["event_time", "event_id"], kind="stable")
    alerts = []
    for actor, user in ev.groupby("actor", sort=True):
        new = (user["event_time"] >= cutoff).to_numpy()
        if not new.any():
            continue
        X = features.fit_transform(user)
        mode = "incremental" if (~new).any() else "full"
        train = X[~new] if mode == "incremental" else X[new]
        forest = IsolationForest(contamination="auto", random_state=random_state, n_jobs=1).fit(train)
        test = user[new]
        flagged = forest.predict(X[new]) == -1
        scores = -forest.score_samples(X[new])
        alerts.append(
            pd.DataFrame(
                {
                    "actor": actor,
                    "event_id": test["event_id"].to_numpy()[flagged],
                    "event_time": test["event_time"].to_numpy()[flagged],
                    "score": scores[flagged],
                    "mode": mode,
                }
            )
        )
    if not alerts:
        return pd.DataFrame(
            {"actor": [], "event_id": [], "event_time": pd.Series(dtype="datetime64[ns]"), "score": [], "mode": []}
        )
    return pd.concat(alerts, ignore_index=True)
