"""One JSON log line per request: activity ID, route, database, status, duration, item counts."""

from __future__ import annotations

import logging
import time
from collections import Counter

from flask import Flask, g, request
from werkzeug.wrappers import Response

log = logging.getLogger("flexsvc.request")


def record_item_statuses(statuses: Counter[int]) -> None:
    """Called by the batch blueprint so the request's log line carries its item counts."""
    g.item_statuses = statuses


def init_app(app: Flask) -> None:
    @app.before_request
    def _start_clock() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Response) -> Response:
        started = g.get("request_started", time.perf_counter())
        fields = {
            "method": request.method,
            "route": request.url_rule.rule if request.url_rule else None,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "database": g.get("database"),
            "principal": getattr(g.get("principal"), "user", None),
        }
        statuses = g.get("item_statuses")
        if statuses is not None:
            fields["items"] = sum(statuses.values())
            fields["item_statuses"] = {str(k): v for k, v in sorted(statuses.items())}
        log.info("request", extra=fields)
        return response
