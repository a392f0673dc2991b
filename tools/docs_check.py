"""`make docs-check`: does /docs render in a real browser, offline, with every operation?

Starts the service under gunicorn on a free loopback port (with a throw-away configuration: the
docs need no database, and pools are only opened on first use), loads /docs in headless Chromium
with background networking off, and checks the rendered DOM for one Swagger UI operation block per
operation in /openapi.json. Leaves the DOM and a screenshot in ``.flexsvc/docs-check/`` (or
``$DOCS_CHECK_DIR``) for a person to look at. Exits non-zero when the page did not render.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = Path(os.environ.get("DOCS_CHECK_DIR", ROOT / ".flexsvc" / "docs-check"))
METHODS = ("get", "put", "post", "delete", "patch")
OPBLOCK = re.compile(r'class="opblock opblock-(?:get|put|post|delete|patch)\b')
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-default-apps", "--virtual-time-budget=20000", "--window-size=1280,900",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


def chromium(*args: str, profile: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium is not installed (make docs-check installs Debian's)")
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="flexsvc-docs-") as tmp:
        config = Path(tmp) / "docs.toml"
        config.write_text(
            '[databases]\ndocs = "postgresql://127.0.0.1:1/unused"\n\n'
            f'[auth]\nrequire = "both"\njwt_secret = "{secrets.token_urlsafe(32)}"\n')
        env = dict(os.environ, FLEXSVC_CONFIG=str(config), FLEXSVC_BIND=f"127.0.0.1:{port}",
                   FLEXSVC_WORKERS="1", FLEXSVC_THREADS="2")
        with open(OUT_DIR / "server.log", "w") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
                 "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=log)
            try:
                wait_until_up(base + "/healthz")
                with urllib.request.urlopen(base + "/openapi.json", timeout=5) as response:  # noqa: S310
                    spec = json.load(response)
                expected = sum(1 for item in spec["paths"].values() for m in item if m in METHODS)
                dom = chromium("--dump-dom", base + "/docs", profile=tempfile.mkdtemp(dir=tmp))
                (OUT_DIR / "docs.html").write_text(dom.stdout)
                shot = OUT_DIR / "docs.png"
                shot.unlink(missing_ok=True)
                chromium(f"--screenshot={shot}", base + "/docs",
                         profile=tempfile.mkdtemp(dir=tmp))
            finally:
                server.terminate()
                server.wait(timeout=30)
    rendered = len(OPBLOCK.findall(dom.stdout))
    problems = []
    if rendered != expected:
        problems.append(f"rendered {rendered} operation blocks, expected {expected}")
    if spec["info"]["title"] not in dom.stdout:
        problems.append("the API title is not on the page")
    if "Failed to load API definition" in dom.stdout:
        problems.append("Swagger UI could not load /openapi.json")
    if not shot.exists() or shot.stat().st_size < 10_000:
        problems.append("no screenshot was written")
    if problems:
        print("docs-check FAILED: " + "; ".join(problems), file=sys.stderr)
        print(f"DOM: {OUT_DIR / 'docs.html'}  server log: {OUT_DIR / 'server.log'}",
              file=sys.stderr)
        return 1
    print(f"docs-check OK: /docs rendered {rendered} operations of {expected} in headless "
          f"Chromium (offline). Screenshot: {shot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
