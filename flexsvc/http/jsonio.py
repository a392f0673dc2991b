"""Fast JSON in and out (orjson), with a strict fallback parser for what orjson refuses.

orjson refuses integers beyond 64 bits and lone surrogates, which are valid JSON. Those must
become per-item 400s, not a whole-request "malformed JSON", so such bodies are re-parsed with the
standard library, which keeps big integers exact and rejects NaN/Infinity (not JSON).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask import Flask, current_app
from flask.json.provider import JSONProvider
from werkzeug.wrappers import Response


class MalformedJSON(ValueError):
    """The body is not a JSON document."""


def _reject_constant(name: str) -> Any:
    raise MalformedJSON(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Parse a request body; raise MalformedJSON with a client-safe reason."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJSON("the body is not valid UTF-8") from exc
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except MalformedJSON:
        raise
    except RecursionError as exc:
        raise MalformedJSON("the JSON is nested too deeply") from exc
    except (ValueError, TypeError) as exc:
        raise MalformedJSON("the body is not valid JSON") from exc


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def json_response(body: Any, status: int = 200) -> Response:
    return current_app.response_class(dumps(body), status=status, mimetype="application/json")


class OrjsonProvider(JSONProvider):
    """Flask's JSON provider backed by orjson."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return parse_json(s if isinstance(s, bytes) else s.encode())

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(dumps(obj), mimetype="application/json")


def init_app(app: Flask) -> None:
    app.json = OrjsonProvider(app)
