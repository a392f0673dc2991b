"""``flexsvc.data.roundtrip``: statements queued and sent in one round trip, on a real server.

What the batch relies on: parameters and results adapted as ``conn.execute`` adapts them (the
fast array dumpers of ``flexsvc.data.arrays`` included), one Sync per round trip, the first
error raised as psycopg's own class with later statements not run, a usable connection after a
statement error and a closed one after a lost connection.
"""

from __future__ import annotations

import gc
import weakref
from datetime import date, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import pq

from flexsvc.data.arrays import BoolArray, Int4Array, TextArray, TimestampArray
from flexsvc.data.roundtrip import NamedStatementsLost, StatementQueue, _compile


@pytest.fixture
def conn(tenant_dsns: dict[str, str]):
    with psycopg.connect(tenant_dsns["main"], autocommit=True) as connection:
        yield connection


def test_placeholders_become_numbered_parameters():
    compiled = _compile("SELECT %(a)s, %(b)b, %(a)s, '100%%', %(c)t")
    assert compiled.text == b"SELECT $1, $2, $1, '100%', $3"
    assert compiled.names == ("a", "b", "c")
    with pytest.raises(ValueError):
        _compile("SELECT %s")
    with pytest.raises(ValueError):
        _compile("SELECT %(a)s, %(a)b")


def test_parameters_and_results_are_adapted_as_psycopg_does(conn):
    queue = StatementQueue(conn)
    values = {
        "keys": Int4Array([1, -2, 2_147_483_647]),
        "names": TextArray(["plain", "ünïcødé €", "", None, "quote ' and \\ and {,}"]),
        "dates": TimestampArray([datetime(2026, 1, 31, 23, 59, 59, 999_999),
                                 datetime(1, 1, 1), datetime(9999, 12, 31)]),
        "flags": BoolArray([True, False]),
        "empty": Int4Array([]),
        "text": "x", "number": 7, "missing": None,
    }
    arrays = queue.execute(
        "SELECT %(keys)b::integer[], %(names)b::varchar[], %(dates)b::timestamp[], "
        "%(flags)b::boolean[], %(empty)b::integer[], %(text)s, %(number)s, %(missing)s::int",
        values)
    typed = queue.execute("SELECT DATE '2026-02-28', NULL::text, ARRAY['a', NULL]::text[]")
    nothing = queue.execute("SELECT 1 WHERE false")
    assert arrays.fetchone() == (
        [1, -2, 2_147_483_647], ["plain", "ünïcødé €", "", None, "quote ' and \\ and {,}"],
        [datetime(2026, 1, 31, 23, 59, 59, 999_999), datetime(1, 1, 1), datetime(9999, 12, 31)],
        [True, False], [], "x", 7, None)
    assert typed.fetchall() == [(date(2026, 2, 28), None, ["a", None])]
    assert nothing.fetchone() is None and nothing.fetchall() == []


def test_what_is_queued_goes_out_with_one_sync(conn, tmp_path: Path):
    trace = (tmp_path / "trace").open("w")
    conn.pgconn.trace(trace.fileno())
    conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
    try:
        queue = StatementQueue(conn)
        queue.execute(b"BEGIN")
        first = queue.execute("SELECT %(n)s::int + 1", {"n": 1})
        queue.execute(b"COMMIT")
        assert first.fetchone() == (2,)
    finally:
        conn.pgconn.untrace()
        trace.close()
    sent = [line.split("\t")[2] for line in Path(trace.name).read_text().splitlines()
            if line.startswith("F\t")]
    assert sent.count("Sync") == 1 and sent.count("Parse") == 3


def test_the_first_error_is_raised_and_later_statements_are_not_run(conn):
    conn.execute("CREATE TEMP TABLE queued_effects (n int)")
    queue = StatementQueue(conn)
    before = queue.execute("INSERT INTO queued_effects VALUES (1) RETURNING n")
    queue.execute("SELECT 1 / %(zero)s", {"zero": 0})
    after = queue.execute("INSERT INTO queued_effects VALUES (2) RETURNING n")
    with pytest.raises(pg_errors.DivisionByZero):
        queue.sync()
    assert before.fetchone() == (1,)          # it ran ...
    with pytest.raises(pg_errors.PipelineAborted):
        after.fetchone()
    # ... but, with no BEGIN queued, the statements of one sync are one implicit transaction
    # (libpq's pipeline mode), so the error rolled it back. The connection is fine afterwards.
    assert conn.execute("SELECT array_agg(n) FROM queued_effects").fetchone() == (None,)


