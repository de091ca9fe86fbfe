"""Answers and questions read back from the query log: a private answer shared later
(after a restart too), and a person's recent questions for their App Home."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import select

from bot.answer.types import Answer, Citation
from db import Database
from db.models import QueryRecord

_CITATION_FIELDS = {f.name for f in fields(Citation)}


@dataclass(frozen=True)
class Asked:
    """One question a person asked, and where it was answered."""

    query_id: str
    question: str
    asked_at: datetime
    channel: str | None
    # The platform's thread id the answer was posted in (None: answered privately).
    thread: str | None
    abstained: bool


def answer_of(db: Database, query_id: str, user: str) -> Answer | None:
    """The answer logged as ``query_id``, as it was shown to ``user``; None when it is not
    logged, or was another person's (theirs to share, not ``user``'s)."""
    with db.session() as s:
        row = s.get(QueryRecord, query_id)
        if row is None or row.user_id != user:
            return None
        citations = [
            Citation(**{k: v for k, v in c.items() if k in _CITATION_FIELDS})
            for c in row.citations or []
        ]
        return Answer(
            query_id=row.id,
            question=row.question,
            text=row.answer,
            abstained=row.abstained,
            citations=citations,
            mode=row.mode or "extractive",
            fallback_reason=row.fallback_reason,
        )


def recent_questions(db: Database, platform: str, user: str, n: int = 5) -> list[Asked]:
    """The last ``n`` questions ``user`` asked on ``platform``, newest first."""
    prefix = f"{platform}:"
    with db.session() as s:
        rows = s.scalars(
            select(QueryRecord)
            .where(QueryRecord.platform == platform, QueryRecord.user_id == user)
            .order_by(QueryRecord.created_at.desc())
            .limit(n)
        ).all()
        return [
            Asked(
                r.id,
                r.question,
                r.created_at,
                r.channel,
                r.thread_key.removeprefix(prefix)
                if r.thread_key and r.thread_key.startswith(prefix)
                else None,
                r.abstained,
            )
            for r in rows
        ]
