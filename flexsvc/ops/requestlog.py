"""One JSON log line per request, and the request metrics, from one clock reading.

The line carries the activity ID, method, route (the URL rule, not the raw path), database,
status, duration, the principal's name and API key name, and for batches and lay-outs the item
count and the count per item status — never credentials, query strings or record contents.
A request with an Idempotency-Key adds ``idempotency`` (recorded, replayed, not_recorded,
conflict: a 422, in_progress: a 409) and ``idempotency_key_sha256`` (16 hex digits of the
key's SHA-256, enough to follow a client's retries; not the key, which the client chose and
may have built from its own identifiers).
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from flask import Flask, g, request
from werkzeug.wrappers import Response

from flexsvc.ops import metrics

log = logging.getLogger("flexsvc.request")


def record_item_statuses(statuses: Counter[int]) -> None:
    """Called by the batch and lay-out blueprints: item counts for the log line and the
    metrics."""
    g.item_statuses = statuses
    metrics.observe_batch(g.get("database"), statuses)


def init_app(app: Flask) -> None:
    @app.before_request
    def _start_clock() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Response) -> Response:
        seconds = time.perf_counter() - g.get("request_started", time.perf_counter())
        route = request.url_rule.rule if request.url_rule else None
        principal = g.get("principal")
        api_key = getattr(principal, "api_key", None)
        fields = {
            "method": request.method,
            "route": route,
            "status": response.status_code,
            "duration_ms": round(seconds * 1000, 2),
            "database": g.get("database"),
            "principal": getattr(principal, "user", None),
            "api_key_name": getattr(api_key, "name", None),
        }
        key_digest = g.get("idempotency_key_digest")
        if key_digest is not None:
            outcome = g.get("idempotency", "not_recorded")
            fields["idempotency"] = outcome
            fields["idempotency_key_sha256"] = key_digest
            metrics.observe_idempotency(g.get("database"), outcome)
        statuses = g.get("item_statuses")
        if statuses is not None:
            fields["items"] = sum(statuses.values())
            fields["item_statuses"] = {str(k): v for k, v in sorted(statuses.items())}
        log.log(logging.WARNING if response.status_code >= 500 else logging.INFO, "request",
                extra=fields)
        metrics.observe_request(request.method, route, response.status_code, seconds)
        return response
