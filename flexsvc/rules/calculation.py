"""Calculated schedule dates (SPEC §8): a GroupFlex's series per type, and an item's date (pure).

A type with a rule (``flex_schedule_type.rule``) has, for each GroupFlex, a series: the rule's
dates from the GroupFlex's anchor (``first_payment_date``, else ``effective_date``) to its
``term_date``, at midnight. A write stores the first series date on or after the calendar day
sent. ``ScheduleCalculator`` serves one request: it parses each rule and computes each
(GroupFlex, type) series once, when an item first needs it, and finds each item's date by
bisection, so a 10,000-item batch costs one series per pair, not one per item.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time

from flexsvc.rules.datetimes import format_datetime
from flexsvc.rules.recurrence import MAX_SERIES_DATES, Recurrence, RuleError, parse_rule


@dataclass(frozen=True, slots=True)
class GroupFlexDates:
    """The dates of a GroupFlex that its calculated schedules depend on."""

    effective_date: date
    term_date: date
    first_payment_date: date | None = None

    @property
    def anchor(self) -> date:
        return self.first_payment_date or self.effective_date


class CannotCalculate(Exception):
    """No date can be calculated for the item or lay-out (a 422); the message says why."""


def group_flex_label(group_id: str, plan_id: str, calendar_year: str) -> str:
    return f"GroupFlex (group_ID {group_id}, plan_ID {plan_id}, calendar_Year {calendar_year})"


@dataclass(frozen=True, slots=True)
class CalculatedSeries:
    """One (GroupFlex, type) series, ready for bisection."""

    days: tuple[date, ...]
    midnights: tuple[datetime, ...]
    truncated: bool


class ScheduleCalculator:
    """The calculated dates of one request, from the facts it read (rules, GroupFlex dates)."""

    def __init__(self, group_id: str, rules: Mapping[str, str | None],
                 group_flexes: Mapping[tuple[str, str], GroupFlexDates]):
        self._group_id = group_id
        self._rules = rules
        self._group_flexes = group_flexes
        # Memos (a failure is kept as its message: a fresh exception is raised each time).
        self._recurrences: dict[str, Recurrence | str] = {}
        self._series: dict[tuple[str, str, str], CalculatedSeries | str] = {}
        self._notes: dict[datetime, str] = {}

    def recurrence(self, schedule_type: str) -> Recurrence:
        """The type's parsed rule (parsed once per request); CannotCalculate if unusable."""
        parsed = self._recurrences.get(schedule_type)
        if parsed is None:
            try:
                parsed = parse_rule(self._rules[schedule_type] or "")
            except RuleError as exc:
                parsed = (f"schedule_Type {schedule_type} cannot calculate dates: its rule does "
                          f"not parse ({exc}). An administrator must fix flex_schedule_type.rule.")
            self._recurrences[schedule_type] = parsed
        if isinstance(parsed, str):
            raise CannotCalculate(parsed)
        return parsed

    def series(self, plan_id: str, calendar_year: str, schedule_type: str,
               dates: GroupFlexDates | None = None) -> CalculatedSeries:
        """The type's series for the GroupFlex (``dates``: the GroupFlex's dates, if they differ
        from those read, as in a lay-out with a new anchor). CannotCalculate if there is none."""
        found = self._series.get((plan_id, calendar_year, schedule_type)) if dates is None else None
        if found is None:
            try:
                found = self._compute(plan_id, calendar_year, schedule_type,
                                      dates or self._group_flexes[plan_id, calendar_year])
            except CannotCalculate as exc:
                found = str(exc)
            if dates is None:
                self._series[plan_id, calendar_year, schedule_type] = found
        if isinstance(found, str):
            raise CannotCalculate(found)
        return found

    def _compute(self, plan_id: str, calendar_year: str, schedule_type: str,
                 dates: GroupFlexDates) -> CalculatedSeries:
        recurrence = self.recurrence(schedule_type)
        try:
            series = recurrence.series(dates.anchor, dates.term_date)
        except RuleError as exc:
            raise CannotCalculate(f"schedule_Type {schedule_type} cannot calculate dates: its "
                                  f"rule is not usable ({exc}).") from exc
        if not series.dates:
            raise CannotCalculate(
                f"schedule_Type {schedule_type} gives no date for the "
                f"{group_flex_label(self._group_id, plan_id, calendar_year)} between its anchor "
                f"{dates.anchor.isoformat()} and its term date {dates.term_date.isoformat()}.")
        midnight = time()
        return CalculatedSeries(series.dates, tuple(datetime.combine(d, midnight)
                                                    for d in series.dates), series.truncated)

    def schedule_date(self, plan_id: str, calendar_year: str, schedule_type: str,
                      sent: datetime) -> datetime:
        """The date to store for an item of a rule-based type: the first series date on or
        after the calendar day sent (UTC). CannotCalculate past the end of the series."""
        series = self.series(plan_id, calendar_year, schedule_type)
        day = sent.date()
        index = bisect_left(series.days, day)
        if index < len(series.days):
            return series.midnights[index]
        label = group_flex_label(self._group_id, plan_id, calendar_year)
        last = series.days[-1].isoformat()
        if series.truncated:
            raise CannotCalculate(
                f"schedule_Date {day.isoformat()} is too far ahead: the {schedule_type} series "
                f"of the {label} is only calculated for its first {MAX_SERIES_DATES:,} dates "
                f"(up to {last}).")
        raise CannotCalculate(
            f"No {schedule_type} date of the {label} is on or after {day.isoformat()}: its "
            f"series ends on {last}.")

    def outcome(self, plan_id: str, calendar_year: str, schedule_type: str,
                sent: datetime) -> tuple[datetime | None, str]:
        """For the batch's per-item loop: (the date to store, what the body adds: "" when it
        is the date sent) or (None, why not: a 422)."""
        try:
            stored = self.schedule_date(plan_id, calendar_year, schedule_type, sent)
        except CannotCalculate as exc:
            return None, str(exc)
        if stored == sent:
            return stored, ""
        note = self._notes.get(stored)
        if note is None:
            note = self._notes[stored] = f"; schedule_Date calculated as {format_datetime(stored)}"
        return stored, note
