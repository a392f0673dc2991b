"""The self-description: ``/openapi.json`` and a Swagger UI page at ``/docs``, no credentials.

Swagger UI's files come from the pinned ``flask-swagger-ui`` wheel (only its ``dist`` folder is
used, not its blueprint), so the page works offline: nothing is loaded from a CDN.
"""

from __future__ import annotations

from html import escape
from importlib.resources import files
from pathlib import Path

from flask import Blueprint, current_app, send_from_directory, url_for
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from flexsvc.http.jsonio import json_response
from flexsvc.http.openapi import build_spec

bp = Blueprint("docs", __name__)
SWAGGER_UI_DIST = Path(str(files("flask_swagger_ui") / "dist"))
LOCAL_ASSETS = Path(__file__).resolve().parents[2] / "static" / "docs"
#: The Swagger UI files the page uses; nothing else from the package is served.
SWAGGER_UI_FILES = frozenset({
    "swagger-ui.css", "index.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
    "favicon-32x32.png", "favicon-16x16.png",
})
_SPEC_CACHE = "flexsvc.openapi"


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3 document, built once per process from the URL map and the schemas."""
    spec = current_app.extensions.get(_SPEC_CACHE)
    if spec is None:
        spec = current_app.extensions[_SPEC_CACHE] = build_spec(current_app)
    return json_response(spec)


@bp.get("/docs")
def docs_page() -> Response:
    """Swagger UI on this service's document, from local assets only."""
    def asset(name: str) -> str:
        return escape(url_for("docs.assets", filename=name))
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>flexsvc API documentation</title>
  <link rel="stylesheet" href="{asset('swagger-ui.css')}">
  <link rel="stylesheet" href="{asset('index.css')}">
  <link rel="icon" type="image/png" href="{asset('favicon-32x32.png')}" sizes="32x32">
</head>
<body>
  <noscript>This page needs JavaScript; the raw document is at
    <a href="{escape(url_for('docs.openapi_document'))}">openapi.json</a>.</noscript>
  <div id="swagger-ui" data-spec-url="{escape(url_for('docs.openapi_document'))}"></div>
  <script src="{asset('swagger-ui-bundle.js')}"></script>
  <script src="{asset('swagger-ui-standalone-preset.js')}"></script>
  <script src="{escape(url_for('docs.init_script'))}"></script>
</body>
</html>
"""
    return current_app.response_class(page, mimetype="text/html")


@bp.get("/docs/assets/<path:filename>")
def assets(filename: str) -> Response:
    """A Swagger UI file from the installed package (404 for anything not on the list)."""
    if filename not in SWAGGER_UI_FILES:
        raise NotFound()
    return send_from_directory(SWAGGER_UI_DIST, filename)


@bp.get("/docs/swagger-init.js")
def init_script() -> Response:
    """The page's start-up script (not inline, so a strict CSP can forbid inline scripts)."""
    return send_from_directory(LOCAL_ASSETS, "swagger-init.js", mimetype="text/javascript")
