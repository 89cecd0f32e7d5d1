"""Identity mapping: one canonical, lower-case email per person across Google and Slack.

Busybody's ``analysis.<module>.user_domain`` / ``user_map`` semantics, in the order its README documents:
``user_domain`` turns a bare user name (no '@') into ``name@domain``, then ``user_map`` maps a source identity to
the canonical one. Busybody's code actually looked ``user_map`` up *before* appending the domain, so a map keyed
by the bare name keeps working here too: the domain-qualified name is looked up first, then the bare one.
Emails are compared case-insensitively (map keys are lower-cased) and the output is lower-case.

Slack user ids are resolved to emails from the log entries themselves: Audit Logs entries carry both
``actor.user.id`` and ``actor.user.email``; ``team.accessLogs`` rows carry only ``user_id`` and ``username``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _clean(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def _clean_series(values: pd.Series) -> pd.Series:
    """Stripped strings, missing values as '' (vectorised)."""
    return values.fillna("").astype(str).str.strip()


class IdentityMapper:
    """Canonicalise actors (``canonical``) and resolve Slack user ids to emails (``learn_ids`` / ``resolve``)."""

    def __init__(self, user_domain: str | None = None, user_map: dict[str, str] | None = None) -> None:
        self.user_domain = (user_domain or "").strip().lstrip("@").lower() or None
        self.user_map = {str(k).strip().lower(): str(v).strip().lower() for k, v in (user_map or {}).items()}
        self.id_to_email: dict[str, str] = {}
        self.unresolved: list[str] = []  # ids / names that could not be turned into an email, first-seen order
        self._unresolved_seen: set[str] = set()

    def canonical_one(self, actor: object) -> str:
        """The canonical form of one identity ('' stays '')."""
        name = _clean(actor).lower()
        if not name:
            return ""
        qualified = f"{name}@{self.user_domain}" if self.user_domain and "@" not in name else name
        return self.user_map.get(qualified) or self.user_map.get(name) or qualified

    def canonical(self, actors: pd.Series) -> pd.Series:
        """Canonical lower-case identities for ``actors`` (one computation per distinct value)."""
        codes, uniques = pd.factorize(actors, use_na_sentinel=True)
        mapped = pd.array([self.canonical_one(a) for a in uniques] + [""], dtype="str")
        return pd.Series(mapped.take(np.where(codes < 0, len(uniques), codes)), index=actors.index, name=actors.name)

    def learn_ids(self, ids: pd.Series, emails: pd.Series) -> int:
        """Remember id -> email pairs seen together (rows whose email has no '@' are ignored); returns how many
        new ids were learnt. A later email for a known id replaces the earlier one."""
        pairs = pd.DataFrame({"id": _clean_series(ids).to_numpy(), "email": _clean_series(emails).str.lower().to_numpy()})
        pairs = pairs[(pairs["id"] != "") & pairs["email"].str.contains("@", regex=False)]
        pairs = pairs.drop_duplicates("id", keep="last")
        before = len(self.id_to_email)
        self.id_to_email.update(zip(pairs["id"], pairs["email"]))
        return len(self.id_to_email) - before

    def resolve(self, ids: pd.Series, note: bool = True) -> pd.Series:
        """Emails for ``ids`` ('' when unknown; with ``note``, unknown non-empty ids join :attr:`unresolved`)."""
        codes, uniques = pd.factorize(_clean_series(ids), use_na_sentinel=True)
        found = []
        for uid in uniques:
            email = self.id_to_email.get(uid, "")
            if note and uid and not email:
                self.note_unresolved(uid)
            found.append(email)
        table = pd.array(found + [""], dtype="str")
        return pd.Series(table.take(np.where(codes < 0, len(uniques), codes)), index=ids.index)

    def note_unresolved(self, identity: str) -> None:
        """Record an identity that could not be resolved to an email (listed once)."""
        if identity and identity not in self._unresolved_seen:
            self._unresolved_seen.add(identity)
            self.unresolved.append(identity)
