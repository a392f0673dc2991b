"""The one place that owns database connections: one bounded pool per target database.

Pools are created on first use (a worker that never serves tenant X never connects to it),
check connections before handing them out, and turn every way of "the database is not there"
into ``DatabaseUnavailable``, which the error layer answers with 503 + Retry-After: the server
is down or restarting, the connection was dropped (also mid-pipeline), the server is read-only
(a standby, or ``default_transaction_read_only``), or a pooler lost our prepared statements.
A connection that met a read-only server or lost prepared statements is discarded, not reused.

psycopg's server-side prepared statements are off by default (``prepare_threshold = None``): a
pooler in transaction mode (PgBouncer < 1.22, or without ``max_prepared_statements``) moves
transactions between server connections, so a statement psycopg prepared on one is missing, or
another one by the same name, on the next. If an operator turns them on and the server loses
them anyway, the pool stops preparing for that database (docs/DEPLOYMENT.md, "PgBouncer"). The
batch's two calls are prepared regardless, under names that say what they are
(``flexsvc.data.roundtrip``).
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from flexsvc.config import PoolSettings, Settings

log = logging.getLogger("flexsvc.db")


class DatabaseUnavailable(Exception):
    """The target database could not be reached (or was lost mid-request); nothing committed."""


#: The server lost (or never had) psycopg's prepared statements: a pooler moved the transaction
#: to another server connection, or ran DISCARD ALL / DEALLOCATE ALL between transactions. A
#: ProtocolViolation ("bind message supplies 2 parameters, but prepared statement ... requires
#: 1") is the same thing: another client's statement of that name on this server connection.
PREPARED_STATEMENT_ERRORS = (pg_errors.InvalidSqlStatementName,
                             pg_errors.DuplicatePreparedStatement, pg_errors.ProtocolViolation)
#: Errors that are about the connection or the server, never about the data of a request: the
#: data layer lets them through (no per-item isolation, no item 500) to ``Pools.connection``.
CONNECTION_ERRORS = (psycopg.OperationalError, pg_errors.ReadOnlySqlTransaction,
                     *PREPARED_STATEMENT_ERRORS)


class UnknownDatabase(KeyError):
    """The name is not configured. Callers answer 403, the same as for a forbidden name."""


class Pools:
    """Lazily created psycopg pools, one per configured database name."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._pools: dict[str, ConnectionPool] = {}
        self._lock = threading.Lock()
        #: Databases whose server lost our prepared statements: no more preparing for them.
        self._unprepared: set[str] = set()

    def get(self, database: str) -> ConnectionPool:
        pool = self._pools.get(database)
        if pool is not None:
            return pool
        dsn = self._settings.databases.get(database)
        if dsn is None:
            raise UnknownDatabase(database)
        with self._lock:
            pool = self._pools.get(database)
            if pool is None:
                pool = _open_pool(database, dsn, self._settings.pool_for(database))
                self._pools[database] = pool
        return pool

    @contextmanager
    def connection(self, database: str) -> Iterator[psycopg.Connection]:
        """A checked connection from the database's pool; outages become DatabaseUnavailable."""
        pool = self.get(database)
        try:
            with pool.connection() as conn:
                if database in self._unprepared:
                    conn.prepare_threshold = None
                try:
                    yield conn
                except psycopg.Error as exc:
                    if not self._unusable(database, conn, exc):
                        raise
                    conn.close()    # the pool discards a closed connection and opens another
                    raise DatabaseUnavailable(database) from exc
        except PoolTimeout as exc:
            log.warning("no connection to database %s within the pool wait timeout", database)
            raise DatabaseUnavailable(database) from exc
        except psycopg.OperationalError as exc:
            log.warning("database %s failed mid-request: %s", database, exc.__class__.__name__)
            raise DatabaseUnavailable(database) from exc

    def _unusable(self, database: str, conn: psycopg.Connection, exc: psycopg.Error) -> bool:
        """True when ``conn`` must not serve again: its server is read-only, or it lost our
        prepared statements (then no connection of this database prepares any more)."""
        if isinstance(exc, PREPARED_STATEMENT_ERRORS) and conn.prepare_threshold is not None:
            with self._lock:
                first = database not in self._unprepared
                self._unprepared.add(database)
            if first:
                log.warning("database %s lost prepared statements (%s): a pooler in "
                            "transaction mode? No more prepared statements for it in this "
                            "process; set prepare_threshold = false for it",
                            database, exc.__class__.__name__)
            return True
        if isinstance(exc, pg_errors.ReadOnlySqlTransaction) or server_is_read_only(conn):
            log.warning("database %s is read-only on this connection (%s): discarding it",
                        database, exc.__class__.__name__)
            return True
        return False

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: pool.get_stats() for name, pool in list(self._pools.items())}

    def close(self) -> None:
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close(timeout=5)


