"""Slack's App Home tab: how to ask kbot, and the person's recent questions with links
to their answers (published with ``views.publish`` whenever they open it)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError, SlackClientError

from bot.answer.recorded import Asked, recent_questions
from bot.chat import slack_blocks as kit

if TYPE_CHECKING:
    from bot.chat.slack import SlackAdapter

log = logging.getLogger(__name__)


class AppHome:
    def __init__(self, adapter: SlackAdapter):
        self.adapter = adapter
        adapter.app.event("app_home_opened")(self._on_opened)

    async def _on_opened(self, event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return  # the Messages tab: a DM, nothing to publish
        self.adapter.spawn(self.publish(event.get("user", "")))

    async def publish(self, user: str) -> None:
        """Publish ``user``'s home tab."""
        try:
            asked = await asyncio.to_thread(
                recent_questions, self.adapter.runtime.db, "slack", user, kit.HOME_RECENT
            )
            links = await asyncio.gather(*(self._link(a) for a in asked))
            recent = [
                (a.question, url, f"{a.asked_at:%Y-%m-%d %H:%M} UTC")
                for a, url in zip(asked, links, strict=True)
            ]
            await self.adapter.call("views.publish", user_id=user, view=kit.home_view(recent))
        except Exception:
            log.exception("Slack App Home of %s not published", user)

    async def _link(self, asked: Asked) -> str | None:
        """The permalink of the thread the answer was posted in (None: a private answer,
        or a thread Slack no longer has)."""
        if not asked.thread:
            return None
        _team, _, rest = asked.thread.partition(":")
        channel, _, ts = rest.partition(":")
        if not channel or not ts:
            return None
        try:
            reply = await self.adapter.client.chat_getPermalink(channel=channel, message_ts=ts)
        except (SlackApiError, SlackClientError, OSError, TimeoutError) as e:
            log.info("Slack: no permalink for %s in %s: %s", ts, channel, e)
            return None
        return reply.get("permalink")
