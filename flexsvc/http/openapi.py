"""The OpenAPI 3 document, generated with apispec from the marshmallow schemas the code uses.

Paths come from the app's URL map (so a route cannot be missing from the document) and each
operation's text from ``OPERATIONS`` below; request and response bodies reference the same
schema classes the views validate and dump with, so the document cannot drift from the code.
A route without an entry still appears, marked ``UNDOCUMENTED``; a test fails on that mark.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from flexsvc.config import Settings
from flexsvc.http.auth import API_KEY_HEADER
from flexsvc.http.idempotency import HEADER as IDEMPOTENCY_HEADER
from flexsvc.http.idempotency import KEY_PATTERN, MAX_KEY_LENGTH, REPLAYED_HEADER
from flexsvc.http.inputs import (
    DATABASE_HEADER,
    MAX_CALENDAR_YEAR_LENGTH,
    MAX_GROUP_ID_LENGTH,
    MAX_PLAN_ID_LENGTH,
)
from flexsvc.rules.recurrence import RULE_GRAMMAR
from flexsvc.rules.schemas import (
    MAX_KEY,
    BatchQuerySchema,
    BatchResponseSchema,
    ErrorEnvelopeSchema,
    GroupFlexLayoutSchema,
    GroupFlexScheduleSchema,
    LayoutQuerySchema,
    ListQuerySchema,
    RecordListResponseSchema,
    RecordResponseSchema,
)

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0.0"
UNDOCUMENTED = "UNDOCUMENTED"
#: Endpoints that serve files, not API operations (the docs page's assets, Flask's static).
EXCLUDED_ENDPOINTS = frozenset({"static", "docs.assets", "docs.init_script"})
IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})

#: Flask URL variable -> its OpenAPI path parameter (the seed's names).
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "group_id": {
        "name": "groupID", "in": "path", "required": True, "description": "Group ID.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_GROUP_ID_LENGTH},
    },
    "key": {
        "name": "groupFlexSchedule_Key", "in": "path", "required": True,
        "description": "The record's key (groupFlexSchedule_Key).",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_KEY},
    },
    "plan_id": {
        "name": "planID", "in": "path", "required": True, "description": "Plan ID.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_PLAN_ID_LENGTH},
    },
    "calendar_year": {
        "name": "calendarYear", "in": "path", "required": True, "description": "Calendar year.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_CALENDAR_YEAR_LENGTH},
    },
}
_RULE_VARIABLE = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")

TAG_SCHEDULES = "GroupFlexSchedule"
TAG_SERVICE = "Service"


def _problem(description: str, **headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": ErrorEnvelopeSchema}},
    }
    if headers:
        response["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                               for name, text in headers.items()}
    return response


def _json(description: str, schema: Any, **headers: str) -> dict[str, Any]:
    response = _problem(description, **headers)
    response["content"] = {"application/json": {"schema": schema}}
    return response


#: Statuses every tenant route can answer, before it does its own work.
_TENANT_PROBLEMS = {
    "400": _problem("Invalid request: missing vbasoftware-database header, malformed JSON, "
                    "wrong body shape, invalid groupID, key or query parameter, or (single-"
                    "record writes) an invalid GroupFlexSchedule."),
    "401": _problem("Missing or invalid credentials.",
                    **{"WWW-Authenticate": "The accepted authentication schemes."}),
    "403": _problem("The target database is unknown or not allowed for these credentials."),
    "404": _problem("The group (or the record) does not exist."),
    "503": _problem("The target database is unreachable; nothing was written.",
                    **{"Retry-After": "Seconds to wait before retrying."}),
}
_WRITE_PROBLEMS = {
    **_TENANT_PROBLEMS,
    "409": _problem("The key exists under another group; that record was not changed."),
    "413": _problem("The body is larger than the configured limit."),
    "415": _problem("Unsupported content type: send application/json, text/json or "
                    "application/*+json."),
    "422": _problem("A referenced GroupFlex parent or schedule type does not exist, or no "
                    "date can be calculated for a rule-based type (a date past the end of the "
                    "GroupFlex's series, or a rule that does not parse or gives no date)."),
}
_CALCULATED = (" For every type but CUSTOM the stored schedule_Date is calculated: the first "
               "date of the GroupFlex's series (the type's rule from the GroupFlex's first "
               "payment date, else its effective date, to its term date) on or after the UTC "
               "day sent.")
_RECORD_BODY = {
    "required": True,
    "content": {"application/json": {"schema": GroupFlexScheduleSchema}},
}
_LOCATION = {"Location": "The URL of the created record."}


def _tenant(operation: dict[str, Any], query: Any = None) -> dict[str, Any]:
    """An authenticated, tenant-scoped operation: the database header, the standard problems."""
    parameters: list[Any] = [DATABASE_HEADER]  # a reference to the component below
    if query is not None:
        parameters.append({"in": "query", "schema": query})
    responses = {**_TENANT_PROBLEMS, **operation.pop("responses")}
    return {"tags": [TAG_SCHEDULES], "parameters": parameters, "responses": responses,
            **operation}


_KEY_IN_USE = ("A request with this Idempotency-Key is still running (after waiting for it "
               "up to the lock timeout); nothing was written. Retry after Retry-After seconds: "
               "the retry gets the first request's answer.")
_KEY_REUSED = ("This Idempotency-Key was already used for a different request (another "
               "method, path, query or body bytes); nothing was written.")
_REPLAYED = {REPLAYED_HEADER: "`true` when this is the recorded answer to an earlier request "
                              "with the same Idempotency-Key, sent again byte for byte "
                              "(nothing was written). Absent otherwise."}


def _idempotent(operation: dict[str, Any]) -> dict[str, Any]:
    """A writing operation: it accepts Idempotency-Key (SPEC §9), may answer 409/422 for it,
    and marks replayed answers."""
    operation["parameters"].append(IDEMPOTENCY_HEADER)
    responses = operation["responses"]
    for status, text in (("409", _KEY_IN_USE), ("422", _KEY_REUSED)):
        if status in responses:
            responses[status] = copy.deepcopy(responses[status])
            responses[status]["description"] += " Or: " + text
        else:
            responses[status] = _problem(text)
    responses["409"].setdefault("headers", {})["Retry-After"] = {
        "description": "Seconds to wait before retrying (with the same key).",
        "schema": {"type": "string"}}
    for status, response in list(responses.items()):
        if status.startswith("2"):
            response = responses[status] = copy.deepcopy(response)
            response.setdefault("headers", {}).update(
                {name: {"description": text, "schema": {"type": "string", "enum": ["true"]}}
                 for name, text in _REPLAYED.items()})
    return operation


def _public(operation: dict[str, Any]) -> dict[str, Any]:
    """An unauthenticated operation (probes, the document itself, the docs page)."""
    return {"tags": [TAG_SERVICE], "security": [], **operation}


#: (OpenAPI path, method) -> operation. Paths use the seed's parameter names.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/groups/{groupID}/flex-schedules-batch", "put"): _idempotent(_tenant({
        "operationId": "createOrUpdateBatchGroupFlexSchedule",
        "summary": "Create or Update Batch GroupFlexSchedule",
        "description": "Create or update many records at once, applied as if one by one in "
                       "request order. The answer is 207 with one result per item, in order "
                       "(201 created, 200 updated, 400 invalid, 409 key under another group, "
                       "422 missing parent or schedule type or no date calculable, 424 not "
                       "applied in an atomic batch, 500 unexpected), also when every item "
                       "failed." + _CALCULATED + " The body then says so: `Created; "
                       "schedule_Date calculated as 2026-02-01T00:00:00`.",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "array", "items": GroupFlexScheduleSchema}}}},
        "responses": {
            "207": _json("One result per item, in request order.", BatchResponseSchema),
            **{s: _WRITE_PROBLEMS[s] for s in ("413", "415")},
        },
    }, BatchQuerySchema)),
    ("/groups/{groupID}/flex-schedules", "get"): _tenant({
        "operationId": "listGroupFlexSchedule",
        "summary": "List GroupFlexSchedule",
        "description": "One page of the group's records, optionally only those of one "
                       "plan_ID, calendar_Year (exact) or schedule_Type (any case). Stable "
                       "order: the sortBy terms, then the key. A page past the end is an empty "
                       "list.",
        "responses": {"200": _json(
            "One page of records.", RecordListResponseSchema,
            **{"X-Total-Count": "Number of the group's records over all pages.",
               "Link": "RFC 8288 links to the first, prev, next and last pages."})},
    }, ListQuerySchema),
    ("/groups/{groupID}/flex-schedules", "post"): _idempotent(_tenant({
        "operationId": "createGroupFlexSchedule",
        "summary": "Create GroupFlexSchedule",
        "description": "Create one record with a server-assigned key: groupFlexSchedule_Key "
                       "must be 0 or left out (any other value is a 400; use PUT to choose "
                       "the key). Same validation and rules as a batch item; an item failure "
                       "is the whole answer's status (400, 409, 422)." + _CALCULATED + " The "
                       "answer holds the record as stored.",
        "requestBody": _RECORD_BODY,
        "responses": {
            "201": _json("Created; the stored record.", RecordResponseSchema, **_LOCATION),
            **{s: _WRITE_PROBLEMS[s] for s in ("409", "413", "415", "422")},
        },
    })),
    ("/groups/{groupID}/flex-schedules/{groupFlexSchedule_Key}", "get"): _tenant({
        "operationId": "getGroupFlexSchedule",
        "summary": "Get GroupFlexSchedule",
        "description": "One record. 404 when it does not exist or belongs to another group.",
        "responses": {"200": _json("The record.", RecordResponseSchema)},
    }),
    ("/groups/{groupID}/flex-schedules/{groupFlexSchedule_Key}", "put"): _idempotent(_tenant({
        "operationId": "updateGroupFlexSchedule",
        "summary": "Update GroupFlexSchedule",
        "description": "Create or update the record with this key, with the rules of a batch "
                       "item: an existing key is updated (200), a key that does not exist is "
                       "created with exactly that key (201). The body's groupFlexSchedule_Key "
                       "may be left out; when sent it must equal the path's key (else 400). "
                       "An item failure is the whole answer's status (400, 409, 422)."
                       + _CALCULATED + " The answer holds the record as stored.",
        "requestBody": _RECORD_BODY,
        "responses": {
            "200": _json("Updated; the stored record.", RecordResponseSchema),
            "201": _json("Created with the path's key; the stored record.",
                         RecordResponseSchema, **_LOCATION),
            **{s: _WRITE_PROBLEMS[s] for s in ("409", "413", "415", "422")},
        },
    })),
    ("/groups/{groupID}/flex-schedules/{groupFlexSchedule_Key}", "delete"): _idempotent(_tenant({
        "operationId": "deleteGroupFlexSchedule",
        "summary": "Delete GroupFlexSchedule",
        "description": "Delete one record. 404 when it does not exist or belongs to another "
                       "group (a record of another group is never touched).",
        "responses": {"204": {"description": "Deleted; no body."}},
    })),
    ("/groups/{groupID}/flexes/{planID}/{calendarYear}/schedule", "put"): _idempotent(_tenant({
        "operationId": "layOutGroupFlexSchedule",
        "summary": "Lay out a GroupFlex's year",
        "description": "In one transaction, the GroupFlex's rows of rule-based types become "
                       "exactly the series of schedule_Type (its rule from the anchor: "
                       "first_Payment_Date when sent, which is then stored on the GroupFlex, "
                       "else the stored one, else the effective date; to the term date). A row "
                       "of that type on a series date is kept (200 `Unchanged`; of two on one "
                       "date the lowest key), each missing date is created with a "
                       "server-assigned key (201 `Created`), every other rule-based row of the "
                       "GroupFlex is deleted (204 `Deleted`). CUSTOM rows are never touched. "
                       "The answer is 207 in the batch envelope: kept and created rows in date "
                       "order, then the deleted ones in date order, then key order; each "
                       "result's `id` holds the groupFlexSchedule_Key and the row's "
                       "schedule_Date. `dryRun=true` answers the same and writes nothing (new "
                       "rows show key 0). A type's rule is RFC 5545 text: " + RULE_GRAMMAR,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": GroupFlexLayoutSchema}}},
        "responses": {
            "207": _json("One result per row kept, created or deleted.", BatchResponseSchema),
            "404": _problem("The group or the GroupFlex (planID, calendarYear) does not "
                            "exist."),
            "409": _problem("No new key can be assigned (the key sequence is used up); "
                            "nothing was written."),
            "422": _problem("schedule_Type is CUSTOM (or another type without a rule), unknown, "
                            "or its rule does not parse or gives no date, or first_Payment_Date "
                            "is outside the GroupFlex's effective and term dates."),
            **{s: _WRITE_PROBLEMS[s] for s in ("413", "415")},
        },
    }, LayoutQuerySchema)),
    ("/openapi.json", "get"): _public({
        "operationId": "getOpenApiDocument",
        "summary": "This OpenAPI document",
        "responses": {"200": {"description": "The OpenAPI 3 document.",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }),
    ("/docs", "get"): _public({
        "operationId": "getDocsPage",
        "summary": "Browsable API documentation (Swagger UI, served from local assets)",
        "responses": {"200": {"description": "An HTML page.",
                              "content": {"text/html": {"schema": {"type": "string"}}}}},
    }),
    ("/healthz", "get"): _public({
        "operationId": "getHealth",
        "summary": "Liveness: the process is alive (no database access)",
        "responses": {"200": {"description": "Alive.",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }),
    ("/readyz", "get"): _public({
        "operationId": "getReadiness",
        "summary": "Readiness: every configured database answers",
        "responses": {
            "200": {"description": "Every configured database is reachable.",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            "503": _problem("Some configured database is unreachable (counts only).",
                            **{"Retry-After": "Seconds to wait before retrying."}),
        },
    }),
    ("/metrics", "get"): _public({
        "operationId": "getMetrics",
        "summary": "Prometheus metrics (all gunicorn workers)",
        "responses": {"200": {"description": "Prometheus text exposition format.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }),
}


def openapi_path(rule: str) -> str:
    """``/groups/<path:group_id>/x`` -> ``/groups/{groupID}/x``."""
    return _RULE_VARIABLE.sub(
        lambda m: "{" + PATH_PARAMETERS.get(m.group(1), {"name": m.group(1)})["name"] + "}",
        rule)


def api_routes(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, lower-case method) of every API route the app serves."""
    return {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules() if rule.endpoint not in EXCLUDED_ENDPOINTS
        for method in (rule.methods or ()) if method not in IGNORED_METHODS
    }


