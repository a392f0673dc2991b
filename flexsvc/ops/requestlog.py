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
    store = g._get_current_object()
    store.item_statuses = statuses
    metrics.observe_batch(store.get("database"), statuses)


def init_app(app: Flask) -> None:
    @app.before_request
    def _start_clock() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Response) -> Response:
        # The proxies resolved once (each read through them costs a failed lookup and a call).
        store, req = g._get_current_object(), request._get_current_object()
        seconds = time.perf_counter() - store.get("request_started", time.perf_counter())
        rule = req.url_rule
        route = rule.rule if rule else None
        principal = store.get("principal")
        api_key = getattr(principal, "api_key", None)
        database = store.get("database")
        fields = {
            "method": req.method,
            "route": route,
            "status": response.status_code,
            "duration_ms": round(seconds * 1000, 2),
            "database": database,
            "principal": getattr(principal, "user", None),
            "api_key_name": getattr(api_key, "name", None),
        }
        key_digest = store.get("idempotency_key_digest")
        if key_digest is not None:
            outcome = store.get("idempotency", "not_recorded")
            fields["idempotency"] = outcome
            fields["idempotency_key_sha256"] = key_digest
            metrics.observe_idempotency(database, outcome)
        statuses = store.get("item_statuses")
        if statuses is not None:
            fields["items"] = sum(statuses.values())
            fields["item_statuses"] = {str(k): v for k, v in sorted(statuses.items())}
        log.log(logging.WARNING if response.status_code >= 500 else logging.INFO, "request",
                extra=fields)
        metrics.observe_request(req.method, route, response.status_code, seconds)
        return response
