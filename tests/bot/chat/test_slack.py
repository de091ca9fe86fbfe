"""The Slack adapter, driven over real HTTP with requests signed as Slack signs them; its Web
API calls land on a local stand-in for Slack (tests/bot/fake_slack.py) and are asserted."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from aiohttp import web
from click.testing import CliRunner
from sqlalchemy import delete, select, text

from bot.answer.service import ABSTAIN_TEXT, unknown_text
from bot.answer.types import Answer, Citation
from bot.chat.slack import EVENTS_PATH, MAX_BODY, SlackSetupError, mount, question_text
from bot.chat.slack_blocks import (
    FEEDBACK_BLOCK,
    MAX_BLOCKS,
    MAX_SECTION_CHARS,
    THANKS_BLOCK,
    VOTE_DOWN,
    VOTE_UP,
    answer_messages,
    to_mrkdwn,
)
from bot.cli import cli
from bot.runtime import Runtime
from bot.server import create_app
from db.models import QueryRecord
from tests.bot.fake_slack import (
    APP_TOKEN,
    BOT_ID,
    BOT_TOKEN,
    BOT_USER,
    SIGNING_SECRET,
    TEAM,
    Call,
    FakeSlack,
    Loop,
    block_action,
    channel_message,
    direct_message,
    event_callback,
    form_body,
    mention,
    new_ts,
    serving,
    signed_headers,
    view_submission,
)
from tests.bot.servers import (
    ROTATE_DOC,
    ROTATE_TITLE,
    URL_TEMPLATE,
    Reply,
    send,
    write_runbooks,
)
from tests.conftest import REPO, make_config

SECRET_DOC = (
    "# Rotating the vault root token\n\nThe vault root token is rotated with "
    "`vaultctl rotate-root --quorum 3`. Three key holders must be present.\n"
)
SECRET_URL = "https://sec.example.test/{path}"
VAULT_QUESTION = "How do I rotate the vault root token?"
ROTATE_QUESTION = "How do I rotate the password of the message queue?"
GENERAL, SRE, DM = "C0GENERAL", "C0SRE", "D0ALICE"
ENV = {"SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_BOT_TOKEN": BOT_TOKEN}


@dataclass
class Slack:
    rt: Runtime
    fake: FakeSlack
    loop: Loop
    url: str
    adapter: Any

    def post(self, body: str, headers: dict[str, str]) -> Reply:
        req = urllib.request.Request(self.url + "slack/events", data=body.encode(), headers=headers)
        return send(req)

    def event(self, event: dict[str, Any], *, event_id: str | None = None, **headers: str) -> Reply:
        body = json.dumps(event_callback(event, event_id))
        return self.post(body, {**signed_headers(body), **headers})

    def interact(self, payload: dict[str, Any]) -> Reply:
        body = form_body(payload)
        return self.post(body, signed_headers(body, form=True))

    def settle(self) -> None:
        """Wait for the work the acknowledged requests started (answers, votes)."""
        self.loop.run(self.adapter.drain())

    def ask(self, event: dict[str, Any], **headers: str) -> list[Call]:
        """Deliver an event, let it be handled, return the replies posted in its thread."""
        reply = self.event(event, **headers)
        assert reply.status == 200, reply.body
        self.settle()
        return self.replies(event)

    def replies(self, event: dict[str, Any]) -> list[Call]:
        thread = event.get("thread_ts") or event["ts"]
        return self.fake.of("chat.postMessage", channel=event["channel"], thread_ts=thread)

    def posted_message(self, call: Call) -> dict[str, Any]:
        """The message as Slack hands it back in interactivity payloads."""
        assert call.reply["ok"], call.reply
        return call.reply["message"]

    def query(self, query_id: str) -> QueryRecord | None:
        with self.rt.db.session() as s:
            return s.get(QueryRecord, query_id)

    def queries_in(self, channel: str) -> list[QueryRecord]:
        with self.rt.db.session() as s:
            return list(s.scalars(select(QueryRecord).where(QueryRecord.channel == channel)))


def knowledge_config(tmp, fake_url: str, **slack: Any):
    kb = write_runbooks(tmp / "kb")
    sec = tmp / "sec"
    sec.mkdir()
    (sec / "vault.md").write_text(SECRET_DOC)
    connectors = [
        {"name": "runbooks", "type": "filesystem", "path": str(kb), "url_template": URL_TEMPLATE},
        {
            "name": "security",
            "type": "filesystem",
            "path": str(sec),
            "url_template": SECRET_URL,
            "audience": "sre",
        },
    ]
    slack = {"api_base_url": fake_url + "api/", **slack}
    # The module asks dozens of questions as one user within seconds, far over the default
    # per-user limit; the limit has a test of its own.
    no_limits = {"per_user": None, "per_channel": None}
    return make_config(tmp, connectors, slack=slack, rate_limits=no_limits)


@pytest.fixture(scope="module")
def slack(tmp_path_factory, embedder, loop: Loop, fake_slack: FakeSlack) -> Iterator[Slack]:
    """One synced runtime and server for the module: each test uses its own channel or
    thread, so it can tell its calls apart from the others'."""
    tmp = tmp_path_factory.mktemp("slack")
    cfg = knowledge_config(
        tmp, fake_slack.url, channels={SRE: ["sre"]}, escalation_channel="#ask-sre"
    )
    rt = Runtime(cfg)
    with served(rt, fake_slack, loop) as s:
        yield s


