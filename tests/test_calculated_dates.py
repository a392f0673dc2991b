"""SPEC §8 on writes: rule-based types store the calculated date (batch, PUT, POST; real DB)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date, datetime

import psycopg
import pytest

from flexsvc.data.migrations import MIGRATIONS_DIR, apply_migrations, migration_files
from tests.conftest import create_database, drop_database
from tests.helpers import GROUP, headers, item, put_batch, rows, statuses

BASE = f"/groups/{GROUP}/flex-schedules"
CALCULATED = "; schedule_Date calculated as "


def results(response) -> list[dict]:
    assert response.status_code == 207, response.get_json()
    return response.get_json()["data"]


def set_group_flex(db, plan: str = "P1", *, effective: str = "2026-01-01",
                   term: str = "2026-12-31", first: str | None = None) -> None:
    db.execute("UPDATE group_flex SET effective_date = %s, term_date = %s, "
               "first_payment_date = %s WHERE group_id = 'G1' AND plan_id = %s",
               (effective, term, first, plan))


def stored_dates(db) -> dict[int, datetime]:
    return {r["group_flex_schedule_key"]: r["schedule_date"] for r in rows(db)}


@pytest.fixture
def schedule_types(db) -> Iterator[psycopg.Connection]:
    """Lets a test add types or change rules; the seeded rules are put back afterwards."""
    before = db.execute("SELECT schedule_type, rule FROM flex_schedule_type").fetchall()
    yield db
    db.execute("DELETE FROM group_flex_schedule")
    db.execute("DELETE FROM flex_schedule_type WHERE schedule_type <> ALL(%s)",
               ([t for t, _ in before],))
    for schedule_type, rule in before:
        db.execute("UPDATE flex_schedule_type SET rule = %s WHERE schedule_type = %s",
                   (rule, schedule_type))


# --- the migration ----------------------------------------------------------------------------

def test_the_migration_seeds_the_built_in_rules(db):
    assert dict(db.execute("SELECT schedule_type, rule FROM flex_schedule_type")) == {
        "CUSTOM": None,
        "WEEKLY": "FREQ=WEEKLY",
        "BIWEEKLY": "FREQ=WEEKLY;INTERVAL=2",
        "SEMIMONTHLY": "FREQ=MONTHLY;BYMONTHDAY=15,-1",
        "MONTHLY": "FREQ=MONTHLY",
        "QUARTERLY": "FREQ=MONTHLY;INTERVAL=3",
    }
    assert db.execute("SELECT count(*) FROM group_flex WHERE first_payment_date IS NOT NULL"
                      ).fetchone() == (0,)


def test_the_migration_is_safe_on_a_database_that_holds_data(pg_admin_dsn):
    """A database at version 0001 with rows (and an operator's type) migrates in place."""
    name = f"flexsvc_test_m2_{datetime.now():%H%M%S%f}"
    dsn = create_database(pg_admin_dsn, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(open_migration("0001_schema.sql"))
            conn.execute("INSERT INTO groups VALUES ('G1', NULL)")
            conn.execute("INSERT INTO group_flex VALUES ('G1', 'P1', '2026', '2026-01-01', "
                         "'2026-12-31')")
            conn.execute("INSERT INTO flex_schedule_type VALUES ('FOURWEEKLY', 'Every 4 weeks')")
            conn.execute("INSERT INTO group_flex_schedule (group_id, plan_id, calendar_year, "
                         "schedule_date, schedule_type, entry_date, update_date) VALUES "
                         "('G1', 'P1', '2026', '2026-01-15 10:00', 'MONTHLY', now(), now())")
            conn.execute("CREATE TABLE flexsvc_schema_migrations (version text PRIMARY KEY, "
                         "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            conn.execute("INSERT INTO flexsvc_schema_migrations VALUES ('0001_schema', %s)",
                         (migration_checksum("0001_schema.sql"),))
            later = [path.stem for path in migration_files()][1:]
            assert later[0] == "0002_calculated_schedules"
            assert apply_migrations(conn) == later
            assert apply_migrations(conn) == []
            assert conn.execute("SELECT schedule_date FROM group_flex_schedule").fetchone() == (
                datetime(2026, 1, 15, 10),)            # existing rows are left as they are
            rules = dict(conn.execute("SELECT schedule_type, rule FROM flex_schedule_type"))
            assert rules["MONTHLY"] == "FREQ=MONTHLY" and rules["FOURWEEKLY"] is None
    finally:
        drop_database(pg_admin_dsn, name)


def open_migration(file: str) -> str:
    return (MIGRATIONS_DIR / file).read_text()


def migration_checksum(file: str) -> str:
    return hashlib.sha256(open_migration(file).encode()).hexdigest()


# --- each built-in type -----------------------------------------------------------------------

@pytest.mark.parametrize("schedule_type, sent, expected", [
    ("WEEKLY", "2026-01-02", "2026-01-08"),        # anchor Thursday 2026-01-01
    ("WEEKLY", "2026-01-08", "2026-01-08"),
    ("BIWEEKLY", "2026-01-02", "2026-01-15"),
    ("BIWEEKLY", "2026-01-15", "2026-01-15"),
    ("SEMIMONTHLY", "2026-01-02", "2026-01-15"),
    ("SEMIMONTHLY", "2026-01-16", "2026-01-31"),
    ("SEMIMONTHLY", "2026-02-16", "2026-02-28"),
    ("SEMIMONTHLY", "2026-03-01", "2026-03-15"),
    ("MONTHLY", "2026-01-02", "2026-02-01"),
    ("MONTHLY", "2026-02-01", "2026-02-01"),
    ("QUARTERLY", "2026-01-02", "2026-04-01"),
    ("QUARTERLY", "2026-07-01", "2026-07-01"),
    ("CUSTOM", "2026-01-02T10:20:30", "2026-01-02T10:20:30"),
])
def test_each_built_in_type_stores_the_first_series_date_on_or_after_the_day(
        client, db, schedule_type, sent, expected):
    response = put_batch(client, [item(1, schedule_Type=schedule_type, schedule_Date=sent)])
    (result,) = results(response)
    expected_at = datetime.fromisoformat(expected)
    assert result["status"] == 201
    if expected_at == datetime.fromisoformat(sent):
        assert result["body"] == "Created"
    else:
        assert result["body"] == f"Created{CALCULATED}{expected_at.isoformat()}"
    assert stored_dates(db) == {1: expected_at}


def test_the_anchor_is_the_first_payment_date_when_set(client, db):
    set_group_flex(db, first="2026-01-09")         # a Friday
    set_group_flex(db, "P2")                        # no first payment date: effective_date
    response = put_batch(client, [
        item(1, schedule_Type="BIWEEKLY", schedule_Date="2026-01-10"),
        item(2, schedule_Type="BIWEEKLY", schedule_Date="2026-01-10", plan_ID="P2"),
        item(3, schedule_Type="MONTHLY", schedule_Date="2026-01-10"),
        item(4, schedule_Type="MONTHLY", schedule_Date="2026-01-10", plan_ID="P2"),
    ])
    assert [r["body"] for r in results(response)] == [
        f"Created{CALCULATED}2026-01-23T00:00:00", f"Created{CALCULATED}2026-01-15T00:00:00",
        f"Created{CALCULATED}2026-02-09T00:00:00", f"Created{CALCULATED}2026-02-01T00:00:00"]


def test_days_before_the_anchor_get_the_first_date_and_the_last_date_is_kept(client, db):
    set_group_flex(db, first="2026-01-09")
    response = put_batch(client, [
        item(1, schedule_Type="BIWEEKLY", schedule_Date="2025-06-30"),
        item(2, schedule_Type="BIWEEKLY", schedule_Date="2026-01-01"),
        item(3, schedule_Type="BIWEEKLY", schedule_Date="2026-12-25"),   # the last date
        item(4, schedule_Type="BIWEEKLY", schedule_Date="2026-12-12"),
    ])
    assert statuses(response) == [201] * 4
    assert stored_dates(db) == {1: datetime(2026, 1, 9), 2: datetime(2026, 1, 9),
                                3: datetime(2026, 12, 25), 4: datetime(2026, 12, 25)}


def test_past_the_end_of_the_series_is_a_422_naming_group_flex_type_and_last_date(client, db):
    set_group_flex(db, first="2026-01-09")
    response = put_batch(client, [
        item(1, schedule_Type="BIWEEKLY", schedule_Date="2026-12-26"),
        item(2, schedule_Type="MONTHLY", schedule_Date="2027-01-01"),
        item(3, schedule_Type="CUSTOM", schedule_Date="2027-06-01"),   # CUSTOM: as sent
    ])
    first, second, third = results(response)
    assert (first["status"], second["status"], third["status"]) == (422, 422, 201)
    for body, schedule_type, last in ((first["body"], "BIWEEKLY", "2026-12-25"),
                                      (second["body"], "MONTHLY", "2026-12-09")):
        assert "GroupFlex (group_ID G1, plan_ID P1, calendar_Year 2026)" in body
        assert schedule_type in body and last in body
    assert stored_dates(db) == {3: datetime(2027, 6, 1)}


@pytest.mark.parametrize("first, schedule_type, expected", [
    ("2026-01-31", "MONTHLY", ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]),
    ("2026-01-30", "MONTHLY", ["2026-01-30", "2026-02-28", "2026-03-30", "2026-04-30"]),
    ("2026-01-29", "MONTHLY", ["2026-01-29", "2026-02-28", "2026-03-29", "2026-04-29"]),
    ("2024-01-31", "MONTHLY", ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]),
    ("2024-01-30", "MONTHLY", ["2024-01-30", "2024-02-29", "2024-03-30", "2024-04-30"]),
    ("2024-01-29", "MONTHLY", ["2024-01-29", "2024-02-29", "2024-03-29", "2024-04-29"]),
    ("2025-11-30", "QUARTERLY", ["2025-11-30", "2026-02-28", "2026-05-30", "2026-08-30"]),
    ("2025-11-29", "QUARTERLY", ["2025-11-29", "2026-02-28", "2026-05-29", "2026-08-29"]),
    ("2025-11-28", "QUARTERLY", ["2025-11-28", "2026-02-28", "2026-05-28", "2026-08-28"]),
    ("2023-11-30", "QUARTERLY", ["2023-11-30", "2024-02-29", "2024-05-30", "2024-08-30"]),
    ("2023-11-29", "QUARTERLY", ["2023-11-29", "2024-02-29", "2024-05-29", "2024-08-29"]),
    ("2023-10-31", "QUARTERLY", ["2023-10-31", "2024-01-31", "2024-04-30", "2024-07-31"]),
    ("2025-08-31", "QUARTERLY", ["2025-08-31", "2025-11-30", "2026-02-28", "2026-05-31"]),
])
def test_month_end_clamping_never_skips_a_month(client, db, first, schedule_type, expected):
    set_group_flex(db, effective=first, term="2026-12-31", first=first)
    # One item on each expected date and one on the day after the previous date.
    items = []
    for i, day in enumerate(expected):
        items.append(item(2 * i + 1, schedule_Type=schedule_type, schedule_Date=day))
        if i:
            after = date.fromisoformat(expected[i - 1]).toordinal() + 1
            items.append(item(2 * i + 2, schedule_Type=schedule_type,
                              schedule_Date=date.fromordinal(after).isoformat()))
    assert statuses(put_batch(client, items)) == [201] * len(items)
    dates = stored_dates(db)
    for i, day in enumerate(expected):
        assert dates[2 * i + 1] == datetime.fromisoformat(day)
        if i:
            assert dates[2 * i + 2] == datetime.fromisoformat(day)


