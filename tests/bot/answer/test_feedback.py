"""The query log and feedback store, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bot.answer.feedback import FeedbackError, FeedbackService
from bot.answer.retrieval import Retriever
from bot.answer.service import AnsweringService
from bot.answer.types import Requester
from config.models import AnsweringConfig, RetrievalConfig
from db import Database
from db.models import Feedback, QueryRecord


class NoIndex:
    """An answering service over an empty index still logs every question."""

    name = "none"

    def embed(self, texts, batch_size=64):  # never called: there is no store
        raise AssertionError("no embedding without a store")


def ask(database: Database, question: str = "how do I restart the payments service?"):
    retriever = Retriever(RetrievalConfig(), lambda: None, None, NoIndex())
    svc = AnsweringService(AnsweringConfig(), retriever, database)
    return svc.ask(question, Requester(platform="web", channel="C1", user="U1"))


def test_every_question_is_logged_and_survives_a_new_engine(database: Database):
    answer = ask(database)
    assert answer.abstained
    again = Database(database.url)
    try:
        with again.session() as s:
            row = s.get(QueryRecord, answer.query_id)
        assert row is not None
        assert (row.platform, row.channel, row.user_id) == ("web", "C1", "U1")
        assert row.question == "how do I restart the payments service?"
        assert row.abstained and row.answer == answer.text
        assert set(row.latency_ms) == {"retrieve", "answer", "total"}
        assert row.created_at.tzinfo is not None
    finally:
        again.dispose()


def test_votes_are_stored_and_a_second_click_changes_them(database: Database):
    qid = ask(database).query_id
    fb = FeedbackService(database)
    first = fb.record(qid, "up", user="U1")
    assert not first.changed
    second = fb.record(qid, "down", user="U1", reason="outdated")
    assert second.changed
    other = fb.record(qid, "up", user="U2")
    assert not other.changed
    rows = {r.user_id: r for r in fb.for_query(qid)}
    assert set(rows) == {"U1", "U2"}
    assert (rows["U1"].vote, rows["U1"].reason) == ("down", "outdated")
    assert rows["U2"].vote == "up"
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Feedback)) == 2


@pytest.mark.parametrize(
    ("qid", "vote", "message"),
    [("nope", "up", "no answer with query id"), (None, "sideways", "vote must be one of")],
)
def test_bad_feedback_is_refused_and_nothing_is_written(database: Database, qid, vote, message):
    real = ask(database).query_id
    with pytest.raises(FeedbackError, match=message):
        FeedbackService(database).record(qid or real, vote)
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Feedback)) == 0
