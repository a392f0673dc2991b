"""The rest of the resource: list, get, put, post, delete one GroupFlexSchedule (real PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.helpers import GROUP, OTHER_GROUP, headers, item, put_batch, rows, statuses

BASE = f"/groups/{GROUP}/flex-schedules"


def problem(response, status: int) -> dict:
    """Assert a whole-request problem in the standard envelope; return its ``error``."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["data"] is None
    assert body["error"]["status"] == status
    assert body["debug"]["activityID"]
    assert response.content_type == "application/problem+json"
    return body["error"]


def seed(client, items, group: str = GROUP) -> None:
    response = put_batch(client, items, group=group)
    assert response.status_code == 207
    assert all(s in (200, 201) for s in statuses(response)), response.get_json()


def keys(response) -> list[int]:
    assert response.status_code == 200, response.get_json()
    return [r["groupFlexSchedule_Key"] for r in response.get_json()["data"]]


# --- GET list --------------------------------------------------------------------------------

def test_list_renders_the_groups_records_with_the_seeds_names(client, db):
    seed(client, [item(3, schedule_Date="2026-03-15 00:00:00 -0500", schedule_Type="CUSTOM"),
                  item(1)])
    seed(client, [item(2, group_ID=OTHER_GROUP)], group=OTHER_GROUP)
    response = client.get(BASE, headers=headers())
    assert keys(response) == [1, 3]  # G2's key 2 is not listed
    body = response.get_json()
    assert body["error"] is None and body["debug"]["activityID"]
    record = body["data"][1]
    assert list(record) == ["groupFlexSchedule_Key", "calendar_Year", "group_ID", "plan_ID",
                            "schedule_Date", "schedule_Type", "entry_Date", "entry_User",
                            "update_Date", "update_User"]
    assert record["schedule_Date"] == "2026-03-15T05:00:00"  # UTC, no offset
    assert record["entry_User"] == "alice" and record["update_User"] == "alice"
    assert "+" not in record["entry_Date"] and not record["entry_Date"].endswith("Z")
    assert response.headers["X-Total-Count"] == "2"


def test_list_of_a_group_without_records_is_empty(client, db):
    response = client.get(BASE, headers=headers())
    assert response.status_code == 200
    assert response.get_json()["data"] == []
    assert response.headers["X-Total-Count"] == "0"


def test_list_pages_in_a_stable_order(client, db):
    seed(client, [item(k) for k in range(1, 8)])
    first = client.get(f"{BASE}?pageSize=3", headers=headers())
    assert keys(first) == [1, 2, 3]
    assert first.headers["X-Total-Count"] == "7"
    link = first.headers["Link"]
    assert 'rel="next"' in link and "page=2" in link and 'rel="prev"' not in link
    assert keys(client.get(f"{BASE}?page=2&pageSize=3", headers=headers())) == [4, 5, 6]
    last = client.get(f"{BASE}?page=3&pageSize=3", headers=headers())
    assert keys(last) == [7]
    assert 'rel="next"' not in last.headers["Link"]
    past = client.get(f"{BASE}?page=9&pageSize=3", headers=headers())
    assert keys(past) == []
    assert past.headers["X-Total-Count"] == "7"


def test_list_sorts_by_fields_with_the_key_as_tiebreaker(client, db):
    # 2026-10-01 is both a MONTHLY and a WEEKLY date (the 1st, a Thursday like the anchor).
    seed(client, [item(1, schedule_Date="2026-02-01"), item(2, schedule_Date="2026-10-01"),
                  item(3, schedule_Date="2026-02-01", plan_ID="P2"),
                  item(4, schedule_Date="2026-10-01", schedule_Type="weekly")])
    by_date_desc = client.get(f"{BASE}?sortBy=schedule_Date:desc", headers=headers())
    assert keys(by_date_desc) == [2, 4, 1, 3]
    explicit = client.get(f"{BASE}?sortBy=schedule_Date:desc,groupFlexSchedule_Key:desc",
                          headers=headers())
    assert keys(explicit) == [4, 2, 3, 1]
    # Field names and directions in any case, like the body's field names.
    mixed = client.get(f"{BASE}?sortBy=PLAN_id:DESC,Schedule_Type", headers=headers())
    assert keys(mixed) == [3, 1, 2, 4]
    assert "sortBy=PLAN_id" in client.get(f"{BASE}?sortBy=PLAN_id:DESC&pageSize=1",
                                          headers=headers()).headers["Link"]


