"""Database faults, for real: our own PostgreSQL is stopped, restarted and has its connections
killed inside the tests (no mocks). The contract (SPEC §5, §7): a request answers 503 with the
envelope and Retry-After within 10 s, never hangs, writes nothing; /readyz tells the truth; and the
service recovers by itself within 30 s of the database's return, without a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from flexsvc import create_app
from flexsvc.config import settings_from_mapping
from flexsvc.data.migrations import apply_migrations
from flexsvc.ops.embedded import EmbeddedPostgres
from tests.conftest import seed_groups, settings_mapping
from tests.helpers import headers, item

pytestmark = pytest.mark.slow

URL = "/groups/G1/flex-schedules-batch"
ANSWER_WITHIN = 10.0     # SPEC §7: a database outage gives 503 within 10 seconds
RECOVER_WITHIN = 30.0    # ... and the service recovers within 30 seconds of the return


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedPostgres]:
    """Our own PostgreSQL, so stopping it cannot disturb the other tests' server."""
    # Commits must survive `pg_ctl stop -m immediate` (synchronous_commit on); fsync can be off
    # because the machine itself does not crash.
    pg = EmbeddedPostgres.throwaway(settings={"fsync": "off"})
    pg.start()
    pg.create_database("faults")
    with psycopg.connect(pg.dsn("faults")) as conn:
        apply_migrations(conn)
    yield pg
    pg.destroy()


@pytest.fixture
def dsn(server: EmbeddedPostgres) -> str:
    if not server.is_running():
        server.start()
    with psycopg.connect(server.dsn("faults"), autocommit=True) as conn:
        conn.execute("DROP TRIGGER IF EXISTS slow_commit ON group_flex_schedule")
        conn.execute("TRUNCATE group_flex_schedule, group_flex, groups RESTART IDENTITY CASCADE")
        seed_groups(conn)
    return server.dsn("faults")


def make_app(dsn: str, **pool: object):
    """The app with the shipped pool defaults (PoolSettings) unless overridden."""
    mapping = settings_mapping({"main": dsn, "other": dsn}, pool=dict(pool))
    app = create_app(settings_from_mapping(mapping, environ={}))
    app.config["TESTING"] = True
    return app


@pytest.fixture
def app(dsn: str):
    app = make_app(dsn)
    yield app
    app.extensions["flexsvc.pools"].close()


def keys(dsn: str) -> dict[int, tuple]:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return {row[0]: row[1:] for row in conn.execute(
            "SELECT group_flex_schedule_key, plan_id, schedule_date, update_user "
            "FROM group_flex_schedule ORDER BY 1")}


def timed_put(client, items, **kwargs):
    started = time.monotonic()
    response = client.put(URL, json=items, headers=headers(**kwargs))
    return response, time.monotonic() - started


def assert_503(response, elapsed: float) -> None:
    assert elapsed < ANSWER_WITHIN, f"answered after {elapsed:.1f}s"
    assert response.status_code == 503, response.get_data()
    body = response.get_json()
    assert body["data"] is None and body["error"]["status"] == 503
    assert body["debug"]["activityID"]
    assert int(response.headers["Retry-After"]) > 0
    text = response.get_data(as_text=True)
    for leak in ("postgresql://", "127.0.0.1", "psycopg", "Traceback", "SELECT", "faults"):
        assert leak not in text


def recover(client, items, restarted_at: float) -> tuple[object, float]:
    """PUT until a 207 arrives (bounded by RECOVER_WITHIN after the restart)."""
    while True:
        response = client.put(URL, json=items, headers=headers())
        waited = time.monotonic() - restarted_at
        if response.status_code == 207:
            assert waited < RECOVER_WITHIN, f"recovered only {waited:.1f}s after the restart"
            return response, waited
        assert response.status_code == 503, response.get_data()
        assert waited < RECOVER_WITHIN, f"no recovery {waited:.1f}s after the restart"
        time.sleep(0.5)


