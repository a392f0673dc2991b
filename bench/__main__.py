"""`make bench` / `python -m bench`: the batch endpoint side by side with its ceilings and floors.

One run, no manual setup: an embedded PostgreSQL (or the admin DSN in FLEXSVC_BENCH_DSN), a
fresh bench database, migrated and seeded, the service under a real gunicorn with the project's
gunicorn.conf.py and, for the small batches, the minimal app under the same config. Then:

* 10k (``bench.big``), first: one 10,000-item batch, all CUSTOM and all WEEKLY, against the
  bare set-based statement (SPEC §7: <= 2x) and per-item SQL, in interleaved rounds; the
  service workers' RSS (fresh workers, comparable with earlier runs).
* small (``bench.small``): 10-item batches from 16 concurrent clients against (a) the service,
  (b) the minimal Flask app, (c) bare SQL, in interleaved rounds; ratios service/minimal
  (SPEC §7: >= 0.70) and service/bare SQL; the service workers' RSS afterwards.

Prints the summary and, after a full run, writes it into docs/PERFORMANCE.md (between the bench
markers). Exits non-zero if any request or item was answered wrongly (``--strict``: also if a
SPEC §7 bar is missed).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

from bench import report, small
from bench.big import Errors, big_rounds
from bench.service import Client, Gunicorn, RssSampler, write_config
from bench.workload import VARIANTS, prepare_database, reset, small_batches
from flexsvc.ops.embedded import EmbeddedPostgres

PARTS = ("small", "10k")


def _threshold(value: str) -> int | bool:
    """``off`` (TOML false: never prepare) or a non-negative integer."""
    if value.lower() in ("off", "false", "none"):
        return False
    if not value.isdigit():
        raise argparse.ArgumentTypeError("an integer >= 0 or 'off'")
    return int(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only this part (repeatable); the default runs both")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds of each part")
    parser.add_argument("--items", type=int, default=10_000, help="items per big batch")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="big-batch schedule types, comma-separated (custom,weekly)")
    parser.add_argument("--no-round-trips", action="store_true",
                        help="skip the statement-per-item-with-a-round-trip-each method")
    parser.add_argument("--clients", type=int, default=16, help="concurrent small-batch clients")
    parser.add_argument("--small", type=int, default=10, help="items per small batch")
    parser.add_argument("--seconds", type=int, default=5,
                        help="length of one small-batch run of one target")
    parser.add_argument("--client", choices=("wrk", "python", "both"),
                        help="HTTP load generator (default: wrk when installed); both: also "
                             "run the HTTP targets from the Python client, to compare them")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (event loops)")
    parser.add_argument("--workers", type=int, help="FLEXSVC_WORKERS for both gunicorns")
    parser.add_argument("--threads", type=int, help="FLEXSVC_THREADS for both gunicorns")
    parser.add_argument("--pool-size", type=int, default=4, help="pool max_size per worker")
    parser.add_argument("--prepare-threshold", type=_threshold, metavar="N|off",
                        help="the service's [pool] prepare_threshold (default: its default)")
    parser.add_argument("--max-requests", type=int, default=0,
                        help="FLEXSVC_MAX_REQUESTS (worker recycling) for both gunicorns; "
                             "0, the default, turns recycling off for the run")
    parser.add_argument("--idempotency-key", action="store_true",
                        help="send a fresh Idempotency-Key with every 10k batch (SPEC §9)")
    parser.add_argument("--no-doc", action="store_true", help="do not update PERFORMANCE.md")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 if a SPEC §7 bar is missed")
    args = parser.parse_args(argv)
    args.parts = args.only or list(PARTS)
    args.variant_list = [v.strip().lower() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variant_list) - set(VARIANTS)
    if unknown or not args.variant_list:
        parser.error(f"--variants: choose from {', '.join(VARIANTS)}")
    if args.client is None:
        args.client = "wrk" if small.wrk_available() else "python"
    elif args.client in ("wrk", "both") and not small.wrk_available():
        parser.error("--client wrk: wrk is not installed (apt-get install wrk)")
    return args


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


def small_part(args: argparse.Namespace, dsn: str, service: Gunicorn, minimal: Gunicorn,
               headers: dict[str, str], workdir: Path, errors: Errors) -> tuple[list[str], float]:
    """The small-batch table and the service/minimal ratio."""
    existing = args.items // 2
    half = args.small // 2
    batches = small_batches(args.small, max(1, existing // max(half, 1)), existing)
    http_targets = {
        "service": small.HttpTarget.build(service.port, 207, headers, batches, workdir,
                                          "service"),
        "minimal": small.HttpTarget.build(minimal.port, 200, headers, batches, workdir,
                                          "minimal"),
    }

    def wrk(target: small.HttpTarget) -> small.Target:
        return lambda s: small.run_wrk(target, args.clients, s, args.wrk_threads)

    def python(target: small.HttpTarget) -> small.Target:
        return lambda s: small.run_python_http(target, args.clients, s)

    first = wrk if args.client in ("wrk", "both") else python
    targets = {name: first(t) for name, t in http_targets.items()}
    targets["bare"] = lambda s: small.run_bare_sql(dsn, batches, args.clients, s)
    if args.client == "both":
        targets.update({f"{name}-python": python(t) for name, t in http_targets.items()})
    print(f"small: {args.clients} clients x {args.small}-item batches, {args.rounds} rounds of "
          f"{args.seconds} s per target + warm-up; HTTP load from {args.client}", flush=True)
    runs = small.interleaved_rounds(targets, args.rounds, args.seconds,
                                    lambda: reset(dsn, existing),
                                    lambda message: errors.add(f"small {message}"))
    for name, rs in runs.items():
        for r in rs:
            if r.errors:
                errors.add(f"small {name}: {r.detail}")
    generator = "Python threads" if args.client == "python" else "wrk"
    lines = report.small_table(runs, args.clients, args.small, args.seconds, generator)
    return lines, report.small_ratios(runs, "service", "minimal")[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="flexsvc-bench-"))
    server: EmbeddedPostgres | None = None
    service: Gunicorn | None = None
    minimal: Gunicorn | None = None
    admin_dsn = os.environ.get("FLEXSVC_BENCH_DSN")
    dbname = f"flexsvc_bench_{uuid.uuid4().hex[:8]}"
    errors = Errors()
    bars_met = True
    try:
        if not admin_dsn:
            print("starting an embedded PostgreSQL ...", flush=True)
            server = EmbeddedPostgres.throwaway()
            admin_dsn = server.start()
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(dbname)))
        dsn = make_conninfo(admin_dsn, dbname=dbname)
        prepare_database(dsn, args.items // 2)
        headers = write_config(workdir / "bench.toml", dsn, args.pool_size,
                               args.prepare_threshold)
        gunicorn_env = {"FLEXSVC_MAX_REQUESTS": str(args.max_requests)}
        service = Gunicorn(workdir / "bench.toml", workdir / "service.log",
                           workers=args.workers, threads=args.threads, env=gunicorn_env)
        if "small" in args.parts:
            minimal = Gunicorn(workdir / "bench.toml", workdir / "minimal.log",
                               workers=args.workers, threads=args.threads,
                               app="bench.minimal_app:app",
                               env={**gunicorn_env, "FLEXSVC_BENCH_MINIMAL_DSN": dsn,
                                    "FLEXSVC_BENCH_MINIMAL_POOL": str(args.pool_size)})
            minimal.wait_ready()
        service.wait_ready()
        time.sleep(0.5)
        sampler = RssSampler(service)
        idle_rss = sampler.sample()
        conf = service.settings
        settings = (f"{conf['workers']} workers x {conf['threads']} threads "
                    f"({conf['worker_class']}), pool max_size {args.pool_size} per worker, "
                    f"max_requests {args.max_requests or 'off'}")
        print(f"service on 127.0.0.1:{service.port}"
              + (f", minimal app on 127.0.0.1:{minimal.port}" if minimal else "")
              + f": {settings}", flush=True)
        small_lines = big_lines = None
        after_small_rss = None
        if "10k" in args.parts:      # first: the memory figure is a fresh worker's, as before
            print(f"10k: {args.items:,}-item batches ({', '.join(args.variant_list)}), "
                  f"{args.rounds} rounds + warm-up", flush=True)
            client = Client(service.port, headers, idempotency_keys=args.idempotency_key)
            times = big_rounds(dsn, client, sampler, errors, items=args.items,
                               rounds=args.rounds, variants=args.variant_list,
                               round_trips=not args.no_round_trips)
            client.close()
            big_lines = report.big_table(times, args.items)
            bars_met &= all(report.median(t["service"]) / report.median(t["floor"])
                            <= report.BIG_BAR for t in times.values())
        if "small" in args.parts and minimal:
            small_lines, ratio = small_part(args, dsn, service, minimal, headers, workdir,
                                            errors)
            bars_met &= ratio >= report.SMALL_BAR
            after_small_rss = sampler.sample()
        reset(dsn, args.items // 2)
        cli = " ".join(argv if argv is not None else sys.argv[1:])
        table = report.render(
            header=report.header(args_text=f' BENCH_ARGS="{cli}"' if cli else "",
                                 seconds=time.perf_counter() - began, machine=machine(dsn),
                                 settings=settings),
            small=small_lines, big=big_lines,
            rss=(idle_rss, sampler.peak if big_lines else None, after_small_rss),
            items=args.items,
            errors=errors.messages)
        print("\n" + table + "\n")
        if args.no_doc or args.only:
            print("docs/PERFORMANCE.md not updated (--no-doc or --only)")
        else:
            report.write_doc(table)
            print(f"written to {report.DOC}")
    finally:
        for gunicorn in (service, minimal):
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
        if errors.messages and service:
            print(f"gunicorn logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if errors.messages:
        print(f"{len(errors.messages)} error(s): " + "; ".join(errors.messages[:10]),
              file=sys.stderr)
        return 1
    if args.strict and not bars_met:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
