"""Turn the generator's event tuples into files in the exact API formats, the way a real archive holds them.

Google Reports API ``activities.list`` pages (one folder per application and UTC day, newest first), Slack Audit
Logs ``/logs`` pages, Slack ``team.accessLogs`` pages, plus JSON Lines files of single records, a few ``.gz`` files
and overlapping pages (consecutive pages share records; every day re-reads the previous day's last hours, as a
poller with a lag window would).
"""

from __future__ import annotations

import gzip
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

# event kinds (second field of an event tuple)
LOGIN_OK, LOGIN_FAIL, LOGOUT, SUSPICIOUS, PASSWORD_EDIT, AUTHORIZE = range(6)
S_LOGIN, S_LOGOUT, S_DOWNLOAD, S_ANOMALY = range(10, 14)
_SLACK_ACTIONS = {S_LOGIN: "user_login", S_LOGOUT: "user_logout", S_DOWNLOAD: "file_downloaded",
                  S_ANOMALY: "anomaly"}
GOOGLE_LOGIN_KINDS = {LOGIN_OK, LOGIN_FAIL, LOGOUT, SUSPICIOUS, PASSWORD_EDIT}
SLACK_KINDS = {S_LOGIN, S_LOGOUT, S_DOWNLOAD, S_ANOMALY}

# Event tuple fields, in order (tuples keep 3 M events cheap):
#   ts (epoch s, float), kind, person index, ip, Network, user agent, Slack session id (0 = none), extra, tag
TS, KIND, PERSON, IP, NET, UA, SESSION, EXTRA, TAG = range(9)

GOOGLE_PAGE = 250
SLACK_PAGE = 500
ACCESS_PAGE = 1000
OVERLAP = 2  # records repeated at the start of the next page
LAG_REREAD_S = 2 * 3600  # each day also re-reads the previous day's last two hours

_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True)
class OrgIds:
    domain: str
    customer_id: str
    enterprise_id: str
    team_id: str
    org_name: str