@pytest.mark.parametrize("first, sent, expected", [
    ("2026-01-01", "2026-01-31", "2026-01-31"),
    ("2026-01-01", "2026-02-01", "2026-02-15"),
    ("2026-01-01", "2026-02-16", "2026-02-28"),
    ("2026-01-01", "2026-04-30", "2026-04-30"),
    ("2026-01-16", "2026-01-01", "2026-01-31"),      # anchor past the 15th: the month's end
    ("2026-01-31", "2026-01-01", "2026-01-31"),
    ("2026-02-16", "2026-02-20", "2026-02-28"),
    ("2026-12-16", "2026-12-31", "2026-12-31"),
])
def test_semimonthly_around_month_ends(client, db, first, sent, expected):
    set_group_flex(db, first=first)
    response = put_batch(client, [item(1, schedule_Type="semimonthly", schedule_Date=sent)])
    assert statuses(response) == [201]
    assert stored_dates(db) == {1: datetime.fromisoformat(expected)}


@pytest.mark.parametrize("sent, expected", [
    ("2026-01-15T10:30:00", "2026-01-15"),           # a time of day on a series date
    ("2026-01-15T23:59:59.999", "2026-01-15"),
    ("2026-01-16T00:00:01", "2026-01-29"),
    ("2026-01-14T23:30:00-05:00", "2026-01-15"),     # Jan 15 04:30 UTC: the UTC day counts
    ("2026-01-16T02:00:00+05:00", "2026-01-15"),     # Jan 15 21:00 UTC
    ("2026-01-15T00:30:00+01:00", "2026-01-15"),     # Jan 14 23:30 UTC: the next date
    ("2026-01-15 00:00:00 -0500", "2026-01-15"),     # Jan 15 05:00 UTC
    ("2026-01-15 00:00:00 UTC", None),               # exactly a series date: not calculated
    ("2026-01-15T00:00:00Z", None),
])
def test_a_date_time_with_a_time_of_day_or_an_offset_uses_its_utc_day(client, db, sent,
                                                                     expected):
    # BIWEEKLY from Thursday 2026-01-01: Jan 1, Jan 15, Jan 29.
    response = put_batch(client, [item(1, schedule_Type="BIWEEKLY", schedule_Date=sent)])
    (result,) = results(response)
    assert result["status"] == 201
    if expected is None:
        assert result["body"] == "Created"
        expected = "2026-01-15"
    else:
        assert result["body"] == f"Created{CALCULATED}{expected}T00:00:00"
    assert stored_dates(db) == {1: datetime.fromisoformat(expected)}


