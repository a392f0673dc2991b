"""Data layer of the batch upsert: runs named SQL on a connection, knows nothing of HTTP.

Reads are pipelined (one round trip for all the facts a batch's outcomes depend on); the write is
one set-based statement for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

import psycopg

from flexsvc.config import PoolSettings
from flexsvc.data.queries import sql
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


def allocate_schedule_keys(conn: psycopg.Connection, count: int) -> list[int]:
    """Take ``count`` new keys from the identity sequence (not transactional: never reused)."""
    if count <= 0:
        return []
    return [row[0] for row in conn.execute(sql("allocate_schedule_keys"), {"count": count})]


def read_batch_facts(conn: psycopg.Connection, group_id: str, keys: Sequence[int]) -> BatchFacts:
    """Lock and read the group, its GroupFlex rows (with their dates), the schedule types (with
    their rules) and the batch's rows: one round trip."""
    with conn.pipeline():
        group = conn.execute(sql("lock_group"), {"group_id": group_id})
        parents = conn.execute(sql("lock_group_flex_parents"), {"group_id": group_id})
        types = conn.execute(sql("lock_schedule_types"))
        owners = conn.execute(sql("lock_schedules_by_key"), {"keys": list(keys)})
    return BatchFacts(
        group_exists=group.fetchone() is not None,
        owners=dict(owners.fetchall()),
        parents={(plan, year): GroupFlexDates(effective, term, first)
                 for plan, year, effective, term, first in parents.fetchall()},
        schedule_types=dict(types.fetchall()),
    )


def lock_schedules_by_key(conn: psycopg.Connection, keys: Sequence[int]) -> dict[int, str]:
    return dict(conn.execute(sql("lock_schedules_by_key"), {"keys": list(keys)}).fetchall())


_by_key = itemgetter(0)   # ScheduleInput.key


def upsert_schedules(
    conn: psycopg.Connection, group_id: str, rows: Sequence[ScheduleInput], user: str | None,
) -> dict[int, bool]:
    """Write the final row of every key in one statement; return {key: inserted?}.

    ``rows`` must hold each key once. A row whose key exists under another group is not
    touched and is missing from the result.
    """
    ordered = sorted(rows, key=_by_key)
    # One transposition instead of five list comprehensions (ScheduleInput is a tuple).
    keys, _groups, plan_ids, years, dates, types = (
        list(column) for column in zip(*ordered, strict=True)) if ordered else ([],) * 6
    params = {
        "group_id": group_id,
        "user": user,
        "keys": keys,
        "plan_ids": plan_ids,
        "calendar_years": years,
        "schedule_dates": dates,
        "schedule_types": types,
    }
    return dict(conn.execute(sql("upsert_schedules"), params).fetchall())


def advance_key_sequence(conn: psycopg.Connection, max_key: int) -> None:
    conn.execute(sql("advance_key_sequence"), {"max_key": max_key})
