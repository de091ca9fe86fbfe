"""The review queue and leads' curations over the real answering and feedback paths: what
is queued and why, each reviewer action, reviewed items leaving the queue and becoming
labeled eval cases, undo, broken curations, audience isolation of pins, the queue gauge and
the digest line; on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from bot.answer.curation import CurationError
from bot.answer.feedback import UnknownQuery
from bot.answer.types import Answer, Requester
from bot.review.digest import compose
from bot.review.evaluation import parse_questions
from bot.review.queue import QueueCollector, ReviewError, ReviewQueue, export_cases, review_queue
from bot.review.report import build_report
from bot.review.trace import adjustment_line, format_trace, trace
from bot.runtime import Runtime
from db.models import IndexedDocument
from tests.bot.review.test_report import database_url
from tests.bot.servers import runbook_connector, write_runbooks
from tests.conftest import make_config

PHISHING_DOC = "security/reporting-a-phishing-email.md"
ROTATE_DOC = "ops/rotate-queue-credentials.md"
LAPTOP_DOC = "onboarding/laptop-setup.md"
VAULT_DOC = "vault-break-glass.md"
# Abstains over the runbooks (its closest source is the queue credentials runbook).
MAILBOX_Q = "my mailbox got a weird message asking for my password"
# Abstains; the queue runbook does answer it ("stay open for ten minutes").
CONNECTIONS_Q = "how long do old connections stay open?"
ROTATE_Q = "How do I rotate the password of the message queue?"
VAULT_Q = "The vault is sealed, how do I get in?"
VPN_Q = "Is there a VPN for new engineers?"
GAP_Q = "What flour to water ratio makes a good sourdough starter?"
SRE = frozenset({"sre"})
VAULT = """\
# Vault break-glass procedure

When the vault is sealed and nobody can log in, the on-call SRE unseals it with
`vault operator unseal` and three of the five key shares held by the SRE leads.
"""


@dataclass
class Kbot:
    """A runtime over the runbooks (public) and a vault runbook only the sre audience reads."""

    rt: Runtime
    kb: Path

    def ask(self, question: str, user: str = "ann", audiences: frozenset[str] = frozenset()):
        return self.rt.answering.ask(question, Requester("web", None, user, audiences | {"public"}))

    def vote(self, answer: Answer, vote: str, user: str, reason: str | None = None) -> None:
        self.rt.feedback.record(answer.query_id, vote, user=user, reason=reason)

    @property
    def queue(self) -> ReviewQueue:
        return review_queue(self.rt)


def build(folder: Path, db_url: str, **sections: Any) -> Runtime:
    kb = write_runbooks(folder / "kb")
    vault = folder / "vault"
    vault.mkdir()
    (vault / VAULT_DOC).write_text(VAULT, encoding="utf-8")
    config = make_config(
        folder,
        [
            runbook_connector(kb),
            {"name": "vault", "type": "filesystem", "path": str(vault), "audience": "sre"},
        ],
        storage={"data_dir": str(folder / "data"), "database_url": db_url},
        **sections,
    )
    rt = Runtime(config)
    assert all(r.ok for r in rt.indexer.sync())
    return rt


@contextmanager
def kbot_over(kind: str, folder: Path, **sections: Any) -> Iterator[Kbot]:
    with database_url(kind, folder) as url:
        rt = build(folder, url, **sections)
        try:
            yield Kbot(rt, folder / "kb")
        finally:
            rt.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def kbot(request, tmp_path_factory, embedder) -> Iterator[Kbot]:
    with kbot_over(request.param, tmp_path_factory.mktemp(f"review-{request.param}")) as k:
        yield k


@contextmanager
def curated(k: Kbot, action: str, question: str, connector: str, path: str) -> Iterator[Any]:
    """A curation for the length of a test, so the module's other tests do not see it."""
    c = k.rt.curations.add(action, question, connector, path, "lead")
    try:
        yield c
    finally:
        k.rt.curations.remove(c.id, "lead")


def cited(answer: Answer) -> list[str]:
    return [c.path for c in answer.citations]


def queued(k: Kbot) -> dict[str, Any]:
    """The queue's items by each of their query ids."""
    return {qid: item for item in k.queue.items() for qid in item.query_ids}


# -- what is queued, and why -------------------------------------------------------------


