"""SPEC §4: per-item outcomes of PUT /groups/{groupID}/flex-schedules-batch, and the rows after."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import OTHER_GROUP, headers, item, put_batch, rows, statuses


def results(response) -> list[dict]:
    assert response.status_code == 207, response.get_json()
    return response.get_json()["data"]


def ids(response) -> list:
    return [r["id"][0]["value"] for r in results(response)]


def test_207_envelope_shape(client):
    response = put_batch(client, [item(11)])
    body = response.get_json()
    assert response.status_code == 207
    assert body["error"] is None
    assert body["debug"]["activityID"] == response.headers["X-Activity-ID"]
    # MONTHLY from the anchor 2026-01-01: the 15th is calculated to the next 1st (SPEC §8).
    assert body["data"] == [{"id": [{"key": "groupFlexSchedule_Key", "value": 11}],
                             "status": 201,
                             "body": "Created; schedule_Date calculated as 2026-02-01T00:00:00"}]


def test_create_stores_every_field_and_audit_columns(client, db):
    before = datetime.now(UTC)
    response = put_batch(client, [item(5, plan_ID="P2", schedule_Date="2026-03-01T08:30:00",
                                       schedule_Type="biweekly")], user="alice")
    assert statuses(response) == [201]
    (row,) = rows(db)
    assert row["group_flex_schedule_key"] == 5
    assert (row["group_id"], row["plan_id"], row["calendar_year"]) == ("G1", "P2", "2026")
    # BIWEEKLY from the anchor 2026-01-01: ..., Feb 26, Mar 12 (SPEC §8).
    assert row["schedule_date"] == datetime(2026, 3, 12)
    assert row["schedule_type"] == "BIWEEKLY"
    assert row["entry_user"] == row["update_user"] == "alice"
    assert row["entry_date"] == row["update_date"]
    assert before - timedelta(seconds=5) <= row["entry_date"] <= datetime.now(UTC)


def test_update_keeps_entry_fields_and_sets_update_fields(client, db):
    put_batch(client, [item(5)], user="alice")
    (created,) = rows(db)
    response = put_batch(client, [item(5, schedule_Date="2026-04-01", plan_ID="P2")], user="bob")
    assert statuses(response) == [200]
    assert results(response)[0]["body"] == "Updated"
    (row,) = rows(db)
    assert row["plan_id"] == "P2" and row["schedule_date"] == datetime(2026, 4, 1)
    assert row["entry_user"] == "alice" and row["entry_date"] == created["entry_date"]
    assert row["update_user"] == "bob" and row["update_date"] > created["update_date"]


def test_client_audit_fields_are_ignored(client, db):
    sent = item(6, entry_Date="1999-01-01", entry_User="mallory", update_Date="garbage",
                update_User="x" * 50)
    assert statuses(put_batch(client, [sent], user="alice")) == [201]
    (row,) = rows(db)
    assert row["entry_user"] == "alice" and row["update_user"] == "alice"
    assert row["entry_date"].year >= 2026


def test_key_zero_creates_with_server_assigned_keys(client, db):
    response = put_batch(client, [item(0), item(0), item(0)])
    assert statuses(response) == [201, 201, 201]
    keys = ids(response)
    assert len(set(keys)) == 3 and all(isinstance(k, int) and k > 0 for k in keys)
    assert [r["group_flex_schedule_key"] for r in rows(db)] == sorted(keys)


def test_key_zero_never_collides_with_explicit_keys(client, db):
    # Explicit keys just above the sequence, in the same batch and in earlier batches.
    assert statuses(put_batch(client, [item(1), item(2)])) == [201, 201]
    response = put_batch(client, [item(0), item(3), item(0), item(4), item(0)])
    assert statuses(response) == [201] * 5
    keys = ids(response)
    assert keys[1] == 3 and keys[3] == 4
    assert len(set(keys) | {1, 2}) == 7
    assert len(rows(db)) == 7


def test_key_zero_skips_keys_created_outside_the_service(client, db):
    db.execute("INSERT INTO group_flex_schedule (group_flex_schedule_key, group_id, plan_id, "
               "calendar_year, schedule_date, schedule_type, entry_date, update_date) "
               "SELECT k, 'G1', 'P1', '2026', '2026-01-01', 'CUSTOM', now(), now() "
               "FROM generate_series(1, 5) k")
    response = put_batch(client, [item(0), item(0)])
    assert statuses(response) == [201, 201]
    assert all(k > 5 for k in ids(response))
    assert len(rows(db)) == 7


def test_explicit_key_that_does_not_exist_is_created_with_that_key(client, db):
    response = put_batch(client, [item(2147483647)])
    assert statuses(response) == [201] and ids(response) == [2147483647]
    assert rows(db)[0]["group_flex_schedule_key"] == 2147483647


def test_repeated_key_applies_in_order_last_valid_wins(client, db):
    response = put_batch(client, [
        item(9, schedule_Date="2026-01-01"),
        item(9, schedule_Date="2026-02-01"),
        item(9, schedule_Date="not a date"),
        item(9, schedule_Date="2026-03-01", plan_ID="P2"),
        item(9, plan_ID="NOPE"),
    ])
    assert statuses(response) == [201, 200, 400, 200, 422]
    (row,) = rows(db)
    assert row["schedule_date"] == datetime(2026, 3, 1) and row["plan_id"] == "P2"


def test_results_follow_request_order_with_mixed_outcomes(client, db):
    db.execute("INSERT INTO group_flex_schedule (group_flex_schedule_key, group_id, plan_id, "
               "calendar_year, schedule_date, schedule_type, entry_date, update_date) VALUES "
               "(50, 'G2', 'P1', '2026', '2026-01-01', 'CUSTOM', now(), now()), "
               "(51, 'G1', 'P1', '2026', '2026-01-01', 'CUSTOM', now(), now())")
    response = put_batch(client, [
        item(52), {"nonsense": True}, item(50), item(51), item(53, plan_ID="P9"), item(0),
    ])
    assert statuses(response) == [201, 400, 409, 200, 422, 201]
    assert ids(response)[:5] == [52, None, 50, 51, 53]


def test_409_key_under_another_group_leaves_row_untouched(client, db):
    db.execute("INSERT INTO group_flex_schedule (group_flex_schedule_key, group_id, plan_id, "
               "calendar_year, schedule_date, schedule_type, entry_date, update_date) VALUES "
               "(70, %s, 'P1', '2026', '2026-01-01', 'CUSTOM', now(), now())", (OTHER_GROUP,))
    before = rows(db)
    response = put_batch(client, [item(70, schedule_Date="2026-09-09")])
    assert statuses(response) == [409]
    assert "another group" in results(response)[0]["body"]
    assert rows(db) == before


def test_422_missing_parent_group_flex(client, db):
    response = put_batch(client, [item(1, plan_ID="P9"), item(2, calendar_Year="2031")])
    assert statuses(response) == [422, 422]
    bodies = [r["body"] for r in results(response)]
    assert "GroupFlex" in bodies[0] and "P9" in bodies[0]
    assert "2031" in bodies[1]
    assert rows(db) == []


def test_422_unknown_schedule_type(client, db):
    response = put_batch(client, [item(1, schedule_Type="DAILY")])
    assert statuses(response) == [422]
    assert "schedule_Type" in results(response)[0]["body"]
    assert rows(db) == []


def test_parent_of_another_group_is_not_a_parent(client, db):
    # G2 has (P1, 2026) but G1 has no (P1, 2027): the reference is checked within the group.
    db.execute("INSERT INTO group_flex VALUES ('G2', 'P1', '2027', '2027-01-01', '2027-12-31')")
    assert statuses(put_batch(client, [item(1, calendar_Year="2027")])) == [422]


@pytest.mark.parametrize("field, value, fragment", [
    ("groupFlexSchedule_Key", "5", "groupFlexSchedule_Key"),
    ("groupFlexSchedule_Key", True, "groupFlexSchedule_Key"),
    ("groupFlexSchedule_Key", 5.0, "groupFlexSchedule_Key"),
    ("groupFlexSchedule_Key", 5.5, "groupFlexSchedule_Key"),
    ("groupFlexSchedule_Key", -1, "groupFlexSchedule_Key"),
    ("groupFlexSchedule_Key", 2147483648, "groupFlexSchedule_Key"),
    ("groupFlexSchedule_Key", None, "groupFlexSchedule_Key"),
    ("group_ID", "G9", "group_ID"),
    ("group_ID", "", "group_ID"),
    ("plan_ID", "P" * 21, "plan_ID"),
    ("plan_ID", "", "plan_ID"),
    ("plan_ID", 12, "plan_ID"),
    ("plan_ID", "P\u0000", "plan_ID"),
    ("plan_ID", ["P1"], "plan_ID"),
    ("calendar_Year", "20266", "calendar_Year"),
    ("calendar_Year", 2026, "calendar_Year"),
    ("schedule_Type", "M" * 17, "schedule_Type"),
    ("schedule_Type", None, "schedule_Type"),
    ("schedule_Date", "2026-02-30", "schedule_Date"),
    ("schedule_Date", "soon", "schedule_Date"),
    ("schedule_Date", 20260115, "schedule_Date"),
    ("schedule_Date", {"year": 2026}, "schedule_Date"),
])
def test_400_invalid_field(client, db, field, value, fragment):
    response = put_batch(client, [item(3, **{field: value}), item(4)])
    assert statuses(response) == [400, 201]
    body = results(response)[0]["body"]
    assert fragment in body
    assert [r["group_flex_schedule_key"] for r in rows(db)] == [4]


@pytest.mark.parametrize("missing", ["groupFlexSchedule_Key", "group_ID", "plan_ID",
                                     "calendar_Year", "schedule_Date", "schedule_Type"])
def test_400_missing_required_field(client, db, missing):
    sent = item(3)
    del sent[missing]
    response = put_batch(client, [sent])
    assert statuses(response) == [400]
    assert missing in results(response)[0]["body"]
    assert rows(db) == []


@pytest.mark.parametrize("element", [None, 5, "text", [item(1)], True])
def test_400_item_that_is_not_an_object(client, db, element):
    response = put_batch(client, [element, item(2)])
    assert statuses(response) == [400, 201]
    assert "JSON object" in results(response)[0]["body"]
    assert ids(response)[0] is None


def test_400_lists_every_failing_field(client):
    response = put_batch(client, [{"groupFlexSchedule_Key": "x", "plan_ID": "P" * 30}])
    body = results(response)[0]["body"]
    for name in ("groupFlexSchedule_Key", "plan_ID", "group_ID", "calendar_Year",
                 "schedule_Date", "schedule_Type"):
        assert name in body


def test_400_echoes_the_key_as_sent(client):
    raw = json.dumps([item("abc"), item(12, plan_ID=""), item(10**30)])
    response = client.put("/groups/G1/flex-schedules-batch", data=raw, headers=headers())
    echoed = ids(response)
    assert echoed[:2] == ["abc", 12]
    assert float(echoed[2]) == float(10**30)  # orjson reads integers past 64 bits as floats


def test_numbers_out_of_range_are_item_errors_not_500(client, db):
    raw = ('[{"groupFlexSchedule_Key": 1e400, "group_ID": "G1", "plan_ID": "P1", '
           '"calendar_Year": "2026", "schedule_Date": "2026-01-15", "schedule_Type": "CUSTOM"},'
           '{"groupFlexSchedule_Key": 123456789012345678901234567890, "group_ID": "G1", '
           '"plan_ID": "P1", "calendar_Year": "2026", "schedule_Date": "2026-01-15", '
           '"schedule_Type": "CUSTOM"},'
           '{"groupFlexSchedule_Key": 8, "group_ID": "G1", "plan_ID": "P1", '
           '"calendar_Year": "2026", "schedule_Date": "2026-01-15", "schedule_Type": "CUSTOM"}]')
    response = client.put("/groups/G1/flex-schedules-batch", data=raw, headers=headers())
    assert statuses(response) == [400, 400, 201]
    assert [r["group_flex_schedule_key"] for r in rows(db)] == [8]


def test_lone_surrogate_is_an_item_error(client, db):
    raw = ('[{"groupFlexSchedule_Key": 1, "group_ID": "G1", "plan_ID": "\\ud800", '
           '"calendar_Year": "2026", "schedule_Date": "2026-01-15", "schedule_Type": "CUSTOM"}]')
    response = client.put("/groups/G1/flex-schedules-batch", data=raw, headers=headers())
    assert statuses(response) == [400]
    assert rows(db) == []


def test_field_names_match_case_insensitively_and_unknown_fields_are_ignored(client, db):
    sent = {"GROUPFLEXSCHEDULE_KEY": 21, "group_id": "G1", "Plan_Id": "P2",
            "CALENDAR_year": "2026", "schedule_date": "2026-05-05", "SCHEDULE_TYPE": "weekly",
            "color": "blue", "nested": {"a": [1, 2]}}
    response = put_batch(client, [sent])
    assert statuses(response) == [201] and ids(response) == [21]
    (row,) = rows(db)
    assert row["plan_id"] == "P2" and row["schedule_type"] == "WEEKLY"


def test_schedule_type_any_case_stored_upper(client, db):
    put_batch(client, [item(1, schedule_Type="semiMonthly")])
    assert rows(db)[0]["schedule_type"] == "SEMIMONTHLY"


def test_empty_array_gives_empty_data(client, db):
    response = put_batch(client, [])
    assert response.status_code == 207
    assert response.get_json()["data"] == []


def test_all_items_failing_is_still_207(client, db):
    response = put_batch(client, [item(1, plan_ID="P9"), {"x": 1}])
    assert response.status_code == 207
    assert statuses(response) == [422, 400]


def test_atomic_failure_writes_nothing_and_answers_424(client, db):
    put_batch(client, [item(30)])
    before = rows(db)
    response = put_batch(client, [item(30, plan_ID="P2"), item(31), item(32, plan_ID="P9"),
                                  item(0), {"bad": 1}], query="atomic=true")
    assert statuses(response) == [424, 424, 422, 424, 400]
    assert "atomic" in results(response)[0]["body"]
    assert ids(response)[:4] == [30, 31, 32, 0]
    assert rows(db) == before


def test_atomic_success_writes_everything(client, db):
    response = put_batch(client, [item(40), item(41), item(40, plan_ID="P2")], query="atomic=true")
    assert statuses(response) == [201, 201, 200]
    assert [(r["group_flex_schedule_key"], r["plan_id"]) for r in rows(db)] == [
        (40, "P2"), (41, "P1")]


def test_dry_run_computes_results_and_writes_nothing(client, db):
    put_batch(client, [item(60)])
    before = rows(db)
    response = put_batch(client, [item(60, plan_ID="P2"), item(61), item(61), item(0),
                                  item(62, plan_ID="P9")], query="dryRun=true")
    assert statuses(response) == [200, 201, 200, 201, 422]
    assert ids(response)[3] == 0
    assert rows(db) == before


def test_dry_run_does_not_consume_server_keys(client, db):
    put_batch(client, [item(0)] * 3, query="dryRun=true")
    response = put_batch(client, [item(0)])
    assert ids(response) == [1]


@pytest.mark.parametrize("query", ["atomic=maybe", "dryRun=2"])
def test_invalid_query_option_is_400(client, query):
    response = put_batch(client, [item(1)], query=query)
    assert response.status_code == 400
    assert response.get_json()["error"]["status"] == 400


def test_unexpected_failure_of_one_item_is_500_for_that_item_only(client, db):
    db.execute("INSERT INTO group_flex VALUES ('G1', 'BOOM', '2026', '2026-01-01', '2026-12-31')")
    db.execute("ALTER TABLE group_flex_schedule ADD CONSTRAINT test_no_boom "
               "CHECK (plan_id <> 'BOOM')")
    try:
        response = put_batch(client, [item(1), item(2, plan_ID="BOOM"), item(3)])
        assert statuses(response) == [201, 500, 201]
        body = results(response)[1]["body"]
        assert "test_no_boom" not in body and "CHECK" not in body and "INSERT" not in body
        assert [r["group_flex_schedule_key"] for r in rows(db)] == [1, 3]

        atomic = put_batch(client, [item(4), item(5, plan_ID="BOOM")], query="atomic=true")
        assert statuses(atomic) == [424, 500]
        assert [r["group_flex_schedule_key"] for r in rows(db)] == [1, 3]
    finally:
        db.execute("ALTER TABLE group_flex_schedule DROP CONSTRAINT test_no_boom")


def test_batch_of_many_items_in_one_call(client, db):
    response = put_batch(client, [item(k) for k in range(1, 2001)])
    assert statuses(response) == [201] * 2000
    response = put_batch(client, [item(k, plan_ID="P2") for k in range(1, 2001)] + [item(0)])
    assert statuses(response) == [200] * 2000 + [201]
    assert db.execute("SELECT count(*), count(*) FILTER (WHERE plan_id = 'P2') "
                      "FROM group_flex_schedule").fetchone() == (2001, 2000)
