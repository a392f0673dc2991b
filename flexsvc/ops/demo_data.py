"""The demo tenant's data: one group with GroupFlex rows for two plans.

Their first payment dates make calculated schedules easy to read: FSA pays from Friday
2026-01-09 (a BIWEEKLY lay-out gives every other Friday), HRA from the 15th of January (MONTHLY
gives the 15th of every month).
"""

from __future__ import annotations

from datetime import date

import psycopg

from flexsvc.data.queries import sql

DEMO_GROUP = "DEMO01"
DEMO_PLANS = ("FSA", "HRA")
DEMO_YEAR = "2026"
DEMO_FIRST_PAYMENT = {"FSA": date(2026, 1, 9), "HRA": date(2026, 1, 15)}


def seed_demo(conn: psycopg.Connection) -> None:
    """Insert the demo group and its GroupFlex rows (idempotent)."""
    with conn.transaction():
        conn.execute(sql("seed_demo_group"),
                     {"group_id": DEMO_GROUP, "group_name": "Demo Health Group"})
        for plan in DEMO_PLANS:
            conn.execute(sql("seed_demo_group_flex"), {
                "group_id": DEMO_GROUP, "plan_id": plan, "calendar_year": DEMO_YEAR,
                "effective_date": date(2026, 1, 1), "term_date": date(2026, 12, 31),
                "first_payment_date": DEMO_FIRST_PAYMENT[plan]})
