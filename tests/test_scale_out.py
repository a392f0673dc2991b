"""Scale-out: tenants on two PostgreSQL servers at once (the session's and ``second_server``).

Migrations go through ``flask --app wsgi migrate`` as an operator would run them. The service
behind PgBouncer: tests/test_pgbouncer.py.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from flexsvc import create_app
from flexsvc.config import ConfigError, load_settings, settings_from_mapping
from flexsvc.ops.embedded import EmbeddedPostgres
from tests.conftest import create_database, drop_database, seed_groups, settings_mapping
from tests.helpers import item, put_batch, rows, statuses
from tests.servers import flask_migrate, write_config


def server_port(dsn: str) -> int:
    with psycopg.connect(dsn, prepare_threshold=None) as conn:
        return conn.execute("SELECT inet_server_port()").fetchone()[0]


@pytest.mark.slow
def test_tenants_on_two_servers(tmp_path: Path, pg_admin_dsn: str,
                                second_server: EmbeddedPostgres):
    name = f"flexsvc_two_{uuid.uuid4().hex[:8]}"
    dsns = {"east": create_database(pg_admin_dsn, name),
            "west": second_server.create_database(name)}   # same name, other server
    try:
        _check_tenants_on_two_servers(tmp_path, dsns)
    finally:
        drop_database(pg_admin_dsn, name)   # the session server may be a shared one


def _check_tenants_on_two_servers(tmp_path: Path, dsns: dict[str, str]) -> None:
    assert server_port(dsns["east"]) != server_port(dsns["west"])
    config = write_config(tmp_path / "flexsvc.toml", settings_mapping(
        dsns, api_keys=[{"name": "payroll", "sha256": _digest("k"), "databases": ["*"]}]))

    migrated = flask_migrate(config)
    assert migrated.returncode == 0, migrated.stderr
    assert "east: applied 0001_schema" in migrated.stdout
    assert "west: applied 0001_schema" in migrated.stdout
    for dsn in dsns.values():
        with psycopg.connect(dsn, autocommit=True) as conn:
            seed_groups(conn)

    app = create_app(load_settings(config))
    try:
        client = app.test_client()
        auth = {"key": None, "x-api-key": "k"}
        batches = [("east", [item(101), item(102)]), ("west", [item(201)]),
                   ("east", [item(0)]), ("west", [item(0), item(202)])]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(
                lambda b: statuses(put_batch(client, b[1], database=b[0], **auth)), batches))
        assert results == [[201, 201], [201], [201], [201, 201]]
        # The same key on the other tenant is another record: an update there, untouched here.
        assert statuses(put_batch(client, [item(201, schedule_Date="2026-03-01")],
                                  database="west", **auth)) == [200]
        assert client.get("/readyz").get_json()["data"] == {"status": "ready", "databases": 2}
    finally:
        app.extensions["flexsvc.pools"].close()

    with psycopg.connect(dsns["east"]) as east, psycopg.connect(dsns["west"]) as west:
        east_rows, west_rows = rows(east), rows(west)
    east_keys = {r["group_flex_schedule_key"] for r in east_rows}
    west_keys = {r["group_flex_schedule_key"] for r in west_rows}
    # Each record landed on its tenant's server only (plus one server-assigned key each).
    assert len(east_keys) == 3 and {101, 102} <= east_keys and not east_keys & {201, 202}
    assert len(west_keys) == 3 and {201, 202} <= west_keys and not west_keys & {101, 102}
    assert [r["schedule_date"].month for r in west_rows
            if r["group_flex_schedule_key"] == 201] == [3]


def _digest(key: str) -> str:
    from flexsvc.http.auth import digest_api_key

    return digest_api_key(key).hex()


def test_per_database_pool_settings():
    """[pools.NAME] overrides [pool] for one database; `false` turns prepared statements off,
    and off is the default (PgBouncer in transaction mode needs no setting)."""
    dsns = {"main": "postgresql://a/main", "other": "postgresql://b/other"}
    settings = settings_from_mapping(settings_mapping(
        dsns, pool={"max_size": 4, "prepare_threshold": 5},
        pools={"other": {"prepare_threshold": False, "max_size": 9}}), environ={})
    assert settings.pool_for("main").prepare_threshold == 5
    assert settings.pool_for("other").prepare_threshold is None
    assert settings.pool_for("other").max_size == 9
    assert settings.pool_for("other").wait_timeout == settings.pool.wait_timeout
    assert settings_from_mapping(settings_mapping(dsns), environ={}).pool.prepare_threshold is None
    for pools, message in [({"nope": {"max_size": 2}}, "not a configured database"),
                           ({"other": {"statement_timeout_ms": 1}}, "only be set in"),
                           ({"other": {"prepare_threshold": True}}, "non-negative integer"),
                           ({"other": {"min_size": 5, "max_size": 2}}, "min_size")]:
        with pytest.raises(ConfigError, match=message):
            settings_from_mapping(settings_mapping(dsns, pools=pools), environ={})
