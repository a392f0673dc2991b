"""Logs: one JSON line per request, gunicorn's own lines in the same format, no secrets."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest
import requests

from flexsvc import create_app
from flexsvc.ops.logs import GunicornAccessFormatter, JsonFormatter
from tests.conftest import settings_mapping
from tests.helpers import API_KEYS, JWT_SECRET, headers, item, token
from tests.servers import run_gunicorn, write_config

BATCH_ROUTE = "/groups/<path:group_id>/flex-schedules-batch"
SECRET_VALUE = "ZZSECRETPLAN"   # a record's content: must never be logged


@pytest.mark.slow
def test_gunicorn_writes_one_json_line_per_request_without_secrets(tmp_path: Path, tenant_dsns,
                                                                    clean_db):
    config = write_config(tmp_path / "flexsvc.toml", settings_mapping(tenant_dsns))
    batch = [item(0), item(0, plan_ID=SECRET_VALUE), {"groupFlexSchedule_Key": "bad"}]
    with run_gunicorn(config, workers=2, threads=2) as server:
        url = server.url + "/groups/G1/flex-schedules-batch"
        sent = headers(**{"X-Request-ID": "trace-abc.123"})
        batch_response = requests.put(url, json=batch, headers=sent, timeout=30)
        denied = requests.put(url, json=batch, timeout=10, headers=headers(key=None))
        forbidden = requests.put(url, json=batch, timeout=10, headers=headers(database="other"))
        output = server.output()
        lines = server.log_lines()   # fails on any line that is not JSON

    assert batch_response.status_code == 207
    assert batch_response.json()["debug"]["activityID"] == "trace-abc.123"
    by_activity = {}
    for entry in lines:
        by_activity.setdefault(entry.get("activityID"), []).append(entry)

    (request_line,) = [e for e in by_activity["trace-abc.123"] if e["logger"] == "flexsvc.request"]
    assert request_line["method"] == "PUT"
    assert request_line["route"] == BATCH_ROUTE
    assert request_line["database"] == "main"
    assert request_line["status"] == 207
    assert request_line["principal"] == "alice"
    assert request_line["api_key_name"] == "payroll"
    assert request_line["items"] == 3
    assert request_line["item_statuses"] == {"201": 1, "400": 1, "422": 1}
    assert isinstance(request_line["duration_ms"], float) and request_line["duration_ms"] > 0
    assert isinstance(request_line["pid"], int)

    (access_line,) = [e for e in by_activity["trace-abc.123"] if e["logger"] == "gunicorn.access"]
    assert access_line["method"] == "PUT"
    assert access_line["path"] == "/groups/G1/flex-schedules-batch"
    assert access_line["status"] == 207
    assert access_line["duration_ms"] >= request_line["duration_ms"]

    for response, status in ((denied, 401), (forbidden, 403)):
        activity = response.headers["X-Activity-ID"]
        (line,) = [e for e in by_activity[activity] if e["logger"] == "flexsvc.request"]
        assert line["status"] == status and "items" not in line

    gunicorn_messages = [e["message"] for e in lines if e["logger"] == "gunicorn.error"]
    assert any(m.startswith("Starting gunicorn") for m in gunicorn_messages)
    assert sum(m.startswith("Booting worker") for m in gunicorn_messages) >= 2

    for secret in [SECRET_VALUE, JWT_SECRET, token(), "Bearer ", *tenant_dsns.values(),
                   *(key for key, _ in API_KEYS.values())]:
        assert secret not in output


def test_stack_trace_goes_to_the_log_only(settings):
    app = create_app(settings)

    @app.get("/boom")
    def boom():
        raise RuntimeError("internal detail 42")

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("flexsvc")
    logger.addHandler(handler)
    try:
        response = app.test_client().get("/boom")
    finally:
        logger.removeHandler(handler)
        app.extensions["flexsvc.pools"].close()

    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Traceback" not in body and "internal detail 42" not in body
    activity = response.get_json()["debug"]["activityID"]
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    (error,) = [e for e in entries if e["logger"] == "flexsvc.errors"]
    assert error["activityID"] == activity
    assert "Traceback" in error["exception"] and "internal detail 42" in error["exception"]
    (request_line,) = [e for e in entries if e["logger"] == "flexsvc.request"]
    assert request_line["status"] == 500 and request_line["level"] == "warning"


def test_access_formatter_never_prints_credentials():
    atoms = {"h": "10.0.0.1", "m": "PUT", "U": "/groups/G1/flex-schedules-batch", "s": "207",
             "B": 42, "D": 1500, "a": "curl/8", "H": "HTTP/1.1",
             "q": "atomic=true", "{authorization}i": "Bearer secret-token",
             "{x-api-key}i": "secret-key", "{x-activity-id}o": "act-1"}
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1,
                               '%(h)s "%({authorization}i)s" %({x-api-key}i)s', (atoms,), None)
    entry = json.loads(GunicornAccessFormatter().format(record))
    assert entry["activityID"] == "act-1"
    assert entry["status"] == 207 and entry["duration_ms"] == 1.5 and entry["method"] == "PUT"
    assert "secret" not in json.dumps(entry)


def test_database_error_details_are_redacted():
    """PostgreSQL's DETAIL quotes row values; the traceback is kept, the values are not."""
    try:
        raise RuntimeError('violates check constraint "c"\nDETAIL:  Failing row contains '
                           '(7, G1, ZZSECRETPLAN).')
    except RuntimeError:
        record = logging.getLogger("flexsvc.batch").makeRecord(
            "flexsvc.batch", logging.ERROR, __file__, 1, "write failed", (), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert "Traceback" in entry["exception"] and "check constraint" in entry["exception"]
    assert SECRET_VALUE not in entry["exception"] and "redacted" in entry["exception"]


def test_line_times_are_the_records_own():
    """The formatter reuses the text of the last second it formatted; a record from another
    second (earlier or later) still gets its own time, to the millisecond."""
    formatter = JsonFormatter()

    def time_of(created: float) -> str:
        record = logging.makeLogRecord({"name": "flexsvc.request", "msg": "request",
                                        "levelno": logging.INFO, "levelname": "INFO"})
        record.created, record.msecs = created, (created - int(created)) * 1000
        return json.loads(formatter.format(record))["time"]

    assert time_of(1_796_000_000.25) == "2026-11-30T00:53:20.250Z"
    assert time_of(1_796_000_000.999) == "2026-11-30T00:53:20.999Z"
    assert time_of(1_796_000_001.0) == "2026-11-30T00:53:21.000Z"
    assert time_of(1_795_999_999.5) == "2026-11-30T00:53:19.500Z"
