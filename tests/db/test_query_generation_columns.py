"""Migration 0004: the query log's generation columns, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text

from db import Database, alembic_config
from db.models import QueryRecord, utcnow

NEW = {
    "mode",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "fallback_reason",
    "prompt",
}


def test_generation_fields_are_stored_and_read_back(database: Database) -> None:
    with database.session() as s:
        s.add(
            QueryRecord(
                id="q1",
                created_at=utcnow(),
                platform="cli",
                question="q",
                answer="a [1]",
                abstained=False,
                citations=[],
                retrieved=[],
                latency_ms={"generate": 12.5},
                mode="generated",
                model="gpt-4o-mini",
                input_tokens=1200,
                output_tokens=80,
                cached_tokens=200,
                cost_usd=0.000213,
                fallback_reason=None,
                prompt="[system]\n" + "x" * 20000,
            )
        )
    with database.session() as s:
        row = s.get(QueryRecord, "q1")
        assert row is not None
        assert (row.mode, row.model, row.input_tokens, row.output_tokens, row.cached_tokens) == (
            "generated",
            "gpt-4o-mini",
            1200,
            80,
            200,
        )
        assert row.cost_usd == pytest.approx(0.000213)
        assert row.prompt is not None and len(row.prompt) == 20009


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0004_upgrades_old_rows_to_nulls_and_downgrades(request, tmp_path, backend: str) -> None:
    url = (
        f"sqlite:///{tmp_path / 'old.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    cfg = alembic_config(url)
    command.upgrade(cfg, "0003")
    db = Database(url)
    try:
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO queries (id, created_at, platform, question, answer, abstained,"
                    " citations, retrieved, latency_ms) VALUES ('old', '2026-01-01 00:00:00',"
                    " 'cli', 'q', 'a', false, '[]', '[]', '{}')"
                )
            )
        db.migrate()
        columns = {c["name"] for c in inspect(db.engine).get_columns("queries")}
        assert columns >= NEW
        with db.session() as s:
            row = s.get(QueryRecord, "old")
            assert row is not None and row.answer == "a"
            assert (row.mode, row.model, row.input_tokens, row.cost_usd, row.prompt) == (None,) * 5
        command.downgrade(alembic_config(url), "0003")
        columns = {c["name"] for c in inspect(db.engine).get_columns("queries")}
        assert not NEW & columns
    finally:
        db.dispose()
