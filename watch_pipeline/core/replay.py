"""Replay the detection chain day by day on plain frames: archive -> events -> profiles -> peaks -> scores -> alerts.

The quality bench and tests use this to run the same core functions the Dagster assets call, without a warehouse.
It mirrors the assets' order: a day's events are scored against the profiles as of the end of the previous day
(``score_and_update`` scores each event before counting it), the learning state is the previous day's, peaks compare
the day with the stored key statistics of earlier days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from watch_pipeline.core.peaks import PeakConfig, find_peaks
from watch_pipeline.core.profiles import ActorProfiles, learning_state

PREVIOUS_EVENTS_DAYS = 1  # how far back `previous_events` reaches (impossible travel, session jumps)


def load_events(archive_dir: str | Path, city_db: str | Path | None, asn_db: str | Path | None,
                user_domain: str | None = None, days: list[str] | None = None) -> pd.DataFrame:
    """Read an archive and return normalised, enriched events (schema.EVENT_COLUMNS) sorted by time."""
    from watch_pipeline.core.archive import scan_archive
    from watch_pipeline.core.enrich import enrich_events
    from watch_pipeline.core.geo import GeoIPLookup
    from watch_pipeline.core.identity import IdentityMapper
    from watch_pipeline.core.normalize import normalise
    from watch_pipeline.core.raw import records_frame
    from watch_pipeline.core.schema import SOURCE_GOOGLE, SOURCE_SLACK_ACCESS, SOURCE_SLACK_AUDIT

    scan = scan_archive(archive_dir, days=days)
    now = dt.datetime(2000, 1, 1)
    frames = {s: records_frame(scan.records[s], "", now) for s in scan.records}
    norm = normalise(frames[SOURCE_GOOGLE], frames[SOURCE_SLACK_AUDIT], frames[SOURCE_SLACK_ACCESS], None)
    mapper = IdentityMapper(user_domain, None)
    ids = pd.Series(list(norm.slack_ids), dtype=object)
    mapper.learn_ids(ids, pd.Series([norm.slack_ids[i] for i in ids], dtype=object))
    with GeoIPLookup(str(city_db) if city_db else None, str(asn_db) if asn_db else None) as geo:
        events = enrich_events(norm.events, geo, mapper).events
    events = events.copy()
    events["event_time"] = pd.to_datetime(events["event_time"]).astype("datetime64[ns]")
    return events.sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)


@dataclass
class ReplayResult:
    scores: pd.DataFrame  # RiskScorer rows of every day
    alerts: pd.DataFrame  # schema.ALERT_COLUMNS of every day
    peaks: pd.DataFrame
    learning: dict = field(default_factory=dict)  # day -> learning frame (last one kept small: only counts)


def replay(events: pd.DataFrame, scorer_config: dict | None = None, alert_settings: dict | None = None,
           half_life_days: float = 30.0, min_events: int = 20, min_days: int = 7,
           history_days: int = 28, peak_config: PeakConfig | None = None, progress=None) -> ReplayResult:
    """Run profiles, peaks, the risk scorer and alert building over ``events`` one UTC day at a time."""
    from watch_pipeline.core.alerts import build_alerts
    from watch_pipeline.core.scoring import RiskScorer

    ev = events.copy()
    ev["event_time"] = pd.to_datetime(ev["event_time"]).astype("datetime64[ns]")
    day_of = ev["event_time"].dt.normalize()
    profiles = ActorProfiles(half_life_days=half_life_days)
    peak_config = peak_config or PeakConfig()
    key_stats: list[pd.DataFrame] = []
    all_scores, all_alerts, all_peaks = [], [], []
    learning_counts = {}
    days = sorted(day_of.unique())
    for i, day in enumerate(days):
        today = ev[day_of == day]
        learning = learning_state(profiles, min_events=min_events, min_days=min_days)
        profile_scores = profiles.score_and_update(today)
        window_start = day - pd.Timedelta(days=history_days)
        history_stats = pd.concat(key_stats[-history_days:], ignore_index=True) if key_stats else None
        stats, peaks = find_peaks(today, history_stats, peak_config, day=day.date())
        key_stats.append(stats)
        history = ev[(day_of >= window_start) & (day_of < day)]
        previous = ev[(day_of >= day - pd.Timedelta(days=PREVIOUS_EVENTS_DAYS)) & (day_of < day)]
        scorer = RiskScorer(scorer_config).fit(history)
        scores = scorer.score_samples(today, profile_scores=profile_scores, learning=learning, peaks=peaks,
                                      forest_scores=None, previous_events=previous)
        alerts = build_alerts(scores, peaks, day.date(), alert_settings)
        all_scores.append(scores)
        all_alerts.append(alerts)
        all_peaks.append(peaks)
        learning_counts[day.date().isoformat()] = learning["state"].value_counts().to_dict() if len(learning) else {}
        if progress:
            progress(i + 1, len(days))
    cat = lambda fs: pd.concat([f for f in fs if len(f)], ignore_index=True) if any(len(f) for f in fs) else fs[0]
    return ReplayResult(cat(all_scores), cat(all_alerts), cat(all_peaks), learning_counts)
