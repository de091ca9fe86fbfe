"""The web chat's HTTP API, served by the real aiohttp app on 127.0.0.1 over a small synced
knowledge folder, spoken to over real HTTP."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jinja2 import StrictUndefined
from sqlalchemy import func, select

import bot.chat
from bot.answer.service import unknown_text
from bot.chat.web import MAX_BODY, PAGES
from bot.runtime import Runtime
from bot.server import create_app
from db.models import QueryRecord
from tests.bot.servers import (
    ROTATE_DOC,
    ROTATE_TITLE,
    RUNBOOKS,
    URL_TEMPLATE,
    Reply,
    runbook_connector,
    send,
    serve,
    write_runbooks,
)
from tests.conftest import make_config


@dataclass
class Chat:
    rt: Runtime
    url: str

    def get(self, path: str) -> Reply:
        return send(urllib.request.Request(self.url + path))

    def post(self, path: str, body: Any = None, *, raw: bytes | None = None) -> Reply:
        data = raw if raw is not None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        return send(req)

    def ask(self, question: str, **extra: Any) -> dict[str, Any]:
        reply = self.post("api/ask", {"question": question, **extra})
        assert reply.status == 200, reply.body
        return reply.json()

    def query_count(self) -> int:
        with self.rt.db.session() as s:
            return s.scalar(select(func.count()).select_from(QueryRecord)) or 0


@pytest.fixture(scope="module")
def chat(tmp_path_factory, embedder) -> Iterator[Chat]:
    """One synced runtime and server for the module (syncing per test would triple the time):
    each test asserts only on rows it can tell apart from the others'."""
    tmp = tmp_path_factory.mktemp("web")
    kb = write_runbooks(tmp / "kb")
    rt = Runtime(make_config(tmp, [runbook_connector(kb)]))
    try:
        [result] = rt.indexer.sync()
        assert result.ok, result.error
        assert result.added == len(RUNBOOKS)
        with serve(create_app(rt)) as url:
            yield Chat(rt, url)
    finally:
        rt.close()


def test_index_serves_the_self_contained_chat_page(chat: Chat) -> None:
    reply = chat.get("")
    assert reply.status == 200
    assert reply.content_type == "text/html"
    page = reply.body.decode()
    assert '<form id="ask"' in page
    assert 'aria-label="Question"' in page
    # The page works offline: nothing is loaded from another host.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page


