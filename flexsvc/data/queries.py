"""Named SQL, kept as SQL in ``sql/queries/*.sql``.

Each query is a block that starts with ``-- name: <name>``; the text up to the next marker is
the query. The comment lines that open a block document it here, in the file; they are not
sent: the server would scan them on every execution (and psycopg would read a ``%(name)s`` in
them as a placeholder). Loading happens once at import so a missing or misnamed query fails at
start-up.
"""

from __future__ import annotations

import re
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def _without_leading_comments(block: str) -> str:
    lines = block.strip().splitlines()
    while lines and lines[0].lstrip().startswith("--"):
        del lines[0]
    return "\n".join(lines).strip()


def load_queries(directory: Path) -> dict[str, str]:
    """Read every ``*.sql`` file in ``directory`` into {query name: SQL text}."""
    queries: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        text = path.read_text()
        marks = list(_NAME.finditer(text))
        for mark, following in zip(marks, [*marks[1:], None], strict=False):
            end = following.start() if following else len(text)
            body = _without_leading_comments(text[mark.end():end])
            name = mark.group(1)
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice (in {path.name})")
            queries[name] = body
    return queries


QUERIES = load_queries(SQL_DIR / "queries")


def sql(name: str) -> str:
    """The text of the named query."""
    return QUERIES[name]
