"""Small helpers shared by the asset modules: windows, metadata, previews."""


from collections.abc import Sequence

import dagster as dg
import pandas as pd

from watch_pipeline.partitions import daily_partitions

OWNERS = ["team:security-data"]


def daily_asset(*, kinds=frozenset({"python", "duckdb"}), **kwargs):
    """@dg.asset for a daily partitioned asset that runs a range in one run (it loops over its partition keys and
    replaces each day's window)."""
    return dg.asset(
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        owners=OWNERS,
        kinds=set(kinds),
        **kwargs,
    )


def column_schema(columns) -> dict:
    """Definition metadata that shows a table's columns (from core/schema.py) in the UI before the first run."""
    return {
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(c.name, c.sql_type.lower(), description=c.doc) for c in columns]
        )
    }


def partition_days(context: dg.AssetExecutionContext) -> list[str]:
    """The UTC days this run covers (one, or a range under BackfillPolicy.single_run)."""
    if not context.has_partition_key and not context.has_partition_key_range:
        raise dg.Failure("this asset is partitioned by day: choose a partition or a range")
    return sorted(context.partition_keys)


def markdown_preview(df: pd.DataFrame, columns: Sequence[str] | None = None, rows: int = 10) -> dg.MetadataValue:
    """A short markdown table of the first rows (long cells clipped) for the UI."""
    if df is None or df.empty:
        return dg.MetadataValue.md("_no rows_")
    view = df[list(columns)] if columns else df
    view = view.head(rows).copy()
    for c in view.columns:
        view[c] = view[c].map(lambda v: (str(v)[:60] + "…") if isinstance(v, str) and len(v) > 60 else v)
    return dg.MetadataValue.md(view.to_markdown(index=False))


def count_table(counts: dict[str, int], key: str = "name", value: str = "count") -> dg.MetadataValue:
    if not counts:
        return dg.MetadataValue.md("_none_")
    lines = [f"| {key} | {value} |", "|---|---:|"] + [f"| {k} | {v:,} |" for k, v in counts.items()]
    return dg.MetadataValue.md("\n".join(lines))
