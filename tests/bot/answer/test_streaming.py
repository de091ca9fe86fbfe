"""Streamed answers against a real HTTP server on 127.0.0.1 speaking OpenAI's streamed chat
completions (Server-Sent Events): the deltas in order, then one Final validated on the
complete text; the extractive fallback in place of an invalid or interrupted stream; the
usage the provider streams, logged once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bot.answer import events
from bot.answer.generation import CANNOT_ANSWER
from bot.answer.streaming import NOTES, Delta, Final
from bot.answer.types import Answer, QuestionError, Requester
from bot.runtime import Runtime
from db.models import QueryRecord
from tests.bot.fake_openai import FakeOpenAI, completion, error, fake_openai
from tests.bot.servers import (
    ROTATE_ANSWER,
    ROTATE_DOC,
    ROTATE_QUESTION,
    runbook_connector,
    synced_runbooks,
)
from tests.conftest import make_config

ROTATE_Q = ROTATE_QUESTION
GOOD = ROTATE_ANSWER
UNKNOWN_Q = "What is the airspeed velocity of an unladen swallow?"


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("streaming")
    kb = synced_runbooks(base)
    with fake_openai() as fake:
        yield base, kb, fake


@pytest.fixture
def fake(kb) -> FakeOpenAI:
    fake = kb[2]
    fake.requests.clear()
    fake.script = [completion(GOOD)]
    return fake


@pytest.fixture
def make_rt(kb, fake, runtime_factory) -> Callable[..., Runtime]:
    base, folder, _ = kb

    def make(llm: bool = True, **overrides: Any) -> Runtime:
        section = fake.llm_section(**{"timeout_s": 10, "cache": False, **overrides})
        extra = {"llm": section} if llm else {}
        return runtime_factory(make_config(base, [runbook_connector(folder)], **extra))

    return make


def streamed(rt: Runtime, question: str = ROTATE_Q) -> tuple[list[Delta], Final, QueryRecord]:
    """Every event of one stream: the deltas, then the Final (asserted to be last and
    alone), and the question's row in the query log."""
    items = list(rt.answering.stream(question, Requester(platform="test")))
    *deltas, final = items
    assert isinstance(final, Final)
    assert all(isinstance(d, Delta) for d in deltas)
    with rt.db.session() as s:
        rows = s.query(QueryRecord).filter(QueryRecord.id == final.answer.query_id).all()
        assert len(rows) == 1  # logged once
        s.expunge(rows[0])
    return deltas, final, rows[0]


def test_deltas_come_in_order_then_the_validated_answer_with_its_usage(make_rt, fake) -> None:
    pieces = ["Generate a new password ", "with `mq-admin passwd --user orders` [1]", ", then "]
    pieces.append("restart [1].")
    fake.script = [completion(GOOD, prompt_tokens=1200, completion_tokens=80, cached_tokens=200)]
    fake.script[0].pieces = pieces
    rt = make_rt()
    deltas, final, row = streamed(rt)

    assert [d.text for d in deltas] == pieces
    assert final.replaced is False and final.note is None
    answer = final.answer
    assert (answer.mode, answer.fallback_reason, answer.text) == ("generated", None, GOOD)
    assert [c.path for c in answer.citations] == [ROTATE_DOC]
    # Asked for as a stream with its usage, which the last chunk carried.
    [request] = fake.requests
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}
    cost = (1000 * 0.15 + 200 * 0.075 + 80 * 0.60) / 1e6
    assert (row.mode, row.answer, row.fallback_reason) == ("generated", GOOD, None)
    assert (row.input_tokens, row.output_tokens, row.cached_tokens) == (1200, 80, 200)
    assert row.cost_usd == pytest.approx(cost)
    assert {"first_token", "generate", "validate", "total"} <= set(row.latency_ms)


def test_the_shown_answer_has_its_citations_renumbered_after_the_stream(make_rt, fake) -> None:
    fake.script = [completion("Restart the order workers [2], then check the queue [1].")]
    deltas, final, row = streamed(make_rt())
    assert "".join(d.text for d in deltas).endswith("[2], then check the queue [1].")
    assert final.replaced is False
    assert final.answer.text == "Restart the order workers [1], then check the queue [2]."
    assert row.answer == final.answer.text