def test_abstained_downvoted_and_low_confidence_answers_are_queued_with_why(kbot: Kbot) -> None:
    gap = kbot.ask(GAP_Q)
    assert gap.abstained
    rotate = kbot.ask(ROTATE_Q, "bo")
    kbot.vote(rotate, "down", "bo", "outdated")
    vpn = kbot.ask(VPN_Q)
    assert not vpn.abstained and vpn.confidence is not None
    items = queued(kbot)
    assert items[gap.query_id].why == "abstained"
    assert items[rotate.query_id].why == "downvoted"
    # The threshold decides: just over the answer's confidence queues it, at it does not.
    over = ReviewQueue(kbot.rt.db, vpn.confidence + 0.001)
    at = ReviewQueue(kbot.rt.db, vpn.confidence)
    assert next(i for i in over.items() if vpn.query_id in i.query_ids).why == "low_confidence"
    assert vpn.query_id not in {q for i in at.items() for q in i.query_ids}
    # The JSON that `kbot review list --json` prints.
    j = items[gap.query_id].as_json()
    assert {"query_id", "question", "why", "asked_at"} <= set(j)
    assert j["question"] == GAP_Q and j["asked_at"].startswith(str(gap_day(kbot, gap)))


def gap_day(k: Kbot, answer: Answer) -> Any:
    return trace(k.rt.db, answer.query_id)["created_at"].date()


def test_a_question_asked_again_is_one_item_and_a_downvote_on_any_ask_says_downvoted(
    kbot: Kbot,
) -> None:
    first = kbot.ask("Where do I buy a sourdough proofing basket?", "cy")
    again = kbot.ask("where do I buy a sourdough proofing basket", "di")
    assert first.abstained and again.abstained
    kbot.vote(first, "down", "cy", "not found")
    item = queued(kbot)[again.query_id]
    assert item.query_id == again.query_id  # the latest ask represents it
    assert set(item.query_ids) == {first.query_id, again.query_id}
    assert item.why == "downvoted" and item.asked == 2
    # One review decides both asks.
    done = kbot.queue.gap(first.query_id, "lead")
    assert set(done.query_ids) == {first.query_id, again.query_id}
    assert not {first.query_id, again.query_id} & set(queued(kbot))


def test_eval_runs_and_confident_unvoted_answers_are_not_queued(kbot: Kbot) -> None:
    sure = kbot.ask(ROTATE_Q, "eve")
    assert not sure.abstained and sure.confidence >= kbot.rt.config.feedback.review_below
    kbot.vote(sure, "up", "eve")
    evaluated = kbot.rt.answering.ask(GAP_Q, Requester("eval"))
    items = queued(kbot)
    assert sure.query_id not in items and evaluated.query_id not in items
    with pytest.raises(ReviewError, match="not in the review queue"):
        kbot.queue.right(sure.query_id, "lead")


# -- the reviewer's actions ----------------------------------------------------------------


def test_picking_a_document_pins_it_and_the_next_ask_is_answered_from_it(kbot: Kbot) -> None:
    before = kbot.ask(MAILBOX_Q, "fay")
    assert before.abstained and PHISHING_DOC not in cited(before)[:1]
    done = kbot.queue.pick(before.query_id, "runbooks", PHISHING_DOC, "lead")
    try:
        assert done.outcome == "pinned" and done.curation_id is not None
        assert before.query_id not in queued(kbot)
        pin = kbot.rt.curations.get(done.curation_id)
        assert (pin.action, pin.path, pin.query_id, pin.created_by) == (
            "pin",
            PHISHING_DOC,
            before.query_id,
            "lead",
        )
        after = kbot.ask(MAILBOX_Q, "gus")
        assert cited(after)[0] == PHISHING_DOC and not after.abstained
        # The trace says so, in the CLI's text and in the data the web trace draws from.
        notes = trace(kbot.rt.db, after.query_id)["adjustments"]
        assert [n["kind"] for n in notes if n["applied"]] == ["pin"]
        assert f"pin #{pin.id} of runbooks:{PHISHING_DOC} applied (similarity 1.00)" in (
            format_trace(trace(kbot.rt.db, after.query_id))
        )
        # A reviewed answer is reviewed once.
        with pytest.raises(ReviewError, match="already reviewed: pinned by lead"):
            kbot.queue.dismiss(before.query_id, "other")
    finally:
        kbot.rt.curations.remove(done.curation_id, "lead")


