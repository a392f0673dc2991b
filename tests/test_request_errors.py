"""SPEC §5: whole-request errors, the envelope on every route, activity IDs, health probes."""

from __future__ import annotations

import time

import pytest

from flexsvc import create_app
from flexsvc.config import settings_from_mapping
from flexsvc.ops.embedded import free_port
from tests.conftest import settings_mapping
from tests.helpers import headers, item, put_batch, rows

URL = "/groups/G1/flex-schedules-batch"


def assert_problem(response, status: int, *fragments: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"data", "error", "debug"}
    assert body["data"] is None
    problem = body["error"]
    assert set(problem) == {"type", "title", "status", "detail", "instance"}
    assert problem["status"] == status
    assert body["debug"]["activityID"] == response.headers["X-Activity-ID"]
    for fragment in fragments:
        assert fragment in problem["detail"]
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "psycopg", "postgresql://", "SELECT", "INSERT"):
        assert leak not in text
    return problem


def test_unknown_route_is_404_envelope(client):
    problem = assert_problem(client.get("/nope"), 404)
    assert problem["instance"] == "/nope"


def test_wrong_method_is_405_envelope_with_allow(client):
    response = client.get(URL, headers=headers())
    assert_problem(response, 405)
    assert "PUT" in response.headers["Allow"]


def test_missing_database_header_is_400(client):
    response = client.put(URL, json=[item(1)], headers=headers(database=None))
    assert_problem(response, 400, "vbasoftware-database")


def test_malformed_json_is_400(client, db):
    response = client.put(URL, data=b'[{"groupFlexSchedule_Key": 1,', headers=headers())
    assert_problem(response, 400, "JSON")
    assert rows(db) == []


@pytest.mark.parametrize("body", [b"{}", b'{"groupFlexSchedule_Key": 1}', b"null", b"5",
                                  b'"text"'])
def test_body_not_an_array_is_400(client, body):
    assert_problem(client.put(URL, data=body, headers=headers()), 400, "array")


@pytest.mark.parametrize("body", [b"", b"   "])
def test_empty_body_is_400(client, body):
    assert_problem(client.put(URL, data=body, headers=headers()), 400)


@pytest.mark.parametrize("body", [b"[NaN]", b"[Infinity]", b"\xff\xfe[]", b"[1,]"])
def test_not_json_is_400(client, body):
    assert_problem(client.put(URL, data=body, headers=headers()), 400)


def test_invalid_group_id_is_400(client):
    response = client.put("/groups/" + "G" * 21 + "/flex-schedules-batch", json=[],
                          headers=headers())
    assert_problem(response, 400, "groupID")
    response = client.put("/groups/G%001/flex-schedules-batch", json=[], headers=headers())
    assert_problem(response, 400, "groupID")


def test_unknown_group_is_404(client, db):
    response = client.put("/groups/NOPE/flex-schedules-batch",
                          json=[item(1, group_ID="NOPE")], headers=headers())
    assert_problem(response, 404, "group")
    assert rows(db) == []


def test_missing_credentials_is_401_with_challenge(client):
    response = client.put(URL, json=[item(1)], headers=headers(key=None, user=None))
    assert_problem(response, 401)
    assert "Bearer" in response.headers["WWW-Authenticate"]


def test_unknown_and_forbidden_database_get_the_same_403(client):
    unknown = client.put(URL, json=[item(1)], headers=headers(database="nosuchdb"))
    forbidden = client.put(URL, json=[item(1)], headers=headers(key="payroll", database="other"))
    first = assert_problem(unknown, 403)
    second = assert_problem(forbidden, 403)
    assert {**first, "instance": None} == {**second, "instance": None}
    assert "nosuchdb" not in unknown.get_data(as_text=True)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/xml", None])
def test_unsupported_content_type_is_415(client, content_type):
    hdrs = headers()
    del hdrs["Content-Type"]
    if content_type:
        hdrs["Content-Type"] = content_type
    assert_problem(client.put(URL, data=b"[]", headers=hdrs), 415)


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "text/json", "application/vnd.vba+json"])
def test_json_content_types_are_accepted(client, content_type):
    response = client.put(URL, data=b"[]", headers=headers(**{"Content-Type": content_type}))
    assert response.status_code == 207


@pytest.fixture
def limited_client(tenant_dsns, clean_db):
    mapping = settings_mapping(tenant_dsns, limits={"max_items": 3, "max_body_bytes": 2000})
    app = create_app(settings_from_mapping(mapping, environ={}))
    yield app.test_client()
    app.extensions["flexsvc.pools"].close()


def test_too_many_items_is_413(limited_client, db):
    assert limited_client.put(URL, json=[item(1)] * 3, headers=headers()).status_code == 207
    response = limited_client.put(URL, json=[item(k) for k in range(1, 5)], headers=headers())
    assert_problem(response, 413, "at most 3")
    assert len(rows(db)) == 1


def test_body_over_byte_limit_is_413(limited_client, db):
    response = limited_client.put(URL, json=[item(1, padding="x" * 3000)], headers=headers())
    assert_problem(response, 413)
    assert rows(db) == []


def test_default_limits_are_16_mib_and_10000_items(settings):
    assert settings.limits.max_body_bytes == 16 * 1024 * 1024
    assert settings.limits.max_items == 10000


@pytest.fixture
def unreachable_client(tenant_dsns, clean_db):
    dsns = dict(tenant_dsns, down=f"postgresql://postgres@127.0.0.1:{free_port()}/down")
    mapping = settings_mapping(dsns, pool={"min_size": 0, "max_size": 2, "wait_timeout": 2.0,
                                           "connect_timeout": 2})
    app = create_app(settings_from_mapping(mapping, environ={}))
    yield app.test_client()
    app.extensions["flexsvc.pools"].close()


def test_unreachable_database_is_503_with_retry_after_within_10s(unreachable_client):
    started = time.monotonic()
    response = unreachable_client.put(URL, json=[item(1)],
                                      headers=headers(key="everything", database="down"))
    assert time.monotonic() - started < 10
    assert_problem(response, 503, "nothing was written")
    assert int(response.headers["Retry-After"]) > 0


def test_readyz_reports_unreachable_database_without_naming_it(unreachable_client):
    response = unreachable_client.get("/readyz")
    assert_problem(response, 503, "1 of 3")
    assert "down" not in response.get_json()["error"]["detail"]


def test_readyz_and_healthz_when_all_up(client):
    assert client.get("/healthz").get_json()["data"] == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["data"] == {"status": "ready", "databases": 2}


def test_activity_id_is_unique_and_echoed(client):
    seen = set()
    for _ in range(5):
        response = put_batch(client, [])
        activity = response.get_json()["debug"]["activityID"]
        assert activity == response.headers["X-Activity-ID"]
        seen.add(activity)
    assert len(seen) == 5


def test_sane_request_id_becomes_the_activity_id(client):
    response = client.put(URL, json=[], headers=headers(**{"X-Request-ID": "req-42.abc:1"}))
    assert response.get_json()["debug"]["activityID"] == "req-42.abc:1"
    assert response.headers["X-Activity-ID"] == "req-42.abc:1"


@pytest.mark.parametrize("offered", ["has space", "x" * 200, "<script>", "a\tb", "ü"])
def test_insane_request_id_is_replaced(client, offered):
    response = client.get("/healthz", headers={"X-Request-ID": offered})
    activity = response.get_json()["debug"]["activityID"]
    assert activity != offered and len(activity) == 32


def test_error_envelope_also_on_errors_before_auth(client):
    problem = assert_problem(client.post(URL), 405)
    assert problem["title"] == "Method Not Allowed"
