"""The web chat's streamed answers: ``/api/ask/stream`` over real HTTP on 127.0.0.1 as
Server-Sent Events (deltas, then the final answer validated on the complete text, or the
extractive one with a note), with the scripted OpenAI-compatible server streaming; and the
page in a real headless Chromium drawing the stream, then the final answer."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.answer.streaming import NOTE
from bot.runtime import Runtime
from bot.server import create_app
from db.models import QueryRecord
from tests.bot.fake_openai import FakeOpenAI, completion, fake_openai
from tests.bot.servers import (
    ROTATE_ANSWER,
    ROTATE_DOC,
    ROTATE_PIECES,
    ROTATE_QUESTION,
    ROTATE_TITLE,
    Reply,
    runbook_connector,
    send,
    serve,
    synced_runbooks,
)
from tests.conftest import make_config

QUESTION = ROTATE_QUESTION
GOOD = ROTATE_ANSWER
PIECES = ROTATE_PIECES


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder) -> Iterator[tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("web-streaming")
    folder = synced_runbooks(base)
    yield base, folder


@pytest.fixture(scope="module")
def model() -> Iterator[FakeOpenAI]:
    with fake_openai() as fake:
        yield fake


@pytest.fixture
def fake(model: FakeOpenAI) -> FakeOpenAI:
    model.requests.clear()
    model.script = [completion(GOOD)]
    model.script[0].pieces = PIECES
    return model


@pytest.fixture(scope="module")
def served(kb, model) -> Iterator[tuple[str, Runtime]]:
    base, folder = kb
    llm = model.llm_section(timeout_s=10, cache=False)
    rt = Runtime(make_config(base, [runbook_connector(folder)], llm=llm))
    try:
        with serve(create_app(rt)) as url:
            yield url, rt
    finally:
        rt.close()


def post(url: str, body: Any) -> Reply:
    req = urllib.request.Request(
        url + "api/ask/stream",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    return send(req)


def events(reply: Reply) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a Server-Sent Events body."""
    assert reply.status == 200, reply.body
    assert reply.content_type == "text/event-stream"
    out = []
    for block in reply.body.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def row(rt: Runtime, query_id: str) -> QueryRecord:
    with rt.db.session() as s:
        found = s.get(QueryRecord, query_id)
        assert found is not None
        s.expunge(found)
        return found


def test_a_generated_answer_streams_its_deltas_then_the_final_answer(served, fake) -> None:
    url, rt = served
    reply = post(url, {"question": QUESTION, "user": "ann"})
    got = events(reply)
    *deltas, (last, final) = got
    assert [name for name, _ in deltas] == ["delta"] * len(PIECES)
    assert [d["text"] for _, d in deltas] == PIECES
    assert last == "final"
    assert final["answer"] == GOOD
    assert (final["replaced"], final["note"], final["generated"]) == (False, None, True)
    [citation] = final["citations"]
    assert (citation["path"], citation["title"]) == (ROTATE_DOC, ROTATE_TITLE)
    assert "heading" in citation  # as /api/ask returns it
    logged = row(rt, final["query_id"])
    assert (logged.mode, logged.answer, logged.user_id) == ("generated", GOOD, "ann")
    # The request's id is the query's, as for /api/ask: logs and the query log share it.
    assert reply.headers["X-Request-Id"] == final["query_id"]
    assert fake.requests[-1]["stream"] is True


def test_an_invalid_streamed_answer_ends_with_the_extractive_one_and_a_note(served, fake):
    url, rt = served
    fake.script = [completion("Rotate it in the vault [42] and restart [7].")]
    *deltas, (last, final) = events(post(url, {"question": QUESTION}))
    assert "".join(d["text"] for _, d in deltas) == "Rotate it in the vault [42] and restart [7]."
    assert last == "final"
    assert (final["replaced"], final["note"], final["generated"]) == (True, NOTE, False)
    assert final["fallback_reason"] == "invalid_citation_only"
    assert "[42]" not in final["answer"]
    assert row(rt, final["query_id"]).answer == final["answer"]


def test_an_abstention_is_one_final_event(served, fake) -> None:
    url, _ = served
    [(name, final)] = events(post(url, {"question": "What is the airspeed of a swallow?"}))
    assert name == "final" and final["abstained"] is True
    assert fake.requests == []


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"question": "   "}, 400, "The question is empty"),
        ({"question": 3}, 400, "'question' must be a string"),
        ({"question": QUESTION, "conversation": "no spaces"}, 400, "'conversation' must be"),
    ],
)
def test_an_unusable_question_is_refused_as_json_before_any_stream(
    served, body, status, message
) -> None:
    reply = post(served[0], body)
    assert (reply.status, reply.content_type) == (status, "application/json")
    assert message in reply.json()["error"]


def test_the_json_api_still_answers_at_once(served, fake) -> None:
    url, _ = served
    req = urllib.request.Request(
        url + "api/ask",
        data=json.dumps({"question": QUESTION}).encode(),
        headers={"Content-Type": "application/json"},
    )
    reply = send(req)
    assert reply.status == 200
    assert reply.json()["answer"] == GOOD
    assert not fake.requests[-1].get("stream")


@pytest.mark.browser
def test_the_page_draws_the_stream_then_the_checked_answer(served, fake, browser) -> None:
    from playwright.sync_api import expect

    url, _ = served
    fake.script = [completion(GOOD), completion("Rotate it in the vault [42].")]
    context = browser.new_context()
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/ask" in r.url else None)
    try:
        page.goto(url)
        page.get_by_label("Question").fill(QUESTION)
        page.get_by_role("button", name="Ask", exact=True).click()
        answer = page.locator(".msg.bot").nth(0)
        expect(answer.locator(".vote")).to_be_visible()
        expect(answer.locator("code", has_text="mq-admin passwd --user orders")).to_be_visible()
        marker = answer.get_by_role("link", name=f"Source 1: {ROTATE_TITLE}").first
        expect(marker).to_have_text("[1]")
        expect(answer).to_contain_text("Generated from the knowledge base")
        expect(answer).not_to_have_class("msg bot draft")
        assert asked == [url + "api/ask/stream"]

        # A new conversation, so the question is not a follow-up (condensed by the model).
        page.get_by_role("button", name="New conversation").click()
        page.get_by_label("Question").fill(QUESTION)
        page.get_by_role("button", name="Ask", exact=True).click()
        replaced = page.locator(".msg.bot").nth(0)
        expect(replaced.locator(".vote")).to_be_visible()
        expect(replaced.locator(".note")).to_have_text(NOTE)
        expect(replaced).to_contain_text("Extracted from the knowledge base")
        expect(replaced).not_to_contain_text("[42]")
    finally:
        context.close()
    assert errors == []
