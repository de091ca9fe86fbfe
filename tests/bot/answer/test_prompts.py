"""Suggested prompts: configured ones win, else the most asked answered questions of the
query log (public, asked by more than one person), else generic ones."""

from __future__ import annotations

import itertools
from datetime import timedelta

from bot.answer.prompts import GENERIC, suggested_prompts
from db import Database
from db.models import QueryRecord, utcnow

_ids = itertools.count()


def asked(
    db: Database,
    question: str,
    user: str,
    *,
    abstained: bool = False,
    audiences: str | None = "public",
    follows: str | None = None,
    days_ago: int = 0,
) -> None:
    record = QueryRecord(
        id=f"q{next(_ids):08d}",
        created_at=utcnow() - timedelta(days=days_ago),
        platform="teams",
        user_id=user,
        question=question,
        answer="…",
        abstained=abstained,
        citations=[],
        retrieved=[],
        latency_ms={},
        audiences=audiences,
        follows=follows,
    )
    db.write(lambda s: s.add(record), "log a question")


def test_configured_prompts_win(database: Database) -> None:
    asked(database, "How do I deploy?", "ann")
    assert suggested_prompts(database, [" Reset my VPN ", "", "Who is on call?"]) == [
        "Reset my VPN",
        "Who is on call?",
    ]
    assert suggested_prompts(database, ["a", "b", "c"], n=2) == ["a", "b"]


def test_an_empty_log_suggests_generic_prompts(database: Database) -> None:
    assert suggested_prompts(database, []) == list(GENERIC[:4])
    assert suggested_prompts(database, [], n=2) == list(GENERIC[:2])


def test_the_most_asked_answered_public_questions_are_suggested(database: Database) -> None:
    for user in ("ann", "bob", "cy"):
        asked(database, "How do I rotate the API key?", user)
    asked(database, "how do I rotate the api key", "dee")  # the same question, worded alike
    for user in ("ann", "bob"):
        asked(database, "Where are the Grafana dashboards?", user)
    # Not suggested: asked by one person only, however often; abstained; a follow-up;
    # asked where restricted documents are read; too old.
    for _ in range(5):
        asked(database, "Why was my salary review delayed?", "eve")
    for user in ("ann", "bob", "cy"):
        asked(database, "What is the meaning of life?", user, abstained=True)
        asked(database, "and then what?", user, follows="q00000000")
        asked(database, "How do I rotate the vault root token?", user, audiences="public,sre")
        asked(database, "How did we run the 2019 migration?", user, days_ago=400)

    assert suggested_prompts(database, []) == [
        "How do I rotate the API key?",
        "Where are the Grafana dashboards?",
    ]
    # Prompts for a place that reads sre documents may come from such places' questions.
    assert "How do I rotate the vault root token?" in suggested_prompts(
        database, [], audiences=["sre"]
    )