@contextmanager
def served(rt: Runtime, fake: FakeSlack, loop: Loop) -> Iterator[Slack]:
    """``rt`` synced and served with Slack mounted, talking to ``fake``; closed after."""
    try:
        assert all(r.ok for r in rt.indexer.sync())
        app = create_app(rt)
        adapter = mount(app, rt, env=ENV)
        assert adapter is not None
        with serving(loop, app) as url:
            yield Slack(rt, fake, loop, url, adapter)
    finally:
        rt.close()


def texts(call: Call) -> str:
    """Everything a person reads in a posted message: its text and every block's text."""
    return call.params.get("text", "") + "\n" + json.dumps(call.params.get("blocks", []))


def feedback_buttons(call: Call) -> list[dict[str, Any]]:
    [actions] = [b for b in call.params["blocks"] if b.get("block_id") == FEEDBACK_BLOCK]
    return actions["elements"]


# -- answering ----------------------------------------------------------------------------


def test_a_mention_is_answered_in_its_thread_with_cited_sources_and_feedback_buttons(
    slack: Slack,
) -> None:
    event = mention(ROTATE_QUESTION, GENERAL)
    [call] = slack.ask(event)

    assert call.token == BOT_TOKEN
    blocks = call.params["blocks"]
    answer = blocks[0]["text"]["text"]
    assert blocks[0]["type"] == "section" and blocks[0]["text"]["type"] == "mrkdwn"
    assert "`mq-admin passwd --user orders`" in answer
    assert "*no outage*" in answer and "**" not in answer  # Markdown bold became mrkdwn
    sources = next(
        b["text"]["text"] for b in blocks if "*Sources*" in b.get("text", {}).get("text", "")
    )
    assert f"[1] <{URL_TEMPLATE.format(path=ROTATE_DOC)}|{ROTATE_TITLE}>" in sources
    assert f"runbooks: {ROTATE_DOC}" in sources
    mode = next(b for b in blocks if b["type"] == "context")
    assert "extracted, not generated" in mode["elements"][0]["text"]

    up, down = feedback_buttons(call)
    assert (up["action_id"], down["action_id"]) == (VOTE_UP, VOTE_DOWN)
    assert up["value"] == down["value"]
    row = slack.query(up["value"])
    assert row is not None
    assert (row.platform, row.channel, row.user_id) == ("slack", GENERAL, "U0ALICE")
    assert row.question == ROTATE_QUESTION  # the mention is not part of the question

    # A working indicator on the question while the answer is prepared, removed after.
    marks = {"channel": GENERAL, "timestamp": event["ts"], "name": "eyes"}
    assert len(slack.fake.of("reactions.add", **marks)) == 1
    assert len(slack.fake.of("reactions.remove", **marks)) == 1
    assert slack.fake.of("auth.test")[0].token == BOT_TOKEN


def test_a_question_in_a_thread_is_answered_in_that_thread(slack: Slack) -> None:
    parent = new_ts()
    event = mention(ROTATE_QUESTION, GENERAL) | {"thread_ts": parent}
    [call] = slack.ask(event)
    assert call.params["thread_ts"] == parent


def test_a_direct_message_is_answered_in_its_thread(slack: Slack) -> None:
    event = direct_message(ROTATE_QUESTION, "D0DMTHREAD")
    [call] = slack.ask(event)
    assert ROTATE_TITLE in texts(call)
    [row] = slack.queries_in("D0DMTHREAD")
    assert row.question == ROTATE_QUESTION


def test_the_ack_is_returned_before_the_answer_is_posted(slack: Slack) -> None:
    event = mention(ROTATE_QUESTION, "C0ACKTIME")
    hold = slack.fake.hold("chat.postMessage")
    try:
        reply = slack.event(event)
        assert reply.status == 200
        # The answer is posted after the ack: its reply is still held by the fake, which
        # lets it go only now, after the ack came back.
        [call] = slack.fake.wait(lambda: slack.replies(event))
        assert call.answered == 0.0
    finally:
        hold.release()
        slack.fake.holds.pop("chat.postMessage")
    slack.settle()
    assert hold.released_by_test
    assert call.reply["ok"] is True


