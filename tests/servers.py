"""Real servers for tests: gunicorn with the project's config, PgBouncer, a primary with a
synchronous standby, TOML config files.

``run_gunicorn`` is shared by several test modules; keep its interface stable:

    with run_gunicorn(config_path, workers=2, threads=4) as server:
        requests.get(server.url + "/healthz")
        server.log_lines()   # every JSON line gunicorn and the app wrote so far

Every server listens on a free 127.0.0.1 port and is stopped (and its children with it) when
the ``with`` block ends, also when the test fails.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

from flexsvc.ops.embedded import EmbeddedPostgres, free_port

REPO = Path(__file__).resolve().parent.parent


# --- TOML ---------------------------------------------------------------------------------

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)   # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(mapping: Mapping[str, Any]) -> str:
    """Enough TOML for our configuration files: top-level tables and arrays of tables."""
    lines: list[str] = []
    for name, value in mapping.items():
        if value is None:
            continue
        if isinstance(value, dict):
            lines.append(f"[{json.dumps(name)}]")
            lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()
                      if v is not None]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for entry in value:
                lines.append(f"[[{json.dumps(name)}]]")
                lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in entry.items()]
        else:
            lines.insert(0, f"{json.dumps(name)} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def write_config(path: Path, mapping: Mapping[str, Any]) -> Path:
    """Write ``mapping`` (e.g. ``tests.conftest.settings_mapping(...)``) as a TOML file."""
    path.write_text(to_toml(mapping))
    return path


# --- gunicorn -----------------------------------------------------------------------------

@dataclass
class Gunicorn:
    """A running gunicorn: its URL, process and captured output."""

    url: str
    port: int
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        """Everything written to standard output and standard error so far."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """Every line of output parsed as JSON; a line that is not JSON fails the test."""
        parsed = []
        for line in self.output().splitlines():
            if line.strip():
                try:
                    parsed.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise AssertionError(f"log line is not JSON: {line!r}") from exc
        return parsed

    def request_lines(self) -> list[dict[str, Any]]:
        """The app's one-line-per-request log entries."""
        return [e for e in self.log_lines() if e.get("logger") == "flexsvc.request"]

    def stop(self, timeout: float = 30) -> int:
        """Graceful stop (SIGTERM), then SIGKILL of the whole process group if needed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode


@contextmanager
def run_gunicorn(config_path: Path | str, *, workers: int = 2, threads: int = 4,
                 env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 startup_timeout: float = 30.0) -> Iterator[Gunicorn]:
    """Start ``gunicorn -c gunicorn.conf.py wsgi:app`` with ``FLEXSVC_CONFIG=config_path``.

    ``env`` adds or overrides environment variables, ``args`` are extra gunicorn command-line
    options (they win over gunicorn.conf.py). Yields once ``/healthz`` answers.
    PROMETHEUS_MULTIPROC_DIR is left unset, as a user leaves it: gunicorn.conf.py must set it up.
    """
    port = free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="flexsvc-gunicorn-"))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXSVC_")
                and k not in ("PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS")}
    full_env.update({
        "FLEXSVC_CONFIG": str(config_path),
        "FLEXSVC_BIND": f"127.0.0.1:{port}",
        "FLEXSVC_WORKERS": str(workers),
        "FLEXSVC_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
    })
    full_env.update(env or {})
    stdout_path, stderr_path = run_dir / "stdout.log", run_dir / "stderr.log"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *args, "wsgi:app"],
            cwd=REPO, env=full_env, stdout=out, stderr=err, start_new_session=True)
    server = Gunicorn(f"http://127.0.0.1:{port}", port, process, stdout_path, stderr_path,
                      full_env)
    try:
        _wait_for_http(server, startup_timeout, workers)
        yield server
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _wait_for_http(server: Gunicorn, timeout: float, workers: int = 1) -> None:
    """Until /healthz answers and ``workers`` workers have booted."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.process.returncode}:\n"
                               + server.output()[-4000:])
        try:
            if (requests.get(server.url + "/healthz", timeout=2).status_code == 200
                    and server.output().count("Booting worker") >= workers):
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("gunicorn did not answer /healthz in time:\n"
                               + server.output()[-4000:])
        time.sleep(0.1)


