"""SPEC §10: an operator's mistake is one clear line on stderr, a non-zero exit, no traceback.

Every command runs as an operator runs it (a subprocess in the project folder): ``flask --app
wsgi ...``, ``python -m flexsvc.ops.demo`` and ``gunicorn -c gunicorn.conf.py wsgi:app``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from flexsvc.ops.embedded import free_port
from tests.conftest import create_database, drop_database
from tests.servers import REPO

SECRET = "s3cret-pw-never-shown"
GOOD = """[databases]
main = "{dsn}"

[auth]
jwt_secret = "x-secret-for-the-cli-test-only-000000"
"""


VALID = GOOD.format(dsn="postgresql://db/main")


def unreachable_dsn() -> str:
    return f"postgresql://flex:{SECRET}@127.0.0.1:{free_port()}/maindb"


def run(args: list[str], config: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("FLEXSVC_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    if config is not None:
        full_env["FLEXSVC_CONFIG"] = str(config)
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=60)


def flask(*args: str, config: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return run(["flask", "--app", "wsgi", *args], config, **env)


def the_line(result: subprocess.CompletedProcess) -> str:
    """The one line the operator sees; fails unless that is all there is on stderr."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("flexsvc: "), lines[0]
    assert SECRET not in result.stderr
    return lines[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A valid configuration whose only database is not reachable."""
    path = tmp_path / "flexsvc.toml"
    path.write_text(GOOD.format(dsn=unreachable_dsn()))
    return path


@pytest.mark.parametrize("text, expected", [
    (None, ["configuration file not found", "missing.toml", "FLEXSVC_CONFIG"]),
    ("[databases\n", ["not valid TOML", "line 1"]),
    (VALID + "[pool]\nmax_size = 'four'\n", ["pool.max_size", "integer", "four"]),
    (VALID + "[limits]\nmax_items = 0\n", ["limits.max_items"]),
    (VALID.replace("jwt_secret", "jwt_secrte"), ["auth", "jwt_secrte"]),
    (GOOD.format(dsn=f"host=db password={SECRET} oops"), ["databases.main", "connection string"]),
    ("pool = 3\n", ["pool must be a table"]),
], ids=["missing", "not-toml", "wrong-type", "out-of-range", "unknown-key", "bad-dsn",
        "not-a-table"])
def test_bad_configuration_is_one_line_naming_file_and_key(tmp_path, text, expected):
    path = tmp_path / ("missing.toml" if text is None else "flexsvc.toml")
    if text is not None:
        path.write_text(text)
    line = the_line(flask("migrate", config=path))
    assert str(path) in line
    for fragment in expected:
        assert fragment in line


def test_no_configuration_at_all_is_one_line():
    assert "FLEXSVC_CONFIG is not set" in the_line(flask("migrate"))


def test_bad_environment_variables_are_one_line(config):
    line = the_line(flask("migrate", config=config, FLEXSVC_LOG_LEVEL="loud"))
    assert "FLEXSVC_LOG_LEVEL" in line and "loud" in line
    line = the_line(flask("migrate", config=config, FLEXSVC_DB_MAIN=f"password={SECRET} ="))
    assert "FLEXSVC_DB_MAIN" in line and "databases.main" in line


def test_unreachable_database_during_migrate_names_the_database_not_the_password(config):
    line = the_line(flask("migrate", config=config))
    assert "migrate: cannot connect to database main" in line
    line = the_line(flask("seed-demo", "--database", "main", config=config))
    assert "seed-demo: cannot connect to database main" in line


@pytest.mark.parametrize("args, expected", [
    (["migrate", "--bogus"], "migrate: No such option '--bogus'"),
    (["migrate", "--database", "nosuch"], "'nosuch' is not configured (configured: main)"),
    (["seed-demo", "--database"], "seed-demo: Option '--database' requires an argument"),
    (["issue-token", "erin", "--ttl", "soon"], "issue-token: Invalid value for '--ttl'"),
    (["issue-token"], "issue-token: Missing argument 'USER'"),
    (["create-api-key", "n" * 21], "create-api-key: Invalid value for NAME: 1..20 characters"),
], ids=["unknown-option", "unknown-database", "missing-value", "bad-value", "missing-argument",
        "checked-in-command"])
def test_wrong_command_line_is_one_line(config, args, expected):
    result = flask(*args, config=config)
    assert expected in the_line(result)
    assert result.returncode == 2   # click's (and argparse's) status for a usage mistake


def test_issue_token_without_the_signing_key_is_one_line(tmp_path):
    path = tmp_path / "rs.toml"
    (tmp_path / "pub.pem").write_text("not a key")
    path.write_text(GOOD.format(dsn=unreachable_dsn()).replace(
        'jwt_secret = "x-secret-for-the-cli-test-only-000000"',
        'jwt_algorithms = ["RS256"]\njwt_public_key_file = "pub.pem"'))
    assert "--private-key-file is required" in the_line(flask("issue-token", "erin",
                                                               config=path))
    (tmp_path / "key.pem").write_text("not a key either")
    line = the_line(flask("issue-token", "erin", "--private-key-file",
                          str(tmp_path / "key.pem"), config=path))
    assert "cannot sign RS256 with" in line and "key.pem" in line


def test_seed_demo_on_a_database_not_migrated_says_so(tmp_path, pg_admin_dsn):
    name = f"flexsvc_test_{uuid.uuid4().hex[:10]}_bare"
    dsn = create_database(pg_admin_dsn, name)
    try:
        path = tmp_path / "c.toml"
        path.write_text(GOOD.format(dsn=dsn))
        line = the_line(flask("seed-demo", "--database", "main", config=path))
        assert "database main is not migrated" in line
    finally:
        drop_database(pg_admin_dsn, name)


def test_demo_mistakes_are_one_line():
    result = run(["flexsvc.ops.demo", "--bogus"])
    assert "unrecognized arguments: --bogus" in the_line(result) and result.returncode == 2
    line = the_line(run(["flexsvc.ops.demo"], FLEXSVC_DEMO_PG_PORT="fifty"))
    assert "FLEXSVC_DEMO_PG_PORT" in line and "fifty" in line


@pytest.mark.parametrize("text, env, expected", [
    (None, {}, "configuration file not found"),
    ("[pool]\nmax_size = -1\n", {}, "pool.max_size"),
    ("", {"FLEXSVC_WORKERS": "two"}, "FLEXSVC_WORKERS"),
], ids=["missing-config", "invalid-value", "bad-workers"])
def test_gunicorn_with_a_bad_configuration_stops_in_its_master(tmp_path, text, env, expected):
    path = tmp_path / "flexsvc.toml"
    if text is not None:
        path.write_text(GOOD.format(dsn=unreachable_dsn()) + text)
    metrics = tmp_path / "metrics"
    result = run(["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], path,
                 FLEXSVC_BIND=f"127.0.0.1:{free_port()}", PROMETHEUS_MULTIPROC_DIR=str(metrics),
                 **env)
    assert expected in the_line(result)   # so never "Booting worker", nor "Starting gunicorn"
    assert result.stdout == ""
