"""Teams with a model: generated answers streamed in 1:1 chats with Teams' streaming
protocol (informative update, streaming typing activities, the final message with the card,
Teams AI citations and the feedback loop), posted as today in channels and group chats; and
the 1:1 welcome's suggested prompts. Activities go over real HTTP to ``/api/messages``; the
bot's replies are captured by the local Bot Connector stand-in; the model is the scripted
OpenAI-compatible server, streaming."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.answer.prompts import GENERIC
from bot.answer.streaming import NOTE, NOTES
from bot.chat.teams_cards import ABSTRACT_CHARS, WELCOME_TEXT, WORKING_TEXT
from bot.runtime import Runtime
from bot.server import create_app
from db.models import QueryRecord
from tests.bot import teams_fakes as teams
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
CARD = "application/vnd.microsoft.card.adaptive"
APP_ENV = ("MICROSOFT_APP_ID", "MICROSOFT_APP_PASSWORD", "MICROSOFT_APP_TYPE")


@dataclass
class Bot:
    url: str
    rt: Runtime

    def post(self, activity: dict[str, Any]) -> Reply:
        req = urllib.request.Request(
            self.url + "api/messages",
            data=json.dumps(activity).encode(),
            headers={"Content-Type": "application/json"},
        )
        return send(req)

    def query_of(self, user: str) -> QueryRecord:
        with self.rt.db.session() as s:
            [row] = s.scalars(select(QueryRecord).where(QueryRecord.user_id == f"aad-{user}"))
            s.expunge(row)
            return row


@dataclass
class Setup:
    base: Path
    kb: Path
    fake: FakeOpenAI


@pytest.fixture(scope="module")
def setup(tmp_path_factory, embedder) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("teams-streaming")
    kb = synced_runbooks(base)
    with fake_openai() as fake:
        yield Setup(base, kb, fake)


@pytest.fixture
def fake(setup: Setup) -> FakeOpenAI:
    setup.fake.requests.clear()
    setup.fake.script = [completion(GOOD)]
    setup.fake.script[0].pieces = PIECES
    return setup.fake


@contextmanager
def bot_server(
    setup: Setup, llm: bool = True, timeout_s: float = 10, **teams_config: Any
) -> Iterator[Bot]:
    """kbot's app in emulator mode over the synced index, with the fake model."""
    extra: dict[str, Any] = {}
    if llm:
        extra["llm"] = setup.fake.llm_section(timeout_s=timeout_s, cache=False)
    cfg = {"working_after_s": 10, "stream_update_s": 0, **teams_config}
    rt = Runtime(make_config(setup.base, [runbook_connector(setup.kb)], teams=cfg, **extra))
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in APP_ENV:
                mp.delenv(name, raising=False)
            app = create_app(rt)
        with serve(app) as url:
            yield Bot(url, rt)
    finally:
        rt.close()


@pytest.fixture(scope="module")
def bot(setup: Setup) -> Iterator[Bot]:
    with bot_server(setup) as b:
        yield b


@pytest.fixture
def connector() -> Iterator[teams.Connector]:
    with teams.connector() as fake:
        yield fake


def stream_info(call: teams.Call) -> dict[str, Any] | None:
    found = [e for e in call.body.get("entities") or [] if e.get("type") == "streaminfo"]
    return found[0] if found else None


def is_final(calls: list[teams.Call]) -> bool:
    return any(c.body.get("type") == "message" for c in calls)


def streamed(bot: Bot, connector: teams.Connector, user: str) -> list[teams.Call]:
    """Ask ``QUESTION`` in ``user``'s 1:1 chat; every call up to the final message."""
    assert bot.post(teams.personal_message(connector.url, QUESTION, user=user)).status == 200
    return connector.wait_for(is_final)


def card_text(call: teams.Call) -> str:
    [attachment] = call.body["attachments"]
    assert attachment["contentType"] == CARD
    return "\n".join(b["text"] for b in attachment["content"]["body"] if b["type"] == "TextBlock")