def flask_migrate(config: Path) -> subprocess.CompletedProcess:
    """``flask --app wsgi migrate`` with ``FLEXSVC_CONFIG=config``, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXSVC_")}
    env["FLEXSVC_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "migrate"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


# --- a primary and its synchronous standby -------------------------------------------------

@dataclass
class Replicated:
    """A primary and a streaming standby it commits synchronously to (``STANDBY_NAME``)."""

    primary: EmbeddedPostgres
    standby: EmbeddedPostgres

    def dsn(self, database: str, **params: str) -> str:
        """libpq's multi-host form: the primary first, then the standby (SPEC §11)."""
        extra = "".join(f" {k}={v}" for k, v in params.items())
        return (f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.standby.port} "
                f"dbname={database} user=postgres{extra}")

    def promote(self) -> None:
        """Make the standby the primary (waits until it accepts writes)."""
        with psycopg.connect(self.standby.admin_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT pg_promote(wait => true, wait_seconds => 30)").fetchone()[0]


STANDBY_NAME = "standby1"


@contextmanager
def run_primary_and_standby() -> Iterator[Replicated]:
    """Two embedded servers from the wheel: a primary with ``synchronous_standby_names`` and
    ``synchronous_commit = on``, and a hot standby made with pg_basebackup that streams from it.
    A commit is acknowledged only once the standby has flushed it, so a promoted standby has
    every acknowledged transaction. fsync stays off: the tests kill processes, not machines."""
    common = {"fsync": "off", "wal_keep_size": "64MB"}
    primary = EmbeddedPostgres.throwaway(settings={
        **common, "synchronous_standby_names": STANDBY_NAME, "synchronous_commit": "on"})
    standby = EmbeddedPostgres.throwaway(settings={
        **common, "cluster_name": STANDBY_NAME, "hot_standby": "on"})
    try:
        primary.start()
        standby.restore_base_backup(primary)
        standby.start()
        with psycopg.connect(primary.admin_dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while conn.execute("SELECT sync_state FROM pg_stat_replication WHERE "
                               "application_name = %s", (STANDBY_NAME,)).fetchone() != ("sync",):
                if time.monotonic() > deadline:
                    raise RuntimeError("the standby did not become synchronous")
                time.sleep(0.1)
        yield Replicated(primary, standby)
    finally:
        standby.destroy()
        primary.destroy()


# --- PgBouncer ----------------------------------------------------------------------------

PGBOUNCER_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in PGBOUNCER_PATHS if os.access(p, os.X_OK)), None)


def ensure_pgbouncer() -> str:
    """The pgbouncer binary, installing Debian's package first when it is missing (CI)."""
    found = find_pgbouncer()
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("pgbouncer is not installed and we are not root to apt-get it; "
                           "run: sudo apt-get install -y pgbouncer")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "pgbouncer"]
    if subprocess.run(install, env=env, capture_output=True, timeout=300).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True,
                       timeout=300)
        subprocess.run(install, env=env, capture_output=True, check=True, timeout=300)
    found = find_pgbouncer()
    if not found:
        raise RuntimeError("pgbouncer was installed but its binary was not found")
    return found


def pgbouncer_version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                         check=True).stdout
    # "PgBouncer 1.18.0" on the first line.
    major, minor = out.split()[1].split(".")[:2]
    return int(major), int(minor)


@dataclass
class PgBouncer:
    port: int
    process: subprocess.Popen
    run_dir: Path
    version: tuple[int, int]
    settings: dict[str, str]

    def dsn(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        return (self.run_dir / "pgbouncer.log").read_text(errors="replace")


def _unprivileged_user() -> pwd.struct_passwd | None:
    """pgbouncer refuses to run as root: pick an existing unprivileged account."""
    if os.geteuid() != 0:
        return None
    for name in ("embedded_postgres", "postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user to run pgbouncer as")


@contextmanager
def run_pgbouncer(host: str, port: int, *, pool_size: int = 2,
                  extra: Mapping[str, str] | None = None) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode in front of ``host:port`` (every database)."""
    binary = ensure_pgbouncer()
    version = pgbouncer_version(binary)
    listen = free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="flexsvc-pgbouncer-"))
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(listen),
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(run_dir / "userlist.txt"),
        "pool_mode": "transaction",
        "default_pool_size": str(pool_size),
        "min_pool_size": "0",
        "reserve_pool_size": "0",
        "max_client_conn": "200",
        "server_reset_query": "DISCARD ALL",
        "ignore_startup_parameters": "extra_float_digits,options",
        "logfile": str(run_dir / "pgbouncer.log"),
        "pidfile": str(run_dir / "pgbouncer.pid"),
        "admin_users": "postgres",
    }
    settings.update(extra or {})
    (run_dir / "userlist.txt").write_text('"postgres" ""\n')
    ini = ["[databases]", f"* = host={host} port={port}", "", "[pgbouncer]"]
    ini += [f"{k} = {v}" for k, v in settings.items()]
    (run_dir / "pgbouncer.ini").write_text("\n".join(ini) + "\n")
    account = _unprivileged_user()
    if account is not None:
        os.chmod(run_dir, 0o700)
        for path in [run_dir, *run_dir.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
    process = subprocess.Popen(
        [binary, str(run_dir / "pgbouncer.ini")], cwd=run_dir,
        user=account.pw_uid if account else None, group=account.pw_gid if account else None,
        stdout=subprocess.DEVNULL, stderr=open(run_dir / "stderr.log", "wb"),
        start_new_session=True)
    bouncer = PgBouncer(listen, process, run_dir, version, settings)
    try:
        _wait_for_postgres(bouncer, process, run_dir)
        yield bouncer
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)   # SIGINT: immediate shutdown
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(run_dir, ignore_errors=True)


def _wait_for_postgres(bouncer: PgBouncer, process: subprocess.Popen, run_dir: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            log = bouncer.log() if (run_dir / "pgbouncer.log").exists() else ""
            raise RuntimeError("pgbouncer exited: " + (run_dir / "stderr.log").read_text() + log)
        try:
            with psycopg.connect(bouncer.dsn("postgres"), connect_timeout=2,
                                 prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
