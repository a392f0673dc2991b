"""The benchmark's database and data: one group, GroupFlex parents, 10,000-item batches.

Every round of every method does the same work: keys 1..N/2 exist before the round (updates),
keys N/2+1..N do not (creates). ``reset`` deletes the created rows and vacuums, so each round
starts from the same state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import psycopg

from flexsvc.data.migrations import apply_migrations
from flexsvc.rules.datetimes import parse_datetime

GROUP = "BENCH01"
PLANS = ("P01", "P02", "P03", "P04")
YEAR = "2026"
TYPES = ("MONTHLY", "biweekly", "Weekly", "SEMIMONTHLY", "QUARTERLY", "CUSTOM")
USER = "bench-user"
# The forms clients send (seed's Ruby SDK: "... UTC" and "... -0500"), cycled over the items.
_DATE_FORMS = ("{d}T00:00:00", "{d} 00:00:00 UTC", "{d}", "{d}T09:30:00.250-05:00")


@dataclass(frozen=True)
class Batch:
    """One batch as the service receives it (JSON items) and as bare SQL receives it (arrays)."""

    items: list[dict[str, Any]]
    keys: list[int]
    plan_ids: list[str]
    calendar_years: list[str]
    schedule_dates: list[datetime]
    schedule_types: list[str]

    @property
    def size(self) -> int:
        return len(self.items)


def make_batch(size: int, first_key: int = 1, round_no: int = 0) -> Batch:
    """``size`` items with keys first_key..first_key+size-1, in shuffled-but-fixed order."""
    items = []
    start = date(2026, 1, 1)
    for i in range(size):
        key = first_key + (i * 7919) % size        # a fixed permutation: not in key order
        day = (start + timedelta(days=(i + round_no) % 365)).isoformat()
        items.append({
            "groupFlexSchedule_Key": key,
            "group_ID": GROUP,
            "plan_ID": PLANS[i % len(PLANS)],
            "calendar_Year": YEAR,
            "schedule_Date": _DATE_FORMS[i % len(_DATE_FORMS)].format(d=day),
            "schedule_Type": TYPES[i % len(TYPES)],
        })
    return Batch(
        items=items,
        keys=[it["groupFlexSchedule_Key"] for it in items],
        plan_ids=[it["plan_ID"] for it in items],
        calendar_years=[it["calendar_Year"] for it in items],
        schedule_dates=[parse_datetime(it["schedule_Date"]) for it in items],
        schedule_types=[it["schedule_Type"].upper() for it in items],
    )


def prepare_database(dsn: str, existing: int) -> None:
    """Migrate, seed the group, its GroupFlex rows and keys 1..``existing``."""
    with psycopg.connect(dsn) as conn:
        apply_migrations(conn)
        with conn.transaction():
            conn.execute("TRUNCATE group_flex_schedule, group_flex, groups RESTART IDENTITY")
            conn.execute("INSERT INTO groups (group_id, group_name) VALUES (%s, 'Bench group'), "
                         "('BENCH02', 'Other group')", (GROUP,))
            for plan in PLANS:
                conn.execute(
                    "INSERT INTO group_flex (group_id, plan_id, calendar_year, effective_date, "
                    "term_date) VALUES (%s, %s, %s, '2026-01-01', '2026-12-31')",
                    (GROUP, plan, YEAR))
            conn.execute(
                "INSERT INTO group_flex_schedule (group_flex_schedule_key, group_id, plan_id, "
                "calendar_year, schedule_date, schedule_type, entry_date, entry_user, "
                "update_date, update_user) "
                "SELECT k, %s, %s, %s, '2026-01-01', 'MONTHLY', now(), 'seed', now(), 'seed' "
                "FROM generate_series(1, %s) AS k",
                (GROUP, PLANS[0], YEAR, existing))
    reset(dsn, existing)


def reset(dsn: str, existing: int) -> None:
    """Back to the seeded state: only keys 1..``existing`` exist; dead rows vacuumed away."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM group_flex_schedule WHERE group_flex_schedule_key > %s",
                     (existing,))
        conn.execute("SELECT setval(pg_get_serial_sequence('group_flex_schedule', "
                     "'group_flex_schedule_key'), %s)", (existing,))
        conn.execute("VACUUM (ANALYZE) group_flex_schedule")
        try:   # flush the dirty pages now, not in the middle of the next round
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass
