"""`make run`: a self-contained demo on an embedded PostgreSQL.

Starts PostgreSQL with its data kept between runs (``.flexsvc/pgdata``; as root, a folder
the server's own user can reach: see ``EmbeddedPostgres.kept_for``), creates and migrates the
``demo`` database, seeds group DEMO01 with GroupFlex rows for plans FSA and HRA (2026), writes
``.flexsvc/demo.toml`` with a fresh development API key and JWT secret, prints a curl command
that works as printed, and runs gunicorn in the foreground. Ctrl-C stops both.
``--remove-data`` (run by ``make clean``) stops that PostgreSQL and deletes its data.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from flexsvc.config import settings_from_mapping
from flexsvc.data.migrations import apply_migrations
from flexsvc.http.auth import issue_token, new_api_key
from flexsvc.ops.demo_data import DEMO_GROUP, DEMO_YEAR, seed_demo
from flexsvc.ops.embedded import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    free_port,
    port_is_free,
)
from flexsvc.ops.operator_errors import database_error, exit_with

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("FLEXSVC_STATE_DIR", ROOT / ".flexsvc"))
DEFAULT_PG_PORT = 54329
DEMO_USER = "demo-user"


def _toml_config(dsn: str, jwt_secret: str, key_digest: str) -> str:
    return f"""# Written by `make run` for the demo; regenerated on every start.
[databases]
demo = "{dsn}"

[auth]
require = "both"
jwt_algorithms = ["HS256"]
jwt_secret = "{jwt_secret}"
jwt_issuer = "flexsvc-demo"
jwt_audience = "flexsvc"
jwt_user_claim = "sub"

[[api_keys]]
name = "demo-key"
sha256 = "{key_digest}"
databases = ["demo"]
"""


def _put_curl(url: str, body: str, api_key: str, token: str) -> str:
    """A ready-to-paste curl PUT of ``body`` to ``url`` with the demo's headers."""
    return " \\\n  ".join([
        f"curl -sS -X PUT {shlex.quote(url)}",
        "-H 'Content-Type: application/json'",
        "-H 'vbasoftware-database: demo'",
        f"-H {shlex.quote('x-api-key: ' + api_key)}",
        f"-H {shlex.quote('Authorization: Bearer ' + token)}",
        f"--data {shlex.quote(body)}",
    ])


def demo_curl(base_url: str, api_key: str, token: str) -> str:
    """A curl that creates two schedules with one batch (MONTHLY: dates calculated)."""
    items = [
        {"groupFlexSchedule_Key": 0, "group_ID": DEMO_GROUP, "plan_ID": "FSA",
         "calendar_Year": DEMO_YEAR, "schedule_Date": "2026-01-15", "schedule_Type": "MONTHLY"},
        {"groupFlexSchedule_Key": 0, "group_ID": DEMO_GROUP, "plan_ID": "HRA",
         "calendar_Year": DEMO_YEAR, "schedule_Date": "2026-02-15 00:00:00 UTC",
         "schedule_Type": "monthly"},
    ]
    return _put_curl(f"{base_url}/groups/{DEMO_GROUP}/flex-schedules-batch", json.dumps(items),
                     api_key, token)


def layout_curl(base_url: str, api_key: str, token: str) -> str:
    """A curl that lays out plan FSA's year as BIWEEKLY payments from its first payment date."""
    return _put_curl(f"{base_url}/groups/{DEMO_GROUP}/flexes/FSA/{DEMO_YEAR}/schedule",
                     json.dumps({"schedule_Type": "BIWEEKLY"}), api_key, token)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        exit_with(f"{self.prog}: {message} (see --help)", status=2)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _OneLineParser(prog="python -m flexsvc.ops.demo",
                            description=__doc__.splitlines()[0])
    parser.add_argument("--remove-data", action="store_true",
                        help="stop the demo's PostgreSQL and delete its data, then exit")
    return parser.parse_args(argv)


def _demo_pg_port() -> int:
    text = os.environ.get("FLEXSVC_DEMO_PG_PORT", str(DEFAULT_PG_PORT))
    if not text.isdigit() or not 0 < int(text) < 65536:
        exit_with(f"FLEXSVC_DEMO_PG_PORT must be a TCP port number (1-65535), got {text!r}")
    return int(text)


def _start_database(server: EmbeddedPostgres) -> str:
    """Start the embedded server, create, migrate and seed ``demo``; return its DSN."""
    print(f"starting embedded PostgreSQL in {server.datadir} on port {server.port} ...",
          flush=True)
    try:
        server.start()
        dsn = server.create_database("demo")
        with psycopg.connect(dsn) as conn:
            apply_migrations(conn)
            seed_demo(conn)
    except EmbeddedPostgresError as exc:
        exit_with(str(exc))
    except subprocess.CalledProcessError as exc:
        reason = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        exit_with(f"embedded PostgreSQL in {server.datadir}: {Path(exc.cmd[0]).name} failed"
                  + (f": {reason[-1]}" if reason else f" (exit status {exc.returncode})"))
    except psycopg.Error as exc:
        exit_with(f"embedded PostgreSQL on port {server.port}, database demo: "
                  f"{database_error(exc)}")
    return dsn


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    pg_port = _demo_pg_port()
    server = EmbeddedPostgres.kept_for(STATE_DIR, pg_port if port_is_free(pg_port)
                                       else free_port())
    if args.remove_data:
        server.destroy()
        print(f"removed the demo's PostgreSQL data ({server.datadir})")
        return 0
    STATE_DIR.mkdir(exist_ok=True)
    dsn = _start_database(server)

    api_key, digest = new_api_key()
    jwt_secret = secrets.token_urlsafe(32)
    config_path = STATE_DIR / "demo.toml"
    config_path.write_text(_toml_config(dsn, jwt_secret, digest))
    config_path.chmod(0o600)
    import tomllib
    settings = settings_from_mapping(tomllib.loads(config_path.read_text()))
    token = issue_token(settings.auth, DEMO_USER, ttl_seconds=7 * 24 * 3600)

    bind = os.environ.get("FLEXSVC_BIND", "127.0.0.1:8000")
    base_url = "http://" + bind
    print("\nflexsvc demo is starting. Try it (creates two schedules, answers 207):\n", flush=True)
    print(demo_curl(base_url, api_key, token) + "\n", flush=True)
    print("Lay out plan FSA's 2026 as BIWEEKLY payments from its first payment date, Friday "
          "2026-01-09 (answers 207, one result per date):\n\n"
          + layout_curl(base_url, api_key, token) + "\n", flush=True)
    print(f"config: {config_path}   (Ctrl-C stops the service and PostgreSQL)\n", flush=True)

    env = dict(os.environ, FLEXSVC_CONFIG=str(config_path), FLEXSVC_BIND=bind)
    gunicorn = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c",
                                 str(ROOT / "gunicorn.conf.py"), "wsgi:app"], cwd=ROOT, env=env)
    signal.signal(signal.SIGTERM, lambda *_: gunicorn.terminate())
    try:
        return gunicorn.wait()
    except KeyboardInterrupt:
        gunicorn.send_signal(signal.SIGINT)
        return gunicorn.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
