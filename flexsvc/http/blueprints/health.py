"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, current_app
from werkzeug.wrappers import Response

from flexsvc.http.errors import envelope, problem_response
from flexsvc.http.jsonio import json_response
from flexsvc.ops.health import check_databases

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive (no database access)."""
    return json_response(envelope({"status": "ok"}))


@bp.get("/readyz")
def readyz() -> Response:
    """Every configured database answers a trivial query within a few seconds."""
    states = check_databases(current_app.extensions["flexsvc.pools"],
                             current_app.extensions["flexsvc.settings"])
    # Counts only: this route is unauthenticated, and tenant names must not be probeable.
    down = sum(1 for ok in states.values() if not ok)
    if not down:
        return json_response(envelope({"status": "ready", "databases": len(states)}))
    return problem_response(503, f"{down} of {len(states)} configured database(s) are "
                                 "unreachable.", {"Retry-After": "5"})