def test_a_retried_event_is_answered_once_even_after_a_restart(slack: Slack, loop: Loop) -> None:
    event = mention(ROTATE_QUESTION, "C0RETRY")
    assert len(slack.ask(event, event_id="Ev0RETRY")) == 1
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    reply = slack.event(event, event_id="Ev0RETRY", **retry)
    assert reply.status == 200
    slack.settle()

    # A new server process over the same database recognises the event too.
    app = create_app(slack.rt)
    restarted = mount(app, slack.rt, env=ENV)
    with serving(loop, app) as url:
        other = Slack(slack.rt, slack.fake, loop, url, restarted)
        assert other.event(event, event_id="Ev0RETRY", **{"X-Slack-Retry-Num": "2"}).status == 200
        other.settle()

    assert len(slack.replies(event)) == 1
    assert len(slack.queries_in("C0RETRY")) == 1


def test_an_abstention_says_so_shows_the_closest_sources_and_the_escalation_channel(
    slack: Slack,
) -> None:
    [call] = slack.ask(mention("What flour to water ratio makes a good sourdough?", GENERAL))
    blocks = call.params["blocks"]
    # "sourdough" is in no document: the reply names it.
    assert blocks[0]["text"]["text"] == (
        f"{to_mrkdwn(unknown_text(['sourdough']))}\n\nFor a person's help, ask in #ask-sre."
    )
    assert blocks[1]["text"]["text"].startswith("*Closest sources*\n[1] <https://")
    assert feedback_buttons(call)


# -- audience -----------------------------------------------------------------------------


def test_a_restricted_document_is_cited_in_a_mapped_channel(slack: Slack) -> None:
    [call] = slack.ask(mention(VAULT_QUESTION, SRE))
    assert "vaultctl rotate-root" in texts(call)
    assert f"<{SECRET_URL.format(path='vault.md')}|" in texts(call)


@pytest.mark.parametrize(
    "event",
    [mention(VAULT_QUESTION, "C0UNMAPPED"), direct_message(VAULT_QUESTION, DM)],
    ids=["unmapped-channel", "dm"],
)
def test_a_restricted_document_never_reaches_other_channels_or_dms(
    slack: Slack, event: dict[str, Any]
) -> None:
    [call] = slack.ask(event)
    shown = texts(call)
    assert "vaultctl" not in shown and "quorum" not in shown
    assert "sec.example.test" not in shown
    [row] = slack.queries_in(event["channel"])
    assert all(r["connector"] != "security" for r in row.retrieved)


# -- feedback -----------------------------------------------------------------------------


def answered(slack: Slack, channel: str) -> tuple[Call, str, dict[str, Any]]:
    [call] = slack.ask(mention(ROTATE_QUESTION, channel))
    query_id = feedback_buttons(call)[0]["value"]
    return call, query_id, slack.posted_message(call)


def test_votes_are_recorded_per_user_a_second_click_changes_it_and_the_message_thanks(
    slack: Slack,
) -> None:
    _, qid, message = answered(slack, "C0VOTES")

    assert slack.interact(block_action(message, "C0VOTES", VOTE_UP, qid, "U0BOB")).status == 200
    slack.settle()
    assert slack.interact(block_action(message, "C0VOTES", VOTE_UP, qid, "U0ALICE")).status == 200
    slack.settle()
    votes = {f.user_id: (f.vote, f.reason) for f in slack.rt.feedback.for_query(qid)}
    assert votes == {"U0BOB": ("up", None), "U0ALICE": ("up", None)}

    [first, _] = slack.fake.of("chat.update", channel="C0VOTES", ts=message["ts"])
    ids = [b.get("block_id") for b in first.params["blocks"]]
    # The buttons stay (others may vote too), with the thanks right under them.
    assert ids.index(THANKS_BLOCK) == ids.index(FEEDBACK_BLOCK) + 1
    thanks = first.params["blocks"][ids.index(THANKS_BLOCK)]["elements"][0]["text"]
    assert "Thanks <@U0BOB>" in thanks

    # Bob changes his mind: one vote, now down.
    message = slack.fake.of("chat.update", channel="C0VOTES")[-1].reply["message"]
    assert slack.interact(block_action(message, "C0VOTES", VOTE_DOWN, qid, "U0BOB")).status == 200
    slack.settle()
    bob = [f for f in slack.rt.feedback.for_query(qid) if f.user_id == "U0BOB"]
    assert [(f.vote, f.reason) for f in bob] == [("down", None)]
    last = slack.fake.of("chat.update", channel="C0VOTES")[-1].params["blocks"]
    assert [b.get("block_id") for b in last].count(THANKS_BLOCK) == 1


