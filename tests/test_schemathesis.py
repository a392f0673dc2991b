"""A bounded schemathesis run against the app, driven by its own /openapi.json.

Every documented operation gets generated requests, both valid and invalid per the schema
(positive and negative generation), sent with real credentials and tenant; none may answer
5xx, and every answer must conform to the documented responses (content type and body schema).
Bounded: 20 examples per operation and mode, derandomized, no deadline.

(schemathesis' own pytest plugin does not work with pytest 9 yet, so the operations are
iterated here and each is driven by a plain hypothesis test built from its strategy.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from tests.helpers import headers

pytestmark = pytest.mark.slow
EXAMPLES = 20


def run_operation(operation, mode: GenerationMode, sent: dict[str, str],
                  path: dict[str, str] | None = None) -> int:
    calls = []

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        response = case.call(headers=sent)
        calls.append(response.status_code)
        assert response.status_code < 500, (case.method, case.path, response.text[:300])
        case.validate_response(response, checks=[not_a_server_error, content_type_conformance,
                                                 response_schema_conformance])

    try:
        check()
    except Unsatisfiable:
        # Negative mode for an operation without parameters or body: nothing to spoil.
        assert mode == GenerationMode.NEGATIVE and not calls
    return len(calls)


def test_documented_operations_never_fail_and_match_the_document(app, clean_db):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    sent = {k: v for k, v in headers().items() if k != "Content-Type"}
    calls = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            calls[(operation.label, mode.value)] = run_operation(operation, mode, sent)
        if "{groupID}" in operation.path:
            # Random group IDs mostly meet 404: also aim at the seeded group G1.
            calls[(operation.label, "G1")] = run_operation(
                operation, GenerationMode.POSITIVE, sent, {"groupID": "G1"})
    assert len({label for label, _ in calls}) >= 5, calls   # batch, CRUD, health, docs
    assert sum(calls.values()) >= 100, calls