def test_an_invalid_streamed_answer_is_replaced_by_the_extractive_one(make_rt, fake) -> None:
    fake.script = [completion("Rotate it in the vault [42] and restart [7].")]
    deltas, final, row = streamed(make_rt())
    assert "".join(d.text for d in deltas) == "Rotate it in the vault [42] and restart [7]."
    assert final.replaced is True
    assert final.note is not None and "replaced" in final.note
    answer = final.answer
    assert (answer.mode, answer.fallback_reason) == ("extractive", "invalid_citation_only")
    assert "** [1]:" in answer.text.split("\n", 1)[0]
    assert answer.citations[0].path == ROTATE_DOC
    assert (row.mode, row.fallback_reason, row.answer) == (
        "extractive",
        "invalid_citation_only",
        answer.text,
    )
    assert (row.input_tokens, row.output_tokens) == (900, 60)  # paid for, so logged


def test_a_model_stalling_mid_stream_ends_with_the_fallback_and_a_note(make_rt, fake) -> None:
    fake.script = [completion(GOOD)]
    fake.script[0].pause_at, fake.script[0].pause_s = 3, 5
    deltas, final, row = streamed(make_rt(timeout_s=1))
    assert deltas, "the first pieces were streamed before the model stalled"
    assert GOOD.startswith("".join(d.text for d in deltas))
    assert final.replaced is True
    assert final.note == NOTES["timeout"]
    # Never half-written: the whole extractive answer, not what was streamed.
    answer = final.answer
    assert (answer.mode, answer.fallback_reason) == ("extractive", "timeout")
    assert answer.text != "".join(d.text for d in deltas)
    assert answer.citations[0].path == ROTATE_DOC
    assert (row.mode, row.fallback_reason, row.answer) == ("extractive", "timeout", answer.text)


def test_a_failing_model_before_any_text_falls_back_with_nothing_to_replace(make_rt, fake) -> None:
    fake.script = [error(500, "boom")]
    deltas, final, row = streamed(make_rt())
    assert deltas == []
    assert final.replaced is False
    assert (final.answer.mode, final.answer.fallback_reason) == ("extractive", "provider_error")
    assert row.fallback_reason == "provider_error"


def test_the_models_refusal_is_never_streamed(make_rt, fake) -> None:
    fake.script = [completion(CANNOT_ANSWER)]
    fake.script[0].pieces = ["NOT_", "IN_", "SOURCES"]
    deltas, final, _ = streamed(make_rt())
    assert deltas == []
    assert final.replaced is False
    assert (final.answer.abstained, final.answer.fallback_reason) == (True, "cannot_answer")


def test_without_a_model_or_for_an_abstention_only_the_final_comes(make_rt, fake) -> None:
    deltas, final, row = streamed(make_rt(llm=False))
    assert deltas == [] and final.replaced is False
    assert final.answer.mode == "extractive" and final.answer.fallback_reason is None
    assert row.answer == final.answer.text

    deltas, final, _ = streamed(make_rt(), UNKNOWN_Q)
    assert deltas == [] and final.answer.abstained
    assert fake.requests == []  # an abstention is not worth a model call


def test_a_cached_answer_is_one_delta_then_the_final(make_rt, fake) -> None:
    rt = make_rt(cache=True)
    first, final, _ = streamed(rt)
    assert len(first) > 1 and final.answer.cache_hit is False
    again, cached, row = streamed(rt)
    assert [d.text for d in again] == [GOOD]
    assert cached.answer.cache_hit is True and cached.answer.text == GOOD
    assert len(fake.requests) == 1
    assert row.answer == GOOD


def test_the_breaker_stops_streamed_calls_too(make_rt, fake) -> None:
    fake.script = [error(500, "boom")]
    rt = make_rt(breaker_failures=1, breaker_cooldown_s=600)
    _, final, _ = streamed(rt)
    assert final.answer.fallback_reason == "provider_error"
    _, final, _ = streamed(rt)
    assert final.answer.fallback_reason == "circuit_open"
    assert len(fake.requests) == 1


def test_observers_watch_a_stream_as_they_watch_ask(make_rt, fake) -> None:
    seen: list[tuple[str, str]] = []

    def record(event: events.Asked, ask: Callable[[], Answer]) -> Answer:
        seen.append(("asked", event.question))
        try:
            answer = ask()
        except Exception as e:
            seen.append(("raised", type(e).__name__))
            raise
        seen.append(("answered", answer.query_id))
        return answer

    events.subscribe(record)
    try:
        rt = make_rt()
        _, final, _ = streamed(rt)
        assert seen == [("asked", ROTATE_Q), ("answered", final.answer.query_id)]
        with pytest.raises(QuestionError):
            list(rt.answering.stream("   "))
        assert seen[-2:] == [("asked", "   "), ("raised", "QuestionError")]
    finally:
        events.unsubscribe(record)
