"""Small batches from many concurrent clients: the service, the minimal app and bare SQL.

Three targets get the same batches (``workload.small_batches``) from ``clients`` concurrent
clients, each sending its next batch as soon as the last one is answered (closed loop):

* service: ``PUT /groups/BENCH01/flex-schedules-batch`` through gunicorn (207, every item
  200 or 201);
* minimal: ``bench.minimal_app`` under the same gunicorn config, the same request bytes (200,
  every item 200 or 201);
* bare: ``minimal_app.UPSERT_SQL`` from ``clients`` psycopg connections, one transaction each
  (5 rows created and 5 updated each time).

HTTP load comes from ``wrk`` (C, event loop, keep-alive, Lua replaying prebuilt request bytes,
``wrk_batch.lua``) or, with ``--client python`` or when wrk is missing, from Python threads
sending the same prebuilt bytes over keep-alive sockets. Why wrk: docs/PERFORMANCE.md.
"""

from __future__ import annotations

import http.client
import itertools
import re
import resource
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import pq

from bench.minimal_app import CONNECT_KWARGS, UPSERT_SQL, upsert_params
from bench.workload import GROUP, USER

WRK_SCRIPT = Path(__file__).with_name("wrk_batch.lua")
BATCH_PATH = f"/groups/{GROUP}/flex-schedules-batch"


@dataclass(frozen=True)
class Run:
    """One timed run of one target."""

    requests: int
    seconds: float
    p50: float
    p99: float
    errors: int
    detail: str = ""
    client_cpu: float = 0.0       # seconds of CPU the load generator used for this run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    """(p50, p99) of ``latencies`` (sorted in place)."""
    if not latencies:
        return 0.0, 0.0
    latencies.sort()
    n = len(latencies)
    return latencies[int(0.50 * n)], latencies[min(n - 1, int(0.99 * n))]


