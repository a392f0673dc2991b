"""The PostgreSQL server of a bench tool: FLEXSVC_BENCH_DSN's, or an embedded throwaway one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

from flexsvc.ops.embedded import EmbeddedPostgres


class ScratchServer:
    """Makes uniquely named databases on one server and drops them again."""

    def __init__(self, admin_dsn: str, embedded: EmbeddedPostgres | None):
        self.admin_dsn = admin_dsn
        self.embedded = embedded        # None: FLEXSVC_BENCH_DSN's server
        self._made: list[str] = []

    def database(self, label: str) -> str:
        """A new, empty database; its DSN."""
        name = f"flexsvc_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
        self._made.append(name)
        return make_conninfo(self.admin_dsn, dbname=name)

    def drop_databases(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for name in self._made:
                conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    pgsql.Identifier(name)))
        self._made.clear()


@contextmanager
def scratch_server() -> Iterator[ScratchServer]:
    """FLEXSVC_BENCH_DSN (an administrator's DSN) or an embedded server; on the way out, the
    databases made on it are dropped and an embedded server is destroyed."""
    admin_dsn = os.environ.get("FLEXSVC_BENCH_DSN")
    embedded = None
    if not admin_dsn:
        embedded = EmbeddedPostgres.throwaway()
        admin_dsn = embedded.start()
    server = ScratchServer(admin_dsn, embedded)
    try:
        yield server
    finally:
        try:
            server.drop_databases()
        finally:
            if embedded:
                embedded.destroy()
