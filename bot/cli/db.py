"""``kbot db``: the SQL schema. ``upgrade`` runs the Alembic migrations; ``status`` says
whether the database is at this kbot's newest one."""

from __future__ import annotations

import click

from bot.cli.main import State, cli


def _database(state: State):  # -> db.Database
    from bot.runtime import open_database

    return open_database(state.config.storage)


@cli.group()
def db() -> None:
    """The database schema (migrations)."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(state: State) -> None:
    """Bring the schema to the newest migration. Safe to run again; run it from one machine
    before starting a new kbot version on PostgreSQL."""
    database = _database(state)
    try:
        before = database.revision()
        database.migrate()
        after = database.revision()
    finally:
        database.dispose()
    if before == after:
        click.echo(f"{database.where}: already at schema revision {after}")
    else:
        click.echo(f"{database.where}: upgraded from {before or 'empty'} to {after}")


@db.command("status")
@click.pass_obj
def db_status(state: State) -> None:
    """Say whether the schema is current; exit 1 when `kbot db upgrade` is needed."""
    database = _database(state)
    try:
        database.check_schema()
        click.echo(f"{database.where}: schema revision {database.revision()} (current)")
    finally:
        database.dispose()