# --- rules are data: read on every request ----------------------------------------------------

def test_an_operator_added_type_works_without_a_restart(client, schedule_types):
    db = schedule_types
    assert statuses(put_batch(client, [item(1, schedule_Type="FOURWEEKLY")])) == [422]
    db.execute("INSERT INTO flex_schedule_type (schedule_type, description, rule) VALUES "
               "('FOURWEEKLY', 'Every four weeks', 'FREQ=WEEKLY;INTERVAL=4')")
    response = put_batch(client, [item(1, schedule_Type="fourweekly", schedule_Date="2026-01-02"),
                                  item(2, schedule_Type="FOURWEEKLY", schedule_Date="2026-01-29")])
    assert [r["body"] for r in results(response)] == [
        f"Created{CALCULATED}2026-01-29T00:00:00", "Created"]
    # A type added without a rule is entered by hand, like CUSTOM.
    db.execute("INSERT INTO flex_schedule_type (schedule_type, description) VALUES "
               "('HANDMADE', 'Dates by hand')")
    response = put_batch(client, [item(3, schedule_Type="HANDMADE", schedule_Date="2026-01-02")])
    assert [r["body"] for r in results(response)] == ["Created"]
    assert stored_dates(db) == {1: datetime(2026, 1, 29), 2: datetime(2026, 1, 29),
                                3: datetime(2026, 1, 2)}


