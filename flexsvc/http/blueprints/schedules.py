"""The rest of the GroupFlexSchedule resource: list, read, create, replace, delete one record.

Same envelope, authentication and tenancy as the batch. Writes are a batch of one (same
validation and rules); a failed item becomes a whole-request problem with the item's status
(400, 409, 422) and message.

Decisions where the contract is silent (also in the README and the OpenAPI document):
- PUT to a key that does not exist creates it with exactly that key (201), as a batch item does.
- PUT's body may omit ``groupFlexSchedule_Key`` (the path's key is used); a different value in
  the body, 0 included, is a 400 and nothing is written.
- POST always creates with a server-assigned key: the body's key must be 0 or absent (else 400,
  use PUT to choose the key), so a POST can never overwrite an existing record.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, url_for
from werkzeug.wrappers import Response

from flexsvc.data import records
from flexsvc.data.db import Pools
from flexsvc.data.idempotency import IdempotentWrite
from flexsvc.http.auth import Principal
from flexsvc.http.errors import ApiError, envelope
from flexsvc.http.idempotency import KeyedRequest, answer_once, idempotency_key
from flexsvc.http.inputs import (
    query_options,
    read_json_body,
    require_tenant,
    settings,
    valid_group_id,
)
from flexsvc.http.jsonio import json_response
from flexsvc.rules.planning import ItemResult
from flexsvc.rules.schemas import (
    KEY_FIELD,
    MAX_KEY,
    GroupFlexScheduleSchema,
    InvalidSort,
    ListQuerySchema,
    ScheduleInput,
    describe_errors,
    load_item,
    parse_sort_by,
)

bp = Blueprint("schedules", __name__)
_LIST_QUERY = ListQuerySchema()
_RECORD = GroupFlexScheduleSchema()
_COLLECTION = "/groups/<path:group_id>/flex-schedules"
_ITEM = "/groups/<path:group_id>/flex-schedules/<key>"
_FILTERS = ("plan_ID", "calendar_Year", "schedule_Type")


def _pools() -> Pools:
    return current_app.extensions["flexsvc.pools"]


def _path_key(text: str) -> int:
    """The path's key: a decimal integer 1..2147483647 (400 otherwise, before any SQL)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not (
            1 <= int(text) <= MAX_KEY):
        raise ApiError(400, f"The key in the path must be an integer 1..{MAX_KEY}.")
    return int(text)


def _record_body(group_id: str, key: int) -> ScheduleInput:
    """The JSON object body validated as a batch item; ``key`` fills an omitted key."""
    raw = read_json_body()
    if not isinstance(raw, dict):
        raise ApiError(400, "The body must be a JSON object: one GroupFlexSchedule.")
    if not any(name.lower() == KEY_FIELD.lower() for name in raw):
        raw = {**raw, KEY_FIELD: key}
    item, errors = load_item(raw, group_id)
    if item is None:
        raise ApiError(400, describe_errors(errors))
    return item


def _saved(group_id: str, item: ScheduleInput, principal: Principal, database: str,
           keyed: KeyedRequest | None) -> Response:
    """Write one item as a batch of one; its failure becomes the whole request's problem."""
    def write(idempotency: IdempotentWrite | None) -> tuple[ItemResult,
                                                            records.ScheduleRecord | None]:
        return records.save_record(_pools(), database, settings().pool, group_id, item,
                                   principal.user, idempotency=idempotency)

    return answer_once(keyed, write, lambda saved: _record_answer(group_id, *saved))


def _record_answer(group_id: str, result: ItemResult,
                   record: records.ScheduleRecord | None) -> Response:
    """The stored record (201 with Location, or 200); a failed item is the whole answer."""
    if record is None:
        raise ApiError(result.status, result.body)
    response = json_response(envelope(_RECORD.dump(record)), result.status)
    if result.status == 201:
        response.headers["Location"] = url_for(".get_flex_schedule", group_id=group_id,
                                               key=record.key)
    return response


