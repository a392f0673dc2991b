"""Reading what a request sends: tenant headers, JSON bodies, path and query values.

Each helper raises ApiError with a client-safe detail; blueprints stay thin by calling these.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import HTTPException

from flexsvc.config import Settings
from flexsvc.http.auth import Principal, authenticate, authorize_database
from flexsvc.http.errors import ApiError
from flexsvc.http.idempotency import fingerprint_body
from flexsvc.http.jsonio import MalformedJSON, parse_json
from flexsvc.rules.text import is_storable_text

DATABASE_HEADER = "vbasoftware-database"
MAX_GROUP_ID_LENGTH = 20
MAX_PLAN_ID_LENGTH = 20
MAX_CALENDAR_YEAR_LENGTH = 4


def settings() -> Settings:
    # The proxy resolved once: an attribute read through werkzeug's proxy costs a failed
    # lookup and a call each time, and this runs several times per request.
    return current_app._get_current_object().extensions["flexsvc.settings"]


def require_tenant() -> tuple[Principal, str]:
    """Authenticate the caller and resolve the target database (401, 400, 403)."""
    headers, store, config = request.headers, g._get_current_object(), settings()
    principal = authenticate(headers, config)
    store.principal = principal
    name = headers.get(DATABASE_HEADER)
    if name is None or not name.strip():
        raise ApiError(400, f"The {DATABASE_HEADER} header is required.")
    database = authorize_database(principal, name, config)
    store.database = database
    return principal, database


def valid_group_id(group_id: str) -> str:
    """The path's groupID: 1..20 characters PostgreSQL can store."""
    return valid_path_text(group_id, "groupID", MAX_GROUP_ID_LENGTH)


def valid_path_text(value: str, name: str, max_length: int) -> str:
    """A path value that names a stored key column: 1..``max_length`` storable characters."""
    if not 1 <= len(value) <= max_length or not is_storable_text(value):
        raise ApiError(400, f"{name} must be 1..{max_length} characters of text.")
    return value


def _is_json_content_type(mimetype: str) -> bool:
    if mimetype in ("application/json", "text/json"):
        return True
    major, _, minor = mimetype.partition("/")
    return major == "application" and minor.endswith("+json")


def read_json_body(expected: str = "a JSON object") -> Any:
    """The parsed JSON body (415 for other content types, 413 over the byte limit, 400 bad);
    ``expected`` names what the route wants, for the message about an empty body."""
    req = request._get_current_object()
    # The usual header, exactly "application/json", needs no parsing.
    if (req.environ.get("CONTENT_TYPE") != "application/json"
            and not _is_json_content_type(req.mimetype)):
        raise ApiError(415, "Unsupported content type; send application/json, text/json or "
                            "application/*+json.")
    limits = settings().limits
    limit = limits.max_body_bytes
    declared = req.content_length
    if declared is not None and declared > limit:
        raise ApiError(413, f"The body is larger than {limit} bytes.")
    _bound_body_stalls(req.environ, limits.body_stall_seconds)
    try:
        body = req.get_data(cache=False)
    except HTTPException:
        raise
    except Exception as exc:  # the server's body reader: broken chunked framing, a lost client
        raise ApiError(400, "The request body could not be read (broken framing or a dropped "
                            "connection).") from exc
    if len(body) > limit:
        raise ApiError(413, f"The body is larger than {limit} bytes.")
    fingerprint_body(body)
    if not body.strip():
        raise ApiError(400, f"The body is empty; send {expected}.")
    try:
        return parse_json(body)
    except MalformedJSON as exc:
        raise ApiError(400, f"Malformed JSON: {exc}.") from exc


def _bound_body_stalls(environ: dict[str, Any], seconds: float) -> None:
    """gunicorn reads the body from a blocking socket without a timeout: a client that stops
    sending (or vanishes without a FIN) would hold this thread forever. Bound every wait for
    body bytes; gunicorn resets the socket's mode before it reuses the connection."""
    sock = environ.get("gunicorn.socket")
    if sock is not None and hasattr(sock, "settimeout"):
        sock.settimeout(seconds)


def read_json_array() -> list[Any]:
    """The body as a JSON array within the item limit (400 not an array, 413 too many)."""
    body = read_json_body("a JSON array")
    if not isinstance(body, list):
        raise ApiError(400, "The body must be a JSON array of GroupFlexSchedule objects.")
    limit = settings().limits.max_items
    if len(body) > limit:
        raise ApiError(413, f"The batch has {len(body)} items; at most {limit} are accepted.")
    return body


#: ``schema.load({})`` per schema: most requests send no query string, and the defaults do not
#: change (a copy is returned, so callers may keep or change theirs).
_NO_QUERY: dict[Schema, dict[str, Any]] = {}


def query_options(schema: Schema) -> dict[str, Any]:
    """Query parameters loaded through ``schema`` (400 with the failing names)."""
    args = request.args
    if not args and schema in _NO_QUERY:
        return dict(_NO_QUERY[schema])
    try:
        loaded = schema.load(args.to_dict())
    except ValidationError as exc:
        names = ", ".join(sorted(exc.normalized_messages()))
        raise ApiError(400, f"Invalid query parameter(s): {names}.") from exc
    if not args:
        _NO_QUERY[schema] = dict(loaded)
    return loaded
