"""Private answers in Slack: the "Ask kbot about this" message shortcut and ``/kbot``.

Both answer only the person who asked (an ephemeral message), with a button that shares
the answer where everyone sees it: the shortcut's in the message's thread, ``/kbot``'s in
the channel. A private answer is asked without a thread, so replies in that thread are
not taken as follow-ups to an answer nobody else saw.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.answer.limits import RateLimited
from bot.answer.recorded import answer_of
from bot.answer.types import Answer, QuestionError, Requester
from bot.chat import slack_blocks as kit
from bot.chat.slack_text import INTERNAL_ERROR, question_text

if TYPE_CHECKING:
    from bot.chat.slack import SlackAdapter

log = logging.getLogger(__name__)

SHORTCUT = "ask_kbot"
COMMAND = "/kbot"
USAGE = (
    "Ask me a question: `/kbot how do I rotate the queue password?` — only you see the "
    "answer, and you can share it in the channel. You can also mention @kbot in a "
    "channel, message me directly, open me in the assistant panel, or use "
    "“Ask kbot about this” from any message's ⋮ menu."
)
NO_TEXT = "That message has no text for me to answer."
UNREADABLE = (
    "I can't read messages in this conversation, so I can't answer about this one. "
    "Invite me to the channel (`/invite @kbot`), or copy the question into a DM with me."
)
SHARE_GONE = "This answer can no longer be shared; ask me again to get a fresh one."
# The errors of a conversation kbot is not a member of (or cannot see at all).
NOT_READABLE = {"channel_not_found", "not_in_channel", "is_archived", "access_denied"}


class PrivateAnswers:
    """The shortcut, the slash command and the share button, over one ``SlackAdapter``."""

    def __init__(self, adapter: SlackAdapter):
        self.adapter = adapter
        app = adapter.app
        app.shortcut(SHORTCUT)(self._on_shortcut)
        app.command(COMMAND)(self._on_command)
        app.action(kit.SHARE_ACTION)(self._on_share)

    # -- the message shortcut -----------------------------------------------------------

    async def _on_shortcut(self, ack: Any, body: dict[str, Any], context: Any) -> None:
        await ack()
        self.adapter.spawn(self._shortcut(body, context.bot_user_id))

    async def _shortcut(self, body: dict[str, Any], bot_user_id: str | None) -> None:
        user = (body.get("user") or {}).get("id", "")
        channel = (body.get("channel") or {}).get("id", "")
        message = body.get("message") or {}
        thread_ts = message.get("thread_ts") or message.get("ts") or body.get("message_ts")
        respond = body.get("response_url")
        try:
            question = question_text(message.get("text") or "", bot_user_id)
            if not question:
                await self._notice(channel, user, thread_ts, respond, NO_TEXT)
                return
            # Said first, so a conversation kbot cannot post in is known before the
            # question is asked (and logged): its words stay where kbot cannot read.
            if not await self._notice(channel, user, thread_ts, respond, "Looking that up…"):
                return
            answer = await self._ask(question, channel, user, thread_ts, respond)
            if answer is not None:
                share = kit.share_button("Share in thread", answer.query_id, channel, thread_ts)
                await self._ephemeral(channel, user, thread_ts, answer, share)
        except Exception:
            log.exception("Slack shortcut from %s in %s failed", user, channel)

    # -- /kbot ------------------------------------------------------------------------

    async def _on_command(self, ack: Any, command: dict[str, Any]) -> None:
        text = (command.get("text") or "").strip()
        if not text:
            # The acknowledgement's body is the command's reply, shown to its user only.
            await ack(response_type="ephemeral", text=USAGE)
            return
        await ack()
        self.adapter.spawn(self._command(command, text))

    async def _command(self, command: dict[str, Any], question: str) -> None:
        user, channel = command.get("user_id", ""), command.get("channel_id", "")
        respond = command.get("response_url")
        try:
            answer = await self._ask(question, channel, user, None, respond)
            if answer is None:
                return
            share = kit.share_button("Share in channel", answer.query_id, channel, None)
            fallback = kit.fallback_text(answer.text)
            for blocks in self._messages(answer, share):
                await self._respond(
                    respond, {"response_type": "ephemeral", "text": fallback, "blocks": blocks}
                )
        except Exception:
            log.exception("Slack %s from %s in %s failed", COMMAND, user, channel)

    # -- sharing ----------------------------------------------------------------------

    async def _on_share(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        self.adapter.spawn(self._share(body, action.get("value") or ""))

    async def _share(self, body: dict[str, Any], value: str) -> None:
        user = (body.get("user") or {}).get("id", "")
        channel = (body.get("container") or {}).get("channel_id") or (
            body.get("channel") or {}
        ).get("id", "")
        respond = body.get("response_url")
        try:
            meta = json.loads(value)
            query_id, thread_ts = str(meta.get("q", "")), meta.get("t")
        except (ValueError, AttributeError):
            log.warning("Slack share from %s: not kbot's button value", user)
            return
        try:
            answer = await asyncio.to_thread(answer_of, self.adapter.runtime.db, query_id, user)
            if answer is None:
                gone = {"response_type": "ephemeral", "replace_original": False}
                await self._respond(respond, {**gone, "text": SHARE_GONE})
                return
            messages = kit.answer_messages(answer, self.adapter.config.escalation_channel)
            if len(messages[-1]) < kit.MAX_BLOCKS:
                messages[-1] = [*messages[-1], kit.shared_note(user)]
            fallback = kit.fallback_text(answer.text)
            for blocks in messages:
                if thread_ts:
                    await self.adapter.post(channel, thread_ts, fallback, blocks)
                else:
                    # kbot may not be a member: /kbot works in any channel, and its
                    # response_url posts there as kbot.
                    await self._respond(
                        respond, {"response_type": "in_channel", "text": fallback, "blocks": blocks}
                    )
            await self._respond(respond, {"delete_original": True})
        except Exception:
            log.exception("Slack share of %s by %s failed", query_id, user)

    # -- helpers ----------------------------------------------------------------------

    async def _ask(
        self,
        question: str,
        channel: str,
        user: str,
        thread_ts: str | None,
        respond: str | None,
    ) -> Answer | None:
        requester = Requester(
            "slack", channel, user, self.adapter.audiences(channel, dm=channel.startswith("D"))
        )
        try:
            return await asyncio.to_thread(self.adapter.runtime.answering.ask, question, requester)
        except RateLimited as e:
            log.info("Slack private question from %s in %s refused: %s", user, channel, e)
            await self._notice(channel, user, thread_ts, respond, f":hourglass_flowing_sand: {e}")
        except QuestionError as e:
            log.info("Slack private question from %s in %s refused: %s", user, channel, e)
            await self._notice(channel, user, thread_ts, respond, str(e))
        except Exception:
            log.exception("answering failed for %s in %s: %r", user, channel, question)
            await self._notice(channel, user, thread_ts, respond, INTERNAL_ERROR)
        return None

    def _messages(self, answer: Answer, share: kit.Block) -> list[list[kit.Block]]:
        return kit.answer_messages(answer, self.adapter.config.escalation_channel, share=share)

    async def _ephemeral(
        self, channel: str, user: str, thread_ts: str | None, answer: Answer, share: kit.Block
    ) -> None:
        fallback = kit.fallback_text(answer.text)
        for blocks in self._messages(answer, share):
            reply = await self.adapter.call(
                "chat.postEphemeral",
                channel=channel,
                user=user,
                thread_ts=thread_ts,
                text=fallback,
                blocks=blocks,
            )
            if reply is None:
                log.warning("private answer %s was not delivered to Slack", answer.query_id)
                return

    async def _notice(
        self, channel: str, user: str, thread_ts: str | None, respond: str | None, text: str
    ) -> bool:
        """Tell ``user`` privately; where kbot cannot post (a private channel it is not
        in), say so through the shortcut's response URL. True when ``text`` was shown.
        ``/kbot`` (no thread) replies through its response URL: kbot may not be a member."""
        if thread_ts is None and respond:
            return await self._respond(respond, {"response_type": "ephemeral", "text": text})
        params = {"channel": channel, "user": user, "text": text, "blocks": kit.notice(text)}
        if thread_ts:
            params["thread_ts"] = thread_ts
        error = await self.adapter.call_error("chat.postEphemeral", **params)
        if error is None:
            return True
        if error in NOT_READABLE:
            log.info("Slack: cannot post in %s (%s); told %s why", channel, error, user)
            await self._respond(respond, {"response_type": "ephemeral", "text": UNREADABLE})
        return False

    async def _respond(self, url: str | None, payload: dict[str, Any]) -> bool:
        """A reply through an interaction's response URL (ephemeral unless it says so)."""
        if not url:
            return False
        try:
            reply = await AsyncWebhookClient(url, logger=log).send_dict(payload)
        except Exception as e:  # a network failure: logged, the request goes on
            log.warning("Slack response_url post failed: %s", e)
            return False
        if reply.status_code != 200:
            log.warning("Slack response_url post failed: %s %s", reply.status_code, reply.body)
            return False
        return True