def statuses(response) -> list[int]:
    return [r["status"] for r in response.get_json()["data"]]


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_outage_answers_503_and_recovers_without_restart(app, dsn, server, mode):
    client = app.test_client()
    assert statuses(client.put(URL, json=[item(1)], headers=headers())) == [201]
    assert client.get("/readyz").status_code == 200

    server.stop(mode)
    for attempt in range(2):   # the pooled connection is dead; then no connection at all
        response, elapsed = timed_put(client, [item(2), item(0)])
        assert_503(response, elapsed), attempt
    started = time.monotonic()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and time.monotonic() - started < ANSWER_WITHIN
    assert ready.get_json()["error"]["status"] == 503 and ready.headers["Retry-After"]
    assert client.get("/healthz").status_code == 200   # alive, only not ready

    server.start()
    restarted_at = time.monotonic()
    response, waited = recover(client, [item(2), item(0)], restarted_at)
    assert statuses(response) == [201, 201] and waited < RECOVER_WITHIN
    assert client.get("/readyz").status_code == 200
    # The 503s wrote nothing: key 2 and one key-0 row exist once each, beside key 1.
    stored = keys(dsn)
    assert len(stored) == 3 and {1, 2} <= set(stored)


def backend_waiting(dsn: str, query_start: str, timeout: float = 8.0) -> int:
    """The pid of the service's backend blocked on a lock while running ``query_start``..."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'flexsvc' "
                "AND wait_event_type = 'Lock' AND query ILIKE %s", ("%" + query_start + "%",),
            ).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError(f"no flexsvc backend blocked in {query_start!r}")


class InFlight:
    """A PUT running in a thread, so the test can break the database under it."""

    def __init__(self, app, items, query: str = ""):
        self.response = None
        self.elapsed = None
        self._thread = threading.Thread(target=self._run, args=(app, items, query), daemon=True)
        self._thread.start()

    def _run(self, app, items, query):
        started = time.monotonic()
        self.response = app.test_client().put(URL + query, json=items, headers=headers())
        self.elapsed = time.monotonic() - started

    def result(self, timeout: float = ANSWER_WITHIN + 5):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request hung"
        return self.response, self.elapsed


def big_batch(existing: int) -> list[dict]:
    """Updates of keys 1..existing, explicit creates and key-0 creates: 3,000 items."""
    return ([item(k, plan_ID="P2", schedule_Date="2026-06-30") for k in range(1, existing + 1)]
            + [item(k) for k in range(100_001, 101_001)]
            + [item(0) for _ in range(3000 - existing - 1000)])


def seed_rows(client, count: int) -> dict[int, tuple]:
    response = client.put(URL, json=[item(k) for k in range(1, count + 1)], headers=headers())
    assert statuses(response) == [201] * count
    return response


def terminate(dsn: str, pid: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def test_connection_killed_while_reading_facts(app, dsn):
    """The backend dies while the batch waits for its locks: 503, nothing written."""
    client = app.test_client()
    seed_rows(client, 500)
    before = keys(dsn)
    with psycopg.connect(dsn) as blocker:
        blocker.execute("SELECT 1 FROM groups WHERE group_id = 'G1' FOR UPDATE")
        flight = InFlight(app, big_batch(500))
        terminate(dsn, backend_waiting(dsn, "flexsvc_read_batch_facts"))
        blocker.rollback()
    response, elapsed = flight.result()
    assert_503(response, elapsed)
    assert keys(dsn) == before
    # The dead connection was discarded: the very next request works.
    assert statuses(client.put(URL, json=[item(7_000)], headers=headers())) == [201]


def test_connection_killed_during_the_set_based_write(app, dsn):
    """The backend dies inside the one INSERT ... ON CONFLICT: 503, no row created or changed."""
    client = app.test_client()
    seed_rows(client, 500)
    before = keys(dsn)
    with psycopg.connect(dsn) as blocker:
        # SHARE lets the batch lock its rows (ROW SHARE) but blocks its write (ROW EXCLUSIVE).
        blocker.execute("LOCK TABLE group_flex_schedule IN SHARE MODE")
        flight = InFlight(app, big_batch(500))
        terminate(dsn, backend_waiting(dsn, "flexsvc_upsert_schedules"))
        blocker.rollback()
    response, elapsed = flight.result()
    assert_503(response, elapsed)
    assert keys(dsn) == before


def test_connection_killed_during_commit(app, dsn):
    """The backend dies while COMMIT runs (a deferred trigger keeps it busy): 503, and the
    transaction did not commit, so the client's 503 is the truth."""
    client = app.test_client()
    seed_rows(client, 100)
    before = keys(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            CREATE OR REPLACE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(20); RETURN NULL; END $$""")
        conn.execute("""
            CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT OR UPDATE ON group_flex_schedule
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (NEW.group_flex_schedule_key = 424242) EXECUTE FUNCTION slow_commit()""")
    try:
        flight = InFlight(app, [*big_batch(100)[:1100], item(424242)])
        pid = None
        deadline = time.monotonic() + 8
        with psycopg.connect(dsn, autocommit=True) as admin:
            while pid is None and time.monotonic() < deadline:
                row = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'flexsvc' "
                    "AND wait_event = 'PgSleep' AND query ILIKE 'COMMIT%%'").fetchone()
                pid = row[0] if row else time.sleep(0.05)
        assert pid, "the batch never reached COMMIT"
        terminate(dsn, pid)
        response, elapsed = flight.result()
        assert_503(response, elapsed)
        assert keys(dsn) == before
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TRIGGER IF EXISTS slow_commit ON group_flex_schedule")


def test_server_stopped_while_request_in_flight(app, dsn, server):
    """pg_ctl stop -m immediate under a running batch: 503 within 10 s, then recovery."""
    client = app.test_client()
    seed_rows(client, 300)
    before = keys(dsn)
    blocker = psycopg.connect(dsn)
    try:
        blocker.execute("LOCK TABLE group_flex_schedule IN SHARE MODE")
        flight = InFlight(app, big_batch(300))
        backend_waiting(dsn, "flexsvc_upsert_schedules")
        server.stop("immediate")
        response, elapsed = flight.result()
        assert_503(response, elapsed)
    finally:
        blocker.close()
    server.start()
    response, waited = recover(client, [item(9_000)], time.monotonic())
    assert statuses(response) == [201] and waited < RECOVER_WITHIN
    after = keys(dsn)
    assert after.pop(9_000) and after == before


def test_pool_exhausted_answers_503_within_wait_timeout(dsn):
    """Every pooled connection busy: the next request gets 503 after the pool's wait timeout."""
    app = make_app(dsn, max_size=1, wait_timeout=1.0)
    try:
        client = app.test_client()
        with psycopg.connect(dsn) as blocker:
            blocker.execute("SELECT 1 FROM groups WHERE group_id = 'G1' FOR UPDATE")
            flight = InFlight(app, [item(1)])
            backend_waiting(dsn, "flexsvc_read_batch_facts")
            response, elapsed = timed_put(client, [item(2)])
            assert_503(response, elapsed)
            assert elapsed < 3
            blocker.rollback()
        response, _ = flight.result()
        assert statuses(response) == [201]
        assert set(keys(dsn)) == {1}
    finally:
        app.extensions["flexsvc.pools"].close()


def test_unreachable_at_first_use_answers_503(dsn):
    """A tenant whose server is not there at all (nothing listens on the port)."""
    from flexsvc.ops.embedded import free_port
    app = make_app(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    try:
        response, elapsed = timed_put(app.test_client(), [item(1)])
        assert_503(response, elapsed)
        assert app.test_client().get("/readyz").status_code == 503
    finally:
        app.extensions["flexsvc.pools"].close()