def test_an_error_inside_begin_leaves_a_transaction_to_roll_back(conn):
    queue = StatementQueue(conn)
    queue.execute(b"BEGIN")
    failing = queue.execute("SELECT 1 / %(zero)s", {"zero": 0})
    with pytest.raises(pg_errors.DivisionByZero):
        failing.fetchone()
    assert conn.info.transaction_status == pq.TransactionStatus.INERROR
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_lost_connection_raises_operational_error_and_closes_it(conn, tenant_dsns):
    pid = conn.info.backend_pid
    with psycopg.connect(tenant_dsns["main"], autocommit=True) as admin:
        queue = StatementQueue(conn)
        queue.execute("SELECT pg_sleep(0.5)")
        sent = queue.execute("SELECT 1")
        admin.execute("SELECT pg_terminate_backend(%s) FROM pg_stat_activity "
                      "WHERE pid = %s", (pid, pid))
        with pytest.raises(psycopg.OperationalError):
            sent.fetchone()
    assert conn.closed


# --- named statements (the batch's two calls) ----------------------------------------------

NAMED = "SELECT %(n)s::int + 1 AS next"


def prepared_here(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT name, statement FROM pg_prepared_statements "
                        "ORDER BY name").fetchall()


def test_a_named_statement_is_parsed_once_per_connection_under_a_name_that_says_what_it_is(
        conn, tenant_dsns):
    """The name is a hash of the SQL and its parameter types: the same on every connection,
    so behind a pooler a server connection that has it has the same statement."""
    for n in range(3):
        queue = StatementQueue(conn)
        assert queue.execute(NAMED, {"n": n}, prepare=True).fetchone() == (n + 1,)
    (name, statement), = prepared_here(conn)
    assert name.startswith("flexsvc_") and statement == "SELECT $1::int + 1 AS next"
    with psycopg.connect(tenant_dsns["main"], autocommit=True) as other:
        assert StatementQueue(other).execute(NAMED, {"n": 9}, prepare=True).fetchone() == (10,)
        assert [n for n, _ in prepared_here(other)] == [name]


def test_a_parse_survives_a_later_error_of_its_transaction(conn):
    """Prepared statements belong to the session, not to the transaction: after a failure
    later in the same sync the name is known, and is not parsed (and refused) again."""
    queue = StatementQueue(conn)
    queue.execute(b"BEGIN")
    queue.execute(NAMED, {"n": 1}, prepare=True)
    queue.execute("SELECT 1 / 0")
    with pytest.raises(pg_errors.DivisionByZero):
        queue.sync()
    conn.execute("ROLLBACK")
    assert StatementQueue(conn).execute(NAMED, {"n": 2}, prepare=True).fetchone() == (3,)
    assert len(prepared_here(conn)) == 1


@pytest.mark.parametrize("lost", ["deallocated", "parsed elsewhere"])
def test_statements_the_server_did_not_keep_end_naming_on_that_connection(conn, lost: str):
    """A pooler in transaction mode (or DISCARD ALL) loses the names: "does not exist"; a
    connection that thinks a name is new meets it "already exists". Either way
    NamedStatementsLost (the caller redoes the transaction), and that connection sends every
    statement unnamed from then on."""
    from flexsvc.data import roundtrip

    assert StatementQueue(conn).execute(NAMED, {"n": 1}, prepare=True).fetchone() == (2,)
    if lost == "deallocated":
        conn.execute("DEALLOCATE ALL")
    else:
        roundtrip._connection_state(conn).prepared = set()   # as a client whose transaction moved here
    queue = StatementQueue(conn)
    queue.execute(NAMED, {"n": 2}, prepare=True)
    with pytest.raises(NamedStatementsLost):
        queue.sync()
    before = prepared_here(conn)
    assert StatementQueue(conn).execute(NAMED, {"n": 3}, prepare=True).fetchone() == (4,)
    assert prepared_here(conn) == before       # unnamed now: nothing new prepared


def test_a_connection_keeps_one_transformer_and_is_freed_with_it(tenant_dsns):
    """Every queue on a connection dumps and loads with the same Transformer (its dumpers and
    loaders found once per connection, not once per transaction), and a dropped connection is
    still freed: the Transformer refers to the connection, so nothing else may keep it."""
    connection = psycopg.connect(tenant_dsns["main"], autocommit=True)
    first, second = StatementQueue(connection), StatementQueue(connection)
    assert first.transformer is second.transformer
    assert first.execute("SELECT %(keys)b::integer[]", {"keys": Int4Array([1, 2])}
                         ).fetchone() == ([1, 2],)
    assert second.execute("SELECT %(keys)b::integer[]", {"keys": Int4Array([3])}
                          ).fetchone() == ([3],)
    with psycopg.connect(tenant_dsns["main"], autocommit=True) as other:
        assert StatementQueue(other).transformer is not first.transformer
    gone = weakref.ref(connection)
    connection.close()
    del connection, first, second
    gc.collect()
    assert gone() is None
