"""Votes and curations change what the next asker is shown: bounded, per audience, and
undone with one action. Seeded through the real answering and feedback paths, on SQLite
and the local PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete

from bot.answer.curation import CurationError
from bot.answer.types import Requester
from bot.answer.votes import DocVotes, counts_against, move
from config.models import FeedbackConfig
from db.models import IndexedDocument, QueryRecord, utcnow
from indexer.chunking import Chunk
from indexer.store import ScoredChunk
from tests.conftest import make_config, migrated

# Three runbooks close in meaning (how to restart a consumer), one far from them, and one
# of a restricted audience.
FILES = {
    "consumer.md": """\
        # Restarting the orders queue consumer

        When the orders queue backs up, restart the consumer.

        1. Run `kubectl rollout restart deploy/orders-consumer`.
        2. Watch the queue depth fall with `mq stats orders`.
        """,
    "workers.md": """\
        # Restarting the orders queue workers

        The orders queue workers can be restarted when the queue backs up.

        1. Run `kubectl rollout restart deploy/orders-workers`.
        2. Check the queue depth with `mq stats orders`.
        """,
    "draining.md": """\
        # Draining the orders queue

        To empty the orders queue before database maintenance:

        1. Pause the producers with `mq pause orders`.
        2. Wait until `mq stats orders` shows depth 0.
        """,
    "lunch.md": """\
        # The canteen menu

        Lunch is served from noon; the vegetarian dish changes every Monday.
        """,
}
SECRET = {
    "queue-internals.md": """\
        # Orders queue internals for SRE

        How to restart the orders queue consumer safely: use `mq failover orders` first.
        """
}
QUESTION = "How do I restart the orders queue consumer?"
PARAPHRASE = "what are the steps to restart the consumer of the orders queue?"


@pytest.fixture(params=["sqlite", "postgresql"])
def rt(request, tmp_path, runtime_factory):
    for folder, files in (("kb", FILES), ("secret", SECRET)):
        (tmp_path / folder).mkdir()
        for name, text in files.items():
            (tmp_path / folder / name).write_text(
                "\n".join(line.removeprefix("        ") for line in text.splitlines()) + "\n"
            )
    storage = {"data_dir": str(tmp_path / "data")}
    if request.param == "postgresql":
        storage["database_url"] = migrated(request.getfixturevalue("pg_url"))
    config = make_config(
        tmp_path,
        [
            {"name": "kb", "type": "filesystem", "path": str(tmp_path / "kb")},
            {
                "name": "secret",
                "type": "filesystem",
                "path": str(tmp_path / "secret"),
                "audience": "sre",
            },
        ],
        storage=storage,
    )
    runtime = runtime_factory(config)
    assert all(r.ok for r in runtime.indexer.sync())
    return runtime


def docs(answer) -> list[str]:
    return list(dict.fromkeys(r["path"] for r in answer.retrieved))


def vote(rt, answer, n: int, vote: str = "down", reason: str | None = "outdated", who="u"):
    for i in range(n):
        rt.feedback.record(answer.query_id, vote, user=f"{who}{i}", reason=reason)


WORKERS = "How do I restart the orders queue workers?"  # close to QUESTION; cites workers.md


def workers_answer(rt, requester=None):
    answer = rt.answering.ask(WORKERS, requester)
    assert [c.path for c in answer.citations] == ["workers.md"]
    return answer


def test_downvotes_move_a_document_one_place_and_no_further(rt):
    first = rt.answering.ask(QUESTION)
    assert docs(first)[:3] == ["consumer.md", "workers.md", "draining.md"]
    assert first.adjustments == []
    vote(rt, workers_answer(rt), 10)  # ten voters: still one place, the bound

    again = rt.answering.ask(PARAPHRASE)  # a close question shares the votes
    assert docs(again)[:3] == ["consumer.md", "draining.md", "workers.md"]
    assert any(c.path == "workers.md" for c in again.citations)  # lowered, not hidden
    [note] = again.adjustments
    assert (note["kind"], note["path"], note["from"], note["to"]) == ("votes", "workers.md", 2, 3)
    assert (note["voters"], note["down"], note["net"]) == (10, 10, -10.0)
    # The trace keeps it: the query log has what moved.
    with rt.db.session() as s:
        row = s.get(QueryRecord, again.query_id)
        assert row.adjustments == again.adjustments
        assert row.audiences == "public" and row.question_vec and row.confidence > 0.4


def test_upvotes_lift_a_close_document(rt):
    vote(rt, workers_answer(rt), 3, "up", None)
    lifted = rt.answering.ask(QUESTION)
    assert docs(lifted)[:2] == ["workers.md", "consumer.md"]
    assert lifted.citations[0].path == "workers.md"
    [note] = lifted.adjustments
    assert (note["from"], note["to"], note["up"]) == (2, 1, 3)


def test_too_few_voters_or_a_reason_that_is_not_about_the_sources_move_nothing(rt):
    answer = workers_answer(rt)
    vote(rt, answer, 1)  # one voter: under feedback.min_voters
    vote(rt, answer, 5, reason="not found", who="gap")  # a content gap, not a verdict
    vote(rt, answer, 5, reason=None, who="silent")  # no reason: too little to go on
    again = rt.answering.ask(QUESTION)
    assert docs(again)[:3] == ["consumer.md", "workers.md", "draining.md"]
    assert all(n["from"] == n["to"] for n in again.adjustments)


SRE = Requester(audiences=frozenset({"sre"}))


def test_votes_of_the_public_do_not_move_documents_for_sre(rt):
    vote(rt, workers_answer(rt), 5)
    assert rt.answering.ask(QUESTION).adjustments  # the public asker's ranking moved
    theirs = rt.answering.ask(QUESTION, SRE)
    assert theirs.adjustments == []


def test_votes_of_sre_do_not_move_documents_for_the_public(rt):
    sre_answer = rt.answering.ask(WORKERS, SRE)
    vote(rt, sre_answer, 5, who="sre")
    assert rt.answering.ask(QUESTION).adjustments == []


def test_votes_decay_with_age(rt):
    vote(rt, workers_answer(rt), 2)
    assert docs(rt.answering.ask(QUESTION))[1] == "draining.md"
    # The same two votes a half-life later weigh one voter's worth: nothing moves.
    later = utcnow() + timedelta(days=rt.config.feedback.half_life_days)
    rt.votes.now = lambda: later
    rt.votes.invalidate()
    assert docs(rt.answering.ask(QUESTION))[1] == "workers.md"


def test_ranking_off_ignores_votes(tmp_path, runtime_factory):
    (tmp_path / "kb").mkdir()
    for name, text in FILES.items():
        (tmp_path / "kb" / name).write_text(
            "\n".join(line.removeprefix("        ") for line in text.splitlines()) + "\n"
        )
    config = make_config(
        tmp_path,
        [{"name": "kb", "type": "filesystem", "path": str(tmp_path / "kb")}],
        feedback={"ranking": False},
    )
    rt = runtime_factory(config)
    assert rt.indexer.sync()[0].ok
    assert rt.votes is None
    vote(rt, workers_answer(rt), 5)
    again = rt.answering.ask(QUESTION)
    assert docs(again)[:3] == ["consumer.md", "workers.md", "draining.md"]
    assert again.adjustments == []


def test_a_pin_leads_for_close_questions_and_is_undone(rt):
    pin = rt.curations.add("pin", QUESTION, "kb", "draining.md", by="lead@example.com")
    assert (pin.action, pin.title, pin.broken) == ("pin", "Draining the orders queue", False)
    pinned = rt.answering.ask(PARAPHRASE)
    assert pinned.citations[0].path == "draining.md" and not pinned.abstained
    [note] = [n for n in pinned.adjustments if n["kind"] == "pin"]
    assert note["curation"] == pin.id and note["applied"]
    # Far from the curated question: untouched.
    other = rt.answering.ask("What is on the canteen menu for lunch?")
    assert other.citations[0].path == "lunch.md" and not other.adjustments

    removed = rt.curations.remove(pin.id, by="lead@example.com")
    assert removed.removed_by == "lead@example.com" and not removed.active
    assert rt.answering.ask(PARAPHRASE).citations[0].path == "consumer.md"
    assert [c.id for c in rt.curations.list(include_removed=True)] == [pin.id]
    assert rt.curations.list() == []


def test_a_pin_answers_a_question_retrieval_alone_would_abstain_on(rt):
    question = "Where is the lunch schedule kept?"
    assert rt.answering.ask("What is the orders queue backlog procedure?").citations
    rt.curations.add("pin", question, "kb", "lunch.md", by="lead")
    answer = rt.answering.ask(question)
    assert not answer.abstained and answer.citations[0].path == "lunch.md"


def test_a_suppressed_document_is_left_out_for_those_questions_only(rt):
    s = rt.curations.add("suppress", QUESTION, "kb", "consumer.md", by="lead")
    answer = rt.answering.ask(QUESTION)
    assert "consumer.md" not in docs(answer)
    assert docs(answer)[0] == "workers.md"
    [note] = answer.adjustments
    assert (note["kind"], note["curation"], note["applied"]) == ("suppress", s.id, True)
    elsewhere = rt.answering.ask("How do I roll out a restart of the consumer deployment?")
    assert elsewhere.adjustments == [] or "consumer.md" in docs(elsewhere)


def test_a_pinned_document_is_shown_only_to_its_audience(rt):
    rt.curations.add("pin", QUESTION, "secret", "queue-internals.md", by="lead")
    public = rt.answering.ask(QUESTION)
    assert "queue-internals.md" not in docs(public)
    assert "mq failover" not in public.text
    [note] = [n for n in public.adjustments if n["kind"] == "pin"]
    assert note["applied"] is False
    sre = rt.answering.ask(QUESTION, Requester(audiences=frozenset({"sre"})))
    assert sre.citations[0].path == "queue-internals.md"


def test_a_curation_of_a_deleted_document_is_broken_and_ignored(rt):
    pin = rt.curations.add("pin", QUESTION, "kb", "draining.md", by="lead")
    rt.db.write(
        lambda s: s.execute(delete(IndexedDocument).where(IndexedDocument.doc_id == "draining.md"))
    )
    assert rt.curations.get(pin.id).broken
    answer = rt.answering.ask(QUESTION)
    assert answer.citations[0].path == "consumer.md"
    assert [n["applied"] for n in answer.adjustments if n["kind"] == "pin"] == [False]


def test_curation_errors_are_clear(rt):
    with pytest.raises(CurationError, match="no indexed document 'nope.md' in connector 'kb'"):
        rt.curations.add("pin", QUESTION, "kb", "nope.md", by="lead")
    with pytest.raises(CurationError, match="pin, suppress"):
        rt.curations.add("boost", QUESTION, "kb", "lunch.md", by="lead")
    with pytest.raises(CurationError, match="no curation with id 999"):
        rt.curations.remove(999, by="lead")
    # Pinning what was suppressed replaces the suppression.
    s = rt.curations.add("suppress", QUESTION, "kb", "lunch.md", by="lead")
    p = rt.curations.add("pin", QUESTION, "kb", "lunch.md", by="lead")
    assert [c.id for c in rt.curations.list()] == [p.id] and s.id != p.id


# The ranking rule itself, on made-up hits.


def _hit(doc: str, dense: float, i: int = 0) -> ScoredChunk:
    chunk = Chunk(
        id=f"kb:{doc}:{i}",
        connector="kb",
        doc_id=doc,
        index=i,
        text="text",
        heading_path=(doc,),
        title=doc,
        url="",
        audience="public",
        last_modified=utcnow(),
    )
    return ScoredChunk(chunk, dense, dense=dense)


def _order(hits: list[ScoredChunk]) -> list[str]:
    return [h.chunk.id for h in hits]


def test_move_is_bounded_and_keeps_each_documents_chunks_in_order():
    hits = [_hit("a", 0.8), _hit("b", 0.78), _hit("a", 0.7, 1), _hit("c", 0.75), _hit("d", 0.3)]
    config = FeedbackConfig(min_voters=2, max_up=2, max_down=1, margin=0.1)
    down = {("kb", "a"): DocVotes(net=-50, voters=50, up=0, down=50)}
    moved, notes = move(hits, down, config)
    assert _order(moved) == ["kb:b:0", "kb:a:0", "kb:a:1", "kb:c:0", "kb:d:0"]
    assert [(n["from"], n["to"]) for n in notes] == [(1, 2)]
    # A document nothing close follows stays first, however it is voted.
    alone = [_hit("a", 0.8), _hit("d", 0.3)]
    assert _order(move(alone, down, config)[0]) == ["kb:a:0", "kb:d:0"]
    # Lifting: at most max_up places, never past a far better document.
    up = {("kb", "c"): DocVotes(net=9, voters=9, up=9, down=0)}
    lifted, _ = move(hits, up, config)
    assert list(dict.fromkeys(h.chunk.doc_id for h in lifted)) == ["c", "a", "b", "d"]
    far = {("kb", "d"): DocVotes(net=9, voters=9, up=9, down=0)}
    assert move(hits, far, config)[0] == hits


def test_alike_votes_keep_order_and_few_voters_move_nothing():
    hits = [_hit("a", 0.8), _hit("b", 0.79), _hit("c", 0.78)]
    config = FeedbackConfig()
    same = {("kb", d): DocVotes(net=3, voters=3, up=3, down=0) for d in "abc"}
    assert move(hits, same, config)[0] == hits
    one = {("kb", "b"): DocVotes(net=1, voters=1, up=1, down=0)}
    assert move(hits, one, config)[0] == hits
    assert DocVotes(net=-3.9, voters=4, up=0, down=4).places(config) == -1
    assert DocVotes(net=1.9, voters=2, up=2, down=0).places(config) == 0


def test_only_reasons_about_the_sources_count_against_them():
    assert counts_against("wrong") and counts_against("Outdated: step 2 moved")
    assert counts_against("irrelevant sources")
    assert not counts_against("not found") and not counts_against(None)
    assert not counts_against("wrongly formatted")


def test_a_changed_vote_replaces_the_earlier_one_and_deleted_answers_drop_out(rt):
    answer = workers_answer(rt)
    vote(rt, answer, 3)
    assert docs(rt.answering.ask(QUESTION))[1] == "draining.md"
    # The same voters now say the page was fine, only something was missing.
    vote(rt, answer, 3, reason="not found")
    assert docs(rt.answering.ask(QUESTION))[1] == "workers.md"
    vote(rt, answer, 3, reason="wrong")
    assert docs(rt.answering.ask(QUESTION))[1] == "draining.md"
    # A deleted answer's votes go with it, at the next full read.
    rt.db.write(lambda s: s.execute(delete(QueryRecord).where(QueryRecord.id == answer.query_id)))
    rt.votes.invalidate()
    assert docs(rt.answering.ask(QUESTION))[1] == "workers.md"


def test_votes_and_curations_degrade_when_the_database_is_away():
    import numpy as np

    from bot.answer.curation import Curations
    from bot.answer.votes import VoteRanking
    from db import Database

    # Nothing listens on port 9: every read fails, as during a restart.
    db = Database("postgresql+psycopg://kbot@127.0.0.1:9/kbot?connect_timeout=1")
    vector = np.full(384, 1 / np.sqrt(384), dtype=np.float32)
    try:
        assert VoteRanking(FeedbackConfig(), db).scores(vector, "public") == {}
        curations = Curations(db, lambda text: vector)
        assert curations.matching("How do I restart it?", vector) == []
        assert curations.chunk_ids("kb", "consumer.md") == []
    finally:
        db.dispose()
