"""The service under test: a real gunicorn (the project's gunicorn.conf.py) on a free port."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.workload import GROUP, USER
from flexsvc.config import settings_from_mapping
from flexsvc.http.auth import issue_token, new_api_key
from flexsvc.ops.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "bench"


def write_config(path: Path, dsn: str, pool_size: int,
                 prepare_threshold: int | bool | None = None) -> dict[str, str]:
    """Write the TOML config; return the request headers that authenticate against it.

    ``prepare_threshold``: None leaves the service's default; False is TOML's "never prepare".
    """
    threshold = ("" if prepare_threshold is None else
                 f"prepare_threshold = {str(prepare_threshold).lower()}\n")
    api_key, digest = new_api_key()
    jwt_secret = os.urandom(24).hex()
    path.write_text(f"""# Written by `make bench`.
[databases]
{DATABASE} = "{dsn}"

[auth]
require = "both"
jwt_algorithms = ["HS256"]
jwt_secret = "{jwt_secret}"
jwt_audience = "flexsvc"
jwt_user_claim = "sub"

[[api_keys]]
name = "bench"
sha256 = "{digest}"
databases = ["{DATABASE}"]

[pool]
min_size = 1
max_size = {pool_size}
{threshold}""")
    path.chmod(0o600)
    import tomllib
    settings = settings_from_mapping(tomllib.loads(path.read_text()), environ={})
    token = issue_token(settings.auth, USER, ttl_seconds=3600)
    return {"Content-Type": "application/json", "x-api-key": api_key,
            "Authorization": f"Bearer {token}", "vbasoftware-database": DATABASE}


class Gunicorn:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` in the background, output to a log file."""

    def __init__(self, config: Path, log_path: Path, *, workers: int | None = None,
                 threads: int | None = None, app: str | None = None,
                 env: dict[str, str] | None = None, root: Path = ROOT):
        self.port = free_port()
        self.log_path = log_path
        metrics = log_path.with_suffix(".metrics")
        metrics.mkdir(exist_ok=True)
        env = dict(os.environ, FLEXSVC_CONFIG=str(config), FLEXSVC_BIND=f"127.0.0.1:{self.port}",
                   PROMETHEUS_MULTIPROC_DIR=str(metrics), **(env or {}))
        if workers:
            env["FLEXSVC_WORKERS"] = str(workers)
        if threads:
            env["FLEXSVC_THREADS"] = str(threads)
        self.settings = _conf_settings(env)
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(root / "gunicorn.conf.py"),
             app or os.environ.get("FLEXSVC_BENCH_APP", "wsgi:app")],
            cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60, path: str = "/healthz",
                   method: str = "GET") -> None:
        """Until ``method path`` answers below 500 (a 404 or 405 also shows it is serving)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early; see {self.log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request(method, path)
                if conn.getresponse().status < 500:
                    conn.close()
                    if len(self.workers()) >= 1:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not become ready; see {self.log_path}")

    def request_durations(self, items: int) -> list[float]:
        """Server-side durations (seconds) of the logged requests that carried ``items`` items."""
        found = []
        for line in self.log_path.read_bytes().splitlines():
            if not line.startswith(b"{"):
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if entry.get("items") == items and "duration_ms" in entry:
                found.append(entry["duration_ms"] / 1000)
        return found

    def workers(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _conf_settings(env: dict[str, str]) -> dict[str, object]:
    """The values gunicorn.conf.py yields under ``env`` (it reads FLEXSVC_* at import)."""
    import runpy
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        values = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {k: values.get(k) for k in ("workers", "threads", "worker_class")}


class RssSampler:
    """Samples the resident set size of every gunicorn worker while active."""

    def __init__(self, server: Gunicorn, interval: float = 0.01):
        self.server = server
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> int:
        biggest = 0
        for proc in self.server.workers():
            try:
                biggest = max(biggest, proc.memory_info().rss)
            except psutil.Error:
                pass
        return biggest

    def __enter__(self) -> RssSampler:
        def loop() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.sample())
                self._stop.wait(self.interval)
        self._stop.clear()
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


class Client:
    """One keep-alive HTTP connection to the service."""

    def __init__(self, port: int, headers: dict[str, str], *, idempotency_keys: bool = False):
        self.port = port
        self.headers = headers
        self.idempotency_keys = idempotency_keys   # a fresh Idempotency-Key on every PUT
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.path = f"/groups/{GROUP}/flex-schedules-batch"

    def put_batch(self, body: bytes) -> tuple[float, int, Counter[int]]:
        """PUT one batch; return (seconds, HTTP status, Counter of item statuses)."""
        started = time.perf_counter()
        try:
            headers = ({**self.headers, "Idempotency-Key": uuid.uuid4().hex}
                       if self.idempotency_keys else self.headers)
            self.conn.request("PUT", self.path, body=body, headers=headers)
            response = self.conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            return time.perf_counter() - started, 0, Counter()
        elapsed = time.perf_counter() - started
        statuses: Counter[int] = Counter()
        if response.status == 207:
            statuses = Counter(item["status"] for item in orjson.loads(payload)["data"])
        return elapsed, response.status, statuses

    def close(self) -> None:
        self.conn.close()
