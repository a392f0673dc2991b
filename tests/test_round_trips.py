"""Round trips to the database per request (SPEC §7, small batches): counted on the wire.

libpq's protocol trace of the one pooled connection shows every message the service sends; each
Sync (extended protocol) or Query (simple protocol) message is one round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import pq

from flexsvc import create_app
from flexsvc.config import settings_from_mapping
from flexsvc.data.db import check_connection
from tests.conftest import settings_mapping
from tests.helpers import headers, item, rows, statuses

URL = "/groups/G1/flex-schedules-batch"


@pytest.fixture
def traced(tenant_dsns: dict[str, str], tmp_path: Path, clean_db) -> Iterator[tuple]:
    """An app with a one-connection pool whose connection writes libpq's trace to a file."""
    mapping = settings_mapping(tenant_dsns, pool={"min_size": 1, "max_size": 1,
                                                  "wait_timeout": 5.0})
    app = create_app(settings_from_mapping(mapping, environ={}))
    pool = app.extensions["flexsvc.pools"].get("main")
    trace = (tmp_path / "libpq.trace").open("w")
    with pool.connection() as conn:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
    try:
        yield app.test_client(), Path(trace.name)
    finally:
        with pool.connection() as conn:
            conn.pgconn.untrace()
        trace.close()
        app.extensions["flexsvc.pools"].close()


def round_trips(trace: Path) -> int:
    """Messages from the client (F) that make the server answer and wait: Sync, Query."""
    lines = trace.read_text().splitlines()
    return sum(1 for line in lines if line.startswith("F") and
               (line.endswith("\tSync") or "\tQuery\t" in line))


def test_a_small_batch_is_two_round_trips(traced, db):
    client, trace = traced
    start = round_trips(trace)
    response = client.put(URL, json=[item(0), item(7), item(0, plan_ID="P2")],
                          headers=headers())
    assert statuses(response) == [201, 201, 201]
    assert round_trips(trace) - start == 2       # BEGIN ... facts | write, COMMIT
    assert len(rows(db)) == 3


def test_an_update_batch_is_two_round_trips_too(traced, db):
    client, trace = traced
    assert statuses(client.put(URL, json=[item(3)], headers=headers())) == [201]
    start = round_trips(trace)
    assert statuses(client.put(URL, json=[item(3, schedule_Date="2026-02-15")],
                               headers=headers())) == [200]
    assert round_trips(trace) - start == 2


def test_the_pool_check_costs_no_round_trip_yet_finds_a_dead_connection(tenant_dsns, tmp_path):
    with psycopg.connect(tenant_dsns["main"], autocommit=True) as conn, \
            psycopg.connect(tenant_dsns["main"], autocommit=True) as admin:
        trace_path = tmp_path / "check.trace"
        with trace_path.open("w") as trace:
            conn.pgconn.trace(trace.fileno())
            check_connection(conn)
            conn.pgconn.untrace()
        assert trace_path.read_text() == ""          # a quiet, healthy connection: no message
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        time.sleep(0.2)
        with pytest.raises(psycopg.OperationalError):
            check_connection(conn)


def test_the_read_function_reports_new_keys_in_order_and_the_owners_of_explicit_keys(client,
                                                                                      db):
    """flexsvc_read_batch_facts (migration 0006) as the batch reads it: new keys ascending from
    the identity sequence, each with the group of a row that already has it (none here); the
    explicit keys that exist, with their groups; the group, its GroupFlex rows and the types
    named. Nothing sorts the arrays of keys any more: nextval hands keys out in order."""
    assert statuses(client.put(URL, json=[item(5), item(9)], headers=headers())) == [201, 201]
    db.commit()
    with db.transaction(force_rollback=True):
        facts = db.execute(
            "SELECT new_keys, new_key_owners, group_exists, parent_plan_ids, type_names, "
            "owner_keys, owner_groups FROM flexsvc_read_batch_facts("
            "'5s', '5s', false, 'G1', '{9, 5, 77}'::integer[], '{MONTHLY, CUSTOM}', 3)"
        ).fetchone()
    new_keys, new_key_owners, group_exists, plan_ids, type_names, owner_keys, owners = facts
    assert len(new_keys) == 3 and new_keys == sorted(new_keys) and new_key_owners == [None] * 3
    assert group_exists and "P1" in plan_ids and sorted(type_names) == ["CUSTOM", "MONTHLY"]
    assert dict(zip(owner_keys, owners, strict=True)) == {5: "G1", 9: "G1"}
    same = db.execute("SELECT flexsvc_schedule_key_sequence() = pg_get_serial_sequence("
                      "'group_flex_schedule', 'group_flex_schedule_key')::regclass").fetchone()
    assert same == (True,)


