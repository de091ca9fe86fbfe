"""The human review queue: answers a lead should look at, and what the lead decided.

An answer is queued when it abstained, got a 👎, or its confidence (how close its best
passage was in meaning) is under ``feedback.review_below``, and nobody has reviewed it.
Eval runs are not queued. The same question asked again (case, spacing and end
punctuation aside) is one item: a review decides every queued ask of it.

A reviewer marks the answer right, picks the document that answers it (a pin through
``Curations``, so the next ask of the question and its paraphrases is answered from it),
marks it a content gap for writers, or dismisses it; with ``feedback.post_corrections`` a
reviewer may also post a corrected answer into the question's conversation
(``bot.review.corrections``, which records it here as "corrected" once it is posted).
Reviewed answers leave the queue and, but for dismissed ones and corrections without a
picked document, become labeled eval cases (``eval_cases``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bot.answer.curation import Curations
from bot.answer.generation import normalise_question
from db import Database
from db.models import Feedback, QueryRecord, Review, utcnow

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

# Most telling first: a group of asks is queued for the first reason any of them has.
WHYS = ("downvoted", "abstained", "low_confidence")
# What a reviewer decides; "pinned" is the outcome of picking a document, "corrected" of
# posting a corrected answer (with a picked document or without one).
OUTCOMES = ("right", "pinned", "gap", "dismissed", "corrected")
# Reviewed outcomes that label an eval case ("dismissed" says nothing about the answer; a
# correction labels one only with its picked document).
LABELING = ("right", "pinned", "gap", "corrected")


class ReviewError(ValueError):
    """The review cannot be made as asked (unknown answer, not queued, already reviewed)."""


@dataclass(frozen=True)
class QueueItem:
    """One question waiting for review: its latest ask, and every queued ask of it."""

    query_id: str
    question: str
    why: str
    asked_at: datetime
    query_ids: tuple[str, ...]
    answer: str
    abstained: bool
    confidence: float | None
    citations: list[dict[str, Any]]

    @property
    def asked(self) -> int:
        return len(self.query_ids)

    def as_json(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "question": self.question,
            "why": self.why,
            "asked_at": self.asked_at.isoformat(),
            "asked": self.asked,
            "query_ids": list(self.query_ids),
            "confidence": self.confidence,
            "abstained": self.abstained,
        }


@dataclass(frozen=True)
class Reviewed:
    """What a review decided, for every queued ask of the question."""

    query_ids: tuple[str, ...]
    outcome: str
    reviewer: str
    connector: str | None = None
    path: str | None = None
    curation_id: int | None = None
    note: str | None = None


class ReviewQueue:
    """The queue over the query log, and the reviewer's four actions."""

    def __init__(self, db: Database, review_below: float, curations: Curations | None = None):
        self.db = db
        self.review_below = review_below
        # Only picking a document needs them (it pins it); counting and listing do not.
        self.curations = curations

    def _queued(self, s: Session) -> list[Any]:
        """Every unreviewed queued answer, newest first, with whether it has a 👎."""
        down = select(Feedback.query_id).where(Feedback.vote == "down")
        return list(
            s.execute(
                select(
                    QueryRecord.id,
                    QueryRecord.question,
                    QueryRecord.created_at,
                    QueryRecord.abstained,
                    QueryRecord.confidence,
                    QueryRecord.answer,
                    QueryRecord.citations,
                    QueryRecord.id.in_(down).label("downvoted"),
                )
                .outerjoin(Review, Review.query_id == QueryRecord.id)
                .where(
                    Review.query_id.is_(None),
                    QueryRecord.platform != "eval",
                    or_(
                        QueryRecord.abstained.is_(True),
                        QueryRecord.confidence < self.review_below,
                        QueryRecord.id.in_(down),
                    ),
                )
                .order_by(QueryRecord.created_at.desc(), QueryRecord.id)
            )
        )

    def items(self) -> list[QueueItem]:
        """The questions waiting for review, the most recently asked first."""
        with self.db.session() as s:
            rows = self._queued(s)
        groups: dict[str, list[Any]] = {}
        for r in rows:
            groups.setdefault(normalise_question(r.question), []).append(r)
        items = []
        for asks in groups.values():
            latest = asks[0]
            items.append(
                QueueItem(
                    query_id=latest.id,
                    question=latest.question,
                    why=min((_why(r) for r in asks), key=WHYS.index),
                    asked_at=latest.created_at,
                    query_ids=tuple(r.id for r in asks),
                    answer=latest.answer,
                    abstained=latest.abstained,
                    confidence=latest.confidence,
                    citations=latest.citations or [],
                )
            )
        return items

    def count(self) -> int:
        """How many questions wait for review."""
        return len(self.items())

    def get(self, query_id: str) -> QueueItem:
        """The queued item ``query_id`` belongs to; a ``ReviewError`` saying why when none."""
        for item in self.items():
            if query_id in item.query_ids:
                return item
        raise ReviewError(self._why_not(query_id))

    def _why_not(self, query_id: str) -> str:
        with self.db.session() as s:
            q = s.get(QueryRecord, query_id)
            review = s.get(Review, query_id)
            if q is None:
                return f"no answer with query id {query_id!r}"
            if review is not None:
                return (
                    f"answer {query_id} was already reviewed: {review.outcome} by "
                    f"{review.reviewer} at {review.reviewed_at:%Y-%m-%d %H:%M} UTC"
                )
            return (
                f"answer {query_id} is not in the review queue (it did not abstain, has no 👎, "
                f"and its confidence is not under feedback.review_below = {self.review_below})"
            )

    def right(self, query_id: str, by: str) -> Reviewed:
        """The answer was right: it leaves the queue, and its citations label an eval case."""
        return self._review(query_id, "right", by)

    def gap(self, query_id: str, by: str) -> Reviewed:
        """Nothing indexed answers it: a content gap for writers."""
        return self._review(query_id, "gap", by)

    def dismiss(self, query_id: str, by: str) -> Reviewed:
        """Not worth acting on (a test, a joke, off topic)."""
        return self._review(query_id, "dismissed", by)

    def pick(self, query_id: str, connector: str, path: str, by: str) -> Reviewed:
        """``connector``:``path`` answers it: pin it for the question and its paraphrases."""
        return self._review(
            query_id, "pinned", by, connector, path, self._pin(query_id, connector, path, by)
        )

    def correct(
        self,
        query_id: str,
        text: str,
        by: str,
        connector: str | None = None,
        path: str | None = None,
    ) -> Reviewed:
        """Record a corrected answer that was posted into the question's conversation
        (``bot.review.corrections`` posts it first); with ``connector``:``path``, the
        document it cites is pinned as ``pick`` pins it."""
        curation_id = self._pin(query_id, connector, path, by) if connector and path else None
        return self._review(
            query_id, "corrected", by, connector or None, path or None, curation_id, text
        )

    def _pin(self, query_id: str, connector: str, path: str, by: str) -> int:
        """Pin ``connector``:``path`` for ``query_id``'s question; the curation's id."""
        if self.curations is None:
            raise ReviewError("picking a document needs the curations (a runtime's queue)")
        item = self.get(query_id)
        # The pin first, in its own transaction: making the same pin again returns the
        # existing one, so a review that then fails can simply be made again.
        pin = self.curations.add("pin", item.question, connector, path, by, query_id=query_id)
        return pin.id

    def _review(
        self,
        query_id: str,
        outcome: str,
        by: str,
        connector: str | None = None,
        path: str | None = None,
        curation_id: int | None = None,
        note: str | None = None,
    ) -> Reviewed:
        by = (by or "").strip()
        if not by:
            raise ReviewError("a review needs who made it")

        def review(s: Session) -> tuple[str, ...]:
            rows = self._queued(s)
            target = next((r for r in rows if r.id == query_id), None)
            if target is None:
                raise ReviewError(self._why_not(query_id))
            key = normalise_question(target.question)
            asks = [r for r in rows if normalise_question(r.question) == key]
            now = utcnow()
            for r in asks:
                s.add(
                    Review(
                        query_id=r.id,
                        outcome=outcome,
                        why=_why(r),
                        reviewer=by,
                        reviewed_at=now,
                        connector=connector,
                        path=path,
                        curation_id=curation_id,
                        note=note,
                    )
                )
            return tuple(r.id for r in asks)

        ids = self.db.write(review, "save the review")
        return Reviewed(ids, outcome, by, connector, path, curation_id, note)

    def eval_cases(self) -> list[dict[str, Any]]:
        """Reviewed questions as labeled eval cases (the ``kbot eval`` question format),
        the latest review of a question winning: a picked document or a right answer's
        cited documents are its ``relevant``; a content gap, or an abstention marked right,
        is ``unanswerable``. ``answer_keywords`` stay empty (eval accepts that) and
        ``review`` says who decided, a hint that eval ignores."""
        with self.db.session() as s:
            rows = s.execute(
                select(Review, QueryRecord)
                .join(QueryRecord, Review.query_id == QueryRecord.id)
                .where(Review.outcome.in_(LABELING))
                .order_by(Review.reviewed_at, QueryRecord.created_at)
            ).all()
            cases: dict[str, dict[str, Any]] = {}
            for rv, q in rows:
                relevant = _relevant(rv, q)
                if relevant is None:
                    continue
                cases[normalise_question(q.question)] = {
                    "id": f"rv-{q.id[:12]}",
                    "question": q.question,
                    "relevant": relevant,
                    "answer_keywords": [],
                    "kind": "lookup" if relevant else "unanswerable",
                    "review": {
                        "outcome": rv.outcome,
                        "by": rv.reviewer,
                        "at": rv.reviewed_at.isoformat(),
                        "query_id": q.id,
                    },
                }
        return list(cases.values())

    def reviewed_questions(self) -> set[str]:
        """Every reviewed question (normalised), whatever the outcome."""
        with self.db.session() as s:
            questions = s.scalars(
                select(QueryRecord.question).join(Review, Review.query_id == QueryRecord.id)
            ).all()
        return {normalise_question(q) for q in questions}


