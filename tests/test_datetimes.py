"""SPEC §4 date-time rules: the forms VBA's clients send, offsets converted to UTC."""

from __future__ import annotations

from datetime import datetime

import pytest

from flexsvc.rules.datetimes import InvalidDateTime, format_datetime, parse_datetime
from tests.helpers import item, put_batch, rows, statuses

ACCEPTED = [
    ("2026-01-15", datetime(2026, 1, 15)),
    ("2026-01-15T10:20:30", datetime(2026, 1, 15, 10, 20, 30)),
    ("2026-01-15 10:20:30", datetime(2026, 1, 15, 10, 20, 30)),
    ("2026-01-15T10:20", datetime(2026, 1, 15, 10, 20)),
    ("2026-01-15T10:20:30.5", datetime(2026, 1, 15, 10, 20, 30, 500000)),
    ("2026-01-15T10:20:30.123456789", datetime(2026, 1, 15, 10, 20, 30, 123456)),
    ("2026-01-15T10:20:30Z", datetime(2026, 1, 15, 10, 20, 30)),
    ("2026-01-15t10:20:30z", datetime(2026, 1, 15, 10, 20, 30)),
    ("2026-01-15T10:20:30+05:00", datetime(2026, 1, 15, 5, 20, 30)),
    ("2026-01-15T10:20:30+0500", datetime(2026, 1, 15, 5, 20, 30)),
    ("2026-01-15T10:20:30-02:30", datetime(2026, 1, 15, 12, 50, 30)),
    ("2026-01-15 00:00:00 UTC", datetime(2026, 1, 15)),
    ("2026-01-15 00:00:00 GMT", datetime(2026, 1, 15)),
    ("2026-01-15 00:00:00 -0500", datetime(2026, 1, 15, 5)),
    ("2026-01-15T23:30:00-05:00", datetime(2026, 1, 16, 4, 30)),
    ("2026-01-15T00:30:00+01:00", datetime(2026, 1, 14, 23, 30)),
    ("0001-01-01", datetime(1, 1, 1)),
    ("9999-12-31T23:59:59", datetime(9999, 12, 31, 23, 59, 59)),
    ("2024-02-29", datetime(2024, 2, 29)),
]

REJECTED = [
    "", "soon", "2026-02-30", "2025-02-29", "2026-13-01", "2026-00-10", "0000-01-01",
    "10000-01-01", "2026-1-5", "2026/01/15", "15-01-2026", "2026-01-15T25:00:00",
    "2026-01-15T10:61", "2026-01-15T10:20:30+25:00", "2026-01-15T10:20:30 PST",
    "9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00", "2026-01-15T", "2026-01-15 ",
    "\uff12\uff10\uff12\uff16-01-15",  # full-width digits
    "2026-01-15\x00", "2026-01-15T10:20:30.", "x" * 1000,
]


@pytest.mark.parametrize("text, expected", ACCEPTED)
def test_parse_accepts(text, expected):
    assert parse_datetime(text) == expected


@pytest.mark.parametrize("text", REJECTED)
def test_parse_rejects(text):
    with pytest.raises(InvalidDateTime):
        parse_datetime(text)


def test_format_is_iso_without_offset():
    assert format_datetime(datetime(2026, 1, 15)) == "2026-01-15T00:00:00"
    assert format_datetime(datetime(2026, 1, 15, 1, 2, 3, 4000)) == "2026-01-15T01:02:03.004000"


def test_stored_as_utc_without_offset(client, db):
    # CUSTOM: the date as sent (a rule-based type would calculate it, SPEC §8).
    sent = [item(i + 1, schedule_Date=text, schedule_Type="CUSTOM")
            for i, (text, _) in enumerate(ACCEPTED)]
    assert statuses(put_batch(client, sent)) == [201] * len(ACCEPTED)
    assert [r["schedule_date"] for r in rows(db)] == [expected for _, expected in ACCEPTED]


def test_rejected_forms_are_item_errors(client, db):
    sent = [item(i + 1, schedule_Date=text) for i, text in enumerate(REJECTED)]
    response = put_batch(client, sent)
    assert statuses(response) == [400] * len(REJECTED)
    assert all("schedule_Date" in r["body"] for r in response.get_json()["data"])
    assert rows(db) == []
