"""10,000-item batches: the service against one bare set-based statement and per-item SQL.

For every variant (all CUSTOM, all WEEKLY; see ``workload``) and every method: (1) floor, the
batch as ONE set-based statement from psycopg; (2) service, the batch as one PUT through
gunicorn; (3) one pipelined statement per item; (3b) one statement per item, a round trip
each. All variant x method runs of a round alternate, who goes first rotating, each from the
same seeded state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import orjson
import psycopg

from bench.service import Client, RssSampler
from bench.sqlpaths import run_floor, run_per_item, run_per_item_round_trips
from bench.workload import Batch, make_batch, reset

#: Method names in the order of the report: (1), (2), (3), (3b).
METHODS = ("floor", "service", "per_item", "round_trips")
Method = Callable[[psycopg.Connection], tuple[float, int, int]]


class Errors:
    """Every wrong answer of the run, from any thread."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._lock = threading.Lock()

    def add(self, message: str) -> None:
        with self._lock:
            self.messages.append(message)


def check(errors: Errors, what: str, created: int, updated: int, batch: Batch) -> None:
    half = batch.size - batch.size // 2
    if (created, updated) != (half, batch.size - half):
        errors.add(f"{what}: created {created}, updated {updated}; expected {half} / "
                   f"{batch.size - half}")


def _service(client: Client, body: bytes, errors: Errors, what: str) -> Method:
    def run(_conn: psycopg.Connection) -> tuple[float, int, int]:
        elapsed, status, statuses = client.put_batch(body)
        if status != 207:
            errors.add(f"{what}: HTTP {status}")
        other = sum(n for s, n in statuses.items() if s not in (200, 201))
        if other:
            errors.add(f"{what}: {other} items answered {dict(statuses)}")
        return elapsed, statuses[201], statuses[200]
    return run


def big_rounds(dsn: str, client: Client, sampler: RssSampler, errors: Errors, *, items: int,
               rounds: int, variants: list[str], round_trips: bool) -> dict[str, dict[str, list]]:
    """Times (seconds) per variant and method, plus ``server``: the service's own durations."""
    existing = items // 2
    methods: dict[tuple[str, str], Method] = {}
    batches = {variant: make_batch(items, variant=variant) for variant in variants}
    bodies: dict[str, bytes] = {}
    for variant, batch in batches.items():
        bodies[variant] = orjson.dumps(batch.items)
        methods[variant, "floor"] = lambda conn, b=batch: run_floor(conn, b)
        methods[variant, "service"] = _service(client, bodies[variant], errors,
                                               f"service {variant}")
        methods[variant, "per_item"] = lambda conn, b=batch: run_per_item(conn, b)
        if round_trips:
            methods[variant, "round_trips"] = (
                lambda conn, b=batch: run_per_item_round_trips(conn, b))
    times: dict[str, dict[str, list]] = {v: {m: [] for v2, m in methods if v2 == v}
                                         for v in variants}
    service_order: list[tuple[int, str]] = []      # which service call each log line is
    order = list(methods)
    with psycopg.connect(dsn) as conn:
        for round_no in range(rounds + 1):         # round 0 warms every path up
            last = {}
            for key in order:
                variant, name = key
                reset(dsn, existing)
                elapsed, created, updated = methods[key](conn)
                check(errors, f"{name} {variant}", created, updated, batches[variant])
                last[key] = elapsed
                if name == "service":
                    service_order.append((round_no, variant))
                if round_no:
                    times[variant][name].append(elapsed)
            print(f"  round {round_no or 'warm-up'}: " + ", ".join(
                f"{v} {n} {last[v, n] * 1000:.0f} ms" for v, n in order), flush=True)
            order = order[1:] + order[:1]          # alternate who goes first
    # The service's own duration of each measured batch, from its request log.
    durations = sampler.server.request_durations(items)
    if len(durations) == len(service_order):
        for (round_no, variant), duration in zip(service_order, durations, strict=True):
            if round_no:
                times[variant].setdefault("server", []).append(duration)
    # One more batch per variant, unmeasured, with the workers' RSS sampled every 10 ms
    # (sampling during the measured rounds would take CPU from the 2 cores the rounds share).
    for variant in variants:
        reset(dsn, existing)
        with sampler:
            _, status, _ = client.put_batch(bodies[variant])
        if status != 207:
            errors.add(f"service {variant} (memory run): HTTP {status}")
    reset(dsn, existing)
    return times
