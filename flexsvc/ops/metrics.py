"""Prometheus metrics at ``GET /metrics``, correct under several gunicorn workers.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` (set up by ``gunicorn.conf.py``) makes every worker
write its samples to files there; a scrape, whichever worker answers it, merges all files, so
every scrape shows the same totals. Counters and histograms of workers that exited are kept;
pool gauges use ``livesum`` so only live workers count (``child_exit`` marks dead ones).

/metrics needs no credentials, so databases are labelled ``db1``, ``db2``... (sorted configured
names) unless ``[metrics] database_labels = "name"``: tenant names must not be learnable by
anyone who can reach the port. The index ↔ name mapping is logged once at start-up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import Counter as TallyCounter
from typing import Any

from flask import Flask, current_app, g, request
from werkzeug.wrappers import Response

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_ENV):
    # prometheus_client writes into this folder from the first sample on; make sure it exists.
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

from prometheus_client import (  # noqa: E402 - after the folder exists
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder  # noqa: E402

log = logging.getLogger("flexsvc.metrics")

# Requests: a 10,000-item batch takes a second or two, a health check a millisecond.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (0, 1, 10, 50, 100, 500, 1000, 2500, 5000, 10000)

REQUESTS = Counter("flexsvc_http_requests_total", "HTTP requests answered.",
                   ["method", "route", "status"])
LATENCY = Histogram("flexsvc_http_request_duration_seconds",
                    "Time from routing to response, by route and status.",
                    ["method", "route", "status"], buckets=LATENCY_BUCKETS)
BATCH_ITEMS = Histogram("flexsvc_batch_items",
                        "Items per multi-status request (a batch, or a lay-out's rows).",
                        ["database"], buckets=BATCH_SIZE_BUCKETS)
ITEM_RESULTS = Counter("flexsvc_batch_item_results_total",
                       "Items of batches and lay-outs by per-item status (201, 200, 204, 400, "
                       "409, 422, 424, 500).", ["database", "status"])
IDEMPOTENCY_OUTCOMES = ("recorded", "replayed", "not_recorded", "conflict", "in_progress")
IDEMPOTENT_REQUESTS = Counter(
    "flexsvc_idempotent_requests_total",
    "Writing requests sent with an Idempotency-Key, by outcome: recorded (ran, answer kept), "
    "replayed (the recorded answer sent again; nothing written), not_recorded (a dry run, a "
    "rolled-back atomic batch or a whole-request error), conflict (422: the key was used for "
    "another request), in_progress (409: the first request was still running).",
    ["database", "outcome"])
POOL_SIZE = Gauge("flexsvc_db_pool_connections", "Connections open in the pools.",
                  ["database"], multiprocess_mode="livesum")
POOL_IDLE = Gauge("flexsvc_db_pool_connections_idle", "Open connections not in use.",
                  ["database"], multiprocess_mode="livesum")
POOL_MAX = Gauge("flexsvc_db_pool_connections_max", "Upper bound of the pools' size.",
                 ["database"], multiprocess_mode="livesum")
POOL_WAITING = Gauge("flexsvc_db_pool_requests_waiting",
                     "Requests waiting for a connection right now.", ["database"],
                     multiprocess_mode="livesum")
# Cumulative pool statistics, turned into counters (they survive a worker's exit).
POOL_COUNTERS = {
    "requests_queued": Counter("flexsvc_db_pool_requests_queued_total",
                               "Requests that had to wait for a connection.", ["database"]),
    "requests_errors": Counter("flexsvc_db_pool_requests_errors_total",
                               "Requests that got no connection in time.", ["database"]),
    "connections_errors": Counter("flexsvc_db_pool_connection_errors_total",
                                  "Failed attempts to open a connection.", ["database"]),
    "connections_lost": Counter("flexsvc_db_pool_connections_lost_total",
                                "Connections found broken by the pool's check.", ["database"]),
}

UNMATCHED_ROUTE = "<unmatched>"   # 404s: never the raw path (unbounded label values)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SAMPLE_SECONDS = 5.0
AFTER_REQUEST_SECONDS = 0.5


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def database_labels(names: list[str], mode: str) -> dict[str, str]:
    """Label value per configured database name (see the module docstring)."""
    if mode == "name":
        return {name: name for name in names}
    return {name: f"db{i}" for i, name in enumerate(sorted(names), start=1)}


#: Labelled children, by metric and label values: ``labels()`` takes a lock and checks the
#: values on every call; the set of values is small (routes, statuses, databases, outcomes).
_CHILDREN: dict[tuple[object, tuple[str, ...]], Any] = {}


def _child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once per process and label values."""
    key = (metric, values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return child


def _label(database: str | None) -> str:
    labels: dict[str, str] = current_app._get_current_object().extensions["flexsvc.metrics"].labels
    return labels.get(database or "", "unknown")


def observe_request(method: str, route: str | None, status: int, seconds: float) -> None:
    """Count one answered request (called once per request by ``requestlog``)."""
    values = (method if method in KNOWN_METHODS else "OTHER", route or UNMATCHED_ROUTE,
              str(status))
    _child(REQUESTS, *values).inc()
    _child(LATENCY, *values).observe(seconds)
    current_app._get_current_object().extensions["flexsvc.metrics"].start_sampler()


def observe_batch(database: str | None, statuses: TallyCounter[int]) -> None:
    """Count one batch: its size and each item's outcome."""
    label = _label(database)
    _child(BATCH_ITEMS, label).observe(sum(statuses.values()))
    for status, count in statuses.items():
        _child(ITEM_RESULTS, label, str(status)).inc(count)


def observe_idempotency(database: str | None, outcome: str) -> None:
    """Count one request that carried an Idempotency-Key (called by ``requestlog``)."""
    _child(IDEMPOTENT_REQUESTS, _label(database), outcome).inc()


class PoolSampler:
    """Copies this process's pool statistics into the gauges and counters.

    Runs after requests that used a database (at most every half second per process), before
    each scrape, and every few seconds in a daemon thread (so an idle worker's gauges follow
    its pool shrinking).
    """

    def __init__(self, app: Flask, labels: dict[str, str]):
        self.app = app
        self.labels = labels
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._thread_pid: int | None = None
        self._sampled_at = -AFTER_REQUEST_SECONDS

    def sample_now_and_then(self) -> None:
        """``sample`` after a request, at most every ``AFTER_REQUEST_SECONDS`` per process: the
        gauges stay as fresh as a scrape can tell, without sampling every request."""
        now = time.monotonic()
        if now - self._sampled_at >= AFTER_REQUEST_SECONDS:
            self._sampled_at = now
            self.sample()

    def sample(self) -> None:
        stats = self.app.extensions["flexsvc.pools"].stats()
        with self._lock:
            for name, pool in stats.items():
                label = self.labels.get(name, "unknown")
                POOL_SIZE.labels(label).set(pool.get("pool_size", 0))
                POOL_IDLE.labels(label).set(pool.get("pool_available", 0))
                POOL_MAX.labels(label).set(pool.get("pool_max", 0))
                POOL_WAITING.labels(label).set(pool.get("requests_waiting", 0))
                for key, counter in POOL_COUNTERS.items():
                    now = pool.get(key, 0)
                    before = self._seen.get((name, key), 0)
                    delta = now - before if now >= before else now   # pool re-created
                    if delta:
                        counter.labels(label).inc(delta)
                    self._seen[(name, key)] = now

    def start_sampler(self) -> None:
        """Start the periodic sampler once per process (after gunicorn's fork)."""
        if self._thread_pid == os.getpid():
            return
        with self._lock:
            if self._thread_pid == os.getpid():
                return
            self._thread_pid = os.getpid()
        threading.Thread(target=_sample_periodically, args=(weakref.ref(self),),
                         name="flexsvc-pool-metrics", daemon=True).start()


def _sample_periodically(ref: weakref.ref[PoolSampler]) -> None:
    """Sample every few seconds for as long as the app exists (tests create many apps)."""
    while True:
        time.sleep(SAMPLE_SECONDS)
        sampler = ref()
        if sampler is None:
            return
        try:
            sampler.sample()
        except Exception:  # pragma: no cover - never let sampling kill the thread
            log.exception("pool metrics sampling failed")
        del sampler


def render(accept: str | None) -> tuple[bytes, str]:
    """Exposition text (Prometheus or OpenMetrics, as the scraper asks) and its content type:
    all workers' files merged under gunicorn, else this process's registry."""
    encoder, content_type = choose_encoder(accept or "")
    directory = multiprocess_dir()
    if directory is None:
        return encoder(REGISTRY), content_type
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return encoder(registry), content_type


def init_app(app: Flask) -> None:
    settings = app.extensions["flexsvc.settings"]
    labels = database_labels(list(settings.databases), settings.metrics.database_labels)
    sampler = PoolSampler(app, labels)
    app.extensions["flexsvc.metrics"] = sampler
    if settings.metrics.database_labels != "name" and labels:
        log.info("metrics database labels", extra={"database_labels": labels})

    @app.after_request
    def _sample_pool(response: Response) -> Response:
        if g.get("database"):
            sampler.sample_now_and_then()
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition format; no credentials needed, no secrets shown."""
        sampler.sample()
        body, content_type = render(request.headers.get("Accept"))
        return Response(body, headers={"Content-Type": content_type})
