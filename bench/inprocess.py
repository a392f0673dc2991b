"""`python -m bench.inprocess`: small batches through the WSGI app in this process, one thread.

No gunicorn, no HTTP, no load generator: only the app's own work per request (and libpq's), so
the count repeats from run to run where timings on a shared machine do not. It prints wall and
CPU time per request; for a count that does not depend on the machine at all, run it under
callgrind twice and take the difference (the set-up and the warm-up are the same both times):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench.inprocess --app service --requests 0
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench.inprocess --app service --requests 500

    (Collected instructions of the second - of the first) / 500 = instructions per request.

The service writes its request log lines to stderr, as a worker does (redirect it). The server is
FLEXSVC_BENCH_DSN (an administrator's DSN; a database is created and dropped) or an embedded
PostgreSQL; either way it runs outside valgrind.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from werkzeug.test import EnvironBuilder

from bench.scratch import scratch_server
from bench.service import write_config
from bench.workload import GROUP, prepare_database, small_batches

EXISTING = 5000
WARM_UP = 300


def build_app(name: str, dsn: str, config: Path) -> tuple[Any, dict[str, str], str]:
    """The WSGI app, the headers its requests need and the status it answers a batch with."""
    headers = write_config(config, dsn, 4)
    if name == "minimal":
        from bench.minimal_app import create_app as create_minimal
        return create_minimal(dsn, 4), headers, "200"
    from flexsvc import create_app
    from flexsvc.config import load_settings
    from flexsvc.ops.logs import configure_logging
    configure_logging("INFO")       # a request line per request, on stderr, as in a worker
    return create_app(load_settings(config)), headers, "207"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", choices=("service", "minimal"), default="service")
    parser.add_argument("--requests", type=int, default=2000,
                        help="measured requests, after the warm-up (0: set-up only)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="flexsvc-bench-inprocess-"))
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(workdir / "metrics"))
    (workdir / "metrics").mkdir()
    try:
        with scratch_server() as server:
            dsn = server.database("inprocess")
            prepare_database(dsn, EXISTING)
            app, headers, status = build_app(args.app, dsn, workdir / "bench.toml")
            try:
                run_requests(app, headers, status, args.app, args.requests)
            finally:     # the service's pools, or the minimal app's pool
                (app.extensions.get("flexsvc.pools") or app.extensions["bench.pool"]).close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_requests(app: Any, headers: dict[str, str], status: str, name: str,
                 count: int) -> None:
    """The warm-up, then ``count`` measured requests; prints their cost."""
    requests = []
    for batch in small_batches(10, EXISTING // 5, EXISTING)[:400]:
        body = orjson.dumps(batch)
        environ = EnvironBuilder(path=f"/groups/{GROUP}/flex-schedules-batch", method="PUT",
                                 data=body, headers=headers).get_environ()
        requests.append((environ, body))

    def call(n: int) -> None:
        environ, body = requests[n % len(requests)]
        answered: list[str] = []
        result = app({**environ, "wsgi.input": io.BytesIO(body)},
                     lambda status_line, _headers, _exc=None: answered.append(status_line))
        b"".join(result)
        if hasattr(result, "close"):
            result.close()
        if not answered[0].startswith(status):
            raise SystemExit(f"unexpected answer: {answered[0]}")

    for n in range(WARM_UP):
        call(n)
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(count):
        call(n)
    if count:
        wall = (time.perf_counter() - wall) / count * 1e6
        cpu = (time.process_time() - cpu) / count * 1e6
        print(f"{name}: {count} requests, {wall:.0f} µs wall and {cpu:.0f} µs CPU (this "
              "process) per request")

if __name__ == "__main__":
    main()