def test_a_thumbs_down_asks_why_and_stores_the_reason(slack: Slack) -> None:
    _, qid, message = answered(slack, "C0REASON")
    click = block_action(message, "C0REASON", VOTE_DOWN, qid, "U0CAROL")
    assert slack.interact(click).status == 200
    slack.settle()

    [opened] = slack.fake.of("views.open", trigger_id=click["trigger_id"])
    view = opened.reply["view"]
    assert view["type"] == "modal"
    choices = [o["value"] for o in view["blocks"][0]["element"]["options"]]
    assert choices == ["wrong", "outdated", "not found", "irrelevant sources", "other"]
    [vote] = slack.rt.feedback.for_query(qid)
    assert (vote.user_id, vote.vote) == ("U0CAROL", "down")

    values = {
        "reason": {
            "choice": {
                "type": "radio_buttons",
                "selected_option": {
                    "text": {"type": "plain_text", "text": "Outdated"},
                    "value": "outdated",
                },
            }
        },
        "details": {"text": {"type": "plain_text_input", "value": "step 2 moved to the vault"}},
    }
    reply = slack.interact(view_submission(view, "U0CAROL", values))
    assert reply.status == 200 and reply.body in (b"", b"{}")  # an empty ack closes the modal
    slack.settle()
    [vote] = slack.rt.feedback.for_query(qid)
    assert (vote.user_id, vote.vote, vote.reason) == (
        "U0CAROL",
        "down",
        "outdated: step 2 moved to the vault",
    )


def test_an_unknown_action_is_acknowledged_and_ignored(slack: Slack, caplog) -> None:
    _, qid, message = answered(slack, "C0UNKNOWN")
    with caplog.at_level(logging.WARNING, logger="bot.chat.slack"):
        reply = slack.interact(block_action(message, "C0UNKNOWN", "launch_rockets", qid, "U0BOB"))
        slack.settle()
    assert reply.status == 200
    assert slack.rt.feedback.for_query(qid) == []
    assert slack.fake.of("chat.update", channel="C0UNKNOWN") == []
    assert "launch_rockets" in caplog.text


def test_a_vote_on_an_unknown_answer_is_logged_not_stored(slack: Slack, caplog) -> None:
    _, _, message = answered(slack, "C0NOQUERY")
    with caplog.at_level(logging.WARNING, logger="bot.chat.slack"):
        click = block_action(message, "C0NOQUERY", VOTE_UP, "0" * 32, "U0BOB")
        assert slack.interact(click).status == 200
        slack.settle()
    assert "no answer with query id" in caplog.text
    assert slack.fake.of("chat.update", channel="C0NOQUERY") == []


# -- follow-ups ---------------------------------------------------------------------------

# Alone this finds nothing confident in the test runbooks; in the thread of ROTATE_QUESTION
# it asks where the new queue password goes (the vault path secret/orders/mq).
FOLLOW_UP = "where do I store it afterwards?"


def answered_thread(slack: Slack, channel: str) -> tuple[dict[str, Any], str]:
    """A mention of ROTATE_QUESTION answered in ``channel``: the event and its query id."""
    first = mention(ROTATE_QUESTION, channel)
    [call] = slack.ask(first)
    return first, feedback_buttons(call)[0]["value"]


@contextmanager
def restarted(slack: Slack, loop: Loop) -> Iterator[Slack]:
    """A new runtime and server process over the same database and index."""
    rt = Runtime(slack.rt.config)
    try:
        app = create_app(rt)
        adapter = mount(app, rt, env=ENV)
        with serving(loop, app) as url:
            yield Slack(rt, slack.fake, loop, url, adapter)
    finally:
        rt.close()


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "after-restart"])
@pytest.mark.parametrize("channel_type", ["channel", "group"])
def test_a_reply_in_kbot_s_thread_is_answered_there_without_a_mention(
    slack: Slack, loop: Loop, restart: bool, channel_type: str
) -> None:
    channel = f"C0FU{channel_type[:2].upper()}{int(restart)}"
    first, first_qid = answered_thread(slack, channel)
    reply = channel_message(
        FOLLOW_UP, channel, thread_ts=first["ts"], channel_type=channel_type, user="U0BOB"
    )
    if restart:
        with restarted(slack, loop) as other:
            calls = other.ask(reply)
    else:
        calls = slack.ask(reply)

    assert len(calls) == 2  # the first answer, then the follow-up's, in the same thread
    follow = calls[1]
    assert ROTATE_TITLE in texts(follow)
    assert "secret/orders/mq" in texts(follow)
    row = slack.query(feedback_buttons(follow)[0]["value"])
    assert row is not None
    assert (row.question, row.user_id, row.follows) == (FOLLOW_UP, "U0BOB", first_qid)
    assert row.thread_key == f"slack:{TEAM}:{channel}:{first['ts']}"
    marks = {"channel": channel, "timestamp": reply["ts"], "name": "eyes"}
    assert len(slack.fake.of("reactions.add", **marks)) == 1


