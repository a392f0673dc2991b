"""Exactly-once retries with the Idempotency-Key header (SPEC §9), against real PostgreSQL.

Every test asserts what a client sees (statuses, body bytes, headers) and what is stored (the
rows, and the records in ``flexsvc_idempotency``). Keys are unique per test (uuid), and
``clean_db`` empties the records too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from flexsvc import create_app
from flexsvc.config import ConfigError, settings_from_mapping
from flexsvc.data.idempotency import IdempotencyScope
from flexsvc.data.migrations import apply_migrations
from flexsvc.http.idempotency import key_digest, parse_key
from flexsvc.ops.embedded import EmbeddedPostgres
from tests.conftest import seed_groups, settings_mapping
from tests.helpers import headers, in_thread, item, rows, statuses

KEY_HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
BATCH = "/groups/G1/flex-schedules-batch"
RECORDS = "/groups/G1/flex-schedules"
LAYOUT = "/groups/G1/flexes/P1/2026/schedule"
LAYOUT_BODY = {"schedule_Type": "MONTHLY", "first_Payment_Date": "2026-01-09"}


def new_key() -> str:
    return f"retry-{uuid.uuid4()}"


def encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def send(client, method: str, url: str, idempotency_key: str | None, body: Any = None,
         **header_args):
    """One request with an Idempotency-Key (none when None), the body as bytes; the other
    headers as ``tests.helpers.headers(**header_args)`` makes them."""
    sent = headers(**header_args)
    if idempotency_key is not None:
        sent[KEY_HEADER] = idempotency_key
    return client.open(url, method=method, headers=sent,
                       data=None if body is None else encode(body))


def records(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM flexsvc_idempotency ORDER BY created_at, "
                           "idempotency_key").fetchall()


def stored_state(conn: psycopg.Connection) -> tuple:
    """Every schedule row (audit fields included) and every GroupFlex anchor."""
    anchors = conn.execute("SELECT group_id, plan_id, calendar_year, first_payment_date "
                           "FROM group_flex ORDER BY 1, 2, 3").fetchall()
    return rows(conn), anchors


def assert_replay(first, again) -> None:
    """``again`` is ``first`` replayed: status, body bytes, Content-Type and Location."""
    assert again.status_code == first.status_code, again.get_data(as_text=True)
    assert again.get_data() == first.get_data()
    assert again.headers.get("Content-Type") == first.headers.get("Content-Type")
    assert again.headers.get("Location") == first.headers.get("Location")
    assert again.headers[REPLAYED] == "true"
    assert REPLAYED not in first.headers
    # The replay has its own activity ID (header); the body keeps the first one's.
    assert again.headers["X-Activity-ID"] != first.headers["X-Activity-ID"]


def assert_fresh(response, status: int) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert REPLAYED not in response.headers


# --- replay, byte for byte, on every writing route ------------------------------------------

ROUTES = {
    # name: (method, url, body, a record to create first, the first answer's status)
    "batch": ("PUT", BATCH, [item(0), item(0, schedule_Date="2026-02-15"), item(5),
                             item(0, plan_ID="NOPE")], None, 207),
    "post": ("POST", RECORDS, item(0), None, 201),
    "put-create": ("PUT", f"{RECORDS}/77", item(77), None, 201),
    "put-update": ("PUT", f"{RECORDS}/78", item(78, schedule_Date="2026-03-01"), 78, 200),
    "delete": ("DELETE", f"{RECORDS}/79", None, 79, 204),
    "lay-out": ("PUT", LAYOUT, LAYOUT_BODY, None, 207),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_writing_route_replays_byte_for_byte_and_writes_nothing(client, db, route):
    method, url, body, existing, status = ROUTES[route]
    if existing:
        assert send(client, "PUT", f"{RECORDS}/{existing}", None, item(existing)).status_code == 201
    key = new_key()
    first = send(client, method, url, key, body)
    assert_fresh(first, status)
    if status == 201:
        assert first.headers["Location"].startswith(f"{RECORDS}/")
    after_first = stored_state(db)
    (recorded,) = records(db)
    assert (recorded["status"], bytes(recorded["body"])) == (status, first.get_data())
    assert recorded["content_type"] == first.headers.get("Content-Type")
    assert recorded["location"] == first.headers.get("Location")
    assert (recorded["api_key_name"], recorded["jwt_user"], recorded["idempotency_key"]) == (
        "payroll", "alice", key)
    assert recorded["expires_at"] - recorded["created_at"] == timedelta(hours=24)

    for _ in range(2):
        again = send(client, method, url, key, body)
        assert_replay(first, again)
        assert stored_state(db) == after_first
    assert len(records(db)) == 1
    if first.get_data():
        assert json.loads(again.get_data())["debug"]["activityID"] == \
            first.headers["X-Activity-ID"]


def test_a_replayed_key0_batch_creates_nothing_more(client, db):
    """The issue's case: key-0 creates sent again after a lost answer."""
    batch = [item(0, schedule_Date=f"2026-{m:02d}-01") for m in range(1, 13)]
    key = new_key()
    first = send(client, "PUT", BATCH, key, batch)
    assert statuses(first) == [201] * 12
    again = send(client, "PUT", BATCH, key, batch)
    assert_replay(first, again)
    assert len(rows(db)) == 12
    assert sorted(r["group_flex_schedule_key"] for r in rows(db)) == sorted(
        r["id"][0]["value"] for r in first.get_json()["data"])