def test_a_generated_answer_is_streamed_in_a_personal_chat(bot, fake, connector) -> None:
    calls = streamed(bot, connector, "amy")
    info, *updates, final = calls
    # The informative update: a typing activity, sequence 1, whose id names the stream.
    assert info.body["type"] == "typing"
    assert info.body["text"] == WORKING_TEXT
    assert stream_info(info) == {
        "type": "streaminfo",
        "streamType": "informative",
        "streamSequence": 1,
    }
    stream_id = info.returned_id
    assert stream_id
    # The updates: typing activities with the text so far, in sequence, each holding the one
    # before (Teams refuses an update that does not).
    assert updates
    texts = [u.body["text"] for u in updates]
    assert all(u.body["type"] == "typing" for u in updates)
    assert [stream_info(u) for u in updates] == [
        {
            "type": "streaminfo",
            "streamType": "streaming",
            "streamId": stream_id,
            "streamSequence": n,
        }
        for n in range(2, len(updates) + 2)
    ]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert GOOD.startswith(texts[-1])
    # The final message: the validated answer, the card with its sources, citations, the
    # feedback loop, and the stream it ends.
    body = final.body
    assert body["type"] == "message"
    assert body["text"] == GOOD
    assert stream_info(final) == {
        "type": "streaminfo",
        "streamType": "final",
        "streamId": stream_id,
    }
    [message] = [e for e in body["entities"] if e["type"] == "https://schema.org/Message"]
    assert message["@type"] == "Message"
    assert message["additionalType"] == ["AIGeneratedContent"]
    [claim] = message["citation"]
    assert claim["@type"] == "Claim" and claim["position"] == 1
    appearance = claim["appearance"]
    assert appearance["name"] == ROTATE_TITLE
    assert appearance["url"].endswith(ROTATE_DOC)
    assert 0 < len(appearance["abstract"]) <= ABSTRACT_CHARS
    text = card_text(final)
    assert "Sources" in text and ROTATE_TITLE in text
    assert "mq-admin passwd" not in text  # the message carries the answer; the card its sources
    assert body["channelData"] == {"feedbackLoopEnabled": True}
    row = bot.query_of("amy")
    assert (row.mode, row.answer) == ("generated", GOOD)
    assert fake.requests[-1]["stream"] is True

    # Teams' 👍/👎 on the streamed message names the stream's id: the vote finds its answer.
    vote = teams.feedback_invoke(
        connector.url,
        stream_id,
        "like",
        None,
        user="amy",
        conversation=teams.personal_conversation("amy"),
    )
    assert bot.post(vote).status == 200
    [stored] = bot.rt.feedback.for_query(row.id)
    assert stored.vote == "up"


def test_updates_are_batched_at_the_configured_rate(setup, fake, connector) -> None:
    fake.script[0].pieces = [f"word{i} " for i in range(40)] + ["[1]."]
    with bot_server(setup, stream_update_s=1) as slow:
        calls = streamed(slow, connector, "ben")
    updates = [c for c in calls if (stream_info(c) or {}).get("streamType") == "streaming"]
    assert len(updates) < 41  # 41 deltas, batched into fewer updates
    final = calls[-1]
    assert final.body["text"] == "".join(fake.script[0].pieces).strip()


def test_an_invalid_streamed_answer_ends_with_the_extractive_one_and_a_note(
    bot, fake, connector
) -> None:
    fake.script = [completion("Rotate it in the vault [42] and restart [7].")]
    calls = streamed(bot, connector, "cat")
    updates = [c for c in calls if (stream_info(c) or {}).get("streamType") == "streaming"]
    assert updates and updates[-1].body["text"].startswith("Rotate it in the vault")
    final = calls[-1]
    text = final.body["text"]
    assert text.startswith(f"_{NOTE}_")
    assert "vault [42]" not in text
    row = bot.query_of("cat")
    assert (row.mode, row.fallback_reason) == ("extractive", "invalid_citation_only")
    assert text.endswith(row.answer)
    [message] = [e for e in final.body["entities"] if e["type"] == "https://schema.org/Message"]
    assert "additionalType" not in message  # quoted, not AI-generated
    assert message["citation"][0]["appearance"]["name"] == ROTATE_TITLE


