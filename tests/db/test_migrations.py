from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db import Database
from db.models import Base


def test_migrations_create_exactly_the_models(database: Database):
    tables = set(inspect(database.engine).get_table_names())
    assert {"sync_runs", "documents", "queries", "feedback"} <= tables
    with database.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_migrate_is_idempotent(database: Database):
    database.migrate()
    database.migrate()
    assert "queries" in inspect(database.engine).get_table_names()


def test_upgrade_from_the_first_schema_keeps_rows(tmp_path):
    from alembic import command
    from sqlalchemy import text

    from db import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0001")
    db = Database(url)
    try:
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO sync_runs (connector, started_at, status, full, added, updated,"
                    " deleted, unchanged, failed, chunks) VALUES"
                    " ('kb', '2026-01-01 00:00:00', 'ok', 0, 1, 0, 0, 0, 0, 3)"
                )
            )
        db.migrate()
        with db.engine.connect() as conn:
            row = conn.execute(text("SELECT connector, chunks, signature FROM sync_runs")).one()
        assert tuple(row) == ("kb", 3, None)
    finally:
        db.dispose()
