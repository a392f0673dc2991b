"""`make bench` / `python -m bench`: the batch endpoint side by side with bare SQL.

One run, no manual setup: an embedded PostgreSQL (or the admin DSN in FLEXSVC_BENCH_DSN), a
fresh bench database, migrated and seeded, a real gunicorn with the project's gunicorn.conf.py,
then, in alternating rounds from the same state: (1) the floor, one bare set-based statement;
(2) the service, one 10,000-item batch over HTTP; (3) one pipelined statement per item. Then
10-item batches from 16 concurrent clients, and the workers' peak RSS during the 10k batches.
Prints a results table and writes it into docs/PERFORMANCE.md (between the bench markers).
Exits non-zero if any request or item errored (``--strict``: also if service/floor > 2.0).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

from bench.service import Client, Gunicorn, RssSampler, write_config
from bench.sqlpaths import run_floor, run_per_item, run_per_item_round_trips
from bench.workload import Batch, make_batch, prepare_database, reset
from flexsvc.ops.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
TARGET_RATIO = 2.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=10_000, help="items per big batch")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per method")
    parser.add_argument("--clients", type=int, default=16, help="concurrent small-batch clients")
    parser.add_argument("--small", type=int, default=10, help="items per small batch")
    parser.add_argument("--seconds", type=float, default=5.0, help="small-batch phase length")
    parser.add_argument("--workers", type=int, help="FLEXSVC_WORKERS for gunicorn")
    parser.add_argument("--threads", type=int, help="FLEXSVC_THREADS for gunicorn")
    parser.add_argument("--pool-size", type=int, default=4, help="pool max_size per worker")
    parser.add_argument("--prepare-threshold", type=_threshold, metavar="N|off",
                        help="the service's [pool] prepare_threshold (default: its default)")
    parser.add_argument("--compare-prepare-threshold", type=_threshold, metavar="N|off",
                        help="also serve from a second gunicorn with this prepare_threshold: "
                             "its 10k batches alternate with the other methods, and the "
                             "small-batch phase alternates between the two")
    parser.add_argument("--small-reps", type=int, default=1,
                        help="small-batch phases per gunicorn (alternating when comparing)")
    parser.add_argument("--no-round-trips", action="store_true",
                        help="skip the statement-per-item-with-a-round-trip-each method")
    parser.add_argument("--idempotency-key", action="store_true",
                        help="send a fresh Idempotency-Key with every batch (SPEC §9)")
    parser.add_argument("--no-doc", action="store_true", help="do not update PERFORMANCE.md")
    parser.add_argument("--strict", action="store_true", help="exit 1 if service/floor > 2.0")
    return parser.parse_args(argv)


def _threshold(value: str) -> int | bool:
    """``off`` (TOML false: never prepare) or a non-negative integer."""
    if value.lower() in ("off", "false", "none"):
        return False
    if not value.isdigit():
        raise argparse.ArgumentTypeError("an integer >= 0 or 'off'")
    return int(value)


def threshold_label(value: int | bool | None) -> str:
    return "default" if value is None else "off" if value is False else str(value)


ALT = "service_alt"   # the second gunicorn of --compare-prepare-threshold


class Errors:
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


def big_rounds(args: argparse.Namespace, dsn: str, clients: dict[str, Client], errors: Errors,
               sampler: RssSampler) -> dict[str, list[float]]:
    """Alternating rounds of the methods (one per service in ``clients``), each from the same
    seeded state."""
    existing = args.items // 2
    batch = make_batch(args.items)
    body = orjson.dumps(batch.items)
    client = clients["service"]

    def service(name: str) -> Callable[[psycopg.Connection], tuple[float, int, int]]:
        def run(_conn: psycopg.Connection) -> tuple[float, int, int]:
            elapsed, status, statuses = clients[name].put_batch(body)
            if status != 207:
                errors.add(f"{name}: HTTP {status}")
            other = sum(n for s, n in statuses.items() if s not in (200, 201))
            if other:
                errors.add(f"{name}: {other} items answered {dict(statuses)}")
            return elapsed, statuses[201], statuses[200]
        return run

    methods: dict[str, Callable[[psycopg.Connection], tuple[float, int, int]]] = {
        "floor": lambda conn: run_floor(conn, batch),
        **{name: service(name) for name in clients},
        "per_item": lambda conn: run_per_item(conn, batch),
    }
    if not args.no_round_trips:
        methods["round_trips"] = lambda conn: run_per_item_round_trips(conn, batch)
    times: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    with psycopg.connect(dsn) as conn:
        for round_no in range(args.rounds + 1):         # round 0 warms every path up
            last = {}
            for name in order:
                reset(dsn, existing)
                elapsed, created, updated = methods[name](conn)
                check(errors, name, created, updated, batch)
                last[name] = elapsed
                if round_no:
                    times[name].append(elapsed)
            print(f"  round {round_no or 'warm-up'}: " + ", ".join(
                f"{n} {last[n] * 1000:.0f} ms" for n in order), flush=True)
            order = order[1:] + order[:1]                # alternate who goes first
    server_side = server_durations(args, sampler)
    if len(server_side) == args.rounds:
        times["server"] = server_side
    # (5) one more 10k batch, unmeasured, with the workers' RSS sampled every 10 ms (sampling
    # during the measured rounds would take CPU from the 2 cores the rounds share).
    reset(dsn, existing)
    with sampler:
        _, status, _ = client.put_batch(body)
    if status != 207:
        errors.add(f"service (memory run): HTTP {status}")
    reset(dsn, existing)
    return times


def server_durations(args: argparse.Namespace, sampler: RssSampler) -> list[float]:
    """The service's own duration of each measured big batch, from its request log."""
    durations = sampler.server.request_durations(args.items)
    return durations[1:args.rounds + 1]                  # the first one is the warm-up


