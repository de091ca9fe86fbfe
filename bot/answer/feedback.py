"""👍/👎 feedback on answers, stored against the query id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import Database
from db.models import AnswerMessage, Feedback, QueryRecord, utcnow

VOTES = ("up", "down")
MAX_REASON_CHARS = 2000


class FeedbackError(ValueError):
    """The vote cannot be recorded (unknown query, bad vote)."""


class UnknownQuery(FeedbackError):
    """No answer has that query id."""


@dataclass(frozen=True)
class Vote:
    query_id: str
    user: str
    vote: str
    reason: str | None
    changed: bool  # True when this replaced an earlier vote by the same user


class FeedbackService:
    def __init__(self, db: Database, on_vote: Callable[[], None] | None = None):
        self.db = db
        # Told of every recorded vote (this process's vote ranking reads them again).
        self.on_vote = on_vote

    def record(
        self, query_id: str, vote: str, *, user: str | None = None, reason: str | None = None
    ) -> Vote:
        """Record a vote. A second vote by the same user on the same answer replaces the first."""
        vote = (vote or "").strip().lower()
        if vote not in VOTES:
            raise FeedbackError(f"vote must be one of {', '.join(VOTES)}, not {vote!r}")
        reason = (reason or "").strip()[:MAX_REASON_CHARS] or None
        user = user or ""
        try:
            return self._upsert(query_id, vote, user, reason)
        except IntegrityError:
            # Two first clicks raced (a double-click, a platform retry): the other insert
            # won, so this one is an update.
            return self._upsert(query_id, vote, user, reason)

    def _upsert(self, query_id: str, vote: str, user: str, reason: str | None) -> Vote:
        def upsert(s: Session) -> bool:
            if s.get(QueryRecord, query_id) is None:
                raise UnknownQuery(f"no answer with query id {query_id!r}")
            row = s.scalars(
                select(Feedback).where(Feedback.query_id == query_id, Feedback.user_id == user)
            ).first()
            if row is None:
                s.add(Feedback(query_id=query_id, user_id=user, vote=vote, reason=reason))
            else:
                row.vote, row.reason, row.updated_at = vote, reason, utcnow()
            return row is not None

        # An upsert, so running it again after a lost connection records one vote.
        changed = self.db.write(upsert, "record a vote")
        if self.on_vote is not None:
            self.on_vote()
        return Vote(query_id, user, vote, reason, changed)

    def link_message(self, platform: str, message_id: str, query_id: str) -> None:
        """Remember that ``query_id``'s answer was posted as ``message_id``; the latest
        answer posted under an id is the one its votes belong to."""

        def link(s: Session) -> None:
            row = s.get(AnswerMessage, (platform, message_id))
            if row is None:
                s.add(AnswerMessage(platform=platform, message_id=message_id, query_id=query_id))
            else:
                row.query_id = query_id

        self.db.write(link, "link the answer's message")

    def query_of_message(self, platform: str, message_id: str) -> str | None:
        """The query id whose answer was posted as ``message_id``, if kbot posted it."""
        with self.db.session() as s:
            row = s.get(AnswerMessage, (platform, message_id))
            return row.query_id if row is not None else None

    def eval_cases(self, include_up: bool = False) -> list[dict[str, Any]]:
        """Voted questions as eval cases (the ``kbot eval`` question format), 👎 first.

        ``relevant`` and ``answer_keywords`` are left for a lead to fill in, and ``kind`` is a
        guess to correct: until ``relevant`` is filled, ``kbot eval`` refuses the line and
        says so. ``cited`` (what the bot cited) and ``feedback`` are hints, ignored by eval.
        A question asked several times becomes one case.
        """
        votes = VOTES if include_up else ("down",)
        with self.db.session() as s:
            rows = s.execute(
                select(Feedback, QueryRecord)
                .join(QueryRecord, Feedback.query_id == QueryRecord.id)
                .where(Feedback.vote.in_(votes))
                .order_by(Feedback.vote, QueryRecord.created_at)
            ).all()
            cases: dict[str, dict[str, Any]] = {}
            for fb, q in rows:
                key = " ".join(q.question.lower().split())
                case = cases.setdefault(
                    key,
                    {
                        "id": f"fb-{q.id[:12]}",
                        "question": q.question,
                        "relevant": [],
                        "answer_keywords": [],
                        "kind": "unanswerable" if q.abstained else "lookup",
                        "cited": [f"{c['connector']}:{c['path']}" for c in q.citations],
                        "feedback": [],
                    },
                )
                case["feedback"].append({"vote": fb.vote, "reason": fb.reason})
        return list(cases.values())

    def for_query(self, query_id: str) -> list[Feedback]:
        with self.db.session() as s:
            return list(s.scalars(select(Feedback).where(Feedback.query_id == query_id)))
