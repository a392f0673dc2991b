"""The one place that owns database connections: one bounded pool per target database.

Pools are created on first use (a worker that never serves tenant X never connects to it),
check connections before handing them out, and turn every way of "the database is not there"
into ``DatabaseUnavailable``, which the error layer answers with 503 + Retry-After.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from flexsvc.config import PoolSettings, Settings

log = logging.getLogger("flexsvc.db")


class DatabaseUnavailable(Exception):
    """The target database could not be reached (or was lost mid-request); nothing committed."""


class UnknownDatabase(KeyError):
    """The name is not configured. Callers answer 403, the same as for a forbidden name."""


class Pools:
    """Lazily created psycopg pools, one per configured database name."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._pools: dict[str, ConnectionPool] = {}
        self._lock = threading.Lock()

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
                yield conn
        except PoolTimeout as exc:
            log.warning("no connection to database %s within the pool wait timeout", database)
            raise DatabaseUnavailable(database) from exc
        except psycopg.OperationalError as exc:
            log.warning("database %s failed mid-request: %s", database, exc.__class__.__name__)
            raise DatabaseUnavailable(database) from exc

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
        check=ConnectionPool.check_connection,
        kwargs={
            "connect_timeout": settings.connect_timeout,
            "prepare_threshold": settings.prepare_threshold,
            "application_name": "flexsvc",
        },
        open=False,
    )
    pool.open(wait=False)
    return pool


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
