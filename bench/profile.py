"""`python -m bench.profile`: where a 10,000-item batch spends its time, in-process.

Runs the app in this process (Flask test client, no gunicorn) against an embedded PostgreSQL
(or FLEXSVC_BENCH_DSN) with the same workload as `make bench`. By default it prints the
wall-clock median of every phase of the request next to the floor statement's; ``--cprofile``
prints cProfile's top entries, ``--pyinstrument`` a pyinstrument call tree (requirements-dev).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import pstats
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.scratch import scratch_server
from bench.service import write_config
from bench.sqlpaths import run_floor
from bench.workload import GROUP, VARIANTS, make_batch, prepare_database, reset
from flexsvc import create_app
from flexsvc.config import load_settings
from flexsvc.data import batch as batch_module
from flexsvc.data import store
from flexsvc.http.blueprints import batch as blueprint

#: (module, function) pairs timed by the phases mode, in the order a request runs them.
PHASES = [
    (blueprint, "read_json_array"), (blueprint, "load_items"), (store, "begin_batch"),
    (store, "allocate_schedule_keys"), (store, "send_batch_reads"),
    (batch_module, "plan_batch"), (store, "upsert_schedules"),
    (store, "advance_key_sequence"), (batch_module, "_apply_once"),
    (blueprint, "json_response"),
]


def _timed(spent: dict[str, list[float]], name: str, func: Callable[..., Any]) -> Callable:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            spent[name].append(time.perf_counter() - started)
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="custom",
                        help="schedule type of every item (see bench.workload)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cprofile", action="store_true")
    mode.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="flexsvc-profile-"))
    try:
        with scratch_server() as server:
            profile_batches(server.database("profile"), workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def profile_batches(dsn: str, workdir: Path, args: argparse.Namespace) -> None:
    """What ``main`` asked for, on the prepared database ``dsn``."""
    existing = args.items // 2
    prepare_database(dsn, existing)
    headers = write_config(workdir / "bench.toml", dsn, 4)
    app = create_app(load_settings(workdir / "bench.toml"))
    client = app.test_client()
    batch = make_batch(args.items, variant=args.variant)
    body = orjson.dumps(batch.items)
    url = f"/groups/{GROUP}/flex-schedules-batch"

    def once() -> float:
        reset(dsn, existing)
        started = time.perf_counter()
        response = client.put(url, data=body, headers=headers)
        elapsed = time.perf_counter() - started
        assert response.status_code == 207, response.data[:300]
        return elapsed

    once()                                   # warm-up: pool, prepared statements
    if args.pyinstrument:
        from pyinstrument import Profiler
        profiler = Profiler(interval=0.0005)
        for _ in range(args.rounds):
            reset(dsn, existing)
            profiler.start()
            client.put(url, data=body, headers=headers)
            profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
    elif args.cprofile:
        profile = cProfile.Profile()
        for _ in range(args.rounds):
            reset(dsn, existing)
            profile.enable()
            client.put(url, data=body, headers=headers)
            profile.disable()
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
        print(out.getvalue())
    else:
        spent: dict[str, list[float]] = defaultdict(list)
        for module, name in PHASES:
            setattr(module, name, _timed(spent, name, getattr(module, name)))
        totals, floors = [], []
        with psycopg.connect(dsn) as conn:
            for _ in range(args.rounds):
                totals.append(once())
                reset(dsn, existing)
                floors.append(run_floor(conn, batch)[0])
        print(f"{'floor statement (for comparison)':40s} {statistics.median(floors) * 1e3:7.1f}"
              " ms")
        print(f"{'whole request (test client)':40s} {statistics.median(totals) * 1e3:7.1f} ms")
        for _module, name in PHASES:
            if spent[name]:
                print(f"  {name:38s} {statistics.median(spent[name]) * 1e3:7.1f} ms")
    app.extensions["flexsvc.pools"].close()


if __name__ == "__main__":
    main()
