"""Marshmallow schemas: the single source of truth for field names, rules, messages and OpenAPI.

Field names are the seed's (``groupFlexSchedule_Key``, ``calendar_Year`` ...) and are matched
case-insensitively on input, as ASP.NET-based VBA does. Unknown fields are ignored. The audit
fields (``entry_*``, ``update_*``) are dump-only: the server sets them and ignores what clients
send.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, NamedTuple

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate

from flexsvc.rules.datetimes import (
    ImpossibleDateTime,
    InvalidDateTime,
    format_datetime,
    parse_datetime,
)
from flexsvc.rules.text import is_storable_text, is_utf8_encodable

MAX_KEY = 2_147_483_647
KEY_FIELD = "groupFlexSchedule_Key"


class ScheduleInput(NamedTuple):
    """One validated GroupFlexSchedule item, as the data layer consumes it."""

    key: int
    group_id: str
    plan_id: str
    calendar_year: str
    schedule_date: datetime
    schedule_type: str


class StrictInteger(fields.Integer):
    """An integer that must arrive as a JSON integer: not a boolean, float or string."""

    def __init__(self, **kwargs: Any):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class StorableString(fields.String):
    """A string PostgreSQL can store: no NUL character, no lone surrogate."""

    default_error_messages = {
        "nul": "Must not contain a NUL character.",
        "unencodable": "Must be valid Unicode text.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise self.make_error("nul")
        if not is_utf8_encodable(text):
            raise self.make_error("unencodable")
        return text


class UpperString(StorableString):
    """Accepted in any case, stored upper-case (schedule types)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return super()._deserialize(value, attr, data, **kwargs).upper()