def test_list_filters_by_plan_year_and_type(client, db):
    db.execute("INSERT INTO group_flex VALUES ('G1', 'P1', '2027', '2027-01-01', '2027-12-31')")
    seed(client, [item(1), item(2, plan_ID="P2"), item(3, schedule_Type="weekly"),
                  item(4, calendar_Year="2027", schedule_Date="2027-02-01"),
                  item(5, plan_ID="P2", schedule_Type="WEEKLY"), item(6, schedule_Type="CUSTOM")])
    seed(client, [item(7, group_ID=OTHER_GROUP, schedule_Type="WEEKLY")], group=OTHER_GROUP)

    def listed(query: str) -> tuple[list[int], str]:
        response = client.get(f"{BASE}?{query}", headers=headers())
        return keys(response), response.headers["X-Total-Count"]

    assert listed("plan_ID=P2") == ([2, 5], "2")
    assert listed("calendar_Year=2027") == ([4], "1")
    assert listed("schedule_Type=weekly") == ([3, 5], "2")        # any case, as on writes
    assert listed("schedule_Type=WEEKLY&plan_ID=P1&calendar_Year=2026") == ([3], "1")
    assert listed("PLAN_id=P2&Schedule_type=Weekly") == ([5], "1")  # names in any case too
    assert listed("plan_ID=p2") == ([], "0")                        # plan and year: exact
    assert listed("plan_ID=P1' OR '1'='1") == ([], "0")
    assert listed("schedule_Type=MONTHLY&pageSize=1&page=2&sortBy=groupFlexSchedule_Key:desc"
                  ) == ([2], "3")
    link = client.get(f"{BASE}?plan_ID=P1&schedule_Type=monthly&pageSize=1",
                      headers=headers()).headers["Link"]
    assert "plan_ID=P1" in link and "schedule_Type=MONTHLY" in link and "page=2" in link


@pytest.mark.parametrize("query", ["plan_ID=" + "P" * 21, "calendar_Year=20266",
                                   "schedule_Type=" + "X" * 17, "plan_ID=", "plan_ID=P%00"])
def test_list_filter_values_are_validated(client, db, query):
    error = problem(client.get(f"{BASE}?{query}", headers=headers()), 400)
    assert query.split("=")[0] in error["detail"]


def test_list_can_be_repeated_many_times(client, db):
    """The same queries over and over on a pooled connection; answers stay right."""
    seed(client, [item(1), item(2)])
    for _ in range(12):
        assert keys(client.get(f"{BASE}?sortBy=schedule_Date", headers=headers())) == [1, 2]


@pytest.mark.parametrize("query", [
    "sortBy=nope", "sortBy=schedule_Date:sideways", "sortBy=schedule_Date,schedule_Date:desc",
    "sortBy=schedule_Date;DROP TABLE groups", "sortBy=group_flex_schedule_key",
    "sortBy=,", "page=0", "page=abc", "page=2147483648", "pageSize=0", "pageSize=1001",
    "pageSize=1.5",
])
def test_list_rejects_bad_query_options(client, db, query):
    error = problem(client.get(f"{BASE}?{query}", headers=headers()), 400)
    if "sortBy" in query:
        assert "sortBy" in error["detail"]
    assert client.get(BASE, headers=headers()).status_code == 200  # nothing broke