def test_a_model_timeout_mid_stream_ends_with_the_fallback_and_its_note(setup, fake, connector):
    fake.script[0].pause_at, fake.script[0].pause_s = 2, 4
    with bot_server(setup, timeout_s=1) as b:
        calls = streamed(b, connector, "dan")
        row = b.query_of("dan")
    assert calls[-1].body["text"] == f"_{NOTES['timeout']}_\n\n{row.answer}"
    assert row.fallback_reason == "timeout"


def test_a_refused_update_ends_the_stream_and_the_answer_comes_whole(bot, fake, connector) -> None:
    connector.stream_failures = [403]  # Teams: ContentStreamNotAllowed (the user pressed Stop)
    calls = streamed(bot, connector, "kim")
    updates = [c for c in calls if (stream_info(c) or {}).get("streamType") == "streaming"]
    assert [u.status for u in updates] == [403]  # no more updates after the refusal
    final = calls[-1]
    assert final.status == 200
    assert stream_info(final) is None  # a message of its own, complete
    assert final.body["text"] == GOOD
    assert any(e["type"] == "https://schema.org/Message" for e in final.body["entities"])


@pytest.mark.parametrize("where", ["channel", "group chat"])
def test_channels_and_group_chats_get_the_card_as_today(bot, fake, connector, where) -> None:
    if where == "channel":
        activity = teams.channel_mention(
            connector.url, QUESTION, channel="19:c@thread.tacv2", team="19:t", user="eve"
        )
    else:
        activity = teams.group_chat_mention(connector.url, QUESTION, user="eve")
    assert bot.post(activity).status == 200
    [answer] = connector.messages()
    assert all(stream_info(c) is None for c in connector.calls)
    assert "mq-admin passwd" in card_text(answer)
    assert bot.query_of("eve").mode == "generated"
    with bot.rt.db.session() as s:  # each parametrised run asks as the same user
        s.query(QueryRecord).filter(QueryRecord.user_id == "aad-eve").delete()
        s.commit()


def test_without_a_model_a_personal_chat_is_answered_as_today(setup, connector) -> None:
    with bot_server(setup, llm=False) as b:
        assert b.post(teams.personal_message(connector.url, QUESTION, user="fay")).status == 200
        [answer] = connector.messages()
    assert all(stream_info(c) is None for c in connector.calls)
    assert "mq-admin passwd" in card_text(answer)


def test_the_personal_welcome_offers_the_configured_prompts(setup, connector) -> None:
    prompts = ["How do I rotate the queue password?", "Where are the dashboards?"]
    with bot_server(setup, suggested_prompts=prompts) as b:
        assert b.post(teams.bot_installed_personal(connector.url, user="gus")).status == 200
    [welcome] = connector.messages()
    assert welcome.body["text"] == WELCOME_TEXT
    assert welcome.body["suggestedActions"] == {
        "actions": [{"type": "imBack", "title": p, "value": p} for p in prompts]
    }


def test_the_personal_welcome_defaults_to_the_most_asked_questions_and_a_team_gets_none(
    bot, connector
) -> None:
    for user in ("hal", "ida"):
        assert bot.post(teams.personal_message(connector.url, QUESTION, user=user)).status == 200
    connector.wait_for(lambda calls: sum(c.body.get("type") == "message" for c in calls) == 2)
    connector.calls.clear()
    assert bot.post(teams.bot_installed_personal(connector.url, user="jo")).status == 200
    [welcome] = connector.messages()
    prompts = [a["value"] for a in welcome.body["suggestedActions"]["actions"]]
    assert prompts[0] == QUESTION
    assert not set(prompts) & set(GENERIC)

    team = teams.bot_installed_in_team(
        connector.url, channel="19:c@thread.tacv2", team="19:t", user="hal"
    )
    assert bot.post(team).status == 200
    assert "suggestedActions" not in connector.messages()[-1].body
