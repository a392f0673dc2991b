"""SPEC §2: the TOML configuration, environment overrides and the CLI commands."""

from __future__ import annotations

import hashlib
import re
import uuid

import jwt
import psycopg
import pytest

from flexsvc import create_app
from flexsvc.config import ConfigError, load_settings, settings_from_mapping
from flexsvc.data.migrations import MigrationError, apply_migrations
from tests.conftest import create_database, drop_database, settings_mapping
from tests.helpers import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET

SPEC_EXAMPLE = f"""
[databases]
demo = "postgresql://127.0.0.1:5432/demo"

[auth]
require = "both"
jwt_algorithms = ["HS256"]
jwt_secret = "change-me"
jwt_issuer = "https://issuer.example"
jwt_audience = "flexsvc"
jwt_user_claim = "sub"

[[api_keys]]
name = "payroll-sync"
sha256 = "{hashlib.sha256(b"k").hexdigest()}"
databases = ["demo"]
"""


def test_spec_example_file_loads(tmp_path, monkeypatch):
    path = tmp_path / "flexsvc.toml"
    path.write_text(SPEC_EXAMPLE)
    monkeypatch.setenv("FLEXSVC_CONFIG", str(path))
    settings = load_settings()
    assert settings.databases == {"demo": "postgresql://127.0.0.1:5432/demo"}
    assert settings.auth.require == "both" and settings.auth.jwt_user_claim == "sub"
    assert settings.api_keys[0].name == "payroll-sync" and settings.api_keys[0].allows("demo")


def test_environment_overrides_secrets(tmp_path):
    import tomllib
    raw = tomllib.loads(SPEC_EXAMPLE)
    settings = settings_from_mapping(raw, environ={
        "FLEXSVC_JWT_SECRET": "from-env", "FLEXSVC_DB_DEMO": "postgresql://u:pw@db/demo"})
    assert settings.auth.jwt_secret == "from-env"
    assert settings.databases["demo"] == "postgresql://u:pw@db/demo"


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["auth"].update(require="sometimes"), "require"),
    (lambda r: r["auth"].update(jwt_algorithms=["none"]), "jwt_algorithms"),
    (lambda r: r["auth"].update(jwt_algorithms=["HS256", "RS256"]), "mix"),
    (lambda r: r["auth"].pop("jwt_secret"), "jwt_secret"),
    (lambda r: r["auth"].update(surprise=1), "unknown"),
    (lambda r: r["api_keys"][0].update(databases=["nope"]), "unknown databases"),
    (lambda r: r["api_keys"][0].update(sha256="abc"), "sha256"),
    (lambda r: r["api_keys"][0].update(name="n" * 21), "name"),
    (lambda r: r["databases"].update({"bad name": "x"}), "invalid database name"),
    (lambda r: r.update(limits={"max_items": 0}), "limits"),
    (lambda r: r.update(pool={"min_size": 5, "max_size": 2}), "pool"),
])
def test_invalid_configuration_fails_at_start(mutate, message):
    import tomllib
    raw = tomllib.loads(SPEC_EXAMPLE)
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping(raw, environ={})


def test_missing_config_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("FLEXSVC_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="FLEXSVC_CONFIG"):
        load_settings()
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")


@pytest.fixture
def fresh_database(pg_admin_dsn):
    name = f"flexsvc_test_{uuid.uuid4().hex[:10]}_fresh"
    dsn = create_database(pg_admin_dsn, name)
    yield dsn
    drop_database(pg_admin_dsn, name)


def test_migrate_command_applies_once_and_is_safe_to_rerun(tenant_dsns, fresh_database):
    app = create_app(settings_from_mapping(
        settings_mapping({**tenant_dsns, "fresh": fresh_database}), environ={}))
    runner = app.test_cli_runner()
    first = runner.invoke(args=["migrate", "--database", "fresh"])
    assert first.exit_code == 0 and "fresh: applied 0001_schema" in first.output
    again = runner.invoke(args=["migrate"])
    assert again.exit_code == 0
    assert "fresh: up to date" in again.output and "main: up to date" in again.output
    with psycopg.connect(fresh_database) as conn:
        types = [r[0] for r in conn.execute(
            "SELECT schedule_type FROM flex_schedule_type ORDER BY 1")]
        assert types == ["BIWEEKLY", "CUSTOM", "MONTHLY", "QUARTERLY", "SEMIMONTHLY", "WEEKLY"]
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable, character_maximum_length "
            "FROM information_schema.columns WHERE table_name = 'group_flex_schedule' "
            "ORDER BY ordinal_position").fetchall()
    assert columns == [
        ("group_flex_schedule_key", "integer", "NO", None),
        ("group_id", "character varying", "NO", 20),
        ("plan_id", "character varying", "NO", 20),
        ("calendar_year", "character varying", "NO", 4),
        ("schedule_date", "timestamp without time zone", "NO", None),
        ("schedule_type", "character varying", "NO", 16),
        ("entry_date", "timestamp with time zone", "NO", None),
        ("entry_user", "character varying", "YES", 20),
        ("update_date", "timestamp with time zone", "NO", None),
        ("update_user", "character varying", "YES", 20),
    ]
    bad = runner.invoke(args=["migrate", "--database", "nosuch"])
    assert bad.exit_code != 0


def test_changed_migration_is_refused(fresh_database):
    with psycopg.connect(fresh_database) as conn:
        apply_migrations(conn)
        conn.execute("UPDATE flexsvc_schema_migrations SET checksum = 'x'")
        conn.commit()
        with pytest.raises(MigrationError):
            apply_migrations(conn)


def test_create_api_key_prints_key_once_and_a_working_config_line(app):
    result = app.test_cli_runner().invoke(args=["create-api-key", "hr-sync",
                                                "--databases", "main"])
    assert result.exit_code == 0
    key = re.search(r"keep it secret\): (\S+)", result.output).group(1)
    digest = re.search(r'sha256 = "([0-9a-f]{64})"', result.output).group(1)
    assert hashlib.sha256(key.encode()).hexdigest() == digest
    assert result.output.count(key) == 1
    assert 'databases = ["main"]' in result.output


def test_issue_token_gives_a_token_the_service_accepts(app):
    result = app.test_cli_runner().invoke(args=["issue-token", "erin", "--ttl", "60"])
    assert result.exit_code == 0
    claims = jwt.decode(result.output.strip(), JWT_SECRET, algorithms=["HS256"],
                        audience=JWT_AUDIENCE, issuer=JWT_ISSUER)
    assert claims["sub"] == "erin" and claims["exp"] - claims["iat"] == 60
    too_long = app.test_cli_runner().invoke(args=["issue-token", "x" * 21])
    assert too_long.exit_code != 0
