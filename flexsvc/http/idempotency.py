"""The Idempotency-Key header (SPEC §9): the key, the request's fingerprint, answering once.

A writing route calls ``idempotency_key`` right after ``require_tenant`` (a malformed key is a
400 before the body is read), reads its body (``inputs.read_json_body`` adds the bytes to the
fingerprint), and answers through ``answer_once``: without a key that is simply
``answer(write(None))``, exactly as before; with one, the data layer runs the write with an
``IdempotentWrite`` whose ``render`` builds the answer inside the transaction, so the bytes
recorded are the bytes sent. A replay sends the recorded status, body, Content-Type and
Location with ``Idempotent-Replayed: true``; its own activity ID is in ``X-Activity-ID`` (the
body keeps the first request's ``debug.activityID``).

The fingerprint is SHA-256 over the method, the path, the raw query string and the raw body
bytes: a byte-different body is a different request, even when it means the same.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import current_app, g, request
from werkzeug.wrappers import Response

from flexsvc.data.idempotency import (
    IdempotencyScope,
    IdempotentWrite,
    KeyInUse,
    KeyReused,
    RecordedResponse,
    Replay,
)
from flexsvc.http.auth import Principal
from flexsvc.http.errors import ApiError

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
#: 1..255 visible ASCII characters (0x21-0x7E), bare or as a structured-field string (RFC 8941
#: sf-string: in double quotes, with \" and \\ as the only escapes). A bare key neither begins
#: nor ends with a double quote, so an unbalanced quote is never taken as part of a key. Also
#: the OpenAPI document's pattern for the header.
KEY_PATTERN = (r'^(?:[!#-~](?:[!-~]{0,253}[!#-~])?'
               r'|"(?:[!#-\[\]-~]|\\[\\"]){1,255}")$')
_KEY = re.compile(KEY_PATTERN)
_ESCAPE = re.compile(r"\\(.)")
INVALID_KEY = (f"The {HEADER} header must be 1..{MAX_KEY_LENGTH} visible ASCII characters "
               "(no spaces or control characters), optionally in double quotes.")
_FINGERPRINT_VERSION = b"flexsvc-idempotency-1"

T = TypeVar("T")


def parse_key(value: str) -> str | None:
    """The key a header value names, or None when it is not a valid key."""
    if _KEY.fullmatch(value) is None:
        return None
    if value.startswith('"'):
        return _ESCAPE.sub(r"\1", value[1:-1])
    return value


def key_digest(key: str) -> str:
    """What logs show of a key: the first 16 hex digits of its SHA-256 (the key is chosen by
    the client and may carry its identifiers; the digest still correlates retries)."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:16]


@dataclass
class KeyedRequest:
    """A request that carried a valid key: who sent it, and its fingerprint so far."""

    key: str
    api_key_name: str
    jwt_user: str
    fingerprint: Any   # a hashlib SHA-256 object: method, path, query, then the body

    def scope(self) -> IdempotencyScope:
        return IdempotencyScope(self.api_key_name, self.jwt_user, self.key,
                                self.fingerprint.digest())


def idempotency_key(principal: Principal) -> KeyedRequest | None:
    """The request's Idempotency-Key (None without the header; 400 when malformed)."""
    value = request.headers.get(HEADER)
    if value is None:
        return None
    key = parse_key(value)
    if key is None:
        raise ApiError(400, INVALID_KEY)
    fingerprint = hashlib.sha256(_FINGERPRINT_VERSION)
    for part in (request.method.encode(), request.path.encode("utf-8", "surrogatepass"),
                 request.query_string):
        fingerprint.update(len(part).to_bytes(8, "big"))
        fingerprint.update(part)
    api_key = principal.api_key
    keyed = KeyedRequest(key, api_key.name if api_key else "", principal.token_user or "",
                         fingerprint)
    g.idempotency_request = keyed
    g.idempotency_key_digest = key_digest(key)
    return keyed


def fingerprint_body(body: bytes) -> None:
    """Add the request's body bytes to its fingerprint (no-op without an Idempotency-Key)."""
    keyed = g.get("idempotency_request")
    if keyed is not None:
        keyed.fingerprint.update(body)


def answer_once(keyed: KeyedRequest | None, write: Callable[[IdempotentWrite | None], T],
                answer: Callable[[T], Response]) -> Response:
    """Run ``write`` and answer with ``answer(outcome)``; with a key, at most once.

    ``write`` runs the data layer with the IdempotentWrite it gets (None without a key);
    ``answer`` turns its outcome into the response (it may raise ApiError: a whole-request
    error, which is never recorded)."""
    if keyed is None:
        return answer(write(None))
    sent: list[Response] = []

    def render(outcome: Any) -> RecordedResponse:
        response = answer(outcome)
        sent[:] = [response]
        return RecordedResponse(response.status_code, response.get_data(),
                                response.headers.get("Content-Type"),
                                response.headers.get("Location"))

    ttl = current_app.extensions["flexsvc.settings"].idempotency.ttl_seconds
    idempotent = IdempotentWrite(keyed.scope(), render, ttl)
    try:
        outcome = write(idempotent)
    except Replay as replay:
        g.idempotency = "replayed"
        return replayed(replay.response)
    except KeyReused:
        g.idempotency = "conflict"
        raise
    except KeyInUse:
        g.idempotency = "in_progress"
        raise
    if idempotent.recorded is None:     # a dry run, a rolled-back atomic batch
        return answer(outcome)
    g.idempotency = "recorded"
    return sent[0]


def replayed(recorded: RecordedResponse) -> Response:
    """The recorded answer, byte for byte, marked as a replay."""
    response = current_app.response_class(recorded.body, status=recorded.status)
    del response.headers["Content-Type"]
    if recorded.content_type is not None:
        response.headers["Content-Type"] = recorded.content_type
    if recorded.location is not None:
        response.headers["Location"] = recorded.location
    response.headers[REPLAYED_HEADER] = "true"
    return response
