"""Slack's assistant panel (Agents & AI Apps) through bolt's ``Assistant`` middleware.

A new assistant thread gets suggested prompts (``slack.suggested_prompts``, or the
questions public askers ask most); each question in it is answered in the thread,
with the thread's history (the follow-up machinery of every Slack thread), while the
thread's status says kbot is searching. Its first question becomes the thread's title.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from slack_bolt.middleware.assistant.async_assistant import AsyncAssistant

from bot.answer.prompts import suggested_prompts

if TYPE_CHECKING:
    from bot.chat.slack import SlackAdapter

log = logging.getLogger(__name__)

STATUS = "Searching runbooks…"
PROMPTS_TITLE = "Questions people ask kbot"
# Slack shows at most four suggested prompts.
MAX_PROMPTS = 4
MAX_TITLE_CHARS = 80


class AssistantThreads:
    """The assistant panel's listeners, over one ``SlackAdapter``."""

    def __init__(self, adapter: SlackAdapter):
        self.adapter = adapter
        self.middleware = AsyncAssistant(logger=log)
        self.middleware.thread_started(self._on_started)
        # bolt's default keeps the context in the thread's first message's metadata
        # (conversations.replies and chat.update per change); kbot does not use it.
        self.middleware.thread_context_changed(self._on_context_changed)
        self.middleware.user_message(self._on_message)

    async def _on_started(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        thread = event.get("assistant_thread") or {}
        self.adapter.spawn(self._started(thread.get("channel_id", ""), thread.get("thread_ts", "")))

    async def _started(self, channel: str, thread_ts: str) -> None:
        try:
            prompts = await asyncio.to_thread(self.prompts)
            if prompts:
                await self.adapter.call(
                    "assistant.threads.setSuggestedPrompts",
                    channel_id=channel,
                    thread_ts=thread_ts,
                    title=PROMPTS_TITLE,
                    prompts=[{"title": p, "message": p} for p in prompts],
                )
        except Exception:
            log.exception("Slack assistant thread %s in %s: prompts not set", thread_ts, channel)

    def prompts(self) -> list[str]:
        """The configured prompts, else the questions public askers ask most."""
        return suggested_prompts(
            self.adapter.runtime.db, self.adapter.config.suggested_prompts, MAX_PROMPTS
        )

    async def _on_context_changed(self, event: dict[str, Any]) -> None:
        thread = event.get("assistant_thread") or {}
        log.debug(
            "Slack assistant thread %s now beside %s",
            thread.get("thread_ts"),
            (thread.get("context") or {}).get("channel_id"),
        )

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        self.adapter.spawn(self.adapter.answer(body, event, context.bot_user_id, assistant=True))

    async def working(self, channel: str, thread_ts: str, first: bool, question: str) -> None:
        """Show that kbot is answering in the thread (and title it by its first question).

        Slack clears the status when kbot's reply is posted."""
        if first and question:
            title = question if len(question) <= MAX_TITLE_CHARS else question[:79] + "…"
            await self.adapter.call(
                "assistant.threads.setTitle", channel_id=channel, thread_ts=thread_ts, title=title
            )
        await self.adapter.call(
            "assistant.threads.setStatus", channel_id=channel, thread_ts=thread_ts, status=STATUS
        )

    async def done(self, channel: str, thread_ts: str) -> None:
        """Clear the status when no reply was posted (a refusal that was not a message)."""
        await self.adapter.call(
            "assistant.threads.setStatus", channel_id=channel, thread_ts=thread_ts, status=""
        )


async def on_unknown_event(event: dict[str, Any]) -> None:
    """An ``assistant_thread_*`` event kbot does not know (Slack adds them): ignored."""
    log.info("Slack event %s is not one kbot handles; ignored", event.get("type"))