def test_the_same_words_as_a_new_question_have_no_context(slack: Slack) -> None:
    [call] = slack.ask(mention(FOLLOW_UP, "C0FUNOCTX"))
    assert call.params["blocks"][0]["text"]["text"].startswith(to_mrkdwn(ABSTAIN_TEXT))
    [row] = slack.queries_in("C0FUNOCTX")
    assert row.follows is None


def test_a_reply_in_a_thread_kbot_never_answered_is_ignored(slack: Slack) -> None:
    parent = new_ts()  # a person's thread, in a channel kbot is in
    reply = channel_message(FOLLOW_UP, "C0FUNEVER", thread_ts=parent)
    top = channel_message(ROTATE_QUESTION, "C0FUNEVER")  # a post not addressed to kbot
    for event in (reply, top):
        assert slack.event(event).status == 200
    slack.settle()
    assert slack.fake.of("chat.postMessage", channel="C0FUNEVER") == []
    assert slack.fake.of("reactions.add", channel="C0FUNEVER") == []
    assert slack.queries_in("C0FUNEVER") == []


def test_a_mention_in_a_thread_kbot_never_answered_is_a_new_question(slack: Slack) -> None:
    parent = new_ts()
    ts = new_ts()
    text = f"<@{BOT_USER}> {ROTATE_QUESTION}"
    # Slack sends a mention in a thread twice: as app_mention and as a channel message.
    slack.event(mention(ROTATE_QUESTION, "C0FUNEWQ", ts=ts) | {"thread_ts": parent})
    slack.event(channel_message(text, "C0FUNEWQ", thread_ts=parent, ts=ts))
    slack.settle()
    [call] = slack.fake.of("chat.postMessage", channel="C0FUNEWQ", thread_ts=parent)
    assert ROTATE_TITLE in texts(call)
    [row] = slack.queries_in("C0FUNEWQ")
    assert row.follows is None and row.thread_key == f"slack:{TEAM}:C0FUNEWQ:{parent}"


@pytest.mark.parametrize("mention_first", [True, False], ids=["mention-first", "message-first"])
def test_a_follow_up_that_mentions_kbot_is_answered_once(slack: Slack, mention_first: bool) -> None:
    channel = f"C0FUONCE{int(mention_first)}"
    first, first_qid = answered_thread(slack, channel)
    ts = new_ts()
    as_mention = mention(FOLLOW_UP, channel, ts=ts) | {"thread_ts": first["ts"]}
    as_message = channel_message(
        f"<@{BOT_USER}> {FOLLOW_UP}", channel, thread_ts=first["ts"], ts=ts
    )
    for event in (as_mention, as_message) if mention_first else (as_message, as_mention):
        assert slack.event(event).status == 200
    slack.settle()
    calls = slack.fake.of("chat.postMessage", channel=channel, thread_ts=first["ts"])
    assert len(calls) == 2
    assert "secret/orders/mq" in texts(calls[1])
    follow_ups = [r for r in slack.queries_in(channel) if r.follows == first_qid]
    assert [r.question for r in follow_ups] == [FOLLOW_UP]


def test_a_dm_thread_reply_is_a_follow_up(slack: Slack) -> None:
    first = direct_message(ROTATE_QUESTION, "D0FUTHREAD")
    [call] = slack.ask(first)
    reply = direct_message(FOLLOW_UP, "D0FUTHREAD", thread_ts=first["ts"])
    calls = slack.ask(reply)
    assert len(calls) == 2 and "secret/orders/mq" in texts(calls[1])
    # A DM thread reply is what an assistant thread's message is: Slack's feedback buttons.
    [votes] = [b for b in calls[1].params["blocks"] if b.get("block_id") == FEEDBACK_BLOCK]
    assert votes["type"] == "context_actions"
    row = slack.query(votes["elements"][0]["positive_button"]["value"].removeprefix("up:"))
    assert row is not None and row.follows == feedback_buttons(call)[0]["value"]


def test_bot_messages_and_edits_in_kbot_s_thread_are_not_answered(slack: Slack) -> None:
    first, _ = answered_thread(slack, "C0FUBOTS")
    own = channel_message(
        "an answer", "C0FUBOTS", thread_ts=first["ts"], user=BOT_USER, bot_id=BOT_ID
    )
    other_bot = channel_message(
        FOLLOW_UP, "C0FUBOTS", thread_ts=first["ts"], user="U0OTHERBOT", bot_id="B0OTHER"
    )
    edit = channel_message(
        "",
        "C0FUBOTS",
        thread_ts=first["ts"],
        subtype="message_changed",
        message={"type": "message", "user": "U0ALICE", "text": FOLLOW_UP, "ts": first["ts"]},
    )
    for event in (own, other_bot, edit):
        assert slack.event(event).status == 200
    slack.settle()
    assert len(slack.fake.of("chat.postMessage", channel="C0FUBOTS")) == 1
    assert len(slack.queries_in("C0FUBOTS")) == 1