def small_batches(args: argparse.Namespace, port: int, headers: dict[str, str],
                  errors: Errors) -> dict[str, float]:
    """``clients`` threads, each sending ``small``-item batches back to back for ``seconds``."""
    half = args.small // 2
    latencies: list[float] = []
    failures = Counter()
    lock = threading.Lock()
    start_gate = threading.Barrier(args.clients + 1)

    def worker(index: int) -> None:
        client = Client(port, headers, idempotency_keys=args.idempotency_key)
        slice_start = 1 + index * 300
        bodies = []
        for variant in range(300 // half):
            batch = make_batch(args.small, round_no=variant)
            for i, item in enumerate(batch.items):     # updates of this client's own keys,
                item["groupFlexSchedule_Key"] = (      # then key-0 creates
                    slice_start + variant * half + i if i < half else 0)
            bodies.append(orjson.dumps(batch.items))
        mine: list[float] = []
        start_gate.wait()
        deadline = time.perf_counter() + args.seconds
        n = 0
        while time.perf_counter() < deadline:
            elapsed, status, statuses = client.put_batch(bodies[n % len(bodies)])
            n += 1
            mine.append(elapsed)
            bad = sum(c for s, c in statuses.items() if s not in (200, 201))
            if status != 207 or bad:
                with lock:
                    failures[status if status != 207 else "item"] += 1
        client.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if failures:
        errors.add(f"small batches: failures {dict(failures)}")
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0

    return {"requests": len(latencies), "rps": len(latencies) / wall, "p50": pct(0.50),
            "p99": pct(0.99), "errors": sum(failures.values())}


def combine(phases: list[dict[str, float]]) -> dict[str, float]:
    """Several small-batch phases of one service: medians of the rates, sums of the counts."""
    return {"requests": sum(p["requests"] for p in phases),
            "rps": statistics.median(p["rps"] for p in phases),
            "p50": statistics.median(p["p50"] for p in phases),
            "p99": statistics.median(p["p99"] for p in phases),
            "errors": sum(p["errors"] for p in phases),
            "each": [p["rps"] for p in phases]}


def comparison(args: argparse.Namespace, times: dict[str, list[float]],
               small: dict[str, dict[str, float]]) -> list[str]:
    """The two prepare_threshold settings side by side (--compare-prepare-threshold)."""
    if ALT not in times:
        return []
    a, b = (threshold_label(args.prepare_threshold),
            threshold_label(args.compare_prepare_threshold))
    big = {name: statistics.median(times[name]) for name in ("service", ALT)}
    paired = statistics.median(x / y for x, y in zip(times[ALT], times["service"], strict=True))

    def rates(name: str) -> str:
        return " / ".join(f"{r:.0f}" for r in small[name]["each"])

    return [
        "",
        f"| prepare_threshold: {a} vs {b} | {a} | {b} | {b} / {a} |",
        "|---|---|---|---|",
        f"| {args.items:,}-item batch, median | {big['service'] * 1000:.0f} ms | "
        f"{big[ALT] * 1000:.0f} ms | {big[ALT] / big['service']:.2f} "
        f"(per round {paired:.2f}) |",
        f"| {args.clients} x {args.small} items, req/s (median of phases) | "
        f"{small['service']['rps']:.0f} ({rates('service')}) | "
        f"{small[ALT]['rps']:.0f} ({rates(ALT)}) | "
        f"{small[ALT]['rps'] / small['service']['rps']:.2f} |",
        f"| {args.clients} x {args.small} items, p50 / p99 | "
        f"{small['service']['p50'] * 1000:.1f} / {small['service']['p99'] * 1000:.1f} ms | "
        f"{small[ALT]['p50'] * 1000:.1f} / {small[ALT]['p99'] * 1000:.1f} ms | |",
    ]


def machine(dsn: str) -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(dsn) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "pg": pg,
            "python": platform.python_version(),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def render(args: argparse.Namespace, times: dict[str, list[float]],
           smalls: dict[str, dict[str, float]], rss: tuple[int, int], info: dict[str, str],
           settings: str, errors: Errors, seconds: float) -> str:
    med = {name: statistics.median(values) for name, values in times.items()}
    small = smalls["service"]

    def row(label: str, name: str) -> str:
        values = times[name]
        return (f"| {label} | {med[name] * 1000:.0f} ms | {min(values) * 1000:.0f} ms | "
                f"{max(values) * 1000:.0f} ms |")

    ratio = med["service"] / med["floor"]
    paired = statistics.median(s / f for s, f in zip(times["service"], times["floor"],
                                                     strict=True))
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    n = f"{args.items:,}"
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `make bench` "
        f"({args.rounds} alternating rounds after a warm-up; {seconds:.0f} s in all).",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), PostgreSQL {info['pg']} over "
        f"loopback, Python {info['python']}; load average at the end {info['load']}. "
        f"gunicorn: {settings}, prepare_threshold {threshold_label(args.prepare_threshold)}.",
        "",
        f"| {n} items, half updates, half creates | median | min | max |",
        "|---|---|---|---|",
        row("(1) floor: one set-based statement from psycopg", "floor"),
        row("(2) service: one batch, PUT through gunicorn over HTTP", "service"),
        row("(3) statement per item, pipelined (executemany)", "per_item"),
        *([row("(3b) statement per item, one round trip each", "round_trips")]
          if "round_trips" in times else []),
        *([row("(2) of which inside the service (its request log's duration)", "server")]
          if "server" in times else []),
        "",
        "| ratio (medians) | value |",
        "|---|---|",
        f"| service / floor (target <= {TARGET_RATIO}, aim 1.5) | **{ratio:.2f}** ({verdict}) |",
        f"| service / floor, median of the per-round ratios | {paired:.2f} |",
        f"| statement per item / service | {med['per_item'] / med['service']:.2f} |",
        f"| statement per item / floor | {med['per_item'] / med['floor']:.2f} |",
        *([f"| statement per item, round trip each / service | "
           f"{med['round_trips'] / med['service']:.2f} |"] if "round_trips" in times else []),
        "",
        f"| {args.clients} clients x {args.small}-item batches, {args.seconds:.0f} s | value |",
        "|---|---|",
        f"| requests/s | {small['rps']:.0f} ({small['requests']} requests) |",
        f"| p50 latency | {small['p50'] * 1000:.1f} ms |",
        f"| p99 latency | {small['p99'] * 1000:.1f} ms |",
        f"| errors | {small['errors']} |",
        *comparison(args, times, smalls),
        "",
        "| gunicorn worker memory | RSS |",
        "|---|---|",
        f"| idle, after start | {rss[0] / 2**20:.0f} MiB |",
        f"| peak during the {n}-item batches | {rss[1] / 2**20:.0f} MiB |",
        "",
        f"Errors: {len(errors.messages)}" + (": " + "; ".join(errors.messages[:5])
                                             if errors.messages else "."),
    ]
    return "\n".join(lines)


