"""`python -m bench.profile`: where a 10,000-item batch spends its time, in-process.

Runs the app in this process (Flask test client, no gunicorn) against an embedded PostgreSQL
(or FLEXSVC_BENCH_DSN), the same workload as `make bench`, and prints cProfile's top entries by
own time and by cumulative time. ``--pyinstrument`` uses pyinstrument instead, if installed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

from bench.service import write_config
from bench.workload import GROUP, make_batch, prepare_database, reset
from flexsvc import create_app
from flexsvc.config import load_settings
from flexsvc.embedded import EmbeddedPostgres


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="flexsvc-profile-"))
    admin_dsn = os.environ.get("FLEXSVC_BENCH_DSN")
    server = None
    dbname = f"flexsvc_profile_{uuid.uuid4().hex[:8]}"
    try:
        if not admin_dsn:
            server = EmbeddedPostgres(workdir / "pg")
            admin_dsn = server.start()
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(dbname)))
        dsn = make_conninfo(admin_dsn, dbname=dbname)
        existing = args.items // 2
        prepare_database(dsn, existing)
        headers = write_config(workdir / "bench.toml", dsn, 4)
        app = create_app(load_settings(workdir / "bench.toml"))
        client = app.test_client()
        body = orjson.dumps(make_batch(args.items).items)
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
        else:
            profile = cProfile.Profile()
            times = []
            for _ in range(args.rounds):
                reset(dsn, existing)
                profile.enable()
                started = time.perf_counter()
                client.put(url, data=body, headers=headers)
                times.append(time.perf_counter() - started)
                profile.disable()
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out).strip_dirs()
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
            print(out.getvalue())
            print("profiled request times (ms):", [round(t * 1000) for t in times])
        print("unprofiled request times (ms):", [round(once() * 1000) for _ in range(3)])
        app.extensions["flexsvc.pools"].close()
    finally:
        if admin_dsn:
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    pgsql.Identifier(dbname)))
        if server:
            server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
