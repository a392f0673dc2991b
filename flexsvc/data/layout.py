"""The lay-out transaction (SPEC §8): a GroupFlex's rule-based rows become exactly one series.

One transaction, in the batch's lock order so the two never deadlock: the batch writers'
advisory lock (shared; exclusive on a retry) with the timeouts; then, in one pipelined round
trip, the group (KEY SHARE), the GroupFlex (NO KEY UPDATE: a batch of this group waits for
the lay-out, or the lay-out for it), the types with their rules (KEY SHARE) and the
GroupFlex's rows (FOR UPDATE, key order). ``plan_layout`` decides; then, unless it is a dry
run, new keys from the identity sequence and the writes, set-based and pipelined (the anchor,
the deletes, the inserts). With an Idempotency-Key, the first round trip also takes the key's
lock and record, and recording the answer is the last step before COMMIT.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from flexsvc.config import PoolSettings
from flexsvc.data import store
from flexsvc.data.batch import GroupNotFound
from flexsvc.data.db import Pools
from flexsvc.data.idempotency import IdempotentWrite
from flexsvc.data.queries import sql
from flexsvc.data.writes import (
    ConcurrentChange,
    begin_write,
    pipeline,
    run_write,
    usable_new_keys,
)
from flexsvc.rules.calculation import GroupFlexDates, ScheduleCalculator
from flexsvc.rules.layout import (
    LayoutPlan,
    LayoutRequest,
    LayoutResult,
    StoredRow,
    plan_layout,
)


class GroupFlexNotFound(Exception):
    """The path's GroupFlex (group, plan, year) does not exist (a 404)."""


class KeysExhausted(Exception):
    """The identity sequence has no keys left for the rows to create (nothing was written)."""


def lay_out(
    pools: Pools, database: str, pool_settings: PoolSettings, group_id: str, plan_id: str,
    calendar_year: str, request: LayoutRequest, user: str | None, *, dry_run: bool = False,
    idempotency: IdempotentWrite | None = None,
) -> list[LayoutResult]:
    """Lay out the GroupFlex's year; the answer's rows (kept and created, then deleted).

    ``idempotency``: the transaction begins with the key's lock and lookup, and records the
    rendered results just before COMMIT (never for a dry run)."""
    where = {"group_id": group_id, "plan_id": plan_id, "calendar_year": calendar_year}
    return run_write(pools, database, lambda conn, exclusive: _lay_out_once(
        conn, pool_settings, where, request, user, dry_run=dry_run, exclusive=exclusive,
        idempotency=idempotency))


def _lay_out_once(
    conn: psycopg.Connection, pool_settings: PoolSettings, where: dict[str, str],
    request: LayoutRequest, user: str | None, *, dry_run: bool, exclusive: bool,
    idempotency: IdempotentWrite | None,
) -> list[LayoutResult]:
    results: list[LayoutResult]
    with conn.transaction() as tx:
        with pipeline(conn):
            begin_write(conn, pool_settings, exclusive=exclusive, idempotency=idempotency)
            group = conn.execute(sql("lock_group"), where)
            group_flex = conn.execute(sql("lock_layout_group_flex"), where)
            types = conn.execute(sql("lock_schedule_types"))
            stored = conn.execute(sql("lock_group_flex_schedules"), where)
        if group.fetchone() is None:
            raise GroupNotFound(where["group_id"])
        found = group_flex.fetchone()
        if found is None:
            raise GroupFlexNotFound(where["plan_id"], where["calendar_year"])
        dates = GroupFlexDates(*found)
        rules = dict(types.fetchall())
        plan_id, calendar_year = where["plan_id"], where["calendar_year"]
        calculator = ScheduleCalculator(where["group_id"], rules,
                                        {(plan_id, calendar_year): dates})
        plan = plan_layout(calculator, plan_id, calendar_year, dates, rules, request,
                           [StoredRow(*row) for row in stored.fetchall()])
        if dry_run:
            results = plan.results(None)
            raise psycopg.Rollback(tx)
        keys = _new_keys(conn, len(plan.creates))
        _write(conn, where, plan, keys, user)
        results = plan.results(keys)
        if idempotency is not None:
            idempotency.record(conn, results)  # the transaction's last statement before COMMIT
    return results


def _new_keys(conn: psycopg.Connection, count: int) -> list[int]:
    """``count`` keys from the identity sequence that no row has (KeysExhausted if none left)."""
    if not count:
        return []
    keys = usable_new_keys(conn, store.allocate_schedule_keys(conn, count), count, set())
    if len(keys) < count:
        raise KeysExhausted()
    return keys


def _write(conn: psycopg.Connection, where: dict[str, str], plan: LayoutPlan,
           keys: Sequence[int], user: str | None) -> None:
    """The anchor, the deletes and the inserts: set-based, one round trip."""
    inserted = None
    with conn.pipeline():
        if plan.first_payment_date is not None:
            conn.execute(sql("set_first_payment_date"),
                         {**where, "first_payment_date": plan.first_payment_date})
        if plan.deleted:
            conn.execute(sql("delete_schedules_by_key"),
                         {"keys": [row.key for row in plan.deleted]})
        if keys:
            inserted = conn.execute(sql("insert_laid_out_schedules"), {
                **where, "keys": list(keys), "schedule_dates": plan.creates,
                "schedule_type": plan.schedule_type, "user": user})
    if inserted is not None and len(inserted.fetchall()) != len(keys):
        raise ConcurrentChange("a new key was created by another transaction meanwhile")
