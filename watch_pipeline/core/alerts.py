"""Alerts: one row per incident from the risk scores and the org-level peaks, with stable ids and suppression.

* An actor's risky events (``RiskScorer`` rows) that fall in the same window (default 24 h, aligned on the UTC
  epoch so the window does not depend on which events arrived first) form one incident. Its ``alert_id`` is derived
  from the actor, the window's start and the kind family only, so re-runs, backfills and late evidence update the
  same alert instead of creating a new one.
* Password-spray and credential-stuffing peaks become org-level alerts with actor ``'*'``.
* Allowlists (user, IP CIDR, ASN, country, UA family; each with an optional expiry) mark alerts ``suppressed`` with
  the matching entry; suppressed alerts are kept, not dropped.
"""

from __future__ import annotations

import ipaddress
import json

import pandas as pd

from watch_pipeline.core.schema import ALERT_COLUMNS, stable_id

ALERT_COLUMN_NAMES = [c.name for c in ALERT_COLUMNS]
ORG_KINDS = ("password_spray", "credential_stuffing")
MAX_EVIDENCE = 200
BULLET = "• "

DEFAULT_SETTINGS: dict = {
    "min_score": 0.5,
    "group_window_hours": 24,
    "org_kinds": ORG_KINDS,
    "severity_thresholds": {"critical": 0.9, "high": 0.75, "medium": 0.5},
    "suppress": {},
}


SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
MAX_ORG_REASONS = 8


def severity_of(score: float, thresholds: dict | None = None) -> str:
    t = thresholds or DEFAULT_SETTINGS["severity_thresholds"]
    for name in ("critical", "high", "medium"):
        if score >= t[name]:
            return name
    return "low"


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in ALERT_COLUMN_NAMES})
    for c in ("first_seen", "last_seen"):
        frame[c] = frame[c].astype("datetime64[ns]")
    frame["score"] = frame["score"].astype(float)
    frame["suppressed"] = frame["suppressed"].astype(bool)
    return frame


def _json_list(text) -> list:
    try:
        value = json.loads(text) if isinstance(text, str) and text else []
    except ValueError:
        return [str(text)]
    return value if isinstance(value, list) else [str(value)]


