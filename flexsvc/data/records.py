"""Data layer of the single-record and list routes: named SQL on pooled connections, no HTTP.

Writes are not implemented here again: a PUT or POST is a batch of one through
``batch.upsert_batch``, so a single record obeys exactly the batch's rules (validation, 409 for a
key under another group, 422 for a missing parent or schedule type, race-free key-0 creates).
The written record is read back inside that transaction, so the answer (recorded with it under
an Idempotency-Key) shows what this request stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import class_row

from flexsvc.config import PoolSettings
from flexsvc.data import store
from flexsvc.data.batch import GroupNotFound, upsert_batch
from flexsvc.data.db import Pools
from flexsvc.data.idempotency import IdempotentWrite
from flexsvc.data.queries import sql
from flexsvc.data.roundtrip import Executes
from flexsvc.data.writes import pipeline, run_write
from flexsvc.rules.planning import ItemResult
from flexsvc.rules.schemas import ScheduleInput, SortKey

#: GroupFlexScheduleSchema attribute -> column. The only names ORDER BY can ever contain.
SORT_COLUMNS: dict[str, str] = {
    "key": "group_flex_schedule_key",
    "calendar_year": "calendar_year",
    "group_id": "group_id",
    "plan_id": "plan_id",
    "schedule_date": "schedule_date",
    "schedule_type": "schedule_type",
    "entry_date": "entry_date",
    "entry_user": "entry_user",
    "update_date": "update_date",
    "update_user": "update_user",
}
KEY_COLUMN = SORT_COLUMNS["key"]


class RecordNotFound(Exception):
    """No record with this key under this group (also when it exists under another group)."""


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One stored row, with GroupFlexScheduleSchema's attribute names (so it dumps as is)."""

    key: int
    group_id: str
    plan_id: str
    calendar_year: str
    schedule_date: datetime
    schedule_type: str
    entry_date: datetime
    entry_user: str | None
    update_date: datetime
    update_user: str | None


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which of the group's records a list shows (None: any)."""

    plan_id: str | None = None
    calendar_year: str | None = None
    schedule_type: str | None = None


@dataclass(frozen=True, slots=True)
class RecordPage:
    records: list[ScheduleRecord]
    total: int  # the group's records that pass the filter, over all pages


def order_by(sort: Sequence[SortKey]) -> pgsql.Composed:
    """ORDER BY terms from the whitelist only, with the key as the final tiebreaker."""
    terms = []
    for term in sort:
        column = SORT_COLUMNS[term.field]  # KeyError: a caller bypassed parse_sort_by
        terms.append(pgsql.SQL("{} {}").format(
            pgsql.Identifier(column), pgsql.SQL("DESC" if term.descending else "ASC")))
    if not any(term.field == "key" for term in sort):
        terms.append(pgsql.SQL("{} ASC").format(pgsql.Identifier(KEY_COLUMN)))
    return pgsql.SQL(", ").join(terms)


def list_records(
    pools: Pools, database: str, pool_settings: PoolSettings, group_id: str, *,
    page: int, page_size: int, sort: Sequence[SortKey], only: RecordFilter = RecordFilter(),
) -> RecordPage:
    """One page of the group's records (those ``only`` lets through) and their total, from one
    snapshot (one round trip)."""
    query = pgsql.SQL(sql("list_group_schedules")).format(order_by=order_by(sort))
    params = {"group_id": group_id, "limit": page_size, "offset": (page - 1) * page_size,
              "plan_id": only.plan_id, "calendar_year": only.calendar_year,
              "schedule_type": only.schedule_type}
    with pools.connection(database) as conn, conn.transaction():
        conn.execute(sql("begin_read_snapshot"))
        store.set_transaction_timeouts(conn, pool_settings)
        with conn.pipeline():
            exists = conn.execute(sql("group_exists"), params)
            total = conn.execute(sql("count_group_schedules"), params)
            cursor = conn.cursor(row_factory=class_row(ScheduleRecord))
            cursor.execute(query, params)
        if not exists.fetchone()[0]:
            raise GroupNotFound(group_id)
        return RecordPage(records=cursor.fetchall(), total=total.fetchone()[0])


def _fetch(conn: Executes, group_id: str, key: int) -> ScheduleRecord | None:
    """The query's columns are ScheduleRecord's fields, in order (it also runs on a queue)."""
    row = conn.execute(sql("get_group_schedule"), {"group_id": group_id, "key": key}).fetchone()
    return None if row is None else ScheduleRecord(*row)


def _missing(conn: psycopg.Connection, group_id: str, key: int) -> Exception:
    """Why nothing matched: the group is missing (404 group) or the record is (404 record)."""
    exists = conn.execute(sql("group_exists"), {"group_id": group_id}).fetchone()[0]
    return RecordNotFound(group_id, key) if exists else GroupNotFound(group_id)


def get_record(
    pools: Pools, database: str, pool_settings: PoolSettings, group_id: str, key: int,
) -> ScheduleRecord:
    """The record ``key`` of ``group_id``; RecordNotFound also when it belongs to another group."""
    with pools.connection(database) as conn, conn.transaction():
        store.set_transaction_timeouts(conn, pool_settings)
        record = _fetch(conn, group_id, key)
        if record is None:
            raise _missing(conn, group_id, key)
        return record


def delete_record(
    pools: Pools, database: str, pool_settings: PoolSettings, group_id: str, key: int, *,
    idempotency: IdempotentWrite | None = None,
) -> None:
    """Delete the record ``key`` of ``group_id``; a record of another group is never touched.

    ``idempotency``: the transaction begins with the key's lock and lookup, and records the
    answer (``render(None)``) just before COMMIT."""
    run_write(pools, database, lambda conn, _exclusive: _delete_once(
        conn, pool_settings, group_id, key, idempotency))


def _delete_once(conn: psycopg.Connection, pool_settings: PoolSettings, group_id: str, key: int,
                 idempotency: IdempotentWrite | None) -> None:
    with conn.transaction():
        if idempotency is None:
            store.set_transaction_timeouts(conn, pool_settings)
        else:
            with pipeline(conn):      # one round trip
                check = idempotency.send_begin(conn, pool_settings, exclusive=None)
            check()
        deleted = conn.execute(sql("delete_group_schedule"),
                               {"group_id": group_id, "key": key}).fetchone()
        if deleted is None:
            raise _missing(conn, group_id, key)
        if idempotency is not None:
            idempotency.record(conn, None)


def save_record(
    pools: Pools, database: str, pool_settings: PoolSettings, group_id: str,
    item: ScheduleInput, user: str | None, *, idempotency: IdempotentWrite | None = None,
) -> tuple[ItemResult, ScheduleRecord | None]:
    """Create or update one record as a batch of one; the stored record when it was written.

    The record is read back in the write's transaction, just before COMMIT, so the answer shows
    what this request stored, server-managed audit fields included. ``None`` means the item
    failed: the result says why (409, 422 or 500). ``idempotency``: the transaction begins with
    the key's lock and lookup, and records ``render((result, record))`` after the read-back.
    """
    stored: list[ScheduleRecord | None] = [None]

    def read_back(conn: Executes, results: Sequence[ItemResult]) -> None:
        (result,) = results
        stored[0] = _fetch(conn, group_id, result.key) if result.status in (200, 201) else None
        if idempotency is not None:
            idempotency.record(conn, (result, stored[0]))

    (result,) = upsert_batch(pools, database, pool_settings, group_id, [item], user,
                             idempotency=idempotency, before_commit=read_back)
    return result, stored[0]
