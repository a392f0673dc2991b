"""SPEC §8's recurrence rules as pure logic (no database): the series, clamping, the grammar."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from itertools import pairwise

import pytest
from dateutil.rrule import rrulestr
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsvc.rules.calculation import CannotCalculate, GroupFlexDates, ScheduleCalculator
from flexsvc.rules.recurrence import MAX_SERIES_DATES, RuleError, parse_rule

BUILT_IN = {
    "WEEKLY": "FREQ=WEEKLY",
    "BIWEEKLY": "FREQ=WEEKLY;INTERVAL=2",
    "SEMIMONTHLY": "FREQ=MONTHLY;BYMONTHDAY=15,-1",
    "MONTHLY": "FREQ=MONTHLY",
    "QUARTERLY": "FREQ=MONTHLY;INTERVAL=3",
}


def series(rule: str, anchor: str, end: str) -> list[str]:
    found = parse_rule(rule).series(date.fromisoformat(anchor), date.fromisoformat(end))
    assert not found.truncated
    return [d.isoformat() for d in found.dates]


# --- the built-in types ----------------------------------------------------------------------

def test_weekly_is_every_seventh_day_from_the_anchor_included():
    dates = series(BUILT_IN["WEEKLY"], "2026-01-01", "2026-12-31")   # a Thursday
    assert dates[:3] == ["2026-01-01", "2026-01-08", "2026-01-15"]
    assert dates[-1] == "2026-12-31" and len(dates) == 53
    assert {date.fromisoformat(d).weekday() for d in dates} == {3}


def test_biweekly_is_every_fourteenth_day_from_the_anchor():
    dates = series(BUILT_IN["BIWEEKLY"], "2026-01-09", "2026-12-31")  # a Friday
    assert dates[:3] == ["2026-01-09", "2026-01-23", "2026-02-06"]
    assert dates[-1] == "2026-12-25" and len(dates) == 26
    gaps = {(date.fromisoformat(b) - date.fromisoformat(a)).days
            for a, b in pairwise(dates)}
    assert gaps == {14}


@pytest.mark.parametrize("anchor, expected", [
    ("2026-01-01", ["2026-01-15", "2026-01-31", "2026-02-15", "2026-02-28", "2026-03-15"]),
    ("2026-01-15", ["2026-01-15", "2026-01-31", "2026-02-15", "2026-02-28", "2026-03-15"]),
    ("2026-01-16", ["2026-01-31", "2026-02-15", "2026-02-28", "2026-03-15", "2026-03-31"]),
    ("2026-01-31", ["2026-01-31", "2026-02-15", "2026-02-28", "2026-03-15", "2026-03-31"]),
    ("2024-02-16", ["2024-02-29", "2024-03-15", "2024-03-31", "2024-04-15", "2024-04-30"]),
])
def test_semimonthly_is_the_15th_and_the_last_day_on_or_after_the_anchor(anchor, expected):
    assert series(BUILT_IN["SEMIMONTHLY"], anchor, "2026-12-31")[:5] == expected


@pytest.mark.parametrize("anchor, expected", [
    ("2026-01-31", ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]),
    ("2026-01-30", ["2026-01-30", "2026-02-28", "2026-03-30", "2026-04-30", "2026-05-30"]),
    ("2026-01-29", ["2026-01-29", "2026-02-28", "2026-03-29", "2026-04-29", "2026-05-29"]),
    ("2024-01-31", ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30", "2024-05-31"]),
    ("2024-01-30", ["2024-01-30", "2024-02-29", "2024-03-30", "2024-04-30", "2024-05-30"]),
    ("2024-01-29", ["2024-01-29", "2024-02-29", "2024-03-29", "2024-04-29", "2024-05-29"]),
    ("2026-01-15", ["2026-01-15", "2026-02-15", "2026-03-15", "2026-04-15", "2026-05-15"]),
])
def test_monthly_keeps_the_anchors_day_and_clamps_to_month_end(anchor, expected):
    assert series(BUILT_IN["MONTHLY"], anchor, "2026-12-31")[:5] == expected


@pytest.mark.parametrize("anchor, expected", [
    ("2025-11-30", ["2025-11-30", "2026-02-28", "2026-05-30", "2026-08-30", "2026-11-30"]),
    ("2023-11-30", ["2023-11-30", "2024-02-29", "2024-05-30", "2024-08-30", "2024-11-30"]),
    ("2023-11-29", ["2023-11-29", "2024-02-29", "2024-05-29", "2024-08-29", "2024-11-29"]),
    ("2025-11-29", ["2025-11-29", "2026-02-28", "2026-05-29", "2026-08-29", "2026-11-29"]),
    ("2026-05-31", ["2026-05-31", "2026-08-31", "2026-11-30", "2027-02-28", "2027-05-31"]),
    ("2023-12-31", ["2023-12-31", "2024-03-31", "2024-06-30", "2024-09-30", "2024-12-31"]),
])
def test_quarterly_keeps_the_anchors_day_every_third_month(anchor, expected):
    assert series(BUILT_IN["QUARTERLY"], anchor, "2027-12-31")[:5] == expected


def test_the_series_ends_at_the_end_date_inclusive_and_is_empty_before_the_anchor():
    assert series("FREQ=MONTHLY", "2026-01-31", "2026-03-31") == [
        "2026-01-31", "2026-02-28", "2026-03-31"]
    assert series("FREQ=MONTHLY", "2026-01-31", "2026-03-30") == ["2026-01-31", "2026-02-28"]
    assert series("FREQ=MONTHLY", "2026-06-01", "2026-05-31") == []


# --- operator rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule, anchor, expected", [
    ("FREQ=WEEKLY;INTERVAL=4", "2026-01-02", ["2026-01-02", "2026-01-30", "2026-02-27"]),
    ("FREQ=YEARLY", "2024-02-29", ["2024-02-29", "2025-02-28", "2026-02-28"]),
    ("FREQ=YEARLY;BYMONTH=1,7", "2024-01-31", ["2024-01-31", "2024-07-31", "2025-01-31"]),
    ("FREQ=MONTHLY;BYMONTHDAY=30", "2026-01-01", ["2026-01-30", "2026-02-28", "2026-03-30"]),
    ("FREQ=MONTHLY;BYMONTHDAY=1,-31", "2026-04-01", ["2026-04-01", "2026-05-01", "2026-06-01"]),
    ("FREQ=MONTHLY;BYDAY=-1FR", "2026-01-01", ["2026-01-30", "2026-02-27", "2026-03-27"]),
    ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", "2026-01-01",
     ["2026-01-30", "2026-02-27", "2026-03-31"]),
    ("FREQ=DAILY;INTERVAL=10", "2026-01-01", ["2026-01-01", "2026-01-11", "2026-01-21"]),
    ("FREQ=WEEKLY;BYDAY=MO,FR", "2026-01-01", ["2026-01-02", "2026-01-05", "2026-01-09"]),
    ("FREQ=MONTHLY;COUNT=2", "2026-01-31", ["2026-01-31", "2026-02-28"]),
    ("rrule:freq=monthly; interval = 2", "2026-01-31", ["2026-01-31", "2026-03-31",
                                                         "2026-05-31"]),
])
def test_operator_rules(rule, anchor, expected):
    assert series(rule, anchor, "2026-12-31")[:3] == expected


@pytest.mark.parametrize("rule, fragment", [
    ("", "empty"), ("   ", "empty"), ("nonsense", "NAME=VALUE"), ("INTERVAL=2", "FREQ is required"),
    ("FREQ=HOURLY", "DAILY, WEEKLY, MONTHLY or YEARLY"), ("FREQ=SECONDLY", "DAILY"),
    ("FREQ=MINUTELY", "DAILY"), ("FREQ=FORTNIGHTLY", "DAILY"),
    ("FREQ=WEEKLY;UNTIL=20261231", "term date"), ("DTSTART=20260101;FREQ=WEEKLY", "anchor"),
    ("FREQ=DAILY;BYHOUR=9", "midnight"), ("FREQ=WEEKLY;FREQ=DAILY", "more than once"),
    ("FREQ=WEEKLY;INTERVAL=0", "INTERVAL"), ("FREQ=WEEKLY;INTERVAL=1001", "INTERVAL"),
    ("FREQ=WEEKLY;INTERVAL=1_0", "integers"), ("FREQ=WEEKLY;INTERVAL=-2", "INTERVAL"),
    ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY"), ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY"),
    ("FREQ=MONTHLY;BYMONTH=13", "BYMONTH"), ("FREQ=DAILY;BYMONTHDAY=3", "MONTHLY or YEARLY"),
    ("FREQ=WEEKLY;BYSETPOS=1;BYDAY=MO", "MONTHLY or YEARLY"),
    ("FREQ=MONTHLY;BYWEEKNO=3", "YEARLY"), ("FREQ=MONTHLY;BYSETPOS=-1", "another BYxxx"),
    ("FREQ=WEEKLY;BYDAY=XX", "weekday"), ("FREQ=WEEKLY;BYDAY=2MO", "numbered BYDAY"),
    ("FREQ=WEEKLY;WKST=XX", "dateutil"), ("FREQ=WEEKLY;BYEASTER=0", "not an accepted"),
    ("FREQ=WEEKLY;X-NAME=1", "not an accepted"), ("FREQ=WEEKLY;COUNT=0", "COUNT"),
    ("FREQ=WEEKLY\nDTSTART:20260101", "not accepted"), ("FREQ=WEEKLY;", "NAME=VALUE"),
])
def test_rules_outside_the_grammar_are_refused_with_a_reason(rule, fragment):
    with pytest.raises(RuleError, match=fragment):
        parse_rule(rule)


def test_a_rule_that_never_matches_gives_an_empty_series():
    # dateutil alone would search every month up to the year 9999 for February 31st.
    for rule in ("FREQ=MONTHLY;BYMONTH=2;BYDAY=FR;BYMONTHDAY=31", "FREQ=DAILY;INTERVAL=7;BYDAY=MO",
                 "FREQ=YEARLY;BYYEARDAY=366;BYMONTH=1", "FREQ=MONTHLY;INTERVAL=2;BYMONTH=2"):
        assert series(rule, "2026-01-06", "2026-12-31") == []


def test_a_series_is_bounded_in_dates_and_in_years():
    daily = parse_rule("FREQ=DAILY").series(date(2026, 1, 1), date(9999, 12, 31))
    assert daily.truncated and len(daily.dates) == MAX_SERIES_DATES
    assert daily.dates[-1] == date(2026, 1, 1) + timedelta(days=MAX_SERIES_DATES - 1)
    yearly = parse_rule("FREQ=YEARLY").series(date(2026, 3, 1), date(9999, 12, 31))
    assert not yearly.truncated and yearly.dates[-1] == date(2426, 3, 1)   # 400 years at most
    assert parse_rule("FREQ=WEEKLY").series(date(9999, 12, 24), date(9999, 12, 31)).dates == (
        date(9999, 12, 24), date(9999, 12, 31))
    assert parse_rule("FREQ=MONTHLY").series(date(1, 1, 31), date(1, 3, 31)).dates == (
        date(1, 1, 31), date(1, 2, 28), date(1, 3, 31))


# --- against dateutil itself ------------------------------------------------------------------

anchors = st.dates(min_value=date(1900, 1, 1), max_value=date(2300, 12, 31))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(anchor=anchors, interval=st.integers(1, 12))
def test_month_end_clamping_equals_the_bysetpos_idiom(anchor, interval):
    """The known RFC 5545 idiom for "the anchor's day, or the month's last day" is
    BYMONTHDAY=28..d;BYSETPOS=-1; clamping on top of dateutil must give the same dates."""
    end = anchor + timedelta(days=800)
    ours = parse_rule(f"FREQ=MONTHLY;INTERVAL={interval}").series(anchor, end).dates
    days = ",".join(str(d) for d in range(28, anchor.day + 1))
    idiom = (f"FREQ=MONTHLY;INTERVAL={interval};BYMONTHDAY={days};BYSETPOS=-1"
             if anchor.day > 28 else f"FREQ=MONTHLY;INTERVAL={interval}")
    theirs = rrulestr(idiom, dtstart=datetime.combine(anchor, datetime.min.time()))
    assert ours == tuple(d.date() for d in theirs.between(
        datetime.combine(anchor, datetime.min.time()), datetime.combine(end, datetime.min.time()),
        inc=True))


plain_rules = st.sampled_from([
    "FREQ=WEEKLY", "FREQ=WEEKLY;INTERVAL=2", "FREQ=WEEKLY;INTERVAL=4;WKST=SU",
    "FREQ=DAILY;INTERVAL=3", "FREQ=WEEKLY;BYDAY=MO,TH", "FREQ=MONTHLY;BYDAY=2TU",
    "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", "FREQ=YEARLY;BYWEEKNO=10;BYDAY=WE",
    "FREQ=MONTHLY;BYMONTHDAY=1,15", "FREQ=MONTHLY;BYMONTHDAY=-1", "FREQ=MONTHLY;INTERVAL=3",
    "FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=10,20",
])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(rule=plain_rules, anchor=st.dates(min_value=date(1, 1, 1), max_value=date(9998, 1, 1)),
       days=st.integers(0, 1500))
def test_where_nothing_is_clamped_the_series_is_dateutils(rule, anchor, days):
    """Also checks the 400-year shift the series is computed with (the calendar's cycle)."""
    if rule == "FREQ=MONTHLY;INTERVAL=3" and anchor.day > 28:
        anchor = anchor.replace(day=28)
    end = min(anchor + timedelta(days=days), date(9999, 12, 31))
    start = datetime.combine(anchor, datetime.min.time())
    expected = tuple(d.date() for d in rrulestr(rule, dtstart=start).between(
        start, datetime.combine(end, datetime.min.time()), inc=True))
    assert parse_rule(rule).series(anchor, end).dates == expected


# --- the calculator: items and their messages ------------------------------------------------

def calculator(rules: dict[str, str | None] | None = None, **dates) -> ScheduleCalculator:
    group_flex = GroupFlexDates(date(2026, 1, 1), date(2026, 12, 31), dates.get("first"))
    return ScheduleCalculator("G1", rules or {"CUSTOM": None, **BUILT_IN},
                              {("P1", "2026"): group_flex})


def test_an_item_gets_the_first_series_date_on_or_after_its_day():
    calc = calculator(first=date(2026, 1, 9))
    for sent, expected in [
        (datetime(2026, 1, 9), datetime(2026, 1, 9)),            # on the series
        (datetime(2026, 1, 9, 23, 59), datetime(2026, 1, 9)),    # same day, a time of day
        (datetime(2026, 1, 10), datetime(2026, 1, 23)),          # the next date
        (datetime(2025, 6, 1), datetime(2026, 1, 9)),            # before the anchor: the first
        (datetime(2026, 12, 25), datetime(2026, 12, 25)),        # the last date
    ]:
        assert calc.schedule_date("P1", "2026", "BIWEEKLY", sent) == expected


def test_past_the_end_names_the_group_flex_the_type_and_the_last_date():
    with pytest.raises(CannotCalculate) as caught:
        calculator(first=date(2026, 1, 9)).schedule_date("P1", "2026", "BIWEEKLY",
                                                          datetime(2026, 12, 26))
    message = str(caught.value)
    assert "BIWEEKLY" in message and "2026-12-25" in message
    assert "GroupFlex (group_ID G1, plan_ID P1, calendar_Year 2026)" in message


def test_an_unusable_rule_or_an_empty_series_names_the_type():
    calc = calculator({"BROKEN": "FREQ=HOURLY", "NEVER": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30;"
                                                         "BYDAY=MO"})
    with pytest.raises(CannotCalculate, match=r"schedule_Type BROKEN .*does not parse"):
        calc.schedule_date("P1", "2026", "BROKEN", datetime(2026, 1, 1))
    with pytest.raises(CannotCalculate, match="schedule_Type NEVER gives no date"):
        calc.schedule_date("P1", "2026", "NEVER", datetime(2026, 1, 1))


def test_the_anchor_is_the_first_payment_date_else_the_effective_date():
    assert GroupFlexDates(date(2026, 1, 1), date(2026, 12, 31)).anchor == date(2026, 1, 1)
    assert GroupFlexDates(date(2026, 1, 1), date(2026, 12, 31),
                          date(2026, 1, 9)).anchor == date(2026, 1, 9)
    assert calculator().schedule_date("P1", "2026", "WEEKLY", datetime(2026, 1, 2)) == datetime(
        2026, 1, 8)
