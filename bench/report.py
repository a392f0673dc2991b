"""The bench's summary: markdown tables, printed and written into docs/PERFORMANCE.md."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from pathlib import Path

from bench.small import Run

DOC = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
BIG_BAR, SMALL_BAR, SMALL_AIM = 2.0, 0.70, 0.85

SMALL_LABELS = {
    "service": "(a) service: `PUT …/flex-schedules-batch` through gunicorn",
    "minimal": "(b) minimal Flask app (`bench/minimal_app.py`), same gunicorn settings",
    "bare": "(c) bare SQL: the same upsert from psycopg connections, one transaction each",
    "service-python": "(a) service, load from the Python client",
    "minimal-python": "(b) minimal app, load from the Python client",
}
BIG_LABELS = {
    "floor": "(1) floor: one set-based statement from psycopg",
    "service": "(2) service: one batch, PUT through gunicorn over HTTP",
    "server": "(2) of which inside the service (its request log's duration)",
    "per_item": "(3) statement per item, pipelined (executemany)",
    "round_trips": "(3b) statement per item, one round trip each",
}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def small_ratios(runs: dict[str, list[Run]], top: str, bottom: str) -> tuple[float, float]:
    """(ratio of the median rates, median of the per-round ratios) of two targets."""
    ratio = median([r.rate for r in runs[top]]) / median([r.rate for r in runs[bottom]])
    paired = median([a.rate / b.rate for a, b in zip(runs[top], runs[bottom], strict=True)
                      if b.rate])
    return ratio, paired


def small_table(runs: dict[str, list[Run]], clients: int, size: int, seconds: float,
                generator: str) -> list[str]:
    rounds = len(next(iter(runs.values())))
    lines = [
        f"| {clients} clients x {size}-item batches, {rounds} rounds of {seconds:.0f} s "
        f"(medians) | req/s | min-max | p50 | p99 | errors | load generator CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in SMALL_LABELS.items():
        if name not in runs:
            continue
        rs = runs[name]
        rates = [r.rate for r in rs]
        requests = sum(r.requests for r in rs)
        cpu = sum(r.client_cpu for r in rs)
        wall = sum(r.seconds for r in rs)
        who = ("psycopg (libpq layer)" if name == "bare" else
               "Python threads" if name.endswith("-python") else generator)
        lines.append(
            f"| {label} | **{median(rates):.0f}** | {min(rates):.0f}-{max(rates):.0f} | "
            f"{median([r.p50 for r in rs]) * 1000:.1f} ms | "
            f"{median([r.p99 for r in rs]) * 1000:.1f} ms | {sum(r.errors for r in rs)} | "
            f"{who}: {cpu / max(requests, 1) * 1e6:.0f} µs/req, {cpu / wall:.0%} of a core |")
    lines += ["", "| ratio of requests/s | of medians | median of per-round ratios |",
              "|---|---|---|"]
    pairs = [("service", "minimal", f"service / minimal app (bar >= {SMALL_BAR}, "
                                    f"aim {SMALL_AIM}, 0 errors)"),
             ("service", "bare", "service / bare SQL"),
             ("minimal", "bare", "minimal app / bare SQL"),
             ("service-python", "minimal-python", "service / minimal app, Python client"),
             ("minimal-python", "minimal", "minimal app: Python client / wrk"),
             ("service-python", "service", "service: Python client / wrk")]
    for top, bottom, label in pairs:
        if top in runs and bottom in runs:
            ratio, paired = small_ratios(runs, top, bottom)
            if (top, bottom) == ("service", "minimal"):
                errors = sum(r.errors for r in runs["service"])
                verdict = "PASS" if ratio >= SMALL_BAR and not errors else "FAIL"
                lines.append(f"| {label} | **{ratio:.2f}** ({verdict}) | {paired:.2f} |")
            else:
                lines.append(f"| {label} | {ratio:.2f} | {paired:.2f} |")
    return lines


def big_table(times: dict[str, dict[str, list[float]]], items: int) -> list[str]:
    variants = list(times)
    med = {v: {m: median(t) for m, t in times[v].items()} for v in variants}
    rounds = len(times[variants[0]]["floor"])
    lines = [f"| {items:,} items, half updates, half creates; median (min-max) of {rounds} "
             f"rounds | " + " | ".join(f"all {v.upper()}" for v in variants) + " |",
             "|---" * (len(variants) + 1) + "|"]
    for name, label in BIG_LABELS.items():
        if all(name in times[v] for v in variants):
            lines.append(f"| {label} | " + " | ".join(
                f"{med[v][name] * 1000:.0f} ms ({min(times[v][name]) * 1000:.0f}-"
                f"{max(times[v][name]) * 1000:.0f})" for v in variants) + " |")

    def ratio_row(label: str, top: str, bottom: str) -> None:
        if all(top in times[v] and bottom in times[v] for v in variants):
            lines.append(f"| {label} | " + " | ".join(
                f"{med[v][top] / med[v][bottom]:.2f}" for v in variants) + " |")

    cells = []
    for v in variants:
        ratio = med[v]["service"] / med[v]["floor"]
        cells.append(f"**{ratio:.2f}** ({'PASS' if ratio <= BIG_BAR else 'FAIL'})")
    lines.append(f"| service / floor (bar <= {BIG_BAR}, aim 1.5) | " + " | ".join(cells) + " |")
    paired = [median([s / f for s, f in zip(times[v]["service"], times[v]["floor"], strict=True)])
              for v in variants]
    lines.append("| service / floor, median of the per-round ratios | "
                 + " | ".join(f"{r:.2f}" for r in paired) + " |")
    ratio_row("statement per item (pipelined) / service", "per_item", "service")
    ratio_row("statement per item (pipelined) / floor", "per_item", "floor")
    ratio_row("statement per item (round trip each) / service", "round_trips", "service")
    return lines


def render(*, header: list[str], small: list[str] | None, big: list[str] | None,
           rss: tuple[int, int | None, int | None], items: int, errors: list[str]) -> str:
    lines = [*header, ""]
    if small:
        lines += [*small, ""]
    if big:
        lines += [*big, ""]
    idle, peak, after_small = rss
    lines += ["| gunicorn worker memory (service, the biggest worker) | RSS |", "|---|---|",
              f"| idle, after start | {idle / 2**20:.0f} MiB |"]
    if peak is not None:
        lines.append(f"| peak during a {items:,}-item batch | {peak / 2**20:.0f} MiB |")
    if after_small is not None:
        lines.append(f"| after the small batches | {after_small / 2**20:.0f} MiB |")
    lines.append("")
    lines.append(f"Errors: {len(errors)}" + (": " + "; ".join(errors[:5]) if errors else "."))
    return "\n".join(lines)


def header(*, args_text: str, seconds: float, machine: dict[str, str], settings: str) -> list[str]:
    return [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `make bench{args_text}` "
        f"({seconds:.0f} s in all).",
        "",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), PostgreSQL {machine['pg']} over "
        f"loopback, Python {machine['python']}; load average at the end {machine['load']}. "
        f"gunicorn (service and minimal app): {settings}.",
    ]


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
