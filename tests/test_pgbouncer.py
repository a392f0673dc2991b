"""The service behind PgBouncer in transaction pooling mode, with the DEFAULT settings (SPEC §10).

PgBouncer is Debian 12's 1.18 (installed by the test setup when missing): it cannot carry
prepared statements, and it moves every transaction to whichever server connection is free. It
runs in front of ``second_server`` with two server connections, so concurrent clients share
them. No test here sets anything for PgBouncer, except the ones that turn prepared statements
on on purpose to show that even then no request ends in a 500.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from flexsvc import create_app
from flexsvc.config import load_settings, settings_from_mapping
from flexsvc.data.migrations import apply_migrations, migration_files
from flexsvc.http.auth import digest_api_key
from flexsvc.ops.embedded import EmbeddedPostgres
from tests.conftest import seed_groups, settings_mapping
from tests.helpers import headers, in_thread, item, put_batch, rows, statuses
from tests.servers import PgBouncer, flask_migrate, run_gunicorn, run_pgbouncer, write_config

pytestmark = pytest.mark.slow

CLIENTS = 12
URL = "/groups/G1/flex-schedules-batch"


@pytest.fixture(scope="module")
def bouncer(second_server: EmbeddedPostgres) -> Iterator[PgBouncer]:
    with run_pgbouncer("127.0.0.1", second_server.port, pool_size=2) as bouncer:
        assert bouncer.settings["pool_mode"] == "transaction"
        yield bouncer


def new_database(server: EmbeddedPostgres, *, migrate: bool = True) -> str:
    name = f"flexsvc_pgb_{uuid.uuid4().hex[:8]}"
    dsn = server.create_database(name)
    if migrate:
        with psycopg.connect(dsn) as conn:
            apply_migrations(conn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            seed_groups(conn)
    return name


def bounced_app(bouncer: PgBouncer, name: str, **pool: Any):
    """The app with tenant ``main`` behind ``bouncer``: the shipped defaults plus ``pool``."""
    dsn = bouncer.dsn(name)
    mapping = settings_mapping({"main": dsn, "other": dsn},
                               pool={"min_size": 0, "max_size": 3, "wait_timeout": 10.0, **pool})
    app = create_app(settings_from_mapping(mapping, environ={}))
    app.config["TESTING"] = True
    return app


def small_batch(n: int) -> list[dict]:
    """10 items: 7 explicit keys that overlap other batches' (1001..1030, away from the keys
    the server assigns), and 3 key-0 creates."""
    month = n % 12 + 1
    return ([item(1001 + (n * 7 + i) % 30, schedule_Date=f"2026-{month:02d}-01")
             for i in range(7)]
            + [item(0)] * 3)


def assert_stored(answers: list[list[dict]], batches: int, dsn: str) -> int:
    """What ``small_batch(0..batches-1)`` answered (207 ``data`` lists) is what is stored: each
    201 is a row, the key-0 items got distinct keys; return the number of rows."""
    explicit = {k["groupFlexSchedule_Key"] for n in range(batches) for k in small_batch(n)
                if k["groupFlexSchedule_Key"]}
    assigned = [r["id"][0]["value"] for data in answers for r in data[7:]]
    assert len(set(assigned)) == len(assigned) == batches * 3
    created = sum(r["status"] == 201 for data in answers for r in data)
    with psycopg.connect(dsn) as conn:
        stored = {row["group_flex_schedule_key"] for row in rows(conn)}
    assert stored == explicit | set(assigned) and len(stored) == created
    return created


def warnings_logged(caplog) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.WARNING and r.name != "flexsvc.request"]


def assert_never_500(response) -> None:
    """207 with no item 500 (200 for a list), or 503 with Retry-After: never a 500."""
    assert response.status_code in (200, 207, 503), response.get_data(as_text=True)
    if response.status_code == 503:
        assert int(response.headers["Retry-After"]) > 0
    elif response.status_code == 207:
        assert 500 not in statuses(response)


def test_default_settings_behind_pgbouncer(tmp_path: Path, second_server: EmbeddedPostgres,
                                           bouncer: PgBouncer, caplog):
    """Migrations, 12 concurrent clients sending small batches, and the record routes, with
    the shipped configuration: no 500, no 503, not even a retried failure in the log."""
    caplog.set_level(logging.WARNING)
    name = new_database(second_server, migrate=False)
    config = write_config(tmp_path / "flexsvc.toml", settings_mapping(
        {"bounced": bouncer.dsn(name)}, pool={"min_size": 0, "max_size": 3, "wait_timeout": 10.0},
        api_keys=[{"name": "payroll", "sha256": digest_api_key("k").hex(),
                   "databases": ["*"]}]))
    auth = {"database": "bounced", "key": None, "x-api-key": "k"}

    # Two operators run migrations at once, through PgBouncer: the transaction-scoped lock
    # serialises them; one applies, the other finds the schema up to date.
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: flask_migrate(config), range(2)))
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    every = ", ".join(path.stem for path in migration_files())
    assert sorted(run.stdout.strip() for run in runs) == [f"bounced: applied {every}",
                                                          "bounced: up to date"]
    with psycopg.connect(bouncer.dsn(name), autocommit=True) as conn:
        seed_groups(conn)

    app = create_app(load_settings(config))
    try:
        client = app.test_client()
        batches = CLIENTS * 4
        with ThreadPoolExecutor(CLIENTS) as pool:
            responses = list(pool.map(lambda n: put_batch(client, small_batch(n), **auth),
                                      range(batches)))
        for response in responses:
            assert response.status_code == 207, response.get_data(as_text=True)
            assert set(statuses(response)) <= {200, 201}
        created = assert_stored([r.get_json()["data"] for r in responses], batches,
                                second_server.dsn(name))

        # The record routes, each many times (the same queries over and over).
        base = "/groups/G1/flex-schedules"
        for _ in range(8):
            listed = client.get(f"{base}?pageSize=1000&sortBy=schedule_Date:desc",
                                headers=headers(**auth))
            assert listed.status_code == 200 and len(listed.get_json()["data"]) == created
            assert client.get(f"{base}/1005", headers=headers(**auth)).status_code == 200
            assert client.put(f"{base}/1005", json=item(1005),
                              headers=headers(**auth)).status_code == 200
        posted = client.post(base, json=item(0), headers=headers(**auth))
        assert posted.status_code == 201
        key = posted.get_json()["data"]["groupFlexSchedule_Key"]
        assert client.delete(f"{base}/{key}", headers=headers(**auth)).status_code == 204
        assert client.get(f"{base}/{key}", headers=headers(**auth)).status_code == 404
    finally:
        app.extensions["flexsvc.pools"].close()

    assert warnings_logged(caplog) == []

    # No session state left on PgBouncer's server connections that another client could meet:
    # hold both at once and look. The timeouts are back at their defaults; the only prepared
    # statements are the batch's named calls, whose names are a hash of their SQL and types
    # (flexsvc.data.roundtrip), so a name there always means that statement (SPEC §10).
    links = [psycopg.connect(bouncer.dsn(name)) for _ in range(2)]
    try:
        seen = [link.execute(
            "SELECT pg_backend_pid(), current_setting('statement_timeout'), "
            "current_setting('lock_timeout'), (SELECT count(*) FROM pg_prepared_statements "
            "WHERE name NOT LIKE 'flexsvc\\_%' OR statement NOT LIKE 'SELECT %flexsvc\\_%')"
        ).fetchone() for link in links]
    finally:
        for link in links:
            link.close()
    assert len({pid for pid, *_ in seen}) == 2, "both server connections were inspected"
    assert [rest for _, *rest in seen] == [["0", "0", 0], ["0", "0", 0]]


def test_gunicorn_behind_pgbouncer(tmp_path: Path, second_server: EmbeddedPostgres,
                                   bouncer: PgBouncer):
    """The real server (2 workers x 4 threads, the shipped pool settings) behind PgBouncer:
    16 clients sending 10-item batches and reading the list, every answer right, no 5xx."""
    name = new_database(second_server)
    config = write_config(tmp_path / "flexsvc.toml",
                          settings_mapping({"main": bouncer.dsn(name), "other": bouncer.dsn(name)},
                                           pool={}))
    clients, rounds = 16, 6
    with run_gunicorn(config, workers=2, threads=4) as server:
        def client(n: int) -> list[tuple[int, list[int]]]:
            seen = []
            with requests.Session() as session:
                for r in range(rounds):
                    batch = small_batch(n * rounds + r)
                    response = session.put(server.url + URL, json=batch, headers=headers(),
                                           timeout=60)
                    seen.append((response.status_code, response.json()["data"]))
                    listed = session.get(server.url + "/groups/G1/flex-schedules?pageSize=5",
                                         headers=headers(), timeout=60)
                    seen.append((listed.status_code, None))
            return seen

        with ThreadPoolExecutor(clients) as pool:
            answers = [a for seen in pool.map(client, range(clients)) for a in seen]
        logged = [line["status"] for line in server.request_lines()]
    assert {status for status, _ in answers} == {207, 200}, answers
    assert len(logged) >= len(answers) and max(logged) < 500
    batches = [data for status, data in answers if status == 207]
    assert all({r["status"] for r in data} <= {200, 201} for data in batches)
    # Client n sent small_batch(n * rounds + r): together, small_batch(0 .. clients*rounds-1).
    assert_stored(batches, clients * rounds, second_server.dsn(name))


def test_discard_all_between_transactions(second_server: EmbeddedPostgres, caplog):
    """A PgBouncer that runs DISCARD ALL after every transaction (server_reset_query_always):
    nothing the service relies on lives in the session, so nothing changes."""
    caplog.set_level(logging.WARNING)
    name = new_database(second_server)
    with run_pgbouncer("127.0.0.1", second_server.port, pool_size=2,
                       extra={"server_reset_query_always": "1"}) as bouncer:
        app = bounced_app(bouncer, name)
        try:
            client = app.test_client()
            with ThreadPoolExecutor(CLIENTS) as pool:
                responses = list(pool.map(lambda n: put_batch(client, small_batch(n)),
                                          range(CLIENTS * 3)))
            assert {r.status_code for r in responses} == {207}
            assert all(set(statuses(r)) <= {200, 201} for r in responses)
            created = assert_stored([r.get_json()["data"] for r in responses], CLIENTS * 3,
                                    second_server.dsn(name))
            listed = client.get("/groups/G1/flex-schedules?pageSize=1000", headers=headers())
            assert listed.status_code == 200
            assert int(listed.headers["X-Total-Count"]) == created
        finally:
            app.extensions["flexsvc.pools"].close()
    assert warnings_logged(caplog) == []


@pytest.mark.parametrize("reset_always", ["0", "1"], ids=["plain", "discard-all"])
def test_prepared_statements_turned_on_are_switched_off(second_server: EmbeddedPostgres,
                                                        caplog, reset_always: str):
    """An operator turns prepared statements on (prepare_threshold = 0) behind PgBouncer 1.18:
    the server connections answer "prepared statement ... already exists / does not exist".
    Those requests get 503 with Retry-After (nothing written), never a 500; the database's pool
    stops preparing, once, and from then on every request is answered. (A batch's own two round
    trips never prepare: flexsvc.data.roundtrip. The lists and the batch's other statements do.)"""
    caplog.set_level(logging.WARNING)
    name = new_database(second_server)
    with run_pgbouncer("127.0.0.1", second_server.port, pool_size=2,
                       extra={"server_reset_query_always": reset_always}) as bouncer:
        app = bounced_app(bouncer, name, prepare_threshold=0)
        try:
            client = app.test_client()

            def batch_and_list(n: int) -> list:
                return [put_batch(client, small_batch(n)),
                        client.get("/groups/G1/flex-schedules?pageSize=5", headers=headers())]

            with ThreadPoolExecutor(CLIENTS) as pool:
                first = [r for pair in pool.map(batch_and_list, range(CLIENTS * 2)) for r in pair]
            for response in first:
                assert_never_500(response)
            switched = [m for m in warnings_logged(caplog) if "lost prepared statements" in m]
            assert len(switched) == 1, warnings_logged(caplog)
            with ThreadPoolExecutor(CLIENTS) as pool:
                then = list(pool.map(batch_and_list, range(CLIENTS * 2)))
            assert {batch.status_code for batch, _ in then} == {207}
            assert all(set(statuses(batch)) <= {200, 201} for batch, _ in then)
            assert {listed.status_code for _, listed in then} == {200}
        finally:
            app.extensions["flexsvc.pools"].close()
    assert not [m for m in warnings_logged(caplog) if "flexsvc.errors" in m]   # no 500 logged


# --- a server connection dropped under a pipeline -------------------------------------------

def blocked_backend(admin_dsn: str, query_start: str, timeout: float = 8.0) -> int:
    """The pid of the server backend (PgBouncer's server connection) that runs the service's
    ``query_start`` and waits for a lock."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query ILIKE %s", ("%" + query_start + "%",)).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError(f"no backend blocked in {query_start!r}")


def terminated_under(call, admin_dsn: str, blocker_sql: str, query_start: str):
    """Run ``call`` while ``blocker_sql`` holds a lock it needs; kill its backend; return the
    response."""
    with psycopg.connect(admin_dsn) as blocker:
        blocker.execute(blocker_sql)
        thread, result = in_thread(call)
        pid = blocked_backend(admin_dsn, query_start)
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        blocker.rollback()
    thread.join(15)
    assert not thread.is_alive(), "the request hung"
    return result[0]


def test_server_connection_dropped_mid_pipeline(second_server: EmbeddedPostgres,
                                                bouncer: PgBouncer):
    """pg_terminate_backend of PgBouncer's server connection while the batch waits inside its
    pipelined read of the facts, and while the list waits inside its pipelined count: 503 with
    Retry-After, nothing written, and the next request is served."""
    name = new_database(second_server)
    direct = second_server.dsn(name)
    app = bounced_app(bouncer, name, max_size=2)
    try:
        client = app.test_client()
        assert statuses(put_batch(client, [item(1), item(2)])) == [201, 201]
        with psycopg.connect(direct) as conn:
            before = rows(conn)

        response = terminated_under(
            lambda: put_batch(app.test_client(), [item(1, plan_ID="P2"), item(3), item(0)]),
            direct, "SELECT 1 FROM groups WHERE group_id = 'G1' FOR UPDATE",
            "flexsvc_read_batch_facts")
        assert response.status_code == 503, response.get_data(as_text=True)
        assert int(response.headers["Retry-After"]) > 0
        with psycopg.connect(direct) as conn:
            assert rows(conn) == before
        assert statuses(put_batch(client, [item(3)])) == [201]

        listed = terminated_under(
            lambda: app.test_client().get("/groups/G1/flex-schedules", headers=headers()),
            direct, "LOCK TABLE group_flex_schedule IN ACCESS EXCLUSIVE MODE",
            "SELECT count(*) FROM group_flex_schedule")
        assert listed.status_code == 503 and int(listed.headers["Retry-After"]) > 0
        again = client.get("/groups/G1/flex-schedules", headers=headers())
        assert again.status_code == 200 and len(again.get_json()["data"]) == 3
    finally:
        app.extensions["flexsvc.pools"].close()


def test_idempotent_retries_behind_pgbouncer_across_workers(tmp_path: Path,
                                                            second_server: EmbeddedPostgres,
                                                            bouncer: PgBouncer):
    """SPEC §9 with the default settings, through PgBouncer in transaction mode and two
    gunicorn workers: 8 clients send the same keyed key-0 batch at once, three times over.
    Each time it runs exactly once (its rows once); every other answer is its replay, byte for
    byte, or a 409. A later retry replays; the key for another body is a 422. No advisory lock
    outlives its transaction on PgBouncer's server connections."""
    name = new_database(second_server)
    config = write_config(tmp_path / "flexsvc.toml",
                          settings_mapping({"main": bouncer.dsn(name), "other": bouncer.dsn(name)},
                                           pool={}))
    batch = [item(0, schedule_Date=f"2026-{1 + n % 12:02d}-01") for n in range(100)]
    with run_gunicorn(config, workers=2, threads=4) as server:
        def send(key: str, body: list, gate: threading.Barrier | None = None):
            if gate is not None:
                gate.wait()
            return requests.put(server.url + URL, json=body, timeout=60,
                                headers=headers(**{"Idempotency-Key": key}))

        for round_no in range(3):
            key, gate = f"pgb-{uuid.uuid4()}", threading.Barrier(8)
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: send(key, batch, gate), range(8)))  # noqa: B023
            fresh = [a for a in answers
                     if a.status_code == 207 and "Idempotent-Replayed" not in a.headers]
            assert len(fresh) == 1, [(a.status_code, dict(a.headers)) for a in answers]
            assert [r["status"] for r in fresh[0].json()["data"]] == [201] * 100
            for answer in answers:
                if answer is not fresh[0]:
                    assert answer.status_code in (207, 409), answer.text
                    if answer.status_code == 207:
                        assert answer.headers["Idempotent-Replayed"] == "true"
                        assert answer.content == fresh[0].content
            with psycopg.connect(second_server.dsn(name)) as conn:
                assert len(rows(conn)) == 100 * (round_no + 1)
            later = send(key, batch)
            assert later.headers["Idempotent-Replayed"] == "true"
            assert later.content == fresh[0].content
            assert send(key, batch[:1]).status_code == 422
        outcomes = [line.get("idempotency") for line in server.request_lines()]
    assert outcomes.count("recorded") == 3 and outcomes.count("conflict") == 3
    with psycopg.connect(second_server.dsn(name)) as conn:
        assert conn.execute("SELECT count(*) FROM flexsvc_idempotency").fetchone()[0] == 3
        assert conn.execute("SELECT count(*) FROM pg_locks "
                            "WHERE locktype = 'advisory'").fetchone()[0] == 0