def test_a_207_whose_items_all_failed_is_recorded_and_replayed(client, db):
    batch = [item(0, plan_ID="NOPE"), {"groupFlexSchedule_Key": "x"}, item(0, group_ID="G2")]
    key = new_key()
    first = send(client, "PUT", BATCH, key, batch)
    assert statuses(first) == [422, 400, 400]
    assert len(records(db)) == 1
    assert_replay(first, send(client, "PUT", BATCH, key, batch))
    assert rows(db) == []


def test_a_quoted_key_is_the_same_key(client, db):
    key = new_key()
    first = send(client, "POST", RECORDS, f'"{key}"', item(0))
    assert_fresh(first, 201)
    assert_replay(first, send(client, "POST", RECORDS, key, item(0)))
    assert records(db)[0]["idempotency_key"] == key
    escaped = send(client, "POST", RECORDS, r'"a\"b\\c"', item(0))
    assert_fresh(escaped, 201)
    assert_replay(escaped, send(client, "POST", RECORDS, 'a"b\\c', item(0)))
    assert len(rows(db)) == 2


# --- a different request with the same key: 422 ---------------------------------------------

CONFLICTS = {
    "body": ("PUT", BATCH, [item(0, schedule_Date="2026-05-01")]),
    "body bytes only (same JSON, other spacing)": ("PUT", BATCH, b'[ {"groupFlexSchedule_Key": '
                                                   b'0, "group_ID": "G1", "plan_ID": "P1", '
                                                   b'"calendar_Year": "2026", "schedule_Date": '
                                                   b'"2026-01-15", "schedule_Type": "MONTHLY"}]'),
    "query": ("PUT", BATCH + "?atomic=true", [item(0)]),
    "path": ("PUT", "/groups/G2/flex-schedules-batch", [item(0, group_ID="G2")]),
    "method and path": ("POST", RECORDS, item(0)),
}


@pytest.mark.parametrize("change", list(CONFLICTS))
def test_the_same_key_for_another_request_is_422_and_writes_nothing(client, db, change):
    key = new_key()
    first = send(client, "PUT", BATCH, key, [item(0)])
    assert statuses(first) == [201]
    before = stored_state(db)
    method, url, body = CONFLICTS[change]
    conflict = send(client, method, url, key, body)
    assert conflict.status_code == 422, conflict.get_data(as_text=True)
    assert conflict.mimetype == "application/problem+json"
    assert "Idempotency-Key" in conflict.get_json()["error"]["detail"]
    assert REPLAYED not in conflict.headers
    assert stored_state(db) == before and len(records(db)) == 1
    assert_replay(first, send(client, "PUT", BATCH, key, [item(0)]))   # still the original


# --- scope: (tenant, caller, key) -----------------------------------------------------------