class FlexDateTime(fields.Field):
    """A date or ISO 8601 / RFC 3339 date-time; offsets converted to UTC, returned without one."""

    default_error_messages = {
        "invalid": "Not a valid date-time. Use 2026-01-15, 2026-01-15T00:00:00, "
                   "2026-01-15 00:00:00 UTC or 2026-01-15T00:00:00-05:00.",
        "impossible": "Not a possible date-time (check month, day, time and year 1..9999).",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            return parse_datetime(value)
        except ImpossibleDateTime as exc:
            raise self.make_error("impossible") from exc
        except InvalidDateTime as exc:
            raise self.make_error("invalid") from exc

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else format_datetime(value)


class FlexDate(FlexDateTime):
    """A calendar day, sent in any FlexDateTime form: the day it names in UTC (``2026-01-09``,
    ``2026-01-09 00:00:00 UTC`` ...), as a schedule_Date's day is taken."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        return super()._deserialize(value, attr, data, **kwargs).date()

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else value.isoformat()


def canonical_names(schema: Schema) -> dict[str, str]:
    """lower-cased wire name -> the schema's spelling, for the fields a client may send."""
    return {f.data_key.lower(): f.data_key for f in schema.load_fields.values() if f.data_key}


def match_names(data: Any, canonical: Mapping[str, str]) -> Any:
    """Wire names matched case-insensitively, as ASP.NET-based VBA does (the last one wins)."""
    if not isinstance(data, Mapping):
        return data
    return {canonical.get(name.lower(), name) if isinstance(name, str) else name: value
            for name, value in data.items()}


def _string(max_length: int, **kwargs: Any) -> StorableString:
    return StorableString(required=True, validate=validate.Length(1, max_length), **kwargs)


class GroupFlexScheduleSchema(Schema):
    """One GroupFlexSchedule record, as sent to and returned by the API."""

    class Meta:
        unknown = EXCLUDE
        ordered = True

    key = StrictInteger(
        data_key="groupFlexSchedule_Key", required=True, validate=validate.Range(0, MAX_KEY),
        metadata={"description": "The unique identifier for the flex schedule. 0 asks the "
                                 "server to assign a new key."})
    calendar_year = _string(4, data_key="calendar_Year", metadata={
        "description": "References GroupFlex.Calendar_Year value on the parent record."})
    group_id = _string(20, data_key="group_ID", metadata={
        "description": "References GroupFlex.Group_ID; must equal the groupID in the path."})
    plan_id = _string(20, data_key="plan_ID", metadata={
        "description": "References GroupFlex.Plan_ID value on the parent record."})
    schedule_date = FlexDateTime(data_key="schedule_Date", required=True, metadata={
        "description": "The scheduled date of the flex payment (UTC, returned without offset). "
                       "Stored as sent for CUSTOM; for every other type, calculated: the first "
                       "date of the GroupFlex's series on or after the UTC day sent.",
        "type": "string", "format": "date-time"})
    schedule_type = UpperString(
        data_key="schedule_Type", required=True, validate=validate.Length(1, 16), metadata={
            "description": "The type of schedule (CUSTOM, WEEKLY, BIWEEKLY, SEMIMONTHLY, "
                           "MONTHLY, QUARTERLY, or a type an administrator added); any case, "
                           "stored upper-case."})
    entry_date = FlexDateTime(data_key="entry_Date", dump_only=True, metadata={
        "description": "Set by the server when the record is created.",
        "type": "string", "format": "date-time"})
    entry_user = fields.String(data_key="entry_User", dump_only=True, allow_none=True, metadata={
        "description": "Set by the server from the authenticated user on create."})
    update_date = FlexDateTime(data_key="update_Date", dump_only=True, metadata={
        "description": "Set by the server on every write.",
        "type": "string", "format": "date-time"})
    update_user = fields.String(data_key="update_User", dump_only=True, allow_none=True, metadata={
        "description": "Set by the server from the authenticated user on every write."})

    @pre_load
    def _match_names_case_insensitively(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            return data
        canonical = _CANONICAL_NAMES
        return {canonical.get(name.lower(), name): value for name, value in data.items()}


#: lower-cased wire name -> the seed's spelling, for the fields a client may send.
_CANONICAL_NAMES = canonical_names(GroupFlexScheduleSchema())

ITEM_SCHEMA = GroupFlexScheduleSchema()


def load_item(raw: Any, path_group_id: str) -> tuple[ScheduleInput | None, dict[str, list[str]]]:
    """Validate one item; return (item, {}) or (None, {wire field name: [messages]})."""
    try:
        loaded = ITEM_SCHEMA.load(raw)
    except ValidationError as exc:
        messages = exc.normalized_messages()
        if not isinstance(messages, dict):
            messages = {"_schema": [str(messages)]}
        return None, messages
    if loaded["group_id"] != path_group_id:
        return None, {"group_ID": ["Must equal the groupID in the path."]}
    return ScheduleInput(**loaded), {}


def echo_key(raw: Any) -> Any:
    """The key a client sent, for the ``id`` of a failed item: echoed only when it is a value
    that can be written back safely (a 64-bit number, a short valid string, a boolean, null)."""
    if not isinstance(raw, dict):
        return None
    value = None
    for name, candidate in raw.items():
        if name.lower() == _KEY_FIELD_LOWER:
            value = candidate
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)[:40]
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, str) and len(value) <= 100 and is_storable_text(value):
        return value
    return None


_KEY_FIELD_LOWER = KEY_FIELD.lower()


def describe_errors(messages: dict[str, Any], subject: str = "GroupFlexSchedule") -> str:
    """Turn marshmallow's messages into one line: a 400 item's ``body`` or problem ``detail``."""
    if "_schema" in messages:
        return f"Invalid {subject}: the item must be a JSON object."
    parts = []
    for name in sorted(messages):
        value = messages[name]
        text = " ".join(value) if isinstance(value, list) else str(value)
        parts.append(f"{name}: {text}")
    return f"Invalid {subject}: " + "; ".join(parts)


