"""Failover (SPEC §11): a read-only server is a 503 and its connection is discarded; a tenant
whose DSN names a primary and a synchronous standby (libpq's multi-host form with
``target_session_attrs=read-write``) answers 503 while there is no primary, serves again from the
promoted standby without a restart, and loses no batch it answered 207.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg import sql as pgsql

from flexsvc import create_app
from flexsvc.config import settings_from_mapping
from flexsvc.data.migrations import apply_migrations
from tests.conftest import create_database, drop_database, seed_groups, settings_mapping
from tests.helpers import headers, item, put_batch, statuses
from tests.servers import Replicated, run_gunicorn, run_primary_and_standby, write_config

URL = "/groups/G1/flex-schedules-batch"
LIST_URL = "/groups/G1/flex-schedules"
RECOVER_WITHIN = 30.0   # SPEC §11: serving again within 30 s of the promotion
OUTAGE = 12.0           # from the primary's death to the promotion: > 2 x the pool's wait_timeout


def assert_503(response) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json()["error"]["status"] == 503
    assert int(response.headers["Retry-After"]) > 0


@pytest.fixture
def read_only_database(pg_admin_dsn: str) -> Iterator[tuple[str, str]]:
    """A migrated, seeded database whose new sessions are read-only (name, DSN)."""
    name = f"flexsvc_ro_{uuid.uuid4().hex[:8]}"
    dsn = create_database(pg_admin_dsn, name)
    with psycopg.connect(dsn) as conn:
        apply_migrations(conn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        seed_groups(conn)
        conn.execute(pgsql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on")
                     .format(pgsql.Identifier(name)))
    yield name, dsn
    drop_database(pg_admin_dsn, name)


def test_read_only_database_answers_503_and_its_connections_are_discarded(
        read_only_database: tuple[str, str], pg_admin_dsn: str, caplog):
    """``default_transaction_read_only`` (what a standby also reports): every write is a 503 at
    once, not an item error, not a retry item by item, not a 500."""
    name, dsn = read_only_database
    mapping = settings_mapping({"main": dsn, "other": dsn},
                               pool={"min_size": 0, "max_size": 1, "wait_timeout": 3.0})
    app = create_app(settings_from_mapping(mapping, environ={}))
    try:
        client = app.test_client()
        assert_503(put_batch(client, [item(1), item(0)]))
        assert_503(client.put(f"{LIST_URL}/1", json=item(1), headers=headers()))
        assert_503(client.delete(f"{LIST_URL}/1", headers=headers()))
        assert_503(put_batch(client, [item(1)], query="dryRun=true"))
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

        # The database becomes writable; a connection kept from the read-only time would stay
        # read-only (the setting is read at connect), so answers recover only if each was
        # discarded. At most one 503 more: the pool may have opened its replacement already.
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(pgsql.SQL("ALTER DATABASE {} RESET default_transaction_read_only")
                         .format(pgsql.Identifier(name)))
        answers = [put_batch(client, [item(1)]) for _ in range(4)]
        codes = [r.status_code for r in answers]
        assert codes in ([207] * 4, [503] + [207] * 3), codes
        assert next(statuses(r) for r in answers if r.status_code == 207) == [201]
    finally:
        app.extensions["flexsvc.pools"].close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT group_flex_schedule_key FROM group_flex_schedule"
                            ).fetchall() == [(1,)]


# --- failover under load ----------------------------------------------------------------------

@dataclass
class Answer:
    started: float
    ended: float
    status: int
    retry_after: str | None
    sent: list[dict]
    data: list[dict] | None


class Load:
    """``clients`` threads sending 5-item batches back to back, each item a key never sent
    before (no key-0 items: the keys the server assigns would meet later explicit ones)."""

    def __init__(self, url: str, clients: int = 8):
        self.url = url
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True)
                         for n in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _client(self, n: int) -> None:
        seq = 0
        with requests.Session() as session:
            while not self._stop.is_set():
                seq += 1
                first = 1_000_000 + n * 100_000 + seq * 5
                # CUSTOM: stored as sent (a rule-based type would move most of these dates).
                sent = [item(k, schedule_Date=f"2026-{k % 12 + 1:02d}-{k % 28 + 1:02d}",
                             schedule_Type="CUSTOM") for k in range(first, first + 5)]
                started = time.monotonic()
                try:
                    response = session.put(self.url + URL, json=sent, headers=headers(),
                                           timeout=30)
                    answer = Answer(started, time.monotonic(), response.status_code,
                                    response.headers.get("Retry-After"), sent,
                                    response.json()["data"])
                except requests.RequestException:   # status 0: no HTTP answer at all
                    answer = Answer(started, time.monotonic(), 0, None, sent, None)
                with self._lock:
                    self.answers.append(answer)
                if answer.status != 207:
                    time.sleep(0.2)   # a client honouring Retry-After would wait longer

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)


def timeline(answers: list[Answer], origin: float) -> str:
    """The answers as ``started..ended:status`` in seconds from ``origin``, for a failure."""
    return " ".join(f"{a.started - origin:.1f}..{a.ended - origin:.1f}:{a.status}"
                    for a in answers if a.ended > origin - 1)


def stored(dsn: str) -> dict[int, str]:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return {key: when.date().isoformat() for key, when in conn.execute(
            "SELECT group_flex_schedule_key, schedule_date FROM group_flex_schedule")}


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Replicated]:
    with run_primary_and_standby() as servers:
        yield servers


@pytest.mark.slow
def test_failover_to_a_synchronous_standby_under_load(tmp_path: Path, replicated: Replicated):
    name = "failover"
    replicated.primary.create_database(name)
    with psycopg.connect(replicated.primary.dsn(name)) as conn:
        apply_migrations(conn)
    with psycopg.connect(replicated.primary.dsn(name), autocommit=True) as conn:
        seed_groups(conn)
    config = write_config(tmp_path / "flexsvc.toml", settings_mapping({
        "main": replicated.dsn(name, target_session_attrs="read-write"),
        # The standby reached directly, without target_session_attrs: a read-only server.
        "other": replicated.standby.dsn(name),
    }, pool={}))

    with run_gunicorn(config, workers=2, threads=4) as server:
        standby_direct = {"key": "other-tenant", "database": "other"}
        response = requests.put(server.url + URL, json=[item(1)],
                                headers=headers(**standby_direct), timeout=30)
        assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
        assert requests.get(server.url + LIST_URL, headers=headers(**standby_direct),
                            timeout=30).status_code == 200      # reading a standby is fine

        with Load(server.url) as load:
            time.sleep(2.0)
            assert any(a.status == 207 for a in load.snapshot()), load.snapshot()[:3]
            replicated.primary.stop("immediate")
            killed = time.monotonic()       # the primary is gone for sure from here on
            time.sleep(OUTAGE)
            promoting = time.monotonic()
            replicated.promote()
            promoted = time.monotonic()
            # Until answers have been 207 for 3 s on end, or 30 s after the promotion.
            while time.monotonic() < promoted + RECOVER_WITHIN:
                recent = [a for a in load.snapshot() if a.started > time.monotonic() - 3.0]
                if (time.monotonic() > promoted + 3.0 and recent
                        and all(a.status == 207 for a in recent)):
                    break
                time.sleep(0.2)
        answers = load.snapshot()
        logged = server.log_lines()

    assert answers and {a.status for a in answers} <= {207, 503}, \
        {a.status for a in answers}
    for answer in answers:
        if answer.status == 503:
            assert int(answer.retry_after) > 0
        else:
            assert {r["status"] for r in answer.data} <= {201}, answer.data
    # No primary between the kill and the promotion: every request made then answered 503.
    no_primary = [a for a in answers if a.started > killed and a.ended < promoting]
    assert no_primary and {a.status for a in no_primary} == {503}, timeline(answers, killed)
    # Serving again from the new primary, in every worker, well within 30 s.
    after = [a for a in answers if a.started > promoted]
    last_503 = max((a.ended for a in after if a.status == 503), default=promoted)
    assert last_503 - promoted < RECOVER_WITHIN
    assert after and after[-1].status == 207
    assert [a for a in after if a.started > last_503 and a.status != 207] == []
    # No batch answered 207 is missing on the new primary (synchronous replication).
    rows = stored(replicated.standby.dsn(name))
    for answer in (a for a in answers if a.status == 207):
        for sent, result in zip(answer.sent, answer.data, strict=True):
            key = result["id"][0]["value"]
            assert rows.get(key) == sent["schedule_Date"], (key, answer)
    assert not [line for line in logged if line.get("status", 0) >= 500 and line["status"] != 503]
    print(f"failover: {len(answers)} batches, first 207 after the promotion "
          f"{min(a.ended for a in after if a.status == 207) - promoted:.1f} s, "
          f"last 503 {last_503 - promoted:.1f} s after it")