def test_the_same_key_from_two_callers_runs_twice(client, db):
    """Another API key (same JWT user), and another JWT user (same API key): each runs once."""
    key, batch = new_key(), [item(0), item(0)]
    callers = [{"key": "payroll", "user": "alice"}, {"key": "everything", "user": "alice"},
               {"key": "payroll", "user": "bob"}]
    firsts = [send(client, "PUT", BATCH, key, batch, **caller) for caller in callers]
    for first in firsts:
        assert_fresh(first, 207)
        assert statuses(first) == [201, 201]
    assert len(rows(db)) == 6
    assert {(r["api_key_name"], r["jwt_user"]) for r in records(db)} == {
        ("payroll", "alice"), ("everything", "alice"), ("payroll", "bob")}
    for first, caller in zip(firsts, callers, strict=True):
        assert_replay(first, send(client, "PUT", BATCH, key, batch, **caller))
    assert len(rows(db)) == 6
    assert {r["update_user"] for r in rows(db)} == {"alice", "bob"}


def test_an_api_key_alone_and_a_jwt_alone_are_different_callers(tenant_dsns, db):
    """With require = "either", an API key named like a JWT user is still another caller."""
    mapping = settings_mapping(tenant_dsns)
    mapping["auth"] = {**mapping["auth"], "require": "either"}
    app = create_app(settings_from_mapping(mapping, environ={}))
    try:
        client = app.test_client()
        key = new_key()
        by_key = send(client, "POST", RECORDS, key, item(0), key="payroll", user=None)
        by_token = send(client, "POST", RECORDS, key, item(0), key=None, user="payroll")
        assert_fresh(by_key, 201)
        assert_fresh(by_token, 201)
        assert {(r["api_key_name"], r["jwt_user"]) for r in records(db)} == {
            ("payroll", ""), ("", "payroll")}
        assert_replay(by_token, send(client, "POST", RECORDS, key, item(0), key=None,
                                     user="payroll"))
        assert len(rows(db)) == 2
    finally:
        app.extensions["flexsvc.pools"].close()


def test_the_same_key_in_another_tenant_is_another_scope(client, db, tenant_dsns):
    key = new_key()
    assert_fresh(send(client, "PUT", BATCH, key, [item(0)], key="everything"), 207)
    empty = ("TRUNCATE group_flex_schedule, group_flex, groups, flexsvc_idempotency "
             "RESTART IDENTITY CASCADE")
    with psycopg.connect(tenant_dsns["other"], autocommit=True) as other:
        other.execute(empty)
        try:
            seed_groups(other)
            there = send(client, "PUT", BATCH, key, [item(0)], key="everything",
                         database="other")
            assert_fresh(there, 207)
            assert len(rows(other)) == 1 and len(records(other)) == 1
        finally:
            other.execute(empty)
    assert len(rows(db)) == 1 and len(records(db)) == 1


# --- concurrent duplicates: never run twice ---------------------------------------------------

def test_concurrent_duplicates_run_exactly_once(pool_app, db):
    """8 threads send the same key and batch at once, three times over: each time exactly one
    execution (one fresh 207, its rows once); every other answer is its replay or a 409."""
    client = pool_app.test_client()
    batch = [item(0, schedule_Date=f"2026-{1 + n % 12:02d}-01") for n in range(300)]
    threads = 8
    def one(key: str, gate: threading.Barrier):
        gate.wait()
        return send(client, "PUT", BATCH, key, batch)

    for round_no in range(3):
        key, gate = new_key(), threading.Barrier(threads)
        with ThreadPoolExecutor(threads) as pool:
            answers = list(pool.map(lambda _: one(key, gate), range(threads)))  # noqa: B023
        fresh = [a for a in answers if a.status_code == 207 and REPLAYED not in a.headers]
        assert len(fresh) == 1, [(a.status_code, dict(a.headers)) for a in answers]
        assert statuses(fresh[0]) == [201] * 300
        for answer in answers:
            if answer is fresh[0]:
                continue
            if answer.status_code == 409:
                assert answer.headers["Retry-After"] == "1"
            else:
                assert_replay(fresh[0], answer)
        assert len(rows(db)) == 300 * (round_no + 1)
        assert len(records(db)) == round_no + 1


