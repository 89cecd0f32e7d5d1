from pathlib import Path

from watch_pipeline.core.schema import EVENT_COLUMNS, schema_markdown, stable_id


def test_docs_schema_is_current():
    doc = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
    assert doc.read_text() == schema_markdown(), "regenerate: python -m watch_pipeline.core.schema > docs/schema.md"


def test_event_columns_unique_and_stable_id():
    names = [c.name for c in EVENT_COLUMNS]
    assert len(names) == len(set(names))
    assert stable_id("a", 1) == stable_id("a", "1") != stable_id("a", 2)
    assert len(stable_id("x")) == 32
