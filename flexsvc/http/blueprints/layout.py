"""PUT /groups/{groupID}/flexes/{planID}/{calendarYear}/schedule: lay out a GroupFlex's year.

The GroupFlex's rows of rule-based types become exactly the series of one type (SPEC §8),
answered 207 in the batch envelope, row by row: kept (200 Unchanged) and created (201 Created)
in date order, then deleted (204 Deleted). Each result's ``id`` names the key and the row's
``schedule_Date``. ``dryRun=true`` answers the same and writes nothing.
"""

from __future__ import annotations

from collections import Counter

from flask import Blueprint, current_app
from marshmallow import ValidationError
from werkzeug.wrappers import Response

from flexsvc.data.idempotency import IdempotentWrite
from flexsvc.data.layout import lay_out
from flexsvc.http.errors import ApiError, envelope
from flexsvc.http.idempotency import answer_once, idempotency_key
from flexsvc.http.inputs import (
    MAX_CALENDAR_YEAR_LENGTH,
    MAX_PLAN_ID_LENGTH,
    query_options,
    read_json_body,
    require_tenant,
    settings,
    valid_group_id,
    valid_path_text,
)
from flexsvc.http.jsonio import json_response
from flexsvc.ops.requestlog import record_item_statuses
from flexsvc.rules.layout import LayoutRequest, LayoutResult
from flexsvc.rules.schemas import GroupFlexLayoutSchema, LayoutQuerySchema, describe_errors

bp = Blueprint("layout", __name__)
_QUERY = LayoutQuerySchema()
_BODY = GroupFlexLayoutSchema()


def _layout_request() -> LayoutRequest:
    """The body: a JSON object validated by GroupFlexLayoutSchema (400 with each field's why)."""
    raw = read_json_body()
    if not isinstance(raw, dict):
        raise ApiError(400, "The body must be a JSON object such as "
                            '{"schedule_Type": "BIWEEKLY", "first_Payment_Date": "2026-01-09"}.')
    try:
        loaded = _BODY.load(raw)
    except ValidationError as exc:
        raise ApiError(400, describe_errors(exc.normalized_messages(), "lay-out")) from exc
    return LayoutRequest(loaded["schedule_type"], loaded["first_payment_date"])


@bp.put("/groups/<path:group_id>/flexes/<plan_id>/<calendar_year>/schedule")
def put_group_flex_schedule(group_id: str, plan_id: str, calendar_year: str) -> Response:
    """Make the GroupFlex's rule-based rows exactly the series of one type; answer 207."""
    principal, database = require_tenant()
    keyed = idempotency_key(principal)
    group_id = valid_group_id(group_id)
    plan_id = valid_path_text(plan_id, "planID", MAX_PLAN_ID_LENGTH)
    calendar_year = valid_path_text(calendar_year, "calendarYear", MAX_CALENDAR_YEAR_LENGTH)
    options = query_options(_QUERY)
    request = _layout_request()

    def write(idempotency: IdempotentWrite | None) -> list[LayoutResult]:
        results = lay_out(current_app.extensions["flexsvc.pools"], database, settings().pool,
                          group_id, plan_id, calendar_year, request, principal.user,
                          dry_run=options["dryRun"], idempotency=idempotency)
        record_item_statuses(Counter(r.status for r in results))
        return results

    return answer_once(keyed, write, _answer)


def _answer(results: list[LayoutResult]) -> Response:
    return json_response(envelope([r.to_json() for r in results]), 207)
