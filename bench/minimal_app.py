"""The framework-plus-database ceiling for small batches (SPEC §7): a minimal Flask app.

``gunicorn -c gunicorn.conf.py bench.minimal_app:app``, started by the bench exactly like the
service (same config file, so the same workers, threads, worker class and access log). Per
request it does only what any such endpoint must: parse the JSON array, run the batch as one
10-row upsert on a psycopg_pool connection (BEGIN, the upsert, COMMIT: three round trips) and
answer the per-item statuses in the service's shape. No authentication, no validation, no
locks, no logging of its own, no metrics. The same statement runs from bare psycopg
connections for the bare-SQL figure (``bench.small``), so the two differ only by HTTP, Flask
and the pool.

Environment: FLEXSVC_BENCH_MINIMAL_DSN (required), FLEXSVC_BENCH_MINIMAL_POOL (pool max_size,
default 4; the pool's min_size is 1, as the bench's service config).
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from flask import Flask, Response, request
from psycopg_pool import ConnectionPool

#: The end of every bench upsert (here, the floor's, the per-item ones: ``bench.sqlpaths``), as
#: the service's: an existing key is updated only within its group; "inserted" tells creates.
UPSERT_TAIL = """
ON CONFLICT (group_flex_schedule_key) DO UPDATE
SET plan_id = EXCLUDED.plan_id, calendar_year = EXCLUDED.calendar_year,
    schedule_date = EXCLUDED.schedule_date, schedule_type = EXCLUDED.schedule_type,
    update_date = EXCLUDED.update_date, update_user = EXCLUDED.update_user
WHERE t.group_id = EXCLUDED.group_id
RETURNING t.group_flex_schedule_key, (t.xmax = 0) AS inserted
"""

# The same upsert as the service's, for a small batch: key 0 takes the next key of the identity
# column's sequence; an existing key of another group is left alone (no row comes back for it).
# Date-times travel as text and PostgreSQL parses them (the session runs in UTC), which accepts
# every form the bench sends.
UPSERT_SQL = """
INSERT INTO group_flex_schedule AS t (
    group_flex_schedule_key, group_id, plan_id, calendar_year, schedule_date, schedule_type,
    entry_date, entry_user, update_date, update_user)
SELECT CASE WHEN u.key = 0 THEN nextval(s.seq) ELSE u.key END, %(group_id)s, u.plan_id,
       u.calendar_year, u.schedule_date::timestamptz AT TIME ZONE 'UTC', upper(u.schedule_type),
       now(), %(user)s, now(), %(user)s
FROM unnest(%(keys)s::integer[], %(plan_ids)s::varchar[], %(calendar_years)s::varchar[],
            %(schedule_dates)s::text[], %(schedule_types)s::varchar[])
     AS u(key, plan_id, calendar_year, schedule_date, schedule_type),
     (SELECT pg_get_serial_sequence('group_flex_schedule', 'group_flex_schedule_key')::regclass
      AS seq) AS s""" + UPSERT_TAIL

#: Connection settings for every client of UPSERT_SQL (the app's pool and the bare clients).
CONNECT_KWARGS: dict[str, Any] = {"options": "-c TimeZone=UTC", "application_name": "bench"}


def upsert_params(group_id: str, user: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """UPSERT_SQL's parameters for a batch of service-shaped items."""
    return {
        "group_id": group_id, "user": user,
        "keys": [it["groupFlexSchedule_Key"] for it in items],
        "plan_ids": [it["plan_ID"] for it in items],
        "calendar_years": [it["calendar_Year"] for it in items],
        "schedule_dates": [it["schedule_Date"] for it in items],
        "schedule_types": [it["schedule_Type"] for it in items],
    }


def results(rows: list[tuple[int, bool]]) -> list[dict[str, Any]]:
    """Per-item results in the service's shape (201 created, 200 updated)."""
    return [{"id": [{"key": "groupFlexSchedule_Key", "value": key}],
             "status": 201 if inserted else 200, "body": "Created" if inserted else "Updated"}
            for key, inserted in rows]


def create_app(dsn: str, pool_size: int) -> Flask:
    minimal = Flask(__name__)
    # Opened in the worker (gunicorn.conf.py does not preload the app), like the service's pools.
    pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, kwargs=CONNECT_KWARGS,
                          name="bench-minimal", open=True)
    minimal.extensions["bench.pool"] = pool

    @minimal.put("/groups/<group_id>/flex-schedules-batch")
    def batch(group_id: str) -> Response:
        params = upsert_params(group_id, "bench-user", orjson.loads(request.get_data()))
        with pool.connection() as conn:       # BEGIN ... COMMIT
            rows = conn.execute(UPSERT_SQL, params).fetchall()
        return Response(orjson.dumps({"data": results(rows)}), 200,
                        mimetype="application/json")

    return minimal


if "FLEXSVC_BENCH_MINIMAL_DSN" in os.environ:
    app = create_app(os.environ["FLEXSVC_BENCH_MINIMAL_DSN"],
                     int(os.environ.get("FLEXSVC_BENCH_MINIMAL_POOL", "4")))
