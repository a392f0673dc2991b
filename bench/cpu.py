"""`python -m bench.cpu`: CPU per small batch, the service against the minimal app, in one run.

`make bench` compares requests per second, which on a shared machine move from one 5-second
round to the next. CPU time per request moves much less. This runs the small-batch workload of
`make bench` (wrk, 16 clients, 10-item batches) against the service of the working tree, the
minimal app and, with ``--base REV``, the service of another git revision (checked out in a
temporary worktree), in alternating rounds, and reports for each: requests per second, and the
CPU of its gunicorn workers and of the PostgreSQL server per request. Each target has a database
of its own (a revision's migrations may differ). The server is an embedded PostgreSQL, or
FLEXSVC_BENCH_DSN; then every process named ``postgres`` on the machine is counted.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from bench import small
from bench.scratch import scratch_server
from bench.service import ROOT, Gunicorn, write_config
from bench.workload import prepare_database, reset, small_batches
from flexsvc.ops.embedded import EmbeddedPostgres

EXISTING = 5000


def server_processes(embedded: EmbeddedPostgres | None) -> list[psutil.Process]:
    """The PostgreSQL processes whose CPU is counted."""
    if embedded is not None:
        pid = int((embedded.datadir / "postmaster.pid").read_text().splitlines()[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


def cpu_by_process(processes: list[psutil.Process]) -> dict[int, float]:
    """CPU seconds (user + system) of each process that is still there, by pid."""
    used = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        used[process.pid] = times.user + times.system
    return used


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used in between; a process started in between counts from zero."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    parser.add_argument("--base", help="also run the service of this git revision")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="flexsvc-bench-cpu-"))
    worktree = workdir / "base"
    names = (["base"] if args.base else []) + ["service", "minimal"]
    apps: dict[str, Gunicorn] = {}
    try:
        if args.base:
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.base],
                           cwd=ROOT, check=True, capture_output=True)
        with scratch_server() as server:
            dsns = {name: server.database(f"cpu_{name}") for name in names}
            for name, dsn in dsns.items():
                if name == "base":      # that revision's migrations, by that revision's code
                    subprocess.run([sys.executable, "-c", "import sys; from bench.workload "
                                    "import prepare_database; prepare_database(sys.argv[1], "
                                    "int(sys.argv[2]))", dsn, str(EXISTING)],
                                   cwd=worktree, check=True)
                else:
                    prepare_database(dsn, EXISTING)
            env = {"FLEXSVC_MAX_REQUESTS": "0"}
            headers = {name: write_config(workdir / f"{name}.toml", dsn, 4)
                       for name, dsn in dsns.items()}
            for name in names:
                if name == "minimal":
                    apps[name] = Gunicorn(workdir / "minimal.toml", workdir / "minimal.log",
                                          app="bench.minimal_app:app",
                                          env={**env, "FLEXSVC_BENCH_MINIMAL_DSN": dsns[name],
                                               "FLEXSVC_BENCH_MINIMAL_POOL": "4"})
                else:
                    apps[name] = Gunicorn(workdir / f"{name}.toml", workdir / f"{name}.log",
                                          env=env, root=worktree if name == "base" else ROOT)
            for app in apps.values():
                app.wait_ready()
            runs = measure(apps, dsns, headers, server.embedded, workdir, args)
            report(runs, names, args)
    finally:
        for app in apps.values():
            app.stop()
        if args.base:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT,
                           capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def measure(apps: dict[str, Gunicorn], dsns: dict[str, str], headers: dict[str, dict[str, str]],
            embedded: EmbeddedPostgres | None, workdir: Path,
            args: argparse.Namespace) -> dict[str, list[tuple[float, float, float]]]:
    """Per target and round: (req/s, workers' CPU µs per request, server CPU µs per request)."""
    names = list(apps)
    batches = small_batches(10, EXISTING // 5, EXISTING)
    targets = {name: small.HttpTarget.build(app.port, 200 if name == "minimal" else 207,
                                            headers[name], batches, workdir, name)
               for name, app in apps.items()}
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    for round_no in range(args.rounds + 1):           # round 0 warms up
        for name in names if round_no % 2 else names[::-1]:
            reset(dsns[name], EXISTING)
            workers = apps[name].workers()
            before = cpu_by_process(workers), cpu_by_process(server_processes(embedded))
            run = small.run_wrk(targets[name], args.clients, args.seconds, 2)
            if run.errors:
                raise SystemExit(f"{name}: {run.errors} errors ({run.detail})")
            after = cpu_by_process(workers), cpu_by_process(server_processes(embedded))
            if round_no:
                runs[name].append((run.rate,
                                   cpu_used(before[0], after[0]) / run.requests * 1e6,
                                   cpu_used(before[1], after[1]) / run.requests * 1e6))
                print(f"  round {round_no}: {name} {run.rate:.0f}/s", flush=True)
    return runs


def report(runs: dict[str, list[tuple[float, float, float]]], names: list[str],
           args: argparse.Namespace) -> None:
    print(f"\n{args.clients} clients x 10-item batches, {args.rounds} alternating rounds of "
          f"{args.seconds:g} s; medians; CPU per request\n")
    print("| target | req/s | gunicorn workers | PostgreSQL | total |\n|---|---|---|---|---|")
    for name in names:
        rate, worker, server_cpu = (statistics.median(r[i] for r in runs[name])
                                    for i in range(3))
        label = f"service at {args.base}" if name == "base" else name
        print(f"| {label} | {rate:.0f} | {worker:.0f} µs | {server_cpu:.0f} µs | "
              f"{worker + server_cpu:.0f} µs |")
    minimal = runs["minimal"]
    for name in names[:-1]:
        of_medians = (statistics.median(r[0] for r in runs[name])
                      / statistics.median(r[0] for r in minimal))
        per_round = statistics.median(a[0] / b[0] for a, b in zip(runs[name], minimal,
                                                                  strict=True))
        print(f"{name} / minimal app, req/s: {of_medians:.2f} of medians, {per_round:.2f} "
              "median of per-round ratios")

if __name__ == "__main__":
    main()
