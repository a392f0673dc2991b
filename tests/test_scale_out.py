"""Scale-out: tenants on two PostgreSQL servers at once, and the service behind PgBouncer.

A second PostgreSQL server is started for this module (embedded, on a free port); PgBouncer
(Debian's package, installed by the test setup when missing) runs in transaction pooling mode
in front of it. Migrations go through ``flask --app wsgi migrate`` as an operator would run them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from flexsvc import create_app
from flexsvc.config import ConfigError, load_settings, settings_from_mapping
from flexsvc.data.migrations import migration_files
from flexsvc.ops.embedded import EmbeddedPostgres
from tests.conftest import create_database, drop_database, seed_groups, settings_mapping
from tests.helpers import item, put_batch, rows, statuses
from tests.servers import REPO, PgBouncer, run_pgbouncer, write_config


@pytest.fixture(scope="module")
def second_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg-second") / "data", fast_unsafe=True)
    server.start()
    yield server
    server.destroy()


def flask_migrate(config: Path) -> subprocess.CompletedProcess:
    """``flask --app wsgi migrate`` with ``FLEXSVC_CONFIG=config``, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXSVC_")}
    env["FLEXSVC_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "migrate"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


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


@pytest.fixture(scope="module")
def bouncer(second_server: EmbeddedPostgres) -> Iterator[PgBouncer]:
    # Two server connections for many clients: transactions of different clients share them.
    with run_pgbouncer("127.0.0.1", second_server.port, pool_size=2) as bouncer:
        yield bouncer


@pytest.mark.slow
def test_behind_pgbouncer_in_transaction_mode(tmp_path: Path, second_server: EmbeddedPostgres,
                                              bouncer: PgBouncer, caplog):
    assert bouncer.settings["pool_mode"] == "transaction"
    name = f"flexsvc_pgb_{uuid.uuid4().hex[:8]}"
    second_server.create_database(name)
    # PgBouncer before 1.21 cannot carry protocol-level prepared statements across server
    # connections: such a database gets prepare_threshold = false in its [pools.NAME] table.
    pools = ({} if bouncer.version >= (1, 21)
             else {"bounced": {"prepare_threshold": False}})
    config = write_config(tmp_path / "flexsvc.toml", settings_mapping(
        {"bounced": bouncer.dsn(name)}, pools=pools,
        # Few client connections, so each runs many batches: past psycopg's prepare threshold.
        pool={"min_size": 0, "max_size": 3, "wait_timeout": 10.0},
        api_keys=[{"name": "payroll", "sha256": _digest("k"), "databases": ["*"]}]))

    # Two operators run migrations at once, through PgBouncer: the transaction-scoped lock
    # serialises them; one applies, the other finds the schema up to date.
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: flask_migrate(config), range(2)))
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    outputs = sorted(run.stdout.strip() for run in runs)
    every = ", ".join(path.stem for path in migration_files())
    assert outputs == [f"bounced: applied {every}", "bounced: up to date"]
    with psycopg.connect(bouncer.dsn(name), autocommit=True, prepare_threshold=None) as conn:
        seed_groups(conn)

    app = create_app(load_settings(config))
    try:
        client = app.test_client()

        def send(n: int) -> list[int]:
            # Overlapping keys plus server-assigned ones, from 8 clients over 2 server links.
            batch = [item(k, schedule_Date=f"2026-{n % 12 + 1:02d}-01") for k in range(1, 31)]
            batch += [item(0)] * 3
            response = put_batch(client, batch, database="bounced", key=None,
                                 **{"x-api-key": "k"})
            assert response.status_code == 207, response.get_data(as_text=True)
            return statuses(response)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(send, range(16)))
    finally:
        app.extensions["flexsvc.pools"].close()

    # Not even a retried failure behind the scenes (e.g. "prepared statement does not exist").
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert all(set(r) <= {200, 201} for r in results)
    assert sum(r.count(201) for r in results) == 30 + 16 * 3
    with psycopg.connect(second_server.dsn(name)) as conn:
        assert len(rows(conn)) == 30 + 16 * 3

    # No session state left on PgBouncer's server connections: hold both at once and look.
    links = [psycopg.connect(bouncer.dsn(name), prepare_threshold=None) for _ in range(2)]
    try:
        seen = [link.execute(
            "SELECT pg_backend_pid(), current_setting('statement_timeout'), "
            "current_setting('lock_timeout'), (SELECT count(*) FROM pg_prepared_statements)"
        ).fetchone() for link in links]
    finally:
        for link in links:
            link.close()
    assert len({pid for pid, *_ in seen}) == 2, "both server connections were inspected"
    assert [rest for _, *rest in seen] == [["0", "0", 0], ["0", "0", 0]]


def test_per_database_pool_settings():
    """[pools.NAME] overrides [pool] for one database; `false` turns prepared statements off."""
    dsns = {"main": "postgresql://a/main", "other": "postgresql://b/other"}
    settings = settings_from_mapping(settings_mapping(
        dsns, pool={"max_size": 4, "prepare_threshold": 5},
        pools={"other": {"prepare_threshold": False, "max_size": 9}}), environ={})
    assert settings.pool_for("main").prepare_threshold == 5
    assert settings.pool_for("other").prepare_threshold is None
    assert settings.pool_for("other").max_size == 9
    assert settings.pool_for("other").wait_timeout == settings.pool.wait_timeout
    for pools, message in [({"nope": {"max_size": 2}}, "not a configured database"),
                           ({"other": {"statement_timeout_ms": 1}}, "only be set in"),
                           ({"other": {"prepare_threshold": True}}, "non-negative integer"),
                           ({"other": {"min_size": 5, "max_size": 2}}, "min_size")]:
        with pytest.raises(ConfigError, match=message):
            settings_from_mapping(settings_mapping(dsns, pools=pools), environ={})