def test_a_thread_whose_earlier_answer_is_gone_starts_afresh(slack: Slack) -> None:
    first, first_qid = answered_thread(slack, "C0FUGONE")
    with slack.rt.db.session() as s:  # as after restoring a backup older than the thread
        s.execute(delete(QueryRecord).where(QueryRecord.id == first_qid))
    reply = channel_message(FOLLOW_UP, "C0FUGONE", thread_ts=first["ts"])
    assert slack.event(reply).status == 200
    slack.settle()
    assert len(slack.replies(first)) == 1  # no longer known as kbot's thread: ignored
    again = mention(FOLLOW_UP, "C0FUGONE") | {"thread_ts": first["ts"]}
    calls = slack.ask(again)
    assert len(calls) == 2
    [row] = slack.queries_in("C0FUGONE")
    assert row.question == FOLLOW_UP and row.follows is None and row.abstained


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"X-Slack-Signature": "v0=" + "0" * 64},
        {"secret": "not-the-signing-secret"},
        {"age": 6 * 60},
    ],
    ids=["unsigned", "bad-signature", "other-secret", "stale"],
)
def test_unsigned_or_stale_requests_are_refused_with_401(
    slack: Slack, headers: dict[str, Any]
) -> None:
    event = mention(ROTATE_QUESTION, "C0FORGED")
    body = json.dumps(event_callback(event))
    if "secret" in headers:
        sent = signed_headers(body, secret=headers["secret"])
    elif "age" in headers:
        sent = signed_headers(body, timestamp=int(time.time()) - headers["age"])
    elif "X-Slack-Signature" in headers:
        sent = {**signed_headers(body), **headers}
    else:
        sent = headers
    assert slack.post(body, sent).status == 401
    slack.settle()
    assert slack.replies(event) == []
    assert slack.queries_in("C0FORGED") == []


def test_url_verification_echoes_the_challenge(slack: Slack) -> None:
    body = json.dumps(
        {"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY", "type": "url_verification"}
    )
    reply = slack.post(body, signed_headers(body))
    assert reply.status == 200
    assert json.loads(reply.body) == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY"}


def test_an_empty_mention_gets_a_hint_and_logs_no_query(slack: Slack) -> None:
    event = mention("", "C0EMPTY")
    [call] = slack.ask(event)
    assert "The question is empty" in call.params["text"]
    assert slack.queries_in("C0EMPTY") == []


def test_a_huge_message_is_refused_with_the_limit(slack: Slack) -> None:
    # Slack sends the text twice (as text and as rich-text blocks): > 64 KiB on the wire.
    words = "why does the queue " * 2500
    event = mention(words, "C0HUGE") | {
        "blocks": [
            {
                "type": "rich_text",
                "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": words}]}
                ],
            }
        ]
    }
    [call] = slack.ask(event)
    assert "the limit is 2000" in call.params["text"]
    assert slack.queries_in("C0HUGE") == []


