"""Flask CLI commands: migrate, seed-demo, create-api-key, issue-token.

An operator's mistake (a wrong option, an unknown database, an unreachable server) ends in one
line on stderr and a non-zero exit status, never a traceback or click's usage block (SPEC §10).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click
import jwt
import psycopg
from flask import Flask, current_app
from flask.cli import with_appcontext

from flexsvc.config import Settings
from flexsvc.data.db import connect
from flexsvc.data.migrations import MigrationError, apply_migrations
from flexsvc.http.auth import issue_token, new_api_key
from flexsvc.ops.demo_data import seed_demo
from flexsvc.ops.operator_errors import PREFIX, database_error, one_line


class OperatorError(click.ClickException):
    """Shown as ``flexsvc: <command>: <message>``, one line (click's "Error: " block is not)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(PREFIX + one_line(self.format_message()), err=True, file=file)


class OperatorCommand(click.Command):
    """A command whose usage errors (unknown option, bad value) are one line, exit status 2."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            _usage_error(info_name or self.name, exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:   # click.BadParameter raised by the command itself
            _usage_error(ctx.info_name or self.name, exc)


def _usage_error(command: str | None, exc: click.UsageError) -> NoReturn:
    raise OperatorError(f"{command}: {exc.format_message().rstrip('.')} (see --help)",
                        exit_code=2) from None


@contextmanager
def _database(command: str, name: str) -> Iterator[psycopg.Connection]:
    """A connection to configured database ``name``; failures become one line naming it."""
    pool = _settings().pool_for(name)
    try:
        # Same prepared-statement policy as the service.
        conn = connect(_settings().databases[name], prepare_threshold=pool.prepare_threshold)
    except psycopg.Error as exc:
        raise OperatorError(f"{command}: cannot connect to database {name}: "
                            f"{database_error(exc)}") from None
    try:
        with conn:
            yield conn
    except MigrationError as exc:
        raise OperatorError(f"{command}: database {name}: {exc}") from None
    except psycopg.Error as exc:
        raise OperatorError(f"{command}: database {name}: {database_error(exc)}") from None


def _settings() -> Settings:
    return current_app.extensions["flexsvc.settings"]


def _selected(database: str | None) -> list[str]:
    names = sorted(_settings().databases)
    if database is None:
        return names
    if database not in names:
        raise click.BadParameter(f"{database!r} is not configured (configured: "
                                 f"{', '.join(names) or 'none'})", param_hint="--database")
    return [database]


@click.command("migrate", cls=OperatorCommand)
@with_appcontext
@click.option("--database", help="Only this configured database (default: all).")
def migrate_command(database: str | None) -> None:
    """Apply the SQL migrations to every configured database (safe to run again)."""
    for name in _selected(database):
        with _database("migrate", name) as conn:
            applied = apply_migrations(conn)
        click.echo(f"{name}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))


@click.command("seed-demo", cls=OperatorCommand)
@with_appcontext
@click.option("--database", default="demo", show_default=True)
def seed_demo_command(database: str) -> None:
    """Insert the demo group DEMO01 and its GroupFlex rows (idempotent)."""
    (name,) = _selected(database)
    with _database("seed-demo", name) as conn:
        try:
            seed_demo(conn)
        except psycopg.errors.UndefinedTable:
            raise OperatorError(f"seed-demo: database {name} is not migrated; run "
                                f"`flask --app wsgi migrate --database {name}` first") from None
    click.echo(f"{name}: demo data present")


@click.command("create-api-key", cls=OperatorCommand)
@click.argument("name")
@click.option("--databases", default="*", show_default=True,
              help="Comma-separated database names the key may use, or *.")
def create_api_key_command(name: str, databases: str) -> None:
    """Create an API key: prints the key once, and the config lines that store its digest."""
    if not 1 <= len(name) <= 20:
        raise click.BadParameter("1..20 characters", param_hint="NAME")
    allowed = [d.strip() for d in databases.split(",") if d.strip()]
    key, digest = new_api_key()
    click.echo(f"API key (shown once, keep it secret): {key}\n")
    click.echo("Add to the configuration file:\n")
    click.echo("[[api_keys]]")
    click.echo(f'name = "{name}"')
    click.echo(f'sha256 = "{digest}"')
    click.echo("databases = [" + ", ".join(f'"{d}"' for d in allowed) + "]")


@click.command("issue-token", cls=OperatorCommand)
@with_appcontext
@click.argument("user")
@click.option("--ttl", default=3600, show_default=True, help="Lifetime in seconds.")
@click.option("--databases", default=None, help="Comma-separated 'databases' claim (optional).")
@click.option("--private-key-file", type=click.Path(exists=True, dir_okay=False),
              help="Signing key for RS*/ES* configurations.")
def issue_token_command(user: str, ttl: int, databases: str | None,
                        private_key_file: str | None) -> None:
    """Issue a development JWT for USER (max 20 characters), signed with the configured key."""
    if not 1 <= len(user) <= 20:
        raise click.BadParameter("1..20 characters", param_hint="USER")
    auth = _settings().auth
    algorithm = auth.jwt_algorithms[0]
    if not algorithm.startswith("HS") and not private_key_file:
        raise OperatorError(f"issue-token: --private-key-file is required: auth.jwt_algorithms "
                            f"signs with {algorithm}")
    try:
        private_key = open(private_key_file).read() if private_key_file else None
    except OSError as exc:
        raise OperatorError(f"issue-token: cannot read {private_key_file}: "
                            f"{exc.strerror}") from None
    names = [d.strip() for d in databases.split(",")] if databases else None
    try:
        token = issue_token(auth, user, ttl_seconds=ttl, databases=names,
                            private_key=private_key)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise OperatorError(f"issue-token: cannot sign {algorithm} with "
                            f"{private_key_file or 'auth.jwt_secret'}: {exc}") from None
    click.echo(token)


def init_app(app: Flask) -> None:
    for command in (migrate_command, seed_demo_command, create_api_key_command,
                    issue_token_command):
        app.cli.add_command(command)
