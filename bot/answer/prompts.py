"""Suggested prompts for a chat's welcome (Teams' suggested actions, Slack's assistant
prompts): the configured ones, else the questions most asked in the query log, else a few
generic ones.

Only questions that someone outside any restricted audience asked, that were answered (not
abstained, not follow-ups) and that more than one person asked are suggested: a prompt is
shown to everyone, so it must reveal neither a restricted document nor one person's
question.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import select

from bot.answer.types import PUBLIC
from db import Database
from db.models import QueryRecord, utcnow

GENERIC = (
    "How do I deploy a service?",
    "What do I do when an alert fires?",
    "How do I rotate a password or API key?",
    "Where is the on-call runbook?",
)
# How far back, and how many recent questions, the most asked are counted over.
WINDOW = timedelta(days=90)
SCANNED = 5000
MIN_ASKERS = 2
# Longer questions make poor buttons (Teams cuts a suggested action's title).
MAX_CHARS = 80


def suggested_prompts(
    db: Database,
    configured: Iterable[str] = (),
    n: int = 4,
    audiences: Iterable[str] = (PUBLIC,),
) -> list[str]:
    """Up to ``n`` prompts: ``configured`` ones win; else the most asked answered questions
    of the last 90 days, asked by at least two people whose audiences are all within
    ``audiences``; else built-in generic ones. Never raises for a database failure."""
    chosen = [p.strip() for p in configured if p and p.strip()]
    if chosen:
        return chosen[:n]
    try:
        asked = most_asked(db, n, frozenset(audiences) | {PUBLIC})
    except Exception:  # a welcome is not worth failing over the query log
        asked = []
    return asked or list(GENERIC[:n])


def most_asked(db: Database, n: int, audiences: frozenset[str]) -> list[str]:
    """The ``n`` most asked questions, each in its most common wording."""
    since = utcnow() - WINDOW
    query = (
        select(QueryRecord.question, QueryRecord.user_id, QueryRecord.audiences)
        .where(
            QueryRecord.created_at >= since,
            QueryRecord.abstained.is_(False),
            QueryRecord.follows.is_(None),
        )
        .order_by(QueryRecord.created_at.desc())
        .limit(SCANNED)
    )
    with db.session() as s:
        rows = s.execute(query).all()
    askers: dict[str, set[str]] = {}
    wordings: dict[str, Counter[str]] = {}
    for question, user, asked_with in rows:
        if not asked_with or not set(asked_with.split(",")) <= audiences:
            continue  # asked where restricted documents are read, or before audiences
        text = " ".join(question.split())
        if not text or len(text) > MAX_CHARS:
            continue
        key = text.casefold().rstrip(" ?!.")
        askers.setdefault(key, set()).add(user or "")
        wordings.setdefault(key, Counter())[text] += 1
    ranked = sorted(
        (k for k, users in askers.items() if len(users - {""}) >= MIN_ASKERS),
        key=lambda k: (-sum(wordings[k].values()), k),
    )
    return [wordings[k].most_common(1)[0][0] for k in ranked[:n]]