def test_a_body_over_a_mebibyte_is_refused_with_413(slack: Slack) -> None:
    event = mention("x " * (MAX_BODY // 2), "C0TOOBIG")
    body = json.dumps(event_callback(event))
    assert slack.post(body, signed_headers(body)).status == 413
    slack.settle()
    assert slack.replies(event) == []


def test_edits_and_bot_messages_are_not_answered(slack: Slack) -> None:
    original = direct_message(ROTATE_QUESTION, "D0EDITS")
    assert len(slack.ask(original)) == 1
    edit = direct_message(
        "",
        "D0EDITS",
        subtype="message_changed",
        message={
            "type": "message",
            "user": "U0ALICE",
            "text": ROTATE_QUESTION + "?",
            "ts": original["ts"],
        },
        previous_message={
            "type": "message",
            "user": "U0ALICE",
            "text": ROTATE_QUESTION,
            "ts": original["ts"],
        },
    )
    edit.pop("user")
    own = direct_message(ROTATE_QUESTION, "D0EDITS", user=BOT_USER, bot_id=BOT_ID)
    other_bot = direct_message(ROTATE_QUESTION, "D0EDITS", user="U0OTHERBOT", bot_id="B0OTHER")
    for event in (edit, own, other_bot):
        assert slack.event(event).status == 200
    slack.settle()
    assert len(slack.fake.of("chat.postMessage", channel="D0EDITS")) == 1
    assert len(slack.queries_in("D0EDITS")) == 1


def test_a_ratelimited_post_is_retried_after_retry_after(slack: Slack) -> None:
    slack.fake.ratelimited["chat.postMessage"] = 1
    event = mention(ROTATE_QUESTION, "C0RATE")
    first, second = slack.ask(event)
    assert first.reply == {"ok": False, "error": "ratelimited"}
    assert second.reply["ok"] is True
    assert second.params["blocks"] == first.params["blocks"]
    assert len(slack.queries_in("C0RATE")) == 1


def test_a_missing_channel_is_logged_and_the_question_kept(slack: Slack, caplog) -> None:
    slack.fake.failures["C0GONE"] = "channel_not_found"
    with caplog.at_level(logging.WARNING, logger="bot.chat.slack"):
        [call] = slack.ask(mention(ROTATE_QUESTION, "C0GONE"))
    assert call.reply == {"ok": False, "error": "channel_not_found"}
    assert "chat.postMessage failed: channel_not_found" in caplog.text
    assert len(slack.queries_in("C0GONE")) == 1
    # The server goes on answering.
    assert len(slack.ask(mention(ROTATE_QUESTION, "C0AFTERGONE"))) == 1


# -- failures of kbot's own dependencies --------------------------------------------------


@pytest.fixture
def fragile(tmp_path, runtime_factory, loop: Loop, fake_slack: FakeSlack) -> Iterator[Slack]:
    """A server over an index that was never built (no connectors)."""
    api = fake_slack.url + "api/"
    rt = runtime_factory(make_config(tmp_path, [], slack={"api_base_url": api}))
    app = create_app(rt)
    adapter = mount(app, rt, env=ENV)
    with serving(loop, app) as url:
        yield Slack(rt, fake_slack, loop, url, adapter)


def test_a_broken_index_is_answered_with_an_apology_and_logged(fragile: Slack) -> None:
    chroma = fragile.rt.config.storage.chroma_path
    chroma.mkdir(parents=True)
    (chroma / "chroma.sqlite3").write_bytes(b"not a database\n" * 512)
    [call] = fragile.ask(mention(ROTATE_QUESTION, "C0BROKEN"))
    assert "knowledge index is unavailable" in call.params["text"]
    [row] = fragile.queries_in("C0BROKEN")
    assert row.answer.startswith("The knowledge index is unavailable")


def test_an_internal_failure_is_answered_with_an_apology_and_the_question_logged(
    fragile: Slack, caplog
) -> None:
    with fragile.rt.db.engine.begin() as conn:  # the query log is gone: ask() cannot finish
        conn.execute(text("DROP TABLE feedback"))
        conn.execute(text("DROP TABLE queries"))
    with caplog.at_level(logging.ERROR, logger="bot.chat.slack"):
        [call] = fragile.ask(mention("Where is the build agent runbook?", "C0INTERNAL"))
    assert "something went wrong on my side" in call.params["text"]
    assert "Where is the build agent runbook?" in caplog.text


# -- connection modes ---------------------------------------------------------------------


def test_without_credentials_slack_is_off_and_says_so(tmp_path, caplog) -> None:
    app = web.Application()
    with caplog.at_level(logging.INFO, logger="bot.chat.slack"):
        assert mount(app, None, env={"SLACK_BOT_TOKEN": BOT_TOKEN}) is None  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records if r.name == "bot.chat.slack"] == [
        "Slack is off: set SLACK_SIGNING_SECRET to serve /slack/events"
    ]
    assert not [r for r in app.router.routes() if r.resource and "slack" in r.resource.canonical]
    with pytest.raises(SlackSetupError, match="needs SLACK_APP_TOKEN"):
        mount(app, None, socket_mode=True, env=ENV)  # type: ignore[arg-type]


def test_kbot_serve_refuses_socket_mode_without_its_tokens(tmp_path) -> None:
    cfg = tmp_path / "kbot.yaml"
    cfg.write_text("storage:\n  data_dir: data\n")
    result = CliRunner().invoke(
        cli,
        ["--config", str(cfg), "serve", "--no-scheduler", "--slack-socket-mode"],
        env={"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": ""},
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --slack-socket-mode needs SLACK_APP_TOKEN in the environment "
        "(the app-level token xapp-... and the bot token xoxb-...)"
    ]


def test_socket_mode_answers_a_mention_and_acks_the_envelope(slack: Slack, loop: Loop) -> None:
    app = web.Application()
    adapter = mount(
        app,
        slack.rt,
        socket_mode=True,
        env={"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN},
    )
    assert adapter is not None
    sockets = len(slack.fake.sockets)
    with serving(loop, app):
        slack.fake.wait(lambda: len(slack.fake.sockets) > sockets)
        assert slack.fake.of("apps.connections.open")[-1].token == APP_TOKEN
        event = mention(ROTATE_QUESTION, "C0SOCKET")
        envelope = loop.run(slack.fake.push(event_callback(event)))
        slack.fake.wait(lambda: any(a.get("envelope_id") == envelope for a in slack.fake.acks))
        loop.run(adapter.drain())
        [call] = slack.fake.of("chat.postMessage", channel="C0SOCKET", thread_ts=event["ts"])
        assert ROTATE_TITLE in texts(call)
    assert not any(r.resource and "slack" in r.resource.canonical for r in app.router.routes())


def test_the_manifest_subscribes_to_what_the_adapter_handles() -> None:
    manifest = yaml.safe_load((REPO / "config" / "slack-manifest.yaml").read_text())
    settings = manifest["settings"]
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "app_mention",
        "message.channels",
        "message.groups",
        "message.im",
        "assistant_thread_started",
        "assistant_thread_context_changed",
        "app_home_opened",
    }
    assert settings["event_subscriptions"]["request_url"].endswith(EVENTS_PATH)
    assert settings["interactivity"] == {
        "is_enabled": True,
        "request_url": settings["event_subscriptions"]["request_url"],
    }
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {
        "app_mentions:read",
        "channels:history",
        "groups:history",
        "chat:write",
        "im:history",
        "reactions:write",
        "assistant:write",
        "commands",
    } <= scopes
    features = manifest["features"]
    assert "assistant_view" in features and features["app_home"]["home_tab_enabled"]
    [shortcut] = features["shortcuts"]
    assert (shortcut["type"], shortcut["callback_id"]) == ("message", "ask_kbot")
    [command] = features["slash_commands"]
    assert command["command"] == "/kbot" and command["url"].endswith(EVENTS_PATH)


# -- rendering ----------------------------------------------------------------------------


def test_markdown_becomes_slack_mrkdwn() -> None:
    md = (
        "# Restart\n\nFrom **Step <2> & 3** [1]:\n\n- run `a < b && c`\n"
        "- see [the guide](https://x.test/g?a=1&b=2) and *mind* ~~old~~\n\n"
        "```bash\nif [ $a -gt 1 ]; then echo '<ok>'; fi\n```"
    )
    assert to_mrkdwn(md) == (
        "*Restart*\n\nFrom *Step &lt;2&gt; &amp; 3* [1]:\n\n• run `a &lt; b &amp;&amp; c`\n"
        "• see <https://x.test/g?a=1&amp;b=2|the guide> and _mind_ ~old~\n\n"
        "```\nif [ $a -gt 1 ]; then echo '&lt;ok&gt;'; fi\n```"
    )


def test_question_text_strips_the_mention_and_slack_markup() -> None:
    raw = f"<@{BOT_USER}> is <https://x.test/a|the doc> in <#C1|ops> &amp; <@U2>? a &lt; b"
    assert question_text(raw, BOT_USER) == "is the doc in #ops & @U2? a < b"


def long_answer(chars: int) -> Answer:
    para = "Drain the node before rebooting it, then check the queue depth. " * 6
    body = "\n\n".join([para] * (chars // len(para) + 1))
    cite = Citation(1, "Reboots", "https://x.test/r", "runbooks", "ops/reboot.md")
    return Answer("q" * 32, "q", body, False, [cite])


def test_long_answers_are_split_within_slack_block_limits() -> None:
    [blocks] = answer_messages(long_answer(20_000))
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert len(sections) > 6
    assert all(len(s) <= MAX_SECTION_CHARS for s in sections)
    assert blocks[-1]["block_id"] == FEEDBACK_BLOCK

    messages = answer_messages(long_answer(200_000))
    assert len(messages) > 1
    assert all(len(m) <= MAX_BLOCKS for m in messages)
    assert all(b.get("block_id") != FEEDBACK_BLOCK for m in messages[:-1] for b in m)
    assert messages[-1][-1]["block_id"] == FEEDBACK_BLOCK
    assert any("*Sources*" in b.get("text", {}).get("text", "") for b in messages[-1])


def test_a_user_over_the_rate_limit_is_told_privately_when_to_try_again(
    slack: Slack, loop: Loop
) -> None:
    limits = slack.rt.config.rate_limits.model_copy(update={"per_user": 2, "per_channel": None})
    cfg = slack.rt.config.model_copy(update={"rate_limits": limits})
    channel = "C0RATELIMIT"
    rt = Runtime(cfg)
    try:
        app = create_app(rt)
        adapter = mount(app, rt, env=ENV)
        with serving(loop, app) as url:
            limited = Slack(rt, slack.fake, loop, url, adapter)
            asked = [mention(ROTATE_QUESTION, channel, user="U0RATE") for _ in range(3)]
            first, second, third = (limited.ask(e) for e in asked)
    finally:
        rt.close()
    assert len(first) == 1 and len(second) == 1
    assert third == []  # nothing posted in the thread for everyone to see
    [note] = slack.fake.of("chat.postEphemeral", channel=channel)
    assert note.params["user"] == "U0RATE" and note.params["thread_ts"] == asked[2]["ts"]
    assert "You've asked 2 questions in the last minute" in note.params["text"]
    assert "try again in" in note.params["text"]
    assert len(slack.queries_in(channel)) == 2  # the refused question is not logged
