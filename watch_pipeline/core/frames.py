"""Frame helpers shared by the detectors."""

from __future__ import annotations

import numpy as np
import pandas as pd


def in_time_order(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` is sorted by (event_time, event_id) already (then a stable sort on them changes nothing):
    a linear check, where the sort costs a factorization of the ids and a take of every column."""
    if len(frame) < 2:
        return True
    t = frame["event_time"].to_numpy()
    if t.dtype.kind != "M" or np.isnat(t).any():
        return False
    later, tie = t[1:] > t[:-1], t[1:] == t[:-1]
    if not (later | tie).all():
        return False
    if not tie.any():
        return True
    ids = frame["event_id"].to_numpy(dtype=object)
    try:
        return bool((ids[1:][tie] >= ids[:-1][tie]).all())
    except TypeError:  # ids that do not compare (missing, mixed types): let the sort decide
        return False


def sort_by_time_and_id(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame.sort_values(["event_time", "event_id"], kind="stable")``, skipped when the rows are in that order
    (the warehouse reads a day's events in it for the detectors)."""
    return frame if in_time_order(frame) else frame.sort_values(["event_time", "event_id"], kind="stable")


def take_strings(values, codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``values[codes]`` as a pandas string array (None and code -1 -> NA): the ``str`` column a frame infers from
    those values.

    The per-distinct values are made a string array once (not at all when they are one already) and gathered with
    ``take`` in C: building a 1 M-row string column from a Python object array costs seconds under pandas'
    Arrow-backed ``str`` dtype."""
    if isinstance(values, pd.Series) and values.dtype == "str":
        return values.array.take(codes, allow_fill=True)
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.to_numpy(dtype=object)
    return pd.array(values, dtype="str").take(codes, allow_fill=True)