def test_the_chat_page_is_its_template_and_a_browser_may_keep_its_copy(chat: Chat) -> None:
    assert PAGES.autoescape is True and PAGES.undefined is StrictUndefined
    source = (Path(bot.chat.__file__).parent / "templates" / "chat.html").read_text()
    with urllib.request.urlopen(chat.url, timeout=60) as r:
        assert r.read().decode() == source  # the page takes no values: served as written
        assert r.headers["Cache-Control"] == "no-cache"
        etag = r.headers["ETag"]
    assert etag
    again = urllib.request.Request(chat.url, headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as unchanged:
        urllib.request.urlopen(again, timeout=60)
    unchanged.value.close()
    assert unchanged.value.code == 304


def test_healthz_reports_ok_with_the_chunk_count(chat: Chat) -> None:
    reply = chat.get("healthz")
    assert reply.status == 200
    body = reply.json()
    assert body["status"] == "ok"
    assert body["chunks"] == chat.rt.store.count()
    assert body["chunks"] >= len(RUNBOOKS)


def test_ask_answers_with_a_citation_of_the_right_runbook_and_logs_the_query(chat: Chat) -> None:
    a = chat.ask("How do I rotate the password of the message queue?", user="alice")

    assert a["abstained"] is False
    assert a["error"] is None
    assert a["mode"] == "extractive"
    first = a["citations"][0]
    assert first["n"] == 1
    assert first["connector"] == "runbooks"
    assert first["path"] == ROTATE_DOC
    assert first["url"] == URL_TEMPLATE.format(path=ROTATE_DOC)
    assert first["title"] == ROTATE_TITLE
    assert "[1]" in a["answer"]
    assert "mq-admin passwd" in a["answer"]

    with chat.rt.db.session() as s:
        row = s.get(QueryRecord, a["query_id"])
        assert row is not None
        assert row.platform == "web"
        assert row.user_id == "alice"
        assert row.question == "How do I rotate the password of the message queue?"
        assert row.answer == a["answer"]
        assert row.abstained is False
        assert row.citations[0]["path"] == ROTATE_DOC


def test_an_off_topic_question_abstains(chat: Chat) -> None:
    a = chat.ask("What flour to water ratio makes a good sourdough starter?")
    assert a["abstained"] is True
    assert a["answer"] == unknown_text(["sourdough"])  # a word no document uses
    with chat.rt.db.session() as s:
        row = s.get(QueryRecord, a["query_id"])
        assert row is not None and row.abstained is True


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"question": ""}, 400, "The question is empty"),
        ({"question": " \n\t "}, 400, "The question is empty"),
        ({}, 400, "'question' must be a string"),
        ({"question": 42}, 400, "'question' must be a string"),
        (["How do I rotate the key?"], 400, "must be a JSON object"),
        (b"question=How+do+I+rotate+the+key", 400, "must be JSON"),
        ({"question": "why " * 1000}, 400, "the limit is 2000"),
        ({"question": "x" * (MAX_BODY + 1)}, 413, "larger than 64 KiB"),
    ],
    ids=["empty", "blank", "missing", "number", "array", "form-encoded", "too-long", "too-big"],
)
def test_ask_rejects_unusable_requests_with_a_clear_json_error(
    chat: Chat, body: Any, status: int, message: str
) -> None:
    before = chat.query_count()
    if isinstance(body, bytes):
        reply = chat.post("api/ask", raw=body)
    else:
        reply = chat.post("api/ask", body)
    assert reply.status == status
    assert reply.content_type == "application/json"
    assert message in reply.json()["error"]
    assert chat.query_count() == before


def test_feedback_records_one_vote_per_user_and_a_second_vote_changes_it(chat: Chat) -> None:
    qid = chat.ask("How do I rotate the password of the message queue?")["query_id"]

    first = chat.post("api/feedback", {"query_id": qid, "vote": "up", "user": "alice"})
    assert (first.status, first.json()) == (200, {"recorded": "up", "changed": False})
    second = chat.post(
        "api/feedback",
        {"query_id": qid, "vote": "down", "user": "alice", "reason": "outdated: step 2 moved"},
    )
    assert (second.status, second.json()) == (200, {"recorded": "down", "changed": True})
    other = chat.post("api/feedback", {"query_id": qid, "vote": "up", "user": "bob"})
    assert (other.status, other.json()) == (200, {"recorded": "up", "changed": False})

    votes = {f.user_id: (f.vote, f.reason) for f in chat.rt.feedback.for_query(qid)}
    assert votes == {"alice": ("down", "outdated: step 2 moved"), "bob": ("up", None)}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query_id": "0" * 32, "vote": "up"}, 404, "no answer with query id"),
        ({"query_id": "QID", "vote": "sideways"}, 400, "vote must be one of up, down"),
        ({"query_id": "QID", "vote": 1}, 400, "'vote' must be 'up' or 'down'"),
        ({"vote": "up"}, 400, "'query_id' must be"),
        (b"vote=up", 400, "must be JSON"),
    ],
    ids=["unknown-query", "bad-vote", "vote-not-a-string", "no-query-id", "not-json"],
)
def test_feedback_rejects_bad_votes(chat: Chat, body: Any, status: int, message: str) -> None:
    qid = chat.ask("How do I rotate the password of the message queue?")["query_id"]
    if isinstance(body, bytes):
        reply = chat.post("api/feedback", raw=body)
    else:
        reply = chat.post("api/feedback", {k: qid if v == "QID" else v for k, v in body.items()})
    assert reply.status == status
    assert reply.content_type == "application/json"
    assert message in reply.json()["error"]
    assert chat.rt.feedback.for_query(qid) == []


