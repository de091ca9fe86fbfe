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
