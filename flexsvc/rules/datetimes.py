"""Parsing of the date-time forms VBA's generated clients send.

Accepted: a date (``2026-01-15``, meaning midnight) or a date-time with ``T`` or a space between
date and time, optional fractional seconds, and an optional offset: ``Z``, ``+05:00``, ``+0500``,
``+05``, or a trailing `` UTC``/`` GMT``. An offset is converted to UTC; the result is a naive
``datetime`` in UTC, which is how ``schedule_date timestamp`` stores it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_DATETIME = re.compile(
    r"""^(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})
    (?:[Tt\ ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<frac>\d{1,9}))?)?
      (?:\ ?(?P<zone>[Zz]|UTC|GMT|[+-]\d{2}(?::?\d{2})?))?
    )?$""",
    re.VERBOSE | re.ASCII,
)


class InvalidDateTime(ValueError):
    """The text is not one of the accepted date or date-time forms."""


class ImpossibleDateTime(InvalidDateTime):
    """The text has an accepted form but names no real instant (Feb 30, year 0, 10000 ...)."""


def parse_datetime(text: str) -> datetime:
    """Parse ``text`` into a naive UTC datetime or raise InvalidDateTime."""
    if not isinstance(text, str) or len(text) > 64:
        raise InvalidDateTime("not a date-time string")
    match = _DATETIME.fullmatch(text)   # not .match: "$" would accept a trailing newline
    if match is None:
        raise InvalidDateTime("not a recognised date or date-time")
    year, month, day, hour, minute, second, frac, zone = match.groups()   # in pattern order
    try:
        value = datetime(
            int(year), int(month), int(day),
            int(hour or 0), int(minute or 0), int(second or 0),
            int((frac + "000000")[:6]) if frac else 0,
        )
    except ValueError as exc:
        raise ImpossibleDateTime("not a possible date or time") from exc
    if value.year < 1:
        raise ImpossibleDateTime("year out of range")
    zone = zone or ""
    if zone and zone.upper() not in ("Z", "UTC", "GMT"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            raise ImpossibleDateTime("offset out of range")
        offset = timedelta(hours=hours, minutes=minutes) * sign
        try:
            value = value.replace(tzinfo=timezone(offset)).astimezone(UTC)
        except OverflowError as exc:
            raise ImpossibleDateTime("year out of range after converting to UTC") from exc
        value = value.replace(tzinfo=None)
    return value


def format_datetime(value: datetime) -> str:
    """Render as ISO 8601 without offset (UTC), the form the API returns."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