@pytest.fixture
def broken_chat(tmp_path, runtime_factory) -> Iterator[Chat]:
    """A server whose Chroma store on disk is corrupt, as after a bad disk or a bad copy."""
    chroma = tmp_path / "data" / "chroma"
    chroma.mkdir(parents=True)
    (chroma / "chroma.sqlite3").write_bytes(b"not a database\n" * 512)
    rt = runtime_factory(make_config(tmp_path, []))
    with serve(create_app(rt)) as url:
        yield Chat(rt, url)


def test_healthz_reports_a_broken_store_as_degraded(broken_chat: Chat) -> None:
    reply = broken_chat.get("healthz")
    assert reply.status == 503
    body = reply.json()
    assert body["status"] == "degraded"
    assert "Chroma store" in body["error"]


def test_ask_on_a_broken_store_still_replies_with_a_json_error(broken_chat: Chat) -> None:
    reply = broken_chat.post("api/ask", {"question": "How do I rotate the queue password?"})
    # The page shows ``error`` to the person; a bare text 500 would read as gibberish.
    assert reply.content_type == "application/json"
    assert reply.json()["error"]


# -- follow-ups ---------------------------------------------------------------------------

ROTATE_QUESTION = "How do I rotate the password of the message queue?"
# Alone this finds nothing confident; after ROTATE_QUESTION it asks where the password goes.
FOLLOW_UP = "where do I store it afterwards?"


def _row(chat: Chat, query_id: str) -> QueryRecord:
    with chat.rt.db.session() as s:
        row = s.get(QueryRecord, query_id)
        assert row is not None
        s.expunge(row)
        return row


def test_a_question_in_the_same_conversation_is_a_follow_up(chat: Chat) -> None:
    first = chat.ask(ROTATE_QUESTION, conversation="conv-follow-1")
    follow = chat.ask(FOLLOW_UP, conversation="conv-follow-1")
    assert not follow["abstained"]
    assert follow["citations"][0]["path"] == "ops/rotate-queue-credentials.md"
    assert "secret/orders/mq" in follow["answer"]
    row = _row(chat, follow["query_id"])
    assert row.follows == first["query_id"]
    assert row.thread_key == _row(chat, first["query_id"]).thread_key is not None


def test_a_new_conversation_has_no_context(chat: Chat) -> None:
    chat.ask(ROTATE_QUESTION, conversation="conv-follow-2")
    alone = chat.ask(FOLLOW_UP, conversation="conv-follow-3")
    assert alone["abstained"]
    assert _row(chat, alone["query_id"]).follows is None


@pytest.mark.parametrize("conversation", ["", "x" * 101, "has space", 42, ["a"]])
def test_a_malformed_conversation_id_is_refused(chat: Chat, conversation: Any) -> None:
    before = chat.query_count()
    reply = chat.post("api/ask", {"question": ROTATE_QUESTION, "conversation": conversation})
    assert reply.status == 400
    assert "'conversation' must be an id" in reply.json()["error"]
    assert chat.query_count() == before


def test_a_web_user_over_the_rate_limit_gets_429_with_retry_after(chat: Chat) -> None:
    limits = chat.rt.config.rate_limits.model_copy(update={"per_user": 1})
    rt = Runtime(chat.rt.config.model_copy(update={"rate_limits": limits}))
    try:
        with serve(create_app(rt)) as url:
            limited = Chat(rt, url)
            before = limited.query_count()
            assert limited.ask(ROTATE_QUESTION, user="web-rate")["query_id"]
            reply = limited.post("api/ask", {"question": ROTATE_QUESTION, "user": "web-rate"})
            assert limited.ask(ROTATE_QUESTION, user="web-other")["query_id"]
            after = limited.query_count()
    finally:
        rt.close()
    assert reply.status == 429
    assert 1 <= int(reply.headers["Retry-After"]) <= 60
    assert reply.json()["error"].startswith("You've asked 1 question in the last minute,")
    assert "try again in" in reply.json()["error"]
    assert after == before + 2