def waiting_backend(dsn: str, wait_event: str, query_like: str, timeout: float = 10.0) -> int:
    """The pid of the service's backend that waits on ``wait_event`` in ``query_like``."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'flexsvc' "
                "AND wait_event = %s AND query ILIKE %s",
                (wait_event, f"%{query_like}%")).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError(f"no backend waits on {wait_event} in {query_like!r}")


def test_a_duplicate_waits_for_the_first_and_replays_its_answer(pool_app, db, tenant_dsns):
    """Deterministic: the first request is held inside its transaction (a lock on the group);
    the duplicate waits on the key's lock; once the first commits, the duplicate replays it."""
    dsn, key, batch = tenant_dsns["main"], new_key(), [item(0), item(0), item(9)]
    with psycopg.connect(dsn) as blocker:
        blocker.execute("SELECT 1 FROM groups WHERE group_id = 'G1' FOR UPDATE")
        first_thread, first = in_thread(
            lambda: send(pool_app.test_client(), "PUT", BATCH, key, batch))
        waiting_backend(dsn, "transactionid", "flexsvc_read_batch_facts")
        second_thread, second = in_thread(
            lambda: send(pool_app.test_client(), "PUT", BATCH, key, batch))
        waiting_backend(dsn, "advisory", "pg_advisory_xact_lock")
        blocker.rollback()
    first_thread.join(20)
    second_thread.join(20)
    assert_fresh(first[0], 207)
    assert statuses(first[0]) == [201, 201, 201]
    assert_replay(first[0], second[0])
    assert len(rows(db)) == 3 and len(records(db)) == 1


def test_a_key_still_in_use_after_lock_timeout_is_409_and_can_be_used_later(tenant_dsns, db):
    """The key's lock held (as by a first request still running) past lock_timeout: 409 with
    Retry-After, nothing written, nothing recorded. Released sooner: the request runs."""
    mapping = settings_mapping(tenant_dsns, pool={"min_size": 0, "max_size": 4,
                                                  "lock_timeout_ms": 400})
    app = create_app(settings_from_mapping(mapping, environ={}))
    try:
        client, key = app.test_client(), new_key()
        lock = IdempotencyScope("payroll", "alice", key, b"").lock_id
        with psycopg.connect(tenant_dsns["main"]) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            busy = send(client, "PUT", BATCH, key, [item(0)])
            assert busy.status_code == 409, busy.get_data(as_text=True)
            assert busy.headers["Retry-After"] == "1"
            assert "still being processed" in busy.get_json()["error"]["detail"]
            assert rows(db) == [] and records(db) == []
            # Held for less than lock_timeout, then released without a record (the first
            # request rolled back): the waiting request runs.
            thread, later = in_thread(lambda: send(client, "PUT", BATCH, key, [item(0)]))
            waiting_backend(tenant_dsns["main"], "advisory", "pg_advisory_xact_lock")
            holder.rollback()
        thread.join(20)
        assert_fresh(later[0], 207)
        assert len(rows(db)) == 1 and len(records(db)) == 1
    finally:
        app.extensions["flexsvc.pools"].close()


# --- what wrote nothing is not recorded, and its key can be used again ----------------------

@pytest.fixture
def tight_app(tenant_dsns) -> Iterator:
    """Two items at most per batch, and a short lock_timeout (a blocked write answers 503)."""
    mapping = settings_mapping(tenant_dsns, pool={"min_size": 0, "max_size": 4,
                                                  "lock_timeout_ms": 300},
                               limits={"max_items": 2})
    app = create_app(settings_from_mapping(mapping, environ={}))
    yield app
    app.extensions["flexsvc.pools"].close()


def blocked_503(app, dsn: str, key: str):
    with psycopg.connect(dsn) as blocker:
        blocker.execute("SELECT 1 FROM groups WHERE group_id = 'G1' FOR UPDATE")
        response = send(app.test_client(), "PUT", BATCH, key, [item(0)])
        blocker.rollback()
    return response


