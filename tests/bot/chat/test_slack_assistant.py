"""Slack's assistant panel, App Home and feedback buttons, driven over real HTTP with signed
requests; the Web API calls land on the local stand-in for Slack and are asserted."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bot.chat.slack_assistant import PROMPTS_TITLE, STATUS
from bot.chat.slack_blocks import FEEDBACK_ACTION, FEEDBACK_BLOCK
from bot.runtime import Runtime
from tests.bot.chat.test_slack import (
    FOLLOW_UP,
    GENERAL,
    ROTATE_QUESTION,
    SRE,
    VAULT_QUESTION,
    Slack,
    knowledge_config,
    served,
    texts,
)
from tests.bot.fake_slack import (
    TEAM,
    Call,
    FakeSlack,
    Loop,
    app_home_opened,
    assistant_message,
    assistant_thread_started,
    block_action,
    mention,
)
from tests.bot.servers import ROTATE_TITLE

PANEL = "D0PANEL"


@pytest.fixture(scope="module")
def slack(tmp_path_factory, embedder, loop: Loop, fake_slack: FakeSlack) -> Iterator[Slack]:
    tmp = tmp_path_factory.mktemp("slack-assistant")
    rt = Runtime(knowledge_config(tmp, fake_slack.url, channels={SRE: ["sre"]}))
    with served(rt, fake_slack, loop) as s:
        yield s


def in_thread(fake: FakeSlack, channel: str, thread_ts: str) -> list[Call]:
    """The calls kbot made in one assistant thread, in order."""
    with fake.changed:
        return [
            c
            for c in fake.calls
            if (c.params.get("channel_id") or c.params.get("channel")) == channel
            and c.params.get("thread_ts") == thread_ts
        ]


def started(slack: Slack, channel: str) -> str:
    event = assistant_thread_started(channel, context_channel=GENERAL)
    assert slack.event(event).status == 200
    slack.settle()
    return event["assistant_thread"]["thread_ts"]


def native_vote_value(call: Call, which: str = "positive_button") -> str:
    [votes] = [b for b in call.params["blocks"] if b.get("block_id") == FEEDBACK_BLOCK]
    assert votes["type"] == "context_actions"
    [buttons] = votes["elements"]
    assert buttons["type"] == "feedback_buttons" and buttons["action_id"] == FEEDBACK_ACTION
    return buttons[which]["value"]


# -- a new thread ---------------------------------------------------------------------------


def test_a_new_thread_gets_the_most_asked_public_questions_as_prompts(slack: Slack) -> None:
    for user in ("U0ALICE", "U0BOB"):
        slack.ask(mention(ROTATE_QUESTION, GENERAL, user=user))
        slack.ask(mention(VAULT_QUESTION, SRE, user=user))  # restricted: never offered
    thread_ts = started(slack, PANEL)

    [call] = slack.fake.of("assistant.threads.setSuggestedPrompts", thread_ts=thread_ts)
    assert call.reply["ok"], call.reply
    assert call.params["channel_id"] == PANEL and call.params["title"] == PROMPTS_TITLE
    prompts = call.params["prompts"]
    assert prompts[0] == {"title": ROTATE_QUESTION, "message": ROTATE_QUESTION}
    assert all(VAULT_QUESTION not in p["message"] for p in prompts)
    assert len(prompts) <= 4


def test_configured_prompts_come_first(slack: Slack, monkeypatch) -> None:
    configured = ["How do I deploy?", "Who is on call?", "Where are the dashboards?"]
    config = slack.adapter.config.model_copy(update={"suggested_prompts": configured})
    monkeypatch.setattr(slack.adapter, "config", config)
    thread_ts = started(slack, "D0PROMPTS")
    [call] = slack.fake.of("assistant.threads.setSuggestedPrompts", thread_ts=thread_ts)
    assert [p["message"] for p in call.params["prompts"]] == configured


# -- questions in the thread --------------------------------------------------------------


def test_a_question_is_titled_shown_as_searching_then_answered_with_feedback_buttons(
    slack: Slack,
) -> None:
    thread_ts = started(slack, "D0ASK")
    question = assistant_message(ROTATE_QUESTION, "D0ASK", thread_ts)
    assert slack.event(question).status == 200
    slack.settle()

    calls = in_thread(slack.fake, "D0ASK", thread_ts)
    methods = [c.method for c in calls]
    assert methods == [
        "assistant.threads.setSuggestedPrompts",
        "assistant.threads.setTitle",
        "assistant.threads.setStatus",
        "chat.postMessage",
    ]
    assert calls[1].params["title"] == ROTATE_QUESTION
    assert calls[2].params["status"] == STATUS
    answer = calls[3]
    assert ROTATE_TITLE in texts(answer)
    assert slack.fake.of("reactions.add", channel="D0ASK") == []  # the status says it

    # The thread's history answers its follow-up; the title stays the first question's.
    follow = assistant_message(FOLLOW_UP, "D0ASK", thread_ts)
    assert slack.event(follow).status == 200
    slack.settle()
    calls = in_thread(slack.fake, "D0ASK", thread_ts)
    assert [c.method for c in calls[4:]] == ["assistant.threads.setStatus", "chat.postMessage"]
    assert "secret/orders/mq" in texts(calls[5])
    first_qid = native_vote_value(answer).removeprefix("up:")
    row = slack.query(native_vote_value(calls[5]).removeprefix("up:"))
    assert row is not None
    assert (row.question, row.follows) == (FOLLOW_UP, first_qid)
    assert row.thread_key == f"slack:{TEAM}:D0ASK:{thread_ts}"


def test_feedback_buttons_record_votes_in_the_feedback_table(slack: Slack) -> None:
    thread_ts = started(slack, "D0VOTE")
    assert slack.event(assistant_message(ROTATE_QUESTION, "D0VOTE", thread_ts)).status == 200
    slack.settle()
    [answer] = slack.fake.of("chat.postMessage", channel="D0VOTE", thread_ts=thread_ts)
    up, down = native_vote_value(answer), native_vote_value(answer, "negative_button")
    qid = up.removeprefix("up:")
    assert down == f"down:{qid}"

    message = slack.posted_message(answer)
    click = feedback_click(message, "D0VOTE", up, "U0ALICE")
    assert slack.interact(click).status == 200
    slack.settle()
    votes = {f.user_id: f.vote for f in slack.rt.feedback.for_query(qid)}
    assert votes == {"U0ALICE": "up"}
    [update] = slack.fake.of("chat.update", channel="D0VOTE", ts=message["ts"])
    assert "Thanks <@U0ALICE>" in texts(update)


def feedback_click(message: dict[str, Any], channel: str, value: str, user: str) -> dict:
    """A click on Slack's feedback buttons: a block_actions payload whose action is the
    ``feedback_buttons`` element, with the clicked button's value."""
    click = block_action(message, channel, FEEDBACK_ACTION, value, user)
    click["actions"] = [
        {
            "type": "feedback_buttons",
            "action_id": FEEDBACK_ACTION,
            "block_id": FEEDBACK_BLOCK,
            "text": {"type": "plain_text", "text": "Helpful"},
            "value": value,
            "action_ts": f"{time.time():.6f}",
        }
    ]
    return click


