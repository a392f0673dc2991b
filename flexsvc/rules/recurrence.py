"""Schedule types as recurrence rules: RFC 5545 RRULE text -> the dates of a series (pure).

A type's rule is data (``flex_schedule_type.rule``), so an operator can add a type without a
code change. The recurrence itself is python-dateutil's ``rrule``; on top of it this module

* accepts a safe subset of RFC 5545 (``RULE_GRAMMAR`` below says which, and why): dates only,
  no DTSTART/UNTIL (the anchor and the term date give them), frequencies from DAILY to YEARLY;
* never skips a payment where plain RFC 5545 would (SPEC §8): a month-based rule that picks
  days of the month (the anchor's day, or BYMONTHDAY) uses the month's last day when the month
  lacks that day (anchor Jan 31: Feb 28/29, Mar 31, Apr 30). dateutil computes which months
  the rule selects; the day within each month is clamped here;
* bounds the work: a series has at most ``MAX_SERIES_DATES`` dates and spans at most
  ``HORIZON_YEARS`` from its anchor, and a rule that matches nothing for a long time cannot
  make dateutil search up to the year 9999 (``Recurrence.series`` says how).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from itertools import islice

from dateutil.rrule import rrulestr

#: At most this many dates of one series are computed: 27 years of daily dates, 190 of weekly.
MAX_SERIES_DATES = 10_000
#: The Gregorian calendar repeats itself exactly (weekdays, leap years, ISO weeks) every 400
#: years; no series date is further than that from the anchor.
CALENDAR_CYCLE_YEARS = 400
HORIZON_YEARS = CALENDAR_CYCLE_YEARS
MAX_INTERVAL = 1_000

FREQUENCIES = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
#: The numeric rule parts, with their range (of the magnitude, for the signed ones).
_NUMERIC_PARTS = {
    "INTERVAL": (1, MAX_INTERVAL), "COUNT": (1, 2_147_483_647), "BYMONTH": (1, 12),
    "BYMONTHDAY": (1, 31), "BYYEARDAY": (1, 366), "BYWEEKNO": (1, 53), "BYSETPOS": (1, 366),
}
_SIGNED = frozenset({"BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYSETPOS"})
_LIST_PARTS = frozenset({"BYMONTH", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYSETPOS"})
_ACCEPTED = frozenset({"FREQ", "WKST", "BYDAY", *_NUMERIC_PARTS})
_REFUSED = {
    "DTSTART": "the series starts at the GroupFlex's anchor",
    "UNTIL": "the series ends at the GroupFlex's term date",
    "BYHOUR": "a schedule is made of dates (at midnight)",
    "BYMINUTE": "a schedule is made of dates (at midnight)",
    "BYSECOND": "a schedule is made of dates (at midnight)",
}
#: Parts that pick days within a month or year: not with DAILY or WEEKLY (RFC 5545 allows some
#: of them there), where a combination that never matches (BYMONTH=2;BYMONTHDAY=30) would make
#: dateutil step through every single day of the 400-year search (most of a second of CPU).
_DAY_PICKING = frozenset({"BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYSETPOS"})
_YEARLY_ONLY = frozenset({"BYYEARDAY", "BYWEEKNO"})
#: With none of these, a MONTHLY/YEARLY rule picks days of the month: those get clamped.
_NOT_CLAMPED = frozenset({"BYDAY", "BYYEARDAY", "BYWEEKNO", "BYSETPOS"})
_WEEKDAY = re.compile(r"(?:[+-]?(?P<ordinal>\d{1,2}))?(?:MO|TU|WE|TH|FR|SA|SU)", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d{1,10}", re.ASCII)

RULE_GRAMMAR = (
    "FREQ=DAILY|WEEKLY|MONTHLY|YEARLY (required), INTERVAL=1..1000, COUNT, WKST, BYDAY, "
    "BYMONTH; with MONTHLY or YEARLY also BYMONTHDAY and BYSETPOS; with YEARLY also BYYEARDAY "
    "and BYWEEKNO. Not DTSTART/UNTIL (the anchor and the term date give them) nor time-of-day "
    "parts. An optional leading 'RRULE:' is accepted; names and values in any case."
)


class RuleError(ValueError):
    """The rule is not one this service can calculate with; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class Series:
    """The dates of a rule from an anchor to an end date, both inclusive, in order."""

    dates: tuple[date, ...]
    truncated: bool     # the rule has more than MAX_SERIES_DATES dates up to the end date


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A parsed, accepted rule."""

    text: str                          # normalised: upper case, parts in the given order
    frequency: str
    count: int | None                  # COUNT, applied on top of the generated dates
    month_days: tuple[int, ...] | None  # days of the month to clamp; () = the anchor's day;
                                        # None = not a days-of-the-month rule (rrule as is)
    _rrule_text: str                   # the rule without COUNT, for dateutil
    _months_text: str | None           # the same rule picking the 1st of each selected month
    _in_anchor_month: bool             # a plain YEARLY rule: it recurs in the anchor's month

    def series(self, anchor: date, end: date, limit: int = MAX_SERIES_DATES) -> Series:
        """The dates from ``anchor`` to ``end`` inclusive (at most ``limit`` of them, and
        none more than HORIZON_YEARS after the anchor)."""
        end = min(end, _years_later(anchor, HORIZON_YEARS))
        if end < anchor:
            return Series((), False)
        # dateutil only stops looking when a date passes the end or the year 9999 is reached,
        # so a rule that matches nothing for a long time (MONTHLY;BYMONTH=2;BYDAY=FR;
        # BYMONTHDAY=31 never does) would make it scan periods up to 9999. The Gregorian
        # calendar repeats exactly every 400 years (weekdays, leap years, week numbers), so
        # the series is computed shifted by a multiple of 400 years that puts the end date in
        # the last 400 years before 9999, and shifted back: the search is then bounded.
        shift = CALENDAR_CYCLE_YEARS * ((date.max.year - end.year) // CALENDAR_CYCLE_YEARS)
        start = anchor.replace(year=anchor.year + shift)
        stop = end.replace(year=end.year + shift)
        occurrences = self._clamped(start) if self._months_text else self._plain(start)
        if self.count is not None:
            occurrences = islice(occurrences, self.count)
        dates: list[date] = []
        try:
            for day in occurrences:
                if day > stop:
                    break
                if len(dates) == limit:
                    return Series(tuple(dates), True)
                dates.append(day.replace(year=day.year - shift) if shift else day)
        except (ValueError, OverflowError, IndexError) as exc:  # dateutil on an odd rule
            raise RuleError("dateutil could not compute its dates") from exc
        return Series(tuple(dates), False)

    def _plain(self, anchor: date) -> Iterator[date]:
        for moment in rrulestr(self._rrule_text, dtstart=datetime.combine(anchor, time())):
            yield moment.date()

    def _clamped(self, anchor: date) -> Iterator[date]:
        """Each month the rule selects, with its days clamped into that month (never skipped)."""
        wanted = self.month_days or (anchor.day,)
        text = self._months_text or ""
        if self._in_anchor_month:
            # dateutil infers the month from DTSTART only when no BYxxx part is given, and the
            # months rule has one (BYMONTHDAY=1).
            text += f";BYMONTH={anchor.month}"
        months = rrulestr(text, dtstart=datetime(anchor.year, anchor.month, 1))
        for month in months:
            last = calendar.monthrange(month.year, month.month)[1]
            for day in sorted({min(d, last) if d > 0 else max(last + 1 + d, 1) for d in wanted}):
                result = date(month.year, month.month, day)
                if result >= anchor:
                    yield result


def _years_later(day: date, years: int) -> date:
    """``day`` moved ``years`` later (a multiple of 400: the same month day exists), capped."""
    return day.replace(year=day.year + years) if day.year + years <= date.max.year else date.max


def parse_rule(text: str) -> Recurrence:
    """Parse and check a rule (RULE_GRAMMAR); RuleError says what is wrong with it."""
    if not isinstance(text, str):
        raise RuleError("the rule is not text")
    body = text.strip()
    if body[:6].upper() == "RRULE:":
        body = body[6:]
    if not body:
        raise RuleError("the rule is empty")
    parts: dict[str, str] = {}
    for piece in body.split(";"):
        name, equals, value = piece.partition("=")
        name, value = name.strip().upper(), value.strip().upper()
        if not equals or not name or not value:
            raise RuleError(f"{piece.strip()[:40]!r} is not NAME=VALUE")
        if name in _REFUSED:
            raise RuleError(f"{name} is not accepted: {_REFUSED[name]}")
        if name not in _ACCEPTED:
            raise RuleError(f"{name[:40]} is not an accepted rule part")
        if name in parts:
            raise RuleError(f"{name} appears more than once")
        parts[name] = value
    frequency = _check_parts(parts)
    count = int(parts["COUNT"]) if "COUNT" in parts else None
    rrule_text = ";".join(f"{k}={v}" for k, v in parts.items() if k != "COUNT")
    month_days, months_text = None, None
    if frequency in ("MONTHLY", "YEARLY") and not _NOT_CLAMPED & parts.keys():
        month_days = tuple(int(d) for d in parts["BYMONTHDAY"].split(",")) \
            if "BYMONTHDAY" in parts else ()
        months_text = ";".join(f"{k}={v}" for k, v in parts.items()
                               if k not in ("COUNT", "BYMONTHDAY")) + ";BYMONTHDAY=1"
    in_anchor_month = (frequency == "YEARLY" and months_text is not None
                       and not {"BYMONTH", "BYMONTHDAY"} & parts.keys())
    try:   # dateutil has the last word on the values (BYDAY, WKST ...)
        for candidate in (rrule_text, months_text):
            if candidate:
                rrulestr(candidate, dtstart=datetime(2000, 1, 1))
    except Exception as exc:   # any failure on untrusted rule text means "invalid"
        raise RuleError("dateutil does not accept it") from exc
    return Recurrence(";".join(f"{k}={v}" for k, v in parts.items()), frequency, count,
                      month_days, rrule_text, months_text, in_anchor_month)


def _check_parts(parts: dict[str, str]) -> str:
    """The checks RFC 5545 and RULE_GRAMMAR make on the parts; returns FREQ."""
    frequency = parts.get("FREQ")
    if frequency is None:
        raise RuleError("FREQ is required")
    if frequency not in FREQUENCIES:
        raise RuleError(f"FREQ={frequency[:20]} is not accepted (a schedule is made of dates: "
                        "use DAILY, WEEKLY, MONTHLY or YEARLY)")
    for name, (low, high) in _NUMERIC_PARTS.items():
        if name not in parts:
            continue
        values = parts[name].split(",") if name in _LIST_PARTS else [parts[name]]
        for value in values:
            if not _INTEGER.fullmatch(value):
                raise RuleError(f"{name}={parts[name][:40]} is not a list of integers")
            number = int(value)
            magnitude = abs(number) if name in _SIGNED else number
            if not low <= magnitude <= high:
                raise RuleError(f"{name} value {value} is outside {low}..{high}")
    picking = _DAY_PICKING & parts.keys()
    if frequency in ("DAILY", "WEEKLY") and picking:
        raise RuleError(f"{sorted(picking)[0]} needs FREQ=MONTHLY or YEARLY")
    if frequency == "MONTHLY" and _YEARLY_ONLY & parts.keys():
        raise RuleError(f"{sorted(_YEARLY_ONLY & parts.keys())[0]} needs FREQ=YEARLY")
    if "BYSETPOS" in parts and len((_DAY_PICKING | {"BYDAY", "BYMONTH"}) & parts.keys()) < 2:
        raise RuleError("BYSETPOS needs another BYxxx part")
    for weekday in parts.get("BYDAY", "").split(",") if "BYDAY" in parts else ():
        match = _WEEKDAY.fullmatch(weekday)
        if match is None:
            raise RuleError(f"BYDAY value {weekday[:20]} is not a weekday such as MO or -1FR")
        if match.group("ordinal") and frequency not in ("MONTHLY", "YEARLY"):
            raise RuleError("a numbered BYDAY (such as 2MO) needs FREQ=MONTHLY or YEARLY")
    return frequency

