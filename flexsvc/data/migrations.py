"""Apply the SQL migrations in ``sql/migrations`` in order, once each, under a lock.

Each run is one transaction holding a transaction-scoped advisory lock, so concurrent runs
serialise and a failed migration leaves nothing half-applied. A migration that was changed after
being applied is refused (its checksum no longer matches).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg

from flexsvc.data.queries import SQL_DIR, sql

MIGRATIONS_DIR = SQL_DIR / "migrations"


class MigrationError(RuntimeError):
    """A recorded migration no longer matches its file."""


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def apply_migrations(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations on ``conn``; return the versions applied now."""
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute(sql("lock_migrations"))
        conn.execute(sql("create_migrations_table"))
        applied = dict(conn.execute(sql("list_applied_migrations")).fetchall())
        for path in migration_files():
            text = path.read_text()
            checksum = hashlib.sha256(text.encode()).hexdigest()
            version = path.stem
            if version in applied:
                if applied[version] != checksum:
                    raise MigrationError(f"migration {version} changed after it was applied")
                continue
            conn.execute(text.encode(), prepare=False)
            conn.execute(sql("record_migration"), {"version": version, "checksum": checksum})
            applied_now.append(version)
    return applied_now