def test_right_gap_and_dismiss_leave_the_queue_and_reviews_become_labeled_eval_cases(
    kbot: Kbot,
) -> None:
    vpn = kbot.ask("Do new engineers install a VPN client?", "hal")
    kbot.vote(vpn, "down", "hal", "wrong")
    gap = kbot.ask("Which bakery delivers croissants to the office?", "ivy")
    kbot.vote(gap, "down", "ivy", "not found")
    joke = kbot.ask("Tell me a joke about sourdough bread", "jo")
    kbot.vote(joke, "down", "jo")
    unreviewed = kbot.ask("Which kombucha flavours does the kitchen stock?", "kim")
    kbot.vote(unreviewed, "down", "kim", "not found")
    assert cited(vpn) == [LAPTOP_DOC]

    assert kbot.queue.right(vpn.query_id, "lead").outcome == "right"
    assert kbot.queue.gap(gap.query_id, "lead").outcome == "gap"
    assert kbot.queue.dismiss(joke.query_id, "lead").outcome == "dismissed"
    items = queued(kbot)
    assert not {vpn.query_id, gap.query_id, joke.query_id} & set(items)
    assert unreviewed.query_id in items

    cases, labeled = export_cases(kbot.queue, kbot.rt.feedback.eval_cases())
    by_q = {c["question"]: c for c in cases}
    assert by_q[vpn.question]["relevant"] == [LAPTOP_DOC]
    assert by_q[vpn.question]["kind"] == "lookup"
    assert by_q[vpn.question]["review"]["outcome"] == "right"
    assert (by_q[gap.question]["relevant"], by_q[gap.question]["kind"]) == ([], "unanswerable")
    assert joke.question not in by_q  # dismissed: no label, and not left to label either
    # The unreviewed 👎 is exported as before, for a lead to label by hand.
    assert by_q[unreviewed.question]["relevant"] == []
    assert "feedback" in by_q[unreviewed.question]
    assert labeled == sum("review" in c for c in cases)
    # The labeled cases are what `kbot eval` reads, as they are.
    labeled_lines = [c for c in cases if "review" in c]
    questions = parse_questions([json.dumps(c) for c in labeled_lines])
    assert {q.question for q in questions} >= {vpn.question, gap.question}


def test_unknown_answers_are_clear_errors(kbot: Kbot) -> None:
    for action in (kbot.queue.right, kbot.queue.gap, kbot.queue.dismiss):
        with pytest.raises(ReviewError, match="no answer with query id 'nope'"):
            action("nope", "lead")
    with pytest.raises(ReviewError, match="no answer with query id 'nope'"):
        kbot.queue.pick("nope", "runbooks", ROTATE_DOC, "lead")
    with pytest.raises(UnknownQuery, match="no answer with query id 'nope'"):
        kbot.rt.feedback.record("nope", "down", user="x")
    gap = kbot.ask("Is there a sourdough club at the office?")
    with pytest.raises(CurationError, match="no indexed document"):
        kbot.queue.pick(gap.query_id, "runbooks", "no/such.md", "lead")
    assert gap.query_id in queued(kbot)  # a failed pick leaves it queued
    with pytest.raises(ReviewError, match="needs who"):
        kbot.queue.gap(gap.query_id, " ")


# -- curations -----------------------------------------------------------------------------


def test_undo_restores_the_answer(kbot: Kbot) -> None:
    before = kbot.ask(CONNECTIONS_Q)
    assert before.abstained
    with curated(kbot, "pin", CONNECTIONS_Q, "runbooks", ROTATE_DOC) as pin:
        pinned = kbot.ask(CONNECTIONS_Q)
        assert not pinned.abstained and cited(pinned)[0] == ROTATE_DOC
        assert "ten minutes" in pinned.text
    assert not kbot.rt.curations.get(pin.id).active
    after = kbot.ask(CONNECTIONS_Q)
    assert after.abstained and after.text == before.text

    rotate = kbot.ask(ROTATE_Q)
    assert cited(rotate)[0] == ROTATE_DOC
    with curated(kbot, "suppress", ROTATE_Q, "runbooks", ROTATE_DOC) as sup:
        hidden = kbot.ask(ROTATE_Q)
        assert ROTATE_DOC not in cited(hidden)
        assert ROTATE_DOC not in {r["path"] for r in hidden.retrieved}
        note = next(n for n in hidden.adjustments if n["kind"] == "suppress")
        assert (
            adjustment_line(note)
            == f"suppress #{sup.id} of runbooks:{ROTATE_DOC} applied (similarity 1.00)"
        )
        # Only for that question and its paraphrases.
        other = kbot.ask("Which vault path holds the order service's queue password?")
        assert ROTATE_DOC in cited(other)
    restored = kbot.ask(ROTATE_Q)
    assert cited(restored) == cited(rotate) and restored.text == rotate.text


