"""SPEC §10: the embedded PostgreSQL works wherever the project is cloned, also as root inside a
private (0700) folder, and nothing changes the mode of a folder the project did not create.

The project's files are copied into a fresh ``mkdtemp`` folder (mode 0700) and run from there
with this interpreter: an embedded server is started, queried and removed, and the demo
(``make run``) serves its printed curl. Afterwards the private folder and every folder above it
have the mode they had before, and nothing in the copy was handed to another user.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flexsvc.ops.embedded import EmbeddedPostgres, free_port
from tests.test_demo import ROOT, demo_env, running_demo, send_printed_curl

PROJECT_FILES = ("flexsvc", "sql", "wsgi.py", "gunicorn.conf.py")

SERVER_SCRIPT = """
import os, psutil, psycopg
from pathlib import Path
from flexsvc.ops.embedded import (EmbeddedPostgres, EmbeddedPostgresError, runs_as_root,
                                  runtime_home)

server = EmbeddedPostgres.throwaway(fast_unsafe=True)
try:
    server.start()
    with psycopg.connect(server.create_database("private")) as conn:
        assert conn.execute("SELECT 6 * 7").fetchone() == (42,)
    pid = int((server.datadir / "postmaster.pid").read_text().splitlines()[0])
    executable = psutil.Process(pid).exe()
    if runs_as_root():   # the server user's own copy of the binaries, not the virtualenv's
        assert executable.startswith(str(runtime_home()) + "/"), executable
        try:   # a data folder in the private clone cannot work: refused, not chmod-ed
            EmbeddedPostgres(Path.cwd() / ".flexsvc" / "pg").start()
            raise AssertionError("a data folder the server user cannot reach was accepted")
        except EmbeddedPostgresError as exc:
            assert "cannot reach" in str(exc), exc
finally:
    server.destroy()
assert not server.datadir.exists()
print("ok", executable)
"""


def modes_up_to_root(path: Path) -> dict[Path, int]:
    return {folder: stat.S_IMODE(folder.stat().st_mode) for folder in [path, *path.parents]}


def not_ours(tree: Path) -> list[Path]:
    """Files and folders under ``tree`` that no longer belong to the user running the tests."""
    return [p for p in [tree, *tree.rglob("*")] if p.lstat().st_uid != os.geteuid()]


@pytest.fixture
def private_clone() -> Iterator[Path]:
    """A copy of the project inside a fresh 0700 folder (as ``mktemp -d`` makes it)."""
    private = Path(tempfile.mkdtemp(prefix="flexsvc-private-"))
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    clone = private / "flexsvc"
    clone.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, clone / name, ignore=ignore)
        else:
            shutil.copy2(source, clone / name)
    try:
        yield clone
    finally:
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.slow
def test_embedded_server_and_demo_from_a_clone_in_a_private_folder(private_clone: Path):
    private = private_clone.parent
    before = modes_up_to_root(private)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FLEXSVC_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(private_clone)

    result = subprocess.run([sys.executable, "-c", SERVER_SCRIPT], cwd=private_clone, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok ")

    port = free_port()
    demo = {**demo_env(port), "PYTHONPATH": str(private_clone)}
    demo.pop("FLEXSVC_STATE_DIR", None)   # the default: .flexsvc in the clone
    try:
        with running_demo(private_clone, demo) as printed:
            send_printed_curl(printed)
        assert (private_clone / ".flexsvc" / "demo.toml").exists()
    finally:
        removed = subprocess.run([sys.executable, "-m", "flexsvc.ops.demo", "--remove-data"],
                                 cwd=private_clone, env=demo, capture_output=True, text=True,
                                 timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert not EmbeddedPostgres.kept_for(private_clone / ".flexsvc").datadir.exists()

    assert modes_up_to_root(private) == before
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert not_ours(private) == []