def _security(settings: Settings) -> list[dict[str, list[str]]]:
    """What the configuration demands: both credentials together, or either one."""
    if settings.auth.require == "both":
        return [{"apiKeyAuth": [], "bearerAuth": []}]
    return [{"apiKeyAuth": []}, {"bearerAuth": []}]


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app`` as a dict (built from its URL map and the schemas)."""
    settings: Settings = app.extensions["flexsvc.settings"]
    spec = APISpec(
        title="flexsvc GroupFlexSchedule API", version=API_VERSION,
        openapi_version=OPENAPI_VERSION, plugins=[MarshmallowPlugin()],
        info={"description": "The VBA-style GroupFlexSchedule API over PostgreSQL. Every "
                             "answer is `{data, error, debug}`; errors carry RFC 9457 problem "
                             "details in `error` and the request's `debug.activityID`."},
        security=_security(settings),
        tags=[{"name": TAG_SCHEDULES, "description": "Flex payment schedules of a group."},
              {"name": TAG_SERVICE, "description": "Probes and documentation (no credentials)."}],
    )
    spec.components.security_scheme("apiKeyAuth", {
        "type": "apiKey", "in": "header", "name": API_KEY_HEADER,
        "description": "An API key issued with `flask --app wsgi create-api-key`."})
    spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "A JWT; its user claim is recorded as entry_User/update_User."})
    spec.components.parameter(DATABASE_HEADER, "header", {
        "name": DATABASE_HEADER, "required": True, "schema": {"type": "string"},
        "description": "Target database (tenant), as configured."})
    spec.components.parameter(IDEMPOTENCY_HEADER, "header", {
        "name": IDEMPOTENCY_HEADER, "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 2 * MAX_KEY_LENGTH + 2,
                   "pattern": KEY_PATTERN},
        "description": f"Makes a retry safe (SPEC §9): 1..{MAX_KEY_LENGTH} visible ASCII "
                       "characters, optionally in double quotes (a structured-field string). "
                       "The first request with a key runs; its answer is recorded with its "
                       "writes, in the same transaction, for `[idempotency] ttl_hours` "
                       "(default 24). The same request again (same method, path, query and "
                       "body bytes, from the same API key and JWT user) gets that answer again "
                       f"byte for byte, with `{REPLAYED_HEADER}: true`, and writes nothing; a "
                       "different request with the key is a 422; while the first still runs, "
                       "a retry waits for it (up to the lock timeout, then 409). Dry runs, "
                       "rolled-back atomic batches and whole-request errors are not recorded. "
                       "A malformed key is a 400."})
    spec.components.schema("GroupFlexSchedule", schema=GroupFlexScheduleSchema)
    spec.components.schema("GroupFlexLayout", schema=GroupFlexLayoutSchema)
    spec.components.schema("ErrorEnvelope", schema=ErrorEnvelopeSchema)

    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in EXCLUDED_ENDPOINTS:
            continue
        path = openapi_path(rule.rule)
        operations = {}
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            documented = OPERATIONS.get((path, method.lower()))
            # apispec resolves schema classes in place: give it a copy, keep OPERATIONS intact.
            operations[method.lower()] = copy.deepcopy(documented) if documented else {
                "summary": UNDOCUMENTED,
                "responses": {"default": _problem("Not documented yet.")}}
        spec.path(path=path, operations=operations, parameters=_path_parameters(rule.rule))
    return spec.to_dict()


def _path_parameters(rule: str) -> list[dict[str, Any]]:
    """The rule's URL variables as OpenAPI path parameters, in order."""
    return [
        dict(PATH_PARAMETERS.get(name) or {"name": name, "in": "path", "required": True,
                                            "schema": {"type": "string"}})
        for name in _RULE_VARIABLE.findall(rule)
    ]