# -- other assistant events ---------------------------------------------------------------


def test_a_context_change_is_acknowledged_without_api_calls(slack: Slack) -> None:
    thread_ts = started(slack, "D0CTX")
    before = len(slack.fake.calls)
    event = {
        "type": "assistant_thread_context_changed",
        "assistant_thread": {
            "user_id": "U0ALICE",
            "context": {"channel_id": SRE, "team_id": TEAM, "enterprise_id": None},
            "channel_id": "D0CTX",
            "thread_ts": thread_ts,
        },
        "event_ts": thread_ts,
    }
    assert slack.event(event).status == 200
    slack.settle()
    assert len(slack.fake.calls) == before


def test_an_unknown_assistant_event_is_ignored_with_a_log_line(slack: Slack, caplog) -> None:
    before = len(slack.fake.calls)
    event = {
        "type": "assistant_thread_renamed",
        "assistant_thread": {"channel_id": "D0UNK", "thread_ts": "1.000001"},
        "event_ts": "1.000002",
    }
    with caplog.at_level(logging.INFO, logger="bot.chat.slack_assistant"):
        reply = slack.event(event)
        slack.settle()
    assert reply.status == 200
    assert len(slack.fake.calls) == before
    assert "assistant_thread_renamed" in caplog.text and "ignored" in caplog.text


# -- App Home -----------------------------------------------------------------------------


def test_app_home_lists_the_user_s_recent_questions_with_links(slack: Slack) -> None:
    asked = mention(ROTATE_QUESTION, "C0HOME", user="U0HOME")
    slack.ask(asked)
    assert slack.event(app_home_opened("U0HOME")).status == 200
    slack.settle()
    [call] = slack.fake.of("views.publish", user_id="U0HOME")
    assert call.reply["ok"], call.reply
    view = call.params["view"]
    assert view["type"] == "home"
    shown = json.dumps(view)
    assert "/kbot" in shown and "Ask kbot about this" in shown  # how to ask
    link = f"https://kbot-test.slack.com/archives/C0HOME/p{asked['ts'].replace('.', '')}"
    assert f"<{link}|{ROTATE_QUESTION}>" in shown

    # Someone who never asked gets the help and an empty list; the Messages tab, nothing.
    slack.event(app_home_opened("U0NEWBIE"))
    slack.event(app_home_opened("U0TABS", tab="messages"))
    slack.settle()
    [empty] = slack.fake.of("views.publish", user_id="U0NEWBIE")
    assert "not asked kbot anything yet" in json.dumps(empty.params["view"])
    assert slack.fake.of("views.publish", user_id="U0TABS") == []
