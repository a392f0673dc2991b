"""`python -m bench.stages`: a small batch's client CPU, stage by stage, in-process.

The same requests as `python -m bench.inprocess --app service` (one thread, no gunicorn), with
the blueprint's steps, the data layer's and the request hooks wrapped in a timer of the
thread's CPU (``time.thread_time_ns``: system calls included, waiting for the server not).
Unlike callgrind's instruction counts or a hot ``timeit``, this shows what each step costs
where it runs, between the others: in a request, code that a loop of its own keeps in the
caches costs several times more (the request log line: 13 µs in ``timeit``, ~50 µs here).
Stages nest (``upsert_batch`` holds the data layer's), so the column does not add up; each
timer adds about a microsecond. Wall-clock noise moves every row by a few per cent from run
to run: compare runs of the same code, or large differences.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench import inprocess

#: (module, attribute, owner class or None): what is timed.
STAGES: tuple[tuple[str, str, str | None], ...] = (
    ("flexsvc.http.blueprints.batch", "require_tenant", None),
    ("flexsvc.http.blueprints.batch", "idempotency_key", None),
    ("flexsvc.http.blueprints.batch", "query_options", None),
    ("flexsvc.http.blueprints.batch", "read_json_array", None),
    ("flexsvc.http.blueprints.batch", "load_items", None),
    ("flexsvc.http.blueprints.batch", "upsert_batch", None),
    ("flexsvc.http.blueprints.batch", "record_item_statuses", None),
    ("flexsvc.http.blueprints.batch", "_answer", None),
    ("flexsvc.data.batch", "plan_batch", None),
    ("flexsvc.data.store", "upsert_schedules", None),
    ("flexsvc.data.roundtrip", "execute", "StatementQueue"),
    ("flexsvc.data.roundtrip", "sync", "StatementQueue"),
    ("flexsvc.data.roundtrip", "fetchone", "Queued"),
    ("flexsvc.ops.metrics", "observe_request", None),
    ("flexsvc.http.activity", "current_activity_id", None),
)


def _timed(spent: Counter[str], label: str, func: Callable[..., Any]) -> Callable[..., Any]:
    clock = time.thread_time_ns

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return func(*args, **kwargs)
        finally:
            spent[label] += clock() - started
    return timed


def instrument(app: Any, spent: Counter[str]) -> None:
    """Wrap ``STAGES``, the app's request hooks, its WSGI entry point and the log call."""
    import importlib
    import logging

    for module_name, attribute, owner in STAGES:
        target: Any = importlib.import_module(module_name)
        if owner is not None:
            target = getattr(target, owner)
        label = f"{owner or module_name.rsplit('.', 1)[-1]}.{attribute}"
        setattr(target, attribute, _timed(spent, label, getattr(target, attribute)))
    request_log = logging.getLogger("flexsvc.request")
    request_log.log = _timed(spent, "request log line (log.log)", request_log.log)  # type: ignore[method-assign]
    for kind, hooks in (("before", app.before_request_funcs), ("after", app.after_request_funcs)):
        for blueprint, funcs in hooks.items():
            hooks[blueprint] = [_timed(spent, f"{kind}_request {func.__name__}", func)
                                for func in funcs]
    app.wsgi_app = _timed(spent, "WHOLE REQUEST (wsgi_app)", app.wsgi_app)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    spent: Counter[str] = Counter()
    build_app, run_requests = inprocess.build_app, inprocess.run_requests

    def build(name: str, dsn: str, config: Any) -> Any:
        built = build_app(name, dsn, config)
        instrument(built[0], spent)
        return built

    def run(app: Any, headers: dict[str, str], status: str, name: str, count: int) -> None:
        run_requests(app, headers, status, name, 0)        # the warm-up
        spent.clear()
        inprocess.WARM_UP = 0
        run_requests(app, headers, status, name, count)
        print(f"\nthread CPU per request, {count} requests of 10 items (stages nest):")
        for label, nanoseconds in spent.most_common():
            print(f"{nanoseconds / count / 1000:8.1f} µs  {label}")

    inprocess.build_app, inprocess.run_requests = build, run
    inprocess.main(["--app", "service", "--requests", str(args.requests)])


if __name__ == "__main__":
    main()