class IdPairSchema(Schema):
    key = fields.String(allow_none=True, metadata={"example": "groupFlexSchedule_Key"})
    value = fields.Raw(allow_none=True, metadata={
        "description": "The key as stored or as sent (a lay-out's results also have a "
                       "schedule_Date pair: the row's date)."})


class ItemResultSchema(Schema):
    """The outcome of one batch item."""

    class Meta:
        ordered = True

    id = fields.List(fields.Nested(IdPairSchema), required=True)
    status = fields.Integer(required=True, metadata={
        "description": "201 created, 200 updated (lay-out: unchanged), 204 deleted (lay-out), "
                       "400 invalid, 409 key under another group, 422 missing reference or no "
                       "date calculable, 424 not applied (atomic), 500 unexpected"})
    body = fields.String(required=True)


class DebugSchema(Schema):
    activityID = fields.String(required=True)


class ProblemSchema(Schema):
    """RFC 9457 problem details."""

    class Meta:
        ordered = True

    type = fields.String(allow_none=True)
    title = fields.String(allow_none=True)
    status = fields.Integer()
    detail = fields.String(allow_none=True)
    instance = fields.String(allow_none=True)


class BatchResponseSchema(Schema):
    """The 207 multi-status body of the batch endpoint."""

    class Meta:
        ordered = True

    data = fields.List(fields.Nested(ItemResultSchema), allow_none=True)
    error = fields.Nested(ProblemSchema, allow_none=True)
    debug = fields.Nested(DebugSchema)


class ErrorEnvelopeSchema(Schema):
    """The body of every whole-request error."""

    class Meta:
        ordered = True

    data = fields.Raw(allow_none=True, metadata={"description": "Always null on error."})
    error = fields.Nested(ProblemSchema)
    debug = fields.Nested(DebugSchema)


class BatchQuerySchema(Schema):
    """Query options of the batch endpoint."""

    class Meta:
        unknown = EXCLUDE

    atomic = fields.Boolean(load_default=False, metadata={
        "description": "Write all items or none; when one fails, the others answer 424."})
    dryRun = fields.Boolean(load_default=False, metadata={
        "description": "Compute every result without writing anything."})


# --- The rest of the resource: single-record and list answers, list query options. ---

MAX_PAGE = 2_147_483_647
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


class RecordResponseSchema(Schema):
    """The body of a single-record answer (GET/PUT/POST): the record in ``data``."""

    class Meta:
        ordered = True

    data = fields.Nested(GroupFlexScheduleSchema)
    error = fields.Nested(ProblemSchema, allow_none=True)
    debug = fields.Nested(DebugSchema)


class RecordListResponseSchema(Schema):
    """The body of a list answer: one page of records in ``data``."""

    class Meta:
        ordered = True

    data = fields.List(fields.Nested(GroupFlexScheduleSchema))
    error = fields.Nested(ProblemSchema, allow_none=True)
    debug = fields.Nested(DebugSchema)


class SortKey(NamedTuple):
    """One ``sortBy`` term: a GroupFlexScheduleSchema attribute name and its direction."""

    field: str
    descending: bool


class InvalidSort(ValueError):
    """``sortBy`` names an unknown field or direction; the message is safe to show."""


#: lower-cased wire name -> (attribute name, the seed's spelling), for every record field.
_SORTABLE = {
    f.data_key.lower(): (name, f.data_key)
    for name, f in GroupFlexScheduleSchema().fields.items() if f.data_key
}
SORTABLE_FIELDS = tuple(wire for _, wire in _SORTABLE.values())


