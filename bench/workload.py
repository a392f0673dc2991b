"""The benchmark's database and data: one group, GroupFlex parents, big and small batches.

Every round of every method does the same work: keys 1..N/2 exist before the round (updates),
keys N/2+1..N do not (creates). ``reset`` deletes the created rows and vacuums, so each round
starts from the same state.

Schedule types: a big batch is all CUSTOM (dates stored as sent) or all WEEKLY, a rule-based
type (SPEC §8: the server stores the first date of the GroupFlex's weekly series on or after
the day sent). Every GroupFlex runs 2026-01-01 (a Thursday, the anchor) to 2026-12-31 (also a
Thursday), so any day of 2026 has a series date and every WEEKLY item is valid. Bare SQL gets
the stored dates precomputed (``Batch.schedule_dates``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from time import monotonic, sleep
from typing import Any

import psycopg

from flexsvc.data.migrations import apply_migrations
from flexsvc.rules.datetimes import parse_datetime

GROUP = "BENCH01"
PLANS = ("P01", "P02", "P03", "P04")
YEAR = "2026"
EFFECTIVE, TERM = date(2026, 1, 1), date(2026, 12, 31)      # of every bench GroupFlex
#: The variants of the big batch: every item of one schedule type, in the cases clients send.
VARIANTS = {"custom": ("CUSTOM", "custom", "Custom"), "weekly": ("WEEKLY", "weekly", "Weekly")}
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


def weekly_date(sent: datetime) -> datetime:
    """The stored date of a WEEKLY item (SPEC §8): first series date on or after the UTC day."""
    late = (sent.date() - EFFECTIVE).days
    day = EFFECTIVE + timedelta(days=max(0, -(-late // 7) * 7))
    if day > TERM:
        raise ValueError(f"{sent} is past the WEEKLY series of the bench GroupFlex rows")
    return datetime.combine(day, time())


def make_batch(size: int, first_key: int = 1, round_no: int = 0,
               variant: str = "custom") -> Batch:
    """``size`` items with keys first_key..first_key+size-1, in shuffled-but-fixed order."""
    items = []
    start = EFFECTIVE
    types = VARIANTS[variant]
    for i in range(size):
        key = first_key + (i * 7919) % size        # a fixed permutation: not in key order
        day = (start + timedelta(days=(i + round_no) % 365)).isoformat()
        items.append({
            "groupFlexSchedule_Key": key,
            "group_ID": GROUP,
            "plan_ID": PLANS[i % len(PLANS)],
            "calendar_Year": YEAR,
            "schedule_Date": _DATE_FORMS[i % len(_DATE_FORMS)].format(d=day),
            "schedule_Type": types[i % len(types)],
        })
    sent = [parse_datetime(it["schedule_Date"]) for it in items]
    return Batch(
        items=items,
        keys=[it["groupFlexSchedule_Key"] for it in items],
        plan_ids=[it["plan_ID"] for it in items],
        calendar_years=[it["calendar_Year"] for it in items],
        schedule_dates=[weekly_date(d) for d in sent] if variant == "weekly" else sent,
        schedule_types=[it["schedule_Type"].upper() for it in items],
    )


def prepare_database(dsn: str, existing: int) -> None:
    """Migrate, seed the group, its GroupFlex rows and keys 1..``existing``."""
    with psycopg.connect(dsn) as conn:
        apply_migrations(conn)
        with conn.transaction():
            # CASCADE: tables that later migrations hang off these start empty too.
            conn.execute("TRUNCATE group_flex_schedule, group_flex, groups RESTART IDENTITY "
                         "CASCADE")
            conn.execute("INSERT INTO groups (group_id, group_name) VALUES (%s, 'Bench group'), "
                         "('BENCH02', 'Other group')", (GROUP,))
            for plan in PLANS:    # only the columns of the first migration: works before and
                conn.execute(     # after later ones add nullable columns (first_payment_date)
                    "INSERT INTO group_flex (group_id, plan_id, calendar_year, effective_date, "
                    "term_date) VALUES (%s, %s, %s, %s, %s)",
                    (GROUP, plan, YEAR, EFFECTIVE, TERM))
            conn.execute(
                "INSERT INTO group_flex_schedule (group_flex_schedule_key, group_id, plan_id, "
                "calendar_year, schedule_date, schedule_type, entry_date, entry_user, "
                "update_date, update_user) "
                "SELECT k, %s, %s, %s, '2026-01-01', 'MONTHLY', now(), 'seed', now(), 'seed' "
                "FROM generate_series(1, %s) AS k",
                (GROUP, PLANS[0], YEAR, existing))
    reset(dsn, existing)


def reset(dsn: str, existing: int) -> None:
    """Back to the seeded state: only keys 1..``existing`` exist; dead rows vacuumed away.

    Waits first until the database has been quiet for half a second: a load generator stops
    without waiting for the answers in flight (wrk does), and a batch committing after the
    reset would leave rows the next run does not expect (a row above the reset key sequence
    turns a later create into an update)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _wait_until_quiet(conn)
        conn.execute("DELETE FROM group_flex_schedule WHERE group_flex_schedule_key > %s",
                     (existing,))
        conn.execute("SELECT setval(pg_get_serial_sequence('group_flex_schedule', "
                     "'group_flex_schedule_key'), %s)", (existing,))
        conn.execute("VACUUM (ANALYZE) group_flex_schedule")
        try:   # flush the dirty pages now, not in the middle of the next round
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass


def _wait_until_quiet(conn: psycopg.Connection, quiet: float = 0.5,
                      timeout: float = 60) -> None:
    """Until no other session of the database has been in a statement or transaction for
    ``quiet`` seconds (a request between two of its statements looks idle for a moment)."""
    deadline = monotonic() + timeout
    quiet_since = monotonic()
    while monotonic() < deadline:
        busy = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND state <> 'idle'").fetchone()[0]
        now = monotonic()
        if busy:
            quiet_since = now
        elif now - quiet_since >= quiet:
            return
        sleep(0.02)


def small_batches(size: int, count: int, updatable: int) -> list[list[dict[str, Any]]]:
    """``count`` CUSTOM batches of ``size`` items: the first half updates, the rest key-0 creates.

    Batch j updates keys j*half+1 .. j*half+half (wrapping within 1..``updatable``, all of the
    bench group), so any run of ``updatable // half`` consecutive batches touches distinct keys:
    concurrent clients working through the list in turn never wait on each other's row locks.
    """
    half = size // 2
    batches = []
    for j in range(count):
        items = make_batch(size, round_no=j).items
        for i, item in enumerate(items):
            item["groupFlexSchedule_Key"] = (j * half + i) % updatable + 1 if i < half else 0
        batches.append(items)
    return batches
