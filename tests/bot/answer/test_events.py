"""The answering service's events: observers see every question, and change nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bot.answer import events
from bot.answer.types import Answer, QuestionError, Requester


@pytest.fixture
def seen() -> Iterator[list[tuple[str, object]]]:
    """An observer that records each event and how the call ended."""
    log: list[tuple[str, object]] = []

    def record(event: events.Asked, ask: Callable[[], Answer]) -> Answer:
        log.append(("asked", event.question))
        try:
            answer = ask()
        except Exception as e:
            log.append(("raised", type(e).__name__))
            raise
        log.append(("answered", answer.query_id))
        return answer

    events.subscribe(record)
    events.subscribe(record)  # twice is once
    yield log
    events.unsubscribe(record)


def test_an_observer_watches_each_question_without_changing_its_answer(corpus_runtime, seen):
    service = corpus_runtime.answering
    requester = Requester(platform="web", user="ann")
    question = "KubePodCrashLooping keeps firing, what do I check first?"
    answer = service.ask(question, requester)
    assert seen == [("asked", question), ("answered", answer.query_id)]
    again = service.ask(question, requester)
    assert len(seen) == 4  # one observer, subscribed twice, saw each question once
    assert (again.text, again.citations) == (answer.text, answer.citations)


def test_an_observer_sees_a_refused_question_raise(corpus_runtime, seen):
    with pytest.raises(QuestionError):
        corpus_runtime.answering.ask("   ")
    assert seen == [("asked", "   "), ("raised", "QuestionError")]


def test_the_first_subscribed_observer_is_outermost(monkeypatch):
    # Only this test's observers: the ops observer another test installed watches real
    # services, not this event's stand-in.
    monkeypatch.setattr(events, "_observers", [])
    order: list[str] = []

    def named(name: str) -> events.Observer:
        def observe(event: events.Asked, ask: Callable[[], Answer]) -> Answer:
            order.append(f"{name} in")
            answer = ask()
            order.append(f"{name} out")
            return answer

        return observe

    outer, inner = named("outer"), named("inner")
    events.subscribe(outer)
    events.subscribe(inner)
    try:
        made = Answer("q1", "why?", "because", False, [])
        assert events.observed(events.Asked(None, "why?", None), lambda: made) is made
    finally:
        events.unsubscribe(outer)
        events.unsubscribe(inner)
    assert order == ["outer in", "inner in", "inner out", "outer out"]
