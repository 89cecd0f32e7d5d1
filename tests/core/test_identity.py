"""IdentityMapper: Busybody's user_domain / user_map semantics and Slack id resolution."""

from __future__ import annotations

import pandas as pd

from watch_pipeline.core.identity import IdentityMapper


def test_user_domain_appends_to_bare_names_only():
    m = IdentityMapper(user_domain="Example.com")
    out = m.canonical(pd.Series(["alice", "Bob@Other.org", "CAROL", "", None]))
    assert out.tolist() == ["alice@example.com", "bob@other.org", "carol@example.com", "", ""]


def test_user_map_after_domain_and_case_insensitive():
    m = IdentityMapper(user_domain="example.com", user_map={
        "Alice.Smith@Example.COM": "alice@example.com",  # mixed-case key
        "asmith@oldcorp.com": "Alice@Example.com",  # mixed-case value
        "jdoe@example.com": "john.doe@example.com",  # keyed by the domain-qualified name
        "bot": "automation@example.com",  # keyed by the bare name (Busybody's code order)
    })
    actors = pd.Series(["ALICE.SMITH@example.com", "asmith@OLDCORP.com", "JDoe", "bot", "dave", "Eve@Example.com"],
                       index=list("abcdef"))
    out = m.canonical(actors)
    assert list(out.index) == list("abcdef")
    assert out.tolist() == ["alice@example.com", "alice@example.com", "john.doe@example.com",
                            "automation@example.com", "dave@example.com", "eve@example.com"]


def test_no_domain_leaves_bare_names_alone():
    m = IdentityMapper(None, {"alice": "alice@example.com"})
    assert m.canonical(pd.Series(["Alice", "bob"])).tolist() == ["alice@example.com", "bob"]


def test_slack_ids_learnt_from_entries():
    m = IdentityMapper()
    learnt = m.learn_ids(pd.Series(["U1", "U2", "U3", ""]),
                         pd.Series(["Alice@Example.com", "bob@example.com", "not-an-email", "x@example.com"]))
    assert learnt == 2
    out = m.resolve(pd.Series(["U1", "U2", "U3", "U9", "U1", None]))
    assert out.tolist() == ["alice@example.com", "bob@example.com", "", "", "alice@example.com", ""]
    assert m.unresolved == ["U3", "U9"]
    m.resolve(pd.Series(["U9"]))
    assert m.unresolved == ["U3", "U9"]  # listed once