def test_a_changed_rule_or_anchor_takes_effect_on_the_next_request(client, schedule_types):
    db = schedule_types
    put_batch(client, [item(1, schedule_Type="MONTHLY", schedule_Date="2026-01-02")])
    db.execute("UPDATE flex_schedule_type SET rule = 'FREQ=MONTHLY;BYMONTHDAY=-1' "
               "WHERE schedule_type = 'MONTHLY'")
    put_batch(client, [item(2, schedule_Type="MONTHLY", schedule_Date="2026-01-02")])
    set_group_flex(db, first="2026-01-10")
    put_batch(client, [item(3, schedule_Type="WEEKLY", schedule_Date="2026-01-02")])
    assert stored_dates(db) == {1: datetime(2026, 2, 1), 2: datetime(2026, 1, 31),
                                3: datetime(2026, 1, 10)}


@pytest.mark.parametrize("rule", ["FREQ=HOURLY", "not a rule", "FREQ=WEEKLY;UNTIL=20261231",
                                  "FREQ=MONTHLY;BYMONTHDAY=99", "FREQ=WEEKLY;BYDAY=ZZ", "",
                                  "FREQ=WEEKLY;WKST=XX", "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30;"
                                                         "BYDAY=MO"])
def test_an_unusable_rule_is_a_422_naming_the_type_never_a_500(client, schedule_types, rule):
    db = schedule_types
    db.execute("INSERT INTO flex_schedule_type (schedule_type, description, rule) VALUES "
               "('BROKEN', 'An operator typo', %s)", (rule,))
    response = put_batch(client, [item(1, schedule_Type="BROKEN"), item(2)])
    first, second = results(response)
    assert first["status"] == 422 and "schedule_Type BROKEN" in first["body"]
    assert second["status"] == 201
    assert list(stored_dates(db)) == [2]
    single = client.post(BASE, headers=headers(), json=item(0, schedule_Type="broken"))
    assert single.status_code == 422
    assert "schedule_Type BROKEN" in single.get_json()["error"]["detail"]


