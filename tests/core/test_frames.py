"""sort_by_time_and_id: the stable (event_time, event_id) sort, skipped only when it would change nothing."""

import numpy as np
import pandas as pd
import pytest

from watch_pipeline.core.frames import in_time_order, sort_by_time_and_id


def _frame(times, ids):
    return pd.DataFrame({"event_time": pd.to_datetime(times), "event_id": ids, "row": range(len(ids))})


@pytest.mark.parametrize("times, ids, ordered", [
    (["2026-01-01 10:00", "2026-01-01 10:00", "2026-01-01 10:01"], ["a", "b", "a"], True),
    (["2026-01-01 10:00", "2026-01-01 10:00", "2026-01-01 10:01"], ["b", "a", "a"], False),  # a tie out of id order
    (["2026-01-01 10:01", "2026-01-01 10:00"], ["a", "b"], False),
    (["2026-01-01 10:00", "2026-01-01 10:00"], ["a", "a"], True),  # equal keys: a stable sort keeps them
    (["2026-01-01 10:00", None], ["a", "b"], False),  # NaT: the sort decides where it goes
    (["2026-01-01 10:00", "2026-01-01 10:00"], ["a", None], False),  # ids that do not compare
    (["2026-01-01 10:00", "2026-01-01 10:00"], ["z", "é"], True),  # code point order, as the sort's
])
def test_in_time_order_says_whether_the_sort_is_a_no_op(times, ids, ordered):
    frame = _frame(times, ids)
    assert in_time_order(frame) is ordered
    if ordered:
        assert frame["row"].tolist() == frame.sort_values(["event_time", "event_id"], kind="stable")["row"].tolist()


def test_sort_by_time_and_id_equals_the_stable_sort():
    rng = np.random.default_rng(4)
    times = pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 50, 400), unit="s")
    frame = _frame(times, [f"e{i}" for i in rng.integers(0, 30, 400)])
    want = frame.sort_values(["event_time", "event_id"], kind="stable")
    pd.testing.assert_frame_equal(sort_by_time_and_id(frame), want)
    assert sort_by_time_and_id(want) is want  # in order already: returned as it is