WROTE_NOTHING = {
    # name: a call (app, client, dsn, key) -> response, and its status
    "401": (lambda app, c, dsn, key: send(c, "PUT", BATCH, key, [item(0)], key=None), 401),
    "403": (lambda app, c, dsn, key: send(c, "PUT", BATCH, key, [item(0)], database="other"),
            403),
    "400 malformed JSON": (lambda app, c, dsn, key: send(c, "PUT", BATCH, key, b"[{"), 400),
    "404 unknown group": (lambda app, c, dsn, key: send(
        c, "PUT", "/groups/NOPE/flex-schedules-batch", key, [item(0, group_ID="NOPE")]), 404),
    "413 too many items": (lambda app, c, dsn, key: send(c, "PUT", BATCH, key, [item(0)] * 3),
                           413),
    "415": (lambda app, c, dsn, key: c.put(BATCH, data=b"[]", headers={
        **headers(), "Content-Type": "text/plain", KEY_HEADER: key}), 415),
    "503 lock timeout": (lambda app, c, dsn, key: blocked_503(app, dsn, key), 503),
    "409 key of another group (single PUT)": (lambda app, c, dsn, key: send(
        c, "PUT", f"{RECORDS}/4242", key, item(4242)), 409),
    "422 missing parent (POST)": (lambda app, c, dsn, key: send(
        c, "POST", RECORDS, key, item(0, plan_ID="NOPE")), 422),
    "404 delete of a missing record": (lambda app, c, dsn, key: send(
        c, "DELETE", f"{RECORDS}/999", key), 404),
    "422 lay-out of a CUSTOM type": (lambda app, c, dsn, key: send(
        c, "PUT", LAYOUT, key, {"schedule_Type": "CUSTOM"}), 422),
}


@pytest.mark.parametrize("case", list(WROTE_NOTHING))
def test_a_request_that_wrote_nothing_is_not_recorded_and_its_key_is_free(tight_app, db,
                                                                          tenant_dsns, case):
    db.execute("INSERT INTO group_flex_schedule (group_flex_schedule_key, group_id, plan_id, "
               "calendar_year, schedule_date, schedule_type, entry_date, update_date) VALUES "
               "(4242, 'G2', 'P1', '2026', '2026-01-01', 'CUSTOM', now(), now())")
    before = stored_state(db)
    client, key = tight_app.test_client(), new_key()
    call, status = WROTE_NOTHING[case]
    response = call(tight_app, client, tenant_dsns["main"], key)
    assert response.status_code == status, response.get_data(as_text=True)
    assert REPLAYED not in response.headers
    assert stored_state(db) == before and records(db) == []
    # The key is free: a different request with it runs (no 422, no replay).
    used = send(client, "PUT", BATCH, key, [item(0, schedule_Date="2026-06-01")])
    assert_fresh(used, 207)
    assert statuses(used) == [201] and len(records(db)) == 1


def test_dry_runs_are_not_recorded(client, db):
    key, batch = new_key(), [item(0), item(0)]
    for _ in range(2):   # the same dry run twice: both run, neither is a replay
        dry = send(client, "PUT", BATCH + "?dryRun=true", key, batch)
        assert_fresh(dry, 207)
        assert statuses(dry) == [201, 201]
    assert rows(db) == [] and records(db) == []
    real = send(client, "PUT", BATCH, key, batch)   # another query: not a conflict
    assert_fresh(real, 207)
    assert len(rows(db)) == 2
    lay_out_key = new_key()
    assert_fresh(send(client, "PUT", LAYOUT + "?dryRun=true", lay_out_key, LAYOUT_BODY), 207)
    assert len(records(db)) == 1
    assert_fresh(send(client, "PUT", LAYOUT, lay_out_key, LAYOUT_BODY), 207)
    assert len(records(db)) == 2


def test_a_rolled_back_atomic_batch_is_not_recorded(client, db):
    key = new_key()
    failed = send(client, "PUT", BATCH + "?atomic=true", key, [item(0), item(0, plan_ID="NOPE")])
    assert statuses(failed) == [424, 422]
    assert rows(db) == [] and records(db) == []
    again = send(client, "PUT", BATCH + "?atomic=true", key, [item(0), item(0, plan_ID="NOPE")])
    assert_fresh(again, 207)   # ran again: not a replay
    fixed = send(client, "PUT", BATCH + "?atomic=true", key, [item(0), item(0, plan_ID="P2")])
    assert_fresh(fixed, 207)
    assert statuses(fixed) == [201, 201] and len(rows(db)) == 2
    assert_replay(fixed, send(client, "PUT", BATCH + "?atomic=true", key,
                              [item(0), item(0, plan_ID="P2")]))