def raw_request(port: int, headers: dict[str, str], body: bytes) -> bytes:
    """The bytes of one keep-alive ``PUT`` of ``body`` to the batch route."""
    head = [f"PUT {BATCH_PATH} HTTP/1.1", f"Host: 127.0.0.1:{port}",
            *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class HttpTarget:
    """A gunicorn serving the batch route; every answer must be ``status`` with all items OK."""

    port: int
    status: int
    requests: list[bytes]
    items: int
    request_file: Path

    @classmethod
    def build(cls, port: int, status: int, headers: dict[str, str],
              batches: list[list[dict[str, Any]]], workdir: Path, name: str) -> HttpTarget:
        raws = [raw_request(port, headers, orjson.dumps(b)) for b in batches]
        path = workdir / f"requests-{name}.bin"
        path.write_bytes(b"".join(b"%d\n" % len(r) + r for r in raws))
        return cls(port, status, raws, len(batches[0]), path)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(target: HttpTarget, clients: int, seconds: float, threads: int) -> Run:
    """``clients`` keep-alive connections from wrk for ``seconds`` (whole seconds)."""
    threads = max(1, min(threads, clients))
    before = _children_cpu()
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout",
         "30s", "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{target.port}", "--",
         str(target.request_file), str(target.status), str(target.items), str(threads)],
        capture_output=True, text=True, check=True)
    line = next(ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{"))
    r = orjson.loads(line)
    socket_errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    errors = r["bad_status"] + r["bad_items"] + socket_errors
    detail = (f"HTTP status {r['bad_status']}, items {r['bad_items']}, socket {socket_errors}"
              if errors else "")
    return Run(r["requests"], r["duration_us"] / 1e6, r["p50_us"] / 1e6, r["p99_us"] / 1e6,
               errors, detail, _children_cpu() - before)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def _closed_loop(clients: int, seconds: float,
                 make_client: Callable[[int], Callable[[int], str | None]]) -> Run:
    """``clients`` threads, each calling ``send(n)`` back to back until time is up.

    ``make_client(index)`` runs in the thread (connects) and returns ``send``, which returns
    None for a right answer, else what was wrong."""
    latencies: list[float] = []
    failures: list[str] = []
    cpu = [0.0]
    lock = threading.Lock()
    gate = threading.Barrier(clients + 1)
    stop_at = [0.0]
    # One sequence for all clients (next() on itertools.count is atomic): the requests in
    # flight are always about ``clients`` consecutive ones, as with wrk, so never the same keys.
    sequence = itertools.count()

    def worker(index: int) -> None:
        send = make_client(index)
        mine: list[float] = []
        bad: list[str] = []
        gate.wait()
        cpu_before = _thread_cpu()
        perf = time.perf_counter
        while True:
            started = perf()
            if started >= stop_at[0]:
                break
            try:
                wrong = send(next(sequence))
            except (OSError, http.client.HTTPException, psycopg.Error) as exc:
                wrong = f"{type(exc).__name__}: {exc}"
                send = make_client(index)
            mine.append(perf() - started)
            if wrong:
                bad.append(wrong)
        used = _thread_cpu() - cpu_before
        with lock:
            latencies.extend(mine)
            failures.extend(bad)
            cpu[0] += used

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in workers:
        t.start()
    stop_at[0] = time.perf_counter() + seconds + 0.05
    began = time.perf_counter()
    gate.wait()
    for t in workers:
        t.join()
    wall = time.perf_counter() - began
    p50, p99 = _percentiles(latencies)
    detail = f"{len(failures)} wrong answers, first: {failures[0][:200]}" if failures else ""
    return Run(len(latencies), wall, p50, p99, len(failures), detail, cpu[0])


def run_python_http(target: HttpTarget, clients: int, seconds: float) -> Run:
    """Python threads, one keep-alive socket each, sending the prebuilt request bytes."""
    raws, count = target.requests, len(target.requests)
    good = (b'"status":200,', b'"status":201,')

    def make_client(_index: int) -> Callable[[int], str | None]:
        sock = socket.create_connection(("127.0.0.1", target.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def send(n: int) -> str | None:
            sock.sendall(raws[n % count])
            response = http.client.HTTPResponse(sock, method="PUT")
            response.begin()
            body = response.read()
            if (response.status == target.status
                    and body.count(good[0]) + body.count(good[1]) == target.items):
                return None
            return f"HTTP {response.status}: {body[:200]!r}"
        return send

    return _closed_loop(clients, seconds, make_client)


def _positional(query: str) -> tuple[bytes, list[str]]:
    """``query`` with its %(name)s placeholders numbered $1.. for libpq; the names in order."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", query)))
    text = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", query)
    return text.encode(), names


def _text_param(value: object) -> bytes:
    """A parameter in PostgreSQL's text form (bench values: no quotes, backslashes, braces)."""
    if isinstance(value, list):
        return ("{" + ",".join(f'"{v}"' for v in value) + "}").encode()
    return str(value).encode()


def run_bare_sql(dsn: str, batches: list[list[dict[str, Any]]], clients: int,
                 seconds: float) -> Run:
    """The minimal app's upsert from ``clients`` psycopg connections, one transaction each.

    BEGIN, the upsert (prepared once per connection), COMMIT: the minimal app's three round
    trips. Driven through psycopg's libpq layer (``conn.pgconn``) with every parameter encoded
    beforehand, so the client costs about what pgbench does (the usual ``conn.execute`` costs
    4-5x more client CPU per transaction; on 2 cores that capped the rate, see
    docs/PERFORMANCE.md)."""
    query, names = _positional(UPSERT_SQL)
    params = [[_text_param(p[n]) for n in names]
              for p in (upsert_params(GROUP, USER, b) for b in batches)]
    count, size = len(params), len(batches[0])
    created = sum(1 for it in batches[0] if it["groupFlexSchedule_Key"] == 0)
    connections: list[psycopg.Connection] = []
    lock = threading.Lock()
    tuples_ok, command_ok = pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK

    def make_client(_index: int) -> Callable[[int], str | None]:
        conn = psycopg.connect(dsn, **CONNECT_KWARGS)
        with lock:
            connections.append(conn)
        pgconn = conn.pgconn
        if pgconn.prepare(b"bench_upsert", query).status != command_ok:
            raise RuntimeError(pgconn.error_message.decode(errors="replace"))

        def send(n: int) -> str | None:
            pgconn.exec_(b"BEGIN")
            result = pgconn.exec_prepared(b"bench_upsert", params[n % count])
            if result.status != tuples_ok:
                wrong = result.error_message.decode(errors="replace")
            elif (result.ntuples, sum(result.get_value(i, 1) == b"t" for i in range(size))) != (
                    size, created):
                wrong = f"{result.ntuples} rows, not {size} with {created} created"
            else:
                wrong = None
            if pgconn.exec_(b"ROLLBACK" if wrong else b"COMMIT").status != command_ok:
                wrong = wrong or pgconn.error_message.decode(errors="replace")
            return wrong
        return send

    try:
        return _closed_loop(clients, seconds, make_client)
    finally:
        for conn in connections:
            conn.close()


#: Runs one target for the seconds given.
Target = Callable[[float], Run]


def interleaved_rounds(targets: dict[str, Target], rounds: int, seconds: float,
                       before_each: Callable[[], None],
                       on_error: Callable[[str], None]) -> dict[str, list[Run]]:
    """A short warm-up of every target, then ``rounds`` rounds of ``seconds`` each.

    Within a round the targets run one after the other, each from the same database state
    (``before_each``); who goes first rotates every round, so a noisy neighbour or a drift
    (autovacuum, a growing table) weighs on all targets alike."""
    runs: dict[str, list[Run]] = {name: [] for name in targets}
    order = list(targets)
    for round_no in range(rounds + 1):
        done = {}
        for name in order:
            before_each()
            run = targets[name](seconds if round_no else min(seconds, 2.0))
            done[name] = run
            if round_no:
                runs[name].append(run)
            elif run.errors:       # a warm-up's wrong answers count too
                on_error(f"{name} (warm-up): {run.detail}")
        print(f"  round {round_no or 'warm-up'}: " + ", ".join(
            f"{n} {done[n].rate:.0f}/s" + (f" ({done[n].errors} errors)" if done[n].errors
                                           else "") for n in order), flush=True)
        order = order[1:] + order[:1]
    return runs