def write_doc(table: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Performance\n\n## Latest results\n\n"
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="flexsvc-bench-"))
    server: EmbeddedPostgres | None = None
    gunicorn: Gunicorn | None = None
    alternate: Gunicorn | None = None
    admin_dsn = os.environ.get("FLEXSVC_BENCH_DSN")
    dbname = f"flexsvc_bench_{uuid.uuid4().hex[:8]}"
    errors = Errors()
    try:
        if not admin_dsn:
            print("starting an embedded PostgreSQL ...", flush=True)
            server = EmbeddedPostgres.throwaway()
            admin_dsn = server.start()
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(dbname)))
        dsn = make_conninfo(admin_dsn, dbname=dbname)
        prepare_database(dsn, args.items // 2)
        headers = {"service": write_config(workdir / "bench.toml", dsn, args.pool_size,
                                           args.prepare_threshold)}
        gunicorn = Gunicorn(workdir / "bench.toml", workdir / "gunicorn.log",
                            workers=args.workers, threads=args.threads)
        servers = {"service": gunicorn}
        if args.compare_prepare_threshold is not None:
            headers[ALT] = write_config(workdir / "bench-alt.toml", dsn, args.pool_size,
                                        args.compare_prepare_threshold)
            servers[ALT] = alternate = Gunicorn(workdir / "bench-alt.toml",
                                                workdir / "gunicorn-alt.log",
                                                workers=args.workers, threads=args.threads)
            alternate.wait_ready()
        gunicorn.wait_ready()
        time.sleep(0.5)
        sampler = RssSampler(gunicorn)
        idle_rss = sampler.sample()
        conf = gunicorn.settings
        settings = (f"{conf['workers']} workers x {conf['threads']} threads "
                    f"({conf['worker_class']}), pool max_size {args.pool_size} per worker"
                    + (", a fresh Idempotency-Key on every batch" if args.idempotency_key
                       else ""))
        clients = {name: Client(server.port, headers[name], idempotency_keys=args.idempotency_key)
                   for name, server in servers.items()}
        print(f"gunicorn on 127.0.0.1:{gunicorn.port}: {settings}", flush=True)
        print(f"(1)-(3): {args.items:,}-item batches, {args.rounds} rounds + warm-up", flush=True)
        times = big_rounds(args, dsn, clients, errors, sampler)
        for client in clients.values():
            client.close()
        phases: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for rep in range(args.small_reps):
            for name in list(servers)[::1 if rep % 2 == 0 else -1]:   # alternate who goes first
                print(f"(4): {args.clients} clients x {args.small}-item batches for "
                      f"{args.seconds:.0f} s ({name})", flush=True)
                phases[name].append(small_batches(args, servers[name].port, headers[name],
                                                  errors))
                reset(dsn, args.items // 2)
        smalls = {name: combine(values) for name, values in phases.items()}
        info = machine(dsn)
        table = render(args, times, smalls, (idle_rss, sampler.peak), info, settings, errors,
                       time.perf_counter() - began)
        print("\n" + table + "\n")
        if not args.no_doc:
            write_doc(table)
            print(f"written to {DOC.relative_to(ROOT)}")
        ratio = statistics.median(times["service"]) / statistics.median(times["floor"])
    finally:
        if alternate:
            alternate.stop()
        if gunicorn:
            gunicorn.stop()
        if admin_dsn:
            try:
                with psycopg.connect(admin_dsn, autocommit=True) as conn:
                    conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        pgsql.Identifier(dbname)))
            except psycopg.Error:
                pass
        if server:
            server.destroy()
        if errors.messages and gunicorn:
            print(f"gunicorn log kept: {gunicorn.log_path}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if errors.messages:
        print(f"{len(errors.messages)} error(s): " + "; ".join(errors.messages[:10]),
              file=sys.stderr)
        return 1
    if args.strict and ratio > TARGET_RATIO:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