WRITE = ("SELECT flexsvc_upsert_schedules('G1', 'writer', %s::integer[], %s::varchar[], "
         "%s::varchar[], %s::timestamp[], %s::varchar[], %s::boolean[], %s)")


def _write_args(keys: list[int], creates: list[bool]) -> tuple:
    n = len(keys)
    return (keys, ["P1"] * n, ["2026"] * n, ["2026-03-01"] * n, ["CUSTOM"] * n, creates,
            sum(creates))


def test_the_write_function_inserts_planned_creates_and_updates_planned_updates(client, db):
    """flexsvc_upsert_schedules (migration 0007: one INSERT ... ON CONFLICT DO UPDATE) as the
    batch calls it, after the read function locked the rows of the planned updates: key 5 is
    updated, key 6 inserted, and the check passes."""
    assert statuses(client.put(URL, json=[item(5)], headers=headers())) == [201]
    db.commit()
    with db.transaction(force_rollback=True):
        db.execute("SELECT 1 FROM group_flex_schedule WHERE group_flex_schedule_key = 5 "
                   "FOR UPDATE")
        db.execute(WRITE, _write_args([5, 6], [False, True]))
        written = {r["group_flex_schedule_key"]: r for r in rows(db)}
    assert written[5]["update_user"] == "writer" and written[5]["entry_user"] != "writer"
    assert written[5]["schedule_type"] == "CUSTOM"
    assert written[6]["entry_user"] == "writer" and written[6]["schedule_type"] == "CUSTOM"


@pytest.mark.parametrize(("keys", "creates"), [
    ([5], [True]),     # a planned create meets a row of this group (created meanwhile)
    ([7], [False]),    # a planned update whose row belongs to another group
    ([8], [False]),    # a planned update whose row does not exist
])
def test_the_write_function_refuses_any_other_outcome(client, db, keys, creates):
    """Whatever the single statement did instead of the plan (updated a row it should have
    created, left a row of another group alone, inserted a row it should have updated), the
    check raises serialization_failure, and the rolled-back transaction leaves every row as
    it was."""
    assert statuses(client.put(URL, json=[item(5)], headers=headers())) == [201]
    assert statuses(client.put("/groups/G2/flex-schedules-batch", json=[item(7, group_ID="G2")],
                               headers=headers())) == [201]
    db.commit()
    before = rows(db)
    with pytest.raises(psycopg.errors.SerializationFailure), db.transaction():
        db.execute(WRITE, _write_args(keys, creates))
    assert rows(db) == before


def test_a_batch_whose_named_statements_were_lost_is_redone_unnamed(traced, db, caplog):
    """The batch's two calls are named statements, planned once per server connection. When
    the server no longer has them (here: DEALLOCATE ALL on the pool's one connection, as a
    pooler's DISCARD ALL would), the transaction is redone with unnamed statements: the client
    sees an ordinary 207, nothing is written twice, and only an info line is logged (SPEC §10:
    detect, switch off, retry)."""
    client, _trace = traced
    caplog.set_level(logging.INFO, logger="flexsvc.roundtrip")
    assert statuses(client.put(URL, json=[item(3)], headers=headers())) == [201]
    pool = client.application.extensions["flexsvc.pools"].get("main")
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 2
        conn.execute("DEALLOCATE ALL")
    response = client.put(URL, json=[item(3, schedule_Date="2026-02-15"), item(4)],
                          headers=headers())
    assert statuses(response) == [200, 201]
    assert sorted(r["group_flex_schedule_key"] for r in rows(db)) == [3, 4]
    assert [r.levelname for r in caplog.records if r.name == "flexsvc.roundtrip"] == ["INFO"]
    assert statuses(client.put(URL, json=[item(5)], headers=headers())) == [201]
    with pool.connection() as conn:       # unnamed from now on: nothing prepared again
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
