"""Applying a batch of GroupFlexSchedule items as if one by one, in request order.

The outcome of every item is decided in Python from facts read in bulk under locks (which keys
exist and under which group, which GroupFlex parents and schedule types exist); then the final
row of every key is written by one set-based statement. The write checks which keys it really
inserted; if that differs from the plan (another transaction created one of our keys meanwhile),
the transaction is aborted and the batch is planned again on fresh facts. So statuses are
exactly those of some serial order of the concurrent batches. Since the write checks itself,
COMMIT travels with it: a batch is two round trips (SPEC §7).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg

from flexsvc.config import PoolSettings
from flexsvc.data import store
from flexsvc.data.db import CONNECTION_ERRORS, Pools
from flexsvc.data.idempotency import IdempotentWrite
from flexsvc.data.roundtrip import StatementQueue
from flexsvc.data.writes import (
    BEGIN,
    COMMIT,
    RETRYABLE_ERRORS,
    BeforeCommit,
    explicit_transaction,
    run_write,
    usable_new_keys,
)
from flexsvc.rules.planning import (
    BatchEntry,
    BatchPlan,
    ItemResult,
    not_applied,
    plan_batch,
)
from flexsvc.rules.schemas import ScheduleInput

log = logging.getLogger("flexsvc.batch")


class GroupNotFound(Exception):
    """The path's group does not exist (the whole request is a 404)."""


def upsert_batch(
    pools: Pools, database: str, pool_settings: PoolSettings, group_id: str,
    entries: Sequence[BatchEntry], user: str | None, *, atomic: bool = False,
    dry_run: bool = False, idempotency: IdempotentWrite | None = None,
    before_commit: BeforeCommit | None = None,
) -> list[ItemResult]:
    """Apply ``entries`` to ``database``; return one result per entry, in order.

    After an unexpected error of the set-based write, the batch runs once more writing row by
    row, so that only the failing items answer 500. ``idempotency``: the transaction begins
    with the key's lock and lookup (``Replay``, ``KeyReused`` or ``KeyInUse`` end it), and
    ``before_commit`` defaults to recording the results.
    """
    if before_commit is None and idempotency is not None:
        before_commit = idempotency.record
    isolate = False

    def write_row_by_row_next_time() -> bool:
        nonlocal isolate
        if isolate:
            return False
        log.exception("set-based write failed; retrying item by item to isolate it")
        isolate = True
        return True

    return run_write(pools, database, lambda conn, exclusive: _apply_once(
        conn, pool_settings, group_id, entries, user, atomic=atomic, dry_run=dry_run,
        isolate=isolate, exclusive=exclusive, idempotency=idempotency,
        before_commit=before_commit),
        recover=write_row_by_row_next_time)


def _apply_once(
    conn: psycopg.Connection, pool_settings: PoolSettings, group_id: str,
    entries: Sequence[BatchEntry], user: str | None, *, atomic: bool, dry_run: bool,
    isolate: bool, exclusive: bool = False, idempotency: IdempotentWrite | None = None,
    before_commit: BeforeCommit | None = None,
) -> list[ItemResult]:
    """One transaction, in two round trips: BEGIN, the locks, new keys and facts; then the
    checked write and COMMIT (``store``). Rolled back by ``explicit_transaction`` whenever it
    does not reach COMMIT (a dry run, an atomic batch with a failed item, an error)."""
    valid = [e for e in entries if isinstance(e, ScheduleInput)]
    explicit = sorted({e.key for e in valid if e.key})
    types = sorted({e.schedule_type for e in valid})
    new_count = 0 if dry_run else sum(1 for e in valid if e.key == 0)
    with explicit_transaction(conn):
        queue = StatementQueue(conn)
        queue.execute(BEGIN)
        if idempotency is not None:   # its lock and record first: a replay reads nothing
            idempotency.begin(queue, pool_settings, exclusive=exclusive)
        read_results = store.send_batch_reads(
            queue, pool_settings, group_id, explicit, types, new_count,
            exclusive=None if idempotency is not None else exclusive)
        facts, allocated = read_results()        # the first round trip
        if not facts.group_exists:
            raise GroupNotFound(group_id)
        new_keys = usable_new_keys(conn, allocated, new_count, set(explicit))
        plan = plan_batch(entries, group_id, facts, None if dry_run else iter(new_keys))
        if atomic and plan.failed:
            return not_applied(plan.results, entries)
        if dry_run:
            return plan.results
        results = plan.results
        if plan.rows and isolate:
            failed_keys = _write_row_by_row(conn, group_id, plan, user)
            results = _mark_failed(plan, failed_keys)
            if failed_keys and atomic:
                return not_applied(results, entries)
        elif plan.rows:
            store.upsert_schedules(queue, group_id, list(plan.rows.values()), user,
                                   plan.created)
        if plan.created and max(plan.created) not in allocated:
            store.advance_key_sequence(queue, max(plan.created))
        if before_commit is not None:
            before_commit(queue, results)      # the transaction's last statements
        queue.execute(COMMIT)
        queue.sync()                             # the second round trip
    return results


def _write_row_by_row(
    conn: psycopg.Connection, group_id: str, plan: BatchPlan, user: str | None,
) -> set[int]:
    """The rare path after an unexpected write error: each key in its own savepoint."""
    failed: set[int] = set()
    for key in sorted(plan.rows):
        try:
            with conn.transaction():     # a savepoint: the batch's transaction is open
                store.upsert_schedules(conn, group_id, [plan.rows[key]], user, plan.created)
        except (*CONNECTION_ERRORS, *RETRYABLE_ERRORS):   # a concurrent change: plan again
            raise
        except psycopg.Error:
            log.exception("writing key %s failed", key)
            failed.add(key)
    return failed


def _mark_failed(plan: BatchPlan, failed_keys: set[int]) -> list[ItemResult]:
    return [
        ItemResult(500, result.key, "An unexpected error occurred for this item; nothing was "
                                    "written for it. Quote the activityID when reporting it.")
        if key is not None and key in failed_keys else result
        for result, key in zip(plan.results, plan.item_keys, strict=False)
    ]