def test_a_pin_is_only_shown_to_askers_who_may_see_its_document(kbot: Kbot) -> None:
    with curated(kbot, "pin", VAULT_Q, "vault", VAULT_DOC) as pin:
        public = kbot.ask(VAULT_Q, "pat")
        assert "vault" not in {c.connector for c in public.citations}
        assert "vault" not in {r["connector"] for r in public.retrieved}
        assert "vault operator unseal" not in public.text
        note = next(n for n in public.adjustments if n["kind"] == "pin")
        assert note["curation"] == pin.id and not note["applied"]
        sre = kbot.ask(VAULT_Q, "sam", SRE)
        assert (sre.citations[0].connector, cited(sre)[0]) == ("vault", VAULT_DOC)
        assert "vault operator unseal" in sre.text


def test_a_curation_of_a_deleted_document_is_broken_and_ignored(kbot: Kbot) -> None:
    page = kbot.kb / "ops" / "old-deploy.md"
    page.write_text("# Deploying the legacy billing service\n\nRun `billctl ship`.\n")
    assert all(r.ok for r in kbot.rt.indexer.sync())
    question = "How do I deploy the legacy billing service?"
    with curated(kbot, "pin", question, "runbooks", "ops/old-deploy.md") as pin:
        assert not kbot.rt.curations.get(pin.id).broken
        page.unlink()
        assert all(r.ok for r in kbot.rt.indexer.sync())
        view = next(v for v in kbot.rt.curations.list() if v.id == pin.id)
        assert view.broken and view.title is None and view.as_json()["broken"] is True
        answer = kbot.ask(question)
        assert "ops/old-deploy.md" not in cited(answer)
        assert not next(n for n in answer.adjustments if n["curation"] == pin.id)["applied"]
        # A curation of a document gone from the documents table alone is broken too.
        with curated(kbot, "suppress", question, "runbooks", LAPTOP_DOC) as sup:
            with kbot.rt.db.session() as s:
                row = s.get(IndexedDocument, ("runbooks", LAPTOP_DOC))
                saved = {c.key: getattr(row, c.key) for c in IndexedDocument.__table__.columns}
                s.execute(
                    delete(IndexedDocument).where(
                        IndexedDocument.connector == "runbooks",
                        IndexedDocument.doc_id == LAPTOP_DOC,
                    )
                )
            try:
                assert kbot.rt.curations.get(sup.id).broken
            finally:
                with kbot.rt.db.session() as s:
                    s.add(IndexedDocument(**saved))
    with pytest.raises(CurationError, match="no indexed document"):
        kbot.rt.curations.add("pin", question, "runbooks", "ops/old-deploy.md", "lead")


# -- the count: a gauge and a digest line ------------------------------------------------


def test_the_queue_count_is_a_gauge_and_a_digest_line(kbot: Kbot) -> None:
    kbot.ask("Does the office have a sourdough starter hotel?")
    n = kbot.queue.count()
    assert n >= 1
    [family] = QueueCollector(kbot.rt).collect()
    assert family.name == "kbot_review_queue"
    assert [s.value for s in family.samples] == [n]
    report = build_report(kbot.rt.db, kbot.rt.config)
    assert report["review_queue"] == n
    digest = compose(report, None, lambda t: t)
    assert f"{n} answers waiting for review" in digest.lines
    assert "1 answer waiting for review" in compose({**report, "review_queue": 1}, None, str).lines


def test_the_trace_says_what_votes_did_in_a_sentence() -> None:
    moved = {"kind": "votes", "connector": "runbooks", "path": "x.md", "from": 1, "to": 2}
    assert (
        adjustment_line({**moved, "net": -2.0, "voters": 3, "up": 0, "down": 3})
        == "votes moved runbooks:x.md from 1 to 2 (net -2.0 from 3 voters)"
    )
    assert (
        adjustment_line({**moved, "to": 1, "net": 1.0, "voters": 1, "up": 1, "down": 0})
        == "votes left runbooks:x.md at 1 (net +1.0 from 1 voter)"
    )