def test_a_group_flex_whose_term_is_before_its_anchor_gives_no_date(client, db):
    set_group_flex(db, first="2026-06-01", term="2026-05-31")
    (result,) = results(put_batch(client, [item(1, schedule_Type="WEEKLY")]))
    assert result["status"] == 422 and "gives no date" in result["body"]
    assert "2026-06-01" in result["body"] and "2026-05-31" in result["body"]


# --- in-order semantics, key 0, dry run, atomic ------------------------------------------------

def test_update_from_custom_to_a_rule_type_and_back(client, db):
    put_batch(client, [item(5, schedule_Type="CUSTOM", schedule_Date="2026-03-03T09:00:00")])
    assert stored_dates(db) == {5: datetime(2026, 3, 3, 9)}
    response = put_batch(client, [item(5, schedule_Type="WEEKLY",
                                       schedule_Date="2026-03-03T09:00:00")])
    assert results(response)[0] == {"id": [{"key": "groupFlexSchedule_Key", "value": 5}],
                                    "status": 200,
                                    "body": f"Updated{CALCULATED}2026-03-05T00:00:00"}
    assert stored_dates(db) == {5: datetime(2026, 3, 5)}
    response = put_batch(client, [item(5, schedule_Type="custom",
                                       schedule_Date="2026-03-03T09:00:00")])
    assert results(response)[0]["body"] == "Updated"
    assert rows(db)[0]["schedule_type"] == "CUSTOM"
    assert stored_dates(db) == {5: datetime(2026, 3, 3, 9)}


def test_repeated_keys_apply_in_order_each_calculated(client, db):
    response = put_batch(client, [
        item(9, schedule_Type="WEEKLY", schedule_Date="2026-01-02"),
        item(9, schedule_Type="MONTHLY", schedule_Date="2026-12-02"),     # past the end
        item(9, schedule_Type="MONTHLY", schedule_Date="2026-03-01"),
        item(9, schedule_Type="QUARTERLY", schedule_Date="2026-03-01"),
    ])
    assert [(r["status"], r["body"]) for r in results(response)] == [
        (201, f"Created{CALCULATED}2026-01-08T00:00:00"),
        (422, results(response)[1]["body"]),
        (200, "Updated"),
        (200, f"Updated{CALCULATED}2026-04-01T00:00:00"),
    ]
    (row,) = rows(db)
    assert (row["schedule_type"], row["schedule_date"]) == ("QUARTERLY", datetime(2026, 4, 1))


