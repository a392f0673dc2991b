"""SPEC §2: `make run`'s demo prints curls that work as printed; `flask --app wsgi migrate`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import pytest

from flexsvc.ops.embedded import free_port
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


def run_curl(curl: str) -> tuple[str, dict]:
    result = subprocess.run(["bash", "-c", curl + " -w '\\n%{http_code}'"],
                            capture_output=True, text=True, timeout=30)
    body, _, code = result.stdout.rpartition("\n")
    assert body, result.stderr
    return code, json.loads(body)


@pytest.mark.slow
def test_demo_prints_curls_that_work_as_printed(tmp_path):
    port = free_port()
    env = dict(os.environ, FLEXSVC_STATE_DIR=str(tmp_path / "state"),
               FLEXSVC_BIND=f"127.0.0.1:{port}", FLEXSVC_DEMO_PG_PORT=str(free_port()))
    env.pop("FLEXSVC_CONFIG", None)
    demo = subprocess.Popen([sys.executable, "-m", "flexsvc.ops.demo"], cwd=ROOT, env=env,
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
        text = "".join(lines)
        batch_at = text.index("curl ")
        batch_curl = text[batch_at:text.index("\n\n", batch_at)]
        layout_at = text.index("curl ", batch_at + len(batch_curl))
        layout_curl = text[layout_at:text.index("\n\n", layout_at)]
        assert "/flexes/FSA/2026/schedule" in layout_curl
        wait_for_http(f"http://127.0.0.1:{port}/healthz")

        code, body = run_curl(batch_curl)
        assert code == "207", body
        data = body["data"]
        assert [d["status"] for d in data] == [201, 201]
        assert all(d["id"][0]["value"] > 0 for d in data)
        # MONTHLY from the demo's first payment dates: FSA Friday Jan 9, HRA the 15th.
        assert [d["body"] for d in data] == [
            "Created; schedule_Date calculated as 2026-02-09T00:00:00", "Created"]

        code, body = run_curl(layout_curl)
        assert code == "207", body
        results = [(d["status"], d["id"][1]["value"], d["body"]) for d in body["data"]]
        fridays = [(date(2026, 1, 9) + timedelta(days=14 * i)).isoformat() + "T00:00:00"
                   for i in range(26)]
        assert results == [(201, day, "Created") for day in fridays] + [
            (204, "2026-02-09T00:00:00", "Deleted")]   # the batch's MONTHLY row of FSA
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=60)
    assert not (tmp_path / "state" / "pgdata" / "postmaster.pid").exists()


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