def parse_sort_by(text: str | None) -> list[SortKey]:
    """``schedule_Date:desc,groupFlexSchedule_Key`` -> sort keys (names matched in any case)."""
    if text is None or not text.strip():
        return []
    keys: list[SortKey] = []
    seen: set[str] = set()
    for term in text.split(","):
        name, has_direction, direction = term.strip().partition(":")
        entry = _SORTABLE.get(name.strip().lower())
        if entry is None:
            raise InvalidSort(f"sortBy: unknown field {name.strip()[:40]!r}; sortable fields "
                              f"are {', '.join(SORTABLE_FIELDS)}.")
        attribute, wire = entry
        direction = direction.strip().lower() if has_direction else "asc"
        if direction not in ("asc", "desc"):
            raise InvalidSort(f"sortBy: the direction of {wire} must be asc or desc.")
        if attribute in seen:
            raise InvalidSort(f"sortBy: {wire} is named more than once.")
        seen.add(attribute)
        keys.append(SortKey(attribute, direction == "desc"))
    return keys


class ListQuerySchema(Schema):
    """Query options of ``GET /groups/{groupID}/flex-schedules``."""

    class Meta:
        unknown = EXCLUDE

    page = fields.Integer(load_default=1, validate=validate.Range(1, MAX_PAGE), metadata={
        "description": "The page to return, from 1."})
    pageSize = fields.Integer(
        load_default=DEFAULT_PAGE_SIZE, validate=validate.Range(1, MAX_PAGE_SIZE), metadata={
            "description": f"Records per page, 1..{MAX_PAGE_SIZE}."})
    sortBy = fields.String(load_default=None, metadata={
        "description": "Comma-separated `field` or `field:asc|desc` terms, e.g. "
                       "`schedule_Date:desc,groupFlexSchedule_Key`. Fields: "
                       + ", ".join(SORTABLE_FIELDS) + " (any case). The key is always the "
                       "final tiebreaker; the default order is by key.",
        "example": "schedule_Date:desc,groupFlexSchedule_Key"})
    plan_ID = StorableString(load_default=None, validate=validate.Length(1, 20), metadata={
        "description": "Only the records of this plan (exact match)."})
    calendar_Year = StorableString(load_default=None, validate=validate.Length(1, 4), metadata={
        "description": "Only the records of this calendar year (exact match)."})
    schedule_Type = UpperString(load_default=None, validate=validate.Length(1, 16), metadata={
        "description": "Only the records of this schedule type (any case)."})

    @pre_load
    def _match_names_case_insensitively(self, data: Any, **kwargs: Any) -> Any:
        return match_names(data, _LIST_QUERY_NAMES)


_LIST_QUERY_NAMES = {name.lower(): name for name in ListQuerySchema().load_fields}


# --- Laying out a GroupFlex's year (SPEC §8) ---------------------------------------------------

class GroupFlexLayoutSchema(Schema):
    """The body of ``PUT /groups/{groupID}/flexes/{planID}/{calendarYear}/schedule``."""

    class Meta:
        unknown = EXCLUDE
        ordered = True

    schedule_type = UpperString(
        data_key="schedule_Type", required=True, validate=validate.Length(1, 16), metadata={
            "description": "The rule-based type whose series the GroupFlex's year becomes "
                           "(WEEKLY, BIWEEKLY, SEMIMONTHLY, MONTHLY, QUARTERLY or an operator's "
                           "type); any case. CUSTOM has no series: 422."})
    first_payment_date = FlexDate(
        data_key="first_Payment_Date", load_default=None, allow_none=True, metadata={
            "description": "Optional: stored on the GroupFlex as its First_Payment_Date and "
                           "the anchor of the series; within its effective and term dates. "
                           "A date (2026-01-09), or a date-time whose UTC day is taken. "
                           "Absent or null: the stored one (else the effective date) is used.",
            "type": "string", "format": "date", "example": "2026-01-09"})

    @pre_load
    def _match_names_case_insensitively(self, data: Any, **kwargs: Any) -> Any:
        return match_names(data, _LAYOUT_NAMES)


_LAYOUT_NAMES = canonical_names(GroupFlexLayoutSchema())


class LayoutQuerySchema(Schema):
    """Query options of the lay-out route."""

    class Meta:
        unknown = EXCLUDE

    dryRun = fields.Boolean(load_default=False, metadata={
        "description": "Answer as if laid out, without writing anything (new rows show key 0)."})
