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