def test_list_unknown_sort_field_names_the_sortable_ones(client, db):
    error = problem(client.get(f"{BASE}?sortBy=nope", headers=headers()), 400)
    assert "'nope'" in error["detail"] and "schedule_Date" in error["detail"]


def test_list_of_a_missing_group_is_404(client, db):
    error = problem(client.get("/groups/NOPE/flex-schedules", headers=headers()), 404)
    assert error["detail"] == "The group does not exist."


def test_list_needs_credentials_and_a_tenant(client, db):
    problem(client.get(BASE, headers=headers(key=None)), 401)
    problem(client.get(BASE, headers=headers(database=None)), 400)
    problem(client.get(BASE, headers=headers(database="nope")), 403)
    problem(client.get(BASE, headers=headers(database="other")), 403)
    problem(client.get("/groups/" + "X" * 21 + "/flex-schedules", headers=headers()), 400)


# --- GET one ---------------------------------------------------------------------------------

def test_get_one_record(client, db):
    seed(client, [item(5, schedule_Type="biweekly", schedule_Date="2026-04-01T10:30:00Z"),
                  item(6, schedule_Type="custom", schedule_Date="2026-04-01T10:30:00Z")])
    response = client.get(f"{BASE}/5", headers=headers())
    assert response.status_code == 200
    record = response.get_json()["data"]
    assert record["groupFlexSchedule_Key"] == 5
    assert record["group_ID"] == GROUP and record["plan_ID"] == "P1"
    assert record["calendar_Year"] == "2026"
    assert record["schedule_Type"] == "BIWEEKLY"
    # Calculated (SPEC §8): the first BIWEEKLY date from the anchor 2026-01-01 on or after Apr 1.
    assert record["schedule_Date"] == "2026-04-09T00:00:00"
    custom = client.get(f"{BASE}/6", headers=headers()).get_json()["data"]
    assert custom["schedule_Type"] == "CUSTOM"
    assert custom["schedule_Date"] == "2026-04-01T10:30:00"   # as sent


def test_get_missing_or_other_groups_record_is_404(client, db):
    seed(client, [item(9, group_ID=OTHER_GROUP)], group=OTHER_GROUP)
    for key in (9, 10):
        error = problem(client.get(f"{BASE}/{key}", headers=headers()), 404)
        assert "No GroupFlexSchedule" in error["detail"]
    error = problem(client.get("/groups/NOPE/flex-schedules/9", headers=headers()), 404)
    assert error["detail"] == "The group does not exist."


@pytest.mark.parametrize("key", ["abc", "0", "-1", "1.5", "2147483648", "99999999999999999999",
                                 "%C2%B2"])
def test_get_with_an_invalid_key_is_400(client, db, key):
    error = problem(client.get(f"{BASE}/{key}", headers=headers()), 400)
    assert "key in the path" in error["detail"]


# --- PUT one ---------------------------------------------------------------------------------

def test_put_updates_an_existing_record(client, db):
    seed(client, [item(4)])
    before = rows(db)[0]
    response = client.put(f"{BASE}/4", headers=headers(user="bob"),
                          json=item(4, schedule_Date="2026-05-01 00:00:00 UTC",
                                    schedule_Type="quarterly", plan_ID="P2",
                                    entry_User="mallory", entry_Date="2000-01-01"))
    assert response.status_code == 200, response.get_json()
    record = response.get_json()["data"]
    # Calculated (SPEC §8): QUARTERLY from the anchor 2026-01-01 is Jan 1, Apr 1, Jul 1, Oct 1.
    assert record["schedule_Date"] == "2026-07-01T00:00:00"
    assert record["schedule_Type"] == "QUARTERLY" and record["plan_ID"] == "P2"
    assert record["entry_User"] == "alice" and record["update_User"] == "bob"
    (after,) = rows(db)
    assert after["entry_date"] == before["entry_date"] and after["entry_user"] == "alice"
    assert after["update_user"] == "bob" and after["plan_id"] == "P2"
    assert "Location" not in response.headers