# --- expiry and pruning ---------------------------------------------------------------------

def test_an_expired_record_is_not_replayed_and_is_replaced(client, db):
    key = new_key()
    first = send(client, "PUT", BATCH, key, [item(0)])
    assert_fresh(first, 207)
    db.execute("UPDATE flexsvc_idempotency SET expires_at = now() - interval '1 second'")
    again = send(client, "PUT", BATCH, key, [item(0)])
    assert_fresh(again, 207)                 # ran again: a second row
    assert len(rows(db)) == 2
    (record,) = records(db)
    assert bytes(record["body"]) == again.get_data()
    assert_replay(again, send(client, "PUT", BATCH, key, [item(0)]))


def test_each_new_record_prunes_expired_ones(client, db):
    db.execute("""
        INSERT INTO flexsvc_idempotency (api_key_name, jwt_user, idempotency_key, fingerprint,
                                         status, body, created_at, expires_at)
        SELECT 'payroll', 'alice', 'old-' || n, '\\x00', 207, '', now() - interval '2 days',
               now() - interval '1 day' - n * interval '1 second'
        FROM generate_series(1, 150) AS n""")
    db.execute("""
        INSERT INTO flexsvc_idempotency (api_key_name, jwt_user, idempotency_key, fingerprint,
                                         status, body, expires_at)
        VALUES ('payroll', 'alice', 'live', '\\x00', 207, '', now() + interval '1 hour')""")
    assert_fresh(send(client, "PUT", BATCH, new_key(), [item(0)]), 207)
    left = {r["idempotency_key"] for r in records(db)}
    assert len(left) == 150 - 100 + 2 and "live" in left
    # The oldest expired went first (old-150 expired first).
    assert {f"old-{n}" for n in range(1, 51)} <= left
    assert_fresh(send(client, "PUT", BATCH, new_key(), [item(0)]), 207)
    assert not [k for k in (r["idempotency_key"] for r in records(db)) if k.startswith("old-")]


def test_ttl_hours_is_the_records_lifetime(tenant_dsns, db):
    mapping = settings_mapping(tenant_dsns, idempotency={"ttl_hours": 0.0003})   # ~1 s
    app = create_app(settings_from_mapping(mapping, environ={}))
    try:
        client, key = app.test_client(), new_key()
        first = send(client, "POST", RECORDS, key, item(0))
        assert_fresh(first, 201)
        (record,) = records(db)
        assert (record["expires_at"] - record["created_at"]).total_seconds() == \
            pytest.approx(1.08)
        assert_replay(first, send(client, "POST", RECORDS, key, item(0)))
        time.sleep(1.2)
        assert_fresh(send(client, "POST", RECORDS, key, item(0)), 201)
        assert len(rows(db)) == 2
    finally:
        app.extensions["flexsvc.pools"].close()


@pytest.mark.parametrize("ttl", [0, -1, "24", True])
def test_ttl_hours_must_be_a_positive_number(tenant_dsns, ttl):
    with pytest.raises(ConfigError, match=r"idempotency\.ttl_hours"):
        settings_from_mapping(settings_mapping(tenant_dsns, idempotency={"ttl_hours": ttl}),
                              environ={})


# --- the header ------------------------------------------------------------------------------

BAD_KEYS = {
    "empty": "",
    "256 characters": "k" * 256,
    "a space": "two words",
    "a tab": "tab\there",
    "a control character": "bell\x07",
    "DEL": "del\x7f",
    "non-ASCII": "clé",
    "an opening quote only": '"open',
    "a closing quote only": 'close"',
    "a lone quote": '"',
    "empty quotes": '""',
    "a space in quotes": '"two words"',
    "256 characters in quotes": '"' + "k" * 256 + '"',
    "an unknown escape": r'"a\nb"',
    "an unescaped quote inside quotes": '"a"b"',
    "two keys (the header sent twice)": "first, second",
}


@pytest.mark.parametrize("name", list(BAD_KEYS))
def test_a_malformed_key_is_400_and_nothing_is_written(client, db, name):
    response = send(client, "PUT", BATCH, BAD_KEYS[name], [item(0)])
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "Idempotency-Key" in response.get_json()["error"]["detail"]
    assert rows(db) == [] and records(db) == []


