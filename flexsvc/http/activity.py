"""Activity IDs: one per request, echoed in the body, a response header and every log line."""

from __future__ import annotations

import re
import uuid

from flask import Flask, g, has_request_context, request
from werkzeug.wrappers import Response

ACTIVITY_HEADER = "X-Activity-ID"
REQUEST_ID_HEADER = "X-Request-ID"
# A client's X-Request-ID is reused only when it is a short, printable token.
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def current_activity_id() -> str:
    """The activity ID of the request being served ("-" outside a request)."""
    if not has_request_context():
        return "-"
    store = g._get_current_object()    # one proxy lookup (this runs several times a request)
    activity_id = store.get("activity_id")
    if activity_id is None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        activity_id = offered if SANE_REQUEST_ID.match(offered) else uuid.uuid4().hex
        store.activity_id = activity_id
    return activity_id


def init_app(app: Flask) -> None:
    @app.before_request
    def _assign_activity_id() -> None:
        current_activity_id()

    @app.after_request
    def _echo_activity_id(response: Response) -> Response:
        activity_id = current_activity_id()
        response.headers[ACTIVITY_HEADER] = activity_id
        response.headers[REQUEST_ID_HEADER] = activity_id
        return response