def test_put_creates_a_missing_key_with_exactly_that_key(client, db):
    response = client.put(f"{BASE}/42", headers=headers(), json=item(42))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["data"]["groupFlexSchedule_Key"] == 42
    assert response.headers["Location"].endswith(f"{BASE}/42")
    (row,) = rows(db)
    assert row["group_flex_schedule_key"] == 42
    assert row["entry_date"] == row["update_date"] and row["entry_user"] == "alice"


def test_put_body_may_omit_the_key(client, db):
    body = item(0)
    del body["groupFlexSchedule_Key"]
    response = client.put(f"{BASE}/7", headers=headers(), json=body)
    assert response.status_code == 201
    assert [r["group_flex_schedule_key"] for r in rows(db)] == [7]


@pytest.mark.parametrize("body_key", [8, 0])
def test_put_body_key_must_match_the_path(client, db, body_key):
    error = problem(client.put(f"{BASE}/7", headers=headers(), json=item(body_key)), 400)
    assert "differs from the key in the path" in error["detail"]
    assert rows(db) == []


def test_put_key_field_matched_in_any_case(client, db):
    body = {k.lower(): v for k, v in item(7).items()}
    response = client.put(f"{BASE}/7", headers=headers(), json=body)
    assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize(("body", "field"), [
    (item(3, group_ID=OTHER_GROUP), "group_ID"),
    (item(3, schedule_Date="2026-02-30"), "schedule_Date"),
    (item(3, plan_ID="P" * 21), "plan_ID"),
    (item(3, calendar_Year="20266"), "calendar_Year"),
    (item(3, schedule_Type="a\x00b"), "schedule_Type"),
    (item(3, groupFlexSchedule_Key="3"), "groupFlexSchedule_Key"),
    (item(3, groupFlexSchedule_Key=True), "groupFlexSchedule_Key"),
])
def test_put_invalid_record_is_400_naming_the_field(client, db, body, field):
    error = problem(client.put(f"{BASE}/3", headers=headers(), json=body), 400)
    assert error["detail"].startswith("Invalid GroupFlexSchedule:")
    assert field in error["detail"]
    assert rows(db) == []


@pytest.mark.parametrize("body", [[item(3)], "text", 3, None])
def test_put_body_must_be_one_object(client, db, body):
    problem(client.put(f"{BASE}/3", headers=headers(), json=body), 400)


def test_put_malformed_json_and_content_type(client, db):
    problem(client.put(f"{BASE}/3", headers=headers(), data=b"{nope"), 400)
    problem(client.put(f"{BASE}/3", headers=headers(**{"Content-Type": "text/plain"}),
                       data=b"{}"), 415)
    response = client.put(f"{BASE}/3", headers=headers(**{"Content-Type": "text/json"}),
                          json=item(3))
    assert response.status_code == 201


def test_put_key_under_another_group_is_409_and_untouched(client, db):
    seed(client, [item(9, group_ID=OTHER_GROUP)], group=OTHER_GROUP)
    before = rows(db)
    error = problem(client.put(f"{BASE}/9", headers=headers(), json=item(9)), 409)
    assert "another group" in error["detail"]
    assert rows(db) == before


@pytest.mark.parametrize(("body", "names"), [
    (item(3, plan_ID="NOPE"), "plan_ID NOPE"),
    (item(3, calendar_Year="2025"), "calendar_Year 2025"),
    (item(3, schedule_Type="yearly"), "YEARLY"),
])
def test_put_missing_reference_is_422(client, db, body, names):
    error = problem(client.put(f"{BASE}/3", headers=headers(), json=body), 422)
    assert names in error["detail"]
    assert rows(db) == []


def test_put_into_a_missing_group_is_404(client, db):
    problem(client.put("/groups/NOPE/flex-schedules/3", headers=headers(),
                       json=item(3, group_ID="NOPE")), 404)
    assert rows(db) == []