@pytest.mark.parametrize("value, key", [
    ("k" * 255, "k" * 255), ('"' + "k" * 255 + '"', "k" * 255), ("a", "a"), ("~!", "~!"),
    ('a"b', 'a"b'), ('"a\\"b"', 'a"b'), ("a\\b", "a\\b"), ('"a\\\\b"', "a\\b"),
    ("'single'", "'single'"),
])
def test_valid_keys(value, key):
    assert parse_key(value) == key


def test_a_malformed_key_is_checked_after_credentials_and_tenant_before_the_body(client, db):
    bad = "two words"
    assert send(client, "PUT", BATCH, bad, [item(0)], key=None).status_code == 401
    assert send(client, "PUT", BATCH, bad, [item(0)], database=None).status_code == 400
    assert send(client, "PUT", BATCH, bad, [item(0)], database="other").status_code == 403
    for response in (send(client, "PUT", "/groups/" + "G" * 21 + "/flex-schedules-batch", bad,
                          [item(0)]),
                     client.put(BATCH, data=b"[", headers={**headers(), KEY_HEADER: bad,
                                                           "Content-Type": "text/plain"})):
        assert response.status_code == 400
        assert "Idempotency-Key" in response.get_json()["error"]["detail"]
    assert rows(db) == []


def test_without_the_header_nothing_changes(client, db):
    """No key: every request runs (key-0 creates twice), nothing is recorded, no new header."""
    for _ in range(2):
        response = send(client, "PUT", BATCH, None, [item(0)])
        assert_fresh(response, 207)
        response = send(client, "POST", RECORDS, None, item(0))
        assert_fresh(response, 201)
    assert len(rows(db)) == 4 and records(db) == []


def test_reads_ignore_the_header(client, db):
    send(client, "PUT", BATCH, None, [item(0)])
    for _ in range(2):
        listed = send(client, "GET", RECORDS, "two words")   # not even validated on a read
        assert listed.status_code == 200 and REPLAYED not in listed.headers
    assert records(db) == []


# --- logs and metrics -----------------------------------------------------------------------

def test_logs_and_metrics_show_what_happened_to_a_key(client, db, caplog):
    def metric(outcome: str) -> float:
        text = client.get("/metrics").get_data(as_text=True)
        line = f'flexsvc_idempotent_requests_total{{database="db1",outcome="{outcome}"}} '
        found = [float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)]
        return found[0] if found else 0.0

    outcomes = ("recorded", "replayed", "not_recorded", "conflict")
    before = {o: metric(o) for o in outcomes}
    caplog.set_level(logging.INFO, logger="flexsvc.request")
    key = f"SECRET-LOOKING-{uuid.uuid4()}"
    send(client, "PUT", BATCH, key, [item(0, plan_ID="ZZPLAN")])
    send(client, "PUT", BATCH, key, [item(0, plan_ID="ZZPLAN")])
    send(client, "PUT", BATCH, key, [item(0)])
    send(client, "PUT", BATCH + "?dryRun=true", new_key(), [item(0)])
    send(client, "PUT", BATCH, None, [item(0)])
    lines = [r for r in caplog.records if r.name == "flexsvc.request"
             and (r.__dict__.get("route") or "").endswith("flex-schedules-batch")]
    assert [getattr(r, "idempotency", None) for r in lines] == [
        "recorded", "replayed", "conflict", "not_recorded", None]
    assert lines[0].idempotency_key_sha256 == lines[1].idempotency_key_sha256 == key_digest(key)
    assert [r.status for r in lines] == [207, 207, 422, 207, 207]
    for record in caplog.records:
        text = json.dumps(record.__dict__, default=str)
        assert key not in text and "ZZPLAN" not in text
    after = {o: metric(o) for o in outcomes}
    assert {o: after[o] - before[o] for o in outcomes} == {
        "recorded": 1, "replayed": 1, "not_recorded": 1, "conflict": 1}


# --- a connection cut during COMMIT -----------------------------------------------------------

