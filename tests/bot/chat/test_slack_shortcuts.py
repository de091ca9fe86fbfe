"""Private answers in Slack: the "Ask kbot about this" message shortcut and ``/kbot``, with
their ephemeral replies and share buttons, over real HTTP with signed requests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bot.chat.slack_blocks import FEEDBACK_BLOCK, SHARE_ACTION
from bot.chat.slack_private import NO_TEXT, SHARE_GONE, UNREADABLE, USAGE
from bot.runtime import Runtime
from tests.bot.chat.test_slack import (
    ROTATE_QUESTION,
    SRE,
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
    channel_message,
    message_shortcut,
    signed_headers,
    slash_command,
)
from tests.bot.servers import ROTATE_TITLE


@pytest.fixture(scope="module")
def slack(tmp_path_factory, embedder, loop: Loop, fake_slack: FakeSlack) -> Iterator[Slack]:
    tmp = tmp_path_factory.mktemp("slack-private")
    rt = Runtime(knowledge_config(tmp, fake_slack.url, channels={SRE: ["sre"]}))
    with served(rt, fake_slack, loop) as s:
        yield s


def hook() -> str:
    return uuid.uuid4().hex[:12]


def responses(fake: FakeSlack, name: str) -> list[Call]:
    return fake.of("response_url", hook=name)


def share_button(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    [actions] = [b for b in blocks if b.get("block_id") == FEEDBACK_BLOCK]
    [share] = [e for e in actions["elements"] if e.get("action_id") == SHARE_ACTION]
    return share


def share_click(button: dict[str, Any], channel: str, user: str, response_url: str) -> dict:
    """A click on a button of an ephemeral message: Slack sends no copy of the message."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
        "api_app_id": "A0KBOT",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": f"{int(time.time())}.000900",
            "channel_id": channel,
            "is_ephemeral": True,
        },
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().hex}",
        "team": {"id": TEAM, "domain": "kbot-test"},
        "channel": {"id": channel, "name": "questions"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": SHARE_ACTION,
                "block_id": FEEDBACK_BLOCK,
                "text": button["text"],
                "value": button["value"],
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def command(slack: Slack, text: str, channel: str, response_url: str, user: str = "U0ALICE"):
    body = slash_command(text, channel, response_url, user=user)
    return slack.post(body, signed_headers(body, form=True))


# -- the message shortcut -----------------------------------------------------------------


def test_the_shortcut_answers_privately_and_shares_in_the_thread(slack: Slack) -> None:
    channel = "C0SHORTCUT"
    message = channel_message(ROTATE_QUESTION, channel, user="U0BOB")
    url = slack.fake.response_url(name := hook())
    assert slack.interact(message_shortcut(message, channel, url)).status == 200
    slack.settle()

    working, answer = slack.fake.of("chat.postEphemeral", channel=channel)
    assert working.params["user"] == "U0ALICE" and working.params["thread_ts"] == message["ts"]
    assert answer.params["user"] == "U0ALICE" and answer.params["thread_ts"] == message["ts"]
    assert ROTATE_TITLE in texts(answer)
    share = share_button(answer.params["blocks"])
    assert share["text"]["text"] == "Share in thread"
    assert slack.fake.of("chat.postMessage", channel=channel) == []  # nobody else sees it
    [row] = slack.queries_in(channel)
    assert (row.question, row.user_id, row.thread_key) == (ROTATE_QUESTION, "U0ALICE", None)

    click_url = slack.fake.response_url(click_hook := hook())
    assert slack.interact(share_click(share, channel, "U0ALICE", click_url)).status == 200
    slack.settle()
    [shared] = slack.fake.of("chat.postMessage", channel=channel, thread_ts=message["ts"])
    assert ROTATE_TITLE in texts(shared) and "Shared by <@U0ALICE>" in texts(shared)
    assert [c.params for c in responses(slack.fake, click_hook)] == [
        {"delete_original": True, "hook": click_hook}
    ]
    assert responses(slack.fake, name) == []


def test_someone_else_cannot_share_a_private_answer(slack: Slack) -> None:
    channel = "C0SHAREOTHER"
    message = channel_message(ROTATE_QUESTION, channel)
    slack.interact(message_shortcut(message, channel, slack.fake.response_url(hook())))
    slack.settle()
    share = share_button(slack.fake.of("chat.postEphemeral", channel=channel)[-1].params["blocks"])
    click_url = slack.fake.response_url(click_hook := hook())
    slack.interact(share_click(share, channel, "U0MALLORY", click_url))
    slack.settle()
    assert slack.fake.of("chat.postMessage", channel=channel) == []
    [gone] = responses(slack.fake, click_hook)
    assert gone.params["text"] == SHARE_GONE


def test_a_message_kbot_cannot_read_gets_a_friendly_private_reply(slack: Slack) -> None:
    channel = "G0PRIVATE"
    slack.fake.failures[channel] = "channel_not_found"  # a private channel kbot is not in
    message = channel_message(ROTATE_QUESTION, channel, channel_type="group")
    url = slack.fake.response_url(name := hook())
    assert slack.interact(message_shortcut(message, channel, url)).status == 200
    slack.settle()
    [reply] = responses(slack.fake, name)
    assert reply.params["response_type"] == "ephemeral" and reply.params["text"] == UNREADABLE
    assert slack.queries_in(channel) == []  # its words were not asked (nor logged)


def test_a_message_without_text_is_said_so(slack: Slack) -> None:
    channel = "C0NOTEXT"
    message = channel_message("", channel, subtype="file_share")
    slack.interact(message_shortcut(message, channel, slack.fake.response_url(hook())))
    slack.settle()
    [reply] = slack.fake.of("chat.postEphemeral", channel=channel)
    assert reply.params["text"] == NO_TEXT
    assert slack.queries_in(channel) == []


# -- /kbot --------------------------------------------------------------------------------


def test_kbot_without_a_question_replies_with_how_to_use_it(slack: Slack) -> None:
    url = slack.fake.response_url(name := hook())
    reply = command(slack, "  ", "C0USAGE", url)
    assert reply.status == 200
    # The ack is the reply, shown to the command's user only.
    assert json.loads(reply.body) == {"response_type": "ephemeral", "text": USAGE}
    slack.settle()
    assert responses(slack.fake, name) == [] and slack.queries_in("C0USAGE") == []


def test_kbot_answers_privately_through_the_response_url_and_shares_in_the_channel(
    slack: Slack,
) -> None:
    channel = "C0SLASH"
    url = slack.fake.response_url(name := hook())
    reply = command(slack, ROTATE_QUESTION, channel, url)
    assert reply.status == 200 and reply.body in (b"", b"{}")
    slack.settle()
    [answer] = responses(slack.fake, name)
    assert answer.params["response_type"] == "ephemeral"
    assert ROTATE_TITLE in json.dumps(answer.params["blocks"])
    share = share_button(answer.params["blocks"])
    assert share["text"]["text"] == "Share in channel"
    assert slack.fake.of("chat.postMessage", channel=channel) == []

    click_url = slack.fake.response_url(click_hook := hook())
    slack.interact(share_click(share, channel, "U0ALICE", click_url))
    slack.settle()
    shared, deleted = responses(slack.fake, click_hook)
    assert shared.params["response_type"] == "in_channel"
    assert ROTATE_TITLE in json.dumps(shared.params["blocks"])
    assert "Shared by <@U0ALICE>" in json.dumps(shared.params["blocks"])
    assert deleted.params == {"delete_original": True, "hook": click_hook}


def test_kbot_in_a_mapped_channel_reads_its_audience(slack: Slack) -> None:
    url = slack.fake.response_url(name := hook())
    command(slack, "How do I rotate the vault root token?", SRE, url)
    slack.settle()
    [answer] = responses(slack.fake, name)
    assert "vaultctl rotate-root" in json.dumps(answer.params["blocks"])


def test_private_answers_elsewhere_never_read_a_restricted_audience(slack: Slack) -> None:
    url = slack.fake.response_url(name := hook())
    command(slack, "How do I rotate the vault root token?", "C0PUBLICSLASH", url)
    channel = "C0PUBLICSHORT"
    message = channel_message("How do I rotate the vault root token?", channel)
    slack.interact(message_shortcut(message, channel, slack.fake.response_url(hook())))
    slack.settle()
    [answer] = responses(slack.fake, name)
    assert "vaultctl" not in json.dumps(answer.params)
    assert all(
        "vaultctl" not in texts(c) for c in slack.fake.of("chat.postEphemeral", channel=channel)
    )
