"""Follow-ups through the real answering service: a thread's history read back from the
query log (SQLite), its context in retrieval (Chroma and BM25 over the test runbooks), and
with an ``llm:`` the condensing call to a local OpenAI-compatible server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from bot.answer import threads
from bot.answer.generation import CONDENSE_PROMPT
from bot.answer.types import Answer, Requester
from bot.runtime import Runtime
from db.models import QueryRecord
from tests.bot.fake_openai import FakeOpenAI, completion, error
from tests.bot.servers import ROTATE_DOC, runbook_connector, write_runbooks
from tests.conftest import make_config

ROTATE_Q = "How do I rotate the password of the message queue?"
# Asked on its own this finds nothing confident in the test runbooks; in the thread of
# ROTATE_Q it is about the queue password (the vault path secret/orders/mq).
FOLLOW_UP = "where do I store it afterwards?"
PHISHING_Q = "How do I report a phishing email?"
PHISHING_DOC = "security/reporting-a-phishing-email.md"


@pytest.fixture(scope="module")
def base(tmp_path_factory, embedder) -> Path:
    """The test runbooks, synced once; each test builds its own runtime over the index."""
    tmp = tmp_path_factory.mktemp("threads")
    rt = Runtime(make_config(tmp, [runbook_connector(write_runbooks(tmp / "kb"))]))
    try:
        assert rt.indexer.sync()[0].ok
    finally:
        rt.close()
    return tmp


@pytest.fixture
def rt(base: Path, runtime_factory) -> Runtime:
    return runtime_factory(make_config(base, [runbook_connector(base / "kb")]))


def in_thread(platform: str = "test") -> Requester:
    return Requester(platform, thread=f"t-{uuid.uuid4().hex}")


def row(rt: Runtime, answer: Answer) -> QueryRecord:
    with rt.db.session() as s:
        found = s.get(QueryRecord, answer.query_id)
        assert found is not None
        s.expunge(found)
        return found


def test_a_follow_up_is_answered_from_the_document_its_thread_is_about(rt: Runtime) -> None:
    alone = rt.answering.ask(FOLLOW_UP, in_thread())
    assert alone.abstained  # without the thread there is nothing to go on

    thread = in_thread()
    first = rt.answering.ask(ROTATE_Q, thread)
    follow = rt.answering.ask(FOLLOW_UP, thread)

    assert not follow.abstained
    assert follow.citations[0].path == ROTATE_DOC
    assert "secret/orders/mq" in follow.text
    logged = row(rt, follow)
    assert logged.question == FOLLOW_UP  # the question as asked
    assert logged.follows == first.query_id
    assert logged.thread_key == threads.thread_key("test", thread.thread or "")
    assert logged.thread_key == row(rt, first).thread_key
    assert logged.standalone_question == f"{FOLLOW_UP} {ROTATE_Q}"
    assert logged.condense_fallback is None
    assert row(rt, first).follows is None


def test_a_complete_question_in_an_old_thread_is_answered_on_its_own(rt: Runtime) -> None:
    thread = in_thread()
    first = rt.answering.ask(ROTATE_Q, thread)
    other = rt.answering.ask(PHISHING_Q, thread)
    assert other.citations[0].path == PHISHING_DOC
    assert other.citations[0].path != first.citations[0].path
    logged = row(rt, other)
    assert logged.follows == first.query_id  # still the thread's next turn
    assert logged.standalone_question is None  # searched as asked


def test_a_thread_the_log_does_not_know_is_answered_as_a_new_question(rt: Runtime) -> None:
    thread = in_thread()
    assert not rt.answering.answered_in("test", thread.thread or "")
    answer = rt.answering.ask(FOLLOW_UP, thread)
    assert answer.abstained and answer.follows is None
    assert rt.answering.answered_in("test", thread.thread or "")
    # Threads are per platform: the same id elsewhere is another conversation.
    assert not rt.answering.answered_in("slack", thread.thread or "")


def test_a_thread_whose_earlier_answer_was_deleted_starts_afresh(rt: Runtime) -> None:
    thread = in_thread()
    first = rt.answering.ask(ROTATE_Q, thread)
    with rt.db.session() as s:  # as after restoring a backup older than the thread
        s.execute(delete(QueryRecord).where(QueryRecord.id == first.query_id))
    assert not rt.answering.answered_in("test", thread.thread or "")
    follow = rt.answering.ask(FOLLOW_UP, thread)
    assert follow.abstained
    logged = row(rt, follow)
    assert (logged.follows, logged.standalone_question) == (None, None)


def test_the_history_survives_a_restart(base: Path, runtime_factory) -> None:
    config = make_config(base, [runbook_connector(base / "kb")])
    thread = in_thread()
    first = runtime_factory(config).answering.ask(ROTATE_Q, thread)
    follow = runtime_factory(config).answering.ask(FOLLOW_UP, thread)
    assert follow.follows == first.query_id
    assert follow.citations[0].path == ROTATE_DOC


def test_a_50_turn_thread_reads_a_bounded_history(rt: Runtime) -> None:
    thread = in_thread()
    # Long questions, so the character bound is reached before the turn bound.
    padding = " Please be thorough, this is for the on-call handbook." * 15
    asked = [rt.answering.ask(f"Turn {i}: {ROTATE_Q}{padding}", thread) for i in range(50)]

    history = rt.answering.history(thread)
    assert 1 <= len(history.turns) <= threads.HISTORY_TURNS
    assert history.chars() <= threads.HISTORY_CHARS
    # The newest turns, oldest first, ending with the last one asked.
    ids = [t.query_id for t in history.turns]
    assert ids == [a.query_id for a in asked[-len(ids) :]]
    assert history.turns[-1].question.startswith("Turn 49:")

    follow = rt.answering.ask(FOLLOW_UP, thread)
    logged = row(rt, follow)
    assert logged.follows == asked[-1].query_id
    assert logged.standalone_question is not None
    assert len(logged.standalone_question) <= threads.QUERY_CHARS
    assert follow.citations[0].path == ROTATE_DOC


def test_the_history_turn_bound_holds_for_short_turns(rt: Runtime) -> None:
    key = threads.thread_key("test", "short-turns")
    with rt.db.session() as s:
        for i in range(threads.HISTORY_TURNS + 3):
            s.add(
                QueryRecord(
                    id=f"short{i:02d}",
                    created_at=datetime(2026, 12, 1, 9, i, tzinfo=UTC),
                    platform="test",
                    question=f"q{i}",
                    answer=f"a{i}",
                    abstained=i == 8,
                    citations=[{"connector": "kb", "path": f"doc{i}.md"}],
                    retrieved=[],
                    latency_ms={},
                    thread_key=key,
                )
            )
    history = rt.answering.history(Requester("test", thread="short-turns"))
    assert [t.question for t in history.turns] == ["q3", "q4", "q5", "q6", "q7", "q8"]
    # The latest answer's documents first; an abstention's closest sources are not cited.
    assert history.cited() == [("kb", f"doc{i}.md") for i in (7, 6, 5, 4, 3)]


def test_a_thread_id_longer_than_the_column_is_kept_as_a_digest(rt: Runtime) -> None:
    thread = Requester("teams", thread="a:1" + "x" * 400)
    first = rt.answering.ask(ROTATE_Q, thread)
    follow = rt.answering.ask(FOLLOW_UP, thread)
    assert follow.follows == first.query_id
    key = row(rt, follow).thread_key
    assert key is not None and key.startswith("teams:sha256:") and len(key) <= 255


# -- with an llm: the follow-up is condensed first ----------------------------------------

CONDENSED = "Where is the new message queue password stored after rotating it?"
ANSWER = "Store it at the vault path `secret/orders/mq` [1]."


@pytest.fixture
def llm_rt(base: Path, llm: FakeOpenAI, runtime_factory) -> Runtime:
    llm.requests.clear()
    section = llm.llm_section(cache=False, timeout_s=10)
    rt = runtime_factory(make_config(base, [runbook_connector(base / "kb")], llm=section))
    rt.answering.generator.sleep = lambda _s: None
    return rt


def messages(request: dict[str, Any]) -> tuple[str, str]:
    return request["messages"][0]["content"], request["messages"][1]["content"]


def test_with_a_model_a_follow_up_is_condensed_and_both_questions_are_logged(
    llm_rt: Runtime, llm: FakeOpenAI
) -> None:
    thread = in_thread()
    llm.script = [completion(ANSWER)]
    first = llm_rt.answering.ask(ROTATE_Q, thread)
    assert first.mode == "generated"
    assert len(llm.requests) == 1  # a first question is not condensed

    llm.script = [
        completion(CONDENSED, prompt_tokens=200, completion_tokens=15),
        completion(ANSWER),
    ]
    follow = llm_rt.answering.ask(FOLLOW_UP, thread)

    condense, answer = llm.requests[1:]
    system, user = messages(condense)
    assert system == CONDENSE_PROMPT
    assert f"User: {ROTATE_Q}" in user and f"Last question: {FOLLOW_UP}" in user
    assert "secret/orders/mq" in user  # the earlier answer, as the model wrote it
    # The answer is written for the condensed question, from the sources found for it.
    assert f"Question: {CONDENSED}" in messages(answer)[1]
    assert follow.mode == "generated" and follow.citations[0].path == ROTATE_DOC
    logged = row(llm_rt, follow)
    assert (logged.question, logged.standalone_question) == (FOLLOW_UP, CONDENSED)
    assert (logged.follows, logged.condense_fallback) == (first.query_id, None)
    # Both calls are paid for.
    assert (logged.input_tokens, logged.output_tokens) == (900 + 200, 60 + 15)
    assert "condense" in logged.latency_ms


def test_a_failing_condense_falls_back_to_the_thread_s_earlier_question(
    llm_rt: Runtime, llm: FakeOpenAI
) -> None:
    thread = in_thread()
    llm.script = [completion(ANSWER)]
    first = llm_rt.answering.ask(ROTATE_Q, thread)

    llm.script = [error(500, "the model is down"), completion(ANSWER)]
    follow = llm_rt.answering.ask(FOLLOW_UP, thread)

    assert len(llm.requests) == 3  # the failed condense, then the answer
    assert messages(llm.requests[1])[0] == CONDENSE_PROMPT
    assert follow.citations[0].path == ROTATE_DOC
    logged = row(llm_rt, follow)
    assert logged.condense_fallback == "provider_error"
    assert logged.standalone_question == f"{FOLLOW_UP} {ROTATE_Q}"
    assert logged.follows == first.query_id


@pytest.mark.parametrize(
    ("reply", "reason"),
    [("", "empty"), ("x" * 700, "unparseable")],
    ids=["empty", "not-a-question"],
)
def test_an_unusable_condensed_question_is_not_searched(
    llm_rt: Runtime, llm: FakeOpenAI, reply: str, reason: str
) -> None:
    thread = in_thread()
    llm.script = [completion(ANSWER)]
    llm_rt.answering.ask(ROTATE_Q, thread)
    llm.script = [completion(reply), completion(ANSWER)]
    follow = llm_rt.answering.ask(FOLLOW_UP, thread)
    logged = row(llm_rt, follow)
    assert logged.condense_fallback == reason
    assert logged.standalone_question == f"{FOLLOW_UP} {ROTATE_Q}"
    assert follow.citations[0].path == ROTATE_DOC


def test_questions_asked_alone_make_no_condense_call(llm_rt: Runtime, llm: FakeOpenAI) -> None:
    llm.script = [completion(ANSWER)]
    llm_rt.answering.ask(ROTATE_Q)
    llm_rt.answering.ask(ROTATE_Q)
    assert [messages(r)[0] == CONDENSE_PROMPT for r in llm.requests] == [False, False]
    with llm_rt.db.session() as s:
        rows = s.scalars(select(QueryRecord).where(QueryRecord.thread_key.is_(None))).all()
        assert len(rows) >= 2 and all(r.follows is None for r in rows)