def _open_pool(name: str, dsn: str, settings: PoolSettings) -> ConnectionPool:
    pool = ConnectionPool(
        conninfo=dsn,
        name=name,
        min_size=settings.min_size,
        max_size=settings.max_size,
        timeout=settings.wait_timeout,
        max_idle=settings.max_idle,
        max_lifetime=settings.max_lifetime,
        # Give up a background reconnect quickly instead of backing off for minutes: the next
        # request that needs a connection starts a fresh attempt, so a database that returns is
        # picked up within seconds, not after the pool's exponential back-off (up to 5 min).
        reconnect_timeout=settings.reconnect_timeout,
        check=check_connection,
        kwargs={
            # Every transaction is explicit: ``conn.transaction()`` blocks, or the batch's
            # BEGIN/COMMIT statements (``writes.explicit_transaction``), which can then share
            # round trips with the statements around them.
            "autocommit": True,
            "connect_timeout": settings.connect_timeout,
            "prepare_threshold": settings.prepare_threshold,
            "application_name": "flexsvc",
        },
        open=False,
    )
    pool.open(wait=False)
    return pool


def check_connection(conn: psycopg.Connection) -> None:
    """The pool's check before it hands a connection out, without a round trip when it can.

    An idle connection the server has said nothing on since is as good as a query would show:
    a server that shuts down, restarts, is failed over or terminates the backend closes the
    socket or sends an error first, which makes the socket readable; so does a parameter
    change (a standby promoted, ``default_transaction_read_only``). Only then does the check
    run psycopg_pool's query (never prepared, so it cannot fail behind a pooler), which reads
    what was sent and raises if the connection is gone. A server that vanishes without a word
    (a cable cut) is noticed by the request's first statement instead: a 503, like a failure
    one moment after any check.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        quiet = not poller.poll(0)
    except (OSError, ValueError):
        quiet = False
    if not quiet:
        conn.execute(b"", prepare=False)


def server_is_read_only(conn: psycopg.Connection) -> bool:
    """What the server last reported (PostgreSQL 14+ sends both as they change): a hot standby,
    or a database with default_transaction_read_only on. Unknown (older server, a pooler that
    does not pass them on) counts as writable; the write's ReadOnlySqlTransaction then tells."""
    if conn.closed:
        return False
    return "on" in (conn.info.parameter_status("in_hot_standby"),
                    conn.info.parameter_status("default_transaction_read_only"))


def connect(dsn: str, **kwargs: object) -> psycopg.Connection:
    """A one-off connection for CLI commands (migrations, seeding), outside the pools."""
    return psycopg.connect(dsn, connect_timeout=10, **kwargs)


def ping(pools: Pools, database: str, timeout: float = 3.0) -> bool:
    """True when ``database`` answers a trivial query within ``timeout`` seconds."""
    try:
        with pools.get(database).connection(timeout=timeout) as conn:
            conn.execute("SELECT 1")
        return True
    except (PoolTimeout, psycopg.Error):
        return False
