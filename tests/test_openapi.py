"""/openapi.json: valid OpenAPI 3, generated from the schemas, listing exactly the app's routes."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from flexsvc import create_app
from flexsvc.config import settings_from_mapping
from flexsvc.http.idempotency import KEY_PATTERN, parse_key
from flexsvc.http.openapi import EXCLUDED_ENDPOINTS, UNDOCUMENTED, api_routes
from flexsvc.rules.schemas import GroupFlexScheduleSchema, ItemResultSchema, ProblemSchema
from tests.conftest import settings_mapping

METHODS = {"get", "put", "post", "delete", "patch"}
LAYOUT_PATH = "/groups/{groupID}/flexes/{planID}/{calendarYear}/schedule"
TENANT_PATHS = ("/groups/{groupID}/flex-schedules", "/groups/{groupID}/flex-schedules-batch",
                "/groups/{groupID}/flex-schedules/{groupFlexSchedule_Key}", LAYOUT_PATH)


@pytest.fixture(scope="module")
def spec(app) -> dict:
    response = app.test_client().get("/openapi.json")  # no credentials needed
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def test_the_document_is_valid_openapi_3(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.")


def test_it_lists_exactly_the_apps_routes(app, spec):
    documented = {(path, method) for path, method, _ in operations(spec)}
    assert documented == api_routes(app)
    # Cross-check against the URL map directly, not only through the helper.
    served = {rule.rule for rule in app.url_map.iter_rules()
              if rule.endpoint not in EXCLUDED_ENDPOINTS}
    assert len(served) == len(spec["paths"])
    assert "/groups/<path:group_id>/flex-schedules/<key>" in served
    assert set(TENANT_PATHS) <= set(spec["paths"])
    assert {"/openapi.json", "/docs", "/healthz", "/readyz"} <= set(spec["paths"])


def test_every_operation_is_documented(spec):
    ids = []
    for path, method, operation in operations(spec):
        assert operation.get("summary") and operation["summary"] != UNDOCUMENTED, (path, method)
        assert operation["responses"], (path, method)
        ids.append(operation.get("operationId"))
    assert None not in ids and len(ids) == len(set(ids))


def test_path_parameters_use_the_seeds_names(spec):
    item = spec["paths"]["/groups/{groupID}/flex-schedules/{groupFlexSchedule_Key}"]
    names = {(p["name"], p["in"]) for p in item["parameters"]}
    assert names == {("groupID", "path"), ("groupFlexSchedule_Key", "path")}
    assert spec["paths"]["/groups/{groupID}/flex-schedules-batch"]["parameters"][0]["name"] \
        == "groupID"
    assert [p["name"] for p in spec["paths"][LAYOUT_PATH]["parameters"]] == [
        "groupID", "planID", "calendarYear"]


def test_tenant_routes_need_the_database_header_and_both_credentials(spec):
    schemes = spec["components"]["securitySchemes"]
    assert schemes["apiKeyAuth"] == {"type": "apiKey", "in": "header", "name": "x-api-key",
                                     "description": schemes["apiKeyAuth"]["description"]}
    assert schemes["bearerAuth"]["type"] == "http"
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["bearerAuth"]["bearerFormat"] == "JWT"
    assert spec["security"] == [{"apiKeyAuth": [], "bearerAuth": []}]  # require = "both"
    header = spec["components"]["parameters"]["vbasoftware-database"]
    assert header["in"] == "header" and header["required"] is True
    for path, method, operation in operations(spec):
        refs = [p.get("$ref") for p in operation.get("parameters", [])]
        if path in TENANT_PATHS:
            assert "#/components/parameters/vbasoftware-database" in refs, (path, method)
            assert "security" not in operation  # the document-wide requirement applies
            for status in ("400", "401", "403", "404", "503"):
                assert status in operation["responses"], (path, method, status)
        else:
            assert operation["security"] == [], (path, method)


def test_query_parameters_come_from_the_query_schemas(spec):
    listing = spec["paths"]["/groups/{groupID}/flex-schedules"]["get"]
    query = {p["name"]: p for p in listing["parameters"] if p.get("in") == "query"}
    assert set(query) == {"page", "pageSize", "sortBy", "plan_ID", "calendar_Year",
                          "schedule_Type"}
    assert query["plan_ID"]["schema"]["maxLength"] == 20
    assert query["pageSize"]["schema"]["default"] == 100
    assert query["pageSize"]["schema"]["maximum"] == 1000
    batch = spec["paths"]["/groups/{groupID}/flex-schedules-batch"]["put"]
    assert {p["name"] for p in batch["parameters"] if p.get("in") == "query"} == {
        "atomic", "dryRun"}
    layout = spec["paths"][LAYOUT_PATH]["put"]
    assert {p["name"] for p in layout["parameters"] if p.get("in") == "query"} == {"dryRun"}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def test_bodies_reference_the_marshmallow_schemas(spec):
    schemas = spec["components"]["schemas"]
    wire_names = [f.data_key for f in GroupFlexScheduleSchema().fields.values()]
    record = schemas["GroupFlexSchedule"]
    assert list(record["properties"]) == wire_names
    assert set(record["required"]) == {"groupFlexSchedule_Key", "calendar_Year", "group_ID",
                                       "plan_ID", "schedule_Date", "schedule_Type"}
    assert record["properties"]["entry_Date"]["readOnly"] is True
    assert record["properties"]["groupFlexSchedule_Key"]["maximum"] == 2147483647
    assert list(schemas["ItemResult"]["properties"]) == list(ItemResultSchema().fields)
    assert list(schemas["Problem"]["properties"]) == list(ProblemSchema().fields)

    paths = spec["paths"]
    batch = paths["/groups/{groupID}/flex-schedules-batch"]["put"]
    assert batch["requestBody"]["content"]["application/json"]["schema"] == {
        "type": "array", "items": ref("GroupFlexSchedule")}
    assert batch["responses"]["207"]["content"]["application/json"]["schema"] == \
        ref("BatchResponse")
    assert schemas["BatchResponse"]["properties"]["data"]["items"] == ref("ItemResult")
    problem = batch["responses"]["400"]["content"]["application/problem+json"]["schema"]
    assert problem == ref("ErrorEnvelope")
    assert set(schemas["ErrorEnvelope"]["properties"]) == {"data", "error", "debug"}

    item = paths["/groups/{groupID}/flex-schedules/{groupFlexSchedule_Key}"]
    assert item["get"]["responses"]["200"]["content"]["application/json"]["schema"] == \
        ref("RecordResponse")
    assert set(item["put"]["responses"]) >= {"200", "201", "409", "422"}
    assert set(item["delete"]["responses"]) >= {"204", "404"}
    post = paths["/groups/{groupID}/flex-schedules"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == \
        ref("GroupFlexSchedule")
    assert "Location" in post["responses"]["201"]["headers"]
    listing = paths["/groups/{groupID}/flex-schedules"]["get"]["responses"]["200"]
    assert schemas["RecordListResponse"]["properties"]["data"]["items"] == \
        ref("GroupFlexSchedule")
    assert {"X-Total-Count", "Link"} <= set(listing["headers"])

    layout = paths[LAYOUT_PATH]["put"]
    assert layout["requestBody"]["content"]["application/json"]["schema"] == \
        ref("GroupFlexLayout")
    assert list(schemas["GroupFlexLayout"]["properties"]) == ["schedule_Type",
                                                             "first_Payment_Date"]
    assert schemas["GroupFlexLayout"]["required"] == ["schedule_Type"]
    assert schemas["GroupFlexLayout"]["properties"]["first_Payment_Date"]["format"] == "date"
    assert layout["responses"]["207"]["content"]["application/json"]["schema"] == \
        ref("BatchResponse")
    assert set(layout["responses"]) >= {"207", "400", "401", "403", "404", "413", "415", "422",
                                        "503"}


def test_either_mode_documents_alternative_credentials(tenant_dsns):
    mapping = settings_mapping(tenant_dsns)
    mapping["auth"] = {**mapping["auth"], "require": "either"}
    app = create_app(settings_from_mapping(mapping, environ={}))
    try:
        spec = app.test_client().get("/openapi.json").get_json()
    finally:
        app.extensions["flexsvc.pools"].close()
    validate(spec)
    assert spec["security"] == [{"apiKeyAuth": []}, {"bearerAuth": []}]


def test_the_document_is_stable_between_requests(app, spec):
    assert app.test_client().get("/openapi.json").get_json() == spec


WRITING_OPERATIONS = {
    ("/groups/{groupID}/flex-schedules-batch", "put"): "207",
    ("/groups/{groupID}/flex-schedules", "post"): "201",
    ("/groups/{groupID}/flex-schedules/{groupFlexSchedule_Key}", "put"): "200",
    ("/groups/{groupID}/flex-schedules/{groupFlexSchedule_Key}", "delete"): "204",
    (LAYOUT_PATH, "put"): "207",
}


def test_every_writing_operation_documents_the_idempotency_key(spec):
    """SPEC §9: the header on every writing route (and no other), its 409 and 422 answers, and
    the header that marks a replay on every success."""
    header = spec["components"]["parameters"]["Idempotency-Key"]
    assert header["in"] == "header" and header["required"] is False
    assert header["schema"]["pattern"] == KEY_PATTERN
    key_ref = "#/components/parameters/Idempotency-Key"
    for path, method, operation in operations(spec):
        refs = [p.get("$ref") for p in operation.get("parameters", [])]
        assert (key_ref in refs) == ((path, method) in WRITING_OPERATIONS), (path, method)
        if (path, method) not in WRITING_OPERATIONS:
            continue
        responses = operation["responses"]
        assert "Idempotency-Key" in responses["409"]["description"]
        assert "Retry-After" in responses["409"]["headers"]
        assert "Idempotency-Key" in responses["422"]["description"]
        successes = [status for status in responses if status.startswith("2")]
        assert WRITING_OPERATIONS[(path, method)] in successes
        for status in successes:
            assert "Idempotent-Replayed" in responses[status]["headers"], (path, method, status)
    # The item-level meanings of 409/422 are kept beside the key's.
    post = spec["paths"]["/groups/{groupID}/flex-schedules"]["post"]["responses"]
    assert "another group" in post["409"]["description"]
    assert "GroupFlex" in post["422"]["description"]


@pytest.mark.parametrize("value", ["k" * 255, '"quoted"', r'"a\"b"', 'a"b', "~"])
def test_the_documented_pattern_accepts_what_the_service_accepts(value):
    assert re.fullmatch(KEY_PATTERN, value) and parse_key(value) is not None


@pytest.mark.parametrize("value", ["", "k" * 256, "a b", '"open', 'close"', '""', "é"])
def test_the_documented_pattern_rejects_what_the_service_rejects(value):
    assert not re.fullmatch(KEY_PATTERN, value) and parse_key(value) is None
