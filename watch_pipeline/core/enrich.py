"""The enrichment step of the ``events`` table: canonical actor, GeoIP City + ASN, user agent.

Everything is computed once per *distinct* IP / user agent / actor and mapped back onto the events with
``pd.factorize`` codes, so the cost grows with the number of distinct values rather than with the events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from watch_pipeline.core import schema
from watch_pipeline.core.geo import GeoIPLookup, expand
from watch_pipeline.core.identity import IdentityMapper
from watch_pipeline.core.useragent import parse_user_agents

SLACK_SOURCES = (schema.SOURCE_SLACK_AUDIT, schema.SOURCE_SLACK_ACCESS)
UNRESOLVED_SAMPLE = 20


@dataclass
class EnrichResult:
    events: pd.DataFrame  # schema.EVENT_COLUMNS, in order
    quarantined: pd.DataFrame  # the input rows with a malformed IP, plus `reason`
    stats: dict = field(default_factory=dict)


def _text(col: pd.Series) -> pd.Series:
    """Strings with missing values as ''."""
    return col.fillna("").astype(str)


def canonical_actors(events: pd.DataFrame, identity: IdentityMapper) -> tuple[pd.Series, list[str]]:
    """The canonical actor of every event, and the identities that could not be made an email.

    ``actor`` is kept when the normaliser filled it (then only canonicalised); otherwise it comes from
    ``actor_raw``, except for Slack rows without an email, whose Slack user id (``actor_id``) is resolved to the
    email other entries of the same batch pair it with (Audit Logs entries carry both).
    """
    actor = _text(events["actor"])
    actor_raw = _text(events["actor_raw"])
    actor_id = _text(events["actor_id"])
    is_slack = events["source"].isin(SLACK_SOURCES).to_numpy()
    has_email_raw = actor_raw.str.contains("@", regex=False).to_numpy()
    has_email_actor = actor.str.contains("@", regex=False).to_numpy()

    # learn Slack id -> email from every Slack row that names both
    learn = is_slack & (actor_id != "").to_numpy()
    identity.learn_ids(actor_id[learn & has_email_actor], actor[learn & has_email_actor])
    identity.learn_ids(actor_id[learn & has_email_raw], actor_raw[learn & has_email_raw])

    candidate = actor.where(actor != "", actor_raw)
    needs_id = is_slack & ~has_email_actor & ~has_email_raw & (actor_id != "").to_numpy()
    if needs_id.any():
        resolved = identity.resolve(actor_id[needs_id], note=False)
        candidate.loc[needs_id] = resolved.where(resolved != "", candidate[needs_id])
    canonical = identity.canonical(candidate)
    # nothing but a vendor id: keep the id as the actor (a stable per-user key), never domain-qualified
    only_id = (canonical == "").to_numpy() & (actor_id != "").to_numpy()
    if only_id.any():
        canonical[only_id] = actor_id[only_id].str.lower()

    # unresolved: a named actor that is still not an email (no user_domain, no map entry, no Slack pairing)
    bad = (~canonical.str.contains("@", regex=False)) & ((candidate != "") | (actor_id != ""))
    unresolved: list[str] = []
    if bad.any():
        unresolved = list(pd.unique(candidate[bad].where(candidate[bad] != "", actor_id[bad])))
        for name in unresolved:
            identity.note_unresolved(name)
    return canonical, unresolved


def enrich_events(events: pd.DataFrame, geo: GeoIPLookup | None, identity: IdentityMapper,
                  geo_known: dict[str, tuple | None] | None = None) -> EnrichResult:
    """Add the enrichment columns to normalised events (``schema.EVENT_BASE_COLUMNS``).

    ``geo=None`` (no database configured) gives null geo columns but still marks internal addresses and
    quarantines malformed ones. Events whose IP is malformed go to ``quarantined`` instead of ``events``.
    `geo_known`: addresses looked up already (``GeoIPLookup.lookup_rows`` with the same databases).
    """
    base_names = [c.name for c in schema.EVENT_BASE_COLUMNS]
    missing = [c for c in base_names if c not in events.columns]
    if missing:
        raise KeyError(f"events lack the base columns {missing}")
    if list(events.columns) != base_names:  # (selecting them anyway would copy every column)
        events = events[base_names]
    geo_lookup = geo if geo is not None else GeoIPLookup(None, None)

    ip = events["ip"]
    codes, uniques = pd.factorize(ip, use_na_sentinel=True)
    table = geo_lookup.lookup_distinct(uniques, known=geo_known if geo is not None else None)
    geo_cols = expand(table, codes, events.index)
    malformed_codes = geo_lookup.stats.malformed_positions
    bad_ip = np.isin(codes, malformed_codes) if malformed_codes else np.zeros(len(events), dtype=bool)

    ua_cols = parse_user_agents(events["user_agent"])
    ua_distinct = int(ua_cols.attrs.get("distinct", 0))
    actor, unresolved = canonical_actors(events, identity)

    # assemble column by column: no copy of the (wide) input frame
    columns = {name: events[name] for name in base_names}
    columns["actor"] = actor
    columns.update({name: geo_cols[name] for name in geo_cols.columns})
    columns.update({name: ua_cols[name] for name in ua_cols.columns})
    out = pd.DataFrame(columns, index=events.index, columns=[c.name for c in schema.EVENT_COLUMNS], copy=False)

    # (a boolean filter of the wide frame costs ~50 ms a day even when it keeps nothing)
    quarantined = events[bad_ip].copy() if bad_ip.any() else events.iloc[:0].copy()
    quarantined["reason"] = "malformed ip: " + _text(quarantined["ip"])
    kept = out[~bad_ip] if bad_ip.any() else out

    stats = {
        "events_in": len(events),
        "events_out": len(kept),
        "geo_configured": geo_lookup.configured,
        **geo_lookup.stats.as_dict(),
        "malformed_ip_events": int(bad_ip.sum()),
        "malformed_ip_values": geo_lookup.malformed[:UNRESOLVED_SAMPLE],
        "ua_distinct": ua_distinct,
        "unresolved_identities": len(unresolved),
        "unresolved_sample": [str(u) for u in unresolved[:UNRESOLVED_SAMPLE]],
    }
    return EnrichResult(events=kept, quarantined=quarantined, stats=stats)
