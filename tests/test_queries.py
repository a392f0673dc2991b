"""Named queries (flexsvc.data.queries): SQL kept as SQL, and what of it reaches the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexsvc.data.queries import QUERIES, load_queries


def test_a_block_is_sent_without_its_opening_comments(tmp_path: Path) -> None:
    """The comment lines that document a block stay in the file: the server would scan them on
    every execution, and psycopg would take a ``%(name)s`` in them for a placeholder."""
    (tmp_path / "a.sql").write_text(
        "-- name: first\n"
        "-- Reads %(nothing)s: this line documents the query.\n"
        "--   so does this one\n"
        "\n"
        "SELECT %(value)s  -- a comment after code stays\n"
        "FROM t;\n"
        "\n"
        "-- name: second\n"
        "SELECT 2;\n")
    assert load_queries(tmp_path) == {
        "first": "SELECT %(value)s  -- a comment after code stays\nFROM t;",
        "second": "SELECT 2;",
    }


def test_a_query_name_is_defined_once(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: same\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- name: same\nSELECT 2;\n")
    with pytest.raises(ValueError, match="defined twice"):
        load_queries(tmp_path)


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_no_shipped_query_starts_with_a_comment(name: str) -> None:
    text = QUERIES[name]
    assert text and not text.lstrip().startswith("--")
