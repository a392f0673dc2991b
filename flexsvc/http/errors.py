"""The one place that builds error envelopes.

Every failure a client can see, from any route, is ``{"data": null, "error": <RFC 9457 problem>,
"debug": {"activityID": ...}}``. Nothing here ever includes exception text from the database or
a stack trace: those go to the log, keyed by the activity ID.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from flask import Flask, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from flexsvc.data.batch import GroupNotFound
from flexsvc.data.db import DatabaseUnavailable, UnknownDatabase
from flexsvc.data.idempotency import KeyInUse, KeyReused
from flexsvc.data.layout import GroupFlexNotFound, KeysExhausted
from flexsvc.data.records import RecordNotFound
from flexsvc.data.writes import WriteContention
from flexsvc.http.activity import current_activity_id
from flexsvc.http.auth import CHALLENGE, Forbidden, Unauthorized
from flexsvc.http.jsonio import json_response
from flexsvc.rules.layout import LayoutRejected

log = logging.getLogger("flexsvc.errors")
RETRY_AFTER_SECONDS = "5"


class ApiError(Exception):
    """A whole-request failure with a status, a client-safe detail and optional headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def envelope(data: object, error: dict | None = None) -> dict:
    """The response body every route returns."""
    return {"data": data, "error": error, "debug": {"activityID": current_activity_id()}}


def problem_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An error response in the standard envelope, with RFC 9457 problem details."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    problem = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path if request else None,
    }
    response = json_response(envelope(None, problem), status)
    response.content_type = "application/problem+json"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


_HTTP_DETAILS = {
    404: "No such resource.",
    405: "The method is not allowed for this resource.",
    413: "The request body is larger than this service accepts.",
    415: "Unsupported content type; send application/json.",
}


def _domain_problem(exc: Exception) -> Response:
    """Map the domain's exceptions to statuses; the mapping lives here and nowhere else."""
    if isinstance(exc, Unauthorized):
        return problem_response(401, str(exc), {"WWW-Authenticate": CHALLENGE})
    if isinstance(exc, (Forbidden, UnknownDatabase)):
        # Same body whether the name is unknown or not allowed, so names cannot be probed.
        return problem_response(403, "The target database is not available to these "
                                     "credentials.")
    if isinstance(exc, GroupNotFound):
        return problem_response(404, "The group does not exist.")
    if isinstance(exc, RecordNotFound):
        return problem_response(404, "No GroupFlexSchedule with this key exists under this "
                                     "group.")
    if isinstance(exc, GroupFlexNotFound):
        return problem_response(404, "The GroupFlex (planID, calendarYear) does not exist in "
                                     "this group.")
    if isinstance(exc, LayoutRejected):
        return problem_response(422, str(exc))
    if isinstance(exc, KeysExhausted):
        return problem_response(409, "No new groupFlexSchedule_Key can be assigned for the rows "
                                     "to create: the key sequence has reached its maximum "
                                     "(2147483647). Nothing was written.")
    if isinstance(exc, KeyReused):
        return problem_response(422, "This Idempotency-Key was already used for a different "
                                     "request (another method, path, query or body); nothing "
                                     "was written. Send a new request with a new key.")
    if isinstance(exc, KeyInUse):
        return problem_response(409, "A request with this Idempotency-Key is still being "
                                     "processed; nothing was written. Retry after it finishes: "
                                     "the retry gets its answer.", {"Retry-After": "1"})
    if isinstance(exc, DatabaseUnavailable):
        return problem_response(503, "The target database is unavailable; nothing was written. "
                                     "Retry later.", {"Retry-After": RETRY_AFTER_SECONDS})
    if isinstance(exc, WriteContention):
        return problem_response(503, "The request kept meeting concurrent changes to the same "
                                     "records; nothing was written. Retry.",
                                {"Retry-After": "1"})
    raise exc


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return problem_response(exc.status, exc.detail, exc.headers)

    for domain_error in (Unauthorized, Forbidden, UnknownDatabase, GroupNotFound,
                         RecordNotFound, GroupFlexNotFound, LayoutRejected, KeysExhausted,
                         KeyReused, KeyInUse, DatabaseUnavailable, WriteContention):
        app.register_error_handler(domain_error, _domain_problem)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        valid_methods = getattr(exc, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        detail = _HTTP_DETAILS.get(status, "The request could not be processed.")
        return problem_response(status, detail, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return problem_response(500, "An unexpected error occurred. Quote the activityID "
                                "when reporting it.")
