"""Laying out a GroupFlex's year (SPEC §8): which rows stay, which are created, which go (pure).

``PUT /groups/{groupID}/flexes/{planID}/{calendarYear}/schedule`` makes the GroupFlex's rows of
rule-based types exactly the series of one type: a row of that type on a series date is kept,
each missing date is created, every other rule-based row is deleted. Rows of types without a
rule (CUSTOM) are never touched. The data layer (``flexsvc.data.layout``) reads the facts
under locks and writes what ``plan_layout`` decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from flexsvc.rules.calculation import CannotCalculate, GroupFlexDates, ScheduleCalculator
from flexsvc.rules.datetimes import format_datetime
from flexsvc.rules.planning import ItemResult
from flexsvc.rules.recurrence import MAX_SERIES_DATES

DATE_ID = "schedule_Date"


class LayoutRejected(Exception):
    """The GroupFlex cannot take this lay-out (a 422); the message says why."""


@dataclass(frozen=True, slots=True)
class LayoutRequest:
    """The validated body: the type to lay out and, optionally, a new anchor."""

    schedule_type: str
    first_payment_date: date | None = None


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A row of the GroupFlex, as read under lock."""

    key: int
    schedule_date: datetime
    schedule_type: str


@dataclass(slots=True)
class LayoutResult(ItemResult):
    """One row of the answer: its ``id`` names the key and the row's date."""

    schedule_date: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        answer = ItemResult.to_json(self)
        if self.schedule_date is not None:
            answer["id"].append({"key": DATE_ID, "value": format_datetime(self.schedule_date)})
        return answer


@dataclass
class LayoutPlan:
    """What the lay-out does; ``slots`` are the series dates with the key kept (None: create)."""

    schedule_type: str
    first_payment_date: date | None                  # to store on the GroupFlex (None: keep)
    slots: list[tuple[datetime, int | None]] = field(default_factory=list)
    deleted: list[StoredRow] = field(default_factory=list)   # in date order, then key order

    @property
    def creates(self) -> list[datetime]:
        return [when for when, key in self.slots if key is None]

    def results(self, new_keys: Sequence[int] | None) -> list[LayoutResult]:
        """The answer: kept and created rows in date order, then the deleted ones. Created rows
        show their new key (``new_keys`` in date order), or 0 in a dry run (None)."""
        fresh = iter(new_keys or ())
        answer = [
            LayoutResult(200, key, "Unchanged", when) if key is not None
            else LayoutResult(201, next(fresh) if new_keys is not None else 0, "Created", when)
            for when, key in self.slots
        ]
        answer += [LayoutResult(204, row.key, "Deleted", row.schedule_date)
                   for row in self.deleted]
        return answer


def plan_layout(
    calculator: ScheduleCalculator, plan_id: str, calendar_year: str, dates: GroupFlexDates,
    rules: Mapping[str, str | None], request: LayoutRequest, rows: Sequence[StoredRow],
) -> LayoutPlan:
    """Decide the lay-out from the GroupFlex's dates and rows; LayoutRejected if it cannot be."""
    schedule_type = request.schedule_type
    if schedule_type not in rules:
        raise LayoutRejected(f"schedule_Type {schedule_type} does not exist in "
                             "flex_schedule_type.")
    if rules[schedule_type] is None:
        raise LayoutRejected(f"schedule_Type {schedule_type} has no rule: its dates are entered "
                             "by hand, so there is no series to lay out. Use a rule-based type "
                             "(such as WEEKLY or MONTHLY).")
    first = request.first_payment_date
    if first is not None:
        if not dates.effective_date <= first <= dates.term_date:
            raise LayoutRejected(
                f"first_Payment_Date {first.isoformat()} is outside the GroupFlex's "
                f"effective and term dates ({dates.effective_date.isoformat()} .. "
                f"{dates.term_date.isoformat()}).")
        dates = GroupFlexDates(dates.effective_date, dates.term_date, first)
    try:
        series = calculator.series(plan_id, calendar_year, schedule_type, dates)
    except CannotCalculate as exc:
        raise LayoutRejected(str(exc)) from exc
    if series.truncated:
        raise LayoutRejected(f"The {schedule_type} series from {dates.anchor.isoformat()} to "
                             f"{dates.term_date.isoformat()} has more than "
                             f"{MAX_SERIES_DATES:,} dates; a lay-out creates at most that many.")
    on_series = set(series.midnights)
    kept: dict[datetime, int] = {}
    deleted: list[StoredRow] = []
    for row in sorted(rows, key=lambda r: r.key):
        if rules.get(row.schedule_type) is None:
            continue                                 # CUSTOM and other hand-entered types
        if (row.schedule_type == schedule_type and row.schedule_date in on_series
                and row.schedule_date not in kept):
            kept[row.schedule_date] = row.key        # the lowest key on each date is kept
        else:
            deleted.append(row)
    deleted.sort(key=lambda r: (r.schedule_date, r.key))
    return LayoutPlan(schedule_type, first, [(when, kept.get(when)) for when in series.midnights],
                      deleted)
