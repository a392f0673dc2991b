"""SPEC §2: `make run`'s demo prints a curl that works as printed; `flask --app wsgi migrate`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import pytest

from flexsvc.ops.embedded import EmbeddedPostgres, free_port
from tests.conftest import settings_mapping

ROOT = Path(__file__).resolve().parent.parent


def wait_for_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def demo_env(port: int, **extra: str) -> dict[str, str]:
    """The environment of a demo serving on 127.0.0.1:``port`` (its PostgreSQL on a free port)."""
    env = dict(os.environ, FLEXSVC_BIND=f"127.0.0.1:{port}",
               FLEXSVC_DEMO_PG_PORT=str(free_port()), **extra)
    env.pop("FLEXSVC_CONFIG", None)
    return env


@contextmanager
def running_demo(cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """``python -m flexsvc.ops.demo`` run in ``cwd``; yields what it printed (up to its config
    line) once it serves, and stops it (SIGTERM, as Ctrl-C would) afterwards."""
    demo = subprocess.Popen([sys.executable, "-m", "flexsvc.ops.demo"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            assert line, "demo exited before printing its curl"
            lines.append(line)
            if line.startswith("config:"):
                break
        wait_for_http(f"http://{env['FLEXSVC_BIND']}/healthz")
        yield "".join(lines)
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=60)


def printed_curls(printed: str) -> list[str]:
    """The curl commands the demo printed, each exactly as printed."""
    curls, at = [], printed.find("curl ")
    while at >= 0:
        end = printed.index("\n\n", at)
        curls.append(printed[at:end])
        at = printed.find("curl ", end)
    return curls


def run_curl(curl: str) -> tuple[str, dict]:
    result = subprocess.run(["bash", "-c", curl + " -w '\\n%{http_code}'"],
                            capture_output=True, text=True, timeout=30)
    body, _, code = result.stdout.rpartition("\n")
    assert body, result.stdout + result.stderr
    return code, json.loads(body)


def send_printed_curl(printed: str) -> list[dict]:
    """Run the first curl the demo printed, exactly as printed: two schedules are created."""
    code, body = run_curl(printed_curls(printed)[0])
    assert code == "207", body
    data = body["data"]
    assert [d["status"] for d in data] == [201, 201]
    assert all(d["id"][0]["value"] > 0 for d in data)
    return data


@pytest.mark.slow
def test_demo_prints_curls_that_work_as_printed(tmp_path):
    env = demo_env(free_port(), FLEXSVC_STATE_DIR=str(tmp_path / "state"))
    with running_demo(ROOT, env) as printed:
        data = send_printed_curl(printed)
        # MONTHLY from the demo's first payment dates: FSA Friday Jan 9, HRA the 15th.
        assert [d["body"] for d in data] == [
            "Created; schedule_Date calculated as 2026-02-09T00:00:00", "Created"]

        layout_curl = printed_curls(printed)[1]
        assert "/flexes/FSA/2026/schedule" in layout_curl
        code, body = run_curl(layout_curl)
        assert code == "207", body
        results = [(d["status"], d["id"][1]["value"], d["body"]) for d in body["data"]]
        fridays = [(date(2026, 1, 9) + timedelta(days=14 * i)).isoformat() + "T00:00:00"
                   for i in range(26)]
        assert results == [(201, day, "Created") for day in fridays] + [
            (204, "2026-02-09T00:00:00", "Deleted")]   # the batch's MONTHLY row of FSA
    kept = EmbeddedPostgres.kept_for(tmp_path / "state")
    try:
        assert (kept.datadir / "PG_VERSION").exists()          # the data is kept ...
        assert not (kept.datadir / "postmaster.pid").exists()  # ... and the server stopped
    finally:
        kept.destroy()


def test_flask_migrate_command_line(tmp_path, tenant_dsns):
    mapping = settings_mapping(tenant_dsns)
    lines = ["[databases]"] + [f'{k} = "{v}"' for k, v in mapping["databases"].items()]
    lines += ["[auth]", 'jwt_secret = "x-secret-for-the-cli-test-only-000000"']
    (tmp_path / "c.toml").write_text("\n".join(lines) + "\n")
    env = dict(os.environ, FLEXSVC_CONFIG=str(tmp_path / "c.toml"))
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "migrate"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "main: up to date" in result.stdout and "other: up to date" in result.stdout
