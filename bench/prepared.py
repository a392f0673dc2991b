"""`python -m bench.prepared`: what server-side prepared statements save, in CPU time.

Comparing throughput (`make bench BENCH_ARGS="--prepare-threshold 5"` against a default run)
is noisy on a shared machine. This measures the cost itself: CPU time (client process and the
PostgreSQL backend serving it, from /proc) per batch, in-process through ``upsert_batch`` on a
one-connection pool, for 10-item batches (5 updates + 5 key-0 creates) and one 10,000-item batch,
with ``prepare_threshold`` off and at 5, in alternating blocks. CPU time hardly depends on what else
the machine runs. Linux only (reads /proc/PID/stat of the backend, so the server must be local).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

from bench.workload import GROUP, USER, make_batch, prepare_database, reset
from flexsvc.config import settings_from_mapping
from flexsvc.data.batch import upsert_batch
from flexsvc.data.db import Pools
from flexsvc.ops.embedded import EmbeddedPostgres
from flexsvc.rules.schemas import ScheduleInput

TICK = os.sysconf("SC_CLK_TCK")
SETTINGS = {"off": False, "5": 5}


def backend_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def entries(size: int, round_no: int, existing: int) -> list[ScheduleInput]:
    """``size`` items of the bench workload: half updates of existing keys, half key-0 creates."""
    batch = make_batch(size, round_no=round_no)
    half = size // 2
    return [ScheduleInput(1 + (round_no * half + i) % existing if i < half else 0, GROUP,
                          it["plan_ID"], it["calendar_Year"], batch.schedule_dates[i],
                          batch.schedule_types[i])
            for i, it in enumerate(batch.items)]


def measure(pools: Pools, pool_settings, batches: list[list[ScheduleInput]]) -> tuple:
    """(wall, client CPU, server CPU) per batch, in milliseconds."""
    with pools.connection("bench") as conn:
        pid = conn.info.backend_pid
    wall, client, server = time.perf_counter(), time.process_time(), backend_cpu(pid)
    for batch in batches:
        upsert_batch(pools, "bench", pool_settings, GROUP, batch, USER)
    n = len(batches)
    return ((time.perf_counter() - wall) * 1000 / n, (time.process_time() - client) * 1000 / n,
            (backend_cpu(pid) - server) * 1000 / n)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prepared", description=__doc__)
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks per setting")
    parser.add_argument("--small", type=int, default=300, help="10-item batches per block")
    args = parser.parse_args()
    existing = 5000
    admin_dsn = os.environ.get("FLEXSVC_BENCH_DSN")
    server = None
    dbname = f"flexsvc_prepared_{uuid.uuid4().hex[:8]}"
    if not admin_dsn:
        server = EmbeddedPostgres.throwaway()
        admin_dsn = server.start()
    try:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(dbname)))
        dsn = make_conninfo(admin_dsn, dbname=dbname)
        prepare_database(dsn, existing)
        pools = {}
        for label, threshold in SETTINGS.items():
            settings = settings_from_mapping({
                "databases": {"bench": dsn}, "auth": {"jwt_secret": "x" * 32},
                "pool": {"min_size": 1, "max_size": 1, "prepare_threshold": threshold}},
                environ={})
            pools[label] = (Pools(settings), settings.pool_for("bench"))
        small = [entries(10, n, existing) for n in range(args.small)]
        big = [entries(10_000, 0, existing)]
        results: dict[tuple[str, str], list[tuple]] = {}
        for block in range(args.blocks + 1):              # block 0 warms up (and prepares)
            order = list(SETTINGS) if block % 2 == 0 else list(SETTINGS)[::-1]
            for label in order:
                pool, pool_settings = pools[label]
                for kind, batches in (("10 items", small), ("10,000 items", big)):
                    reset(dsn, existing)
                    value = measure(pool, pool_settings, batches)
                    if block:
                        results.setdefault((kind, label), []).append(value)
        print("| batch | prepare_threshold | wall ms | client CPU ms | server CPU ms |\n"
              "|---|---|---|---|---|")
        for (kind, label), values in results.items():
            wall, client, backend = (statistics.median(v[i] for v in values) for i in range(3))
            print(f"| {kind} | {label} | {wall:.2f} | {client:.2f} | {backend:.2f} |")
        for pool, _ in pools.values():
            pool.close()
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                pgsql.Identifier(dbname)))
        if server:
            server.destroy()


if __name__ == "__main__":
    main()
