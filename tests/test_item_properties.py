"""Property test over the item schema, end to end against PostgreSQL (hypothesis).

For ANY batch of JSON values (mostly near-valid items with one or more fields spoiled, plus
arbitrary JSON), the endpoint answers 207, every item's status is one of 200/201/400/409/422 (or
424 in atomic mode) and never 500, every status is the one an independent oracle written here
predicts, and the database then holds exactly the last valid write of every key, nothing else.
Rule-based types store the calculated date (SPEC §8), which the oracle states independently.
"""

from __future__ import annotations

import calendar
import json
from datetime import date, datetime, time, timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import seed_groups
from tests.helpers import headers

URL = "/groups/G1/flex-schedules-batch"
MAX_KEY = 2_147_483_647
PARENTS = {("P1", "2026"), ("P2", "2026")}          # G1's GroupFlex rows (conftest.seed_groups)
TYPES = {"CUSTOM", "WEEKLY", "BIWEEKLY", "SEMIMONTHLY", "MONTHLY", "QUARTERLY"}
FOREIGN_KEY = 7                                      # a row of group G2, seeded per example
DATES = {   # text -> the UTC value it stores (None: invalid)
    "2026-01-15": datetime(2026, 1, 15), "2026-01-15T08:30:00": datetime(2026, 1, 15, 8, 30),
    "2026-01-15 00:00:00 UTC": datetime(2026, 1, 15),
    "2026-01-15 00:00:00 -0500": datetime(2026, 1, 15, 5),
    "2026-01-15T23:00:00+05:00": datetime(2026, 1, 15, 18),
    "2026-12-31T23:59:59.5Z": datetime(2026, 12, 31, 23, 59, 59, 500000),
    "2026-02-29": None, "2026-1-15": None, "15/01/2026": None, "2026-01-15T24:00:00": None,
    "": None, "2026-01-15Z": None, "0000-01-01": None, "2026-01-15\n": None,
}

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False,
                      allow_infinity=False), st.text(max_size=8))
json_any = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)
tricky_text = st.lists(st.sampled_from(["a", "Z", "1", "P", " ", "\x00", "\ud800", "é", "ß",
                                        "😀", "'", ";", "-", "%"]), max_size=22).map("".join)

FIELDS = {
    "groupFlexSchedule_Key": st.one_of(
        st.integers(0, 24), st.sampled_from([FOREIGN_KEY, MAX_KEY - 1, MAX_KEY + 1, -1, 2**64]),
        st.booleans(), st.floats(), st.text(max_size=3), json_any),
    "group_ID": st.one_of(st.sampled_from(["G1"] * 6 + ["G2", "g1", "G1 ", ""]), tricky_text,
                          json_any),
    "plan_ID": st.one_of(st.sampled_from(["P1", "P1", "P2", "P3", "p1", "P" * 20, "P" * 21]),
                         tricky_text, json_any),
    "calendar_Year": st.one_of(st.sampled_from(["2026"] * 4 + ["2025", "20261", ""]),
                               tricky_text, json_any),
    "schedule_Date": st.one_of(st.sampled_from(sorted(DATES)), json_any),
    "schedule_Type": st.one_of(
        st.sampled_from(["MONTHLY", "weekly", "Custom", "DAILY", "ß" * 8, "ß" * 9, "x" * 17]),
        tricky_text, json_any),
}
SERVER_MANAGED = {"entry_Date": json_any, "entry_User": json_any, "update_Date": json_any,
                  "update_User": json_any, "unknownField": json_any}


@st.composite
def near_valid_item(draw) -> dict[str, Any]:
    """A valid item most of the time per field, with spoiled, missing or re-cased fields."""
    result: dict[str, Any] = {}
    valid = {"groupFlexSchedule_Key": draw(st.integers(0, 8)), "group_ID": "G1",
             "plan_ID": draw(st.sampled_from(["P1", "P2", "P1", "P2", "P3"])),
             "calendar_Year": "2026",
             "schedule_Date": draw(st.sampled_from([d for d, v in DATES.items() if v])),
             "schedule_Type": draw(st.sampled_from(["MONTHLY", "weekly", "Custom", "MONTHLY",
                                                    "DAILY"]))}
    for name, strategy in FIELDS.items():
        choice = draw(st.integers(0, 24))
        wire = draw(st.sampled_from([name, name.lower(), name.upper()]))
        if choice == 0:
            continue                        # missing
        result[wire] = draw(strategy) if choice == 1 else valid[name]
    for name, strategy in SERVER_MANAGED.items():
        if draw(st.booleans()):
            result[name] = draw(strategy)
    return result


batches = st.lists(st.one_of(near_valid_item(), near_valid_item(), near_valid_item(), json_any),
                   max_size=12)


def _text(value: Any, max_length: int) -> str | None:
    """The oracle's idea of a storable string field (None: invalid)."""
    if not isinstance(value, str) or not 1 <= len(value) <= max_length or "\x00" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def oracle_load(raw: Any) -> dict[str, Any] | None:
    """An independent statement of SPEC §4's rules: the loaded item, or None for a 400."""
    if not isinstance(raw, dict):
        return None
    fields = {name.lower(): value for name, value in raw.items()}
    key = fields.get("groupflexschedule_key")
    if type(key) is not int or not 0 <= key <= MAX_KEY:
        return None
    group, plan = _text(fields.get("group_id"), 20), _text(fields.get("plan_id"), 20)
    year = _text(fields.get("calendar_year"), 4)
    schedule_type = fields.get("schedule_type")
    schedule_type = _text(schedule_type.upper() if isinstance(schedule_type, str) else None, 16)
    date = fields.get("schedule_date")
    date = DATES.get(date) if isinstance(date, str) else None
    if None in (group, plan, year, schedule_type, date) or group != "G1":
        return None
    # A string value outside DATES would make the oracle guess; the strategies never send one
    # that parses, except through json_any's short text, which never looks like a date.
    return {"key": key, "plan": plan, "year": year, "type": schedule_type, "date": date}