def _why(row: Any) -> str:
    if row.downvoted:
        return "downvoted"
    return "abstained" if row.abstained else "low_confidence"


def _relevant(rv: Review, q: QueryRecord) -> list[str] | None:
    """The eval case's ``relevant`` paths (eval matches a connector's relative paths);
    None when the review labels nothing (a right answer that cited nothing)."""
    if rv.outcome in ("pinned", "corrected"):
        return [rv.path] if rv.path else None
    if rv.outcome == "gap" or q.abstained:
        return []
    paths = list(dict.fromkeys(c["path"] for c in q.citations or []))
    return paths or None


def export_cases(
    queue: ReviewQueue, vote_cases: Iterable[dict[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """What ``kbot feedback export --to-eval`` writes: the reviewed questions, labeled,
    then the voted questions nobody has reviewed yet, to be labeled by hand (a dismissed
    question is left out). Returns the cases and how many are labeled."""
    labeled = queue.eval_cases()
    reviewed = queue.reviewed_questions()
    rest = [c for c in vote_cases if normalise_question(c["question"]) not in reviewed]
    return labeled + rest, len(labeled)


def review_queue(runtime: Runtime) -> ReviewQueue:
    """The queue over ``runtime``'s database, pinning through its curations."""
    return ReviewQueue(runtime.db, runtime.config.feedback.review_below, runtime.curations)


class QueueCollector(Collector):
    """``kbot_review_queue``: how many questions wait for review, read at scrape time.
    Left out when the database cannot be read (``kbot_database_up`` says so)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def describe(self) -> Iterable[Metric]:
        return []  # otherwise registering would run a scrape's query

    def collect(self) -> Iterable[Metric]:
        try:
            n = ReviewQueue(self.runtime.db, self.runtime.config.feedback.review_below).count()
        except Exception as e:
            log.warning("/metrics: cannot count the review queue: %s: %s", type(e).__name__, e)
            return []
        gauge = GaugeMetricFamily(
            "kbot_review_queue",
            "Questions waiting for a lead's review (abstained, 👎, or confidence under "
            "feedback.review_below; the same question asked again counts once).",
        )
        gauge.add_metric([], n)
        return [gauge]