def _rfc3339(ts: float) -> str:
    ms = int(round(ts * 1000))
    t = time.gmtime(ms // 1000)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            f".{ms % 1000:03d}Z")


class ArchiveWriter:
    """Writes one UTC day of events at a time; deterministic given the ``seed`` and the events."""

    def __init__(self, root: Path, people, ids: OrgIds, seed: int) -> None:
        self.root, self.people, self.ids = root, people, ids
        self.rng = random.Random(f"{seed}:archive")
        self.access_state: dict[tuple, list] = {}  # (person, ip, ua) -> [date_first, date_last, count, net]
        self.prev_tail: dict[str, list] = {}  # app -> yesterday's last-hours records (for the lag re-read)
        self.files = 0
        self.records = defaultdict(int)
        self._user_cache: dict[int, str] = {}
        self._ua_cache: dict[str, str] = {}
        self._location = _DUMPS({"type": "enterprise", "id": ids.enterprise_id, "name": ids.org_name,
                                 "domain": ids.domain.split(".")[0]})

    # ------------------------------------------------------------------------------------------------ records
    def _google_item(self, e) -> dict:
        p = self.people[e[PERSON]]
        ts, kind, extra = e[TS], e[KIND], e[EXTRA] or {}
        app = "token" if kind == AUTHORIZE else "login"
        login_ts = {"name": "login_timestamp", "intValue": str(int(ts * 1_000_000))}
        if kind == LOGIN_OK or kind == LOGIN_FAIL:
            params = [{"name": "login_type", "value": extra.get("login_type", "google_password")},
                      {"name": "login_challenge_method", "multiValue": extra.get("methods", ["password"])}]
            if kind == LOGIN_FAIL:
                params.append({"name": "login_failure_type", "value": "login_failure_invalid_password"})
            params += [{"name": "is_suspicious", "boolValue": bool(extra.get("suspicious", False))}, login_ts]
            events = [{"type": "login", "name": "login_success" if kind == LOGIN_OK else "login_failure",
                       "parameters": params}]
            if kind == LOGIN_OK and len(extra.get("methods", ())) > 1:  # 2SV: verification in the same activity
                events.insert(0, {"type": "login", "name": "login_verification", "parameters": [
                    {"name": "login_challenge_method", "multiValue": extra["methods"][1:]},
                    {"name": "login_challenge_status", "value": "Challenge Passed"},
                    {"name": "is_second_factor", "boolValue": True}, login_ts]})
        elif kind == LOGOUT:
            events = [{"type": "login", "name": "logout",
                       "parameters": [{"name": "login_type", "value": "google_password"}]}]
        elif kind == SUSPICIOUS:
            events = [{"type": "account_warning", "name": "suspicious_login",
                       "parameters": [{"name": "affected_email_address", "value": p.email}]}]
        elif kind == PASSWORD_EDIT:
            events = [{"type": "password_change", "name": "password_edit", "parameters": []}]
        else:  # AUTHORIZE
            name, client_id, client_type, scopes = extra["app"]
            events = [{"name": "authorize", "type": "auth", "parameters": [
                {"name": "client_id", "value": client_id},
                {"name": "app_name", "value": name},
                {"name": "client_type", "value": client_type},
                {"name": "num_response_bytes", "intValue": str(self.rng.randrange(400, 4000))},
                {"name": "scope_data", "multiMessageValue": [
                    {"parameter": [{"name": "scope_name", "value": s},
                                   {"name": "product_bucket", "multiValue": [_bucket(s)]}]} for s in scopes]},
                {"name": "scope", "multiValue": list(scopes)}]}]
        return {
            "kind": "admin#reports#activity",
            "id": {"time": _rfc3339(ts), "uniqueQualifier": str(self.rng.getrandbits(64) - (1 << 63)),
                   "applicationName": app, "customerId": self.ids.customer_id},
            "etag": f"\"{self.rng.getrandbits(128):032x}/{self.rng.getrandbits(64):016x}\"",
            "actor": {"callerType": "USER", "email": p.email, "profileId": p.profile_id},
            "ownerDomain": self.ids.domain,
            "ipAddress": e[IP],
            "events": events,
        }

    def _uuid4(self) -> str:
        h = f"{(self.rng.getrandbits(128) & ~(0xF << 76 | 0xC << 60)) | 4 << 76 | 0x8 << 60:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _user_json(self, pi: int) -> str:
        s = self._user_cache.get(pi)
        if s is None:
            p = self.people[pi]
            s = self._user_cache[pi] = _DUMPS({"id": p.slack_id, "name": p.display_name, "email": p.email,
                                               "team": self.ids.team_id})
        return s

    def _slack_entry(self, e) -> str:
        """One Audit Logs entry as JSON text (downloads, the bulk, from a template; the rest through json)."""
        kind, extra = e[KIND], e[EXTRA] or {}
        ua = self._ua_cache.get(e[UA])
        if ua is None:
            ua = self._ua_cache[e[UA]] = _DUMPS(e[UA])
        user = self._user_json(e[PERSON])
        session = f',"session_id":{e[SESSION]}' if e[SESSION] else ""
        ctx = f'{{"location":{self._location},"ua":{ua},"ip_address":"{e[IP]}"{session}}}'
        head = f'{{"id":"{self._uuid4()}","date_create":{int(e[TS])},"action":"{_SLACK_ACTIONS[kind]}",' \
               f'"actor":{{"type":"user","user":{user}}},'
        if kind == S_DOWNLOAD:
            fid = f"F0{self.rng.getrandbits(40):010X}"
            fname, ftype = extra.get("file", ("report.pdf", "pdf"))
            name = _DUMPS(fname)
            return (f'{head}"entity":{{"type":"file","file":{{"id":"{fid}","name":{name},"filetype":"{ftype}",'
                    f'"title":{name}}}}},"context":{ctx},"details":{{"url_private":"https://files.slack.com/'
                    f'files-pri/{self.ids.team_id}-{fid}/{name[1:-1]}"}}}}')
        body = f'{head}"entity":{{"type":"user","user":{user}}},"context":{ctx}'
        if kind == S_ANOMALY:
            net = e[NET]
            where = f"{net.city.name if net.city else ''}, {net.country}".lstrip(", ")
            details = {"action_timestamp": int(e[TS] * 1000), "location": where,
                       "reason": list(extra.get("reason", ["ip_address"])),
                       "previous_ip_address": extra.get("previous_ip", ""),
                       "previous_ua": extra.get("previous_ua", "")}
            if "ip_details" in extra:
                details["ip_address_details"] = extra["ip_details"]
            body += f',"details":{_DUMPS(details)}'
        return body + "}"

    # ------------------------------------------------------------------------------------------------- files
    def _write(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        if path.suffix == ".gz":
            # mtime=0 and no file name inside, so the bytes depend on the content only
            with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                gz.write(data)
        else:
            path.write_bytes(data)
        self.files += 1

    def _pages(self, folder: Path, records: list, size: int, wrap, gz: bool) -> None:
        """Newest-first pages of ``size``; each page after the first repeats the previous page's last records."""
        pages, i = [], 0
        while i < len(records) or not pages:
            start = max(0, i - OVERLAP) if pages else 0
            pages.append(records[start:i + size])
            i += size
        for n, page in enumerate(pages, 1):
            token = f"{self.rng.getrandbits(96):024x}" if n < len(pages) else None
            name = f"page-{n:04d}.json" + (".gz" if gz else "")
            self._write(folder / name, wrap(page, token))

    @staticmethod
    def _lines(records: list[str]) -> str:
        return "".join(r + "\n" for r in records)

    def write_day(self, day: str, events: list, day_index: int) -> None:
        events = sorted(events, key=lambda e: -e[TS])  # newest first, like both APIs
        login = [_DUMPS(self._google_item(e)) for e in events if e[KIND] in GOOGLE_LOGIN_KINDS]
        token = [_DUMPS(self._google_item(e)) for e in events if e[KIND] == AUTHORIZE]
        slack = [self._slack_entry(e) for e in events if e[KIND] in SLACK_KINDS]
        for name, recs in (("login", login), ("token", token), ("slack", slack)):
            self.records[name] += len(recs)

        def google(page, token_):
            body = f'{{"kind":"admin#reports#activities","etag":"\\"{self.rng.getrandbits(128):032x}\\""'
            if page:  # the API leaves "items" out of an empty page
                body += ',"items":[' + ",".join(page) + "]"
            if token_:
                body += f',"nextPageToken":"{token_}"'
            return body + "}"

        def audit(page, cursor):
            return '{"entries":[' + ",".join(page) + f'],"response_metadata":{{"next_cursor":"{cursor or ""}"}}}}'


        g = self.root / "google"
        self._pages(g / "login" / day, login, GOOGLE_PAGE, google, gz=day_index % 10 == 2)
        if day_index % 4 == 3:
            self._write(g / "token" / day / "items.jsonl", self._lines(token))
        else:
            self._pages(g / "token" / day, token, GOOGLE_PAGE, google, gz=False)
        s = self.root / "slack"
        if day_index % 7 == 5:
            self._write(s / "audit" / day / "entries.jsonl.gz" if day_index % 2 else
                        s / "audit" / day / "entries.jsonl", self._lines(slack))
        else:
            self._pages(s / "audit" / day, slack, SLACK_PAGE, audit, gz=day_index % 10 == 6)
        # lag-window re-read: yesterday's last hours again, as a page of their own
        for app, recs, wrap, folder in (("login", login, google, g / "login"), ("slack", slack, audit, s / "audit")):
            tail = self.prev_tail.get(app)
            if tail:
                self._write(folder / day / "reread-previous-day.json", wrap(tail, None))
            newest = events[0][TS] if events else 0
            kinds = GOOGLE_LOGIN_KINDS if app == "login" else SLACK_KINDS
            n_tail = sum(1 for e in events if e[KIND] in kinds and e[TS] > newest - LAG_REREAD_S)
            self.prev_tail[app] = recs[:n_tail]
        self._access_logs(s / "access_logs" / day, events)

    def _access_logs(self, folder: Path, events: list) -> None:
        """team.accessLogs: cumulative rows per (user, ip, ua); a day's pages hold the rows touched that day."""
        touched = {}
        for e in reversed(events):  # oldest first
            if e[KIND] not in SLACK_KINDS or e[KIND] == S_ANOMALY:
                continue
            key = (e[PERSON], e[IP], e[UA])
            st = self.access_state.get(key)
            ts = int(e[TS])
            if st is None:
                st = self.access_state[key] = [ts, ts, 0, e[NET]]
            st[1] = ts
            st[2] += 1 + int(self.rng.random() * 6)  # API calls besides the audited ones
            touched[key] = st
        rows = []
        for (pi, ip, ua), (first, last, count, net) in sorted(touched.items(), key=lambda kv: -kv[1][1]):
            p = self.people[pi]
            rows.append({"user_id": p.slack_id, "username": p.handle, "date_first": first, "date_last": last,
                         "count": count, "ip": ip, "user_agent": ua, "isp": net.isp, "country": net.country,
                         "region": net.city.subdivision if net.city else None})
        pages = [rows[i:i + ACCESS_PAGE] for i in range(0, len(rows), ACCESS_PAGE)] or [[]]
        for n, page in enumerate(pages, 1):
            self._write(folder / f"page-{n:04d}.json", _DUMPS(
                {"ok": True, "logins": page,
                 "paging": {"count": ACCESS_PAGE, "total": len(rows), "page": n, "pages": len(pages)}}))


def _bucket(scope: str) -> str:
    for key, bucket in (("gmail", "GMAIL"), ("mail.google", "GMAIL"), ("drive", "DRIVE"),
                        ("calendar", "CALENDAR"), ("contacts", "CONTACTS")):
        if key in scope:
            return bucket
    return "IDENTITY"