def _window_start(times: pd.Series, hours: float) -> pd.Series:
    """Start of the fixed, epoch-aligned window each time falls in."""
    ns = int(hours * 3600 * 10**9)
    values = times.to_numpy(dtype="datetime64[ns]").astype("int64")
    return pd.Series(pd.to_datetime(values // ns * ns), index=times.index)


def build_alerts(scores: pd.DataFrame | None, peaks: pd.DataFrame | None, day, settings: dict | None = None) -> pd.DataFrame:
    """Incidents of one day (schema.ALERT_COLUMNS) from risk-score rows and peaks; see the module docstring."""
    cfg = {**DEFAULT_SETTINGS, **(settings or {})}
    the_day = pd.Timestamp(day).date()
    rows = _actor_alerts(scores, peaks, the_day, cfg) + _org_alerts(peaks, the_day, cfg)
    if not rows:
        return _empty()
    alerts = pd.DataFrame(rows, columns=ALERT_COLUMN_NAMES)
    alerts = _suppress(alerts, scores, the_day, cfg.get("suppress") or {})
    alerts["first_seen"] = pd.to_datetime(alerts["first_seen"]).astype("datetime64[ns]")
    alerts["last_seen"] = pd.to_datetime(alerts["last_seen"]).astype("datetime64[ns]")
    alerts["score"] = alerts["score"].astype(float)
    alerts["suppressed"] = alerts["suppressed"].astype(bool)
    return alerts.sort_values(["score", "alert_id"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _actor_alerts(scores, peaks, the_day, cfg) -> list[dict]:
    if scores is None or len(scores) == 0:
        return []
    s = scores.copy()
    s["event_time"] = pd.to_datetime(s["event_time"]).astype("datetime64[ns]")
    s = s[s["actor"].notna() & (s["actor"].astype(str) != "")]
    s["window"] = _window_start(s["event_time"], float(cfg["group_window_hours"]))
    # mass-download peaks of an actor add their reason to that actor's incident (never open one on their own:
    # analysts download a lot)
    extra: dict[str, list[str]] = {}
    if peaks is not None and len(peaks) and "kind" in peaks:
        for p in peaks[peaks["kind"] == "mass_download"].itertuples(index=False):
            extra.setdefault(str(p.actor), []).append(str(p.reason))
    out = []
    for (actor, window), g in s.groupby(["actor", "window"], sort=True):
        score = float(g["score"].max())
        if score < cfg["min_score"]:
            continue
        g = g.sort_values(["event_time", "event_id"], kind="stable")
        risky = g[g["score"] >= cfg["min_score"]]
        reasons: list[str] = []
        for text in risky.sort_values("score", ascending=False, kind="stable")["reasons"]:
            for r in _json_list(text):
                if r not in reasons:
                    reasons.append(r)
        reasons += [r for r in extra.get(actor, []) if r not in reasons]
        kinds = list(dict.fromkeys(k for ks in risky["kinds"].astype(str) for k in ks.split(",") if k))
        if actor in extra:
            kinds.append("mass_download")
        ips = list(dict.fromkeys(risky["ip"].astype(str)))
        contexts = [json.loads(c) for c in risky["context"].drop_duplicates() if isinstance(c, str) and c]
        states = set(risky["model_state"].astype(str))
        out.append({
            "alert_id": stable_id("actor", actor, pd.Timestamp(window).isoformat(), "account"),
            "partition_date": the_day,
            "actor": actor,
            "first_seen": risky["event_time"].min(),
            "last_seen": risky["event_time"].max(),
            "score": round(score, 4),
            "severity": severity_of(score, cfg["severity_thresholds"]),
            "kinds": ",".join(dict.fromkeys(kinds)),
            "reasons": "\n".join(BULLET + r for r in reasons),
            "evidence_event_ids": ",".join(risky["event_id"].astype(str).head(MAX_EVIDENCE)),
            "model_state": "learning" if "learning" in states else "established",
            "ips": ",".join(ips),
            "context": json.dumps({"networks": contexts[:5], "events": int(len(risky))}),
            "suppressed": False,
            "suppressed_reason": "",
        })
    return out


def _org_alerts(peaks, the_day, cfg) -> list[dict]:
    """One alert per org-level kind and day: a campaign from hundreds of IPs is one incident, not hundreds."""
    if peaks is None or len(peaks) == 0 or "kind" not in peaks:
        return []
    out = []
    start = pd.Timestamp(the_day)
    org = peaks[peaks["kind"].isin(cfg["org_kinds"])]
    for kind, group in org.groupby("kind", sort=True):
        group = group.sort_values(["score", "observed"], ascending=False, kind="stable")
        ips, actors = [], []
        for p in group.itertuples(index=False):
            ips += [str(x[0]) for x in _json_list(getattr(p, "top_ips", "[]"))]
            actors += [str(x[0]) for x in _json_list(getattr(p, "top_actors", "[]"))]
        ips, actors = list(dict.fromkeys(ips)), list(dict.fromkeys(actors))
        score = float(group["score"].max())
        severities = [sv for sv in group["severity"] if isinstance(sv, str) and sv in SEVERITY_RANK]
        severity = max(severities, key=SEVERITY_RANK.get) if severities else severity_of(score)
        shown = [BULLET + str(r) for r in group["reason"].head(MAX_ORG_REASONS)]
        if len(group) > 1:
            shown.insert(0, f"{BULLET}{len(group)} {kind.replace('_', ' ')} sources on {the_day.isoformat()}, "
                            f"{len(ips)} IPs, {len(actors)} accounts targeted")
        if len(group) > MAX_ORG_REASONS:
            shown.append(f"{BULLET}… and {len(group) - MAX_ORG_REASONS} more sources")
        out.append({
            "alert_id": stable_id("org", the_day.isoformat(), kind),
            "partition_date": the_day,
            "actor": "*",
            "first_seen": start,
            "last_seen": start + pd.Timedelta(days=1) - pd.Timedelta(seconds=1),
            "score": round(score, 4),
            "severity": severity,
            "kinds": str(kind),
            "reasons": "\n".join(shown),
            "evidence_event_ids": "",
            "model_state": "org",
            "ips": ",".join(ips),
            "context": json.dumps({"top_ips": ips[:10], "top_actors": actors[:10], "sources": len(group)}),
            "suppressed": False,
            "suppressed_reason": "",
        })
    return out


# ----------------------------------------------------------------------------------------------------------------
# suppression
# ----------------------------------------------------------------------------------------------------------------


def _active(entries, the_day) -> list[tuple[str, str]]:
    """(value, label) of the allowlist entries not expired on ``the_day``; entries may be plain strings."""
    out = []
    for e in entries or []:
        value, expires = (e.get("value"), e.get("expires")) if isinstance(e, dict) else (e, None)
        if value is None:
            continue
        if expires not in (None, ""):
            if pd.Timestamp(expires).date() < the_day:
                continue
        label = f"{value}" + (f" (until {pd.Timestamp(expires).date()})" if expires not in (None, "") else "")
        out.append((str(value), label))
    return out


def _row_matches(ip: str, ctx: dict, rules: dict) -> str | None:
    """The first allowlist entry an evidence row (IP + context) matches, or None."""
    if rules["cidrs"] and ip:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            addr = None
        for net, label in rules["cidrs"]:
            if addr is not None and addr.version == net.version and addr in net:
                return f"cidr {label}"
    asn = str(ctx.get("asn") or "").removeprefix("AS")
    for value, label in rules["asns"]:
        if asn and value.upper().removeprefix("AS") == asn:
            return f"asn {label}"
    country = str(ctx.get("country") or "").upper()
    for value, label in rules["countries"]:
        if country and value.upper() == country:
            return f"country {label}"
    family = str(ctx.get("ua_browser") or "").lower()
    for value, label in rules["ua_families"]:
        if family and value.lower() == family:
            return f"ua_family {label}"
    return None


def _suppress(alerts: pd.DataFrame, scores: pd.DataFrame | None, the_day, suppress: dict) -> pd.DataFrame:
    """Mark alerts matching an allowlist: the user, or every evidence row matching a network / UA entry."""
    if not suppress:
        return alerts
    rules = {k: _active(suppress.get(k), the_day) for k in ("users", "cidrs", "asns", "countries", "ua_families")}
    cidrs = []
    for value, label in rules["cidrs"]:
        try:
            cidrs.append((ipaddress.ip_network(value, strict=False), label))
        except ValueError:
            continue
    rules["cidrs"] = cidrs
    users = {v.lower(): label for v, label in rules["users"]}
    evidence = {}
    if scores is not None and len(scores):
        evidence = {str(e): (str(ip), c) for e, ip, c in zip(scores["event_id"], scores["ip"], scores["context"])}
    for i, a in alerts.iterrows():
        reason = None
        if str(a["actor"]).lower() in users:
            reason = f"user {users[str(a['actor']).lower()]}"
        elif a["actor"] != "*":
            ids = [e for e in str(a["evidence_event_ids"]).split(",") if e]
            matches = []
            for e in ids:
                ip, ctx = evidence.get(e, ("", "{}"))
                matches.append(_row_matches(ip, json.loads(ctx) if ctx else {}, rules))
            if ids and all(m is not None for m in matches):
                reason = matches[0]
        else:  # org-level: suppressed when all its source IPs are allowlisted
            ips = [x for x in str(a["ips"]).split(",") if x]
            matches = [_row_matches(ip, {}, rules) for ip in ips]
            if ips and all(m is not None for m in matches):
                reason = matches[0]
        if reason:
            alerts.at[i, "suppressed"] = True
            alerts.at[i, "suppressed_reason"] = f"allowlisted {reason}"
    return alerts