def test_key_zero_creates_with_the_calculated_date(client, db):
    response = put_batch(client, [item(0, schedule_Type="BIWEEKLY", schedule_Date="2026-02-01"),
                                  item(0, schedule_Type="MONTHLY", schedule_Date="2026-12-31")])
    first, second = results(response)
    assert first["status"] == 201 and first["id"][0]["value"] > 0
    assert first["body"] == f"Created{CALCULATED}2026-02-12T00:00:00"
    assert second["status"] == 422 and second["id"][0]["value"] == 0
    assert stored_dates(db) == {first["id"][0]["value"]: datetime(2026, 2, 12)}


def test_dry_run_answers_the_same_and_writes_nothing(client, db):
    batch = [item(1, schedule_Type="WEEKLY", schedule_Date="2026-01-02"),
             item(0, schedule_Type="MONTHLY", schedule_Date="2026-02-01"),
             item(2, schedule_Type="QUARTERLY", schedule_Date="2026-11-01")]
    dry = results(put_batch(client, batch, query="dryRun=true"))
    assert [(r["status"], r["body"]) for r in dry] == [
        (201, f"Created{CALCULATED}2026-01-08T00:00:00"), (201, "Created"),
        (422, dry[2]["body"])]
    assert "2026-10-01" in dry[2]["body"]
    assert rows(db) == []
    real = results(put_batch(client, batch))
    assert [(r["status"], r["body"]) for r in real] == [(r["status"], r["body"]) for r in dry]


def test_atomic_batch_with_a_date_past_the_end_writes_nothing(client, db):
    response = put_batch(client, [item(1, schedule_Type="WEEKLY"),
                                  item(2, schedule_Type="QUARTERLY", schedule_Date="2026-10-02")],
                         query="atomic=true")
    assert statuses(response) == [424, 422]
    assert rows(db) == []
    response = put_batch(client, [item(1, schedule_Type="WEEKLY"),
                                  item(2, schedule_Type="QUARTERLY", schedule_Date="2026-10-01")],
                         query="atomic=true")
    assert statuses(response) == [201, 201]
    assert stored_dates(db) == {1: datetime(2026, 1, 15), 2: datetime(2026, 10, 1)}


# --- the single-record routes -----------------------------------------------------------------

def test_put_and_post_store_and_return_the_calculated_date(client, db):
    set_group_flex(db, first="2026-01-09")
    created = client.put(f"{BASE}/7", headers=headers(),
                         json=item(7, schedule_Type="biweekly", schedule_Date="2026-01-10"))
    assert created.status_code == 201
    assert created.get_json()["data"]["schedule_Date"] == "2026-01-23T00:00:00"
    updated = client.put(f"{BASE}/7", headers=headers(),
                         json=item(7, schedule_Type="MONTHLY", schedule_Date="2026-01-10"))
    assert updated.status_code == 200
    assert updated.get_json()["data"]["schedule_Date"] == "2026-02-09T00:00:00"
    posted = client.post(BASE, headers=headers(),
                         json=item(0, schedule_Type="WEEKLY", schedule_Date="2026-01-10"))
    assert posted.status_code == 201
    record = posted.get_json()["data"]
    assert record["schedule_Date"] == "2026-01-16T00:00:00"
    fetched = client.get(posted.headers["Location"], headers=headers()).get_json()["data"]
    assert fetched == record
    assert stored_dates(db) == {7: datetime(2026, 2, 9),
                                record["groupFlexSchedule_Key"]: datetime(2026, 1, 16)}


def test_put_and_post_past_the_end_are_a_422_and_write_nothing(client, db):
    for response in (
            client.put(f"{BASE}/7", headers=headers(),
                       json=item(7, schedule_Type="MONTHLY", schedule_Date="2026-12-02")),
            client.post(BASE, headers=headers(),
                        json=item(0, schedule_Type="MONTHLY", schedule_Date="2026-12-02"))):
        assert response.status_code == 422
        detail = response.get_json()["error"]["detail"]
        assert "MONTHLY" in detail and "2026-12-01" in detail and "GroupFlex" in detail
    assert rows(db) == []
