"""Migration 0007: the query log's follow-up columns, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, select, text

from db import Database, alembic_config
from db.models import QueryRecord, utcnow

NEW = {"thread_key", "follows", "standalone_question", "condense_fallback"}


def record(qid: str, **fields) -> QueryRecord:
    return QueryRecord(
        id=qid,
        created_at=utcnow(),
        platform="slack",
        question="q",
        answer="a",
        abstained=False,
        citations=[],
        retrieved=[],
        latency_ms={},
        **fields,
    )


def test_a_follow_up_is_stored_with_its_thread_and_found_by_it(database: Database) -> None:
    thread = "slack:T1:C1:1700000000.000100"
    with database.session() as s:
        s.add(record("q1", thread_key=thread))
        s.add(
            record(
                "q2",
                thread_key=thread,
                follows="q1",
                standalone_question="and then? how do I rotate the key",
                condense_fallback="timeout",
            )
        )
        s.add(record("q3", thread_key="slack:T1:C1:other"))
    with database.session() as s:
        rows = s.scalars(select(QueryRecord).where(QueryRecord.thread_key == thread)).all()
        assert sorted((r.id, r.follows) for r in rows) == [("q1", None), ("q2", "q1")]
        q2 = s.get(QueryRecord, "q2")
        assert q2 is not None
        assert (q2.standalone_question, q2.condense_fallback) == (
            "and then? how do I rotate the key",
            "timeout",
        )
    indexes = {
        i["name"]: i["column_names"] for i in inspect(database.engine).get_indexes("queries")
    }
    assert indexes["ix_queries_thread_key"] == ["thread_key"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0007_upgrades_old_rows_to_nulls_and_downgrades(request, tmp_path, backend: str) -> None:
    url = (
        f"sqlite:///{tmp_path / 'old.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    command.upgrade(alembic_config(url), "0006")
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
        assert {c["name"] for c in inspect(db.engine).get_columns("queries")} >= NEW
        with db.session() as s:
            row = s.get(QueryRecord, "old")
            assert row is not None and row.answer == "a"
            assert (row.thread_key, row.follows, row.standalone_question) == (None, None, None)
        command.downgrade(alembic_config(url), "0006")
        assert not NEW & {c["name"] for c in inspect(db.engine).get_columns("queries")}
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT answer FROM queries")).scalar_one() == "a"
    finally:
        db.dispose()
