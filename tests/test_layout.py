"""SPEC §8: PUT /groups/{groupID}/flexes/{planID}/{calendarYear}/schedule lays out a year."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date, datetime, timedelta

import psycopg
import pytest

from flexsvc import create_app
from flexsvc.config import settings_from_mapping
from flexsvc.ops.embedded import free_port
from tests.conftest import settings_mapping
from tests.helpers import headers, rows

URL = "/groups/G1/flexes/P1/2026/schedule"
LAYOUT_ROUTE = "/groups/<path:group_id>/flexes/<plan_id>/<calendar_year>/schedule"


def lay_out(client, body, url: str = URL, query: str = "", **header_args):
    return client.put(url + (f"?{query}" if query else ""), json=body,
                      headers=headers(**header_args))


def answer(response) -> list[tuple[int, object, str, str]]:
    """(status, key, schedule_Date, body) per result, checking the envelope on the way."""
    assert response.status_code == 207, response.get_json()
    envelope = response.get_json()
    assert envelope["error"] is None and envelope["debug"]["activityID"]
    found = []
    for result in envelope["data"]:
        key_pair, date_pair = result["id"]
        assert key_pair["key"] == "groupFlexSchedule_Key" and date_pair["key"] == "schedule_Date"
        found.append((result["status"], key_pair["value"], date_pair["value"], result["body"]))
    return found


def problem(response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["data"] is None and body["error"]["status"] == status
    assert response.content_type == "application/problem+json"
    for fragment in fragments:
        assert fragment in body["error"]["detail"], body["error"]["detail"]
    return body["error"]["detail"]


def insert(db, key: int, when: str, schedule_type: str, plan: str = "P1", group: str = "G1"):
    db.execute("INSERT INTO group_flex_schedule (group_flex_schedule_key, group_id, plan_id, "
               "calendar_year, schedule_date, schedule_type, entry_date, entry_user, update_date, "
               "update_user) VALUES (%s, %s, %s, '2026', %s, %s, now(), 'seed', now(), 'seed')",
               (key, group, plan, when, schedule_type))


def stored(db, where: str = "plan_id = 'P1' AND group_id = 'G1'") -> list[tuple]:
    return [(r["group_flex_schedule_key"], r["schedule_date"].isoformat(), r["schedule_type"])
            for r in sorted(rows(db, where), key=lambda r: (r["schedule_date"],
                                                             r["group_flex_schedule_key"]))]


def first_payment_date(db, plan: str = "P1") -> date | None:
    return db.execute("SELECT first_payment_date FROM group_flex WHERE group_id = 'G1' AND "
                      "plan_id = %s", (plan,)).fetchone()[0]


def biweekly_from_jan_9() -> list[str]:
    return [(datetime(2026, 1, 9) + timedelta(days=14 * i)).isoformat() for i in range(26)]


@pytest.fixture
def schedule_types(db) -> Iterator[psycopg.Connection]:
    yield db
    db.execute("DELETE FROM group_flex_schedule")
    db.execute("DELETE FROM flex_schedule_type WHERE schedule_type NOT IN ('CUSTOM', 'WEEKLY', "
               "'BIWEEKLY', 'SEMIMONTHLY', 'MONTHLY', 'QUARTERLY')")


# --- laying out -------------------------------------------------------------------------------

def test_lay_out_an_empty_year_creates_the_series_and_stores_the_anchor(client, db):
    response = lay_out(client, {"schedule_Type": "biweekly", "first_Payment_Date": "2026-01-09"})
    found = answer(response)
    assert [(s, d, b) for s, _, d, b in found] == [
        (201, when, "Created") for when in biweekly_from_jan_9()]
    keys = [k for _, k, _, _ in found]
    assert all(isinstance(k, int) and k > 0 for k in keys) and len(set(keys)) == 26
    assert stored(db) == [(k, when, "BIWEEKLY") for k, when in zip(keys, biweekly_from_jan_9(),
                                                                     strict=True)]
    assert first_payment_date(db) == date(2026, 1, 9)
    row = rows(db)[0]
    assert row["entry_user"] == row["update_user"] == "alice"
    assert row["entry_date"] == row["update_date"]


def test_laying_out_the_same_year_again_changes_nothing(client, db):
    first = answer(lay_out(client, {"schedule_Type": "BIWEEKLY",
                                    "first_Payment_Date": "2026-01-09"}))
    before = rows(db)
    again = answer(lay_out(client, {"schedule_Type": "BIWEEKLY"}, user="bob"))
    assert again == [(200, k, d, "Unchanged") for _, k, d, _ in first]
    assert rows(db) == before            # audit fields too: an unchanged row is not written


def test_switching_type_previews_with_dry_run_then_replaces_the_rule_based_rows(client, db):
    laid = answer(lay_out(client, {"schedule_Type": "BIWEEKLY",
                                   "first_Payment_Date": "2026-01-09"}))
    before = rows(db)
    monthly = [datetime(2026, m, 9).isoformat() for m in range(1, 13)]
    deleted = [(204, k, d, "Deleted") for _, k, d, _ in laid if d != monthly[0]]
    kept_jan_9 = laid[0][1]             # a BIWEEKLY row is of another type: deleted too
    preview = answer(lay_out(client, {"schedule_Type": "MONTHLY"}, query="dryRun=true"))
    assert preview == ([(201, 0, d, "Created") for d in monthly]
                       + [(204, kept_jan_9, monthly[0], "Deleted")] + deleted)
    assert rows(db) == before
    done = answer(lay_out(client, {"schedule_Type": "MONTHLY"}))
    assert [(s, d, b) for s, _, d, b in done] == [(s, d, b) for s, _, d, b in preview]
    created = [k for s, k, _, _ in done if s == 201]
    assert all(k > max(r["group_flex_schedule_key"] for r in before) for k in created)
    assert stored(db) == [(k, d, "MONTHLY") for k, d in zip(created, monthly, strict=True)]


def test_kept_created_and_deleted_rows(client, db):
    # MONTHLY from the effective date 2026-01-01: the 1st of every month.
    insert(db, 50, "2026-02-01", "MONTHLY")            # on the series: kept
    insert(db, 40, "2026-03-01", "MONTHLY")            # two on one date: the lowest key is kept
    insert(db, 45, "2026-03-01", "MONTHLY")
    insert(db, 41, "2026-03-02", "MONTHLY")            # off the series: deleted
    insert(db, 42, "2026-04-01 10:00", "MONTHLY")      # a time of day is off the series
    insert(db, 43, "2026-05-01", "WEEKLY")             # another rule-based type: deleted
    insert(db, 44, "2026-05-01", "CUSTOM")             # CUSTOM: never touched
    insert(db, 46, "2026-06-01", "MONTHLY", plan="P2")  # another GroupFlex: never touched
    insert(db, 47, "2026-06-01", "MONTHLY", group="G2")
    found = answer(lay_out(client, {"schedule_Type": "MONTHLY"}))
    by_date = {d: (s, k) for s, k, d, _ in found if s != 204}
    assert by_date["2026-02-01T00:00:00"] == (200, 50)
    assert by_date["2026-03-01T00:00:00"] == (200, 40)
    assert by_date["2026-04-01T00:00:00"][0] == 201
    assert by_date["2026-05-01T00:00:00"][0] == 201
    assert len(by_date) == 12
    assert [(s, k, d) for s, k, d, _ in found if s == 204] == [
        (204, 45, "2026-03-01T00:00:00"), (204, 41, "2026-03-02T00:00:00"),
        (204, 42, "2026-04-01T10:00:00"), (204, 43, "2026-05-01T00:00:00")]
    assert [s for s, *_ in found][:12] == [201, 200, 200] + [201] * 9
    after = stored(db)
    assert (44, "2026-05-01T00:00:00", "CUSTOM") in after
    assert {k for k, _, t in after if t == "MONTHLY"} >= {40, 50}
    assert not {41, 42, 43, 45} & {k for k, _, _ in after}
    assert len(stored(db, "plan_id = 'P2'")) == 1 and len(stored(db, "group_id = 'G2'")) == 1


def test_the_anchor_comes_from_the_stored_first_payment_date_else_effective_date(client, db):
    db.execute("UPDATE group_flex SET first_payment_date = '2026-01-31' WHERE plan_id = 'P1' "
               "AND group_id = 'G1'")
    found = answer(lay_out(client, {"schedule_Type": "QUARTERLY"}))
    assert [d for _, _, d, _ in found] == ["2026-01-31T00:00:00", "2026-04-30T00:00:00",
                                           "2026-07-31T00:00:00", "2026-10-31T00:00:00"]
    other = answer(lay_out(client, {"schedule_Type": "QUARTERLY", "first_payment_date": None},
                           url="/groups/G1/flexes/P2/2026/schedule"))
    assert [d for _, _, d, _ in other] == ["2026-01-01T00:00:00", "2026-04-01T00:00:00",
                                           "2026-07-01T00:00:00", "2026-10-01T00:00:00"]
    assert first_payment_date(db, "P2") is None   # null: the stored anchor (none) is kept


@pytest.mark.parametrize("sent, anchor", [
    ("2026-02-27", date(2026, 2, 27)), ("2026-02-27T00:00:00", date(2026, 2, 27)),
    ("2026-02-27 00:00:00 UTC", date(2026, 2, 27)),
    ("2026-02-26T22:00:00-05:00", date(2026, 2, 27)),   # its UTC day
])
def test_first_payment_date_forms_and_case_insensitive_names(client, db, sent, anchor):
    found = answer(lay_out(client, {"SCHEDULE_TYPE": "Weekly", "First_Payment_date": sent,
                                    "comment": "ignored"}))
    assert found[0][2] == f"{anchor.isoformat()}T00:00:00"
    assert first_payment_date(db) == anchor


def test_dry_run_writes_neither_rows_nor_the_anchor(client, db):
    found = answer(lay_out(client, {"schedule_Type": "WEEKLY", "first_Payment_Date": "2026-12-04"},
                           query="dryRun=true"))
    assert found == [(201, 0, d, "Created") for d in ("2026-12-04T00:00:00",
                                                       "2026-12-11T00:00:00",
                                                       "2026-12-18T00:00:00",
                                                       "2026-12-25T00:00:00")]
    assert rows(db) == [] and first_payment_date(db) is None


def test_an_operator_added_type_can_be_laid_out(client, schedule_types):
    schedule_types.execute("INSERT INTO flex_schedule_type VALUES ('FOURWEEKLY', 'Every four "
                           "weeks', 'FREQ=WEEKLY;INTERVAL=4')")
    found = answer(lay_out(client, {"schedule_Type": "fourweekly",
                                    "first_Payment_Date": "2026-01-02"}))
    assert len(found) == 13 and found[-1][2] == "2026-12-04T00:00:00"


# --- refusals -----------------------------------------------------------------------------------

def test_unknown_group_or_group_flex_is_404(client, db):
    problem(lay_out(client, {"schedule_Type": "WEEKLY"}, url="/groups/NOPE/flexes/P1/2026/schedule"),
            404, "group does not exist")
    for url in ("/groups/G1/flexes/P9/2026/schedule", "/groups/G1/flexes/P1/2027/schedule",
                "/groups/G2/flexes/P2/2026/schedule"):
        problem(lay_out(client, {"schedule_Type": "WEEKLY"}, url=url), 404, "GroupFlex")
    assert rows(db) == []


@pytest.mark.parametrize("body, fragments", [
    ({"schedule_Type": "CUSTOM"}, ["CUSTOM", "no rule"]),
    ({"schedule_Type": "custom"}, ["CUSTOM"]),
    ({"schedule_Type": "DAILY"}, ["DAILY", "does not exist"]),
    ({"schedule_Type": "WEEKLY", "first_Payment_Date": "2025-12-31"}, ["2025-12-31", "outside"]),
    ({"schedule_Type": "WEEKLY", "first_Payment_Date": "2027-01-01"}, ["2027-01-01", "outside"]),
])
def test_a_lay_out_the_group_flex_cannot_take_is_422_and_writes_nothing(client, db, body,
                                                                        fragments):
    insert(db, 5, "2026-03-03", "WEEKLY")
    before = rows(db)
    problem(lay_out(client, body), 422, *fragments)
    problem(lay_out(client, body, query="dryRun=true"), 422, *fragments)
    assert rows(db) == before and first_payment_date(db) is None


def test_a_type_without_a_usable_rule_is_422(client, schedule_types):
    schedule_types.execute("INSERT INTO flex_schedule_type VALUES ('BROKEN', 'x', 'FREQ=HOURLY'), "
                           "('HANDMADE', 'y', NULL)")
    problem(lay_out(client, {"schedule_Type": "BROKEN"}), 422, "BROKEN", "does not parse")
    problem(lay_out(client, {"schedule_Type": "HANDMADE"}), 422, "HANDMADE", "no rule")


def test_a_series_without_a_date_is_422(client, db):
    # Set by another system: an anchor after the term date.
    db.execute("UPDATE group_flex SET first_payment_date = '2027-02-01' WHERE plan_id = 'P1' "
               "AND group_id = 'G1'")
    problem(lay_out(client, {"schedule_Type": "WEEKLY"}), 422, "WEEKLY", "gives no date")


def test_no_keys_left_for_the_rows_to_create_is_409_and_writes_nothing(client, db):
    insert(db, 5, "2026-03-03", "MONTHLY")
    db.execute("SELECT setval(pg_get_serial_sequence('group_flex_schedule', "
               "'group_flex_schedule_key'), 2147483640)")        # 7 keys left, 52 needed
    before = rows(db)
    problem(lay_out(client, {"schedule_Type": "WEEKLY", "first_Payment_Date": "2026-01-05"}),
            409, "key sequence", "Nothing was written")
    assert rows(db) == before and first_payment_date(db) is None


@pytest.mark.parametrize("body", [
    [], "WEEKLY", None, {}, {"schedule_Type": ""}, {"schedule_Type": "X" * 17},
    {"schedule_Type": 5}, {"schedule_Type": "WEEKLY", "first_Payment_Date": "2026-02-30"},
    {"schedule_Type": "WEEKLY", "first_Payment_Date": "soon"},
    {"schedule_Type": "WEEKLY", "first_Payment_Date": 20260109},
    {"schedule_Type": "WE\u0000EKLY"},
])
def test_a_bad_body_is_400(client, db, body):
    problem(lay_out(client, body), 400, "lay-out" if isinstance(body, dict) else "JSON object")
    assert rows(db) == []


@pytest.mark.parametrize("url, fragment", [
    ("/groups/G1/flexes/" + "P" * 21 + "/2026/schedule", "planID"),
    ("/groups/G1/flexes/P1/20266/schedule", "calendarYear"),
    ("/groups/" + "G" * 21 + "/flexes/P1/2026/schedule", "groupID"),
])
def test_invalid_path_values_are_400(client, db, url, fragment):
    problem(lay_out(client, {"schedule_Type": "WEEKLY"}, url=url), 400, fragment)


def test_malformed_json_query_and_content_type(client, db):
    response = client.put(URL, data=b'{"schedule_Type": ', headers=headers())
    problem(response, 400, "Malformed JSON")
    problem(lay_out(client, {"schedule_Type": "WEEKLY"}, query="dryRun=maybe"), 400, "dryRun")
    response = client.put(URL, data=b'{"schedule_Type": "WEEKLY"}',
                          headers=headers(**{"Content-Type": "text/plain"}))
    problem(response, 415)
    assert rows(db) == []


def test_credentials_and_tenancy_like_every_route(client, db):
    response = lay_out(client, {"schedule_Type": "WEEKLY"}, key=None, user=None)
    problem(response, 401)
    assert response.headers["WWW-Authenticate"]
    problem(lay_out(client, {"schedule_Type": "WEEKLY"}, database="other"), 403)
    problem(lay_out(client, {"schedule_Type": "WEEKLY"}, key="other-tenant"), 403)
    problem(lay_out(client, {"schedule_Type": "WEEKLY"}, database=None), 400,
            "vbasoftware-database")
    assert rows(db) == []


def test_body_over_the_byte_limit_is_413(tenant_dsns, db):
    mapping = settings_mapping(tenant_dsns, limits={"max_items": 3, "max_body_bytes": 200})
    app = create_app(settings_from_mapping(mapping, environ={}))
    try:
        response = lay_out(app.test_client(), {"schedule_Type": "WEEKLY", "pad": "x" * 300})
        problem(response, 413)
    finally:
        app.extensions["flexsvc.pools"].close()


def test_unreachable_database_is_503(tenant_dsns, db):
    dsns = dict(tenant_dsns, down=f"postgresql://postgres@127.0.0.1:{free_port()}/down")
    mapping = settings_mapping(dsns, pool={"min_size": 0, "max_size": 2, "wait_timeout": 2.0,
                                           "connect_timeout": 2})
    app = create_app(settings_from_mapping(mapping, environ={}))
    try:
        response = lay_out(app.test_client(), {"schedule_Type": "WEEKLY"}, key="everything",
                           database="down")
        problem(response, 503, "nothing was written")
        assert int(response.headers["Retry-After"]) > 0
    finally:
        app.extensions["flexsvc.pools"].close()


# --- logs and metrics ---------------------------------------------------------------------------

def test_the_request_line_and_metrics_count_the_rows(client, db, caplog):
    insert(db, 5, "2026-03-03", "WEEKLY")
    before = client.get("/metrics").get_data(as_text=True)
    with caplog.at_level(logging.INFO, logger="flexsvc.request"):
        response = lay_out(client, {"schedule_Type": "QUARTERLY"})
    assert response.status_code == 207
    (line,) = [r for r in caplog.records if r.name == "flexsvc.request"]
    assert line.route == LAYOUT_ROUTE and line.status == 207 and line.database == "main"
    assert line.items == 5 and line.item_statuses == {"201": 4, "204": 1}
    after = client.get("/metrics").get_data(as_text=True)
    counted = f'flexsvc_http_requests_total{{method="PUT",route="{LAYOUT_ROUTE}",status="207"}}'
    assert counted in after
    assert sample(after, counted) == sample(before, counted) + 1
    results = 'flexsvc_batch_item_results_total{database="db1",status="204"}'
    assert sample(after, results) == sample(before, results) + 1


def sample(scrape: str, name: str) -> float:
    for line in scrape.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