@pytest.fixture(scope="module")
def commit_server() -> Iterator[EmbeddedPostgres]:
    """A server of its own whose synchronous standby never connects: a database set to
    ``synchronous_commit = on`` holds every COMMIT after it became durable locally, until the
    backend is cancelled or terminated (then the transaction stays committed)."""
    server = EmbeddedPostgres.throwaway(settings={
        "fsync": "off", "synchronous_standby_names": "nobody_listens",
        "synchronous_commit": "local"})
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def commit_db(commit_server: EmbeddedPostgres) -> Iterator[str]:
    name = f"flexsvc_commit_{uuid.uuid4().hex[:8]}"
    dsn = commit_server.create_database(name)
    with psycopg.connect(dsn) as conn:
        apply_migrations(conn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        seed_groups(conn)
    yield dsn


def app_on(dsn: str):
    mapping = settings_mapping({"main": dsn, "other": dsn},
                               pool={"min_size": 0, "max_size": 2, "wait_timeout": 5.0})
    app = create_app(settings_from_mapping(mapping, environ={}))
    app.config["TESTING"] = True
    return app


def cut_during_commit(dsn: str, key: str, wait_event: str):
    """Send ``BIG`` with ``key``; terminate its backend while COMMIT waits on ``wait_event``;
    the answer the client got."""
    app = app_on(dsn)
    try:
        thread, first = in_thread(lambda: send(app.test_client(), "PUT", BATCH, key, BIG))
        pid = waiting_backend(dsn, wait_event, "COMMIT")
        with psycopg.connect(dsn, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        thread.join(20)
        return first[0]
    finally:
        app.extensions["flexsvc.pools"].close()


BIG = [item(0, schedule_Date=f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}", schedule_Type="CUSTOM")
       for n in range(200)]


def retry_until_answered(dsn: str, key: str):
    """The client's retry, on a fresh app (new connections)."""
    app = app_on(dsn)
    try:
        return send(app.test_client(), "PUT", BATCH, key, BIG)
    finally:
        app.extensions["flexsvc.pools"].close()


@pytest.mark.slow
def test_a_retry_after_the_connection_was_cut_during_a_commit_that_happened(commit_db):
    """The commit is durable but its acknowledgement never reaches the service (the backend is
    terminated while COMMIT waits for the standby): the client sees a 503, yet the rows and
    the record are committed. The retry with the same key replays; the rows exist once."""
    name = psycopg.conninfo.conninfo_to_dict(commit_db)["dbname"]
    with psycopg.connect(commit_db, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    key = new_key()
    first = cut_during_commit(commit_db, key, "SyncRep")
    assert first.status_code in (207, 503), first.get_data(as_text=True)
    with psycopg.connect(commit_db, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = local")   # this session's commits: no wait
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = local')
        assert len(rows(conn)) == 200 and len(records(conn)) == 1   # committed after all
    retry = retry_until_answered(commit_db, key)
    assert retry.status_code == 207 and retry.headers[REPLAYED] == "true"
    with psycopg.connect(commit_db) as conn:
        stored = sorted(r["group_flex_schedule_key"] for r in rows(conn))
        assert bytes(records(conn)[0]["body"]) == retry.get_data()
    assert stored == sorted(r["id"][0]["value"] for r in retry.get_json()["data"])
    assert len(stored) == 200


@pytest.mark.slow
def test_a_retry_after_the_connection_was_cut_during_a_commit_that_did_not_happen(commit_db):
    """The backend dies while COMMIT runs its deferred work (before the commit is durable):
    nothing committed, no record; the retry with the same key runs; the rows exist once."""
    with psycopg.connect(commit_db, autocommit=True) as conn:
        conn.execute("""
            CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(20); RETURN NULL; END $$""")
        conn.execute("""
            CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON group_flex_schedule
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()""")
    key = new_key()
    first = cut_during_commit(commit_db, key, "PgSleep")
    assert first.status_code == 503, first.get_data(as_text=True)
    with psycopg.connect(commit_db, autocommit=True) as conn:
        assert rows(conn) == [] and records(conn) == []
        conn.execute("DROP TRIGGER slow_commit ON group_flex_schedule")
    retry = retry_until_answered(commit_db, key)
    assert retry.status_code == 207 and REPLAYED not in retry.headers
    assert statuses(retry) == [201] * 200
    with psycopg.connect(commit_db) as conn:
        assert len(rows(conn)) == 200 and len(records(conn)) == 1
