"""Data layer of the batch upsert: runs named SQL on a connection, knows nothing of HTTP.

A batch is two round trips (SPEC §7): BEGIN, the timeouts and writers' lock, the new keys and
every fact the batch's outcomes depend on, queued together (``send_batch_reads``); then the
write, which checks its own outcome, and COMMIT (``upsert_schedules``). Reads and write are
server-side functions (sql/migrations/0004_batch_functions.sql): planned once per session.
Functions that take ``Executes`` run on a connection or queue on a ``StatementQueue``
(``flexsvc.data.roundtrip``); those that only queue return what reads the results after the
queue's sync.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from operator import itemgetter

import psycopg

from flexsvc.config import PoolSettings
from flexsvc.data.arrays import BoolArray, Int4Array, TextArray, TimestampArray
from flexsvc.data.queries import sql
from flexsvc.data.roundtrip import Executes, StatementQueue
from flexsvc.rules.calculation import GroupFlexDates
from flexsvc.rules.planning import BatchFacts
from flexsvc.rules.schemas import ScheduleInput


def timeouts(settings: PoolSettings) -> dict[str, str]:
    """The transaction-scoped timeouts' parameters (``set_transaction_timeouts``)."""
    return {"statement_timeout": f"{settings.statement_timeout_ms}ms",
            "lock_timeout": f"{settings.lock_timeout_ms}ms"}


def set_transaction_timeouts(conn: psycopg.Connection, settings: PoolSettings) -> None:
    """Transaction-scoped timeouts (no session state: safe behind PgBouncer)."""
    conn.execute(sql("set_transaction_timeouts"), timeouts(settings))


def begin_batch(conn: psycopg.Connection, settings: PoolSettings, *, exclusive: bool) -> None:
    """Transaction timeouts, and the batch writers' lock: shared by every batch, exclusive for
    a batch that met a concurrent change and retries (so the retry runs alone and succeeds)."""
    conn.execute(sql("begin_batch"), {**timeouts(settings), "exclusive": exclusive})


def allocate_schedule_keys(conn: psycopg.Connection, count: int) -> dict[int, str | None]:
    """Take ``count`` new keys from the identity sequence (not transactional: never reused);
    {key: group of a row that already has it, or None}, in key order."""
    if count <= 0:
        return {}
    return dict(conn.execute(sql("allocate_schedule_keys"), {"count": count}).fetchall())


def send_batch_reads(
    conn: Executes, settings: PoolSettings, group_id: str,
    explicit_keys: Sequence[int], schedule_types: Sequence[str], new_count: int, *,
    exclusive: bool | None,
) -> Callable[[], tuple[BatchFacts, dict[int, str | None]]]:
    """Queue, on the caller's ``StatementQueue``, one statement (``read_batch_facts``):
    ``begin_batch``'s timeouts and writers' lock (``exclusive`` as there; None: already
    taken), the allocation of ``new_count`` keys and the locking reads of the group, its
    GroupFlex rows (with their dates), the ``schedule_types`` the items name (with their
    rules: a type missing from the facts does not exist) and the rows of ``explicit_keys``.
    Return what reads its result after the sync: the batch's facts and the allocated keys,
    as ``allocate_schedule_keys``."""
    cursor = conn.execute(sql("read_batch_facts"), {
        **timeouts(settings), "exclusive": exclusive, "group_id": group_id,
        "keys": Int4Array(explicit_keys), "types": TextArray(schedule_types),
        "new_count": new_count}, **_named(conn))

    def results() -> tuple[BatchFacts, dict[int, str | None]]:
        (new_keys, new_key_owners, group_exists, plan_ids, years, effective, term, first,
         type_names, type_rules, owner_keys, owner_groups) = cursor.fetchone()
        facts = BatchFacts(
            group_exists=group_exists,
            owners=dict(zip(owner_keys or (), owner_groups or (), strict=True)),
            parents={(plan, year): GroupFlexDates(starts, ends, anchor)
                     for plan, year, starts, ends, anchor
                     in zip(plan_ids or (), years or (), effective or (), term or (),
                            first or (), strict=True)},
            schedule_types=dict(zip(type_names or (), type_rules or (), strict=True)),
        )
        return facts, dict(zip(new_keys or (), new_key_owners or (), strict=True))

    return results


_by_key = itemgetter(0)   # ScheduleInput.key


def _named(conn: Executes) -> dict[str, bool]:
    """The batch's two calls go as named statements on a queue (planned once per server
    connection: ``StatementQueue.execute``); on a plain connection (the row-by-row path) as
    psycopg sends them, never prepared by psycopg unless configured."""
    return {"prepare": True} if isinstance(conn, StatementQueue) else {}


def upsert_schedules(
    conn: Executes, group_id: str, rows: Sequence[ScheduleInput], user: str | None,
    created: Container[int],
) -> None:
    """Write the final row of every key in one statement, which checks its own outcome: every
    key is written, and inserted exactly when it is in ``created``. Otherwise (another
    transaction created or moved one of the keys since the facts were read) it raises
    ``SerializationFailure`` and the transaction is aborted. On a queue, only queued.

    ``rows`` must hold each key once.
    """
    ordered = sorted(rows, key=_by_key)
    # One transposition instead of five list comprehensions (ScheduleInput is a tuple).
    keys, _groups, plan_ids, years, dates, types = (
        zip(*ordered, strict=True) if ordered else ((),) * 6)
    creates = [key in created for key in keys]
    params = {
        "group_id": group_id,
        "user": user,
        "keys": Int4Array(keys),
        "plan_ids": TextArray(plan_ids),
        "calendar_years": TextArray(years),
        "schedule_dates": TimestampArray(dates),
        "schedule_types": TextArray(types),
        "creates": BoolArray(creates),
        "create_count": sum(creates),
    }
    conn.execute(sql("upsert_schedules"), params, **_named(conn))


def advance_key_sequence(conn: Executes, max_key: int) -> None:
    """Keep the sequence past ``max_key`` (a key created explicitly). On a queue, queued."""
    conn.execute(sql("advance_key_sequence"), {"max_key": max_key})
