"""PUT /groups/{groupID}/flex-schedules-batch: create or update many records, answer 207."""

from __future__ import annotations

from collections import Counter

from flask import Blueprint, current_app
from werkzeug.wrappers import Response

from flexsvc.data.batch import upsert_batch
from flexsvc.data.idempotency import IdempotentWrite
from flexsvc.http.errors import envelope
from flexsvc.http.idempotency import answer_once, idempotency_key
from flexsvc.http.inputs import (
    query_options,
    read_json_array,
    require_tenant,
    settings,
    valid_group_id,
)
from flexsvc.http.jsonio import json_response
from flexsvc.ops.requestlog import record_item_statuses
from flexsvc.rules.fastpath import GC_PAUSE_MIN_ITEMS, gc_paused, load_items
from flexsvc.rules.planning import ItemResult
from flexsvc.rules.schemas import BatchQuerySchema

bp = Blueprint("batch", __name__)
_QUERY = BatchQuerySchema()


@bp.put("/groups/<path:group_id>/flex-schedules-batch")
def put_flex_schedules_batch(group_id: str) -> Response:
    """Create or update many GroupFlexSchedule records; one result per item, in order."""
    principal, database = require_tenant()
    keyed = idempotency_key(principal)
    group_id = valid_group_id(group_id)
    options = query_options(_QUERY)
    items = read_json_array()
    # The body is in: big batches run with the cyclic GC paused (see fastpath.gc_paused).
    with gc_paused(len(items) >= GC_PAUSE_MIN_ITEMS):
        # Marshmallow's rules and messages, through the schema-derived fast path (fastpath.py).
        entries = load_items(items, group_id)
        del items

        def write(idempotency: IdempotentWrite | None) -> list[ItemResult]:
            nonlocal entries
            results = upsert_batch(
                current_app.extensions["flexsvc.pools"], database, settings().pool, group_id,
                entries, principal.user, atomic=options["atomic"], dry_run=options["dryRun"],
                idempotency=idempotency)
            del entries     # freed before the answer is built (peak memory of big batches)
            record_item_statuses(Counter(r.status for r in results))
            return results

        return answer_once(keyed, write, _answer)


def _answer(results: list[ItemResult]) -> Response:
    return json_response(envelope([r.to_json() for r in results]), 207)
