"""The two reference points the service is compared with, run from a plain psycopg client.

* floor: the whole batch as ONE set-based statement (arrays through ``unnest``, the same
  INSERT ... ON CONFLICT DO UPDATE the service ends with), in one transaction. Both foreign keys
  (GroupFlex parent, schedule type) are checked by PostgreSQL as part of it. It does nothing the
  service must also do (validation, per-item outcomes, locks, key ordering for repeated keys), so
  it is a lower bound, not an alternative. The arrays travel in binary (``%(name)b``), as the
  service sends them: with psycopg's default text arrays the floor would be slower and the
  ratio would flatter the service.
* per item: one single-row upsert statement per item, pipelined (psycopg's ``executemany``
  sends them all in pipeline mode: one network flush, but 10,000 statements to execute).
* per item, one round trip each: the same statements, each waiting for its answer (what an
  ORM-style loop does).
"""

from __future__ import annotations

import time

import psycopg

from bench.minimal_app import UPSERT_TAIL
from bench.workload import GROUP, USER, Batch

FLOOR_SQL = """
INSERT INTO group_flex_schedule AS t (
    group_flex_schedule_key, group_id, plan_id, calendar_year, schedule_date, schedule_type,
    entry_date, entry_user, update_date, update_user)
SELECT u.key, %(group_id)s, u.plan_id, u.calendar_year, u.schedule_date, u.schedule_type,
       now(), %(user)s, now(), %(user)s
FROM unnest(%(keys)b::integer[], %(plan_ids)b::varchar[], %(calendar_years)b::varchar[],
            %(schedule_dates)b::timestamp[], %(schedule_types)b::varchar[])
     AS u(key, plan_id, calendar_year, schedule_date, schedule_type)""" + UPSERT_TAIL

PER_ITEM_SQL = """
INSERT INTO group_flex_schedule AS t (
    group_flex_schedule_key, group_id, plan_id, calendar_year, schedule_date, schedule_type,
    entry_date, entry_user, update_date, update_user)
VALUES (%s, %s, %s, %s, %s, %s, now(), %s, now(), %s)""" + UPSERT_TAIL


def run_floor(conn: psycopg.Connection, batch: Batch) -> tuple[float, int, int]:
    """One statement for the batch; return (seconds, created, updated)."""
    started = time.perf_counter()
    with conn.transaction():
        rows = conn.execute(FLOOR_SQL, {
            "group_id": GROUP, "user": USER, "keys": batch.keys, "plan_ids": batch.plan_ids,
            "calendar_years": batch.calendar_years, "schedule_dates": batch.schedule_dates,
            "schedule_types": batch.schedule_types,
        }).fetchall()
    elapsed = time.perf_counter() - started
    created = sum(1 for _, inserted in rows if inserted)
    return elapsed, created, len(rows) - created


def _per_item_params(batch: Batch) -> list[tuple[object, ...]]:
    return [
        (k, GROUP, p, y, d, t, USER, USER)
        for k, p, y, d, t in zip(batch.keys, batch.plan_ids, batch.calendar_years,
                                 batch.schedule_dates, batch.schedule_types, strict=True)
    ]


def run_per_item(conn: psycopg.Connection, batch: Batch) -> tuple[float, int, int]:
    """One pipelined statement per item; return (seconds, created, updated)."""
    params = _per_item_params(batch)
    created = updated = 0
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(PER_ITEM_SQL, params, returning=True)
        while True:
            for _, inserted in cur.fetchall():
                if inserted:
                    created += 1
                else:
                    updated += 1
            if not cur.nextset():
                break
    return time.perf_counter() - started, created, updated


def run_per_item_round_trips(conn: psycopg.Connection, batch: Batch) -> tuple[float, int, int]:
    """One statement per item, each waiting for its answer; return (seconds, created, updated)."""
    params = _per_item_params(batch)
    created = 0
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        for row in params:
            created += cur.execute(PER_ITEM_SQL, row).fetchone()[1]
    return time.perf_counter() - started, created, len(params) - created