def test_put_needs_credentials(client, db):
    problem(client.put(f"{BASE}/3", headers=headers(user=None), json=item(3)), 401)
    problem(client.put(f"{BASE}/3", headers=headers(database="other"), json=item(3)), 403)
    assert rows(db) == []


# --- POST ------------------------------------------------------------------------------------

def test_post_creates_with_a_server_assigned_key(client, db):
    response = client.post(BASE, headers=headers(), json=item(0, schedule_Type="Monthly"))
    assert response.status_code == 201, response.get_json()
    record = response.get_json()["data"]
    key = record["groupFlexSchedule_Key"]
    assert key > 0 and record["schedule_Type"] == "MONTHLY"
    assert response.headers["Location"].endswith(f"{BASE}/{key}")
    assert client.get(response.headers["Location"], headers=headers()).get_json()["data"] \
        == record
    (row,) = rows(db)
    assert row["group_flex_schedule_key"] == key and row["entry_user"] == "alice"


def test_post_without_a_key_and_next_to_explicit_keys(client, db):
    assert client.put(f"{BASE}/1", headers=headers(), json=item(1)).status_code == 201
    assert client.put(f"{BASE}/2", headers=headers(), json=item(2)).status_code == 201
    body = item(0)
    del body["groupFlexSchedule_Key"]
    created = [client.post(BASE, headers=headers(), json=body) for _ in range(2)]
    assert [r.status_code for r in created] == [201, 201]
    new_keys = {r.get_json()["data"]["groupFlexSchedule_Key"] for r in created}
    assert len(new_keys) == 2 and not new_keys & {1, 2}
    assert len(rows(db)) == 4


def test_post_with_an_explicit_key_is_400_and_writes_nothing(client, db):
    seed(client, [item(5)])
    before = rows(db)
    error = problem(client.post(BASE, headers=headers(), json=item(5, plan_ID="P2")), 400)
    assert "server-assigned key" in error["detail"] and "PUT" in error["detail"]
    problem(client.post(BASE, headers=headers(), json=item(77)), 400)
    assert rows(db) == before


def test_post_failures_are_whole_request_problems(client, db):
    problem(client.post(BASE, headers=headers(), json=item(0, schedule_Date="soon")), 400)
    problem(client.post(BASE, headers=headers(), json=item(0, plan_ID="NOPE")), 422)
    problem(client.post(BASE, headers=headers(), json=[item(0)]), 400)
    problem(client.post("/groups/NOPE/flex-schedules", headers=headers(),
                        json=item(0, group_ID="NOPE")), 404)
    problem(client.post(BASE, headers=headers(key=None), json=item(0)), 401)
    assert rows(db) == []


# --- DELETE ----------------------------------------------------------------------------------

def test_delete_removes_the_record(client, db):
    seed(client, [item(5), item(6)])
    response = client.delete(f"{BASE}/5", headers=headers())
    assert response.status_code == 204
    assert response.get_data() == b""
    assert [r["group_flex_schedule_key"] for r in rows(db)] == [6]
    problem(client.delete(f"{BASE}/5", headers=headers()), 404)
    problem(client.get(f"{BASE}/5", headers=headers()), 404)


def test_delete_never_touches_another_groups_record(client, db):
    seed(client, [item(9, group_ID=OTHER_GROUP)], group=OTHER_GROUP)
    problem(client.delete(f"{BASE}/9", headers=headers()), 404)
    assert [r["group_flex_schedule_key"] for r in rows(db)] == [9]
    problem(client.delete("/groups/NOPE/flex-schedules/9", headers=headers()), 404)
    problem(client.delete(f"{BASE}/9", headers=headers(key=None)), 401)
    problem(client.delete(f"{BASE}/abc", headers=headers()), 400)
    assert len(rows(db)) == 1


def test_unsupported_method_is_405_in_the_envelope(client, db):
    error = problem(client.patch(f"{BASE}/1", headers=headers(), json={}), 405)
    assert error["title"] == "Method Not Allowed"