ANCHOR, TERM = date(2026, 1, 1), date(2026, 12, 31)   # every seeded GroupFlex: no first payment


def calculated(schedule_type: str, sent: datetime) -> datetime | None:
    """SPEC §8 for the seeded GroupFlex rows, stated without a recurrence library: the date
    stored for ``sent`` (CUSTOM: as sent), or None past the end of the series (a 422)."""
    day = sent.date()
    if schedule_type == "CUSTOM":
        return sent
    if schedule_type in ("WEEKLY", "BIWEEKLY"):          # from Thursday 2026-01-01
        step = 7 if schedule_type == "WEEKLY" else 14
        result = day + timedelta(days=-(day - ANCHOR).days % step)
    elif schedule_type in ("MONTHLY", "QUARTERLY"):      # the 1st of every (third) month
        months = range(1, 13) if schedule_type == "MONTHLY" else (1, 4, 7, 10)
        result = next((date(2026, m, 1) for m in months if date(2026, m, 1) >= day), TERM
                      + timedelta(days=1))
    else:                                                # SEMIMONTHLY: the 15th, the last day
        last = calendar.monthrange(day.year, day.month)[1]
        result = day.replace(day=15) if day.day <= 15 else day.replace(day=last)
    return datetime.combine(result, time()) if result <= TERM else None


def expected_outcome(batch: list[Any], atomic: bool) -> tuple[list[int], dict[int, tuple]]:
    """Statuses in request order and the rows after, applying items one by one."""
    owners = {FOREIGN_KEY: "G2"}
    final: dict[int, tuple] = {}
    statuses = []
    for raw in batch:
        loaded = oracle_load(raw)
        if loaded is None:
            statuses.append(400)
            continue
        key = loaded["key"]
        if key and owners.get(key, "G1") != "G1":
            statuses.append(409)
        elif (loaded["plan"], loaded["year"]) not in PARENTS or loaded["type"] not in TYPES:
            statuses.append(422)
        elif (stored := calculated(loaded["type"], loaded["date"])) is None:
            statuses.append(422)
        else:
            created = key == 0 or key not in owners
            statuses.append(201 if created else 200)
            row = (loaded["plan"], loaded["type"], stored)
            if key:
                owners[key] = "G1"
                final[key] = row
            else:
                final[-len(statuses)] = row   # placeholder: the server picks the key
    if atomic and any(s >= 400 for s in statuses):
        return [424 if s < 400 else s for s in statuses], {}
    return statuses, final


def reset(db) -> None:
    db.execute("TRUNCATE group_flex_schedule, group_flex, groups RESTART IDENTITY CASCADE")
    seed_groups(db)
    db.execute("INSERT INTO group_flex_schedule (group_flex_schedule_key, group_id, plan_id, "
               "calendar_year, schedule_date, schedule_type, entry_date, update_date) VALUES "
               "(%s, 'G2', 'P1', '2026', '2026-01-01', 'MONTHLY', now(), now())",
               (FOREIGN_KEY,))


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=batches, atomic=st.booleans(), dry_run=st.booleans())
def test_any_batch_gets_exactly_the_predicted_statuses_and_rows(client, db, batch, atomic,
                                                                 dry_run):
    reset(db)
    query = "?" + "&".join(name for name, on in (("atomic=true", atomic), ("dryRun=true", dry_run))
                           if on)
    # The stdlib encoder writes lone surrogates and big integers, which orjson would refuse.
    response = client.put(URL + query, data=json.dumps(batch), headers=headers())
    assert response.status_code == 207, response.get_data()[:500]
    results = response.get_json()["data"]
    expected, final = expected_outcome(batch, atomic)
    assert [r["status"] for r in results] == expected, (batch, results)
    for status in sorted(set(expected)):
        event(f"item status {status}")
    stored = {key: (plan, stype, date) for key, plan, stype, date in db.execute(
        "SELECT group_flex_schedule_key, plan_id, schedule_type, schedule_date "
        "FROM group_flex_schedule WHERE group_id = 'G1'")}
    foreign = db.execute("SELECT group_id FROM group_flex_schedule WHERE "
                         "group_flex_schedule_key = %s", (FOREIGN_KEY,)).fetchone()
    assert foreign == ("G2",)                          # never moved, never changed
    if dry_run:
        assert stored == {}
        return
    # Server-assigned keys: the id each key-0 item reports holds that item's row.
    for position, result in enumerate(results, start=1):
        if -position in final:
            assigned = result["id"][0]["value"]
            assert assigned > 0 and assigned not in final
            final[assigned] = final.pop(-position)
    assert stored == final


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=json_any)
def test_any_json_body_is_a_207_or_a_400_and_never_writes_junk(client, db, body):
    reset(db)
    response = client.put(URL, data=json.dumps(body), headers=headers())
    if isinstance(body, list):
        assert response.status_code == 207
        expected, final = expected_outcome(body, atomic=False)
        assert [r["status"] for r in response.get_json()["data"]] == expected
    else:
        assert response.status_code == 400
        assert response.get_json()["error"]["status"] == 400
    (count,) = db.execute("SELECT count(*) FROM group_flex_schedule").fetchone()
    assert count == 1 + (len(final) if isinstance(body, list) else 0)