def _page_links(group_id: str, options: dict[str, Any], total: int) -> str:
    """RFC 8288 ``Link`` header: first, prev, next and last pages, keeping the sort."""
    size = options["pageSize"]
    last = max(1, -(-total // size))
    pages = {"first": 1, "last": last}
    if options["page"] > 1:
        pages["prev"] = min(options["page"] - 1, last)
    if options["page"] < last:
        pages["next"] = options["page"] + 1
    extra = {name: options[name] for name in ("sortBy", *_FILTERS) if options[name]}
    return ", ".join(
        f'<{url_for(".list_flex_schedules", group_id=group_id, page=page, pageSize=size, **extra)}>'
        f'; rel="{rel}"' for rel, page in pages.items())


@bp.get(_COLLECTION)
def list_flex_schedules(group_id: str) -> Response:
    """One page of the group's records (optionally of one plan, year or type), in a stable
    order (the key breaks ties)."""
    _, database = require_tenant()
    group_id = valid_group_id(group_id)
    options = query_options(_LIST_QUERY)
    try:
        sort = parse_sort_by(options["sortBy"])
    except InvalidSort as exc:
        raise ApiError(400, str(exc)) from exc
    only = records.RecordFilter(options["plan_ID"], options["calendar_Year"],
                                options["schedule_Type"])
    page = records.list_records(_pools(), database, settings().pool, group_id,
                                page=options["page"], page_size=options["pageSize"], sort=sort,
                                only=only)
    response = json_response(envelope(_RECORD.dump(page.records, many=True)))
    response.headers["X-Total-Count"] = str(page.total)
    response.headers["Link"] = _page_links(group_id, options, page.total)
    return response


@bp.post(_COLLECTION)
def create_flex_schedule(group_id: str) -> Response:
    """Create one record with a server-assigned key (201 + Location)."""
    principal, database = require_tenant()
    keyed = idempotency_key(principal)
    group_id = valid_group_id(group_id)
    item = _record_body(group_id, 0)
    if item.key != 0:
        raise ApiError(400, f"POST creates a record with a server-assigned key: send {KEY_FIELD} "
                            "0 or leave it out. To create or update a record with a key of your "
                            "choice, use PUT /groups/{groupID}/flex-schedules/{key}.")
    return _saved(group_id, item, principal, database, keyed)


@bp.get(_ITEM)
def get_flex_schedule(group_id: str, key: str) -> Response:
    """One record; 404 when it does not exist or belongs to another group."""
    _, database = require_tenant()
    group_id = valid_group_id(group_id)
    record = records.get_record(_pools(), database, settings().pool, group_id, _path_key(key))
    return json_response(envelope(_RECORD.dump(record)))


@bp.put(_ITEM)
def put_flex_schedule(group_id: str, key: str) -> Response:
    """Create or update the record ``key``, with the rules of a batch item (201 or 200)."""
    principal, database = require_tenant()
    keyed = idempotency_key(principal)
    group_id = valid_group_id(group_id)
    path_key = _path_key(key)
    item = _record_body(group_id, path_key)
    if item.key != path_key:
        raise ApiError(400, f"{KEY_FIELD} in the body ({item.key}) differs from the key in the "
                            f"path ({path_key}); send the same value or leave it out.")
    return _saved(group_id, item, principal, database, keyed)


@bp.delete(_ITEM)
def delete_flex_schedule(group_id: str, key: str) -> Response:
    """Delete one record (204); 404 when it does not exist or belongs to another group."""
    principal, database = require_tenant()
    keyed = idempotency_key(principal)
    group_id = valid_group_id(group_id)
    path_key = _path_key(key)

    def write(idempotency: IdempotentWrite | None) -> None:
        records.delete_record(_pools(), database, settings().pool, group_id, path_key,
                              idempotency=idempotency)

    return answer_once(keyed, write, lambda _: current_app.response_class(status=204))

