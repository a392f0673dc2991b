"""Flask CLI commands: migrate, seed-demo, create-api-key, issue-token."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from flexsvc.config import Settings
from flexsvc.data.db import connect
from flexsvc.data.migrations import apply_migrations
from flexsvc.http.auth import issue_token, new_api_key
from flexsvc.ops.demo_data import seed_demo


def _settings() -> Settings:
    return current_app.extensions["flexsvc.settings"]


def _selected(database: str | None) -> list[str]:
    names = sorted(_settings().databases)
    if database is None:
        return names
    if database not in names:
        raise click.BadParameter(f"{database!r} is not configured", param_hint="--database")
    return [database]


@click.command("migrate")
@with_appcontext
@click.option("--database", help="Only this configured database (default: all).")
def migrate_command(database: str | None) -> None:
    """Apply the SQL migrations to every configured database (safe to run again)."""
    for name in _selected(database):
        # Same prepared-statement policy as the service (off behind PgBouncer < 1.21).
        with connect(_settings().databases[name],
                     prepare_threshold=_settings().pool_for(name).prepare_threshold) as conn:
            applied = apply_migrations(conn)
        click.echo(f"{name}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))


@click.command("seed-demo")
@with_appcontext
@click.option("--database", default="demo", show_default=True)
def seed_demo_command(database: str) -> None:
    """Insert the demo group DEMO01 and its GroupFlex rows (idempotent)."""
    (name,) = _selected(database)
    with connect(_settings().databases[name]) as conn:
        seed_demo(conn)
    click.echo(f"{name}: demo data present")


@click.command("create-api-key")
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


@click.command("issue-token")
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
    private_key = open(private_key_file).read() if private_key_file else None
    names = [d.strip() for d in databases.split(",")] if databases else None
    click.echo(issue_token(_settings().auth, user, ttl_seconds=ttl, databases=names,
                           private_key=private_key))


def init_app(app: Flask) -> None:
    for command in (migrate_command, seed_demo_command, create_api_key_command,
                    issue_token_command):
        app.cli.add_command(command)
