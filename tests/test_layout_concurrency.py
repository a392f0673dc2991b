"""SPEC §8 consistency: lay-outs (changing type and anchor) racing batches on the same GroupFlex.

A batch and a lay-out of the same GroupFlex behave as if one ran before the other, so once all
have finished every rule-based row lies on its type's series from the anchor then stored. The
batches write rule-based types whose dates depend on the anchor the lay-outs keep moving, so an
interleaving in which a batch calculated with an anchor a concurrent lay-out replaced leaves a
row off its series. A later lay-out of that GroupFlex would delete such a row again, so the
invariant is also checked on snapshots taken all along the race: every committed state is that
of some serial order, and each batch and each lay-out keeps the invariant.

And nothing deadlocks: PostgreSQL's own deadlock counter stays put (each batch client has its
own keys, so batches never meet each other on a row: any deadlock would involve a lay-out).
"""

from __future__ import annotations

import random
import threading
from datetime import date, datetime, time, timedelta

import psycopg
import pytest

from flexsvc.rules.calculation import GroupFlexDates
from flexsvc.rules.recurrence import parse_rule
from tests.helpers import headers, item
from tests.test_concurrency import run_clients

pytestmark = pytest.mark.slow

BATCH_URL = "/groups/G1/flex-schedules-batch"
PLANS = ("P1", "P2")
TYPES = ("WEEKLY", "BIWEEKLY", "SEMIMONTHLY", "MONTHLY", "QUARTERLY")


def deadlocks(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT deadlocks FROM pg_stat_database "
                        "WHERE datname = current_database()").fetchone()[0]


def off_series_rows(conn: psycopg.Connection) -> list[tuple]:
    """Every rule-based row that does not lie on its type's series from the stored anchor."""
    rules = dict(conn.execute("SELECT schedule_type, rule FROM flex_schedule_type"))
    group_flexes = {(g, p, y): GroupFlexDates(e, t, f) for g, p, y, e, t, f in conn.execute(
        "SELECT group_id, plan_id, calendar_year, effective_date, term_date, "
        "first_payment_date FROM group_flex")}
    series: dict[tuple, set[datetime]] = {}
    wrong = []
    for key, group, plan, year, when, schedule_type in conn.execute(
            "SELECT group_flex_schedule_key, group_id, plan_id, calendar_year, schedule_date, "
            "schedule_type FROM group_flex_schedule"):
        if rules[schedule_type] is None:
            continue
        dates = group_flexes[group, plan, year]
        found = series.get((group, plan, year, schedule_type))
        if found is None:
            computed = parse_rule(rules[schedule_type]).series(dates.anchor, dates.term_date)
            found = series[group, plan, year, schedule_type] = {
                datetime.combine(d, time()) for d in computed.dates}
        if when not in found:
            wrong.append((key, plan, schedule_type, when, dates.anchor))
    return wrong


class SnapshotChecker(threading.Thread):
    """Checks the invariant on consistent snapshots (REPEATABLE READ) until stopped."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.snapshots = 0
        self.violations: list[tuple] = []

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    self.violations += off_series_rows(conn)
                self.snapshots += 1


def test_lay_outs_racing_batches_leave_every_row_on_its_series(pool_app, db):
    """4 clients lay out P1/P2 with random types and anchors; 4 send batches of rule-based
    items (updates and creates of their own keys, moving rows between P1 and P2, and key-0
    creates) that the lay-outs keep deleting and recreating."""
    # New keys (lay-outs, key 0) come from far above the clients' explicit keys.
    db.execute("SELECT setval(pg_get_serial_sequence('group_flex_schedule', "
               "'group_flex_schedule_key'), 100000)")
    before = deadlocks(db)

    def build(client: int, round_no: int) -> tuple[str, object]:
        rng = random.Random(client * 7919 + round_no)
        plan = rng.choice(PLANS)
        if client < 4:
            body: dict = {"schedule_Type": rng.choice(TYPES)}
            if rng.random() < 0.8:
                body["first_Payment_Date"] = (date(2026, 1, 1) + timedelta(
                    days=rng.randrange(60))).isoformat()
            return f"/groups/G1/flexes/{plan}/2026/schedule", body
        own_keys = range(client * 100, client * 100 + 40)
        items = [item(rng.choice([0, rng.choice(own_keys)]), plan_ID=rng.choice(PLANS),
                      schedule_Type=rng.choice(TYPES), schedule_Date=(
                          date(2026, 1, 1) + timedelta(days=rng.randrange(300))).isoformat())
                 for _ in range(rng.randint(5, 40))]
        return BATCH_URL, items

    def make():
        client = pool_app.test_client()

        def send(request):
            url, body = request
            response = client.put(url, json=body, headers=headers())
            return response.status_code, response.get_json()
        return send

    checker = SnapshotChecker(db.info.dsn)
    checker.start()
    try:
        outcomes = run_clients(make, clients=8, batches=40, build=build, budget=240)
    finally:
        checker.stop.set()
        checker.join(30)
    layouts = batches = written = 0
    for (url, _), status, body in outcomes.values():
        assert status == 207, (url, status, body)
        statuses = {r["status"] for r in body["data"]}
        if url == BATCH_URL:
            batches += 1
            assert statuses <= {200, 201, 422}, body      # 422: a date past a series' end
            written += sum(r["status"] in (200, 201) for r in body["data"])
        else:
            layouts += 1
            assert statuses <= {200, 201, 204}, body
    assert layouts == 160 and batches == 160 and written > 1000
    assert off_series_rows(db) == []
    assert checker.violations == []
    assert checker.snapshots > 10, "too few snapshots to prove anything"
    pool_app.extensions["flexsvc.pools"].close()     # sessions end: their statistics are flushed
    assert deadlocks(db) == before
